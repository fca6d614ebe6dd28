"""A control character in one email must not change any other email read with it (issue 14.11).

Exchange writes a control character (a bell in a subject, an escape in a body, a stray byte in
an attachment name) as a character reference, ``&#x7;``, which XML 1.0 forbids. exchangelib
parses with lxml's recovering parser, which reads the reference, but from that point on drops
every entity reference in the rest of the response: ``&amp;``, ``&lt;``, ``&gt;``. So one such
email corrupts the subjects and HTML bodies of all emails after it in the same FindItem/GetItem
answer (``<p>a &amp; b</p>`` arrives as ``pa amp; b/p``). The EWS sandbox now sends these
references as Exchange does, which makes this visible.

The EWS source neutralises such references in the response bytes (U+FFFD) before exchangelib
parses them (``email_sync/sources/ews.py``'s transport).
"""

from __future__ import annotations
from datetime import UTC, datetime, timedelta


from email_sync.rules.models import MailItem

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def test_control_character_alone_reads_back(ews_world):
    ews_world.seed({"Inbox": [{"subject": "Bell \x07 rings", "from": "carol@client.example", "to": [ews_world.mailbox],
                               "received": "2024-05-01T00:01:00Z", "message_id": "<bell@client.example>",
                               "body": "plain"}]})
    (folder,) = ews_world.source.resolve_folders(["Inbox"])
    (item,) = list(ews_world.source.read_folder(folder, T0, T0 + timedelta(hours=1), None))
    assert isinstance(item, MailItem)
    assert item.subject in ("Bell \x07 rings", "Bell \ufffd rings", "Bell  rings")  # read, however it is cleaned


def test_control_character_in_one_email_leaves_the_others_intact(ews_world):
    ews_world.seed({"Inbox": [
        {"subject": "Bell \x07 rings", "from": "carol@client.example", "to": [ews_world.mailbox],
         "received": "2024-05-01T00:01:00Z", "message_id": "<bell@client.example>", "body": "plain"},
        {"subject": "Fish & Chips <offer>", "from": "dave@client.example", "to": [ews_world.mailbox],
         "received": "2024-05-01T00:02:00Z", "message_id": "<fish@client.example>",
         "body": "<p>Prices &amp; terms</p>"},
    ]})
    (folder,) = ews_world.source.resolve_folders(["Inbox"])
    items = {r.message_id: r for r in ews_world.source.read_folder(folder, T0, T0 + timedelta(hours=1), None)}
    fish = items["<fish@client.example>"]
    assert fish.subject == "Fish & Chips <offer>"
    assert fish.body == "<p>Prices &amp; terms</p>"
