"""EWS item → MailItem mapping (email_sync.sources.ews.to_mail_item), on real exchangelib objects.

exchangelib calls the From header ``author`` (``message:From``) and the Sender header ``sender``
(``message:Sender``). No server is needed: the items are built locally.
"""

from __future__ import annotations

from datetime import UTC, datetime

from exchangelib import UTC as EWS_UTC
from exchangelib import EWSDateTime, HTMLBody, Mailbox, Message
from exchangelib.items.message import Message as MessageClass

from email_sync.rules.classify import classify, compile_rules
from email_sync.rules.models import Address
from email_sync.rules.settings import JobSettings, Mode, OrgSettings
from email_sync.sources.base import Folder
from email_sync.sources.ews import to_mail_item

INBOX = Folder("Inbox", "folder-inbox", False)
SENT = Folder("Sent Items", "folder-sent", True)
WHEN = EWSDateTime(2026, 3, 10, 9, 30, tzinfo=EWS_UTC)
CONTACT = Mailbox(email_address="carol@client.example", name="Carol Client")
ASSISTANT = Mailbox(email_address="pa@client.example", name="Carol's assistant")
OWNER = "alice@example.com"


def message(**fields) -> Message:  # noqa: ANN003
    base = dict(
        subject="Quote request", body=HTMLBody("<p>Please quote</p>"), message_id="<q1@client.example>",
        to_recipients=[Mailbox(email_address=OWNER)], datetime_sent=WHEN, datetime_received=WHEN,
    )  # fmt: skip
    base.update(fields)
    return Message(**base)


def test_exchangelib_names_from_author_and_sender_sender() -> None:
    fields = {f.name: f.field_uri for f in MessageClass.FIELDS}
    assert fields["author"] == "message:From" and fields["sender"] == "message:Sender"


def test_email_sent_on_behalf_of_a_contact_is_from_the_contact() -> None:
    """Defect (issue 14.8): with Sender ≠ From (a delegate or a sending service sending on behalf of a
    Contact) the email was matched on Sender and went unmatched. It is from the From address."""
    item = to_mail_item(message(author=CONTACT, sender=ASSISTANT), INBOX)
    assert item.sender == Address("carol@client.example", "Carol Client")

    rules = compile_rules(JobSettings(mailbox=OWNER, mode=Mode.ALL), OrgSettings(internal_domains=("example.com",)))
    assert classify(item, rules).participants == ("carol@client.example",)


def test_sending_service_on_behalf_of_a_contact() -> None:
    service = Mailbox(email_address="bounce-123@mailer.example")
    item = to_mail_item(message(author=CONTACT, sender=service), INBOX)
    assert item.sender is not None and item.sender.email == "carol@client.example"


def test_sender_is_the_fallback_when_from_is_missing() -> None:
    assert to_mail_item(message(author=None, sender=CONTACT), INBOX).sender == Address(
        "carol@client.example", "Carol Client"
    )
    assert to_mail_item(message(author=Mailbox(name="no address"), sender=CONTACT), INBOX).sender == Address(
        "carol@client.example", "Carol Client"
    )
    assert to_mail_item(message(author=None, sender=None), INBOX).sender is None


def test_same_from_and_sender_unchanged() -> None:
    item = to_mail_item(message(author=CONTACT, sender=CONTACT), INBOX)
    assert item.sender == Address("carol@client.example", "Carol Client")


def test_delegate_sending_for_the_mailbox_owner_stays_outbound() -> None:
    """A delegate sending from Alice's mailbox: From is Alice, Sender the delegate. From first keeps it Alice's."""
    delegate = Mailbox(email_address="assistant@example.com")
    item = to_mail_item(
        message(author=Mailbox(email_address=OWNER), sender=delegate, to_recipients=[CONTACT]), SENT
    )
    assert item.sender is not None and item.sender.email == OWNER
    assert item.in_sent_folder and item.to == (Address("carol@client.example", "Carol Client"),)
    assert item.sent_at == datetime(2026, 3, 10, 9, 30, tzinfo=UTC) and item.body_is_html
