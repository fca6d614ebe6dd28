"""Step 4, insert: upsert the Tasks by their idempotency key, then their TaskRelations."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from email_sync.crm.base import Crm
from email_sync.pipeline.context import API_USAGE_CACHE, RunContext, job_lease, ledger_by_message, remember_usage
from email_sync.pipeline.staging import read_jsonl, without_fields
from email_sync.store.state_store import LedgerClaim, Outcome, StateStore

log = logging.getLogger(__name__)


def insert_tasks(ctx: RunContext, crm: Callable[[], Crm], store: StateStore) -> dict[str, Any]:
    """Upsert the Tasks by their idempotency key, then confirm every TaskRelation.

    Under the job's lease. Every Task is claimed in the ledger before it is sent;
    Salesforce's external-id upsert makes a re-send (after a crash between Salesforce's
    answer and our ledger write) update the same Task instead of creating a second one. A
    Task counts as done only with all its relations: one created earlier whose relations
    were never confirmed (a crash, a refusal) has them checked and completed here. A Task
    this upsert created has none yet; any other (it existed already: an earlier attempt, a
    lost state store) is checked against Salesforce first. Refusals are stored per email
    with Salesforce's code and message; the rest goes on, and later runs retry the email.
    """
    rows = [r for r in without_fields(ctx.path("tasks.jsonl")) if r["tasks"]]
    if not rows:
        return {"tasks_created": 0, "tasks_existing": 0, "salesforce_calls": 0}
    with job_lease(ctx, store):
        return _insert(ctx, crm, store, rows)


def _insert(ctx: RunContext, crm: Callable[[], Crm], store: StateStore, rows: list[dict[str, Any]]) -> dict[str, Any]:
    ledger = {l.idempotency_key: l for ls in ledger_by_message(store, ctx.job_id, [r["message_key"] for r in rows]).values()
              for l in ls}
    done = {k: l.task_id for k, l in ledger.items() if l.state == "created"}
    pending = [(r, t) for r in rows for t in r["tasks"] if t["key"] not in done]
    # Tasks that exist but whose relations were never confirmed: checked, then completed.
    unrelated = {t["key"]: t["related"][1:] for r in rows for t in r["tasks"]
                 if t["key"] in done and not ledger[t["key"]].relations_ok}
    if not pending and not unrelated:
        _record_results(ctx, store, rows, {k: done[k] for k in done}, {}, {})
        return {"tasks_created": 0, "tasks_existing": len(done), "salesforce_calls": 0}

    client = crm()
    batches = -(-len(pending) // 200)
    client.check_budget(batches * 2 if len(pending) <= ctx.org.bulk_threshold else 8, ctx.org.api_reserve,
                        store.cache_get(API_USAGE_CACHE))
    store.claim(ctx.job_id, ctx.run_id, [
        LedgerClaim(t["key"], r["message_key"], r["item_id"], r["folder"], t["part"], t["parts"],
                    datetime.fromisoformat(r["email_at"]), relations_owed=bool(t["related"][1:]),
                    files_owed=bool(r["files"]), message_id=r.get("message_id"))
        for r, t in pending
    ])
    results = client.upsert_tasks(_staged_task_fields(ctx.path("tasks.jsonl"), done)) if pending else []
    created = {res.key: (res.id, res.created) for res in results if res.ok}
    failed = {res.key: (res.error_code or "UNKNOWN", res.error_message or "") for res in results if not res.ok}
    store.mark_created(created, ctx.run_id)
    store.mark_failed(failed)

    fresh: dict[str, list[str]] = {}  # Task id → Contacts to relate; created just now: none exist yet
    existing: dict[str, list[str]] = {done[k]: related for k, related in unrelated.items() if related}
    key_of = {done[k]: k for k in unrelated}
    for (_, task), res in zip(pending, results, strict=True):
        related = task["related"][1:]  # the WhoId is the first relation already
        if res.ok and related:
            (fresh if res.created else existing)[res.id] = related
            key_of[res.id] = task["key"]
    relation_results = []
    if fresh:
        relation_results += client.ensure_task_relations(fresh, check_existing=False)
    if existing:
        relation_results += client.ensure_task_relations(existing, check_existing=True)
    refused: dict[str, tuple[str, str]] = {}
    for res in relation_results:
        if not res.ok:
            refused.setdefault(key_of[res.key.split(":", 1)[0]], (res.error_code or "UNKNOWN", res.error_message or ""))
    store.mark_relations({**{key_of[t]: refused.get(key_of[t]) for t in (*fresh, *existing)},
                          **{k: None for k in unrelated if not unrelated[k]}})

    _record_results(ctx, store, rows, {**done, **{k: v[0] for k, v in created.items()}}, failed, refused)
    remember_usage(client, store)
    counts = {
        "tasks_created": sum(1 for r in results if r.ok and r.created),
        "tasks_updated": sum(1 for r in results if r.ok and not r.created),
        "tasks_existing": len(done),
        "tasks_failed": len(failed),
        "relations_created": sum(1 for r in relation_results if r.ok and r.created),
        "relations_existing": sum(1 for r in relation_results if r.ok and not r.created),
        "relations_failed": sum(1 for r in relation_results if not r.ok),
        "salesforce_calls": client.calls,
    }
    log.info("job %s: %s", ctx.job_id, counts)
    return counts


def _staged_task_fields(path: Path, done: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, Salesforce fields) of the staged Tasks not yet created, in file order.

    Read from ``tasks.jsonl`` as the Salesforce client consumes it, so the fields
    (descriptions up to 32 KB each) are held by the client alone while it sends them, not
    also by the insert step for the whole insert.
    """
    skip = set(done)
    for row in read_jsonl(path):
        for task in row["tasks"]:
            if task["key"] not in skip:
                yield task["key"], task["fields"]


def _record_results(ctx: RunContext, store: StateStore, rows: list[dict[str, Any]], created: dict[str, str],
                    failed: dict[str, tuple[str, str]], refused: dict[str, tuple[str, str]]) -> None:
    """Each email's outcome so far: recorded when its Tasks exist with their relations."""
    outcomes = []
    for row in rows:
        keys = [t["key"] for t in row["tasks"]]
        errors = [failed.get(k) or refused.get(k) for k in keys if k in failed or k in refused]
        if errors:
            code, message = errors[0]
            outcomes.append(Outcome(row["message_key"], "failed", code, message))
        elif all(k in created for k in keys):
            outcomes.append(Outcome(row["message_key"], "recorded", None, f"{len(keys)} task(s)"))
    store.record_outcomes(ctx.job_id, ctx.run_id, outcomes)
