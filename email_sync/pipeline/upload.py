"""Step 5, upload: each recorded email's selected attachments as Salesforce Files on its Task."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from email_sync.crm.base import Crm, FileUpload
from email_sync.pipeline.context import (
    API_USAGE_CACHE,
    MAX_ATTEMPTS,
    RunContext,
    ints,
    job_lease,
    ledger_by_message,
    remember_usage,
)
from email_sync.pipeline.reclaim import reclaim_lost_tasks
from email_sync.pipeline.staging import without_fields
from email_sync.sources.base import MailSource
from email_sync.store.state_store import Outcome, StateStore

log = logging.getLogger(__name__)

UPLOAD_BATCH_BYTES = 25 * 1024 * 1024  # attachment bytes held in memory per upload batch
UPLOAD_BATCH_FILES = 200  # sObject Collections' limit per call


def upload_attachments(ctx: RunContext, source: Callable[[], MailSource], crm: Callable[[], Crm],
                       store: StateStore) -> dict[str, Any]:
    """Upload each recorded email's selected attachments, linked to its (first) Task.

    Under the job's lease. Files travel in batches of at most ``UPLOAD_BATCH_BYTES`` (one
    mail-source read and one Salesforce call per batch), so memory holds one batch, never a
    run's attachments. Salesforce is the source of truth for what exists: a file is sent
    without a look-up only when this run's upsert created its Task and nothing was sent for
    it before; any other file not confirmed in the state store (a claim left by a crash, a
    Task that already existed, a lost or restored state store) is first looked for on its
    Task (same name and size, one query per 200 Tasks). A file Salesforce refuses or the
    mailbox cannot serve costs that file alone: it is reported with its email and reason and
    tried again by later runs, up to ``MAX_ATTEMPTS``.
    """
    rows = [{"message_key": r["message_key"], "files": r["files"], "files_only": not r["tasks"]}  # not fields
            for r in without_fields(ctx.path("tasks.jsonl")) if r["files"]]
    if not rows:
        return {"files_uploaded": 0, "salesforce_calls": 0}
    with job_lease(ctx, store):
        reclaimed = reclaim_lost_tasks(ctx, crm, store, without_fields(ctx.path("tasks.jsonl")))
        return {**_upload(ctx, source, crm, store, rows), **({"tasks_reclaimed": reclaimed} if reclaimed else {})}


def _upload(ctx: RunContext, source: Callable[[], MailSource], crm: Callable[[], Crm], store: StateStore,
            rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [r["message_key"] for r in rows]
    ledger = ledger_by_message(store, ctx.job_id, keys)
    state = {(f.message_key, f.attachment_key): f for f in store.files(ctx.job_id, keys)}
    work = []  # (row, file, task_id, look it up first)
    owed: dict[str, set[str]] = {}  # message key → attachment keys not confirmed yet
    given_up = 0
    for row in rows:
        part_one = next((l for l in ledger.get(row["message_key"], ()) if l.part == 1 and l.state == "created"), None)
        if part_one is None:
            continue  # the Task failed: its files go up when a later run records it
        fresh = part_one.created_run_id == ctx.run_id
        for file in row["files"]:
            known = state.get((row["message_key"], file["key"]))
            if known is not None and known.state == "uploaded":
                continue
            owed.setdefault(row["message_key"], set()).add(file["key"])
            if known is not None and known.state == "failed" and known.attempts >= MAX_ATTEMPTS:
                given_up += 1  # reported as failed, never tried again
                continue
            work.append((row, file, part_one.task_id, known is not None or not fresh))
    done_rows = {r["message_key"] for r in rows if any(l.state == "created" for l in ledger.get(r["message_key"], ()))}
    if not work:
        store.mark_files(ctx.job_id, {k: k not in owed for k in done_rows})
        return {"files_uploaded": 0, "files_given_up": given_up,
                "files_existing": sum(len(r["files"]) for r in rows), "salesforce_calls": 0}

    client = crm()
    client.check_budget(1 + len(work) // UPLOAD_BATCH_FILES, ctx.org.api_reserve, store.cache_get(API_USAGE_CACHE))
    reconciled = _reconcile_files(client, [w for w in work if w[3]])
    store.record_files(ctx.job_id, [(r["message_key"], f["key"], t, reconciled[f["key"]])
                                    for r, f, t, _ in work if f["key"] in reconciled])
    todo = [(r, f, t) for r, f, t, _ in work if f["key"] not in reconciled]
    store.claim_files(ctx.job_id, [(r["message_key"], f["key"], t) for r, f, t in todo])
    confirmed = set(reconciled)
    failures: dict[str, tuple[str, str]] = {}  # message key → (reason code, what failed)
    counts: Counter[str] = Counter(files_reconciled=len(reconciled), files_given_up=given_up)
    mailbox = source()
    for batch in _upload_batches(todo, UPLOAD_BATCH_BYTES, UPLOAD_BATCH_FILES):
        counts.update(_upload_batch(ctx, mailbox, client, store, batch, confirmed, failures))
    store.mark_files(ctx.job_id, {k: not (owed.get(k, set()) - confirmed) for k in done_rows})
    completed = [r["message_key"] for r in rows if r["files_only"] and r["message_key"] in done_rows
                 and not (owed.get(r["message_key"], set()) - confirmed)]
    store.record_outcomes(ctx.job_id, ctx.run_id, [
        *(Outcome(k, "failed", code, detail) for k, (code, detail) in failures.items()),
        *(Outcome(k, "recorded", None, "files completed") for k in completed)])
    remember_usage(client, store)
    return {**ints(counts), "salesforce_calls": client.calls, "source_requests": dict(mailbox.requests)}


def _upload_batch(ctx: RunContext, mailbox: MailSource, client: Crm, store: StateStore,
                  batch: list[tuple[dict[str, Any], dict[str, Any], str]], confirmed: set[str],
                  failures: dict[str, tuple[str, str]]) -> Counter[str]:
    """One mail-source read and one Salesforce call for a batch of files; their counts.

    Confirmed attachment keys are added to ``confirmed``, each failed file's email to
    ``failures``. A function of its own so the batch's contents are freed when it returns:
    held by a loop variable, they would stay alive while the next batch is read.
    """
    contents = mailbox.attachment_contents([f["attachment_id"] for _, f, _ in batch])
    uploads, unserved = [], []
    for (row, file, task_id), content in zip(batch, contents, strict=True):
        if isinstance(content, Exception):  # moved, deleted, corrupt: this file alone fails
            unserved.append((row["message_key"], file["key"], f"attachment_unavailable:{type(content).__name__}"))
            continue
        uploads.append((row, FileUpload(file["key"], task_id, file["name"], content, file["content_type"])))
    del contents
    results = client.upload_files([u for _, u in uploads]) if uploads else []
    store.record_files(ctx.job_id, [(row["message_key"], u.key, u.task_id, res.id)
                                    for (row, u), res in zip(uploads, results, strict=True) if res.ok])
    confirmed.update(u.key for (_, u), res in zip(uploads, results, strict=True) if res.ok)
    refused = [(row["message_key"], u.key, res.error_code or "UNKNOWN")
               for (row, u), res in zip(uploads, results, strict=True) if not res.ok]
    store.fail_files(ctx.job_id, [*unserved, *refused])
    for message_key, _, code in [*unserved, *refused]:
        failures.setdefault(message_key, (code, "a file of this email was not uploaded"))
        log.warning("job %s: a file was not uploaded: %s", ctx.job_id, code)
    return Counter(files_uploaded=sum(1 for r in results if r.ok), files_failed=len(unserved) + len(refused))


def _upload_batches(todo: list[Any], max_bytes: int, max_files: int) -> Iterator[list[Any]]:
    """Group files so one mail-source read and one Salesforce call carry many, within a memory bound."""
    batch: list[Any] = []
    size = 0
    for entry in todo:
        file_size = entry[1]["size"]
        if batch and (size + file_size > max_bytes or len(batch) == max_files):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += file_size
    if batch:
        yield batch


def _reconcile_files(client: Crm, claimed: list[tuple[dict[str, Any], dict[str, Any], str, bool]]) -> dict[str, str]:
    """attachment key → ContentVersion id for the files Salesforce already has on their Tasks."""
    if not claimed:
        return {}
    found = client.find_files(sorted({t for _, _, t, _ in claimed}))
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in found:
        by_task.setdefault(row["FirstPublishLocationId"], []).append(row)
    result = {}
    for _, file, task_id, _ in claimed:
        for version in by_task.get(task_id, []):
            if version.get("PathOnClient") == file["name"] and int(version.get("ContentSize") or -1) == file["size"]:
                by_task[task_id].remove(version)  # one version per attachment of the same name and size
                result[file["key"]] = version["Id"]
                break
    return result


