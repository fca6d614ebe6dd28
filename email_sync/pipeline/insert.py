"""Step 4, insert: upsert the Tasks by their idempotency key, then their TaskRelations."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from email_sync.crm.base import Crm
from email_sync.pipeline.context import API_USAGE_CACHE, RunContext, ledger_by_message, remember_usage
from email_sync.pipeline.staging import read_jsonl
from email_sync.store.state_store import LedgerClaim, Outcome, StateStore

log = logging.getLogger(__name__)


def insert_tasks(ctx: RunContext, crm: Callable[[], Crm], store: StateStore) -> dict[str, Any]:
    """Upsert the Tasks by their idempotency key, then their TaskRelations.

    Every Task is claimed in the ledger before it is sent; Salesforce's external-id upsert
    makes a re-send (after a crash between Salesforce's answer and our ledger write)
    update the same Task instead of creating a second one. Per-record errors are stored per
    email with Salesforce's message; the rest of the batch goes on.
    """
    rows = [r for r in _without_fields(ctx.path("tasks.jsonl")) if r["tasks"]]
    ledger = ledger_by_message(store, ctx.job_id, [r["message_key"] for r in rows])
    done = {l.idempotency_key: l.task_id for ls in ledger.values() for l in ls if l.state == "created"}
    pending = [(r, t) for r in rows for t in r["tasks"] if t["key"] not in done]
    if not pending:
        _record_results(ctx, store, rows, done, {})
        return {"tasks_created": 0, "tasks_existing": len(done), "salesforce_calls": 0}

    client = crm()
    batches = -(-len(pending) // 200)
    client.check_budget(batches * 2 if len(pending) <= ctx.org.bulk_threshold else 8, ctx.org.api_reserve,
                        store.cache_get(API_USAGE_CACHE))
    store.claim(ctx.job_id, ctx.run_id, [
        LedgerClaim(t["key"], r["message_key"], r["item_id"], r["folder"], t["part"], t["parts"],
                    datetime.fromisoformat(r["email_at"]))
        for r, t in pending
    ])
    results = client.upsert_tasks(_staged_task_fields(ctx.path("tasks.jsonl"), done))
    created = {res.key: res.id for res in results if res.ok}
    failed = {res.key: (res.error_code or "UNKNOWN", res.error_message or "") for res in results if not res.ok}
    store.mark_created(created)
    store.mark_failed(failed)

    # A Task created just now has no relations yet; one that already existed (an earlier
    # attempt got through) may have some, so only those are checked before inserting.
    fresh, existing = {}, {}
    for (_, task), res in zip(pending, results, strict=True):
        related = task["related"][1:]  # the WhoId is the first relation already
        if res.ok and related:
            (fresh if res.created else existing)[res.id] = related
    relation_results = []
    if fresh:
        relation_results += client.ensure_task_relations(fresh, check_existing=False)
    if existing:
        relation_results += client.ensure_task_relations(existing, check_existing=True)

    _record_results(ctx, store, rows, {**done, **created}, failed)
    remember_usage(client, store)
    counts = {
        "tasks_created": sum(1 for r in results if r.ok and r.created),
        "tasks_updated": sum(1 for r in results if r.ok and not r.created),
        "tasks_existing": len(done),
        "tasks_failed": len(failed),
        "relations_created": sum(1 for r in relation_results if r.ok),
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


def _without_fields(path: Path) -> Iterator[dict[str, Any]]:
    """Staged Task rows without the Tasks' Salesforce fields: what bookkeeping needs."""
    for row in read_jsonl(path):
        row["tasks"] = [{k: v for k, v in task.items() if k != "fields"} for task in row["tasks"]]
        yield row


def _record_results(ctx: RunContext, store: StateStore, rows: list[dict[str, Any]],
                    created: dict[str, str], failed: dict[str, tuple[str, str]]) -> None:
    outcomes = []
    for row in rows:
        keys = [t["key"] for t in row["tasks"]]
        errors = [failed[k] for k in keys if k in failed]
        if all(k in created for k in keys):
            outcomes.append(Outcome(row["message_key"], "recorded", None, f"{len(keys)} task(s)"))
        elif errors:
            code, message = errors[0]
            outcomes.append(Outcome(row["message_key"], "failed", code, message))
    store.record_outcomes(ctx.job_id, ctx.run_id, outcomes)
