"""Step 2, filter: every rule that needs no Salesforce data; stage the candidates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from email_sync.pipeline.context import RunContext, item_key, ledger_by_message
from email_sync.pipeline.staging import encode_candidate, read_mail, write_jsonl
from email_sync.rules.attachments import select_attachments
from email_sync.rules.classify import Decision, SkipReason, classify, compile_rules, reply_lookup_since
from email_sync.rules.keys import message_key
from email_sync.rules.models import MailItem
from email_sync.rules.settings import OrgSettings
from email_sync.store.state_store import LedgerRow, Outcome, StateStore


def filter_mail(ctx: RunContext, store: StateStore) -> dict[str, Any]:
    """Apply every rule that needs no Salesforce data; stage the candidates.

    Replies: an inbound reply is recognised against emails this job recorded in the last
    ``reply_window_days`` (the ledger) *and* against emails of this same batch that are
    candidates themselves, so a thread that starts and is answered within one window works.
    An email is ``already_recorded`` only when it is complete: its Tasks exist with every
    relation and every selected file is confirmed. Files still missing → a files-only
    candidate (no lookup again); a Task or relation still owed → a full candidate, matched
    and completed by the next steps.
    """
    rules = compile_rules(ctx.settings, ctx.org)
    mail = ctx.path("mail.parquet")
    # The staged mail is streamed several times rather than held: memory stays at one row
    # group plus a small decision per email, whatever the run's size.
    referenced = {message_key(ref) for item in read_mail(mail) for ref in _referenced_ids(item)}
    # The reply window runs from the original to the reply, not from now: a backfill decides
    # as the original run would have.
    since = reply_lookup_since(read_mail(mail), rules)
    recorded = store.recorded_since(ctx.job_id, referenced, since) if since is not None else {}

    decisions: dict[str, Decision] = {}
    item_ids: dict[str, str] = {}
    for item in read_mail(mail):
        key = item_key(item)
        decisions[key] = classify(item, rules, recorded)
        item_ids[key] = item.item_id
    in_batch = {key: d.email_at for key, d in decisions.items() if d.record and d.email_at and key in referenced}
    again = {key for key, d in decisions.items() if d.reason is SkipReason.NOT_DESIGNATED} if in_batch else set()
    if again:
        recorded = {**recorded, **in_batch}
        for item in read_mail(mail):
            key = item_key(item)
            if key in again:
                decisions[key] = classify(item, rules, recorded)

    ledger = ledger_by_message(store, ctx.job_id, [k for k, d in decisions.items() if d.record])
    files = _uploaded_files(store, ctx.job_id, ledger)
    # Tasks and relations all confirmed: what remains owed, if anything, is files.
    related = {k for k, d in decisions.items()
               if d.record and ledger.get(k) and all(r.state == "created" and r.relations_ok for r in ledger[k])}
    pending_files = _pending_files(mail, decisions, related, files, ctx.org)
    candidates, outcomes = [], []
    reasons: Counter[str] = Counter()
    files_done: dict[str, bool] = {}
    for key, decision in decisions.items():
        if key in related:
            if not pending_files.get(key):
                if not all(r.files_ok for r in ledger[key]):
                    files_done[key] = True  # every selected file is confirmed after all
                decision = replace(decision, reason=SkipReason.ALREADY_RECORDED)
            else:
                part_one = next(r.task_id for r in ledger[key] if r.part == 1)
                candidates.append(encode_candidate(key, item_ids[key], decision, task_id=part_one))
                reasons["files_only"] += 1
                continue
        if decision.record:  # new, or a Task or relation still owed: matched and completed again
            candidates.append(encode_candidate(key, item_ids[key], decision))
        else:
            reasons[decision.reason.value] += 1
            outcomes.append(Outcome(key, "skipped", decision.reason.value, decision.detail))
    store.mark_files(ctx.job_id, files_done)
    write_jsonl(ctx.path("candidates.jsonl"), candidates)
    store.record_outcomes(ctx.job_id, ctx.run_id, outcomes)
    return {"candidates": len(candidates), "replies": sum(1 for c in candidates if c["is_reply"]),
            **{f"skipped_{r}": n for r, n in sorted(reasons.items()) if r != "files_only"},
            "files_only": reasons["files_only"]}


def _referenced_ids(item: MailItem) -> Iterator[str]:
    for ref in (item.in_reply_to, *item.references):
        if ref and ref.strip():
            yield ref


def _pending_files(mail: Path, decisions: dict[str, Decision], done: set[str], uploaded: dict[str, set[str]],
                   org: OrgSettings) -> dict[str, int]:
    """For emails whose Tasks and relations all exist: how many of their files are still to upload."""
    if not done:
        return {}
    pending: dict[str, int] = {}
    for item in read_mail(mail):
        key = item_key(item)
        if key in done:  # the last staged copy of a key wins, as in the decisions
            plan = select_attachments(item, decisions[key], org)
            pending[key] = sum(1 for a in plan.upload if a.key not in uploaded.get(key, set()))
    return pending


def _uploaded_files(store: StateStore, job_id: str, ledger: dict[str, list[LedgerRow]]) -> dict[str, set[str]]:
    recorded = [k for k, rows in ledger.items() if all(r.state == "created" and r.relations_ok for r in rows)]
    files: dict[str, set[str]] = {}
    for row in store.files(job_id, recorded) if recorded else []:
        if row.state == "uploaded":
            files.setdefault(row.message_key, set()).add(row.attachment_key)
    return files
