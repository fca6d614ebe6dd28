"""Ledger rows a run's staged Tasks should have but the state store lost, taken back from Salesforce.

Insert writes each staged Task's ledger row before the run goes on; a state store restored to
an earlier copy in the middle of a run (a lagging replica after a failover, a backup) loses
them, and the later steps would then skip the emails' files and categories while the run
moved the watermark past them. Salesforce is the source of truth: the Tasks that exist are
found by their external id and their rows written again (as existing Tasks: their files are
looked up before any upload, their relations re-checked by the next run); the ones that do
not stay claimed, so the next run completes them. On the happy path no row is missing and
nothing is asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from email_sync.crm.base import Crm
from email_sync.pipeline.context import RunContext, ledger_by_message
from email_sync.store.state_store import LedgerClaim, StateStore


def reclaim_lost_tasks(ctx: RunContext, crm: Callable[[], Crm], store: StateStore,
                       rows: Iterable[dict[str, Any]]) -> int:
    """Write back the ledger rows of staged Tasks the store does not know; how many Tasks it found."""
    rows = [r for r in rows if r["tasks"]]
    ledger = ledger_by_message(store, ctx.job_id, [r["message_key"] for r in rows])
    known = {l.idempotency_key for ls in ledger.values() for l in ls}
    lost = [(r, t) for r in rows for t in r["tasks"] if t["key"] not in known]
    if not lost:
        return 0
    found = crm().find_tasks([t["key"] for _, t in lost])
    store.claim(ctx.job_id, ctx.run_id, [
        LedgerClaim(t["key"], r["message_key"], r["item_id"], r["folder"], t["part"], t["parts"],
                    datetime.fromisoformat(r["email_at"]), relations_owed=bool(t["related"][1:]),
                    files_owed=bool(r["files"]), message_id=r.get("message_id"))
        for r, t in lost
    ])
    store.mark_created({key: (task_id, False) for key, task_id in found.items()}, ctx.run_id)
    return len(found)
