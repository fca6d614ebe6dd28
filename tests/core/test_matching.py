"""Matching emails to Contacts/Leads (email_sync.rules.matching): tie-breaks and field selection."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from email_sync.rules.matching import (
    MatchRecord,
    RecordIndex,
    email_fields_for,
    match_participants,
    objects_to_match,
    records_from_rows,
)
from email_sync.rules.settings import JobSettings, MatchObject, OrgSettings


def rec(sobject: str, id_: str, created: str | None, *emails: str) -> MatchRecord:
    when = datetime.fromisoformat(created).replace(tzinfo=UTC) if created else None
    return MatchRecord(sobject, id_, when, emails)


RECORDS = [
    rec("Contact", "003B", "2021-01-01", "ann@acme.example"),
    rec("Contact", "003A", "2021-01-01", "ann@acme.example"),  # same age: Id decides
    rec("Contact", "003C", "2019-05-05", "bob@acme.example", "robert@home.example"),
    rec("Contact", "003D", None, "ann@acme.example"),  # no CreatedDate: last
    rec("Lead", "00QNEW", "2024-01-01", "lee@lead.example"),
    rec("Lead", "00QOLD", "2020-01-01", "lee@lead.example"),
    rec("Lead", "00QX", "2018-01-01", "xena@lead.example"),
    rec("Lead", "00QANN", "2010-01-01", "ann@acme.example"),
]
INDEX = RecordIndex(RECORDS)


@pytest.mark.parametrize(
    ("participants", "shared", "max_rel", "who", "sobject", "related"),
    [
        # contacts beat leads, even an older lead of the same address
        (["ann@acme.example"], False, 50, "003A", "Contact", ()),
        # first = participant order, then oldest (CreatedDate, then Id)
        (["ann@acme.example", "bob@acme.example"], False, 50, "003A", "Contact", ()),
        (["bob@acme.example", "ann@acme.example"], False, 50, "003C", "Contact", ()),
        # a lead participant first does not beat a later contact
        (["lee@lead.example", "bob@acme.example"], False, 50, "003C", "Contact", ()),
        # shared activities: all contacts in participant order then age, WhoId first
        (["ann@acme.example", "bob@acme.example"], True, 50, "003A", "Contact", ("003A", "003B", "003D", "003C")),
        (["bob@acme.example", "ann@acme.example"], True, 50, "003C", "Contact", ("003C", "003A", "003B", "003D")),
        # a contact found through two addresses is related once
        (["robert@home.example", "bob@acme.example"], True, 50, "003C", "Contact", ("003C",)),
        # capped at max_shared_relations
        (["ann@acme.example", "bob@acme.example"], True, 2, "003A", "Contact", ("003A", "003B")),
        # several leads: the oldest; leads never get relations
        (["lee@lead.example"], True, 50, "00QOLD", "Lead", ()),
        # leads: first participant with a lead, then its oldest lead
        (["lee@lead.example", "xena@lead.example"], False, 50, "00QOLD", "Lead", ()),
        (["xena@lead.example", "lee@lead.example"], False, 50, "00QX", "Lead", ()),
    ],
)  # fmt: skip
def test_tie_breaks(participants, shared, max_rel, who, sobject, related) -> None:  # noqa: ANN001
    match = match_participants(participants, INDEX, shared_activities=shared, max_relations=max_rel)
    assert match is not None
    assert (match.who_id, match.sobject, match.related_contact_ids) == (who, sobject, related)


def test_no_match() -> None:
    assert match_participants(["nobody@x.example"], INDEX, shared_activities=True, max_relations=50) is None
    assert match_participants([], INDEX, shared_activities=False, max_relations=50) is None


def test_matched_addresses_reported() -> None:
    match = match_participants(["nobody@x.example", "bob@acme.example", "ann@acme.example"], INDEX,
                               shared_activities=True, max_relations=50)  # fmt: skip
    assert match is not None and match.matched_addresses == ("bob@acme.example", "ann@acme.example")


def test_input_order_of_records_does_not_matter() -> None:
    forward = match_participants(["ann@acme.example"], INDEX, shared_activities=True, max_relations=50)
    backward = match_participants(["ann@acme.example"], RecordIndex(reversed(RECORDS)), shared_activities=True,
                                  max_relations=50)  # fmt: skip
    assert forward == backward


def test_records_from_soql_rows() -> None:
    rows = [
        {"attributes": {"type": "Contact"}, "Id": "003X", "CreatedDate": "2024-01-31T09:00:00.000+0000",
         "Email": "Ann@Acme.example", "Secondary_Email__c": None},
        {"Id": "003Y", "CreatedDate": None, "Email": "x@y.example", "Secondary_Email__c": "X@Y.example"},
    ]  # fmt: skip
    first, second = records_from_rows("Contact", rows, ["Email", "Secondary_Email__c"])
    assert first == MatchRecord("Contact", "003X", datetime(2024, 1, 31, 9, tzinfo=UTC), ("ann@acme.example",))
    assert second.emails == ("x@y.example",) and second.created_date is None


def test_secondary_email_matches() -> None:
    rows = [{"Id": "003S", "CreatedDate": "2020-01-01T00:00:00Z", "Email": "a@x.example", "Secondary_Email__c": "b@x.example"}]
    index = RecordIndex(records_from_rows("Contact", rows, ["Email", "Secondary_Email__c"]))
    match = match_participants(["b@x.example"], index, shared_activities=False, max_relations=50)
    assert match is not None and match.who_id == "003S"


ORG = OrgSettings(email_fields={"Contact": ("Email", "Secondary_Email__c"), "Lead": ("Email",)})
JOB = JobSettings(mailbox="a@example.com")


@pytest.mark.parametrize(
    ("alternate", "sobject", "fields"),
    [(True, "Contact", ("Email", "Secondary_Email__c")), (False, "Contact", ("Email",)), (True, "Lead", ("Email",))],
)
def test_email_fields_for(alternate: bool, sobject: str, fields: tuple[str, ...]) -> None:
    assert email_fields_for(sobject, replace(JOB, alternate_email_fields=alternate), ORG) == fields


@pytest.mark.parametrize(
    ("objects", "expected"),
    [((MatchObject.LEADS, MatchObject.CONTACTS), ("Contact", "Lead")), ((MatchObject.LEADS,), ("Lead",))],
)
def test_objects_to_match(objects: tuple[MatchObject, ...], expected: tuple[str, ...]) -> None:
    assert objects_to_match(replace(JOB, match_objects=objects)) == expected


def test_lookup_addresses_and_match_decision() -> None:
    from email_sync.rules.classify import Decision, SkipReason
    from email_sync.rules.matching import lookup_addresses, match_decision

    live = Decision(None, participants=("bob@acme.example", "ann@acme.example"))
    dead = Decision(SkipReason.PRIVATE, participants=("zed@x.example",))
    assert lookup_addresses([live, dead, live]) == ["ann@acme.example", "bob@acme.example"]
    org = OrgSettings(max_shared_relations=1)
    shared = replace(JOB, shared_activities=True)
    match = match_decision(live, INDEX, shared, org)
    assert match is not None and match.related_contact_ids == ("003C",)
    assert match_decision(dead, INDEX, shared, org) is None


def test_a_quote_in_the_sender_is_part_of_the_address() -> None:
    """Defect (issue 14.7): normalisation stripped a leading quote, so mail from 'em@initech.com was
    attached to the Contact em@initech.com (another mailbox, possibly another person)."""
    from email_sync.rules.classify import classify, compile_rules
    from email_sync.rules.models import Address, MailItem
    from email_sync.rules.settings import Mode

    rows = [{"Id": "003E", "CreatedDate": "2020-01-01T00:00:00Z", "Email": "Em@Initech.com"},
            {"Id": "003O", "CreatedDate": "2020-01-01T00:00:00Z", "Email": "O'Brien@Initech.com"}]
    index = RecordIndex(records_from_rows("Contact", rows, ["Email"]))
    rules = compile_rules(replace(JOB, mode=Mode.ALL), OrgSettings(internal_domains=("example.com",)))

    def who(sender: str) -> str | None:
        mail = MailItem(item_id="i", message_id="<m@initech.com>", folder="Inbox", sender=Address(sender),
                        to=(Address("a@example.com"),), received_at=datetime(2026, 3, 10, tzinfo=UTC))
        decision = classify(mail, rules)
        assert decision.record, decision
        match = match_participants(decision.participants, index, shared_activities=False, max_relations=50)
        return match.who_id if match else None

    assert who("'em@initech.com") is None
    assert who('"em"@initech.com') is None
    assert who("EM@initech.com") == "003E"  # case still folds
    assert who("Em <em@initech.com>") == "003E"
    assert who("o'brien@initech.com") == "003O"
