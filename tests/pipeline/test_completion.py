"""Exactly once for every object (issue 13): each defect found from outside, as a regression test.

An email is done only when its Task(s), every relation, every selected file and the CRM
category are confirmed; any run resumes what an earlier one left. The fakes are in-memory
(tests/pipeline/fakes.py), the state store is the real SQLite one.
"""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from email_sync.errors import SetupProblem, TransientError
from email_sync.pipeline import context
from email_sync.pipeline.upload import upload_attachments
from email_sync.rules.keys import message_key
from email_sync.store.state_store import StateStore
from tests.pipeline.test_steps import (
    CAROL,
    INTERVAL,
    JOB,
    NOW,
    RUN1,
    RUN2,
    attachment,
    content,
    job_settings,
    key_of,
    outbound,
)

SYNC_NOW = "manual__2026-03-04T12:30:00+00:00"
LATER = NOW + timedelta(minutes=30)
EARLY = ("extract", "filter", "match")


def shared(**overrides: Any):
    return job_settings(shared_activities=True, record_all_attachments=True, **overrides)


def two_contacts_with_a_file(n: int = 2):
    """An email Alice sent to Bob (the WhoId) and Carol (a TaskRelation), with one file."""
    return outbound(n, "bob@client.com", "carol@client.com", attachments=(attachment(f"att-{n}", 10),))


def objects(world) -> tuple[int, list[tuple[str, str]], list[tuple[str, str]]]:
    """Tasks, relations (task, contact) and files (task, name) now in the org."""
    return (len(world.org.tasks), sorted(world.org.relations),
            sorted((f["FirstPublishLocationId"], f["PathOnClient"]) for f in world.org.files))


# -- 1. relations lost after an interrupted insert -----------------------------------------------
@pytest.mark.parametrize("applied", [False, True], ids=["refused-connection", "answer-lost"])
def test_relations_interrupted_by_a_crash_are_completed_by_the_next_run(make_world, applied):
    """Defect: the Task was marked done before its relations were sent; later runs skipped the
    email as already_recorded and the relation was missing for good."""
    world = make_world(settings=shared(), folders={"Sent Items": [two_contacts_with_a_file()]},
                       attachments={"att-2": content(10)})
    world.org.fail_next("ensure_task_relations", ConnectionError("dropped"), applied=applied)
    world.run(RUN1, INTERVAL, NOW, EARLY)
    with pytest.raises(ConnectionError):
        world.run(RUN1, INTERVAL, NOW, ("insert",))
    (row,) = world.store.ledger(JOB, [message_key("<m2@example.com>")])
    assert row.state == "created" and not row.relations_ok  # the Task exists, its relation is owed

    world.run(SYNC_NOW, None, LATER)  # the run failed; Sync Now picks it up

    task = world.org.tasks[key_of("<m2@example.com>")]["Id"]
    assert objects(world) == (1, [(task, CAROL)], [(task, "att-2.pdf")])
    (row,) = world.store.ledger(JOB, [message_key("<m2@example.com>")])
    assert row.complete and row.category_marked


# -- 2. per-record refusals of relations and files -----------------------------------------------
def test_a_refused_relation_is_reported_counted_and_retried(make_world):
    world = make_world(settings=shared(), folders={"Sent Items": [two_contacts_with_a_file()]},
                       attachments={"att-2": content(10)})
    world.org.refuse_relation(CAROL, "INSUFFICIENT_ACCESS_OR_READONLY", "no access to the Contact")

    first = world.run(RUN1, INTERVAL, NOW)["finish"]

    outcome = world.outcomes(RUN1)[message_key("<m2@example.com>")]
    assert (outcome.outcome, outcome.reason) == ("failed", "INSUFFICIENT_ACCESS_OR_READONLY")
    assert first["failed"] == 1 and first["recorded"] == 0
    assert first["refused"] == {"tasks": 0, "relations": 1, "files": 0}
    assert first["incomplete"]["relations"] == 1

    world.org.refused_relations.clear()
    second = world.run(SYNC_NOW, None, LATER)["finish"]  # outside the window now: re-read by id

    task = world.org.tasks[key_of("<m2@example.com>")]["Id"]
    assert objects(world) == (1, [(task, CAROL)], [(task, "att-2.pdf")])
    assert second["failed"] == 0 and second["incomplete"] == {"tasks": 0, "relations": 0, "files": 0,
                                                              "categories": 0}


def test_a_refused_file_is_reported_counted_and_retried(make_world):
    world = make_world(settings=shared(), folders={"Sent Items": [two_contacts_with_a_file()]},
                       attachments={"att-2": content(10)})
    from email_sync.rules.keys import attachment_key

    world.org.refuse_file(attachment_key("<m2@example.com>", "att-2.pdf", 10), "STORAGE_LIMIT_EXCEEDED", "full")

    first = world.run(RUN1, INTERVAL, NOW)["finish"]

    outcome = world.outcomes(RUN1)[message_key("<m2@example.com>")]
    assert (outcome.outcome, outcome.reason) == ("failed", "STORAGE_LIMIT_EXCEEDED")
    assert first["failed"] == 1 and first["refused"]["files"] == 1 and first["incomplete"]["files"] == 1

    world.org.refused_files.clear()
    second = world.run(SYNC_NOW, None, LATER)["finish"]

    task = world.org.tasks[key_of("<m2@example.com>")]["Id"]
    assert objects(world) == (1, [(task, CAROL)], [(task, "att-2.pdf")])
    assert second["incomplete"]["files"] == 0 and second["attachments_uploaded"] == 1


# -- 3. two runs of one job at once --------------------------------------------------------------
def test_concurrent_uploads_of_one_job_send_each_file_once(make_world, monkeypatch):
    """Defect: a second run treated the first run's live claims as crash leftovers and uploaded
    every file again. Now the second waits for the job's lease and finds them confirmed."""
    world = make_world(settings=shared(), folders={"Sent Items": [two_contacts_with_a_file()]},
                       attachments={"att-2": content(10)})
    for run in (RUN1, RUN2):
        world.run(run, INTERVAL, NOW, (*EARLY, "insert"))

    reading, release = threading.Event(), threading.Event()
    contents = type(world.mailbox.connect()).attachment_contents

    def slow_contents(self, ids):  # the first upload holds its batch until told to go on
        if not reading.is_set():
            reading.set()
            assert release.wait(10)
        return contents(self, ids)

    monkeypatch.setattr(type(world.mailbox.connect()), "attachment_contents", slow_contents)
    results: dict[str, Any] = {}

    def upload(run: str) -> None:
        results[run] = upload_attachments(world.ctx(run), world.sources, world.crms, world.store)

    first = threading.Thread(target=upload, args=(RUN1,))
    first.start()
    assert reading.wait(10)
    second = threading.Thread(target=upload, args=(RUN2,))
    second.start()
    time.sleep(1.5)  # the second run is waiting for the lease, not uploading
    assert len(world.org.files) == 0 and RUN2 not in results
    release.set()
    first.join(10)
    second.join(10)

    task = world.org.tasks[key_of("<m2@example.com>")]["Id"]
    assert objects(world)[2] == [(task, "att-2.pdf")]
    assert results[RUN1]["files_uploaded"] == 1 and results[RUN2]["files_uploaded"] == 0


def test_a_lease_held_by_a_live_run_makes_the_other_wait_then_retry(make_world, monkeypatch):
    world = make_world()
    world.store.create_schema()
    assert world.store.take_lease(JOB, RUN1, timedelta(minutes=1)) is None
    with pytest.raises(TransientError, match="still writing"):
        with context.job_lease(world.ctx(RUN2), world.store, wait=timedelta(seconds=0.2), poll_seconds=0.05):
            pass
    with context.job_lease(world.ctx(RUN1), world.store):  # the holder's own retry takes over at once
        pass
    assert world.store.take_lease(JOB, RUN2, timedelta(minutes=1)) is None  # released


def test_a_dead_holders_lease_expires(make_world, monkeypatch):
    world = make_world()
    world.store.create_schema()
    world.store.take_lease(JOB, RUN1, timedelta(seconds=-1))  # a holder that stopped beating
    with context.job_lease(world.ctx(RUN2), world.store, wait=timedelta(seconds=1), poll_seconds=0.05):
        assert world.store.take_lease(JOB, RUN1, timedelta(minutes=1)) == RUN2


# -- 4. a lost or restored state store -----------------------------------------------------------
@pytest.mark.parametrize("loss", ["deleted", "restored-before-upload"])
def test_a_lost_state_store_duplicates_nothing(make_world, tmp_path, loss):
    """Defect: without a sync_file row every file was uploaded again, although the upsert said
    the Task already existed. Salesforce is the source of truth; the store only saves calls."""
    world = make_world(settings=shared(), folders={"Sent Items": [two_contacts_with_a_file()]},
                       attachments={"att-2": content(10)})
    db = world.store.engine.url.database
    world.run(RUN1, INTERVAL, NOW, (*EARLY, "insert"))
    world.store.engine.dispose()
    backup = tmp_path / "backup.db"
    shutil.copy(db, backup)
    world.run(RUN1, INTERVAL, NOW, ("upload", "finish"))
    reference = objects(world)
    world.store.engine.dispose()
    if loss == "deleted":
        world.store = StateStore.from_url(f"sqlite:///{tmp_path / 'new.db'}")
    else:
        shutil.copy(backup, db)

    again = world.run(RUN2, INTERVAL, NOW + timedelta(hours=2))["finish"]  # e.g. a backfill of the day

    assert objects(world) == reference
    assert again["attachments_uploaded"] == 0 and again["relations_created"] == 0
    assert again["incomplete"] == {"tasks": 0, "relations": 0, "files": 0, "categories": 0}


def test_the_happy_path_never_looks_files_up(make_world):
    world = make_world(settings=shared(), folders={"Sent Items": [two_contacts_with_a_file()]},
                       attachments={"att-2": content(10)})
    world.run(RUN1, INTERVAL, NOW)
    assert world.org.calls_to("find_files") == []


# -- 7. smaller ----------------------------------------------------------------------------------
def test_a_watermark_in_the_future_is_clamped_and_said(make_world):
    """Defect: a watermark from a worker whose clock ran ahead silently emptied every later window."""
    world = make_world(folders={"Sent Items": [outbound(2, "bob@client.com")]})
    world.store.create_schema()
    world.store.advance_watermark(JOB, NOW + timedelta(days=2), "skewed")

    summary = world.run(SYNC_NOW, None, NOW)["finish"]

    assert summary["watermark_clamped"] is True and summary["recorded"] == 0
    assert world.store.watermark(JOB) == NOW  # back to the truth, so the next run reads from here
    later = world.run("manual__later", None, NOW + timedelta(hours=1))["finish"]
    assert later["watermark_clamped"] is False


def test_a_corrupt_state_database_is_a_permanent_error_naming_it(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    store = StateStore.from_url(f"sqlite:///{path}")
    with pytest.raises(SetupProblem, match=r"state store .*state\.db is damaged.*restore it from a backup"):
        store.create_schema()
