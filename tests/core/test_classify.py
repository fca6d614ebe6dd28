"""Classification of one email (email_sync.rules.classify): every rule and every reason."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from email_sync.rules.classify import Decision, SkipReason, classify, compile_rules, is_outbound_folder
from email_sync.rules.item_kinds import ItemKind
from email_sync.rules.matching import finalize
from email_sync.rules.keys import message_key
from email_sync.rules.matching import Match
from email_sync.rules.models import Address, Direction, MailItem
from email_sync.rules.settings import JobSettings, Mode, OrgSettings

NOW = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
ORG = OrgSettings(
    internal_domains=("example.com",),
    record_address="record@example.com",
    do_not_record_address="donotrecord@example.com",
    record_attachments_address="attachments@example.com",
    excluded_addresses=("blocked@partner.example",),
    excluded_domains=("hr.example",),
)
SETTINGS = JobSettings(
    mailbox="alice@example.com",
    mode=Mode.ALL,
    salesforce_user="alice@example.com",
    excluded_addresses=("mum@family.example",),
    excluded_domains=("friends.example",),
)
CLIENT = Address("client@acme.example", "Client")
ALICE = Address("alice@example.com", "Alice")
COLLEAGUE = Address("colleague@example.com")


def inbound(**changes: Any) -> MailItem:
    base = MailItem(
        item_id="AAMk-1", message_id="<m1@acme.example>", folder="Inbox", subject="Hello",
        sender=CLIENT, to=(ALICE,), received_at=NOW, sent_at=NOW - timedelta(minutes=1),
    )  # fmt: skip
    return replace(base, **changes)


def outbound(**changes: Any) -> MailItem:
    base = MailItem(
        item_id="AAMk-2", message_id="<m2@example.com>", folder="Sent Items", subject="Offer",
        sender=ALICE, to=(CLIENT,), sent_at=NOW, in_sent_folder=True,
    )  # fmt: skip
    return replace(base, **changes)


@dataclass
class Case:
    id: str
    item: MailItem
    reason: SkipReason | None
    mode: Mode = Mode.ALL
    org: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    recorded: dict[str, datetime] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)


REPLY_TO_RECORDED = {message_key("orig@example.com"): NOW - timedelta(days=3)}
REPLY_TO_OLD = {message_key("orig@example.com"): NOW - timedelta(days=11)}
# issue 14.6: in a backfill the reply itself lies in the past; the window runs from the original to it
BACKFILL_REPLY = dict(in_reply_to="<orig@example.com>", received_at=NOW - timedelta(days=6),
                      sent_at=NOW - timedelta(days=6, minutes=1))
ORIGINAL_12_DAYS_AGO = {message_key("orig@example.com"): NOW - timedelta(days=12)}

CASES = [
    # --- recorded candidates, direction and participants
    Case("inbound from external", inbound(), None,
         expect={"direction": Direction.INBOUND, "participants": ("client@acme.example",), "email_at": NOW}),
    Case("outbound To/Cc/Bcc in order, internal dropped", outbound(
        to=(Address("B@Acme.example"),), cc=(COLLEAGUE, Address("c@acme.example")), bcc=(Address("d@other.example"),)),
        None, expect={"direction": Direction.OUTBOUND,
                      "participants": ("b@acme.example", "c@acme.example", "d@other.example"), "email_at": NOW}),
    Case("sender is the mailbox: outbound even in Inbox", outbound(folder="Inbox"), None,
         expect={"direction": Direction.OUTBOUND}),
    Case("sent subfolder is outbound", outbound(folder="sent items/Clients", sender=None), None,
         expect={"direction": Direction.OUTBOUND}),
    Case("duplicate recipients counted once", outbound(to=(CLIENT, Address("CLIENT@acme.example"))), None,
         expect={"participants": ("client@acme.example",)}),
    Case("invalid recipient ignored", outbound(to=(Address("garbage"), CLIENT)), None,
         expect={"participants": ("client@acme.example",)}),
    Case("smart addresses are not participants", outbound(to=(CLIENT,), bcc=(Address("record@example.com"),)), None,
         expect={"participants": ("client@acme.example",), "designated": True}),
    Case("sent time for outbound, received for inbound", inbound(sent_at=None), None, expect={"email_at": NOW}),
    Case("naive time read as UTC", inbound(received_at=NOW.replace(tzinfo=None)), None, expect={"email_at": NOW}),
    Case("CRM category is not a skip in all mode", inbound(categories=("CRM",)), None, expect={"designated": True}),
    # --- malformed
    Case("no message id nor item id", inbound(message_id="", item_id=""), SkipReason.MALFORMED),
    Case("no date", inbound(received_at=None, sent_at=None), SkipReason.MALFORMED),
    Case("inbound without sender", inbound(sender=None), SkipReason.MALFORMED),
    Case("inbound with unusable sender", inbound(sender=Address("undisclosed")), SkipReason.MALFORMED),
    Case("outbound without recipients", outbound(to=()), SkipReason.MALFORMED),
    Case("malformed wins over mode off", inbound(sender=None), SkipReason.MALFORMED, mode=Mode.OFF),
    # --- mode
    Case("mode off", inbound(), SkipReason.MODE_OFF, mode=Mode.OFF),
    # --- exclusions
    Case("DoNotSync category, any case", inbound(categories=("donotsync",)), SkipReason.EXCLUDED_CATEGORY),
    Case("category beats private", inbound(categories=("DoNotSync",), sensitivity="Private"), SkipReason.EXCLUDED_CATEGORY),
    Case("DoNotRecord smart address in Bcc, display-name form",
         outbound(bcc=(Address('"Do not record" <DoNotRecord@example.com>'),)), SkipReason.EXCLUDED_SMART_ADDRESS),
    Case("DoNotRecord in Cc of inbound", inbound(cc=(Address("donotrecord@example.com"),)), SkipReason.EXCLUDED_SMART_ADDRESS),
    Case("Private sensitivity", inbound(sensitivity="Private"), SkipReason.PRIVATE),
    Case("Confidential sensitivity", inbound(sensitivity="confidential"), SkipReason.PRIVATE),
    Case("Personal sensitivity syncs", inbound(sensitivity="Personal"), None),
    Case("private allowed by org", inbound(sensitivity="Private"), None, org={"sync_private": True}),
    Case("admin-excluded sender", inbound(sender=Address("Blocked@Partner.example")), SkipReason.EXCLUDED_ADDRESS),
    Case("user-excluded address in Cc excludes the whole email",
         outbound(cc=(Address("mum@family.example"),)), SkipReason.EXCLUDED_ADDRESS),
    Case("admin-excluded domain covers subdomains", outbound(to=(CLIENT, Address("x@payroll.hr.example"))),
         SkipReason.EXCLUDED_ADDRESS),
    Case("user-excluded domain", inbound(sender=Address("pal@friends.example")), SkipReason.EXCLUDED_ADDRESS),
    Case("excluded internal address excludes too", outbound(cc=(Address("ceo@example.com"),)),
         SkipReason.EXCLUDED_ADDRESS, org={"excluded_addresses": ("ceo@example.com",)}),
    Case("exclusion beats internal-only", inbound(sender=Address("x@example.com")),
         SkipReason.EXCLUDED_ADDRESS, org={"excluded_domains": ("example.com",)}),
    Case("inbound from colleague", inbound(sender=COLLEAGUE), SkipReason.INTERNAL_ONLY),
    Case("internal subdomain", inbound(sender=Address("x@emea.example.com")), SkipReason.INTERNAL_ONLY),
    Case("outbound only internal and smart addresses",
         outbound(to=(COLLEAGUE,), bcc=(Address("record@example.com"),)), SkipReason.INTERNAL_ONLY),
    Case("outbound to self", outbound(to=(ALICE,)), SkipReason.INTERNAL_ONLY),
    # --- designated mode
    Case("designated: nothing designates", inbound(), SkipReason.NOT_DESIGNATED, mode=Mode.DESIGNATED),
    Case("designated: CRM category, any case", inbound(categories=("crm",)), None, mode=Mode.DESIGNATED,
         expect={"designated": True, "is_reply": False}),
    Case("designated: record address in Bcc", outbound(bcc=(Address('"Record" <RECORD@example.com>'),)), None,
         mode=Mode.DESIGNATED, expect={"designated": True}),
    Case("designated: record address in To of inbound", inbound(to=(ALICE, Address("record@example.com"))), None,
         mode=Mode.DESIGNATED),
    Case("designated: other category", inbound(categories=("Follow up",)), SkipReason.NOT_DESIGNATED, mode=Mode.DESIGNATED),
    Case("designated: reply to recorded email (In-Reply-To)", inbound(in_reply_to="<orig@example.com>"), None,
         mode=Mode.DESIGNATED, recorded=REPLY_TO_RECORDED, expect={"is_reply": True, "designated": False}),
    Case("designated: reply found in References", inbound(references=("<x@y> <orig@example.com>",)), None,
         mode=Mode.DESIGNATED, recorded=REPLY_TO_RECORDED, expect={"is_reply": True}),
    Case("designated: reply after the 10-day window", inbound(in_reply_to="<orig@example.com>"),
         SkipReason.NOT_DESIGNATED, mode=Mode.DESIGNATED, recorded=REPLY_TO_OLD),
    Case("designated: configurable reply window", inbound(in_reply_to="<orig@example.com>"), None,
         mode=Mode.DESIGNATED, recorded=REPLY_TO_OLD, org={"reply_window_days": 12}),
    Case("designated: backfilled reply 6 days after an original 12 days old", inbound(**BACKFILL_REPLY), None,
         mode=Mode.DESIGNATED, recorded=ORIGINAL_12_DAYS_AGO, expect={"is_reply": True}),
    Case("designated: reply exactly at the window's end", inbound(in_reply_to="<orig@example.com>"), None,
         mode=Mode.DESIGNATED, recorded={message_key("orig@example.com"): NOW - timedelta(days=10)},
         expect={"is_reply": True}),
    Case("designated: reply a second past the window", inbound(in_reply_to="<orig@example.com>"),
         SkipReason.NOT_DESIGNATED, mode=Mode.DESIGNATED,
         recorded={message_key("orig@example.com"): NOW - timedelta(days=10, seconds=1)}),
    Case("designated: an original later than the reply is no original", inbound(in_reply_to="<orig@example.com>"),
         SkipReason.NOT_DESIGNATED, mode=Mode.DESIGNATED,
         recorded={message_key("orig@example.com"): NOW + timedelta(hours=1)}),
    Case("designated: reply to an email never recorded", inbound(in_reply_to="<other@example.com>"),
         SkipReason.NOT_DESIGNATED, mode=Mode.DESIGNATED, recorded=REPLY_TO_RECORDED),
    Case("designated: outbound replies are not auto-recorded", outbound(in_reply_to="<orig@example.com>"),
         SkipReason.NOT_DESIGNATED, mode=Mode.DESIGNATED, recorded=REPLY_TO_RECORDED),
    Case("designated: exclusions still apply to replies",
         inbound(in_reply_to="<orig@example.com>", categories=("DoNotSync",)), SkipReason.EXCLUDED_CATEGORY,
         mode=Mode.DESIGNATED, recorded=REPLY_TO_RECORDED),
    Case("all mode flags replies too", inbound(in_reply_to="<orig@example.com>"), None,
         recorded=REPLY_TO_RECORDED, expect={"is_reply": True}),
    # --- attachments
    Case("attachments not requested", inbound(), None, expect={"record_attachments": False}),
    Case("record all attachments", inbound(), None, job={"record_all_attachments": True},
         expect={"record_attachments": True}),
    Case("record-attachments smart address", outbound(bcc=(Address("attachments@example.com"),)), None,
         expect={"record_attachments": True, "participants": ("client@acme.example",)}),
    Case("record-attachments category", inbound(categories=("recordattachments",)), None,
         expect={"record_attachments": True}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_classify(case: Case) -> None:
    rules = compile_rules(replace(SETTINGS, mode=case.mode, **case.job), replace(ORG, **case.org))
    decision = classify(case.item, rules, case.recorded)
    assert decision.reason == case.reason, decision.detail
    assert decision.record is (case.reason is None)
    for name, value in case.expect.items():
        assert getattr(decision, name) == value, name


def test_every_skip_reason_is_covered() -> None:
    covered = {c.reason for c in CASES} | {SkipReason.NOT_MATCHED}  # below
    covered.add(SkipReason.SUBJECT_TOO_LONG)  # tests/core/test_tasks.py
    covered.add(SkipReason.ALREADY_RECORDED)  # the pipeline: tests/dags/test_sync_pipeline.py (backfill, Sync Now)
    covered |= {SkipReason(k.value) for k in ItemKind if k is not ItemKind.EMAIL}  # tests/core/test_item_kinds.py
    assert covered - {None} == set(SkipReason)


def test_skip_details_never_name_an_address() -> None:
    rules = compile_rules(SETTINGS, ORG)
    decision = classify(inbound(sender=Address("blocked@partner.example")), rules)
    assert "@" not in decision.detail


def test_finalize_not_matched() -> None:
    candidate = classify(inbound(), compile_rules(SETTINGS, ORG))
    assert finalize(candidate, None).reason is SkipReason.NOT_MATCHED
    match = Match("003000000000001AAA", "Contact")
    assert finalize(candidate, match) is candidate
    skipped = Decision(SkipReason.PRIVATE)
    assert finalize(skipped, None) is skipped


def test_classify_never_raises_on_odd_input() -> None:
    rules = compile_rules(SETTINGS, ORG)
    odd = MailItem(item_id="x", message_id="", folder="", sender=Address(""), to=(Address("<>"),))
    assert classify(odd, rules).reason is SkipReason.MALFORMED


@pytest.mark.parametrize(
    ("folder", "outbound_"),
    [("Sent Items", True), ("/Sent Items/", True), ("SENT ITEMS/Clients/2026", True), ("Sent Items Old", False),
     ("Inbox", False), ("Inbox/Sent Items", False)],
)  # fmt: skip
def test_outbound_folders(folder: str, outbound_: bool) -> None:
    assert is_outbound_folder(folder, ["sent items"]) is outbound_


def test_unusable_message_id_gets_an_identity_from_the_email_not_the_item() -> None:
    from email_sync.rules.keys import email_identity

    rules = compile_rules(SETTINGS, ORG)
    identity = email_identity(inbound(message_id="<>"))
    assert identity is not None and identity.endswith("@no-message-id.email-sync>")
    assert email_identity(inbound(message_id="<>", item_id="AAMk-moved")) == identity  # a move keeps it
    assert email_identity(inbound(message_id="<>", subject="Other")) != identity
    assert email_identity(replace(inbound(message_id="<>"), sender=None, sent_at=None)) == "AAMk-1"
    assert classify(inbound(message_id="<>"), rules).record
    assert classify(inbound(message_id="<>", item_id=" "), rules).reason is SkipReason.MALFORMED


def test_missing_optional_fields_do_not_crash() -> None:
    rules = compile_rules(SETTINGS, ORG)
    odd = replace(inbound(), sensitivity=None, folder=None, categories=(None, "CRM"))  # type: ignore[arg-type]
    assert classify(odd, rules).record


def test_backfilled_reply_finds_its_original_through_the_documented_lookup(tmp_path) -> None:  # noqa: ANN001
    """Defect (issue 14.6): a reply received 6 days ago to an original recorded 12 days ago was
    skipped in a backfill: its original was looked up with ``since = now - 10 days`` and so never
    reached classify. The lookup now starts at the earliest reply time minus the window."""
    from email_sync.rules.classify import reply_lookup_since
    from email_sync.store.state_store import LedgerClaim, StateStore

    store = StateStore.from_url(f"sqlite:///{tmp_path / 'state.db'}")
    store.create_schema()
    original_at = NOW - timedelta(days=12)
    key = message_key("<orig@example.com>")
    store.claim("alice", "r0", [LedgerClaim("k-orig", key, "AAMk-0", "Sent Items", 1, 1, original_at)])
    store.mark_created({"k-orig": ("00T000000000001AAA", True)}, "r0")

    rules = compile_rules(replace(SETTINGS, mode=Mode.DESIGNATED), ORG)
    reply = inbound(**BACKFILL_REPLY)
    other = inbound(message_id="<m3@acme.example>", received_at=NOW)  # names no other email: no bound
    since = reply_lookup_since([other, reply], rules)
    assert since == reply.sent_at - timedelta(days=10)
    recorded = store.recorded_since("alice", [key], since)
    assert recorded == {key: original_at}
    decision = classify(reply, rules, recorded)
    assert decision.record and decision.is_reply
    # what the filter step used to pass: the original falls outside "now - 10 days"
    assert store.recorded_since("alice", [key], NOW - timedelta(days=10)) == {}
    store.engine.dispose()


def test_reply_lookup_since_without_replies_or_times() -> None:
    from email_sync.rules.classify import reply_lookup_since

    rules = compile_rules(SETTINGS, replace(ORG, reply_window_days=3))
    assert reply_lookup_since([], rules) is None
    assert reply_lookup_since([inbound(), inbound(references=("<>",))], rules) is None
    undated = inbound(in_reply_to="<orig@example.com>", received_at=None, sent_at=None)
    assert reply_lookup_since([undated], rules) is None
    naive = inbound(references=("<orig@example.com>",), received_at=NOW.replace(tzinfo=None), sent_at=None)
    assert reply_lookup_since([undated, naive], rules) == NOW - timedelta(days=3)
