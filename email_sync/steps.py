"""The sync of one job run as five steps over staged files: what each Airflow task executes.

Each step reads the previous step's staged file, does its I/O through the objects it is
given (a mail source, a Salesforce client, the state store) and writes its own staged file;
it returns counts only, which is all that goes into XCom. Every step can be re-run on its
own (an Airflow retry) without duplicating anything: the ledger and Salesforce's external
id make Task writes idempotent, file uploads are claimed before they are sent.

    extract → filter → match → insert → upload → finish

``filter`` runs before ``match`` (the product brief lists matching first) because every
rule that needs no Salesforce data — mode, designation, exclusions, internal-only — drops
emails before their addresses go into SOQL: fewer lookups, fewer API calls.

No Airflow import here; ``plugins/operators`` are thin shells that build the I/O objects
from Connections and call these functions. See docs/PIPELINE.md.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from email_sync.attachments import select_attachments
from email_sync.batch import read_json, read_jsonl, read_mail, write_json, write_jsonl, write_mail
from email_sync.classify import Decision, SkipReason, classify, compile_rules, finalize
from email_sync.crm.salesforce import FileUpload
from email_sync.keys import IDEMPOTENCY_FIELD, email_identity, message_key
from email_sync.matching import (
    RecordIndex,
    email_fields_for,
    lookup_addresses,
    match_decision,
    objects_to_match,
    records_from_rows,
)
from email_sync.models import Direction, MailItem
from email_sync.schedule import run_window
from email_sync.settings import JobSettings, Mode, OrgSettings, is_salesforce_user_id
from email_sync.soql import build_match_queries
from email_sync.state_store import LedgerClaim, Outcome, StateStore
from email_sync.tasks import build_tasks, field_limits_from_describe
from email_sync.text import FieldLimit

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # an email whose Task Salesforce keeps refusing is retried by this many runs
METADATA_TTL = timedelta(hours=24)  # describe and owner ids are cached this long
STAGING_RETENTION = timedelta(days=7)  # staged files of failed runs are pruned after this
UPLOAD_BATCH_BYTES = 25 * 1024 * 1024  # attachment bytes held in memory per upload batch
UPLOAD_BATCH_FILES = 200  # sObject Collections' limit per call
# The daily API usage the last Salesforce answer reported (Sforce-Limit-Info), shared by the
# steps of a run so the budget check costs no extra call; minutes old at most.
API_USAGE_CACHE = "salesforce:api_usage"
API_USAGE_TTL = timedelta(minutes=15)


class MailSource(Protocol):
    """What the steps need from a mailbox (``email_sync.sources.ews.EwsMailSource``)."""

    def extract(self, folders: Iterable[str], start: datetime, end: datetime) -> Iterator[Any]: ...
    def fetch(self, refs: Iterable[tuple[str, str]]) -> Iterator[Any]: ...
    def attachment_contents(self, attachment_ids: Any) -> list[bytes | Exception]: ...
    def add_category(self, items: Iterable[tuple[str, str | None, tuple[str, ...]]], category: str) -> list[str]: ...
    @property
    def requests(self) -> int: ...


class Crm(Protocol):
    """What the steps need from Salesforce (``email_sync.crm.salesforce.SalesforceCrm``)."""

    calls: int

    def query_each(self, statements: Sequence[str]) -> list[list[dict[str, Any]]]: ...
    def describe_fields(self, sobject: str) -> list[dict[str, Any]]: ...
    def user_id(self, user: str) -> str: ...
    def check_budget(self, needed_calls: int, reserve: int, known: Any = None) -> None: ...
    def api_usage(self) -> tuple[int, int] | None: ...
    def upsert_tasks(self, records: Any) -> list[Any]: ...
    def ensure_task_relations(self, pairs: Any, *, check_existing: bool) -> list[Any]: ...
    def find_files(self, task_ids: Any) -> list[dict[str, Any]]: ...
    def upload_files(self, files: Any) -> list[Any]: ...


class ConfigurationProblem(RuntimeError):
    """The org is not set up for the sync (e.g. the external-id field is missing): fail fast."""


@dataclass(frozen=True, slots=True)
class RunContext:
    """Who and where: one job's run and its staging directory."""

    job_id: str
    settings: JobSettings
    org: OrgSettings
    run_id: str
    staging_root: Path

    @property
    def staging(self) -> Path:
        return self.staging_root / self.job_id / safe_name(self.run_id)

    def path(self, name: str) -> Path:
        return self.staging / name


def safe_name(run_id: str) -> str:
    """A run id as a directory name (Airflow run ids contain ``:`` and ``+``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


# --- 1. extract ------------------------------------------------------------------------
# Each run also reads this much before its window: Exchange stamps DateTimeReceived to the
# second and an item can become visible in its folder a moment after that stamp, so mail on
# a window's edge could otherwise fall between two runs. Mail already recorded is skipped
# (already_recorded); the overlap costs a few items per run, never a second Task.
EXTRACT_OVERLAP = timedelta(minutes=5)


def extract(ctx: RunContext, source: Callable[[], MailSource], store: StateStore,
            interval: tuple[datetime, datetime] | None, now: datetime) -> dict[str, Any]:
    """Stage the window's mail (and earlier emails still owed a Task) as ``mail.parquet``.

    The window comes from the run's data interval and the job's watermark
    (:func:`email_sync.schedule.run_window`). Unreadable items become ``malformed``
    outcomes; the same message seen twice (Inbox and Sent Items) is staged once.
    """
    store.create_schema()
    start, end = run_window(interval, store.watermark(ctx.job_id), now, ctx.settings.lookback_days)
    store.start_run(ctx.job_id, ctx.run_id, start, end)
    write_json(ctx.path("window.json"), {"start": start.isoformat(), "end": end.isoformat()})
    if ctx.settings.mode is Mode.OFF:
        log.info("job %s is off: nothing to extract", ctx.job_id)
        write_mail(ctx.path("mail.parquet"), [])
        return {"window_start": start.isoformat(), "window_end": end.isoformat(), "extracted": 0}

    mailbox = source()
    retry_refs = [(item_id, folder) for _, item_id, folder in store.retryable(ctx.job_id, MAX_ATTEMPTS)]
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    unreadable: list[Outcome] = []

    def staged() -> Iterator[MailItem]:
        for origin, results in (("extracted", mailbox.extract(ctx.settings.folders, start - EXTRACT_OVERLAP, end)),
                                ("retried", mailbox.fetch(retry_refs))):
            for result in results:
                if not isinstance(result, MailItem):
                    counts["unreadable"] += 1
                    unreadable.append(Outcome(_unreadable_key(result), "skipped", SkipReason.MALFORMED.value,
                                              result.reason))
                    continue
                identity = email_identity(result)
                key = message_key(identity) if identity else f"item:{result.item_id}"
                if key in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(key)
                counts[origin] += 1
                yield result

    write_mail(ctx.path("mail.parquet"), staged())
    store.record_outcomes(ctx.job_id, ctx.run_id, unreadable)
    log.info("job %s: window (%s, %s]: %d emails, %d retried, %d unreadable", ctx.job_id, start, end,
             counts["extracted"], counts["retried"], counts["unreadable"])
    return {"window_start": start.isoformat(), "window_end": end.isoformat(), **_ints(counts),
            "ews_requests": mailbox.requests}


# --- 2. filter -------------------------------------------------------------------------
def filter_mail(ctx: RunContext, store: StateStore, now: datetime) -> dict[str, Any]:
    """Apply every rule that needs no Salesforce data; stage the candidates.

    Replies: an inbound reply is recognised against emails this job recorded in the last
    ``reply_window_days`` (the ledger) *and* against emails of this same batch that are
    candidates themselves, so a thread that starts and is answered within one window works.
    Emails whose Tasks all exist are ``already_recorded``; if a file of theirs is still
    missing they go on as files-only candidates.
    """
    rules = compile_rules(ctx.settings, ctx.org)
    mail = ctx.path("mail.parquet")
    # The staged mail is streamed several times rather than held: memory stays at one row
    # group plus a small decision per email, whatever the run's size.
    referenced = {message_key(ref) for item in read_mail(mail) for ref in _referenced_ids(item)}
    since = now - timedelta(days=ctx.org.reply_window_days)
    recorded = store.recorded_since(ctx.job_id, referenced, since)

    decisions: dict[str, Decision] = {}
    item_ids: dict[str, str] = {}
    for item in read_mail(mail):
        key = _key(item)
        decisions[key] = classify(item, rules, recorded)
        item_ids[key] = item.item_id
    in_batch = {key: d.email_at for key, d in decisions.items() if d.record and d.email_at and key in referenced}
    again = {key for key, d in decisions.items() if d.reason is SkipReason.NOT_DESIGNATED} if in_batch else set()
    if again:
        recorded = {**recorded, **in_batch}
        for item in read_mail(mail):
            key = _key(item)
            if key in again:
                decisions[key] = classify(item, rules, recorded)

    ledger = _ledger_by_message(store, ctx.job_id, [k for k, d in decisions.items() if d.record])
    files = _uploaded_files(store, ctx.job_id, ledger)
    done = {k for k, d in decisions.items()
            if d.record and ledger.get(k) and all(r.state == "created" for r in ledger[k])}
    pending_files = _pending_files(mail, decisions, done, files, ctx.org)
    candidates, outcomes = [], []
    reasons: Counter[str] = Counter()
    for key, decision in decisions.items():
        if key in done:
            if not pending_files.get(key):
                decision = replace(decision, reason=SkipReason.ALREADY_RECORDED)
            else:
                part_one = next(r.task_id for r in ledger[key] if r.part == 1)
                candidates.append(_candidate(key, item_ids[key], decision, task_id=part_one))
                reasons["files_only"] += 1
                continue
        if decision.record:
            candidates.append(_candidate(key, item_ids[key], decision))
        else:
            reasons[decision.reason.value] += 1
            outcomes.append(Outcome(key, "skipped", decision.reason.value, decision.detail))
    write_jsonl(ctx.path("candidates.jsonl"), candidates)
    store.record_outcomes(ctx.job_id, ctx.run_id, outcomes)
    return {"candidates": len(candidates), "replies": sum(1 for c in candidates if c["is_reply"]),
            **{f"skipped_{r}": n for r, n in sorted(reasons.items()) if r != "files_only"},
            "files_only": reasons["files_only"]}


# --- 3. match --------------------------------------------------------------------------
def match(ctx: RunContext, crm: Callable[[], Crm], store: StateStore) -> dict[str, Any]:
    """Look up every candidate's participants in batched SOQL; build the Tasks to write.

    No candidate → no Salesforce call at all (the client is not even built). Owner id and
    Task field sizes come from the state store's cache when fresh.
    """
    candidates = {c["message_key"]: c for c in read_jsonl(ctx.path("candidates.jsonl"))}
    to_match = {k: _decision(c) for k, c in candidates.items() if c["task_id"] is None}
    if not candidates:
        write_jsonl(ctx.path("tasks.jsonl"), [])
        return {"matched": 0, "salesforce_calls": 0}
    client = crm()
    owner_id = _owner_id(ctx, client, store) if to_match else ""
    limits = _task_limits(client, store) if to_match else {}

    index = RecordIndex(())
    addresses = lookup_addresses(to_match.values())
    if addresses:
        owner_filter = owner_id if ctx.settings.owned_records_only else None
        lookups = []  # (object, its email fields, statement): every object's statements in one go
        for sobject in objects_to_match(ctx.settings):
            fields = email_fields_for(sobject, ctx.settings, ctx.org)
            lookups.extend((sobject, fields, q.statement)
                           for q in build_match_queries(sobject, fields, addresses, owner_id=owner_filter))
        answers = client.query_each([statement for _, _, statement in lookups])
        index = RecordIndex([record for (sobject, fields, _), found in zip(lookups, answers, strict=True)
                             for record in records_from_rows(sobject, found, fields)])

    counts: Counter[str] = Counter()
    outcomes: list[Outcome] = []

    def planned() -> Iterator[dict[str, Any]]:
        for item in read_mail(ctx.path("mail.parquet")):
            key = _key(item)
            candidate = candidates.get(key)
            if candidate is None:
                continue
            decision = _decision(candidate)
            plan = select_attachments(item, decision, ctx.org)
            files = [{"key": a.key, "attachment_id": a.ref.attachment_id, "name": a.ref.name,
                      "size": a.ref.size, "content_type": a.ref.content_type} for a in plan.upload]
            skipped_files = Counter(reason.value for _, reason in plan.skipped)
            row = {"message_key": key, "item_id": item.item_id, "folder": item.folder,
                   "email_at": candidate["email_at"], "task_id": candidate["task_id"], "tasks": [],
                   "files": files, "files_skipped": dict(skipped_files)}
            if candidate["task_id"] is not None:  # files-only: the Tasks exist
                counts["files_only"] += 1
                yield row
                continue
            found = match_decision(decision, index, ctx.settings, ctx.org)
            build = build_tasks(ctx.job_id, item, finalize(decision, found), found, ctx.settings, owner_id, limits)
            if build.skip_reason is not None:
                counts[f"skipped_{build.skip_reason.value}"] += 1
                outcomes.append(Outcome(key, "skipped", build.skip_reason.value, build.detail))
                continue
            counts["matched"] += 1
            counts["tasks"] += build.parts
            if build.parts > 1:
                counts["split_emails"] += 1
            counts.update({f"attachments_{r}": n for r, n in skipped_files.items()})
            row["tasks"] = [{"key": t.idempotency_key, "part": t.part, "parts": t.parts,
                             "fields": t.sobject(), "related": list(t.related_contact_ids)}
                            for t in build.tasks]
            yield row

    write_jsonl(ctx.path("tasks.jsonl"), planned())
    store.record_outcomes(ctx.job_id, ctx.run_id, outcomes)
    _remember_usage(client, store)
    return {**_ints(counts), "salesforce_calls": client.calls}


# --- 4. insert -------------------------------------------------------------------------
def insert_tasks(ctx: RunContext, crm: Callable[[], Crm], store: StateStore) -> dict[str, Any]:
    """Upsert the Tasks by their idempotency key, then their TaskRelations.

    Every Task is claimed in the ledger before it is sent; Salesforce's external-id upsert
    makes a re-send (after a crash between Salesforce's answer and our ledger write)
    update the same Task instead of creating a second one. Per-record errors are stored per
    email with Salesforce's message; the rest of the batch goes on.
    """
    rows = [r for r in _without_fields(ctx.path("tasks.jsonl")) if r["tasks"]]
    ledger = _ledger_by_message(store, ctx.job_id, [r["message_key"] for r in rows])
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
    _remember_usage(client, store)
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


# --- 5. upload -------------------------------------------------------------------------
def upload_attachments(ctx: RunContext, source: Callable[[], MailSource], crm: Callable[[], Crm],
                       store: StateStore) -> dict[str, Any]:
    """Upload each recorded email's selected attachments, linked to its (first) Task.

    Files travel in batches of at most ``UPLOAD_BATCH_BYTES`` (one EWS GetAttachment and
    one Salesforce call per batch), so memory holds one batch, never a run's attachments.
    A file is claimed before its upload; a claim left by a crashed attempt is reconciled
    against the Task's files in Salesforce (same name and size) before anything is sent again.
    """
    rows = [{"message_key": r["message_key"], "files": r["files"]}  # not the Tasks' fields: memory
            for r in read_jsonl(ctx.path("tasks.jsonl")) if r["files"]]
    if not rows:
        return {"files_uploaded": 0, "salesforce_calls": 0}
    keys = [r["message_key"] for r in rows]
    ledger = _ledger_by_message(store, ctx.job_id, keys)
    state = {(f.message_key, f.attachment_key): f for f in store.files(ctx.job_id, keys)}
    work = []  # (row, file, task_id)
    for row in rows:
        part_one = next((l for l in ledger.get(row["message_key"], ()) if l.part == 1 and l.state == "created"), None)
        if part_one is None:
            continue  # the Task failed: its files go up when a later run records it
        for file in row["files"]:
            known = state.get((row["message_key"], file["key"]))
            if known is None or known.state != "uploaded":
                work.append((row, file, part_one.task_id, known is not None))
    if not work:
        return {"files_uploaded": 0, "files_existing": sum(len(r["files"]) for r in rows), "salesforce_calls": 0}

    client = crm()
    client.check_budget(1 + len(work) // UPLOAD_BATCH_FILES, ctx.org.api_reserve, store.cache_get(API_USAGE_CACHE))
    reconciled = _reconcile_files(client, [w for w in work if w[3]])
    store.record_files(ctx.job_id, [(r["message_key"], f["key"], t, reconciled[f["key"]])
                                    for r, f, t, _ in work if f["key"] in reconciled])
    todo = [(r, f, t) for r, f, t, _ in work if f["key"] not in reconciled]
    store.claim_files(ctx.job_id, [(r["message_key"], f["key"], t) for r, f, t in todo])
    mailbox = source()
    counts: Counter[str] = Counter(files_reconciled=len(reconciled))
    for batch in _upload_batches(todo):
        counts.update(_upload_batch(ctx, mailbox, client, store, batch))
    _remember_usage(client, store)
    return {**_ints(counts), "salesforce_calls": client.calls, "ews_requests": mailbox.requests}


def _upload_batch(ctx: RunContext, mailbox: MailSource, client: Crm, store: StateStore,
                  batch: list[tuple[dict[str, Any], dict[str, Any], str]]) -> Counter[str]:
    """One EWS read and one Salesforce call for a batch of files; their counts.

    A function of its own so the batch's contents are freed when it returns: held by a loop
    variable, they would stay alive while the next batch is read, two batches at once.
    """
    contents = mailbox.attachment_contents([f["attachment_id"] for _, f, _ in batch])
    uploads, unreadable = [], 0
    for (row, file, task_id), content in zip(batch, contents, strict=True):
        if isinstance(content, Exception):
            unreadable += 1  # stays claimed: the next attempt reads it again
            continue
        uploads.append((row, FileUpload(file["key"], task_id, file["name"], content, file["content_type"])))
    del contents
    results = client.upload_files([u for _, u in uploads])
    store.record_files(ctx.job_id, [(row["message_key"], u.key, u.task_id, res.id)
                                    for (row, u), res in zip(uploads, results, strict=True) if res.ok])
    for refused in (r for r in results if not r.ok):
        log.warning("job %s: Salesforce refused a file: %s", ctx.job_id, refused.error_code)
    return Counter(files_uploaded=sum(1 for r in results if r.ok),
                   files_failed=sum(1 for r in results if not r.ok) + unreadable)


def _upload_batches(todo: list[Any], max_bytes: int = UPLOAD_BATCH_BYTES,
                    max_files: int = UPLOAD_BATCH_FILES) -> Iterator[list[Any]]:
    """Group files so one EWS read and one Salesforce call carry many, within a memory bound."""
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
    """attachment key → ContentVersion id for claimed files Salesforce already has."""
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


# --- 6. finish -------------------------------------------------------------------------
def finish(ctx: RunContext, source: Callable[[], MailSource], store: StateStore,
           step_counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Write the CRM category back, close the run, advance the watermark, drop staged mail.

    Items recorded by earlier runs whose category write failed are retried here too.
    """
    window = read_json(ctx.path("window.json"))
    unmarked = store.unmarked(ctx.job_id)
    marked = ews_requests = 0
    if unmarked:
        wanted = {i for _, i in unmarked}
        staged = {item.item_id: (item.item_id, item.change_key, item.categories)  # not whole emails: memory
                  for item in read_mail(ctx.path("mail.parquet")) if item.item_id in wanted}
        mailbox = source()
        known = [staged[i] for _, i in unmarked if i in staged]
        refetch = [(i, "") for _, i in unmarked if i not in staged]
        fetched = [(m.item_id, m.change_key, m.categories) for m in mailbox.fetch(refetch)
                   if isinstance(m, MailItem)] if refetch else []
        done = set(mailbox.add_category([*known, *fetched], ctx.org.crm_category))
        store.mark_category(ctx.job_id, [k for k, i in unmarked if i in done])
        marked = len(done)
        ews_requests = mailbox.requests

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
        "categories_written": marked,
        "salesforce_calls": sum(c.get("salesforce_calls", 0) for c in step_counts.values()),
        "ews_requests": sum(c.get("ews_requests", 0) for c in step_counts.values()) + ews_requests,
    }
    store.finish_run(ctx.job_id, ctx.run_id, "success", summary)
    store.advance_watermark(ctx.job_id, datetime.fromisoformat(window["end"]), ctx.run_id)
    shutil.rmtree(ctx.staging, ignore_errors=True)
    prune_staging(ctx.staging_root / ctx.job_id)
    return summary


def prune_staging(job_dir: Path, older_than: timedelta = STAGING_RETENTION) -> int:
    """Delete staged runs left by failed runs after ``older_than``; returns how many."""
    if not job_dir.is_dir():
        return 0
    cutoff = time.time() - older_than.total_seconds()
    removed = 0
    for run_dir in job_dir.iterdir():
        if run_dir.is_dir() and run_dir.stat().st_mtime < cutoff:
            shutil.rmtree(run_dir, ignore_errors=True)
            removed += 1
    return removed


def format_summary(job_id: str, summary: dict[str, Any]) -> str:
    """The run summary as log lines (counts only, never mail content)."""
    lines = [f"email sync {job_id}: window ({summary['window_start']}, {summary['window_end']}]"]
    for name in ("extracted", "recorded", "failed", "tasks_created", "parts_split", "relations_created",
                 "attachments_uploaded", "attachments_too_large", "categories_written", "salesforce_calls",
                 "ews_requests"):
        lines.append(f"  {name:<22}{summary.get(name, 0):>8}")
    for reason, n in summary.get("skipped", {}).items():
        lines.append(f"  skipped {reason:<14}{n:>8}")
    return "\n".join(lines)


# --- helpers ---------------------------------------------------------------------------
def _key(item: MailItem) -> str:
    identity = email_identity(item)
    return message_key(identity) if identity else f"item:{item.item_id}"


def _unreadable_key(result: Any) -> str:
    item_id = getattr(result, "item_id", None)
    return message_key(item_id) if item_id else f"unreadable:{id(result)}"


def _referenced_ids(item: MailItem) -> Iterator[str]:
    for ref in (item.in_reply_to, *item.references):
        if ref and ref.strip():
            yield ref


def _pending_files(mail: Path, decisions: dict[str, Decision], done: set[str], uploaded: dict[str, set[str]],
                   org: OrgSettings) -> dict[str, int]:
    """For emails whose Tasks all exist: how many of their files are still to upload."""
    if not done:
        return {}
    pending: dict[str, int] = {}
    for item in read_mail(mail):
        key = _key(item)
        if key in done:  # the last staged copy of a key wins, as in the decisions
            plan = select_attachments(item, decisions[key], org)
            pending[key] = sum(1 for a in plan.upload if a.key not in uploaded.get(key, set()))
    return pending


def _candidate(key: str, item_id: str, decision: Decision, task_id: str | None = None) -> dict[str, Any]:
    return {"message_key": key, "item_id": item_id, "task_id": task_id,
            "direction": decision.direction.value if decision.direction else None,
            "participants": list(decision.participants), "designated": decision.designated,
            "is_reply": decision.is_reply, "record_attachments": decision.record_attachments,
            "email_at": decision.email_at.isoformat() if decision.email_at else None}


def _decision(candidate: dict[str, Any]) -> Decision:
    return Decision(
        None,
        Direction(candidate["direction"]) if candidate["direction"] else None,
        tuple(candidate["participants"]),
        candidate["designated"],
        candidate["is_reply"],
        candidate["record_attachments"],
        datetime.fromisoformat(candidate["email_at"]) if candidate["email_at"] else None,
    )


def _ledger_by_message(store: StateStore, job_id: str, keys: list[str]) -> dict[str, list[Any]]:
    by_message: dict[str, list[Any]] = {}
    for row in store.ledger(job_id, keys) if keys else []:
        by_message.setdefault(row.message_key, []).append(row)
    return by_message


def _uploaded_files(store: StateStore, job_id: str, ledger: dict[str, list[Any]]) -> dict[str, set[str]]:
    recorded = [k for k, rows in ledger.items() if all(r.state == "created" for r in rows)]
    files: dict[str, set[str]] = {}
    for row in store.files(job_id, recorded) if recorded else []:
        if row.state == "uploaded":
            files.setdefault(row.message_key, set()).add(row.attachment_key)
    return files


def _owner_id(ctx: RunContext, client: Crm, store: StateStore) -> str:
    user = ctx.settings.salesforce_user
    if not user:
        raise ConfigurationProblem(f"job {ctx.job_id!r}: field 'salesforce_user' is required to record Tasks")
    if is_salesforce_user_id(user):
        return user
    cache_key = f"owner:{user.lower()}"
    cached = store.cache_get(cache_key)
    if cached:
        return str(cached)
    owner = client.user_id(user)
    store.cache_put(cache_key, owner, METADATA_TTL)
    return owner


def _task_limits(client: Crm, store: StateStore) -> dict[str, FieldLimit]:
    """Task field sizes from describe (cached); refuses an org without the external-id field."""
    fields = store.cache_get("describe:Task")
    if fields is None:
        fields = [{k: f.get(k) for k in ("name", "length", "byteLength", "externalId")}
                  for f in client.describe_fields("Task")]
        store.cache_put("describe:Task", fields, METADATA_TTL)
    if not any(f["name"] == IDEMPOTENCY_FIELD and f.get("externalId") for f in fields):
        raise ConfigurationProblem(
            f"Salesforce Task has no external-id field {IDEMPOTENCY_FIELD}: create it as Text(40), "
            "External ID, Unique (docs/CONNECTIONS.md); without it a retry could duplicate Tasks")
    return field_limits_from_describe({"fields": fields})


def _remember_usage(client: Crm, store: StateStore) -> None:
    usage = client.api_usage()
    if usage is not None:
        store.cache_put(API_USAGE_CACHE, list(usage), API_USAGE_TTL)


def _ints(counts: Counter[str]) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(counts.items())}


def utcnow() -> datetime:
    return datetime.now(UTC)
