"""The sandbox's in-memory Salesforce org: records, Ids, validation, API allowance.

Everything here is thread-safe (one re-entrant lock) and independent of HTTP, so tests and
demos can seed and inspect the org directly (``org.records("Task")``,
``org.query_records("Contact", lambda r: ...)``) while the server serves the same state.

Validation follows Salesforce's rules and error codes for the fields modelled in
:mod:`sandbox.salesforce.schema`: ``REQUIRED_FIELD_MISSING``, ``STRING_TOO_LONG``,
``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``, ``INVALID_EMAIL_ADDRESS``, ``MALFORMED_ID``,
``FIELD_INTEGRITY_EXCEPTION``, ``INVALID_CROSS_REFERENCE_KEY``, ``INACTIVE_OWNER_OR_USER``,
``DUPLICATE_VALUE``, ``INVALID_FIELD_FOR_INSERT_UPDATE`` - plus per-record fault rules that act
like a validation rule or trigger (``FIELD_CUSTOM_VALIDATION_EXCEPTION`` by default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from sandbox.salesforce.schema import (
    KEY_PREFIXES,
    NAME_FIELDS,
    TASK_CLOSED_STATUSES,
    FieldDef,
    ObjectDef,
    build_schema,
)

DEFAULT_API_VERSION = "59.0"
MAX_COLLECTION_RECORDS = 200
MAX_TASK_WHO_CONTACTS = 50
JSON_BLOB_LIMIT = int(37.5 * 1024 * 1024)  # documented limit for base64 blobs in a non-multipart body

_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_SECONDARY = {"TaskRelation": ("TaskId",), "ContentDocumentLink": ("LinkedEntityId", "ContentDocumentId"),
              "ContentVersion": ("ContentDocumentId",)}
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PODS = ["5g", "8d", "Hs", "Kx", "3W", "7q"]


# -- Ids ------------------------------------------------------------------------------
_UPPER_BITS = str.maketrans({c: ("1" if "A" <= c <= "Z" else "0") for c in
                             "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"})


@lru_cache(maxsize=1 << 16)
def to18(id15: str) -> str:
    """The 18-character, case-insensitive-safe form of a 15-character Salesforce Id."""
    bits = id15.translate(_UPPER_BITS)
    return id15 + "".join(_SUFFIX_CHARS[int(bits[start:start + 5][::-1], 2)] for start in (0, 5, 10))


def is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_ID_RE.match(value))


def normalize_id(value: str) -> str:
    return to18(value[:15])


def _b62(number: int, width: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _B62[rest] + digits
    return digits.rjust(width, "0")


# -- time -----------------------------------------------------------------------------
def format_datetime(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> datetime:
    value = text.strip().replace("Z", "+00:00")
    if re.match(r".*[+-]\d{4}$", value):  # +0000 -> +00:00
        value = value[:-2] + ":" + value[-2:]
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def utf16_len(text: str) -> int:
    """Salesforce measures text length in UTF-16 code units (an emoji counts as 2)."""
    return len(text.encode("utf-16-le")) // 2


# -- errors ---------------------------------------------------------------------------
@dataclass
class RecordError(Exception):
    status_code: str
    message: str
    fields: list[str] = dc_field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """sObject Collections / SaveResult shape."""
        return {"statusCode": self.status_code, "message": self.message, "fields": list(self.fields)}

    def to_rest(self) -> dict[str, Any]:
        """Single-record REST error shape."""
        return {"message": self.message, "errorCode": self.status_code, "fields": list(self.fields)}


class RequestError(Exception):
    """A whole-request failure: HTTP status plus Salesforce's ``[{message, errorCode}]`` array."""

    def __init__(self, status: int, error_code: str, message: str, fields: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            entry["fields"] = self.fields
        return [entry]


# -- per-record fault rules ------------------------------------------------------------
@dataclass
class RecordFaultRule:
    """Reject matching records like a validation rule / trigger would."""

    object: str
    when: Callable[[dict[str, Any]], bool] | None = None
    field: str | None = None
    contains: str | None = None
    equals: Any = None
    status_code: str = "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    message: str = "Record rejected by the sandbox's fault rule"
    fields: list[str] = dc_field(default_factory=list)
    operations: tuple[str, ...] = ("insert", "update", "upsert")
    times: int | None = None
    fired: int = 0

    def matches(self, object_name: str, operation: str, record: dict[str, Any]) -> bool:
        if object_name.lower() != self.object.lower() or operation not in self.operations:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        if self.when is not None and not self.when(record):
            return False
        if self.field is not None:
            value = _get_ci(record, self.field)
            if self.contains is not None and (value is None or self.contains not in str(value)):
                return False
            if self.equals is not None and value != self.equals:
                return False
            if self.contains is None and self.equals is None and value is None:
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["when"] = None if self.when is None else getattr(self.when, "__name__", "callable")
        data["operations"] = list(self.operations)
        return data


def _get_ci(record: dict[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    lower = name.lower()
    for key, value in record.items():
        if key.lower() == lower:
            return value
    return None


# -- settings ---------------------------------------------------------------------------
@dataclass
class OrgSettings:
    name: str = "Email Sync Sandbox"
    org_id: str | None = None
    shared_activities: bool = True
    has_external_id_field: bool = True
    external_id_case_sensitive: bool = False
    daily_api_max: int = 15000
    max_file_bytes: int = 2 * 1024 * 1024 * 1024  # ContentVersion limit for multipart uploads
    time_zone: str = "America/Los_Angeles"
    alternate_email_fields: list[str] = dc_field(default_factory=lambda: ["Secondary_Email__c"])
    task_types: list[str] | None = None
    session_id: str | None = None
    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"
    query_batch_size: int = 2000
    bulk_in_progress_polls: int = 0
    max_uri_bytes: int = 16384
    min_api_version: float = 31.0
    max_api_version: float = 66.0
    is_sandbox: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrgSettings:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown org settings: {sorted(unknown)}")
        return cls(**data)


class Org:
    """A thread-safe in-memory Salesforce org."""

    def __init__(self, settings: OrgSettings | None = None, *, seed: int = 0) -> None:
        self.lock = threading.RLock()
        self.settings = settings or OrgSettings()
        self.schema: dict[str, ObjectDef] = build_schema(
            has_external_id_field=self.settings.has_external_id_field,
            alternate_email_fields=self.settings.alternate_email_fields,
            task_types=self.settings.task_types,
            shared_activities=self.settings.shared_activities,
            external_id_case_sensitive=self.settings.external_id_case_sensitive,
            time_zones=[self.settings.time_zone],
        )
        self._schema_lower = {name.lower(): obj for name, obj in self.schema.items()}
        self._pod = _PODS[seed % len(_PODS)]
        self._counters: dict[str, int] = {}
        self._data: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self._prefix_to_object = {obj.key_prefix: name for name, obj in self.schema.items()
                                  if name not in ("TaskWhoRelation",)}
        # unique / external-id indexes: (object, field) -> normalized value -> record id
        self._unique: dict[tuple[str, str], dict[str, str]] = {}
        for obj in self.schema.values():
            for f in obj.fields.values():
                if f.unique:
                    self._unique[(obj.name, f.name)] = {}
        self._files: dict[str, bytes] = {}
        self._secondary: dict[tuple[str, str], dict[str, dict[str, None]]] = {}
        self.credentials: dict[str, tuple[str, str]] = {}  # username (lower) -> (password, security token)
        self._undo: list[Callable[[], None]] | None = None
        self.clock: Callable[[], float] = time.time
        self._now_cache: tuple[int, str] = (-1, "")
        self.api_used = 0
        self.api_rejected = 0
        self.bulk_batches_used = 0
        self.sessions: dict[str, str] = {}  # session id -> user id
        self.record_faults: list[RecordFaultRule] = []
        self.cursors: OrderedDict[str, Any] = OrderedDict()
        self.jobs: dict[str, Any] = {}  # Bulk API 2.0 jobs (see bulk.py)
        self.org_id = self.settings.org_id or to18("00D" + self._pod + "0" + _b62(1 + seed, 9))
        self._data["Organization"][self.org_id] = {
            "Id": self.org_id, "Name": self.settings.name, "IsSandbox": self.settings.is_sandbox,
            "TimeZoneSidKey": self.settings.time_zone, "OrganizationType": "Enterprise Edition",
            "InstanceName": "SBX1", "LanguageLocaleKey": "en_US", "IsDeleted": False,
            **self._audit_values(None),
        }
        self.default_user_id: str | None = None
        self.session_id = self.settings.session_id or ("00D!" + secrets.token_urlsafe(32))

    # -- schema access -------------------------------------------------------------------
    def object(self, name: str) -> ObjectDef | None:
        return self._schema_lower.get(name.lower())

    def object_for_id(self, record_id: str) -> str | None:
        return self._prefix_to_object.get(record_id[:3])

    # -- ids / time --------------------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        with self.lock:
            self._counters[prefix] = self._counters.get(prefix, 0) + 1
            return to18(prefix + self._pod + "0" + _b62(self._counters[prefix], 9))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def now_text(self) -> str:
        millis = int(self.clock() * 1000)
        cached = self._now_cache
        if cached[0] != millis:
            cached = self._now_cache = (millis, format_datetime(datetime.fromtimestamp(millis / 1000, UTC)))
        return cached[1]

    def today(self) -> date:
        from zoneinfo import ZoneInfo

        return self.now().astimezone(ZoneInfo(self.settings.time_zone)).date()

    def _audit_values(self, user_id: str | None) -> dict[str, Any]:
        stamp = self.now_text()
        return {"CreatedDate": stamp, "LastModifiedDate": stamp, "SystemModstamp": stamp,
                "CreatedById": user_id, "LastModifiedById": user_id}

    # -- sessions & API allowance ----------------------------------------------------------
    def add_session(self, user_id: str | None = None, token: str | None = None) -> str:
        with self.lock:
            token = token or ("00D!" + secrets.token_urlsafe(32))
            self.sessions[token] = user_id or self.default_user_id or ""
            return token

    def user_for_session(self, token: str) -> str | None:
        with self.lock:
            return self.sessions.get(token)

    def expire_sessions(self) -> None:
        """Invalidate every session id (clients must log in again)."""
        with self.lock:
            self.sessions.clear()

    def consume_api_call(self) -> bool:
        """Count one call against the daily allowance; False (not counted) when exhausted."""
        with self.lock:
            if self.api_used >= self.settings.daily_api_max:
                self.api_rejected += 1
                return False
            self.api_used += 1
            return True

    @property
    def api_remaining(self) -> int:
        return max(0, self.settings.daily_api_max - self.api_used)

    def limit_info(self) -> str:
        return f"api-usage={self.api_used}/{self.settings.daily_api_max}"

    def limits(self) -> dict[str, Any]:
        s = self.settings

        def lim(maximum: int, remaining: int) -> dict[str, int]:
            return {"Max": maximum, "Remaining": max(0, remaining)}

        file_mb = sum(len(b) for b in self._files.values()) // (1024 * 1024)
        records = sum(len(v) for v in self._data.values())
        return {
            "ConcurrentAsyncGetReportInstances": lim(200, 200),
            "ConcurrentSyncReportRuns": lim(20, 20),
            "DailyApiRequests": lim(s.daily_api_max, s.daily_api_max - self.api_used),
            "DailyAsyncApexExecutions": lim(250000, 250000),
            "DailyBulkApiBatches": lim(15000, 15000 - self.bulk_batches_used),
            "DailyBulkV2QueryFileStorageMB": lim(976562, 976562),
            "DailyBulkV2QueryJobs": lim(10000, 10000 - sum(1 for j in self.jobs.values() if j.is_query)),
            "DataStorageMB": lim(1024, 1024 - records * 2 // 1024),
            "FileStorageMB": lim(20480, 20480 - file_mb),
            "HourlyODataCallout": lim(10000, 10000),
            "SingleEmail": lim(5000, 5000),
        }

    # -- reading -----------------------------------------------------------------------------
    def records(self, object_name: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Copies of an object's records (for assertions and reports)."""
        with self.lock:
            return [dict(r) for r in self._iter_records(object_name, include_deleted)]

    def query_records(self, object_name: str, predicate: Callable[[dict[str, Any]], bool] | None = None,
                      *, include_deleted: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self._iter_records(object_name, include_deleted)
                    if predicate is None or predicate(r)]

    def count(self, object_name: str) -> int:
        with self.lock:
            return sum(1 for _ in self._iter_records(object_name, False))

    def _iter_records(self, object_name: str, include_deleted: bool) -> Iterator[dict[str, Any]]:
        obj = self.object(object_name)
        if obj is None:
            raise KeyError(object_name)
        if obj.name == "TaskWhoRelation":
            for rel in self._data["TaskRelation"].values():
                if rel.get("IsWhat"):
                    continue
                yield {**rel, "Type": self.object_for_id(rel["RelationId"])}
            return
        for record in self._data[obj.name].values():
            if include_deleted or not record.get("IsDeleted"):
                yield record

    def get(self, record_id: str, *, include_deleted: bool = False) -> tuple[str, dict[str, Any]] | None:
        """(object name, record) for an Id of any object, or None."""
        if not is_id(record_id):
            return None
        record_id = normalize_id(record_id)
        with self.lock:
            object_name = self.object_for_id(record_id)
            if object_name is None:
                return None
            record = self._data[object_name].get(record_id)
            if record is None or (record.get("IsDeleted") and not include_deleted):
                return None
            return object_name, record

    def task_relations(self, task_id: str) -> list[dict[str, Any]]:
        """TaskRelation rows of a Task (Who relations have IsWhat=False); empty without Shared Activities."""
        with self.lock:
            return [dict(r) for r in self._relations_of(normalize_id(task_id))]

    def files_for(self, entity_id: str) -> list[dict[str, Any]]:
        """Files linked to a record: document id, latest version id, title, path, size, share type."""
        with self.lock:
            out = []
            for link in self._related("ContentDocumentLink", "LinkedEntityId", normalize_id(entity_id)):
                document = self._data["ContentDocument"].get(link["ContentDocumentId"]) or {}
                version = self._data["ContentVersion"].get(document.get("LatestPublishedVersionId") or "") or {}
                out.append({"ContentDocumentId": link["ContentDocumentId"], "ContentVersionId": version.get("Id"),
                            "Title": document.get("Title"), "PathOnClient": version.get("PathOnClient"),
                            "ContentSize": document.get("ContentSize"), "ShareType": link.get("ShareType")})
            return out

    def file_bytes(self, content_version_id: str) -> bytes | None:
        with self.lock:
            return self._files.get(normalize_id(content_version_id))

    def find_by_external_id(self, object_name: str, field_name: str, value: Any) -> str | None:
        with self.lock:
            index = self._unique.get((object_name, field_name))
            if index is None:
                return None
            return index.get(self._unique_key(object_name, field_name, value))

    def _unique_key(self, object_name: str, field_name: str, value: Any) -> str:
        f = self.schema[object_name].fields[field_name]
        text = str(value)
        return text if f.case_sensitive else text.lower()

    # -- transactions ------------------------------------------------------------------------
    @contextmanager
    def atomic(self) -> Iterator[Callable[[], None]]:
        """Group writes; call the yielded function to roll them all back (allOrNone)."""
        with self.lock:
            outer = self._undo
            undo: list[Callable[[], None]] = []
            self._undo = undo

            def rollback() -> None:
                while undo:
                    undo.pop()()

            try:
                yield rollback
            except BaseException:
                rollback()
                raise
            finally:
                self._undo = outer
                if outer is not None:
                    outer.extend(undo)

    def _log(self, inverse: Callable[[], None]) -> None:
        if self._undo is not None:
            self._undo.append(inverse)

    def _put(self, object_name: str, record_id: str, record: dict[str, Any] | None) -> None:
        table = self._data[object_name]
        old = table.get(record_id)
        if record is None:
            table.pop(record_id, None)
        else:
            table[record_id] = record
        self._reindex(object_name, old, record)

        def inverse() -> None:
            current = table.get(record_id)
            if old is None:
                table.pop(record_id, None)
            else:
                table[record_id] = old
            self._reindex(object_name, current, old)

        self._log(inverse)

    def _reindex(self, object_name: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Secondary indexes: relations by task, links by entity and by document."""
        keys = _SECONDARY.get(object_name)
        if not keys:
            return
        for key in keys:
            index = self._secondary.setdefault((object_name, key), {})
            if old is not None:
                bucket = index.get(old.get(key))
                if bucket is not None:
                    bucket.pop(old["Id"], None)
            if new is not None:
                index.setdefault(new.get(key), {})[new["Id"]] = None

    def _related(self, object_name: str, key: str, value: str) -> list[dict[str, Any]]:
        bucket = self._secondary.get((object_name, key), {}).get(value, {})
        table = self._data[object_name]
        return [table[i] for i in bucket if i in table]

    def _index_set(self, key: tuple[str, str], value: str, record_id: str | None) -> None:
        index = self._unique[key]
        old = index.get(value)
        if record_id is None:
            index.pop(value, None)
        else:
            index[value] = record_id

        def inverse() -> None:
            if old is None:
                index.pop(value, None)
            else:
                index[value] = old

        self._log(inverse)

    def _put_file(self, record_id: str, data: bytes) -> None:
        self._files[record_id] = data
        self._log(lambda: self._files.pop(record_id, None))

    # -- fault rules ---------------------------------------------------------------------------
    def add_record_fault(self, rule: RecordFaultRule) -> RecordFaultRule:
        with self.lock:
            self.record_faults.append(rule)
            return rule

    def clear_record_faults(self) -> None:
        with self.lock:
            self.record_faults.clear()

    def _check_faults(self, object_name: str, operation: str, record: dict[str, Any]) -> None:
        for rule in self.record_faults:
            if rule.matches(object_name, operation, record):
                rule.fired += 1
                raise RecordError(rule.status_code, rule.message, list(rule.fields))

    # -- validation ----------------------------------------------------------------------------
    def _coerce(self, f: FieldDef, value: Any, csv: bool) -> Any:
        if value is None:
            return None
        bad = RecordError("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{f.label}: value not of required type: {value}",
                          [f.name])
        t = f.type
        if f.is_string or f.is_id or t == "base64":
            if isinstance(value, bool) or isinstance(value, (dict, list)):
                raise bad
            text = str(value)
            return text if text != "" else None
        if t == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            raise bad
        if t == "date":
            if not isinstance(value, str) or value == "":
                if value == "":
                    return None
                raise bad
            try:
                return date.fromisoformat(value[:10]).isoformat()
            except ValueError:
                raise bad from None
        if t == "datetime":
            if not isinstance(value, str):
                raise bad
            if value == "":
                return None
            try:
                return format_datetime(parse_datetime(value))
            except ValueError:
                raise bad from None
        if t in ("int", "double"):
            if isinstance(value, bool):
                raise bad
            try:
                number = float(value) if t == "double" else int(float(value))
            except (TypeError, ValueError):
                if csv and value == "":
                    return None
                raise bad from None
            return number
        return value

    def _clean(self, obj: ObjectDef, data: dict[str, Any], *, mode: str, csv: bool = False,
               skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Map input keys to fields and coerce values; raises RequestError for unknown fields."""
        clean: dict[str, Any] = {}
        for key, value in data.items():
            if key == "attributes" or key in skip:
                continue
            f = obj.field(key)
            if f is None:
                raise RequestError(400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}")
            if csv:
                if value == "":
                    continue  # blank cell: leave as is / null on insert
                if value == "#N/A":
                    value = None
            allowed = f.createable if mode == "insert" else f.updateable
            if not allowed:
                if f.name == "Id":
                    continue
                raise RecordError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {f.name}. Please check the security settings of this field "
                    "and verify that it is read/write for your profile or permission set.", [f.name])
            clean[f.name] = self._coerce(f, value, csv)
        return clean

    def _validate(self, obj: ObjectDef, merged: dict[str, Any], changed: dict[str, Any], *, record_id: str | None,
                  operation: str) -> None:
        missing = [name for name in obj.required
                   if merged.get(name) is None and (record_id is None or name in changed)]
        if missing:
            raise RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                              missing)
        for name, value in changed.items():
            f = obj.fields[name]
            if value is None:
                if not f.nillable and not (f.defaulted_on_create and record_id is None):
                    if f.picklist and f.restricted_picklist:
                        raise RecordError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                          f"{f.label}: bad value for restricted picklist field: null", [f.name])
                    raise RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{f.name}]", [f.name])
                continue
            if (f.is_string or f.type == "textarea") and f.length and utf16_len(value) > f.length:
                shown = value if len(value) <= 255 else value[:255] + "..."
                raise RecordError("STRING_TOO_LONG",
                                  f"{f.label}: data value too large: {shown} (max length={f.length})", [f.name])
            if f.picklist is not None and f.restricted_picklist and value not in f.picklist:
                raise RecordError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                  f"{f.label}: bad value for restricted picklist field: {value}", [f.name])
            if f.type == "email" and not _EMAIL_RE.match(value):
                raise RecordError("INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {value}", [f.name])
            if f.type == "reference":
                changed[name] = merged[name] = self._check_reference(obj, f, value)
        for (object_name, field_name), index in self._unique.items():
            if object_name != obj.name or changed.get(field_name) is None:
                continue
            other = index.get(self._unique_key(object_name, field_name, changed[field_name]))
            if other is not None and other != record_id:
                raise RecordError("DUPLICATE_VALUE",
                                  f"duplicate value found: {field_name} duplicates value on record with id: {other}",
                                  [field_name])
        self._check_faults(obj.name, operation, merged)

    def _check_reference(self, obj: ObjectDef, f: FieldDef, value: str) -> str:
        if not is_id(value):
            raise RecordError("MALFORMED_ID", f"{f.label}: id value of incorrect type: {value}", [f.name])
        value = normalize_id(value)
        target = self.object_for_id(value)
        if target is None or target not in f.reference_to:
            raise RecordError("FIELD_INTEGRITY_EXCEPTION", f"{f.label}: id value of incorrect type: {value}",
                              [f.name])
        record = self._data[target].get(value)
        if record is None or record.get("IsDeleted"):
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        if f.name == "OwnerId" and target == "User" and not record.get("IsActive", True):
            raise RecordError("INACTIVE_OWNER_OR_USER",
                              f"operation performed with inactive user [{value}] as owner of {obj.name.lower()}", [])
        return value

    # -- writing -------------------------------------------------------------------------------
    def insert(self, object_name: str, data: dict[str, Any], *, user_id: str | None = None, csv: bool = False,
               blob: bytes | None = None, operation: str = "insert", allow_audit: bool = False,
               fixed_id: str | None = None) -> str:
        """Create a record; returns its Id or raises RecordError / RequestError."""
        with self.lock:
            obj = self._writable(object_name, "create")
            user_id = user_id or self.default_user_id
            audit: dict[str, Any] = {}
            if allow_audit:  # seeding may set audit fields ("Set Audit Fields upon Record Creation")
                for name in ("CreatedDate", "LastModifiedDate", "CreatedById"):
                    if data.get(name) is not None:
                        audit[name] = data[name]
                data = {k: v for k, v in data.items() if k not in audit}
                if "CreatedDate" in audit:
                    audit["CreatedDate"] = format_datetime(parse_datetime(audit["CreatedDate"]))
                    audit.setdefault("LastModifiedDate", audit["CreatedDate"])
            changed = self._clean(obj, data, mode="insert", csv=csv)
            merged: dict[str, Any] = dict(obj.defaults)
            if "OwnerId" in obj.fields and changed.get("OwnerId") is None:
                merged["OwnerId"] = user_id
            merged.update({k: v for k, v in changed.items() if v is not None or k not in merged})
            if obj.name == "ContentVersion":
                blob = self._content_blob(merged, changed, blob)
            validate = {k: v for k, v in merged.items() if k in changed or k == "OwnerId" or k in obj.picklists}
            self._validate(obj, merged, validate, record_id=None, operation=operation)
            merged.update(validate)
            special = getattr(self, f"_before_insert_{obj.name}", None)
            if special is not None:
                special(merged)
            if fixed_id is not None:
                if not is_id(fixed_id) or fixed_id[:3] != obj.key_prefix:
                    raise ValueError(f"{fixed_id!r} is not a {obj.name} Id (prefix {obj.key_prefix})")
                record_id = normalize_id(fixed_id)
                if record_id in self._data[obj.name]:
                    raise ValueError(f"duplicate Id {record_id}")
            else:
                record_id = self.new_id(obj.key_prefix)
            record = {"Id": record_id, "IsDeleted": False, **self._audit_values(user_id), **audit, **merged}
            if "LastModifiedDate" in audit or "CreatedDate" in audit:
                record["SystemModstamp"] = record["LastModifiedDate"]
            self._compute(obj.name, record)
            self._put(obj.name, record_id, record)
            self._index_record(obj.name, record)
            after = getattr(self, f"_after_insert_{obj.name}", None)
            if after is not None:
                after(record, blob, user_id)
            return record_id

    def update(self, object_name: str, record_id: str, data: dict[str, Any], *, user_id: str | None = None,
               csv: bool = False, operation: str = "update") -> str:
        with self.lock:
            obj = self._writable(object_name, "update")
            found = self.get(record_id) if is_id(record_id) else None
            if found is None or found[0] != obj.name:
                if is_id(record_id) and self.get(record_id, include_deleted=True):
                    raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
                raise RecordError("NOT_FOUND", "The requested resource does not exist", [])
            existing = found[1]
            changed = self._clean(obj, data, mode="update", csv=csv, skip=("Id",))
            merged = {**existing, **changed}
            self._validate(obj, merged, changed, record_id=existing["Id"], operation=operation)
            merged.update(changed)
            merged["LastModifiedDate"] = merged["SystemModstamp"] = self.now_text()
            merged["LastModifiedById"] = user_id or self.default_user_id
            self._compute(obj.name, merged)
            self._unindex_record(obj.name, existing)
            self._put(obj.name, existing["Id"], merged)
            self._index_record(obj.name, merged)
            after = getattr(self, f"_after_update_{obj.name}", None)
            if after is not None:
                after(existing, merged)
            return existing["Id"]

    def upsert(self, object_name: str, external_field: str, value: Any, data: dict[str, Any], *,
               user_id: str | None = None, csv: bool = False) -> tuple[str, bool]:
        """Insert or update by external id; returns (id, created)."""
        with self.lock:
            obj = self._writable(object_name, "create")
            f = obj.field(external_field)
            if f is None or not (f.external_id or f.name == "Id" or f.id_lookup and f.unique):
                raise RequestError(400, "NOT_FOUND" if f is None else "INVALID_FIELD",
                                   f"Provided external ID field does not exist or is not accessible: {external_field}"
                                   if f is None else
                                   f"Field name provided, {f.name} is not an External ID or indexed field for "
                                   f"{obj.name}")
            if value is None or value == "":
                raise RecordError("MISSING_ARGUMENT", f"{f.name} not specified", [])
            body_value = _get_ci(data, f.name)
            if body_value not in (None, "") and str(body_value) != str(value) and not csv:
                raise RequestError(400, "INVALID_FIELD",
                                   f"The value of the external ID field in the body doesn't match the value in the "
                                   f"URL: {body_value} != {value}")
            if f.name == "Id":
                existing_id = normalize_id(value) if is_id(value) and self.get(value) else None
            else:
                existing_id = self.find_by_external_id(obj.name, f.name, value)
            if existing_id is not None:
                payload = {k: v for k, v in data.items() if k.lower() != f.name.lower()}
                return self.update(obj.name, existing_id, payload, user_id=user_id, csv=csv,
                                   operation="upsert"), False
            payload = {k: v for k, v in data.items() if k.lower() != f.name.lower()}
            if f.name != "Id":
                payload[f.name] = value
            return self.insert(obj.name, payload, user_id=user_id, csv=csv, operation="upsert"), True

    def delete(self, object_name: str | None, record_id: str) -> str:
        with self.lock:
            found = self.get(record_id) if is_id(record_id) else None
            if found is None or (object_name is not None and found[0].lower() != object_name.lower()):
                if is_id(record_id) and self.get(record_id, include_deleted=True):
                    raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
                raise RecordError("INVALID_CROSS_REFERENCE_KEY" if object_name is None else "NOT_FOUND",
                                  "invalid cross reference id" if object_name is None
                                  else "The requested resource does not exist", [])
            name, record = found
            obj = self.schema[name]
            if not obj.deletable:
                raise RecordError("INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights on object id", [])
            self._delete_record(name, record)
            return record["Id"]

    def _delete_record(self, name: str, record: dict[str, Any]) -> None:
        self._unindex_record(name, record)
        if name in ("TaskRelation", "ContentDocumentLink"):
            self._put(name, record["Id"], None)  # not recycled
        else:
            self._put(name, record["Id"], {**record, "IsDeleted": True, "SystemModstamp": self.now_text()})
        cascade = getattr(self, f"_after_delete_{name}", None)
        if cascade is not None:
            cascade(record)

    def _writable(self, object_name: str, action: str) -> ObjectDef:
        obj = self.object(object_name)
        if obj is None:
            raise RequestError(400, "INVALID_TYPE",
                               f"sObject type '{object_name}' is not supported. If you are attempting to use a custom "
                               "object, be sure to append the '__c' after the entity name. Please reference your WSDL "
                               "or the describe call for the appropriate names.")
        if (action == "create" and not obj.createable) or (action == "update" and not obj.updateable):
            raise RecordError("INVALID_OPERATION" if obj.name != "TaskWhoRelation" else "INVALID_TYPE",
                              f"entity type {obj.name} does not support {action}", [])
        return obj

    def _index_record(self, name: str, record: dict[str, Any]) -> None:
        if record.get("IsDeleted"):
            return
        for (object_name, field_name) in self._unique:
            if object_name == name and record.get(field_name) is not None:
                self._index_set((object_name, field_name), self._unique_key(name, field_name, record[field_name]),
                                record["Id"])

    def _unindex_record(self, name: str, record: dict[str, Any]) -> None:
        for (object_name, field_name) in self._unique:
            if object_name == name and record.get(field_name) is not None:
                key = self._unique_key(name, field_name, record[field_name])
                if self._unique[(object_name, field_name)].get(key) == record["Id"]:
                    self._index_set((object_name, field_name), key, None)

    # -- computed fields and side effects ------------------------------------------------------
    def _compute(self, name: str, record: dict[str, Any]) -> None:
        if name in ("Contact", "Lead", "User"):
            record["Name"] = " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p) or None
        if name == "Task":
            record["IsClosed"] = record.get("Status") in TASK_CLOSED_STATUSES
            record["IsHighPriority"] = record.get("Priority") == "High"
            who = record.get("WhoId")
            if who and self.object_for_id(who) == "Contact":
                contact = self._data["Contact"].get(who)
                record["AccountId"] = contact.get("AccountId") if contact else None
            else:
                record["AccountId"] = None
            if not self.settings.shared_activities:
                record["WhoCount"] = 1 if who else 0
                record["WhatCount"] = 1 if record.get("WhatId") else 0

    def _relations_of(self, task_id: str) -> list[dict[str, Any]]:
        if "TaskRelation" not in self._data:
            return []
        return self._related("TaskRelation", "TaskId", task_id)

    def _refresh_task_counts(self, task_id: str) -> None:
        task = self._data["Task"].get(task_id)
        if task is None:
            return
        relations = self._relations_of(task_id)
        updated = {**task, "WhoCount": sum(1 for r in relations if not r["IsWhat"]),
                   "WhatCount": sum(1 for r in relations if r["IsWhat"])}
        self._put("Task", task_id, updated)

    def _raw_relation(self, task: dict[str, Any], relation_id: str, is_what: bool) -> None:
        rel_id = self.new_id(KEY_PREFIXES["TaskRelation"])
        account = None
        if self.object_for_id(relation_id) == "Contact":
            account = (self._data["Contact"].get(relation_id) or {}).get("AccountId")
        self._put("TaskRelation", rel_id, {
            "Id": rel_id, "TaskId": task["Id"], "RelationId": relation_id, "IsWhat": is_what,
            "AccountId": account, "IsDeleted": False, **self._audit_values(task.get("CreatedById")),
        })

    def _after_insert_Task(self, record: dict[str, Any], blob: bytes | None, user_id: str | None) -> None:  # noqa: N802
        if not self.settings.shared_activities:
            return
        if record.get("WhoId"):
            self._raw_relation(record, record["WhoId"], False)
        if record.get("WhatId"):
            self._raw_relation(record, record["WhatId"], True)
        self._refresh_task_counts(record["Id"])

    def _after_update_Task(self, old: dict[str, Any], new: dict[str, Any]) -> None:  # noqa: N802
        if not self.settings.shared_activities:
            return
        for key, is_what in (("WhoId", False), ("WhatId", True)):
            if old.get(key) == new.get(key):
                continue
            for rel in self._relations_of(new["Id"]):
                if rel["RelationId"] == old.get(key) and rel["IsWhat"] == is_what:
                    self._put("TaskRelation", rel["Id"], None)
            if new.get(key) and not any(r["RelationId"] == new[key] for r in self._relations_of(new["Id"])):
                self._raw_relation(new, new[key], is_what)
        self._refresh_task_counts(new["Id"])

    def _after_delete_Task(self, record: dict[str, Any]) -> None:  # noqa: N802
        for rel in self._relations_of(record["Id"]):
            self._put("TaskRelation", rel["Id"], None)
        for link in self._related("ContentDocumentLink", "LinkedEntityId", record["Id"]):
            self._put("ContentDocumentLink", link["Id"], None)

    def _before_insert_TaskRelation(self, merged: dict[str, Any]) -> None:  # noqa: N802
        task = self._data["Task"].get(merged["TaskId"])
        if task is None or task.get("IsDeleted"):
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        relation_type = self.object_for_id(merged["RelationId"])
        is_what = bool(merged.get("IsWhat"))
        if not is_what and relation_type not in ("Contact", "Lead"):
            raise RecordError("FIELD_INTEGRITY_EXCEPTION",
                              f"Relation ID: id value of incorrect type: {merged['RelationId']}", ["RelationId"])
        if is_what and relation_type in ("Contact", "Lead"):
            raise RecordError("FIELD_INTEGRITY_EXCEPTION",
                              f"Relation ID: id value of incorrect type: {merged['RelationId']}", ["RelationId"])
        relations = self._relations_of(task["Id"])
        if any(r["RelationId"] == merged["RelationId"] for r in relations):
            raise RecordError("DUPLICATE_VALUE",
                              "duplicate value found: RelationId duplicates value on record with id: "
                              + next(r["Id"] for r in relations if r["RelationId"] == merged["RelationId"]),
                              ["RelationId"])
        if is_what:
            if any(r["IsWhat"] for r in relations):
                raise RecordError("FIELD_INTEGRITY_EXCEPTION", "A task can be related to only one record in the "
                                  "Related To field.", ["RelationId"])
            return
        whos = [r for r in relations if not r["IsWhat"]]
        if relation_type == "Lead" and whos or any(self.object_for_id(r["RelationId"]) == "Lead" for r in whos):
            raise RecordError("FIELD_INTEGRITY_EXCEPTION",
                              "A task can be related to one lead or up to 50 contacts, not both.", ["RelationId"])
        if len(whos) >= MAX_TASK_WHO_CONTACTS:
            raise RecordError("LIMIT_EXCEEDED",
                              f"A task can be related to up to {MAX_TASK_WHO_CONTACTS} contacts.", ["RelationId"])
        merged["IsWhat"] = is_what
        if relation_type == "Contact":
            merged["AccountId"] = (self._data["Contact"].get(merged["RelationId"]) or {}).get("AccountId")

    def _after_insert_TaskRelation(self, record: dict[str, Any], blob: bytes | None,  # noqa: N802
                                   user_id: str | None) -> None:
        task = self._data["Task"][record["TaskId"]]
        key = "WhatId" if record["IsWhat"] else "WhoId"
        if not task.get(key):  # the first relation becomes the primary Who / What
            self._put("Task", task["Id"], {**task, key: record["RelationId"]})
        self._refresh_task_counts(task["Id"])

    def _after_delete_TaskRelation(self, record: dict[str, Any]) -> None:  # noqa: N802
        task = self._data["Task"].get(record["TaskId"])
        if task is None:
            return
        key = "WhatId" if record["IsWhat"] else "WhoId"
        if task.get(key) == record["RelationId"]:
            others = [r["RelationId"] for r in self._relations_of(task["Id"]) if r["IsWhat"] == record["IsWhat"]]
            self._put("Task", task["Id"], {**task, key: others[0] if others else None})
        self._refresh_task_counts(task["Id"])

    # ContentVersion / ContentDocument / ContentDocumentLink
    def _content_blob(self, merged: dict[str, Any], changed: dict[str, Any], blob: bytes | None) -> bytes:
        if blob is None:
            encoded = merged.pop("VersionData", None)
            if encoded is None:
                raise RecordError("REQUIRED_FIELD_MISSING", "Required fields are missing: [VersionData]",
                                  ["VersionData"])
            if len(encoded) > JSON_BLOB_LIMIT * 4 // 3 + 4:
                raise RecordError("FILE_SIZE_LIMIT_EXCEEDED",
                                  "Base64-encoded file data in a JSON body is limited to 37.5 MB; use a multipart "
                                  "request", ["VersionData"])
            try:
                blob = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise RecordError("INVALID_TYPE_ON_FIELD_IN_RECORD", "Version Data: value not of required type",
                                  ["VersionData"]) from None
        merged.pop("VersionData", None)
        changed.pop("VersionData", None)
        if len(blob) > self.settings.max_file_bytes:
            raise RecordError("FILE_SIZE_LIMIT_EXCEEDED",
                              f"File size limit exceeded: {len(blob)} bytes (max {self.settings.max_file_bytes} "
                              "bytes).", ["VersionData"])
        if not merged.get("PathOnClient") and not merged.get("ContentDocumentId"):
            raise RecordError("REQUIRED_FIELD_MISSING", "Required fields are missing: [PathOnClient]",
                              ["PathOnClient"])
        if not merged.get("Title") and merged.get("PathOnClient"):
            title = merged["PathOnClient"].replace("\\", "/").rsplit("/", 1)[-1]
            merged["Title"] = title.rsplit(".", 1)[0] if "." in title else title
        return blob

    def _before_insert_ContentVersion(self, merged: dict[str, Any]) -> None:  # noqa: N802
        if merged.get("ContentDocumentId") and merged.get("FirstPublishLocationId"):
            raise RecordError("FIELD_INTEGRITY_EXCEPTION",
                              "FirstPublishLocationId can't be set when creating a new version of a document.",
                              ["FirstPublishLocationId"])

    def _after_insert_ContentVersion(self, record: dict[str, Any], blob: bytes | None,  # noqa: N802
                                     user_id: str | None) -> None:
        assert blob is not None
        version = f"/services/data/v{DEFAULT_API_VERSION}/sobjects/ContentVersion/{record['Id']}/VersionData"
        path = record.get("PathOnClient") or ""
        extension = path.rsplit(".", 1)[-1].lower() if "." in path else ""
        info = {"ContentSize": len(blob), "FileExtension": extension or None,
                "FileType": (extension or "UNKNOWN").upper(), "Checksum": hashlib.md5(blob).hexdigest(),  # noqa: S324
                "VersionData": version}
        document_id = record.get("ContentDocumentId")
        if document_id:
            document = self._data["ContentDocument"][document_id]
            versions = self._related("ContentVersion", "ContentDocumentId", document_id)
            for other in versions:
                if other["Id"] != record["Id"]:
                    self._put("ContentVersion", other["Id"], {**other, "IsLatest": False})
            number = len(versions) + (0 if any(v["Id"] == record["Id"] for v in versions) else 1)
            self._put("ContentDocument", document_id, {
                **document, "LatestPublishedVersionId": record["Id"], "Title": record.get("Title"),
                "ContentSize": len(blob), "FileExtension": info["FileExtension"], "FileType": info["FileType"],
                "LastModifiedDate": record["CreatedDate"], "SystemModstamp": record["CreatedDate"]})
            self._put("ContentVersion", record["Id"], {**record, **info, "VersionNumber": str(number),
                                                       "IsLatest": True})
        else:
            document_id = self.new_id(KEY_PREFIXES["ContentDocument"])
            self._put("ContentDocument", document_id, {
                "Id": document_id, "Title": record.get("Title"), "LatestPublishedVersionId": record["Id"],
                "ContentSize": len(blob), "FileExtension": info["FileExtension"], "FileType": info["FileType"],
                "OwnerId": record.get("OwnerId"), "IsDeleted": False, **self._audit_values(user_id)})
            self._put("ContentVersion", record["Id"], {**record, **info, "ContentDocumentId": document_id,
                                                       "VersionNumber": "1", "IsLatest": True})
            location = record.get("FirstPublishLocationId") or record.get("OwnerId")
            if location:
                self._raw_link(document_id, location, "I")
        self._put_file(record["Id"], blob)

    def _raw_link(self, document_id: str, entity_id: str, share_type: str) -> str:
        link_id = self.new_id(KEY_PREFIXES["ContentDocumentLink"])
        self._put("ContentDocumentLink", link_id, {
            "Id": link_id, "ContentDocumentId": document_id, "LinkedEntityId": entity_id, "ShareType": share_type,
            "Visibility": "AllUsers", "IsDeleted": False, "SystemModstamp": self.now_text()})
        return link_id

    def _before_insert_ContentDocumentLink(self, merged: dict[str, Any]) -> None:  # noqa: N802
        for link in self._related("ContentDocumentLink", "ContentDocumentId", merged["ContentDocumentId"]):
            if link["LinkedEntityId"] == merged["LinkedEntityId"]:
                raise RecordError("DUPLICATE_VALUE",
                                  f"Document with ID: {merged['ContentDocumentId']} is already linked with the entity "
                                  f"with ID: {merged['LinkedEntityId']}", [])

    def _after_delete_ContentDocument(self, record: dict[str, Any]) -> None:  # noqa: N802
        for link in self._related("ContentDocumentLink", "ContentDocumentId", record["Id"]):
            self._put("ContentDocumentLink", link["Id"], None)
        for version in self._related("ContentVersion", "ContentDocumentId", record["Id"]):
            self._put("ContentVersion", version["Id"], {**version, "IsDeleted": True})

    # -- JSON views ----------------------------------------------------------------------------
    def record_url(self, object_name: str, record_id: str, version: str = DEFAULT_API_VERSION) -> str:
        return f"/services/data/v{version}/sobjects/{object_name}/{record_id}"

    def record_json(self, object_name: str, record: dict[str, Any], fields: list[str] | None = None,
                    version: str = DEFAULT_API_VERSION) -> dict[str, Any]:
        obj = self.schema[object_name]
        names = fields if fields is not None else list(obj.fields)
        out: dict[str, Any] = {"attributes": {"type": object_name,
                                              "url": self.record_url(object_name, record["Id"], version)}}
        for name in names:
            f = obj.field(name)
            if f is None:
                raise RequestError(400, "INVALID_FIELD",
                                   f"No such column '{name}' on entity '{object_name}'. If you are attempting to use "
                                   "a custom field, be sure to append the '__c' after the custom field name. Please "
                                   "reference your WSDL or the describe call for the appropriate names.")
            value = record.get(f.name)
            if f.name == "VersionData" and value:
                value = value.replace(f"v{DEFAULT_API_VERSION}", f"v{version}")
            out[f.name] = value
        return out

    def resolve(self, record: dict[str, Any], path: list[str]) -> Any:
        """Value of a (possibly relationship) field path on a record: ``["Owner", "Username"]``."""
        current = record
        current_object = self.object_for_id(record.get("Id", "")) or ""
        for part in path[:-1]:
            obj = self.object(current_object) if current_object else None
            rel = obj.relationship(part) if obj else None
            ref = current.get(rel.name) if rel else None
            if not ref:
                return None
            found = self.get(ref)
            if found is None:
                return None
            current_object, target = found
            current = {**target, "Type": current_object}
        return _get_ci(current, path[-1])

    def relationship_target(self, object_name: str, relationship: str) -> tuple[FieldDef, dict[str, str]] | None:
        """(lookup field, {field name: type}) for ``Owner`` / ``Who`` / ``Account`` ... on an object."""
        obj = self.object(object_name)
        rel = obj.relationship(relationship) if obj else None
        if rel is None:
            return None
        targets = [t for t in rel.reference_to if t in self.schema]
        if len(rel.reference_to) == 1 and targets:
            target = self.schema[targets[0]]
            return rel, {f.name: f.type for f in target.fields.values()}
        return rel, dict(NAME_FIELDS)

    # -- state ---------------------------------------------------------------------------------
    def public_settings(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self.settings).items() if k not in ("session_id", "client_secret")}

    def state(self) -> dict[str, Any]:
        """JSON summary for /_sandbox/state (no Description bodies, no file contents)."""
        with self.lock:
            counts = {name: self.count(name) for name in self.schema
                      if name not in ("Organization", "TaskWhoRelation")}
            tasks = []
            for task in self._iter_records("Task", False):
                tasks.append({
                    "Id": task["Id"], "Subject": task.get("Subject"), "WhoId": task.get("WhoId"),
                    "WhatId": task.get("WhatId"), "OwnerId": task.get("OwnerId"),
                    "Email_Sync_Key__c": task.get("Email_Sync_Key__c"), "ActivityDate": task.get("ActivityDate"),
                    "Status": task.get("Status"), "Type": task.get("Type"), "TaskSubtype": task.get("TaskSubtype"),
                    "DescriptionLength": utf16_len(task["Description"]) if task.get("Description") else 0,
                    "Relations": [r["RelationId"] for r in self._relations_of(task["Id"]) if not r["IsWhat"]],
                    "Files": [{k: f[k] for k in ("ContentDocumentId", "Title", "ContentSize")}
                              for f in self.files_for(task["Id"])],
                })
            return {
                "org_id": self.org_id,
                "settings": self.public_settings(),
                "api_usage": {"used": self.api_used, "max": self.settings.daily_api_max,
                              "remaining": self.api_remaining, "rejected": self.api_rejected},
                "counts": counts,
                "files": {"count": len(self._files), "bytes": sum(len(b) for b in self._files.values())},
                "bulk_jobs": [job.info() for job in self.jobs.values()],
                "record_faults": [rule.to_dict() for rule in self.record_faults],
                "tasks": tasks,
            }


def datetime_bounds(day: date, days: int, tz: str) -> tuple[str, str]:
    """UTC datetime text for [start of ``day``, start of ``day + days``) in zone ``tz``."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end_day = day + timedelta(days=days)
    end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=zone)
    return format_datetime(start), format_datetime(end)
