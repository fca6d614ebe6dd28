"""Setup errors fail at once naming job and field; mail at rest only while a retry can use it (issue 14)."""

from __future__ import annotations

import json
import os
import stat

import pytest

pytestmark = pytest.mark.timeout(600)


def _staged_runs(world, job: str) -> list[str]:
    job_dir = world.staging / job
    return sorted(p.name for p in job_dir.iterdir()) if job_dir.is_dir() else []


def test_a_run_that_fails_for_good_leaves_no_mail_at_rest(sync_world, monkeypatch):
    """Defect: a failed run left mail.parquet (subjects and bodies in clear) for 7 days."""
    conn = json.loads(os.environ["AIRFLOW_CONN_SALESFORCE_DEFAULT"])
    conn["password"] = "00Dexpired!session"
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(conn))
    sync_world.run("alice", expect="failed", retries=1)
    assert _staged_runs(sync_world, "alice") == []


def test_a_transient_failure_keeps_the_mail_for_the_retry_then_cleans_up(sync_world):
    sandbox = sync_world.stack.salesforce
    sandbox.faults.inject("*", "http", status=503, rate=1.0)  # Salesforce down for the whole run
    sync_world.run("alice", expect="failed", retries=1)
    assert _staged_runs(sync_world, "alice") == []  # the last try failed: nothing kept
    sandbox.faults.clear()
    sync_world.run("alice")
    assert _staged_runs(sync_world, "alice") == []


def test_staging_is_owner_only(sync_world, monkeypatch):
    seen: list[int] = []
    from email_sync.pipeline import filter as filter_step

    original = filter_step.filter_mail

    def spy(ctx, *args, **kwargs):
        for directory in (ctx.staging_root, ctx.staging_root / ctx.job_id, ctx.staging):
            seen.append(stat.S_IMODE(directory.stat().st_mode))
        return original(ctx, *args, **kwargs)

    monkeypatch.setattr(filter_step, "filter_mail", spy)
    sync_world.run("alice")
    assert seen == [0o700, 0o700, 0o700]


def _try_of(run, task_id: str) -> int:
    (ti,) = [ti for ti in run.get_task_instances() if ti.task_id == task_id]
    return ti.try_number


ALICE = {"mode": "all", "mailbox": "alice@example.com", "salesforce_user": "alice@example.com"}


def test_a_missing_folder_fails_the_run_clearly_after_syncing_the_others(sync_world):
    """Defect: an unknown folder was retried as transient for minutes and no folder was synced."""
    sync_world.write_config({"alice": {**ALICE, "folders": ["Inbox", "Sent Items", "Inbox/No Such Folder"]}})
    run = sync_world.run("alice", expect="failed", retries=2)
    assert _try_of(run, "mark_synced_and_summarize") == 1  # permanent: not retried
    assert sync_world.tasks("alice@example.com")  # Inbox and Sent Items were synced
    summary = sync_world.store().latest_runs()[0]
    assert summary["status"] == "failed" and summary["counts"]["missing_folders"] == ["Inbox/No Such Folder"]


def test_an_unknown_salesforce_user_fails_at_once(sync_world):
    sync_world.write_config({"alice": {**ALICE, "salesforce_user": "nobody@acme.example"}})
    run = sync_world.run("alice", expect="failed", retries=2)
    assert _try_of(run, "match_recipients") == 1
    assert sync_world.tasks() == []


def test_an_activity_type_outside_the_picklist_fails_before_anything_is_sent(sync_world):
    """Defect: the run was green while every email failed per record."""
    sync_world.write_config({"alice": {**ALICE, "activity_type": "Carrier Pigeon"}})
    run = sync_world.run("alice", expect="failed", retries=2)
    assert _try_of(run, "match_recipients") == 1
    assert sync_world.tasks() == []
    assert not any(c.startswith(("composite.sobjects", "bulk")) for c in sync_world.stack.salesforce.calls.snapshot())
