"""The one place the sync talks to Salesforce.

:class:`SalesforceCrm` wraps an already-built ``simple_salesforce.Salesforce`` (the Airflow
hook builds it; tests build it with ``sandbox.client()``) but sends every request itself,
through :meth:`SalesforceCrm._send`, with the client's session and bearer token. That one
method counts requests (``calls``), keeps the ``Sforce-Limit-Info`` usage, retries transient
failures and turns Salesforce errors into :class:`SalesforceError` subclasses whose messages
carry Salesforce's code and message but never the session id, a URL (queries travel in it)
or the record contents we sent (Salesforce's own message may quote a value, e.g.
STRING_TOO_LONG). Nothing here logs more than that either.

Every method makes the fewest requests the API allows and none at all when given nothing
to do. Writes are idempotent where Salesforce makes that possible: Tasks are upserted by
their external id ``Email_Sync_Key__c``, so a re-send updates instead of duplicating.

Retries (exponential backoff with full jitter, capped at ``backoff_max``; a ``Retry-After``
header is used instead of the jitter, also capped): HTTP 429, 500, 502, 503, 504, 403
``REQUEST_LIMIT_EXCEEDED`` for concurrency/rate limits (Salesforce's REST throttle shape),
connection errors, timeouts and dropped connections. Never retried: 401
(:class:`AuthenticationFailed`; simple-salesforce's own re-login is bypassed on purpose: the
caller fails fast), the daily allowance being used up (403 ``REQUEST_LIMIT_EXCEEDED``
"TotalRequests", :class:`BudgetExhausted`) and every other 4xx.

A request that is not idempotent (creating TaskRelations, uploading a file, uploading Bulk
job data) is retried only when Salesforce provably did not act on it: the connection was
never made, or it answered 429, a throttle 403, or 503 ``SERVER_UNAVAILABLE``. After a
dropped connection, a read timeout or a 500/502/504 the first attempt may have been applied,
so it is not repeated; :class:`SalesforceError` then has ``may_have_been_applied = True`` and
the caller reconciles (``ensure_task_relations(check_existing=True)``, ``find_files``).
"""

from __future__ import annotations

import csv
import email.utils
import io
import json
import logging
import random
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from email_sync import errors
from email_sync.crm.base import FileUpload, RecordResult, without_values
from email_sync.errors import SyncError
from email_sync.rules.keys import IDEMPOTENCY_FIELD, IDEMPOTENCY_KEY_RE, missing_key_field_message
from email_sync.rules.settings import is_salesforce_user_id
from email_sync.rules.soql import api_name, build_id_queries, owner_lookup_query
from email_sync.rules.text import FieldLimit, truncate

log = logging.getLogger(__name__)

COLLECTION_LIMIT = 200  # records per sObject Collections request (Salesforce's limit)
COMPOSITE_QUERY_LIMIT = 5  # query subrequests per Composite request (Salesforce's limit)
BULK_MAX_UPLOAD_BYTES = 100_000_000  # Bulk API 2.0 takes 150 MB base64 per job = ~100 MB of CSV
_FINAL_JOB_STATES = ("JobComplete", "Failed", "Aborted")
_TITLE_LIMIT = FieldLimit(255)


# -- errors ---------------------------------------------------------------------------------
class SalesforceError(SyncError):
    """A Salesforce request failed; the message has Salesforce's code and message only.

    Not a :class:`~email_sync.errors.PermanentError` unless a subclass below says so: the
    task's retries may get through. ``status``/``error_code``/``sf_message`` are the HTTP
    status and Salesforce's code and message when Salesforce answered.
    ``may_have_been_applied`` is True when a non-idempotent request was not retried because
    Salesforce may have acted on it (dropped connection, read timeout, 500/502/504).
    """

    def __init__(self, message: str, *, status: int | None = None, error_code: str | None = None,
                 sf_message: str | None = None, may_have_been_applied: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.sf_message = sf_message
        self.may_have_been_applied = may_have_been_applied


class AuthenticationFailed(errors.AuthenticationFailed, SalesforceError):
    """401 (INVALID_SESSION_ID etc.): the credentials are wrong or expired; retrying cannot help."""


class BudgetExhausted(errors.BudgetExhausted, SalesforceError):
    """The org's daily API allowance (minus the reserve) does not cover the work."""


class SetupProblem(errors.SetupProblem, SalesforceError):
    """The org lacks what the sync needs (the external-id field, the job's Salesforce user)."""


@dataclass(frozen=True)
class _Failure:
    reason: str
    not_applied: bool  # Salesforce provably did not act on the request: safe to repeat a POST
    retry_after: float | None = None
    status: int | None = None
    error_code: str | None = None
    sf_message: str | None = None


# -- the client -------------------------------------------------------------------------------
class SalesforceCrm:
    """Salesforce operations of the sync over a ``simple_salesforce.Salesforce`` (its session and token).

    ``calls`` counts every HTTP request this object sent, retries and Bulk polls included.
    ``sleep`` and ``rng`` are injectable so tests neither wait nor depend on chance.
    ``bulk_poll_seconds`` is the wait before the first Bulk job poll; later waits double up to
    ``bulk_poll_max_seconds`` (fewer polls, i.e. API calls, for long jobs).
    """

    # Task fields Salesforce accepts on create but refuses on update (describe: createable, not
    # updateable). An upsert that matches an existing Task fails on them; see upsert_tasks.
    create_only_fields: frozenset[str] = frozenset({"TaskSubtype"})

    def __init__(self, sf: Any, *, bulk_threshold: int = 2000, bulk_poll_seconds: float = 0.5,
                 max_attempts: int = 5, backoff_base: float = 0.5, backoff_max: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                 timeout: float | tuple[float, float] | None = (15.0, 300.0),
                 bulk_poll_max_seconds: float = 10.0, bulk_timeout: float = 3600.0, reserve: int = 0) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._sf = sf
        self.bulk_threshold = bulk_threshold
        self.bulk_poll_seconds = bulk_poll_seconds
        self.bulk_poll_max_seconds = max(bulk_poll_max_seconds, bulk_poll_seconds)
        self.bulk_timeout = bulk_timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._usage: tuple[int, int] | None = None
        self.calls = 0
        self.reserve = reserve

    # -- reading ------------------------------------------------------------------------------
    def query(self, statement: str) -> list[dict[str, Any]]:
        """All rows of one SOQL statement (every page), without ``attributes``."""
        return self.query_each([statement])[0]

    def query_many(self, statements: Iterable[str]) -> list[dict[str, Any]]:
        """The rows of several statements, in order (see :meth:`query_each`)."""
        return [row for rows in self.query_each(list(statements)) for row in rows]

    def query_each(self, statements: Sequence[str]) -> list[list[dict[str, Any]]]:
        """The rows of each statement, sent as Composite requests.

        A Composite request counts as one API call for up to five query subrequests
        (queries and their ``nextRecordsUrl`` pages), and carries the statements in its body,
        so they may be as long as SOQL allows (100,000 characters) instead of what fits in a
        URL. Reading is idempotent: a failed request is retried whole.
        """
        path = urlsplit(self._sf.base_url).path.rstrip("/")
        rows: list[list[dict[str, Any]]] = [[] for _ in statements]
        pending = deque((index, f"{path}/query/?q={quote(statement, safe='')}")
                        for index, statement in enumerate(statements))
        while pending:
            batch = [pending.popleft() for _ in range(min(COMPOSITE_QUERY_LIMIT, len(pending)))]
            body = {"allOrNone": False, "compositeRequest": [
                {"method": "GET", "url": url, "referenceId": f"q{index}_{n}"} for n, (index, url) in enumerate(batch)]}
            answer = self._send("POST", "composite", label="query", idempotent=True, data=_json_bytes(body),
                                headers={"Content-Type": "application/json"}).json()
            for (index, _), sub in zip(batch, answer.get("compositeResponse", ()), strict=True):
                result = sub.get("body")
                if int(sub.get("httpStatusCode") or 500) >= 300 or not isinstance(result, dict):
                    raise _subrequest_error(sub, "query")
                rows[index].extend(_strip_attributes(r) for r in result.get("records", ()))
                if not result.get("done", True) and result.get("nextRecordsUrl"):
                    pending.append((index, result["nextRecordsUrl"]))
        return rows

    def describe_fields(self, sobject: str) -> list[dict[str, Any]]:
        """``[{name, length, byteLength, externalId, type}]`` of an object, plus ``picklist`` (the active
        values) for a picklist field (one call; the caller caches)."""
        name = api_name(sobject)
        body = self._send("GET", f"sobjects/{name}/describe", label=f"describe {name}", idempotent=True).json()
        return [{**{k: f.get(k) for k in ("name", "length", "byteLength", "externalId", "type")},
                 **({"picklist": [v["value"] for v in f["picklistValues"] if v.get("active", True)]}
                    if f.get("picklistValues") else {})}
                for f in body.get("fields", ())]

    def user_id(self, user: str) -> str:
        """The User Id for a job's ``salesforce_user``: an Id as is (no call), a Username by one query."""
        user = user.strip()
        if is_salesforce_user_id(user):
            return user
        rows = self.query(owner_lookup_query(user))
        if not rows:
            raise SetupProblem(f"Salesforce user {user!r} not found: fix the job's salesforce_user")
        if rows[0].get("IsActive") is False:
            raise SetupProblem(f"Salesforce user {user!r} is inactive and cannot own Tasks")
        return str(rows[0]["Id"])

    def find_files(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Latest ContentVersions first published on these Tasks (batched ``IN`` queries).

        Rows: ``Id, ContentDocumentId, PathOnClient, ContentSize, FirstPublishLocationId``.
        """
        statements = build_id_queries(
            "SELECT Id, ContentDocumentId, PathOnClient, ContentSize, FirstPublishLocationId FROM ContentVersion",
            "FirstPublishLocationId", task_ids, suffix=" AND IsLatest = true")
        return self.query_many(statements)

    def find_tasks(self, keys: Sequence[str]) -> dict[str, str]:
        """Idempotency key → Task Id of the Tasks that exist with these keys (batched ``IN`` queries)."""
        statements = build_id_queries(f"SELECT Id, {IDEMPOTENCY_FIELD} FROM Task", IDEMPOTENCY_FIELD, keys,
                                      valid=IDEMPOTENCY_KEY_RE)
        return {row[IDEMPOTENCY_FIELD]: row["Id"] for row in self.query_many(statements)}

    # -- API allowance -------------------------------------------------------------------------
    def api_usage(self) -> tuple[int, int] | None:
        """(used, max) of the daily allowance from the last ``Sforce-Limit-Info`` seen, else None."""
        if self._usage is not None:
            return self._usage
        usage = (getattr(self._sf, "api_usage", None) or {}).get("api-usage")
        if usage is not None:
            return int(usage.used), int(usage.total)
        return None

    def check_budget(self, needed_calls: int, reserve: int, known: tuple[int, int] | None = None) -> None:
        """Raise :class:`BudgetExhausted` unless ``needed_calls`` leave ``reserve`` calls of today's allowance.

        Uses the last usage this client saw, else ``known`` (e.g. what an earlier step of the
        run saw, a few minutes old), else reads ``limits`` once (DailyApiRequests). Other
        integrations share the allowance, so running it dry would break them too.
        """
        if needed_calls <= 0:
            return
        usage = self.api_usage() or (tuple(known) if known else None)  # type: ignore[assignment]
        if usage is not None:
            used, maximum = usage
            remaining = maximum - used
        else:
            body = self._send("GET", "limits", label="limits", idempotent=True).json()
            daily = body.get("DailyApiRequests") or {}
            maximum, remaining = int(daily.get("Max", 0)), int(daily.get("Remaining", 0))
        if remaining - needed_calls < reserve:
            raise BudgetExhausted(
                f"Salesforce daily API allowance: {remaining} of {maximum} calls left; this step needs about "
                f"{needed_calls} and {reserve} are kept in reserve for other integrations. It resumes when the "
                "allowance recovers (rolling 24 hours) or the reserve is lowered.")

    # -- Tasks --------------------------------------------------------------------------------
    def upsert_tasks(self, records: Iterable[tuple[str, Mapping[str, Any]]]) -> list[RecordResult]:
        """Upsert Tasks by ``Email_Sync_Key__c``; one result per record, in input order.

        Up to ``bulk_threshold`` records: sObject Collections upsert, 200 per call,
        ``allOrNone=false`` (a bad record fails alone). Above: one Bulk API 2.0 upsert job
        (create, upload, complete, polls, result files). Either way a re-send matches the
        existing Task by its key instead of creating another; ``created`` tells which.

        Salesforce refuses create-only fields (``TaskSubtype``) when an upsert matches an
        existing Task (INVALID_FIELD_FOR_INSERT_UPDATE). Only then, and only for those
        records, a second pass sends them again without those fields: the common case (all
        new Tasks) costs nothing extra, a re-send costs one more call per chunk.
        Raises :class:`SetupProblem` when the org lacks the key field.
        """
        rows = [_task_row(key, fields) for key, fields in records]  # one pass: records may be a stream
        if not rows:
            return []
        try:
            outcome = self._upsert_pass(rows)
            again = [i for i, (result, fields) in enumerate(outcome)
                     if self._create_only_refusal(result, fields) and self.create_only_fields & rows[i][1].keys()]
            if again:
                retry = [(rows[i][0], {k: v for k, v in rows[i][1].items() if k not in self.create_only_fields})
                         for i in again]
                for i, redo in zip(again, self._upsert_pass(retry), strict=True):
                    outcome[i] = redo
        except errors.PermanentError:
            raise
        except SalesforceError as error:
            if _about_key_field(error):
                raise _missing_key_field(str(error)) from None
            raise
        return [result for result, _ in outcome]

    def _upsert_pass(self, rows: list[tuple[str, dict[str, Any]]]) -> list[tuple[RecordResult, tuple[str, ...]]]:
        if len(rows) <= self.bulk_threshold:
            return self._collection_upsert(rows)
        return self._bulk_upsert(rows)

    def _create_only_refusal(self, result: RecordResult, fields: tuple[str, ...]) -> bool:
        if result.error_code != "INVALID_FIELD_FOR_INSERT_UPDATE":
            return False
        named = set(fields) | set(_fields_in_message(result.error_message or ""))
        return bool(named) and named <= self.create_only_fields

    def _collection_upsert(self, rows: list[tuple[str, dict[str, Any]]]) -> list[tuple[RecordResult, tuple[str, ...]]]:
        results: list[tuple[RecordResult, tuple[str, ...]]] = []
        for chunk in _chunks(rows, COLLECTION_LIMIT):
            body = {"allOrNone": False,
                    "records": [{"attributes": {"type": "Task"}, **fields} for _, fields in chunk]}
            answers = self._send("PATCH", f"composite/sobjects/Task/{IDEMPOTENCY_FIELD}", label="upsert Tasks",
                                 idempotent=True, data=_json_bytes(body),
                                 headers={"Content-Type": "application/json"}).json()
            results.extend(_collection_results([key for key, _ in chunk], answers, "upsert Tasks"))
        return results

    # -- Bulk API 2.0 -----------------------------------------------------------------------
    def _bulk_upsert(self, rows: list[tuple[str, dict[str, Any]]]) -> list[tuple[RecordResult, tuple[str, ...]]]:
        columns = list(dict.fromkeys([IDEMPOTENCY_FIELD, *(name for _, f in rows for name in f)]))
        outcome: dict[str, deque[tuple[RecordResult, tuple[str, ...]]]] = defaultdict(deque)
        for job_rows in _csv_jobs(rows, columns):
            for result, fields in self._bulk_job(job_rows, columns):
                outcome[result.key].append((result, fields))
        return [outcome[key].popleft() if outcome[key] else
                (RecordResult(key, None, False, "UNPROCESSED", "not in the Bulk API job's results"), ())
                for key, _ in rows]

    def _bulk_job(self, rows: list[tuple[str, bytes]],
                  columns: list[str]) -> list[tuple[RecordResult, tuple[str, ...]]]:
        """One upsert job for rows whose CSV lines are ready; results for the rows Salesforce reported."""
        data = _csv_line(columns) + b"".join(line for _, line in rows)
        attempt = 0
        while True:  # a job whose data upload may or may not have arrived is abandoned and redone
            attempt += 1
            # Creating a job is safe to repeat: an orphan empty job is harmless and expires.
            job = self._send("POST", "jobs/ingest", label="create Bulk job", idempotent=True,
                             json={"object": "Task", "externalIdFieldName": IDEMPOTENCY_FIELD, "contentType": "CSV",
                                   "operation": "upsert", "lineEnding": "LF", "columnDelimiter": "COMMA"}).json()
            job_id = str(job["id"])
            try:
                self._send("PUT", f"jobs/ingest/{job_id}/batches", label="upload Bulk job data", idempotent=False,
                           data=data, headers={"Content-Type": "text/csv"})
                break
            except SalesforceError as error:
                if not error.may_have_been_applied or attempt >= self.max_attempts:
                    self._abort_job(job_id)
                    raise
                self._abort_job(job_id)
                log.warning("Bulk job data upload may not have arrived; starting a new job (attempt %d)", attempt)
                self._sleep(self._backoff(attempt, None))
        try:
            self._send("PATCH", f"jobs/ingest/{job_id}", label="close Bulk job", idempotent=True,
                       json={"state": "UploadComplete"})
        except SalesforceError as error:
            if error.error_code != "INVALIDJOBSTATE":  # a repeat after the first one got through
                raise
        info = self._wait_for_job(job_id)
        state = info.get("state")
        total = len(rows)
        processed = int(info.get("numberRecordsProcessed") or 0)
        failed = int(info.get("numberRecordsFailed") or 0)
        if state == "Aborted" or (state == "Failed" and processed == 0):
            message = str(info.get("errorMessage") or f"the job ended {state}")
            raise SalesforceError(f"Bulk API upsert job {job_id} {state.lower()}: {message}",
                                  error_code=f"BULK_JOB_{str(state).upper()}", sf_message=message)
        results: list[tuple[RecordResult, tuple[str, ...]]] = []
        if processed - failed > 0:
            for row in self._bulk_results(job_id, "successfulResults"):
                created = str(row.get("sf__Created", "")).lower() == "true"
                results.append((RecordResult(row.get(IDEMPOTENCY_FIELD, ""), row.get("sf__Id") or None, created), ()))
        if failed > 0:
            for row in self._bulk_results(job_id, "failedResults"):
                code, message, fields = _parse_bulk_error(row.get("sf__Error", ""))
                results.append((RecordResult(row.get(IDEMPOTENCY_FIELD, ""), None, False, code, message), fields))
        if processed < total:
            reason = str(info.get("errorMessage") or f"not processed by Bulk API job {job_id} ({state})")
            for row in self._bulk_results(job_id, "unprocessedrecords"):
                results.append((RecordResult(row.get(IDEMPOTENCY_FIELD, ""), None, False, "UNPROCESSED", reason), ()))
        return results

    def _wait_for_job(self, job_id: str) -> dict[str, Any]:
        interval, waited = self.bulk_poll_seconds, 0.0
        deadline = time.monotonic() + self.bulk_timeout
        while True:
            self._sleep(interval)
            waited += interval
            info = self._send("GET", f"jobs/ingest/{job_id}", label="poll Bulk job", idempotent=True).json()
            if info.get("state") in _FINAL_JOB_STATES:
                return info
            if waited >= self.bulk_timeout or time.monotonic() >= deadline:
                raise SalesforceError(f"Bulk API job {job_id} did not finish within {self.bulk_timeout:.0f} s "
                                      f"(state {info.get('state')}); it goes on in Salesforce and a re-run "
                                      "upserts the same keys", error_code="BULK_JOB_TIMEOUT")
            interval = min(max(interval, 0.0) * 2, self.bulk_poll_max_seconds)

    def _bulk_results(self, job_id: str, kind: str) -> Iterator[dict[str, str]]:
        response = self._send("GET", f"jobs/ingest/{job_id}/{kind}", label=f"Bulk job {kind}", idempotent=True,
                              headers={"Accept": "text/csv"})
        # text/csv comes without a charset, which requests would read as ISO-8859-1.
        return csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline=""))

    def _abort_job(self, job_id: str) -> None:
        try:
            self._send("PATCH", f"jobs/ingest/{job_id}", label="abort Bulk job", idempotent=True,
                       json={"state": "Aborted"})
        except SalesforceError as error:  # best effort: an open job without data expires on its own
            log.warning("could not abort Bulk job %s: %s", job_id, error)

    # -- TaskRelations -------------------------------------------------------------------------
    def ensure_task_relations(self, pairs: Mapping[str, Sequence[str]], *,
                              check_existing: bool) -> list[RecordResult]:
        """Relate Contacts to Tasks (TaskRelation, ``IsWhat = false``); one result per distinct pair.

        Result keys are ``"task_id:contact_id"``. With ``check_existing`` the Tasks' current
        relations are queried first (batched) and only missing ones inserted; existing ones
        come back ``created=False``. A DUPLICATE_VALUE answer also means the relation exists
        and is reported the same way. Inserts: sObject Collections, 200 per call. Not retried
        after an ambiguous failure (see the module docstring): the caller re-runs with
        ``check_existing=True``.
        """
        wanted: dict[tuple[str, str], None] = {}
        for task_id, contact_ids in pairs.items():
            for contact_id in contact_ids:
                wanted[(task_id, contact_id)] = None
        if not wanted:
            return []
        existing: dict[tuple[str, str], str] = {}
        if check_existing:
            statements = build_id_queries("SELECT Id, TaskId, RelationId FROM TaskRelation", "TaskId",
                                           sorted({t for t, _ in wanted}), prefix="IsWhat = false AND ")
            for row in self.query_many(statements):
                existing[(str(row["TaskId"])[:15], str(row["RelationId"])[:15])] = str(row["Id"])
        results: dict[tuple[str, str], RecordResult] = {}
        todo = []
        for task_id, contact_id in wanted:
            found = existing.get((task_id[:15], contact_id[:15]))
            if found is not None:
                results[(task_id, contact_id)] = RecordResult(f"{task_id}:{contact_id}", found, False)
            else:
                todo.append((task_id, contact_id))
        for chunk in _chunks(todo, COLLECTION_LIMIT):
            body = {"allOrNone": False, "records": [
                {"attributes": {"type": "TaskRelation"}, "TaskId": t, "RelationId": c, "IsWhat": False}
                for t, c in chunk]}
            answers = self._send("POST", "composite/sobjects", label="insert TaskRelations", idempotent=False,
                                 data=_json_bytes(body), headers={"Content-Type": "application/json"}).json()
            for pair, (result, _) in zip(chunk, _collection_results([f"{t}:{c}" for t, c in chunk], answers,
                                                                    "insert TaskRelations"), strict=True):
                if result.error_code == "DUPLICATE_VALUE":
                    match = re.search(r"record with id: ([A-Za-z0-9]{15,18})\b", result.error_message or "")
                    result = RecordResult(result.key, match.group(1) if match else None, False)
                results[pair] = result
        return [results[pair] for pair in wanted]

    # -- Files -------------------------------------------------------------------------------
    def upload_files(self, files: Sequence[FileUpload]) -> list[RecordResult]:
        """ContentVersions published on their Tasks (``FirstPublishLocationId`` links each file).

        One sObject Collections call per 200 files, each content a binary multipart part (no
        base64); Salesforce accepts up to 500 MB per call, the caller bounds the bytes per call
        to bound memory. Results in input order, id = the ContentVersion Id (ContentDocumentId
        is not in the answer: :meth:`find_files`). Record-level refusals (e.g.
        FILE_SIZE_LIMIT_EXCEEDED) are failed results; an ambiguous transport failure is not
        retried (it could create second copies) and raises with ``may_have_been_applied``.
        """
        results: list[RecordResult] = []
        for chunk in _chunks(list(files), COLLECTION_LIMIT):
            records: list[dict[str, Any]] = []
            binaries: list[tuple[str, tuple[str, bytes, str]]] = []
            for index, upload in enumerate(chunk, 1):
                part = f"binaryPart{index}"
                entity: dict[str, Any] = {
                    "attributes": {"type": "ContentVersion", "binaryPartName": part,
                                   "binaryPartNameAlias": "VersionData"},
                    "Title": truncate(_title(upload.filename), _TITLE_LIMIT), "PathOnClient": upload.filename,
                    "FirstPublishLocationId": upload.task_id,
                }
                if upload.owner_id:
                    entity["OwnerId"] = upload.owner_id
                records.append(entity)
                binaries.append((part, (upload.filename, upload.content,
                                        upload.content_type or "application/octet-stream")))
            body = json.dumps({"allOrNone": False, "records": records})
            answer = self._send("POST", "composite/sobjects", label="upload files", idempotent=False,
                                files=[("collection", (None, body, "application/json")), *binaries]).json()
            results.extend(r for r, _ in _collection_results([u.key for u in chunk], answer, "upload files"))
        return results

    # -- transport ------------------------------------------------------------------------------
    def _send(self, method: str, url: str, *, label: str, idempotent: bool, **kwargs: Any) -> requests.Response:
        """Send one logical request (retrying transient failures); count every attempt.

        ``url`` is absolute or relative to the REST base (``.../services/data/vXX.X/``).
        ``idempotent`` says whether repeating it after an ambiguous failure is harmless.
        """
        if not url.startswith("https://") and not url.startswith("http://"):
            url = self._sf.base_url + url
        headers = {"Authorization": self._sf.headers["Authorization"], **(kwargs.pop("headers", None) or {})}
        attempt = 0
        while True:
            attempt += 1
            self._guard_reserve(label)
            self.calls += 1
            try:
                response = self._sf.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise SalesforceError(f"{label}: TLS failure talking to Salesforce ({type(exc).__name__})") from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                never_sent = _never_sent(exc)
                failure = _Failure(f"{'could not connect' if never_sent else 'connection failed'} "
                                   f"({type(exc).__name__})", not_applied=never_sent)
            except requests.exceptions.RequestException as exc:
                raise SalesforceError(f"{label}: request failed ({type(exc).__name__})") from None
            else:
                self._note_usage(response)
                if response.status_code < 300:
                    return response
                failure = self._failure(response, label)
            if not (idempotent or failure.not_applied):
                raise SalesforceError(f"{label}: {failure.reason}; not retried because Salesforce may already "
                                      "have applied it", status=failure.status, error_code=failure.error_code,
                                      sf_message=failure.sf_message, may_have_been_applied=True)
            if attempt >= self.max_attempts:
                raise SalesforceError(f"{label}: {failure.reason}; gave up after {attempt} attempts",
                                      status=failure.status, error_code=failure.error_code,
                                      sf_message=failure.sf_message)
            delay = self._backoff(attempt, failure.retry_after)
            log.warning("Salesforce %s: %s; retry %d of %d in %.2f s", label, failure.reason, attempt,
                        self.max_attempts - 1, delay)
            self._sleep(delay)

    def _failure(self, response: requests.Response, label: str) -> _Failure:
        """Classify an error answer: transient (returned) or final (raised)."""
        status = response.status_code
        code, message = _error_details(response)
        described = _described(status, code, message)
        retry_after = _retry_after(response.headers.get("Retry-After"))
        if status == 401:
            raise AuthenticationFailed(f"{label}: Salesforce refused the session ({described}); check the "
                                       "Salesforce connection's credentials", status=status, error_code=code,
                                       sf_message=message)
        if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            if "TotalRequests" in message:
                raise BudgetExhausted(f"{label}: the org's daily API allowance is used up ({described})",
                                      status=status, error_code=code, sf_message=message)
            # Concurrency / rate limits: refused before any work was done.
            return _Failure(described, True, retry_after, status, code, message)
        if status == 429:
            return _Failure(described, True, retry_after, status, code, message)
        if status == 503:  # Salesforce's own SERVER_UNAVAILABLE refuses before processing
            return _Failure(described, code == "SERVER_UNAVAILABLE", retry_after, status, code, message)
        if status in (500, 502, 504):
            return _Failure(described, False, retry_after, status, code, message)
        raise SalesforceError(f"{label}: {described}", status=status, error_code=code, sf_message=message)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max)
        return self._rng.uniform(0.0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))

    def _guard_reserve(self, label: str) -> None:
        """Refuse a request that would spend into the reserve, by the latest usage Salesforce reported.

        :meth:`check_budget` estimates a step's cost up front from what an earlier step saw;
        other integrations spend the same allowance meanwhile, so every request checks the
        ``Sforce-Limit-Info`` of the last answer again.
        """
        if self.reserve and self._usage is not None:
            used, maximum = self._usage
            if maximum - used <= self.reserve:
                raise BudgetExhausted(
                    f"{label}: Salesforce daily API allowance: {maximum - used} of {maximum} calls left, and "
                    f"{self.reserve} are kept in reserve for other integrations. The sync resumes when the "
                    "allowance recovers (rolling 24 hours) or the reserve is lowered.")

    def _note_usage(self, response: requests.Response) -> None:
        info = response.headers.get("Sforce-Limit-Info")
        match = re.search(r"(?:^|[^-])api-usage=(\d+)/(\d+)", info or "")
        if match is None:
            return
        self._usage = (int(match.group(1)), int(match.group(2)))


# -- helpers -----------------------------------------------------------------------------------
def _task_row(key: str, fields: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if not key:
        raise ValueError("every Task needs an idempotency key")
    given = fields.get(IDEMPOTENCY_FIELD)
    if given not in (None, key):
        raise ValueError(f"{IDEMPOTENCY_FIELD} of a record does not match its key")
    row = {name: value for name, value in fields.items() if name != "attributes"}
    row[IDEMPOTENCY_FIELD] = key
    return key, row


def _collection_results(keys: list[str], answers: Any, label: str) -> list[tuple[RecordResult, tuple[str, ...]]]:
    """sObject Collections answers (in request order) as results plus each error's field names."""
    if not isinstance(answers, list) or len(answers) != len(keys):
        raise SalesforceError(f"{label}: Salesforce answered {len(answers) if isinstance(answers, list) else 'no'} "
                              f"results for {len(keys)} records")
    results = []
    for key, answer in zip(keys, answers, strict=True):
        if answer.get("success"):
            results.append((RecordResult(key, str(answer["id"]), bool(answer.get("created", True))), ()))
        else:
            error = (answer.get("errors") or [{}])[0]
            results.append((RecordResult(key, None, False, str(error.get("statusCode") or "UNKNOWN_ERROR"),
                                         str(error.get("message") or "")),
                            tuple(str(f) for f in error.get("fields") or ())))
    return results


def _fields_in_message(message: str) -> list[str]:
    """Field names from "Unable to create/update fields: A, B. Please check ..."."""
    match = re.search(r"Unable to create/update fields: ([A-Za-z0-9_, ]+)", message)
    return [f.strip() for f in match.group(1).split(",") if f.strip()] if match else []


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _json_default(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} to Salesforce")


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, default=_json_default, ensure_ascii=False).encode("utf-8")


def _strip_attributes(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_attributes(v) for k, v in value.items() if k != "attributes"}
    return value


def _csv_value(value: Any) -> str:
    """A Bulk API 2.0 CSV cell: ``#N/A`` sets null (a blank cell would leave the field unchanged)."""
    if value is None:
        return "#N/A"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def _csv_line(values: Iterable[str]) -> bytes:
    buffer = io.StringIO()
    # Every value quoted (quotes doubled), so commas, quotes and line breaks inside values are safe.
    csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(list(values))
    return buffer.getvalue().encode("utf-8")


def _csv_jobs(rows: list[tuple[str, dict[str, Any]]], columns: list[str]) -> Iterator[list[tuple[str, bytes]]]:
    """CSV lines grouped into jobs that each stay under Bulk API 2.0's upload size."""
    header = len(_csv_line(columns))
    job: list[tuple[str, bytes]] = []
    size = header
    for key, fields in rows:
        line = _csv_line(_csv_value(fields[c]) if c in fields else "" for c in columns)
        if job and size + len(line) > BULK_MAX_UPLOAD_BYTES:
            yield job
            job, size = [], header
        job.append((key, line))
        size += len(line)
    if job:
        yield job


def _parse_bulk_error(text: str) -> tuple[str, str, tuple[str, ...]]:
    """``CODE:message:fields --`` → (code, message, fields)."""
    text = text.strip()
    if text.endswith("--"):
        text = text[:-2].rstrip()
    code, _, rest = text.partition(":")
    message, _, fields = rest.rpartition(":") if ":" in rest else (rest, "", "")
    names = tuple(f.strip() for f in fields.split(",") if re.fullmatch(r"\s*[A-Za-z][A-Za-z0-9_]*\s*", f))
    return (code.strip() or "UNKNOWN_ERROR"), message.strip(), names


def _title(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name or filename
    stem = PurePosixPath(name).stem
    return stem or name or "file"


def _error_details(response: requests.Response) -> tuple[str | None, str]:
    """(errorCode, message) from Salesforce's JSON error array; nothing from HTML pages."""
    try:
        body = response.json()
    except ValueError:
        return None, response.reason or ""
    return _error_fields(body, response.reason or "")


def _error_fields(body: Any, fallback: str = "") -> tuple[str | None, str]:
    """(errorCode, message) of a Salesforce error body (its array, or OAuth's object), values removed."""
    entry = body[0] if isinstance(body, list) and body else body
    if not isinstance(entry, dict):
        return None, fallback
    code = entry.get("errorCode") or entry.get("error")
    message = entry.get("message") or entry.get("error_description") or ""
    return (str(code) if code else None), without_values(str(message))[:1000]


def _described(status: int, code: str | None, message: str) -> str:
    return f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")


def _subrequest_error(sub: Mapping[str, Any], label: str) -> SalesforceError:
    """The error of one failed Composite subrequest (its body is Salesforce's error array)."""
    status = int(sub.get("httpStatusCode") or 500)
    code, message = _error_fields(sub.get("body"))
    return SalesforceError(f"{label}: {_described(status, code, message)}", status=status, error_code=code,
                           sf_message=message)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _never_sent(exc: Exception) -> bool:
    """Whether the request provably never reached Salesforce (no connection was made)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    import urllib3.exceptions as u3

    reason: Any = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the cause
    return isinstance(reason, (u3.NewConnectionError, u3.ConnectTimeoutError, u3.NameResolutionError))


def _about_key_field(error: SalesforceError) -> bool:
    return (error.status in (400, 404) and error.error_code in ("INVALID_FIELD", "NOT_FOUND", "INVALIDJOB")
            and IDEMPOTENCY_FIELD.lower() in str(error).lower()) or (
        error.error_code == "BULK_JOB_FAILED" and IDEMPOTENCY_FIELD.lower() in str(error).lower())


def _missing_key_field(detail: str) -> SetupProblem:
    return SetupProblem(missing_key_field_message(detail), error_code="MISSING_EXTERNAL_ID_FIELD")


__all__ = [
    "AuthenticationFailed",
    "BudgetExhausted",
    "SetupProblem",
    "RecordResult",
    "SalesforceCrm",
    "SalesforceError",
]
