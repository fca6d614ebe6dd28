"""Items that are not emails a person wrote (SPEC §3 rule 6): email_sync.rules.item_kinds and classify.

Meeting requests/responses/cancellations, calendar items, receipts, non-delivery reports and
automatic replies each get their own skip reason, decided from the item's class (and its
Auto-Submitted header), checked before every other rule.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from email_sync.rules.classify import SkipReason, classify, compile_rules
from email_sync.rules.item_kinds import ItemKind, kind_of_auto_submitted, kind_of_class, not_an_email
from email_sync.rules.models import Address, MailItem
from email_sync.rules.settings import JobSettings, Mode, OrgSettings

NOW = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
ORG = OrgSettings(internal_domains=("example.com",), record_address="record@example.com")
SETTINGS = JobSettings(mailbox="alice@example.com", mode=Mode.ALL, salesforce_user="alice@example.com")
RULES = compile_rules(SETTINGS, ORG)

MAIL = MailItem(
    item_id="AAMk-1", message_id="<m1@acme.example>", folder="Inbox", subject="Hello",
    sender=Address("client@acme.example"), to=(Address("alice@example.com"),),
    received_at=NOW, sent_at=NOW - timedelta(minutes=1),
)  # fmt: skip

# Microsoft's documented message classes (Item Types and Message Classes, MS-OXOMSG, MS-OXOCAL).
CLASSES = [
    ("IPM.Note", ItemKind.EMAIL),
    ("ipm.note", ItemKind.EMAIL),
    ("", ItemKind.EMAIL),
    ("IPM.Note.SMIME", ItemKind.EMAIL),
    ("IPM.Note.SMIME.MultipartSigned", ItemKind.EMAIL),
    ("IPM.Note.Secure.Sign", ItemKind.EMAIL),
    ("IPM.Note.MyCompany.QuoteForm", ItemKind.EMAIL),  # a custom form is still a note
    ("IPM.Notes", ItemKind.OTHER_ITEM),  # a prefix only counts at a dot
    ("IPM.Schedule.Meeting.Request", ItemKind.MEETING_MESSAGE),
    ("IPM.Schedule.Meeting.Resp.Pos", ItemKind.MEETING_MESSAGE),
    ("IPM.Schedule.Meeting.Resp.Neg", ItemKind.MEETING_MESSAGE),
    ("IPM.Schedule.Meeting.Resp.Tent", ItemKind.MEETING_MESSAGE),
    ("IPM.Schedule.Meeting.Canceled", ItemKind.MEETING_MESSAGE),
    ("IPM.Schedule.Meeting.Notification.Forward", ItemKind.MEETING_MESSAGE),
    ("ipm.schedule.meeting.request", ItemKind.MEETING_MESSAGE),
    ("IPM.Appointment", ItemKind.CALENDAR_ITEM),
    ("IPM.Appointment.Live Meeting Request", ItemKind.CALENDAR_ITEM),
    ("IPM.OLE.CLASS.{00061055-0000-0000-C000-000000000046}", ItemKind.CALENDAR_ITEM),
    ("REPORT.IPM.Note.IPNRN", ItemKind.RECEIPT),  # read receipt
    ("REPORT.IPM.Note.IPNNRN", ItemKind.RECEIPT),  # not-read receipt
    ("REPORT.IPM.Note.DR", ItemKind.RECEIPT),  # delivery receipt
    ("REPORT.IPM.Note.Delayed", ItemKind.RECEIPT),
    ("report.ipm.note.dr", ItemKind.RECEIPT),
    ("IPM.Note.Receipt.SMIME", ItemKind.RECEIPT),  # signed read receipt
    ("IPM.Recall.Report.Success", ItemKind.RECEIPT),
    ("REPORT.IPM.Note.NDR", ItemKind.NON_DELIVERY_REPORT),
    ("REPORT.IPM.Schedule.Meeting.Request.NDR", ItemKind.NON_DELIVERY_REPORT),  # a bounced invitation
    ("Report.IPM.Note.Ndr", ItemKind.NON_DELIVERY_REPORT),
    ("IPM.Note.Rules.OofTemplate.Microsoft", ItemKind.AUTOMATIC_REPLY),
    ("IPM.Note.Rules.ReplyTemplate.Microsoft", ItemKind.AUTOMATIC_REPLY),
    ("IPM.Note.Rules.ExternalOofTemplate.Microsoft", ItemKind.AUTOMATIC_REPLY),
    ("IPM.Contact", ItemKind.OTHER_ITEM),
    ("IPM.Task", ItemKind.OTHER_ITEM),
    ("IPM.TaskRequest.Accept", ItemKind.OTHER_ITEM),
    ("IPM.StickyNote", ItemKind.OTHER_ITEM),
    ("IPM.Post", ItemKind.OTHER_ITEM),
    ("IPM.Outlook.Recall", ItemKind.OTHER_ITEM),
]


@pytest.mark.parametrize(("item_class", "kind"), CLASSES, ids=[c or "(empty)" for c, _ in CLASSES])
def test_kind_of_class(item_class: str, kind: ItemKind) -> None:
    assert kind_of_class(item_class) is kind
    assert kind_of_class(f"  {item_class}  ") is kind  # surrounding white space is not part of a class


@pytest.mark.parametrize(("value", "kind"), [
    (None, ItemKind.EMAIL), ("", ItemKind.EMAIL), ("no", ItemKind.EMAIL), ("No", ItemKind.EMAIL),
    ("auto-replied", ItemKind.AUTOMATIC_REPLY), ("Auto-Replied; owner-email=\"x@y\"", ItemKind.AUTOMATIC_REPLY),
    ("auto-generated", ItemKind.AUTOMATIC_MESSAGE), ("auto-notified", ItemKind.AUTOMATIC_MESSAGE),
    ("x-something-else", ItemKind.AUTOMATIC_MESSAGE), ("auto-replied (vacation)", ItemKind.AUTOMATIC_REPLY),
    ("no (a person wrote this)", ItemKind.EMAIL),
])  # fmt: skip
def test_kind_of_auto_submitted(value: str | None, kind: ItemKind) -> None:
    assert kind_of_auto_submitted(value) is kind


def test_every_kind_but_email_is_a_skip_reason_of_its_own() -> None:
    reasons = {kind.value for kind in ItemKind} - {ItemKind.EMAIL.value}
    assert reasons <= {r.value for r in SkipReason}
    assert len(reasons) == len(ItemKind) - 1  # one reason per kind


SKIPPED = [
    ("meeting request", dict(item_class="IPM.Schedule.Meeting.Request"), SkipReason.MEETING_MESSAGE),
    ("meeting accepted", dict(item_class="IPM.Schedule.Meeting.Resp.Pos"), SkipReason.MEETING_MESSAGE),
    ("meeting declined", dict(item_class="IPM.Schedule.Meeting.Resp.Neg"), SkipReason.MEETING_MESSAGE),
    ("meeting tentative", dict(item_class="IPM.Schedule.Meeting.Resp.Tent"), SkipReason.MEETING_MESSAGE),
    ("meeting cancelled", dict(item_class="IPM.Schedule.Meeting.Canceled"), SkipReason.MEETING_MESSAGE),
    ("calendar item", dict(item_class="IPM.Appointment"), SkipReason.CALENDAR_ITEM),
    ("read receipt", dict(item_class="REPORT.IPM.Note.IPNRN"), SkipReason.RECEIPT),
    ("not-read receipt", dict(item_class="REPORT.IPM.Note.IPNNRN"), SkipReason.RECEIPT),
    ("delivery receipt", dict(item_class="REPORT.IPM.Note.DR"), SkipReason.RECEIPT),
    ("non-delivery report", dict(item_class="REPORT.IPM.Note.NDR"), SkipReason.NON_DELIVERY_REPORT),
    ("Exchange out-of-office", dict(item_class="IPM.Note.Rules.OofTemplate.Microsoft"), SkipReason.AUTOMATIC_REPLY),
    ("rule reply", dict(item_class="IPM.Note.Rules.ReplyTemplate.Microsoft"), SkipReason.AUTOMATIC_REPLY),
    ("another server's out-of-office", dict(auto_submitted="auto-replied"), SkipReason.AUTOMATIC_REPLY),
    ("program-sent mail", dict(auto_submitted="auto-generated"), SkipReason.AUTOMATIC_MESSAGE),
    ("a task in the inbox", dict(item_class="IPM.Task"), SkipReason.OTHER_ITEM),
]


@pytest.mark.parametrize(("changes", "reason"), [(c, r) for _, c, r in SKIPPED], ids=[i for i, _, _ in SKIPPED])
def test_classify_gives_each_kind_its_own_reason(changes: dict[str, str], reason: SkipReason) -> None:
    item = replace(MAIL, **changes)
    assert classify(MAIL, RULES).record  # the same email as an IPM.Note is recorded
    decision = classify(item, RULES)
    assert decision.reason is reason
    assert not decision.record
    assert decision.detail == not_an_email(item).detail
    assert "@" not in decision.detail  # details are stored: a class or a header value, never an address


def test_kind_is_checked_before_every_other_rule() -> None:
    """A meeting without Message-ID or sender (a calendar item has neither) is not "malformed";
    one carrying the CRM category or sent to the record address is still not recorded."""
    calendar = replace(MAIL, item_class="IPM.Appointment", message_id="", sender=None, to=())
    assert classify(calendar, RULES).reason is SkipReason.CALENDAR_ITEM
    designated = replace(MAIL, item_class="IPM.Schedule.Meeting.Request", categories=("CRM",),
                         cc=(Address("record@example.com"),))
    off = compile_rules(replace(SETTINGS, mode=Mode.DESIGNATED), ORG)
    assert classify(designated, off).reason is SkipReason.MEETING_MESSAGE
    assert classify(replace(designated, item_class="IPM.Note"), off).record
    internal_ndr = replace(MAIL, item_class="REPORT.IPM.Note.NDR", sender=Address("postmaster@example.com"))
    assert classify(internal_ndr, RULES).reason is SkipReason.NON_DELIVERY_REPORT


def test_person_written_variants_are_recorded() -> None:
    for changes in (dict(item_class="IPM.Note.SMIME.MultipartSigned"), dict(auto_submitted="no"),
                    dict(item_class="ipm.note"), dict(item_class="")):
        assert classify(replace(MAIL, **changes), RULES).record, changes


def test_class_wins_over_the_header() -> None:
    item = replace(MAIL, item_class="REPORT.IPM.Note.NDR", auto_submitted="auto-replied")
    assert not_an_email(item).kind is ItemKind.NON_DELIVERY_REPORT
    assert not_an_email(MAIL) is None
