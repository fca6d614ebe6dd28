"""Attachment upload plan (email_sync.rules.attachments), issue 14.10: names, item attachments,
S/MIME parts, empty files; the attachment key never changes."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_sync.rules.attachments import AttachmentSkipReason, select_attachments, smime_part, upload_name
from email_sync.rules.classify import classify, compile_rules
from email_sync.rules.keys import attachment_key
from email_sync.rules.models import Address, AttachmentRef, MailItem
from email_sync.rules.settings import JobSettings, Mode, OrgSettings

ORG = OrgSettings(internal_domains=("example.com",))
SETTINGS = JobSettings(mailbox="alice@example.com", mode=Mode.ALL, salesforce_user="alice@example.com",
                       record_all_attachments=True)
MAIL = MailItem(
    item_id="AAMk-1", message_id="<m1@acme.example>", folder="Inbox", subject="Quote",
    sender=Address("client@acme.example"), to=(Address("alice@example.com"),),
    received_at=datetime(2026, 3, 10, 9, 30, tzinfo=UTC),
)  # fmt: skip


def plan(*refs: AttachmentRef):  # noqa: ANN201
    mail = replace(MAIL, attachments=refs)
    return select_attachments(mail, classify(mail, compile_rules(SETTINGS, ORG)), ORG)


@pytest.mark.parametrize(("given_name", "expected"), [
    ("quote.pdf", "quote.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\x\\y.pdf", "y.pdf"),
    ("\\\\server\\share\\report.xlsx", "report.xlsx"),
    ("C:y.pdf", "y.pdf"),
    ("folder/", "folder"),
    ("a\x07b\x00c\x1b.txt", "abc.txt"),
    ("tab\tand\nnewline.txt", "tabandnewline.txt"),
    ("in\u202evoice.pdf", "invoice.pdf"),  # a right-to-left override hides the real extension
    ("  spaced.doc  ", "spaced.doc"),
    ("Angebot für Müller.docx", "Angebot für Müller.docx"),
    ("", "attachment"), (" ", "attachment"), (".", "attachment"), ("..", "attachment"), ("/", "attachment"),
    ("../..", "attachment"), ("\x07", "attachment"), ("A:A:", "attachment"), (" C: D:x.txt", "x.txt"),
    ("report.pdf/\x07", "report.pdf"),
])  # fmt: skip
def test_upload_name(given_name: str, expected: str) -> None:
    assert upload_name(given_name) == expected


def test_long_upload_name_keeps_its_extension() -> None:
    name = upload_name("x" * 400 + ".pdf")
    assert len(name) == 255 and name.endswith("x.pdf")
    assert len(upload_name("y" * 400)) == 255


@given(st.text(max_size=300))
@settings(max_examples=1000, deadline=None)
def test_upload_name_is_always_a_plain_file_name(name: str) -> None:
    result = upload_name(name)
    assert result and len(result) <= 255
    assert "/" not in result and "\\" not in result
    assert result not in (".", "..") and result == result.strip()
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in result)
    assert upload_name(result) == result  # idempotent


def test_uploads_carry_the_safe_name_and_the_unchanged_key() -> None:
    """Defect: ``../../etc/passwd`` and ``C:\\x\\y.pdf`` went to Salesforce as given (PathOnClient)."""
    refs = (AttachmentRef("a1", "../../etc/passwd", 10), AttachmentRef("a2", "C:\\x\\y.pdf", 20),
            AttachmentRef("a3", "quote.pdf", 30))
    result = plan(*refs)
    assert [s.ref.name for s in result.upload] == ["passwd", "y.pdf", "quote.pdf"]
    assert [s.key for s in result.upload] == [attachment_key("<m1@acme.example>", r.name, r.size, 0) for r in refs]
    assert [replace(s.ref, name=r.name) for s, r in zip(result.upload, refs, strict=True)] == list(refs)


def test_item_attachment_is_reported_not_dropped() -> None:
    """Defect: an attached email (an EWS ItemAttachment) vanished without a trace."""
    forwarded = AttachmentRef("i1", "Original request", 4000, "message/rfc822", kind="item")
    result = plan(forwarded, AttachmentRef("a1", "quote.pdf", 30))
    assert [s.ref.attachment_id for s in result.upload] == ["a1"]
    assert result.skipped == ((forwarded, AttachmentSkipReason.ITEM_ATTACHMENT),)


def test_item_attachments_leave_file_keys_as_they_were() -> None:
    """Items were not listed before: they must not shift the occurrence count of files."""
    files = (AttachmentRef("a1", "scan.pdf", 30), AttachmentRef("a2", "scan.pdf", 30))
    before = plan(*files)
    after = plan(files[0], AttachmentRef("i1", "scan.pdf", 30, kind="item"), files[1])
    assert [s.key for s in after.upload] == [s.key for s in before.upload]
    assert before.upload[0].key != before.upload[1].key


@pytest.mark.parametrize(("ref", "reason"), [
    (AttachmentRef("s", "smime.p7s", 3000, "application/pkcs7-signature"), AttachmentSkipReason.SMIME_SIGNATURE),
    (AttachmentRef("s", "smime.p7s", 3000, "application/x-pkcs7-signature"), AttachmentSkipReason.SMIME_SIGNATURE),
    (AttachmentRef("s", "SMIME.P7S", 3000), AttachmentSkipReason.SMIME_SIGNATURE),
    (AttachmentRef("s", "signature.bin", 3000, "application/pkcs7-signature; name=x"),
     AttachmentSkipReason.SMIME_SIGNATURE),
    (AttachmentRef("s", "smime.p7m", 9000, "multipart/signed"), AttachmentSkipReason.SMIME_SIGNATURE),
    (AttachmentRef("s", "smime.p7c", 900, "application/pkcs7-mime"), AttachmentSkipReason.SMIME_SIGNATURE),
    (AttachmentRef("s", "smime.p7m", 9000, "application/pkcs7-mime"), AttachmentSkipReason.SMIME_MESSAGE),
    (AttachmentRef("s", "smime.p7m", 9000, "application/x-pkcs7-mime"), AttachmentSkipReason.SMIME_MESSAGE),
    (AttachmentRef("s", "fattura.xml.p7m", 9000, "application/pkcs7-mime"), None),  # a signed document: a file
    (AttachmentRef("s", "report.pdf", 9000, "application/pdf"), None),
])  # fmt: skip
def test_smime_parts(ref: AttachmentRef, reason: AttachmentSkipReason | None) -> None:
    assert smime_part(ref) is reason
    result = plan(ref)
    if reason is None:
        assert len(result.upload) == 1 and result.skipped == ()
    else:
        assert result.upload == () and result.skipped == ((ref, reason),)


def test_every_skip_is_counted_under_its_own_reason() -> None:
    """match.py counts ``attachments_<reason>`` per skipped file of a recorded email: each
    requested attachment that is not uploaded lands under exactly one reason, empty files too."""
    refs = (
        AttachmentRef("e", "empty.txt", 0),
        AttachmentRef("b", "video.mp4", 5 * 1024 * 1024 + 1),
        AttachmentRef("i", "Fwd", 10, kind="item"),
        AttachmentRef("s", "smime.p7s", 10, "application/pkcs7-signature"),
        AttachmentRef("m", "smime.p7m", 10, "application/pkcs7-mime"),
        AttachmentRef("l", "logo.png", 0, "image/png", is_inline=True),  # inline: part of the body, never counted
        AttachmentRef("ok", "quote.pdf", 10),
    )
    result = plan(*refs)
    counts = Counter(f"attachments_{why.value}" for _, why in result.skipped)
    assert counts == {"attachments_attachment_empty": 1, "attachments_attachment_too_large": 1,
                      "attachments_item_attachment": 1, "attachments_smime_signature": 1,
                      "attachments_smime_message": 1}
    assert [s.ref.attachment_id for s in result.upload] == ["ok"]
    assert len(result.upload) + len(result.skipped) == len(refs) - 1


def test_empty_signature_is_a_signature() -> None:
    """The S/MIME reason comes first: it says more than 'empty'."""
    ref = AttachmentRef("s", "smime.p7s", 0, "application/pkcs7-signature")
    assert plan(ref).skipped == ((ref, AttachmentSkipReason.SMIME_SIGNATURE),)
