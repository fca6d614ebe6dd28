"""The fault space of the per-email completion model, on both state stores (SQLite, PostgreSQL).

Each scenario drives carol's representative sync (shared activities, every attachment, the
CRM category) through one kind of trouble and ends with ONE check,
:func:`tests.faults.invariants.assert_invariant`: the org and the mailbox equal the
undisturbed reference run (every Task by key exactly once, every relation, every file
exactly once, every category) and the last run's summary is true (``incomplete`` as counted
from the org and the mailbox, ``refused``, ``failed``, what it created).

(a) an answer lost at call k of either server while a second run of the same job is in
    flight: the two runs' steps interleaved in-process (every k), and two runs in two threads
    at once (sampled k); a step that raises is retried once, as Airflow would;
(b) Salesforce refusing ~10 % of the records of one kind (Task, TaskRelation, ContentVersion);
(c) the state store deleted, or restored from a copy taken at an earlier step boundary;
(d) an attachment the mailbox lists but cannot serve (each uploaded attachment in turn);
(e) the worker SIGKILLed at random moments (seeded) of a real ``airflow dags test`` run.

Every scenario runs on both backends; (c) and (d) sweep all their cases on SQLite and a
subset on PostgreSQL (same product code, another copy mechanism). About 4 minutes on 2
cores, plus up to a minute per SIGKILL that lands while the worker holds the job's lease.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT
from tests.faults.invariants import (
    JOB,
    KINDS,
    MAILBOX,
    NO_REFUSALS,
    assert_invariant,
    assert_same,
    assert_summary_true,
    last_summary,
    org_counts,
    snapshot,
)
from tests.sync_world import STEPS, StepRun, SyncWorld, world_of

pytestmark = pytest.mark.timeout(900)
SYSTEMS = ("salesforce", "ews")


def open_world(demo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, backend: str) -> Any:
    path = tmp_path / name
    path.mkdir()
    return world_of(demo, path, monkeypatch, backend)


def on_backends(cases: dict[str, tuple[Any, ...]], postgres: Any) -> list[Any]:
    """``(backend, *case)`` params: every case on SQLite, the cases ``postgres(case)`` keeps on PostgreSQL."""
    return [*(pytest.param("sqlite", *c, id=f"sqlite-{name}") for name, c in cases.items()),
            *(pytest.param("postgres", *c, id=f"postgres-{name}", marks=pytest.mark.postgres)
              for name, c in cases.items() if postgres(c))]


def sync_now(world: SyncWorld, reference: dict[str, Any], label: str, **expected: Any) -> None:
    """A final Sync Now (a real DAG run), then the invariant on it."""
    before = org_counts(world)
    world.run(JOB)
    assert_invariant(world, reference, label, before, **expected)


# -- (a) an answer lost while a second run of the job is in flight -------------------------------

# How the two runs' steps interleave: "steps" alternates step by step (A1 B1 A2 B2 ...);
# "blocks" is a Sync Now started while a scheduled run is between match and insert.
ORDERS = {
    "steps": [(run, step) for step in range(len(STEPS)) for run in (0, 1)],
    "blocks": [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (0, 3), (0, 4), (0, 5), (1, 3), (1, 4), (1, 5)],
}


def two_runs(world: SyncWorld, names: tuple[str, str]) -> list[StepRun]:
    """A scheduled run (its data interval: the day up to now) and a Sync Now (none) of the job."""
    now = datetime.now(UTC)
    return [world.steps(JOB, f"scheduled__{names[0]}", interval=(now - timedelta(days=1), now)),
            world.steps(JOB, f"manual__{names[1]}")]


def interleaved(world: SyncWorld, order: str) -> list[StepRun]:
    runs = two_runs(world, ("a", "b"))
    for run, step in ORDERS[order]:
        assert runs[run].position == step or runs[run].stopped
        runs[run].advance()  # retried once if it raises; a run whose step fails twice stops
    return runs


def test_answer_lost_at_every_call_during_two_interleaved_runs(backend, demo, reference, tmp_path, monkeypatch):
    """For every call k (either server) of two interleaved runs: applied, answer lost; Sync Now after.

    Every k of both servers on each backend; which interleaving call k meets alternates with
    k, the other way round on the other backend, so the two backends together cover every
    (interleaving, server, k). Each interleaving is first run undisturbed (and checked): its
    call counts bound the sweep.
    """
    totals: dict[str, dict[str, int]] = {}
    for order in ORDERS:
        with open_world(demo, tmp_path, monkeypatch, f"control-{order}", backend) as world:
            runs = interleaved(world, order)
            assert all(r.finished for r in runs), [r.errors for r in runs]
            totals[order] = {s: getattr(world.stack, s).calls.total for s in SYSTEMS}
            sync_now(world, reference, f"{order}: undisturbed")
    assert all(t["salesforce"] >= 5 and t["ews"] >= 10 for t in totals.values()), totals
    names = sorted(ORDERS)
    offset = 0 if backend == "sqlite" else 1
    for system in SYSTEMS:
        for k in range(1, max(t[system] for t in totals.values()) + 1):
            order = names[(k + offset) % 2]
            if k > totals[order][system]:
                order = names[(k + offset + 1) % 2]
            label = f"{order}, {system} call {k} of {totals[order][system]}"
            with open_world(demo, tmp_path, monkeypatch, f"{system}-{k}", backend) as world:
                sandbox = getattr(world.stack, system)
                rule = sandbox.faults.inject("*", "drop", nth=k, position="total", after=True, times=1)
                interleaved(world, order)
                assert rule.fired == 1, f"{label}: the call never happened"
                sync_now(world, reference, label)


def overlapping(world: SyncWorld) -> list[StepRun]:
    """Two runs of the job at the same time, each in its own thread (two workers)."""
    runs = two_runs(world, ("t1", "t2"))
    threads = [threading.Thread(target=r.run, name=r.ctx.run_id) for r in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a run hangs"
    return runs


def test_answer_lost_during_two_runs_in_two_threads(backend, demo, reference, tmp_path, monkeypatch):
    """Two runs of the job at the same time: the lease serialises their writes.

    Undisturbed (which also counts the calls), then with an answer lost at sampled calls k
    of each server (which run makes call k depends on the threads' timing; k stays below
    the undisturbed count, which varies by a call or two with the timing); then a Sync Now
    completes what a failed run left.
    """
    with open_world(demo, tmp_path, monkeypatch, "threads-control", backend) as world:
        runs = overlapping(world)
        assert all(r.finished for r in runs), [r.errors for r in runs]
        totals = {s: getattr(world.stack, s).calls.total for s in SYSTEMS}
        sync_now(world, reference, "threads, undisturbed")
    rng = random.Random(7)
    for system in SYSTEMS:
        for k in sorted(rng.sample(range(1, totals[system] - 1), 2)):
            label = f"threads, {system} call {k} of about {totals[system]}"
            with open_world(demo, tmp_path, monkeypatch, f"threads-{system}-{k}", backend) as world:
                rule = getattr(world.stack, system).faults.inject("*", "drop", nth=k, position="total", after=True,
                                                                  times=1)
                overlapping(world)
                assert rule.fired == 1, f"{label}: the call never happened"
                sync_now(world, reference, label)


# -- (b) per-record refusals of each kind -----------------------------------------------------------

OBJECTS = {"tasks": "Task", "relations": "TaskRelation", "files": "ContentVersion"}


@pytest.mark.parametrize("kind", KINDS)
def test_salesforce_refuses_a_tenth_of_the_records_of_one_kind(kind, backend, demo, reference, tmp_path,
                                                               monkeypatch):
    """Every tenth record of one kind refused (a validation rule); reported, then completed by Sync Now."""
    from email_sync.rules.keys import message_key
    from sandbox.salesforce.org import normalize_id

    identities = reference["identities"][kind]
    chosen = set(identities[::10])  # ~10 %, at least one
    email_of = {k: m for m, keys in reference["emails"].items() for k in keys}
    with open_world(demo, tmp_path, monkeypatch, f"refuse-{kind}", backend) as world:
        org = world.stack.salesforce.org

        def key_of(task_id: Any) -> str | None:
            found = org.get(str(task_id or ""))
            return found[1].get("Email_Sync_Key__c") if found else None

        def refused(record: dict[str, Any]) -> bool:
            if kind == "tasks":
                return record.get("Email_Sync_Key__c") in chosen
            if kind == "relations":
                rel = normalize_id(str(record.get("RelationId") or ""))
                return any(key_of(record.get("TaskId")) == k and normalize_id(r) == rel for k, r in chosen)
            return (key_of(record.get("FirstPublishLocationId")), record.get("PathOnClient")) in chosen

        rule = world.stack.salesforce.fail_records(OBJECTS[kind], when=refused,
                                                   status_code="FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                                   message="Blocked by a validation rule")
        before = org_counts(world)
        world.run(JOB)
        first = last_summary(world)
        affected = {email_of[i if kind == "tasks" else i[0]] for i in chosen}
        assert rule.fired == len(chosen), f"{kind}: refused {rule.fired} records, meant {len(chosen)}"
        assert first["failed"] == len(affected) > 0
        assert first["refused"] == {**NO_REFUSALS, kind: len(chosen)}
        assert first["incomplete"][kind] > 0
        assert first["recorded"] + first["failed"] == reference["recorded"]
        outcomes = {o.message_key: o for o in world.store().outcomes(JOB, last_run_id(world))}
        assert {outcomes[message_key(m)].outcome for m in affected} == {"failed"}
        state = snapshot(world)  # nothing twice, nothing the reference lacks
        assert state["duplicate_keys"] == []
        for part in ("tasks", "relations", "files"):
            want = dict(reference[part]) if part != "tasks" else None
            for entry in state[part]:
                if want is None:
                    assert entry in reference["tasks"], f"{kind}: unexpected Task {entry}"
                else:
                    assert set(entry[1]) <= set(want[entry[0]]) and len(set(entry[1])) == len(entry[1]), \
                        f"{kind}: {part} of {entry[0]}: {entry[1]}"
        assert_summary_true(world, reference, f"refused {kind}: first run", first, before,
                            refused={**NO_REFUSALS, kind: len(chosen)}, failed=len(affected))

        world.stack.salesforce.clear_record_faults()
        before = org_counts(world)
        world.run(JOB)  # Sync Now: the failed emails are re-read by id and completed
        assert_invariant(world, reference, f"refused {kind}: after Sync Now", before, recorded=len(affected))


def last_run_id(world: SyncWorld) -> str:
    return next(r["run_id"] for r in world.store().latest_runs() if r["job_id"] == JOB)


# -- (c) the state store deleted, or restored from an earlier step boundary -----------------------

# (i, j): the run stopped after step i (1..6), the state store replaced by its copy from the
# boundary after step j (0 = before extract: no store yet, i.e. the store deleted), j < i.
BOUNDARIES = ["start", *STEPS]
# SQLite: every pair. PostgreSQL (same product code, another copy mechanism): the store
# deleted after every step, and put back one boundary, to keep the suite's time in bounds.
RESTORES = [(i, j) for i in range(1, len(STEPS) + 1) for j in range(i)]


@pytest.mark.parametrize("backend,i,j", on_backends(
    {f"after-{BOUNDARIES[i]}-back-to-{BOUNDARIES[j]}": (i, j) for i, j in RESTORES}, lambda c: c[1] in (0, c[0] - 1)))
def test_state_store_lost_or_restored_from_an_earlier_boundary(backend, i, j, demo, reference, tmp_path,
                                                               monkeypatch):
    """Run the steps up to i, put back the state store as it was at boundary j, run the rest, Sync Now.

    SQLite: the database file copied aside and back (removed for "deleted"). PostgreSQL: the
    database copied with ``CREATE DATABASE … TEMPLATE`` and restored the same way (dropped
    and created empty for "deleted").
    """
    label = f"state store after {BOUNDARIES[i]} put back to its copy from {BOUNDARIES[j]}"
    with open_world(demo, tmp_path, monkeypatch, "restore", backend) as world:
        run = world.steps(JOB, "scheduled__c")
        copy = None  # boundary 0, before extract: no store yet, so putting it back = deleting it
        for step in range(i):
            assert run.advance(), f"{label}: step {STEPS[step]} failed: {run.errors}"
            if step + 1 == j:
                copy = world.copy_state()
        world.restore_state(copy)  # None: the file removed (SQLite) / the database dropped, created empty
        run.run()  # the rest of the run on the restored store; a step that fails twice ends it
        sync_now(world, reference, label)


# -- (d) an attachment the mailbox cannot serve ----------------------------------------------------

@pytest.mark.parametrize("backend,n", on_backends({str(n): (n,) for n in range(7)}, lambda c: c[0] in (0, 2)))
def test_attachment_the_mailbox_cannot_serve(backend, n, demo, reference, tmp_path, monkeypatch):
    """The n-th uploaded attachment is listed but not served: it alone fails; restored, it goes up once.

    Each of the demo's seven uploaded attachments on SQLite; a text file and a PDF on PostgreSQL.
    """
    from email_sync.rules.keys import message_key

    files = reference["identities"]["files"]
    assert len(files) == 7, "the demo's attachments changed: adjust the parametrisation"
    key, name = files[n]
    message_id = next(m for m, keys in reference["emails"].items() if key in keys)
    with open_world(demo, tmp_path, monkeypatch, f"unservable-{n}", backend) as world:
        store = world.stack.ews.store
        message = store.find_message(MAILBOX, message_id)
        (attachment,) = [a for a in message.attachments if a.name == name]
        with store.lock:  # GetItem still lists it; GetAttachment answers ErrorInvalidAttachmentId
            del store.attachments[attachment.attachment_id]
        before = org_counts(world)
        run = world.run(JOB)  # green
        assert run.state == "success"
        first = last_summary(world)
        outcome = next(o for o in world.store().outcomes(JOB, last_run_id(world))
                       if o.message_key == message_key(message_id))
        assert outcome.outcome == "failed" and (outcome.reason or "").startswith("attachment_unavailable"), outcome
        assert world.store().watermark(JOB) == datetime.fromisoformat(first["window_end"])  # the run moved on
        without = {**reference, "files": [(k, tuple(f for f in fs if (k, f[0]) != (key, name)))
                                          for k, fs in reference["files"]]}
        assert_same(world, without, f"attachment {name} not served")  # everything else is there
        assert_summary_true(world, reference, f"attachment {name} not served", first, before,
                            refused={**NO_REFUSALS, "files": 1}, failed=1)

        with store.lock:
            store.attachments[attachment.attachment_id] = (message, attachment)
        sync_now(world, reference, f"attachment {name} served again")


# -- (e) the worker SIGKILLed at random moments -----------------------------------------------------

KILLS = 3


def dags_test() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "airflow", "dags", "test", f"email_sync__{JOB}"],
        cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def left_behind(world: SyncWorld) -> str:
    """What the killed worker left in the state store: ledger and file states, the lease (for labels)."""
    import sqlalchemy as sa

    try:
        with world.store().engine.connect() as conn:
            ledger = dict(conn.execute(sa.text("SELECT state, COUNT(*) FROM sync_ledger GROUP BY state")).all())
            files = dict(conn.execute(sa.text("SELECT state, COUNT(*) FROM sync_file GROUP BY state")).all())
            lease = conn.execute(sa.text("SELECT holder FROM sync_lease")).scalar()
    except sa.exc.SQLAlchemyError:
        return "no state store yet"
    finally:
        world.close_store()
    return f"ledger {ledger}, files {files}, lease {'held' if lease else 'free'}"


def first_call(world: SyncWorld, process: subprocess.Popen[bytes], timeout: float = 120) -> float:
    """Wait until the run makes its first external call (Airflow has started, extract runs); the time."""
    deadline = time.monotonic() + timeout
    while world.stack.ews.calls.total == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert world.stack.ews.calls.total > 0, "the run never called the mailbox"
    return time.monotonic()


def test_worker_killed_at_random_moments_then_sync_now(backend, demo, reference, tmp_path, monkeypatch):
    """``airflow dags test`` SIGKILLed (whole process group) at a uniformly random moment of its run.

    The run's duration — from its first external call (before it, Airflow is only starting
    up) to the process's end — is measured once on an undisturbed subprocess run (itself
    checked). Then KILLS worlds, each killed ``Random(7).uniform(0, duration)`` after its
    first call, then Sync Now until a run succeeds (at most 3). A worker killed while it held
    the job's lease (insert, upload, finish) frees it only when the lease expires (60 s), and
    the Sync Now waits that out: so all worlds are killed first, one after the other, and
    then synced, and their leases expire meanwhile rather than one after the other.
    """
    rng = random.Random(7)
    with open_world(demo, tmp_path, monkeypatch, "subprocess", backend) as world:
        before = org_counts(world)
        process = dags_test()
        started = first_call(world, process)
        assert process.wait(timeout=300) == 0
        duration = time.monotonic() - started
        assert_invariant(world, reference, "undisturbed subprocess run", before)
    with contextlib.ExitStack() as stack:
        killed = []
        for n in range(KILLS):
            moment = rng.uniform(0, duration)
            label = f"SIGKILL {n + 1} at {moment:.2f} s of {duration:.2f} s"
            world = stack.enter_context(open_world(demo, tmp_path, monkeypatch, f"kill-{n}", backend))
            environment = {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW_CONN_", "EMAIL_SYNC_"))}
            process = dags_test()
            try:
                first_call(world, process)
                try:
                    process.wait(timeout=moment)
                    label += " (the run had ended)"
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
            killed.append((world, environment, f"{label} ({left_behind(world)})"))
        for world, environment, label in killed:
            print(label)
            for name, value in environment.items():  # this world's Connections for the in-process Sync Now
                monkeypatch.setenv(name, value)
            for _attempt in range(3):
                before = org_counts(world)
                if world.run(JOB, expect=None).state == "success":
                    break
            else:
                pytest.fail(f"{label}: no Sync Now succeeded")
            assert_invariant(world, reference, label, before)
