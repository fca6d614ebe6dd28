"""End to end: the generated DAGs run in real Airflow (``dag.test()``) against both sandboxes.

The demo data tags every email's subject with the rule it exercises (``[reply] …``), so each
assertion reads the sandbox org and mailboxes and compares with what the rules demand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sandbox.demo_data import RECORD_ADDRESS

pytestmark = pytest.mark.timeout(600)

RECORDED_IN_ALL_MODE = {
    "inbound_contact", "outbound_contact", "designated_category", "designated_smart_address", "reply_original",
    "reply", "attachment_small", "attachment_large", "inline_image", "long_body", "several_contacts",
    "alternate_email", "lead", "html_body",
}
NEVER_RECORDED = {
    "inbound_unknown", "internal_only", "do_not_sync_category", "do_not_record_bcc", "long_subject",
    "converted_lead", "private",
}


def test_all_mode_records_every_matching_email_and_nothing_else(sync_world):
    sync_world.run("alice")
    expected = sync_world.demo.expectations["alice@example.com"]
    tags = sync_world.tags("alice@example.com")
    assert set(tags) == RECORDED_IN_ALL_MODE
    assert all(tags[t] == expected[t] for t in RECORDED_IN_ALL_MODE), (tags, expected)

    outcomes = sync_world.store().outcomes("alice", sync_world.store().latest_runs()[0]["run_id"])
    reasons = {o.reason for o in outcomes if o.outcome == "skipped"}
    assert reasons == {"not_matched", "internal_only", "excluded_category", "excluded_smart_address",
                       "subject_too_long", "private"}
    run = sync_world.store().latest_runs()[0]
    assert run["status"] == "success"
    assert run["counts"]["recorded"] == sum(expected[t] for t in RECORDED_IN_ALL_MODE)


def test_tasks_carry_the_spec_fields(sync_world):
    sync_world.run("alice")
    owner = sync_world.user_id("alice@example.com")
    tasks = sync_world.tasks("alice@example.com")
    assert all(t["Status"] == "Completed" and t["TaskSubtype"] == "Email" and t["OwnerId"] == owner for t in tasks)
    assert all(len(t["Email_Sync_Key__c"]) == 40 for t in tasks)
    html = [t for t in tasks if t["Subject"].startswith("[html_body]")]
    assert html and all("<" not in t["Description"] and "Hi there" in t["Description"] for t in html)
    leads = [t for t in tasks if t["Subject"].startswith("[lead]")]
    assert leads and all(t["WhoId"].startswith("00Q") for t in leads)
    alternates = [t for t in tasks if t["Subject"].startswith("[alternate_email]")]
    assert alternates and all(t["WhoId"].startswith("003") for t in alternates)


def test_long_body_is_split_into_parts_and_nothing_is_lost(sync_world):
    sync_world.run("alice")
    parts = sorted((t for t in sync_world.tasks("alice@example.com") if t["Subject"].startswith("[long_body]")),
                   key=lambda t: (t["Subject"].split(" (part")[0], t["Subject"]))
    first = parts[0]["Subject"].split(" (part")[0]
    same_email = [t for t in parts if t["Subject"].startswith(first + " (part")]
    n = len(same_email)
    assert n >= 2 and [t["Subject"] for t in same_email] == [f"{first} (part {i} of {n})" for i in range(1, n + 1)]
    source = next(m for m in sync_world.messages("alice@example.com") if m.subject == first)
    assert "".join(t["Description"] for t in same_email) == source.body.strip() or \
        "".join(t["Description"] for t in same_email).replace("\r\n", "\n") == source.body.replace("\r\n", "\n")
    assert all(len(t["Description"]) <= 32_000 for t in same_email)


def test_designated_mode_records_only_designated_emails_and_replies(sync_world):
    sync_world.run("bob")
    tags = sync_world.tags("bob@example.com")
    assert set(tags) == {"designated_category", "designated_smart_address", "reply_original", "reply"}
    assert tags["reply"] == sync_world.demo.expectations["bob@example.com"]["reply"]


def test_shared_activities_relate_every_contact_and_attachments_follow_the_five_mb_rule(sync_world):
    sync_world.run("carol")  # shared activities on, record all attachments
    org = sync_world.stack.salesforce.org
    tasks = sync_world.tasks("carol@example.com")
    several = [t for t in tasks if t["Subject"].startswith("[several_contacts]")]
    assert several
    for task in several:
        related = {r["RelationId"] for r in org.task_relations(task["Id"])}
        assert len(related) == 3 and task["WhoId"] in related

    small = [t for t in tasks if t["Subject"].startswith("[attachment_small]")]
    assert small and all(len(org.files_for(t["Id"])) == 1 for t in small)
    large = [t for t in tasks if t["Subject"].startswith("[attachment_large]")]
    assert large and all([f["PathOnClient"] for f in org.files_for(t["Id"])] == ["summary.txt"] for t in large)
    inline = [t for t in tasks if t["Subject"].startswith("[inline_image]")]
    assert inline and all(org.files_for(t["Id"]) == [] for t in inline)
    run = sync_world.store().latest_runs()[0]
    assert run["counts"]["attachments_too_large"] == len(large)
    assert run["counts"]["attachments_uploaded"] == len(small) + len(large)


def test_shared_activities_off_relates_only_the_first_contact(sync_world):
    sync_world.run("alice")
    org = sync_world.stack.salesforce.org
    several = [t for t in sync_world.tasks("alice@example.com") if t["Subject"].startswith("[several_contacts]")]
    assert several and all({r["RelationId"] for r in org.task_relations(t["Id"])} <= {t["WhoId"]} for t in several)


def test_recorded_emails_get_the_crm_category_in_exchange(sync_world):
    sync_world.run("alice")
    messages = sync_world.messages("alice@example.com")
    recorded_subjects = {t["Subject"].split(" (part")[0] for t in sync_world.tasks("alice@example.com")}
    assert recorded_subjects
    for message in messages:
        tagged_by_user = message.subject.startswith("[designated_category]")
        assert ("CRM" in message.categories) == (message.subject in recorded_subjects or tagged_by_user), message.subject


def test_owned_only_and_alternate_fields_off(sync_world):
    sync_world.write_config(
        {"dave": {"mode": "all", "mailbox": "alice@example.com", "salesforce_user": "alice@example.com",
                  "owned_records_only": True}},
        policy_changes={"locked": [], "defaults": {"alternate_email_fields": False}},
    )
    sync_world.run("dave")
    owner = sync_world.user_id("alice@example.com")
    org = sync_world.stack.salesforce.org
    who_owners = {r["Id"]: r["OwnerId"] for obj in ("Contact", "Lead") for r in org.records(obj)}
    tasks = sync_world.tasks("alice@example.com")
    assert tasks and all(who_owners[t["WhoId"]] == owner for t in tasks)
    assert not any(t["Subject"].startswith("[alternate_email]") for t in tasks)


def test_sync_now_covers_everything_since_the_last_sync_and_nothing_twice(sync_world):
    sync_world.run("alice")
    before = len(sync_world.tasks())
    ews = sync_world.stack.ews.store
    contact = sync_world.stack.salesforce.org.records("Contact")[0]
    ews.add_message("alice@example.com", "Inbox", subject="[sync_now] new mail", body="hello",
                    **{"from": {"email": contact["Email"]}}, to=[{"email": "alice@example.com"}],
                    received=datetime.now(UTC).isoformat(), message_id="<sync-now-1@demo.example.com>")
    sync_world.run("alice")  # Sync Now: no logical date, no data interval
    tasks = sync_world.tasks()
    assert len(tasks) == before + 1
    assert [t["Subject"] for t in tasks if t["Subject"].startswith("[sync_now]")] == ["[sync_now] new mail"]


def test_mail_that_appears_late_on_the_window_edge_is_still_synced(sync_world):
    """Exchange stamps DateTimeReceived to the second, and an item can show up in its folder
    after the run whose window covered that stamp: the next run reads a few minutes back."""
    sync_world.run("alice")
    before = len(sync_world.tasks())
    watermark = sync_world.store().watermark("alice")
    contact = sync_world.stack.salesforce.org.records("Contact")[0]
    sync_world.stack.ews.store.add_message(
        "alice@example.com", "Inbox", subject="[late] on the edge", body="hello",
        **{"from": {"email": contact["Email"]}}, to=[{"email": "alice@example.com"}],
        received=(watermark - timedelta(seconds=90)).isoformat(), message_id="<late-1@demo.example.com>")
    sync_world.run("alice")
    subjects = [t["Subject"] for t in sync_world.tasks()]
    assert len(subjects) == before + 1 and subjects.count("[late] on the edge") == 1


def test_a_run_with_no_new_mail_makes_no_salesforce_call(sync_world):
    sync_world.run("alice")
    sync_world.stack.salesforce.calls.reset()
    sync_world.run("alice")
    assert sum(sync_world.stack.salesforce.calls.snapshot().values()) == 0


def test_backfill_over_synced_days_creates_no_duplicates(sync_world):
    """Three days of timetable intervals re-run after a normal run; each is a real DAG run."""
    sync_world.write_config({"alice": {"mode": "all", "mailbox": "alice@example.com",
                                       "salesforce_user": "alice@example.com", "frequency_minutes": 1440,
                                       "window": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
                                       "timezone": "UTC", "lookback_days": 3}})
    sync_world.run("alice")
    keys = sorted(t["Email_Sync_Key__c"] for t in sync_world.tasks())
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for days_back in (2, 1, 0):  # interval ends: midnights of the last three days (daily grid)
        sync_world.run("alice", logical_date=today - timedelta(days=days_back))
    assert sorted(t["Email_Sync_Key__c"] for t in sync_world.tasks()) == keys


def test_salesforce_calls_grow_with_batches_not_emails(sync_world):
    sync_world.run("alice")
    calls = sync_world.stack.salesforce.calls.snapshot()
    recorded = sync_world.store().latest_runs()[0]["counts"]["recorded"]
    assert recorded > 50
    # Owner lookup and all Contact and Lead lookups: one Composite call each; Task field sizes;
    # every Task in one upsert; the run's files in one upload.
    assert calls == {"composite": 2, "describe": 1, "composite.sobjects.upsert": 1, "composite.sobjects.create": 1}
    ews_calls = sync_world.stack.ews.calls.snapshot()
    assert ews_calls.get("GetItem", 0) <= 3 and ews_calls.get("UpdateItem", 0) == 1
    assert ews_calls.get("GetAttachment", 0) == 1  # every file of the run in one request
    counts = sync_world.store().latest_runs()[0]["counts"]  # the run summary counts what the servers saw
    assert counts["salesforce_calls"] == sum(calls.values())
    assert counts["source_requests"] == sum(ews_calls.values())


def test_designation_by_smart_address_alone(sync_world):
    """A Bcc to the record smart address designates an outbound email in designated mode."""
    sync_world.run("bob")
    smart = [m for m in sync_world.messages("bob@example.com")
             if m.subject.startswith("[designated_smart_address]")
             and any(a.email == RECORD_ADDRESS for a in m.bcc) and "CRM" not in (m.subject or "")]
    assert smart
    subjects = {t["Subject"] for t in sync_world.tasks("bob@example.com")}
    assert all(m.subject in subjects for m in smart)


def test_mode_off_syncs_nothing_and_calls_nobody(sync_world):
    sync_world.write_config({"alice": {"mode": "off", "mailbox": "alice@example.com",
                                       "salesforce_user": "alice@example.com"}})
    assert sync_world.dag("alice").is_paused_upon_creation
    sync_world.run("alice")
    assert sync_world.tasks() == []
    assert sync_world.stack.salesforce.calls.total == 0 and sync_world.stack.ews.calls.total == 0
