"""Bulk API 2.0 for the sandbox: ingest jobs (insert/update/upsert/delete) and query jobs.

Jobs are processed synchronously and deterministically when the client marks the upload
complete (``PATCH {"state": "UploadComplete"}``); rows are applied in upload order through
the same validation as the REST API. ``OrgSettings.bulk_in_progress_polls`` makes the first
N job-info polls report ``InProgress`` so clients' polling loops are exercised.

Result files follow Salesforce's layout: every value quoted, ``sf__Id``/``sf__Created`` (or
``sf__Error`` formatted ``CODE:message:fields --``) followed by the uploaded columns.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandbox.salesforce import soql
from sandbox.salesforce.org import KEY_PREFIXES, RecordError, RequestError

if TYPE_CHECKING:
    from sandbox.salesforce.org import Org

DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
RECORDS_PER_BATCH = 10_000  # Bulk API 2.0 counts one batch per 10,000 records
MAX_UPLOAD_BYTES = 150 * 1024 * 1024


def _job_error(status: int, code: str, message: str) -> RequestError:
    return RequestError(status, code, message)


@dataclass
class IngestJob:
    id: str
    operation: str
    object: str
    created_by: str | None
    created_date: str
    api_version: str
    column_delimiter: str = "COMMA"
    line_ending: str = "LF"
    external_id_field: str | None = None
    state: str = "Open"
    system_modstamp: str = ""
    chunks: list[bytes] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    successful: list[list[str]] = field(default_factory=list)
    failed: list[list[str]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    processed: int = 0
    number_failed: int = 0
    polls_left: int = 0
    error_message: str | None = None
    processing_ms: int = 0
    is_query = False

    def info(self, full: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "operation": self.operation, "object": self.object, "createdById": self.created_by,
            "createdDate": self.created_date, "systemModstamp": self.system_modstamp or self.created_date,
            "state": self.state, "concurrencyMode": "Parallel", "contentType": "CSV",
            "apiVersion": float(self.api_version),
            "contentUrl": f"services/data/v{self.api_version}/jobs/ingest/{self.id}/batches",
            "lineEnding": self.line_ending, "columnDelimiter": self.column_delimiter,
        }
        if self.external_id_field:
            data["externalIdFieldName"] = self.external_id_field
        if full:
            data.update({
                "jobType": "V2Ingest", "numberRecordsProcessed": self.processed,
                "numberRecordsFailed": self.number_failed, "retries": 0, "totalProcessingTime": self.processing_ms,
                "apiActiveProcessingTime": self.processing_ms, "apexProcessingTime": 0,
            })
            if self.error_message:
                data["errorMessage"] = self.error_message
        return data


@dataclass
class QueryJob:
    id: str
    operation: str
    object: str
    query: str
    created_by: str | None
    created_date: str
    api_version: str
    column_delimiter: str = "COMMA"
    line_ending: str = "LF"
    state: str = "JobComplete"
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    is_query = True

    def info(self, full: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "operation": self.operation, "object": self.object, "createdById": self.created_by,
            "createdDate": self.created_date, "systemModstamp": self.created_date, "state": self.state,
            "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": float(self.api_version),
            "lineEnding": self.line_ending, "columnDelimiter": self.column_delimiter,
        }
        if full:
            data.update({"jobType": "V2Query", "numberRecordsProcessed": len(self.rows), "retries": 0,
                         "totalProcessingTime": 0, "isPkChunkingSupported": True})
        return data


# -- ingest ----------------------------------------------------------------------------------
def create_ingest_job(org: Org, spec: Any, user_id: str | None, version: str) -> IngestJob:
    if not isinstance(spec, dict):
        raise _job_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
    operation = spec.get("operation")
    if operation not in INGEST_OPERATIONS:
        raise _job_error(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
    obj = org.object(str(spec.get("object") or ""))
    if obj is None or not obj.createable:
        raise _job_error(400, "INVALIDJOB", f"InvalidJob : Invalid object: {spec.get('object')}")
    if spec.get("contentType", "CSV") != "CSV":
        raise _job_error(400, "INVALIDJOB", "InvalidJob : Invalid contentType: only CSV is supported")
    delimiter = spec.get("columnDelimiter", "COMMA")
    ending = spec.get("lineEnding", "LF")
    if delimiter not in DELIMITERS:
        raise _job_error(400, "INVALIDJOB", f"InvalidJob : Invalid columnDelimiter: {delimiter}")
    if ending not in LINE_ENDINGS:
        raise _job_error(400, "INVALIDJOB", f"InvalidJob : Invalid lineEnding: {ending}")
    external = spec.get("externalIdFieldName")
    if operation == "upsert":
        f = obj.field(external or "")
        if f is None or not (f.external_id or f.name == "Id"):
            raise _job_error(400, "INVALIDJOB",
                             f"InvalidJob : Field name provided, {external} does not match an External ID, Salesforce "
                             f"Id, or indexed field for {obj.name}")
        external = f.name
    job = IngestJob(id=org.new_id(KEY_PREFIXES["BulkJob"]), operation=operation, object=obj.name,
                    created_by=user_id, created_date=org.now_text(), api_version=version,
                    column_delimiter=delimiter, line_ending=ending,
                    external_id_field=external if operation == "upsert" else None)
    with org.lock:
        org.jobs[job.id] = job
    return job


def upload(org: Org, job: IngestJob, body: bytes) -> None:
    with org.lock:
        if job.state != "Open":
            raise _job_error(409, "INVALIDJOBSTATE", f"Job {job.id} is not Open (state: {job.state})")
        if sum(len(c) for c in job.chunks) + len(body) > MAX_UPLOAD_BYTES:
            raise _job_error(400, "INVALIDBATCH", "InvalidBatch : Upload exceeds the 150 MB limit")
        job.chunks.append(body)
        job.system_modstamp = org.now_text()


def set_state(org: Org, job: IngestJob, state: str) -> dict[str, Any]:
    with org.lock:
        if state == "UploadComplete":
            if job.state != "Open":
                raise _job_error(409, "INVALIDJOBSTATE", f"Job {job.id} is not Open (state: {job.state})")
            job.state = "UploadComplete"
            job.system_modstamp = org.now_text()
            answer = job.info(full=False)
            _process(org, job)
            return answer
        if state == "Aborted":
            if job.state in ("JobComplete", "Failed", "Aborted"):
                raise _job_error(409, "INVALIDJOBSTATE", f"Job {job.id} is already {job.state}")
            job.state = "Aborted"
            job.polls_left = 0
            job.system_modstamp = org.now_text()
            return job.info(full=False)
        raise _job_error(400, "INVALIDJOBSTATE", f"Invalid state change to {state}")


def poll(org: Org, job: IngestJob | QueryJob) -> dict[str, Any]:
    with org.lock:
        if isinstance(job, IngestJob) and job.state in ("UploadComplete", "InProgress") and job.polls_left >= 0:
            if job.polls_left > 0:
                job.polls_left -= 1
                job.state = "InProgress"
            else:
                job.state = "Failed" if job.error_message else "JobComplete"
        return job.info()


def _sf_error(error: RecordError | RequestError) -> str:
    if isinstance(error, RecordError):
        return f"{error.status_code}:{error.message}:{','.join(error.fields)} --"
    return f"{error.error_code}:{error.message}: --"


def _process(org: Org, job: IngestJob) -> None:
    delimiter = DELIMITERS[job.column_delimiter]
    text = b"".join(job.chunks).decode("utf-8-sig", errors="replace")
    job.polls_left = org.settings.bulk_in_progress_polls
    first_line_end = text.find("\n")
    if first_line_end > 0:
        crlf = text[first_line_end - 1] == "\r"
        if crlf != (job.line_ending == "CRLF"):
            job.error_message = (f"ClientInputError : LineEnding is invalid on user data. Current LineEnding setting "
                                 f"is {job.line_ending}")
            return
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    rows = [r for r in rows if r != []]
    if not rows:
        job.error_message = "InvalidBatch : No data uploaded"
        return
    header, data = rows[0], rows[1:]
    job.header = header
    obj = org.schema[job.object]
    canonical: list[str] = []
    for column in header:
        f = obj.field(column.strip())
        if f is None:
            job.error_message = f"InvalidBatch : Field name not found : {column}"
            return
        canonical.append(f.name)
    if len(set(canonical)) != len(canonical):
        job.error_message = "InvalidBatch : Duplicate field name in the header row"
        return
    if job.operation in ("update", "delete", "hardDelete") and "Id" not in canonical:
        job.error_message = "InvalidBatch : Field name not found : Id"
        return
    if job.operation == "upsert" and job.external_id_field not in canonical:
        job.error_message = f"InvalidBatch : Field name not found : {job.external_id_field}"
        return
    org.bulk_batches_used += max(1, math.ceil(len(data) / RECORDS_PER_BATCH))
    user = job.created_by
    for start in range(0, len(data), 200):
        chunk = data[start:start + 200]
        duplicate_keys: set[str] = set()
        if job.operation == "upsert":
            key_index = canonical.index(job.external_id_field or "Id")
            seen: dict[str, int] = {}
            for row in chunk:
                if key_index < len(row) and row[key_index]:
                    key = row[key_index].lower()
                    seen[key] = seen.get(key, 0) + 1
            duplicate_keys = {k for k, n in seen.items() if n > 1}
        for row in chunk:
            job.processed += 1
            if len(row) != len(header):
                job.failed.append(["", f"INVALID_ROW:Row has {len(row)} columns but the header has {len(header)}: --",
                                   *row])
                job.number_failed += 1
                continue
            values = dict(zip(canonical, row, strict=True))
            record_id = values.get("Id", "")
            try:
                if job.operation == "insert":
                    new_id, created = org.insert(job.object, values, user_id=user, csv=True), True
                elif job.operation == "update":
                    new_id, created = org.update(job.object, record_id, values, user_id=user, csv=True), False
                elif job.operation == "upsert":
                    ext = job.external_id_field or "Id"
                    key = values.get(ext, "")
                    if key.lower() in duplicate_keys:
                        raise RecordError("DUPLICATE_EXTERNAL_ID",
                                          f"Duplicate external id specified: {key}", [ext])
                    new_id, created = org.upsert(job.object, ext, key, values, user_id=user, csv=True)
                else:
                    new_id, created = org.delete(job.object, record_id), False
            except (RecordError, RequestError) as error:
                job.failed.append([record_id if job.operation != "insert" else "", _sf_error(error), *row])
                job.number_failed += 1
                continue
            job.successful.append([new_id, "true" if created else "false", *row])
    job.processing_ms = max(1, len(data) // 100)


def results(job: IngestJob, kind: str) -> str:
    kind = kind.lower()
    ending = LINE_ENDINGS[job.line_ending]
    delimiter = DELIMITERS[job.column_delimiter]
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=ending, quoting=csv.QUOTE_ALL)
    if kind == "successfulresults":
        writer.writerow(["sf__Id", "sf__Created", *job.header])
        writer.writerows(job.successful)
    elif kind == "failedresults":
        writer.writerow(["sf__Id", "sf__Error", *job.header])
        writer.writerows(job.failed)
    else:
        writer.writerow(job.header)
        writer.writerows(job.unprocessed)
    return buffer.getvalue()


# -- query -----------------------------------------------------------------------------------
def create_query_job(org: Org, spec: Any, user_id: str | None, version: str) -> QueryJob:
    if not isinstance(spec, dict):
        raise _job_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
    operation = spec.get("operation", "query")
    if operation not in ("query", "queryAll"):
        raise _job_error(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
    text = spec.get("query") or ""
    try:
        parsed = soql.parse(text, org)
    except soql.SoqlError as error:
        raise _job_error(400, "INVALIDJOB", f"InvalidJob : {error.error_code}: {error.message}") from None
    if parsed.count_only or parsed.aggregate:
        raise _job_error(400, "INVALIDJOB", "InvalidJob : Aggregate queries are not supported by Bulk API 2.0")
    result = soql.execute(parsed, org, include_deleted=operation == "queryAll", version=version)
    header = [ref.label for ref in parsed.fields]
    rows = []
    for record in result.records:
        row = []
        for ref in parsed.fields:
            if len(ref.path) == 1:
                value = record.get(ref.path[0])
            else:
                nested = record.get(ref.path[0])
                value = nested.get(ref.path[1]) if isinstance(nested, dict) else None
            row.append("" if value is None else ("true" if value is True else "false" if value is False
                                                 else str(value)))
        rows.append(row)
    job = QueryJob(id=org.new_id(KEY_PREFIXES["BulkJob"]), operation=operation, object=parsed.object, query=text,
                   created_by=user_id, created_date=org.now_text(), api_version=version,
                   column_delimiter=spec.get("columnDelimiter", "COMMA"), line_ending=spec.get("lineEnding", "LF"),
                   header=header, rows=rows)
    with org.lock:
        org.jobs[job.id] = job
    return job


def query_results(job: QueryJob, locator: str | None, max_records: int | None) -> tuple[str, str, int]:
    """(csv text, next locator or 'null', number of records) for one page of a query job."""
    start = int(locator) if locator and locator.isdigit() else 0
    size = max_records if max_records and max_records > 0 else 50_000
    page = job.rows[start:start + size]
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=DELIMITERS.get(job.column_delimiter, ","),
                        lineterminator=LINE_ENDINGS.get(job.line_ending, "\n"), quoting=csv.QUOTE_ALL)
    writer.writerow(job.header)
    writer.writerows(page)
    next_start = start + len(page)
    return buffer.getvalue(), (str(next_start) if next_start < len(job.rows) else "null"), len(page)
