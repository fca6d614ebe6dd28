"""Step 6, finish: the CRM category back to the mailbox, the run summary, cursors and watermark."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from email_sync.crm.base import Crm
from email_sync.errors import SetupProblem
from email_sync.pipeline.context import MAX_ATTEMPTS, RunContext, job_lease, prune_staging
from email_sync.pipeline.reclaim import reclaim_lost_tasks
from email_sync.pipeline.staging import read_json, read_jsonl, read_mail, without_fields
from email_sync.rules.schedule import MAX_REACH_DAYS
from email_sync.sources.base import CategoryTarget, MailSource
from email_sync.store.state_store import Outcome, StateStore


def finish(ctx: RunContext, source: Callable[[], MailSource], crm: Callable[[], Crm], store: StateStore,
           step_counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Write the CRM category back, close the run, save the cursors, advance the watermark.

    Items recorded by earlier runs whose category write failed are retried here too. The
    folder cursors staged by extract are saved only here, when the run ends well, together
    with the watermark: a failed run leaves both where they were. The summary says what
    Salesforce refused this run and what the job still owes (``incomplete``, by kind, within
    the 30-day reach): later runs complete those before new mail.
    """
    with job_lease(ctx, store):
        # Staged Tasks the store lost since insert (restored to an earlier copy) are taken back
        # from Salesforce first, so their categories are written and nothing is left unowed.
        if ctx.path("tasks.jsonl").exists():
            reclaim_lost_tasks(ctx, crm, store, without_fields(ctx.path("tasks.jsonl")))
        return _finish(ctx, source, store, step_counts)


def _finish(ctx: RunContext, source: Callable[[], MailSource], store: StateStore,
            step_counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    window = read_json(ctx.path("window.json"))
    marked, requests = _write_categories(ctx, source, store)

    outcomes = store.outcomes(ctx.job_id, ctx.run_id)
    summary: dict[str, Any] = {
        "window_start": window["start"], "window_end": window["end"],
        "extracted": step_counts.get("extract", {}).get("extracted", 0) + step_counts.get("extract", {}).get("retried", 0),
        "recorded": sum(1 for o in outcomes if o.outcome == "recorded"),
        "failed": sum(1 for o in outcomes if o.outcome == "failed"),
        "skipped": dict(sorted(Counter(o.reason for o in outcomes if o.outcome == "skipped").items())),
        "tasks_created": step_counts.get("insert", {}).get("tasks_created", 0),
        "parts_split": step_counts.get("match", {}).get("split_emails", 0),
        "relations_created": step_counts.get("insert", {}).get("relations_created", 0),
        "attachments_uploaded": step_counts.get("upload", {}).get("files_uploaded", 0),
        "attachments_too_large": step_counts.get("match", {}).get("attachments_attachment_too_large", 0),
        "attachments_skipped": {k.removeprefix("attachments_"): n for k, n in sorted(step_counts.get("match", {}).items())
                                if k.startswith("attachments_") and n},
        "categories_written": marked["written"],
        "categories_given_up": marked["given_up"],
        "salesforce_calls": sum(c.get("salesforce_calls", 0) for c in step_counts.values()),
        "refused": {"tasks": step_counts.get("insert", {}).get("tasks_failed", 0),
                    "relations": step_counts.get("insert", {}).get("relations_failed", 0),
                    "files": step_counts.get("upload", {}).get("files_failed", 0)
                    + step_counts.get("upload", {}).get("files_given_up", 0)},
        "incomplete": store.incomplete(ctx.job_id, datetime.fromisoformat(window["end"]) - timedelta(days=MAX_REACH_DAYS)),
    }
    by_operation: Counter[str] = Counter(requests)
    for counts in step_counts.values():  # each step reports the requests of its own source
        by_operation.update(counts.get("source_requests") or {})
    summary["watermark_clamped"] = bool(window.get("watermark_clamped"))
    summary["source"] = ctx.settings.source.value
    summary["source_requests"] = sum(by_operation.values())
    summary["source_requests_by_operation"] = dict(sorted(by_operation.items()))
    summary["missing_folders"] = window.get("missing_folders", [])
    store.finish_run(ctx.job_id, ctx.run_id, "failed" if summary["missing_folders"] else "success", summary)
    store.save_cursors(ctx.job_id, ctx.settings.source.value, window.get("cursors", {}), ctx.run_id)
    through = datetime.fromisoformat(window["end"])
    if summary["watermark_clamped"]:
        store.set_watermark(ctx.job_id, through, ctx.run_id)
    else:
        store.advance_watermark(ctx.job_id, through, ctx.run_id)
    ctx.discard_staging()
    prune_staging(ctx.staging_root / ctx.job_id)
    if summary["missing_folders"]:
        raise SetupProblem(f"job {ctx.job_id!r}: field 'folders': {', '.join(map(repr, summary['missing_folders']))} "
                           "not found in the mailbox; the job's other folders were synced. Fix the folder path "
                           "(Inbox/Clients style, as the mailbox shows it).")
    return summary


def _write_categories(ctx: RunContext, source: Callable[[], MailSource],
                      store: StateStore) -> tuple[dict[str, int], dict[str, int]]:
    """The CRM category on every copy of every recorded email still owed it; counts and requests.

    Copies are the email's item and the other copies extract saw in the synced folders (sent
    to oneself: Sent Items and Inbox). An item whose id no longer finds it (moved) is looked
    for by its Message-ID in the job's folders and its new id kept; one not found or refused
    in ``MAX_ATTEMPTS`` runs is given up and reported (``category_not_written``).
    """
    owed = store.unmarked(ctx.job_id)
    if not owed:
        return {"written": 0, "given_up": 0}, {}
    wanted = {u.item_id for u in owed}
    staged = {item.item_id: CategoryTarget(item.item_id, item.change_key, item.categories)  # not whole emails
              for item in read_mail(ctx.path("mail.parquet")) if item.item_id in wanted}
    copies: dict[str, list[CategoryTarget]] = {}
    for row in read_jsonl(ctx.path("copies.jsonl")):
        copies.setdefault(row["message_key"], []).append(
            CategoryTarget(row["item_id"], row["change_key"], tuple(row["categories"])))
    # An id finds its item wherever it is, so staged targets (whose categories may be stale:
    # the write re-reads them) or bare ids do; the folder would only label it.
    targets = {u.message_key: [staged.get(u.item_id) or CategoryTarget(u.item_id, None, ()),
                               *copies.get(u.message_key, [])] for u in owed}
    mailbox = source()
    done = set(mailbox.add_category([t for ts in targets.values() for t in ts], ctx.org.crm_category))
    lost = [u for u in owed if u.item_id not in done and u.message_id]
    if lost:  # moved since it was recorded: find it again by Message-ID in the job's folders
        folders = mailbox.resolve_folders(ctx.settings.folders, ctx.org.sent_folders)
        found = mailbox.find_by_message_id(folders, [u.message_id for u in lost])
        moved = {u.message_key: found[u.message_id] for u in lost if found.get(u.message_id)}
        for key, again in moved.items():
            targets[key] = [t for t in targets[key] if t.item_id in done] + again
        done |= set(mailbox.add_category([t for ts in moved.values() for t in ts], ctx.org.crm_category))
        store.relocate(ctx.job_id, {key: again[0].item_id for key, again in moved.items()
                                    if again[0].item_id in done})
    complete = [u.message_key for u in owed if all(t.item_id in done for t in targets[u.message_key])]
    missed = [u for u in owed if u.message_key not in set(complete)]
    given_up = [u.message_key for u in missed if u.attempts + 1 >= MAX_ATTEMPTS]
    store.mark_category(ctx.job_id, complete)
    store.category_missed(ctx.job_id, [u.message_key for u in missed])
    store.mark_category(ctx.job_id, given_up, given_up=True)
    store.record_outcomes(ctx.job_id, ctx.run_id, [
        Outcome(k, "failed", "category_not_written",
                f"the CRM category could not be written in {MAX_ATTEMPTS} runs (item not found or refused)")
        for k in given_up])
    return {"written": len(complete), "given_up": len(given_up)}, dict(mailbox.requests)


def format_summary(job_id: str, summary: dict[str, Any]) -> str:
    """The run summary as log lines (counts only, never mail content)."""
    lines = [f"email sync {job_id} ({summary.get('source', 'ews')}): window ({summary['window_start']}, "
             f"{summary['window_end']}]"]
    for name in ("extracted", "recorded", "failed", "tasks_created", "parts_split", "relations_created",
                 "attachments_uploaded", "attachments_too_large", "categories_written", "salesforce_calls",
                 "source_requests"):
        lines.append(f"  {name:<22}{summary.get(name, 0):>8}")
    for reason, n in summary.get("skipped", {}).items():
        lines.append(f"  skipped {reason:<14}{n:>8}")
    for reason, n in summary.get("attachments_skipped", {}).items():
        lines.append(f"  attachment {reason:<19}{n:>8}")
    for heading in ("refused", "incomplete"):
        for kind, n in summary.get(heading, {}).items():
            if n:
                lines.append(f"  {heading} {kind:<{21 - len(heading)}}{n:>8}")
    return "\n".join(lines)
