"""From the mailbox to the upload plan (issue 14.10): what a mail source lists, the rules decide.

Runs per world in ``conftest.WORLDS`` (the EWS sandbox through real exchangelib today): names
with path separators and control characters, an attached email, S/MIME parts and an empty
file, read by the source, planned by ``select_attachments``, counted as ``match`` counts them.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from email_sync.rules.attachments import AttachmentSkipReason, select_attachments
from email_sync.rules.classify import classify, compile_rules
from email_sync.rules.keys import attachment_key, email_identity
from email_sync.rules.models import MailItem
from email_sync.rules.settings import JobSettings, Mode, OrgSettings

T0 = datetime(2024, 5, 1, tzinfo=UTC)
ORG = OrgSettings(internal_domains=("example.com",))


def test_plan_for_what_the_source_lists(source_world):
    attachments = [
        {"name": "../../etc/passwd", "content": "root:x:0:0"},
        {"name": "C:\\Users\\carol\\quote.pdf", "content": "%PDF-1.4 quote"},
        {"name": "bell\x07\x1b.txt", "content": "ding"},
        {"name": "empty.txt", "content": ""},
        {"item": {"subject": "Original request", "from": "dave@client.example", "to": ["carol@client.example"],
                  "body": "the forwarded email"}},
        {"name": "smime.p7s", "content_b64": base64.b64encode(b"\x30\x82sig").decode(),
         "content_type": "application/pkcs7-signature"},
        {"name": "fattura.xml.p7m", "content": "signed invoice", "content_type": "application/pkcs7-mime"},
    ]
    source_world.seed({"Inbox": [{
        "subject": "Fwd: request", "from": "Carol Client <carol@client.example>", "to": [source_world.mailbox],
        "received": "2024-05-01T00:01:00Z", "message_id": "<fwd@client.example>", "body": "see attached",
        "attachments": attachments}]})
    (folder,) = source_world.source.resolve_folders(["Inbox"])
    (item,) = list(source_world.source.read_folder(folder, T0, T0 + timedelta(hours=1), None))
    assert isinstance(item, MailItem)

    settings = JobSettings(mailbox=source_world.mailbox, mode=Mode.ALL, salesforce_user="u",
                           record_all_attachments=True)
    decision = classify(item, compile_rules(settings, ORG))
    assert decision.record
    plan = select_attachments(item, decision, ORG)

    uploads = {s.ref.name: s for s in plan.upload}
    assert set(uploads) == {"passwd", "quote.pdf", "bell.txt", "fattura.xml.p7m"}
    listed = {a.attachment_id: a for a in item.attachments}
    identity = email_identity(item)
    for selected in plan.upload:  # the key is the one the source's own name gives: unchanged
        original = listed[selected.ref.attachment_id]
        assert selected.key == attachment_key(identity, original.name, original.size, 0)
        assert selected.ref == replace(original, name=selected.ref.name)
    assert sorted((listed[r.attachment_id].name, why) for r, why in plan.skipped) == sorted([
        ("Original request", AttachmentSkipReason.ITEM_ATTACHMENT),
        ("smime.p7s", AttachmentSkipReason.SMIME_SIGNATURE),
        ("empty.txt", AttachmentSkipReason.EMPTY),
    ])
    # what match.py counts per recorded email (``attachments_<reason>``)
    counted = Counter(f"attachments_{why.value}" for _, why in plan.skipped)
    assert counted == {"attachments_item_attachment": 1, "attachments_smime_signature": 1,
                       "attachments_attachment_empty": 1}

    contents = source_world.source.attachment_contents([s.ref.attachment_id for s in plan.upload])
    assert dict(zip((s.ref.name for s in plan.upload), contents, strict=True)) == {
        "passwd": b"root:x:0:0", "quote.pdf": b"%PDF-1.4 quote", "bell.txt": b"ding",
        "fattura.xml.p7m": b"signed invoice"}
