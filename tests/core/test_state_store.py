"""The state store on SQLite and PostgreSQL: watermarks, ledger, files, outcomes, cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from email_sync.rules.keys import message_key
from email_sync.store.state_store import LedgerClaim, Outcome, StateStore
from tests.state_backends import state_url

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    gen = state_url(request.param, tmp_path)
    url = next(gen)
    store = StateStore.from_url(url)
    store.create_schema()
    store.create_schema()  # idempotent
    yield store
    store.engine.dispose()
    gen.close()


def claim(key: str, msg: str, part: int = 1, parts: int = 1, at: datetime = T0) -> LedgerClaim:
    return LedgerClaim(key, message_key(msg), f"item-{msg}", "Inbox", part, parts, at)


def test_watermark_only_moves_forward(store):
    assert store.watermark("alice") is None
    store.advance_watermark("alice", T0, "run1")
    store.advance_watermark("alice", T0 - timedelta(days=3), "backfill")
    assert store.watermark("alice") == T0
    store.advance_watermark("alice", T0 + timedelta(hours=1), "run2")
    assert store.watermark("alice") == T0 + timedelta(hours=1)
    assert store.watermark("bob") is None


def test_ledger_claim_create_fail_and_retry(store):
    store.claim("alice", "r1", [claim("k1", "<a@x>"), claim("k2", "<b@x>"), claim("k3", "<c@x>")])
    store.mark_created({"k1": ("00T000000000001AAA", True)}, "r1")
    store.mark_failed({"k2": ("STRING_TOO_LONG", "Subject: data value too large")})
    rows = {r.idempotency_key: r for r in store.ledger("alice", [message_key("<a@x>"), message_key("<b@x>"), message_key("<c@x>")])}
    assert rows["k1"].state == "created" and rows["k1"].task_id == "00T000000000001AAA"
    assert rows["k2"].state == "failed" and rows["k3"].state == "claimed"
    # failed and unconfirmed emails are retried, a bounded number of runs
    assert {item for _, item, _ in store.retryable("alice", max_attempts=3)} == {"item-<b@x>", "item-<c@x>"}
    for run in ("r2", "r3"):  # each later run that re-reads the email counts one attempt
        store.count_attempt("alice", [message_key("<b@x>")])
        store.claim("alice", run, [claim("k2", "<b@x>")])
    assert {item for _, item, _ in store.retryable("alice", max_attempts=3)} == {"item-<c@x>"}
    # a created Task is never demoted by a late claim or failure
    store.claim("alice", "r4", [claim("k1", "<a@x>")])
    store.mark_failed({"k1": ("X", "late")})
    (row,) = [r for r in store.ledger("alice", [message_key("<a@x>")])]
    assert row.state == "created"


def test_reply_lookup_and_category_marks(store):
    store.claim("alice", "r1", [claim("k1", "<a@x>", at=T0 - timedelta(days=12)), claim("k2", "<b@x>", at=T0 - timedelta(days=2))])
    store.mark_created({"k1": ("00T1", True), "k2": ("00T2", True)}, "r1")
    found = store.recorded_since("alice", [message_key("<a@x>"), message_key("<B@X>")], T0 - timedelta(days=10))
    assert found == {message_key("<b@x>"): T0 - timedelta(days=2)}
    assert sorted(u[:2] for u in store.unmarked("alice")) == sorted([(message_key("<a@x>"), "item-<a@x>"),
                                                                     (message_key("<b@x>"), "item-<b@x>")])
    store.mark_category("alice", [message_key("<a@x>")])
    assert [u[:2] for u in store.unmarked("alice")] == [(message_key("<b@x>"), "item-<b@x>")]


def test_ledger_lookups_chunk_large_key_sets(store):
    claims = [claim(f"k{i}", f"<m{i}@x>") for i in range(1200)]
    store.claim("alice", "r1", claims)
    assert len(store.ledger("alice", [c.message_key for c in claims])) == 1200


def test_files_outcomes_runs_cache(store):
    mk = message_key("<a@x>")
    store.claim_files("alice", [(mk, "att1", "00T1")])
    (f,) = store.files("alice", [mk])
    assert (f.state, f.content_version_id, f.linked_task_id) == ("claimed", None, "00T1")
    store.record_files("alice", [(mk, "att1", "00T1", "068A")])
    store.claim_files("alice", [(mk, "att1", "00T1")])  # a second claim never resets an upload
    (f,) = store.files("alice", [mk])
    assert (f.state, f.content_version_id, f.linked_task_id) == ("uploaded", "068A", "00T1")

    store.record_outcomes("alice", "r1", [Outcome(mk, "skipped", "internal_only"), Outcome("m2", "recorded")])
    store.record_outcomes("alice", "r1", [Outcome(mk, "recorded")])  # a retry overwrites, no duplicate
    assert {o.message_key: o.outcome for o in store.outcomes("alice", "r1")} == {mk: "recorded", "m2": "recorded"}

    store.start_run("alice", "r1", T0, T0 + timedelta(hours=1))
    store.finish_run("alice", "r1", "success", {"extracted": 3})
    assert store.run("alice", "r1")["counts"] == {"extracted": 3}
    assert [r["run_id"] for r in store.latest_runs()] == ["r1"]

    store.cache_put("describe:Task", {"Subject": 255}, timedelta(hours=1))
    assert store.cache_get("describe:Task") == {"Subject": 255}
    store.cache_put("old", 1, timedelta(seconds=-1))
    assert store.cache_get("old") is None


def test_message_key_ignores_brackets_and_case():
    assert message_key("<ABC@Example.com>") == message_key("abc@example.com")
    assert len(message_key("x")) == 32


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request, tmp_path):
    """A state database URL with no tables yet."""
    gen = state_url(request.param, tmp_path)
    yield next(gen)
    gen.close()


def _together(work, count: int) -> list[BaseException]:
    """Run ``work(i)`` in ``count`` threads released at the same moment; the errors they raised."""
    import threading

    start, errors = threading.Barrier(count), []

    def run(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_first_runs_racing_to_create_the_schema_all_succeed(empty_url):
    """Defect: two first runs racing on CREATE TABLE IF NOT EXISTS failed one of them (PostgreSQL
    catalogue race). The schema is now created under a lock."""
    stores = [StateStore.from_url(empty_url) for _ in range(4)]
    errors = _together(lambda i: stores[i].create_schema(), 4)
    assert errors == []
    assert stores[0].watermark("alice") is None
    for s in stores:
        s.engine.dispose()


def test_two_runs_finishing_together_do_not_deadlock(store):
    """Defect: two runs updating the same ledger rows in their own (set) order deadlocked on
    PostgreSQL. Rows are now written in one order everywhere."""
    claims = [claim(f"k{i:04d}", f"<m{i}@x>") for i in range(400)]
    store.claim("alice", "r1", claims)
    other = StateStore.from_url(store.engine.url.render_as_string(hide_password=False))
    orders = [list(reversed(claims)), claims]

    def finish(i: int) -> None:
        for _ in range(3):
            (store, other)[i].mark_created({c.idempotency_key: (f"00T{i}", False) for c in orders[i]}, f"r{i}")

    errors = _together(finish, 2)
    other.engine.dispose()
    assert errors == []
    assert {r.state for r in store.ledger("alice", [c.message_key for c in claims])} == {"created"}
