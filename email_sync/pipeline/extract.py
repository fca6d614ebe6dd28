"""Step 1, extract: stage the run's mail from the job's folders as ``mail.parquet``."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from email_sync.errors import SetupProblem
from email_sync.pipeline.context import MAX_ATTEMPTS, RunContext, ints, item_key
from email_sync.pipeline.staging import write_json, write_jsonl, write_mail
from email_sync.rules.classify import SkipReason
from email_sync.rules.keys import message_key
from email_sync.rules.models import MailItem, Unreadable
from email_sync.rules.schedule import run_window
from email_sync.rules.settings import Mode
from email_sync.sources.base import Folder, MailSource, ReadResult
from email_sync.store.state_store import Outcome, StateStore

log = logging.getLogger(__name__)

# Each run also reads this much before its window: Exchange stamps DateTimeReceived to the
# second and an item can become visible in its folder a moment after that stamp, so mail on
# a window's edge could otherwise fall between two runs. Mail already recorded is skipped
# (already_recorded); the overlap costs a few items per run, never a second Task.
EXTRACT_OVERLAP = timedelta(minutes=5)


def extract(ctx: RunContext, source: Callable[[], MailSource], store: StateStore,
            interval: tuple[datetime, datetime] | None, now: datetime) -> dict[str, Any]:
    """Stage the window's mail (and earlier emails still owed a Task) as ``mail.parquet``.

    The window comes from the run's data interval and the job's watermark
    (:func:`email_sync.rules.schedule.run_window`). A run that moves the job forward reads
    each folder from its cursor and stages the new cursors in ``window.json`` for the last
    step to save; a backfill (a window the watermark already passed) reads its interval
    alone and moves no cursor. Unreadable items become ``malformed`` outcomes; the same
    message seen twice (Inbox and Sent Items) is staged once, its other copies listed in
    ``copies.jsonl`` so the last step marks every copy. A configured folder that does
    not exist does not stop the others: they are synced, and the last step fails the run
    naming the missing folder.
    """
    store.create_schema()
    watermark = store.watermark(ctx.job_id)
    clamped = watermark is not None and watermark > now
    if clamped:  # written by a worker whose clock ran ahead: every later window would be empty
        log.warning("job %s: watermark %s is in the future; syncing from now", ctx.job_id, watermark)
        watermark = now
    start, end = run_window(interval, watermark, now, ctx.settings.lookback_days)
    store.start_run(ctx.job_id, ctx.run_id, start, end)
    window = {"start": start.isoformat(), "end": end.isoformat(), "cursors": {}, "watermark_clamped": clamped}
    if ctx.settings.mode is Mode.OFF:
        log.info("job %s is off: nothing to extract", ctx.job_id)
        write_json(ctx.path("window.json"), window)
        write_mail(ctx.path("mail.parquet"), [])
        write_jsonl(ctx.path("copies.jsonl"), [])
        return {"window_start": window["start"], "window_end": window["end"], "extracted": 0,
                "watermark_clamped": clamped}

    mailbox = source()
    kind = mailbox.kind
    incremental = watermark is None or end > watermark
    cursors = store.cursors(ctx.job_id, kind) if incremental else {}
    folders, missing = _resolve(mailbox, ctx)
    by_path = {f.path: f for f in folders}
    retryable = [(key, item_id, folder) for key, item_id, folder in store.retryable(ctx.job_id, MAX_ATTEMPTS)
                 if folder in by_path]  # a folder no longer configured is no longer synced
    retry_refs = [(item_id, by_path[folder]) for _, item_id, folder in retryable]
    store.count_attempt(ctx.job_id, [key for key, _, _ in retryable])
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    unreadable: list[Outcome] = []
    new_cursors: dict[str, str] = {}
    copies: list[dict[str, Any]] = []

    def read(folder: Folder) -> Iterator[ReadResult]:
        reading = mailbox.read_folder(folder, start - EXTRACT_OVERLAP, end, cursors.get(folder.path))
        yield from reading
        if incremental and reading.cursor is not None:
            new_cursors[folder.path] = reading.cursor

    def staged() -> Iterator[MailItem]:
        for origin, results in [*(("extracted", read(f)) for f in folders), ("retried", mailbox.fetch(retry_refs))]:
            for result in results:
                if isinstance(result, Unreadable):
                    counts["unreadable"] += 1
                    unreadable.append(Outcome(_unreadable_key(result), "skipped", SkipReason.MALFORMED.value,
                                              result.reason))
                    continue
                key = item_key(result)
                if key in seen:  # another copy (sent to oneself): staged once, marked too
                    counts["duplicates"] += 1
                    copies.append({"message_key": key, "item_id": result.item_id, "change_key": result.change_key,
                                   "categories": list(result.categories)})
                    continue
                seen.add(key)
                counts[origin] += 1
                yield result

    write_mail(ctx.path("mail.parquet"), staged())
    write_jsonl(ctx.path("copies.jsonl"), copies)
    window["cursors"] = new_cursors
    window["missing_folders"] = missing
    write_json(ctx.path("window.json"), window)
    store.record_outcomes(ctx.job_id, ctx.run_id, unreadable)
    log.info("job %s: window (%s, %s]: %d emails, %d retried, %d unreadable", ctx.job_id, start, end,
             counts["extracted"], counts["retried"], counts["unreadable"])
    return {"window_start": window["start"], "window_end": window["end"], **ints(counts),
            "watermark_clamped": clamped, "source": kind, "source_requests": dict(mailbox.requests)}


def _resolve(mailbox: MailSource, ctx: RunContext) -> tuple[list[Folder], list[str]]:
    """The job's folders that exist, and the paths that do not (the run syncs the others first)."""
    try:
        return mailbox.resolve_folders(ctx.settings.folders, ctx.org.sent_folders), []
    except SetupProblem:
        pass  # one or more are missing: find out which, folder by folder
    folders, missing = [], []
    for path in ctx.settings.folders:
        try:
            folders.extend(mailbox.resolve_folders([path], ctx.org.sent_folders))
        except SetupProblem:
            log.error("job %s: folder %r not found in the mailbox", ctx.job_id, path)
            missing.append(path)
    return folders, missing


def _unreadable_key(result: Unreadable) -> str:
    return message_key(result.item_id) if result.item_id else f"unreadable:{id(result)}"
