"""The sync state store: watermarks, folder cursors, the Task ledger, files, outcomes, run summaries.

Plain SQLAlchemy over the SQL shipped in this package (``email_sync/store/sql/``, package data,
so an installed wheel finds it as an editable checkout does): the same code runs on SQLite (the
quick start) and PostgreSQL (production). No Airflow import: the Airflow hook only turns a
Connection into an engine URL. The ledger is what makes a sync exactly-once on our side:
a Task is *claimed* before it is sent, *created* once Salesforce confirms it, and a claimed
row that never got confirmed is reconciled by the next run (docs/PIPELINE.md#exactly-once).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from email_sync.errors import SetupProblem, TransientError

SQL_DIR = files("email_sync.store") / "sql"
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_EXPANDING = re.compile(r"\bIN :(\w+)")
_CHUNK = 500  # bind parameters per IN list; well under SQLite's and PostgreSQL's limits
# Columns added after a table first shipped: create_schema adds them to an existing database.
_ADDED_COLUMNS = (
    ("sync_ledger", "relations_ok", "INTEGER NOT NULL DEFAULT 1"),
    ("sync_ledger", "files_ok", "INTEGER NOT NULL DEFAULT 1"),
    ("sync_ledger", "created_run_id", "VARCHAR(250)"),
    ("sync_ledger", "message_id", "VARCHAR(1000)"),
    ("sync_ledger", "category_attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("sync_file", "attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("sync_file", "error_code", "VARCHAR(64)"),
)
_SCHEMA_LOCK = 0x656D61696C  # PostgreSQL advisory lock key for schema changes ("email")
# What SQLite and PostgreSQL say about a database that is not one, or is damaged.
_CORRUPT = re.compile(r"file is not a database|database disk image is malformed|malformed database schema",
                      re.IGNORECASE)


def utc_iso(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC text, so comparisons as strings order like datetimes."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the state store")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@cache
def _queries() -> dict[str, sa.TextClause]:
    text = (SQL_DIR / "queries.sql").read_text()
    chunks = _NAME.split(text)[1:]
    queries: dict[str, sa.TextClause] = {}
    for name, body in zip(chunks[::2], chunks[1::2], strict=True):
        statement = sa.text(body.strip().rstrip(";"))
        expanding = _EXPANDING.findall(body)
        if expanding:
            statement = statement.bindparams(*(sa.bindparam(p, expanding=True) for p in expanding))
        queries[name] = statement
    return queries


@dataclass(frozen=True, slots=True)
class LedgerClaim:
    """A Task about to be sent, and whether the email still owes relations / files after it."""

    idempotency_key: str
    message_key: str
    item_id: str
    folder: str
    part: int
    parts: int
    email_at: datetime
    relations_owed: bool = False
    files_owed: bool = False
    message_id: str | None = None  # the email's identity, to find it again after a move


@dataclass(frozen=True, slots=True)
class LedgerRow:
    idempotency_key: str
    message_key: str
    part: int
    state: str
    task_id: str | None
    attempts: int
    category_marked: bool
    relations_ok: bool = True
    files_ok: bool = True
    created_run_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def complete(self) -> bool:
        """The Task exists with every relation, and the email's files are all confirmed."""
        return self.state == "created" and self.relations_ok and self.files_ok


@dataclass(frozen=True, slots=True)
class FileRow:
    message_key: str
    attachment_key: str
    state: str  # claimed | uploaded | failed
    content_version_id: str | None
    linked_task_id: str | None
    attempts: int = 0
    error_code: str | None = None


class Unmarked(NamedTuple):
    """A recorded email still owed the CRM category: where it was, its identity, runs that missed it."""

    message_key: str
    item_id: str
    message_id: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Outcome:
    message_key: str
    outcome: str  # recorded | skipped | failed
    reason: str | None = None
    detail: str | None = None


class StateStore:
    """Repository over the state database; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> StateStore:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # Airflow tasks of one job may run in different processes: wait for the lock.
            kwargs["connect_args"] = {"timeout": 30}
        return cls(sa.create_engine(url, future=True, **kwargs))

    def create_schema(self) -> None:
        """Create the tables and add columns a newer version needs, once, under a lock.

        Two first runs may start together: on PostgreSQL they serialise on an advisory lock
        (``CREATE TABLE IF NOT EXISTS`` alone races on the catalogue); SQLite's database
        lock serialises the transaction itself.
        """
        statements = [s.strip() for s in (SQL_DIR / "schema.sql").read_text().split(";")]
        with self._translated(), self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            for statement in statements:
                body = "\n".join(l for l in statement.splitlines() if not l.strip().startswith("--"))
                if body.strip():
                    conn.exec_driver_sql(body)
            inspector = sa.inspect(conn)
            for table, column, ddl in _ADDED_COLUMNS:
                if column not in {c["name"] for c in inspector.get_columns(table)}:
                    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")

    # -- plumbing -------------------------------------------------------------------
    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """The database driver's errors as :mod:`email_sync.errors`, at the store's edge."""
        try:
            yield
        except sa.exc.DatabaseError as exc:
            if _CORRUPT.search(str(exc.orig)):
                raise SetupProblem(
                    f"the state store {self.engine.url.render_as_string(hide_password=True)} is damaged "
                    f"({type(exc.orig).__name__}): restore it from a backup or move it away; Salesforce "
                    "stays the source of truth, so a new store re-checks what exists there") from exc
            raise TransientError(f"state store: {type(exc.orig).__name__}: {exc.orig}") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise TransientError(f"state store: {type(exc).__name__}: {exc}") from exc

    def _run(self, name: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        if isinstance(params, Sequence):
            if not params:
                return
            # Rows in one order in every process (the key columns come first in each mapping):
            # two runs writing overlapping rows then lock them in the same order, no deadlock.
            params = sorted(params, key=lambda row: tuple(str(v) for v in row.values()))
        with self._translated(), self.engine.begin() as conn:
            conn.execute(_queries()[name], params)

    def _select(self, name: str, **params: Any) -> list[sa.Row[Any]]:
        with self._translated(), self.engine.connect() as conn:
            return list(conn.execute(_queries()[name], params))

    def _select_in(self, name: str, keys: Iterable[str], **params: Any) -> list[sa.Row[Any]]:
        unique = sorted(set(keys))
        rows: list[sa.Row[Any]] = []
        for start in range(0, len(unique), _CHUNK):
            rows += self._select(name, message_keys=unique[start:start + _CHUNK], **params)
        return rows

    @staticmethod
    def _now() -> str:
        return utc_iso(datetime.now(UTC))

    # -- watermarks -----------------------------------------------------------------
    def watermark(self, job_id: str) -> datetime | None:
        rows = self._select("get_watermark", job_id=job_id)
        return from_iso(rows[0].synced_through) if rows else None

    def advance_watermark(self, job_id: str, through: datetime, run_id: str) -> None:
        """Move the job's watermark forward (never back: a backfill must not rewind it)."""
        self._run("advance_watermark", {"job_id": job_id, "synced_through": utc_iso(through),
                                        "run_id": run_id, "now": self._now()})

    def set_watermark(self, job_id: str, through: datetime, run_id: str) -> None:
        """Put the watermark at ``through`` even if that moves it back (one from a clock that ran ahead)."""
        self._run("set_watermark", {"job_id": job_id, "synced_through": utc_iso(through),
                                    "run_id": run_id, "now": self._now()})

    # -- folder cursors -------------------------------------------------------------
    def cursors(self, job_id: str, source: str) -> dict[str, str]:
        """folder path → the cursor ``source`` left there when the job's last run finished."""
        return {r.folder: r.cursor for r in self._select("get_cursors", job_id=job_id, source=source)}

    def save_cursors(self, job_id: str, source: str, cursors: Mapping[str, str], run_id: str) -> None:
        now = self._now()
        self._run("save_cursor", [{"job_id": job_id, "folder": folder, "source": source, "cursor": cursor,
                                   "run_id": run_id, "now": now} for folder, cursor in sorted(cursors.items())])

    # -- ledger ---------------------------------------------------------------------
    def claim(self, job_id: str, run_id: str, claims: Sequence[LedgerClaim]) -> None:
        now = self._now()
        self._run("claim", [
            {"idempotency_key": c.idempotency_key, "job_id": job_id, "message_key": c.message_key,
             "item_id": c.item_id, "folder": c.folder, "part": c.part, "parts": c.parts,
             "run_id": run_id, "email_at": utc_iso(c.email_at), "now": now,
             "relations_ok": int(not c.relations_owed), "files_ok": int(not c.files_owed),
             "message_id": c.message_id and c.message_id[:1000]}
            for c in claims
        ])

    def mark_created(self, created: Mapping[str, tuple[str, bool]], run_id: str) -> None:
        """``created``: idempotency key → (Task id, whether this run's upsert created it).

        The creating run is kept: a Task it created has no files yet, so its upload needs no
        look-up in Salesforce; any other Task's files are reconciled first.
        """
        now = self._now()
        self._run("mark_created", [{"idempotency_key": k, "task_id": task_id, "now": now,
                                    "created_run_id": run_id if fresh else None}
                                   for k, (task_id, fresh) in created.items()])

    def mark_relations(self, results: Mapping[str, tuple[str, str] | None]) -> None:
        """``results``: idempotency key → None when every relation is confirmed, else (code, message)."""
        now = self._now()
        self._run("mark_relations", [
            {"idempotency_key": k, "ok": int(error is None), "error_code": error and error[0][:64],
             "error_message": error and error[1][:1000], "now": now}
            for k, error in results.items()
        ])

    def mark_files(self, job_id: str, done: Mapping[str, bool]) -> None:
        """``done``: message key → whether every selected file of the email is confirmed."""
        now = self._now()
        self._run("mark_files", [{"job_id": job_id, "message_key": k, "ok": int(ok), "now": now}
                                 for k, ok in done.items()])

    def count_attempt(self, job_id: str, message_keys: Iterable[str]) -> None:
        """One more run tried to complete these emails (:meth:`retryable` stops at the limit)."""
        now = self._now()
        self._run("count_attempt", [{"job_id": job_id, "message_key": k, "now": now} for k in set(message_keys)])

    def mark_failed(self, failed: Mapping[str, tuple[str, str]]) -> None:
        """``failed``: idempotency key → (Salesforce error code, message)."""
        now = self._now()
        self._run("mark_failed", [
            {"idempotency_key": k, "error_code": code[:64], "error_message": message[:1000], "now": now}
            for k, (code, message) in failed.items()
        ])

    def mark_category(self, job_id: str, message_keys: Iterable[str], *, given_up: bool = False) -> None:
        """The category is on every copy of these emails (or, ``given_up``, it never will be)."""
        now = self._now()
        self._run("mark_category", [{"job_id": job_id, "message_key": k, "marked": 2 if given_up else 1, "now": now}
                                    for k in set(message_keys)])

    def category_missed(self, job_id: str, message_keys: Iterable[str]) -> None:
        """One more run could not write these emails' category (not found, or refused)."""
        now = self._now()
        self._run("category_missed", [{"job_id": job_id, "message_key": k, "now": now} for k in set(message_keys)])

    def relocate(self, job_id: str, item_ids: Mapping[str, str]) -> None:
        """``item_ids``: message key → the id the email has now (it was moved)."""
        now = self._now()
        self._run("relocate", [{"job_id": job_id, "message_key": k, "item_id": v, "now": now}
                               for k, v in item_ids.items()])

    def ledger(self, job_id: str, message_keys: Iterable[str]) -> list[LedgerRow]:
        return [
            LedgerRow(r.idempotency_key, r.message_key, r.part, r.state, r.task_id, r.attempts,
                      bool(r.category_marked), bool(r.relations_ok), bool(r.files_ok), r.created_run_id,
                      r.error_code, r.error_message)
            for r in self._select_in("ledger_for_messages", message_keys, job_id=job_id)
        ]

    def recorded_since(self, job_id: str, message_keys: Iterable[str], since: datetime) -> dict[str, datetime]:
        """Which of these messages this job recorded with an email time at or after ``since``."""
        rows = self._select_in("recorded_since", message_keys, job_id=job_id, since=utc_iso(since))
        return {r.message_key: from_iso(r.email_at) for r in rows}

    def retryable(self, job_id: str, max_attempts: int) -> list[tuple[str, str, str]]:
        """(message_key, item_id, folder) of emails that still owe a Task, relation or file."""
        rows = self._select("retryable", job_id=job_id, max_attempts=max_attempts)
        return [(r.message_key, r.item_id, r.folder) for r in rows]

    def incomplete(self, job_id: str, since: datetime) -> dict[str, int]:
        """Emails since ``since`` that still owe an object, by kind (Task, relation, file, category)."""
        owed: dict[str, set[str]] = {"tasks": set(), "relations": set(), "files": set(), "categories": set()}
        for r in self._select("incomplete", job_id=job_id, since=utc_iso(since)):
            if r.state != "created":
                owed["tasks"].add(r.message_key)
            else:
                if not r.relations_ok:
                    owed["relations"].add(r.message_key)
                if not r.files_ok:
                    owed["files"].add(r.message_key)
                if not r.category_marked:
                    owed["categories"].add(r.message_key)
        return {kind: len(keys) for kind, keys in owed.items()}

    def unmarked(self, job_id: str) -> list[Unmarked]:
        """Recorded emails whose CRM category is not written yet."""
        return [Unmarked(r.message_key, r.item_id, r.message_id, r.category_attempts)
                for r in self._select("unmarked", job_id=job_id)]

    # -- files ----------------------------------------------------------------------
    def files(self, job_id: str, message_keys: Iterable[str]) -> list[FileRow]:
        return [
            FileRow(r.message_key, r.attachment_key, r.state, r.content_version_id, r.linked_task_id, r.attempts,
                    r.error_code)
            for r in self._select_in("files_for_messages", message_keys, job_id=job_id)
        ]

    def claim_files(self, job_id: str, claims: Iterable[tuple[str, str, str]]) -> None:
        """``claims``: (message_key, attachment_key, task_id) about to be uploaded."""
        now = self._now()
        self._run("claim_file", [
            {"job_id": job_id, "message_key": m, "attachment_key": a, "task_id": t, "now": now}
            for m, a, t in claims
        ])

    def record_files(self, job_id: str, uploaded: Iterable[tuple[str, str, str, str]]) -> None:
        """``uploaded``: (message_key, attachment_key, task_id, content_version_id) confirmed."""
        now = self._now()
        self._run("record_file", [
            {"job_id": job_id, "message_key": m, "attachment_key": a, "task_id": t,
             "content_version_id": v, "now": now}
            for m, a, t, v in uploaded
        ])

    def fail_files(self, job_id: str, failed: Iterable[tuple[str, str, str]]) -> None:
        """``failed``: (message_key, attachment_key, reason code) refused or not served."""
        now = self._now()
        self._run("fail_file", [{"job_id": job_id, "message_key": m, "attachment_key": a, "error_code": code[:64],
                                 "now": now} for m, a, code in failed])

    # -- the job's lease --------------------------------------------------------------
    def take_lease(self, job_id: str, holder: str, ttl: timedelta) -> str | None:
        """Hold the job's lease for ``ttl`` (or renew it); None when taken, else the other holder."""
        now = datetime.now(UTC)
        self._run("take_lease", {"job_id": job_id, "holder": holder, "expires_at": utc_iso(now + ttl),
                                 "now": utc_iso(now)})
        rows = self._select("lease_holder", job_id=job_id)
        current = rows[0].holder if rows else None
        return None if current == holder else current

    def release_lease(self, job_id: str, holder: str) -> None:
        self._run("release_lease", {"job_id": job_id, "holder": holder})

    # -- outcomes and runs ------------------------------------------------------------
    def record_outcomes(self, job_id: str, run_id: str, outcomes: Iterable[Outcome]) -> None:
        now = self._now()
        self._run("record_outcome", [
            {"run_id": run_id, "job_id": job_id, "message_key": o.message_key, "outcome": o.outcome,
             "reason": o.reason, "detail": (o.detail or None) and o.detail[:1000], "now": now}
            for o in outcomes
        ])

    def outcomes(self, job_id: str, run_id: str) -> list[Outcome]:
        return [Outcome(r.message_key, r.outcome, r.reason, r.detail)
                for r in self._select("outcomes_for_run", job_id=job_id, run_id=run_id)]

    def start_run(self, job_id: str, run_id: str, start: datetime, end: datetime) -> None:
        self._run("start_run", {"job_id": job_id, "run_id": run_id, "interval_start": utc_iso(start),
                                "interval_end": utc_iso(end), "now": self._now()})

    def finish_run(self, job_id: str, run_id: str, status: str, counts: Mapping[str, Any]) -> None:
        self._run("finish_run", {"job_id": job_id, "run_id": run_id, "status": status,
                                 "counts": json.dumps(counts, sort_keys=True), "now": self._now()})

    def run(self, job_id: str, run_id: str) -> dict[str, Any] | None:
        rows = self._select("get_run", job_id=job_id, run_id=run_id)
        return _run_dict(rows[0]) if rows else None

    def latest_runs(self) -> list[dict[str, Any]]:
        return [_run_dict(r) for r in self._select("latest_runs")]

    # -- cache ----------------------------------------------------------------------
    def cache_get(self, key: str) -> Any | None:
        rows = self._select("cache_get", cache_key=key, now=self._now())
        return json.loads(rows[0].value) if rows else None

    def cache_put(self, key: str, value: Any, ttl: timedelta) -> None:
        self._run("cache_put", {"cache_key": key, "value": json.dumps(value),
                                "expires_at": utc_iso(datetime.now(UTC) + ttl)})


def _run_dict(row: sa.Row[Any]) -> dict[str, Any]:
    data = dict(row._mapping)
    data["counts"] = json.loads(data["counts"]) if data.get("counts") else {}
    return data
