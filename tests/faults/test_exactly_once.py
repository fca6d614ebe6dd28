"""Exactly once under crashes, retries, overlaps and transient faults (SPEC §4, §6).

The representative sync is carol's job on the demo data: shared activities (TaskRelations),
every attachment recorded (Files), the CRM category written back. A reference run on fresh
sandboxes gives the expected org and mailbox; every faulted scenario must end in exactly the
same state: the same Tasks (by idempotency key), the same relations and files per Task, the
same categories — zero duplicates, zero missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT
from tests.faults.invariants import JOB, MAILBOX, assert_same
from tests.sync_world import SyncWorld, start_world

# The module's demo, reference run (snapshot, call counts) and the state-store ``backend``
# (SQLite and PostgreSQL) are fixtures of tests/faults/conftest.py; the invariant's helpers
# live in tests/faults/invariants.py.
pytestmark = pytest.mark.timeout(1800)


def worlds(demo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
           backend: str = "sqlite") -> Iterator[SyncWorld]:
    path = tmp_path / name
    path.mkdir()
    yield from start_world(demo, path, monkeypatch, backend)


@pytest.mark.parametrize("system", ["salesforce", "ews"])
def test_answer_lost_at_every_call_then_airflow_retries(system, backend, demo, reference, tmp_path, monkeypatch):
    """For each external call k of the run: the server applies it, the answer is lost (the
    connection drops), the task fails or the client retries; Airflow retries the task once."""
    total = reference["calls"][system]
    # Every call of a full sync, files and categories included (Salesforce: owner lookup and
    # matching as two Composite calls, describe, Task upsert, files; EWS: at least as many).
    assert total >= 5
    for k in range(1, total + 1):
        for world in worlds(demo, tmp_path, monkeypatch, f"{system}-{k}", backend):
            sandbox = getattr(world.stack, system)
            sandbox.faults.inject("*", "drop", nth=k, position="total", after=True, times=1)
            world.run(JOB, retries=1)
            assert sandbox.faults.rules()[0].fired == 1, f"call {k} of {total} never happened"
            assert_same(world, reference, f"{system} call {k} of {total}")


def test_worker_killed_during_task_upsert_then_sync_now(demo, reference, tmp_path, monkeypatch):
    """The worker process dies (SIGKILL) after Salesforce stored the Tasks but before it answered;
    the next run (Sync Now) completes the sync without a second copy.

    SQLite only: the Sync Now waits out the dead worker's job lease (60 s), too slow to pay
    twice; test_space.py kills workers at random moments on both backends."""
    for world in worlds(demo, tmp_path, monkeypatch, "killed"):
        sandbox = world.stack.salesforce
        rule = sandbox.faults.inject("composite.sobjects.upsert", "latency", nth=1, delay=120, after=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", f"email_sync__{JOB}"],
            cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while rule.fired == 0 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert rule.fired == 1, "the run never reached the Task upsert"
            time.sleep(0.5)  # the upsert has been applied; the worker waits for its answer
            os.killpg(process.pid, signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        stored = len(world.tasks())
        assert stored == len(reference["tasks"])  # Salesforce has them; our ledger only has claims
        sandbox.faults.clear()
        world.run(JOB)  # Sync Now
        assert_same(world, reference, "after SIGKILL")


def test_ten_percent_transient_faults_on_a_500_email_run(backend, demo, tmp_path, monkeypatch):
    """429/503/ErrorServerBusy on 10 % of all calls of both systems: every email still recorded."""
    for world in worlds(demo, tmp_path, monkeypatch, "flaky", backend):
        world.write_config({"alice": {"mode": "all", "mailbox": "alice@example.com",
                                      "salesforce_user": "alice@example.com"}})
        sf, ews = world.stack.salesforce, world.stack.ews
        contacts = sf.org.records("Contact")
        now = datetime.now(UTC)
        for i in range(370):  # the demo's 133 emails + 370 = 503
            contact = contacts[i % len(contacts)]
            ews.store.add_message("alice@example.com", "Inbox", subject=f"[bulk] update {i}", body=f"note {i}",
                                  to=[{"email": "alice@example.com"}], message_id=f"<bulk.{i}@demo.example.com>",
                                  received=(now - timedelta(minutes=3 + i)).isoformat(),
                                  **{"from": {"email": contact["Email"]}})
        # The first call of every operation fails once, then 10 % of all calls at random.
        sf.faults.inject("*", "http", status=503, nth=1, retry_after=0.01)
        sf.faults.inject("*", "http", status=429, rate=0.05, retry_after=0.01)
        sf.faults.inject("*", "http", status=503, rate=0.05, retry_after=0.01)
        ews.faults.inject("*", "throttle", nth=1, retry_after=0.01)
        ews.faults.inject("*", "throttle", rate=0.05, retry_after=0.01)
        ews.faults.inject("*", "http", status=503, rate=0.05, retry_after=0.01)
        world.run("alice", retries=2)
        for sandbox in (sf, ews):
            assert sandbox.faults.rules()[0].fired == len(sandbox.calls.snapshot())  # every operation hit
        sf.faults.clear()
        ews.faults.clear()
        run = world.store().latest_runs()[0]
        extracted = run["counts"]["extracted"]
        assert extracted >= 500
        expected_recorded = extracted - sum(run["counts"]["skipped"].values())
        assert run["counts"]["recorded"] == expected_recorded and run["counts"]["failed"] == 0
        assert len(world.tags()) and sum(world.tags().values()) == expected_recorded


def test_per_record_errors_are_reported_and_retried_by_the_next_run(backend, demo, reference, tmp_path, monkeypatch):
    for world in worlds(demo, tmp_path, monkeypatch, "records", backend):
        sandbox = world.stack.salesforce
        sandbox.fail_records("Task", field="Subject", contains="[html_body]",
                             status_code="FIELD_CUSTOM_VALIDATION_EXCEPTION", message="Blocked by a validation rule")
        world.run(JOB)
        run = world.store().latest_runs()[0]
        failed = [o for o in world.store().outcomes(JOB, run["run_id"]) if o.outcome == "failed"]
        assert failed and all(o.reason == "FIELD_CUSTOM_VALIDATION_EXCEPTION" for o in failed)
        assert all("validation rule" in o.detail for o in failed)
        assert not any(t["Subject"].startswith("[html_body]") for t in world.tasks())
        assert run["counts"]["recorded"] == reference["recorded"] - len(failed)

        sandbox.clear_record_faults()
        world.run(JOB)  # the failed emails are re-read by id and recorded
        assert_same(world, reference, "after per-record errors")


def test_expired_session_fails_fast_and_marks_nothing_done(backend, demo, tmp_path, monkeypatch):
    import json

    for world in worlds(demo, tmp_path, monkeypatch, "auth", backend):
        conn = json.loads(os.environ["AIRFLOW_CONN_SALESFORCE_DEFAULT"])
        conn["password"] = "00Dexpired!session"
        monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(conn))
        run = world.run(JOB, expect="failed", retries=2)
        (match,) = [ti for ti in run.get_task_instances() if ti.task_id == "match_recipients"]
        assert match.try_number == 1  # a permanent failure: Airflow does not retry it
        assert world.stack.salesforce.calls.total <= 2  # refused at once, not retried
        assert world.tasks() == []
        assert world.store().watermark(JOB) is None
        assert all("CRM" not in m.categories or m.subject.startswith("[designated_category]")
                   for m in world.messages(MAILBOX))


def test_api_budget_below_the_reserve_refuses_the_run(backend, demo, tmp_path, monkeypatch):
    for world in worlds(demo, tmp_path, monkeypatch, "budget", backend):
        sandbox = world.stack.salesforce
        sandbox.daily_api_max = 1000
        sandbox.reset_api_usage(used=500)  # 500 left, the policy keeps 1,000 in reserve
        world.run(JOB, expect="failed")
        assert world.tasks() == []
        assert not any(c.startswith(("composite.", "bulk")) for c in sandbox.calls.snapshot())  # no write


def test_sync_now_during_a_scheduled_run_writes_each_task_once(backend, demo, reference, tmp_path, monkeypatch):
    """Two runs of the same job interleaved step by step (what a second worker would do)."""
    from email_sync.pipeline import context, extract, filter as filter_step, finish, insert, match, upload
    from email_sync.rules.config import load_jobs
    from email_sync.crm.salesforce import SalesforceCrm
    from hooks.exchange import ExchangeHook
    from hooks.state import StateStoreHook

    for world in worlds(demo, tmp_path, monkeypatch, "overlap", backend):
        loaded = load_jobs(world.config_dir, only=JOB)
        (job,) = loaded.jobs
        store = StateStoreHook().get_store()
        mail = lambda: ExchangeHook().get_mail_source(MAILBOX)  # noqa: E731
        crm = lambda: SalesforceCrm(world.stack.salesforce.client())  # noqa: E731
        now = datetime.now(UTC)
        a = context.RunContext(JOB, job.settings, loaded.org, "scheduled__a", world.staging)
        b = context.RunContext(JOB, job.settings, loaded.org, "manual__b", world.staging)
        for ctx in (a, b):
            extract.extract(ctx, mail, store, None, now)
            filter_step.filter_mail(ctx, store)
            match.match(ctx, crm, store)
        for ctx in (a, b):
            counts = {"insert": insert.insert_tasks(ctx, crm, store)}
            counts["upload"] = upload.upload_attachments(ctx, mail, crm, store)
            finish.finish(ctx, mail, crm, store, counts)
        assert_same(world, reference, "interleaved runs")


def test_wrong_exchange_password_fails_fast(backend, demo, tmp_path, monkeypatch):
    import json

    for world in worlds(demo, tmp_path, monkeypatch, "ews-auth", backend):
        conn = json.loads(os.environ["AIRFLOW_CONN_EXCHANGE_DEFAULT"])
        conn["password"] = "wrong-password"
        monkeypatch.setenv("AIRFLOW_CONN_EXCHANGE_DEFAULT", json.dumps(conn))
        run = world.run(JOB, expect="failed", retries=2)
        (extract,) = [ti for ti in run.get_task_instances() if ti.task_id == "extract_folder_mail"]
        assert extract.try_number == 1  # not retried: credentials do not heal
        assert world.stack.ews.auth_failures == 1 and world.stack.ews.calls.total == 0  # no back-off loop
        assert world.stack.salesforce.calls.total == 0 and world.store().watermark(JOB) is None
