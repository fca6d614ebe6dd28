"""Task building (email_sync.rules.tasks), keys (email_sync.rules.keys) and attachment selection."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_sync.rules.attachments import AttachmentSkipReason, select_attachments
from email_sync.rules.classify import Decision, SkipReason, classify, compile_rules
from email_sync.rules.keys import IDEMPOTENCY_FIELD, attachment_key, idempotency_key, message_key
from email_sync.rules.matching import Match
from email_sync.rules.models import Address, AttachmentRef, Direction, MailItem
from email_sync.rules.settings import JobSettings, Mode, OrgSettings
from email_sync.rules.tasks import build_tasks, field_limits_from_describe
from email_sync.rules.text import FieldLimit, fits

OWNER = "005000000000001AAA"
CONTACT = Match("003000000000001AAA", "Contact", ("003000000000001AAA", "003000000000002AAA"))
LATE_EVENING_UTC = datetime(2026, 3, 9, 23, 30, tzinfo=UTC)  # already 10 March in Berlin
SETTINGS = JobSettings(mailbox="alice@example.com", mode=Mode.ALL, salesforce_user=OWNER, timezone="Europe/Berlin")
ORG = OrgSettings(internal_domains=("example.com",))


def item(**changes: Any) -> MailItem:
    base = MailItem(
        item_id="AAMk-1", message_id="<m1@acme.example>", folder="Inbox", subject="Quote request",
        body="Hello Alice", sender=Address("client@acme.example"), to=(Address("alice@example.com"),),
        received_at=LATE_EVENING_UTC,
    )  # fmt: skip
    return replace(base, **changes)


def decide(mail: MailItem, settings_: JobSettings = SETTINGS) -> Decision:
    return classify(mail, compile_rules(settings_, ORG))


def build(mail: MailItem, settings_: JobSettings = SETTINGS, limits: dict[str, FieldLimit] | None = None, match=CONTACT):  # noqa: ANN001, ANN201
    return build_tasks("alice", mail, decide(mail, settings_), match, settings_, OWNER, limits)


def test_single_task_fields() -> None:
    result = build(item())
    assert result.skip_reason is None and result.parts == 1
    [task] = result.tasks
    assert task.sobject() == {
        "Status": "Completed",
        "TaskSubtype": "Email",
        "ActivityDate": "2026-03-10",  # the received date in the user's zone
        "OwnerId": OWNER,
        "WhoId": CONTACT.who_id,
        "Subject": "Quote request",
        "Description": "Hello Alice",
        IDEMPOTENCY_FIELD: idempotency_key("alice", "<m1@acme.example>", 1),
    }
    assert task.related_contact_ids == CONTACT.related_contact_ids
    assert (task.part, task.parts) == (1, 1)


def test_activity_type_written_and_truncated() -> None:
    result = build(item(), replace(SETTINGS, activity_type="Email Outreach Campaign"), {"Type": FieldLimit(5)})
    assert result.tasks[0].fields["Type"] == "Email"


def test_other_fields_truncated_but_key_never() -> None:
    with pytest.raises(ValueError, match=IDEMPOTENCY_FIELD):
        build(item(), limits={IDEMPOTENCY_FIELD: FieldLimit(20)})


def test_outbound_uses_sent_date() -> None:
    mail = item(folder="Sent Items", in_sent_folder=True, sender=Address("alice@example.com"), to=(Address("client@acme.example"),),
                received_at=None, sent_at=datetime(2026, 3, 10, 22, 30, tzinfo=UTC))  # fmt: skip
    assert build(mail).tasks[0].fields["ActivityDate"] == "2026-03-10"
    ny = replace(SETTINGS, timezone="America/New_York")
    assert build(mail, ny).tasks[0].fields["ActivityDate"] == "2026-03-10"
    tokyo = replace(SETTINGS, timezone="Asia/Tokyo")
    assert build(mail, tokyo).tasks[0].fields["ActivityDate"] == "2026-03-11"


def test_html_body_becomes_text() -> None:
    result = build(item(body="<p>Hi&nbsp;there</p><p>Bye</p>", body_is_html=True))
    assert result.tasks[0].fields["Description"] == "Hi there\n\nBye"


def test_empty_body_omits_description_and_empty_subject_is_named() -> None:
    [task] = build(item(body="", subject="  \r\n ")).tasks
    assert "Description" not in task.fields
    assert task.fields["Subject"] == "(no subject)"


def test_folded_subject_is_unfolded() -> None:
    assert build(item(subject="Re: a\r\n\tlong one")).tasks[0].fields["Subject"] == "Re: a long one"


def test_subject_too_long_skips_email() -> None:
    result = build(item(subject="x" * 256))
    assert (result.skip_reason, result.tasks) == (SkipReason.SUBJECT_TOO_LONG, ())
    assert build(item(subject="x" * 255)).skip_reason is None


def test_subject_counted_in_utf16_units() -> None:
    assert build(item(subject="😀" * 128)).skip_reason is SkipReason.SUBJECT_TOO_LONG
    assert build(item(subject="😀" * 127)).skip_reason is None


def test_long_description_split_into_labelled_parts() -> None:
    body = ("lorem ipsum " * 7500).strip()  # 89,999 characters
    result = build(item(body=body))
    assert result.skip_reason is None and result.parts == 3
    assert "".join(t.fields["Description"] for t in result.tasks) == body
    assert [t.fields["Subject"] for t in result.tasks] == [f"Quote request (part {i} of 3)" for i in (1, 2, 3)]
    keys = [t.idempotency_key for t in result.tasks]
    assert keys == [idempotency_key("alice", "<m1@acme.example>", i) for i in (1, 2, 3)]
    assert len(set(keys)) == 3
    assert all(t.fields[IDEMPOTENCY_FIELD] == t.idempotency_key for t in result.tasks)


def test_part_marker_moves_into_description_when_subject_has_no_room() -> None:
    """Defect (issue 14.5): a 250-character subject with a body needing two parts was skipped as
    subject_too_long, because " (part i of n)" pushed the Subject past 255. (This test used to
    assert that skip.) The marker now goes on the first line of each Description instead."""
    subject, body = "x" * 250, "y " * 20_000
    result = build(item(subject=subject, body=body))
    assert result.skip_reason is None and result.parts == 2
    assert [t.fields["Subject"] for t in result.tasks] == [subject, subject]
    descriptions = [t.fields["Description"] for t in result.tasks]
    assert [d.split("\n", 1)[0] for d in descriptions] == ["(part 1 of 2)", "(part 2 of 2)"]
    assert "".join(d.split("\n", 1)[1] for d in descriptions) == body  # none lost
    assert all(len(d) <= 32_000 for d in descriptions)
    assert [t.idempotency_key for t in result.tasks] == [idempotency_key("alice", "<m1@acme.example>", i) for i in (1, 2)]


def test_part_marker_stays_in_subject_while_it_fits() -> None:
    subject = "x" * (255 - len(" (part 2 of 2)"))
    result = build(item(subject=subject, body="y " * 20_000))
    assert [t.fields["Subject"] for t in result.tasks] == [f"{subject} (part {i} of 2)" for i in (1, 2)]
    assert "".join(t.fields["Description"] for t in result.tasks) == "y " * 20_000
    # one character more and the marker moves, for every part of the email alike
    moved = build(item(subject=subject + "x", body="y " * 20_000))
    assert [t.fields["Subject"] for t in moved.tasks] == [subject + "x"] * 2
    assert all(t.fields["Description"].startswith(f"(part {t.part} of 2)\n") for t in moved.tasks)


def test_only_a_subject_too_long_on_its_own_is_skipped_when_split() -> None:
    result = build(item(subject="x" * 256, body="y " * 20_000))
    assert (result.skip_reason, result.tasks) == (SkipReason.SUBJECT_TOO_LONG, ())
    assert result.detail == "256 characters"


def test_description_marker_counts_against_byte_limit() -> None:
    """The marker is reserved in UTF-16 units and bytes: each Description still fits describe's limits."""
    limit = FieldLimit(40, 60)
    body = "ü" * 100  # 2 bytes each: the byte limit binds
    result = build(item(subject="S" * 250, body=body), limits={"Description": limit})
    assert result.skip_reason is None and result.parts >= 2
    assert all(fits(t.fields["Description"], limit) for t in result.tasks)
    assert "".join(t.fields["Description"].split("\n", 1)[1] for t in result.tasks) == body


def test_marker_reserve_grows_with_the_part_count() -> None:
    """Nine parts at full size become ten once the marker is reserved: "(part 10 of 10)" must fit too."""
    limit = FieldLimit(30)
    body = "z" * (30 * 9)  # nine full parts without a marker
    result = build(item(subject="S" * 250, body=body), limits={"Description": limit})
    n = result.parts
    assert n >= 10
    assert all(fits(t.fields["Description"], limit) for t in result.tasks)
    assert [t.fields["Description"].split("\n", 1)[0] for t in result.tasks] == [f"(part {i} of {n})" for i in range(1, n + 1)]
    assert "".join(t.fields["Description"].split("\n", 1)[1] for t in result.tasks) == body


@given(st.text(min_size=0, max_size=600), st.integers(min_value=20, max_value=80))
@settings(max_examples=150, deadline=None)
def test_parts_with_markers_in_description_rebuild_the_body(body: str, description_limit: int) -> None:
    limit = FieldLimit(description_limit)
    result = build(item(body=body, subject="S" * 255), limits={"Description": limit})
    assert result.skip_reason is None
    n = result.parts
    assert all(t.fields["Subject"] == "S" * 255 for t in result.tasks)
    if n == 1:
        assert result.tasks[0].fields.get("Description", "") == body
        return
    assert all(fits(t.fields["Description"], limit) for t in result.tasks)
    lines = [t.fields["Description"].split("\n", 1) for t in result.tasks]
    assert [first for first, _ in lines] == [f"(part {i} of {n})" for i in range(1, n + 1)]
    assert "".join(rest for _, rest in lines) == body


def test_describe_length_drives_split() -> None:
    result = build(item(body="a b c d e f"), limits={"Description": FieldLimit(4)})
    assert [t.fields["Description"] for t in result.tasks] == ["a b ", "c d ", "e f"]


@given(
    st.text(min_size=0, max_size=600),
    st.integers(min_value=2, max_value=80),
)
@settings(max_examples=150, deadline=None)
def test_parts_rebuild_the_body_and_are_labelled(body: str, description_limit: int) -> None:
    result = build(item(body=body, subject="S"), limits={"Description": FieldLimit(description_limit)})
    assert result.skip_reason is None
    n = result.parts
    assert "".join(t.fields.get("Description", "") for t in result.tasks) == body
    assert [t.part for t in result.tasks] == list(range(1, n + 1))
    assert all(t.parts == n for t in result.tasks)
    expected = ["S"] if n == 1 else [f"S (part {i} of {n})" for i in range(1, n + 1)]
    assert [t.fields["Subject"] for t in result.tasks] == expected


def test_skipped_decisions_pass_through() -> None:
    assert build(item(), replace(SETTINGS, mode=Mode.OFF)).skip_reason is SkipReason.MODE_OFF
    assert build(item(), match=None).skip_reason is SkipReason.NOT_MATCHED


def test_lead_match_has_no_relations() -> None:
    [task] = build(item(), match=Match("00Q000000000001AAA", "Lead")).tasks
    assert task.fields["WhoId"] == "00Q000000000001AAA" and task.related_contact_ids == ()


def test_field_limits_from_describe() -> None:
    describe = {"fields": [
        {"name": "Subject", "type": "combobox", "length": 255, "byteLength": 765},
        {"name": "Description", "type": "textarea", "length": 32000, "byteLength": 96000},
        {"name": "ActivityDate", "type": "date", "length": 0, "byteLength": 0},
        {"name": "Type", "type": "picklist", "length": 40, "byteLength": 120},
    ]}  # fmt: skip
    assert field_limits_from_describe(describe) == {
        "Subject": FieldLimit(255, 765), "Description": FieldLimit(32000, 96000), "Type": FieldLimit(40, 120),
    }  # fmt: skip


# --- keys -------------------------------------------------------------------------------------


def test_keys_are_deterministic_and_distinct() -> None:
    key = idempotency_key("alice", "<m1@acme.example>", 1)
    assert re.fullmatch(r"[0-9a-f]{40}", key)
    assert key == idempotency_key("alice", " m1@acme.example ", 1)  # EWS vs Graph forms agree
    assert key != idempotency_key("alice", "<m1@acme.example>", 2)
    assert key != idempotency_key("bob", "<m1@acme.example>", 1)
    assert key == idempotency_key("alice", "<M1@ACME.example>", 1)  # case folded, like the ledger
    assert message_key("<m1@acme.example>") == message_key("M1@acme.example")
    assert re.fullmatch(r"[0-9a-f]{32}", message_key("<m1@acme.example>"))
    with pytest.raises(ValueError):
        idempotency_key("alice", "<m1@acme.example>", 0)
    with pytest.raises(ValueError):
        message_key("  ")


def test_task_key_without_message_id_survives_a_move() -> None:
    """Defect: the key was built from the source's item id, which a move changes (a backfill then
    recorded the email a second time)."""
    [task] = build(item(message_id="")).tasks
    [moved] = build(item(message_id="", item_id="AAMk-moved", folder="Inbox/Clients")).tasks
    assert task.idempotency_key == moved.idempotency_key
    assert task.idempotency_key != idempotency_key("alice", "AAMk-1", 1)


# --- attachments --------------------------------------------------------------------------------

MB = 1024 * 1024
FILES = (
    AttachmentRef("a1", "quote.pdf", 5 * MB),  # exactly 5 MB: uploaded
    AttachmentRef("a2", "video.mp4", 5 * MB + 1),
    AttachmentRef("a3", "logo.png", 2000, "image/png", is_inline=True),
    AttachmentRef("a4", "empty.txt", 0),
    AttachmentRef("a5", "quote.pdf", 5 * MB),  # same name and size: a second file
)


def test_attachments_selected_when_requested() -> None:
    mail = item(attachments=FILES)
    plan = select_attachments(mail, decide(mail, replace(SETTINGS, record_all_attachments=True)), ORG)
    assert [s.ref.attachment_id for s in plan.upload] == ["a1", "a5"]
    assert plan.upload[0].key != plan.upload[1].key
    assert plan.upload[0].key == attachment_key("<m1@acme.example>", "quote.pdf", 5 * MB, 0)
    assert [(r.attachment_id, why) for r, why in plan.skipped] == [
        ("a2", AttachmentSkipReason.TOO_LARGE), ("a4", AttachmentSkipReason.EMPTY),
    ]  # fmt: skip


def test_attachments_by_smart_address_only_when_configured() -> None:
    org = replace(ORG, record_attachments_address="attachments@example.com")
    mail = item(attachments=FILES[:1], cc=(Address("attachments@example.com"),))
    plan = select_attachments(mail, classify(mail, compile_rules(SETTINGS, org)), org)
    assert len(plan.upload) == 1


def test_no_attachments_unless_requested_or_recorded() -> None:
    mail = item(attachments=FILES)
    assert select_attachments(mail, decide(mail), ORG).upload == ()
    skipped = Decision(SkipReason.PRIVATE, Direction.INBOUND, record_attachments=True)
    assert select_attachments(mail, skipped, ORG).upload == ()


def test_attachment_limit_is_the_org_setting() -> None:
    mail = item(attachments=FILES[:1])
    decision = decide(mail, replace(SETTINGS, record_all_attachments=True))
    plan = select_attachments(mail, decision, replace(ORG, attachment_max_bytes=MB))
    assert plan.upload == () and plan.skipped[0][1] is AttachmentSkipReason.TOO_LARGE


def test_attachment_plan_unpacks() -> None:
    mail = item(attachments=FILES[:2])
    upload, skipped = select_attachments(mail, decide(mail, replace(SETTINGS, record_all_attachments=True)), ORG)
    assert len(upload) == 1 and len(skipped) == 1
