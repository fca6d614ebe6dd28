"""Running the real sync DAGs in Airflow against the sandboxes (fixtures for tests/dags, tests/faults).

Import the fixtures into a conftest: ``from tests.sync_world import sync_world  # noqa: F401``.

A world's state store is SQLite (a file in the world's directory) or PostgreSQL (a fresh
database on 127.0.0.1:5432 per world, created from database ``test`` and dropped afterwards;
``start_world(..., backend="postgres")`` skips the test when the server is not there). The
DAGs reach it through the ``email_sync_state`` Connection, as in production.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "include" / "email_sync"
_TAG = re.compile(r"^\[(\w+)\]")

BACKENDS = ("sqlite", "postgres")
POSTGRES = {"host": "127.0.0.1", "port": 5432, "login": "postgres"}
POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
# The six steps of a sync DAG, in order (task ids in plugins/operators/email_sync.py).
STEPS = ("extract", "filter", "match", "insert", "upload", "finish")
_copy_numbers = itertools.count(1)


@dataclass
class SyncWorld:
    """Sandboxes + the environment the DAGs run in, with helpers to run and inspect."""

    stack: Any
    demo: Any
    state_db: Path  # SQLite: the state store's file (unused on PostgreSQL)
    staging: Path
    config_dir: Path
    backend: str = "sqlite"
    database: str | None = None  # PostgreSQL: this world's database
    _store: Any = field(default=None, repr=False)
    _copies: list[Any] = field(default_factory=list, repr=False)

    @property
    def state_url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.state_db}"
        return f"postgresql+psycopg2://{POSTGRES['login']}@{POSTGRES['host']}:{POSTGRES['port']}/{self.database}"

    def state_connection(self) -> dict[str, Any]:
        """The ``email_sync_state`` Connection (Airflow's JSON form) for this world's backend."""
        if self.backend == "sqlite":
            return {"conn_type": "sqlite", "host": str(self.state_db)}
        return {"conn_type": "postgres", **POSTGRES, "schema": self.database}

    def dag(self, job_id: str) -> Any:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
        assert not bag.import_errors, bag.import_errors
        return bag.dags[f"email_sync__{job_id}"]

    def run(self, job_id: str, logical_date: datetime | None = None, *, expect: str | None = "success",
            retries: int = 0) -> Any:
        """One real DAG run through ``dag.test()``; ``logical_date=None`` is a Sync Now.

        ``retries``: Airflow retries per task, without delay (dag.test() waits delays out).
        """
        dag = self.dag(job_id)
        for task in dag.tasks:
            task.retries = retries
            task.retry_delay = timedelta(0)
            task.retry_exponential_backoff = False
        run = dag.test(logical_date=logical_date)
        if expect is not None:
            assert run.state == expect, f"run of {job_id} ended {run.state}"
        return run

    def store(self) -> Any:
        """The world's state store, for inspection (one engine, disposed when the store is replaced)."""
        from email_sync.store.state_store import StateStore

        if self._store is None:
            self._store = StateStore.from_url(self.state_url)
        return self._store

    def close_store(self) -> None:
        if self._store is not None:
            self._store.engine.dispose()
            self._store = None

    # -- the state store lost or restored from a copy ---------------------------------------
    def copy_state(self) -> Any:
        """A copy of the state store as it is now (between steps: nothing is writing).

        SQLite: the database file copied aside (None while no file exists yet). PostgreSQL:
        ``CREATE DATABASE copy TEMPLATE world`` (the template must have no other sessions;
        between steps the only ones are idle pooled connections, closed here first).
        """
        self.close_store()
        if self.backend == "sqlite":
            if not self.state_db.exists():
                return None
            copy = self.state_db.with_name(f"state-copy-{next(_copy_numbers)}.db")
            shutil.copyfile(self.state_db, copy)
            return copy
        copy_name = f"{self.database}_c{next(_copy_numbers)}"
        with _pg_admin() as admin:
            _pg_terminate(admin, self.database)
            admin.exec_driver_sql(f'CREATE DATABASE "{copy_name}" TEMPLATE "{self.database}"')
        self._copies.append(copy_name)
        return copy_name

    def restore_state(self, copy: Any) -> None:
        """Replace the state store by ``copy`` (from :meth:`copy_state`); None = the store deleted."""
        self.close_store()
        if self.backend == "sqlite":
            for path in (self.state_db, Path(f"{self.state_db}-journal"), Path(f"{self.state_db}-wal"),
                         Path(f"{self.state_db}-shm")):
                path.unlink(missing_ok=True)
            if copy is not None:
                shutil.copyfile(copy, self.state_db)
            return
        with _pg_admin() as admin:
            admin.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            template = f' TEMPLATE "{copy}"' if copy is not None else ""
            admin.exec_driver_sql(f'CREATE DATABASE "{self.database}"{template}')

    def drop_databases(self) -> None:
        self.close_store()
        if self.backend != "postgres":
            return
        with _pg_admin() as admin:
            for name in [self.database, *self._copies]:
                admin.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- steps in-process -----------------------------------------------------------------
    def steps(self, job_id: str, run_id: str, interval: tuple[datetime, datetime] | None = None) -> StepRun:
        """One run of ``job_id``'s six steps, called in-process one at a time (see :class:`StepRun`).

        ``interval``: the run's data interval (a scheduled run); None for a Sync Now.
        """
        return StepRun(self, job_id, run_id, interval)

    def user_id(self, username: str) -> str:
        return next(u["Id"] for u in self.stack.salesforce.org.records("User") if u["Username"] == username)

    def tasks(self, owner: str | None = None) -> list[dict[str, Any]]:
        tasks = self.stack.salesforce.org.records("Task")
        if owner is not None:
            owner_id = owner if owner.startswith("005") else self.user_id(owner)
            tasks = [t for t in tasks if t["OwnerId"] == owner_id]
        return tasks

    def tags(self, owner: str | None = None) -> Counter[str]:
        """Recorded Tasks per demo tag (``[tag]`` in the subject), one count per email (part 1)."""
        return Counter(_tag(t["Subject"]) for t in self.tasks(owner)
                       if "(part " not in t["Subject"] or "(part 1 of" in t["Subject"])

    def messages(self, mailbox: str) -> list[Any]:
        return self.stack.ews.store.messages(mailbox)

    def write_config(self, jobs: dict[str, dict[str, Any]], policy_changes: dict[str, Any] | None = None) -> None:
        """Replace the jobs (and patch the policy) of this world's private config directory."""
        shutil.rmtree(self.config_dir / "jobs")
        (self.config_dir / "jobs").mkdir()
        for job_id, settings in jobs.items():
            (self.config_dir / "jobs" / f"{job_id}.yaml").write_text(yaml.safe_dump(settings))
        if policy_changes:
            from email_sync.rules.config import read_yaml  # YAML 1.2 booleans: "off" stays a string

            policy = read_yaml(self.config_dir / "policy.yaml")
            for section, values in policy_changes.items():
                if isinstance(values, dict):
                    policy.setdefault(section, {}).update(values)
                else:
                    policy[section] = values
            (self.config_dir / "policy.yaml").write_text(yaml.safe_dump(policy))


class StepRun:
    """A sync run driven step by step in-process, as the DAG's operators call the steps.

    Each call builds what the operator builds (state store from the ``email_sync_state``
    Connection, mail source and Salesforce client from their hooks), so two StepRuns of one
    job behave like two DAG runs on two workers: interleaved, or in two threads. A step that
    raises is retried (called again, as Airflow's retries would); a step that still fails
    ends the run (downstream tasks would be ``upstream_failed``).
    """

    def __init__(self, world: SyncWorld, job_id: str, run_id: str,
                 interval: tuple[datetime, datetime] | None = None) -> None:
        from email_sync.pipeline.context import RunContext
        from email_sync.rules.config import load_jobs

        loaded = load_jobs(world.config_dir, only=job_id)
        job = next(j for j in loaded.jobs if j.job_id == job_id)
        self.world = world
        self.ctx = RunContext(job_id, job.settings, loaded.org, run_id, world.staging)
        self.interval = interval
        self.counts: dict[str, dict[str, Any]] = {}
        self.errors: list[tuple[str, BaseException]] = []
        self.position = 0  # index of the next step in STEPS
        self.stopped = False  # a step failed after its retries: the run is over, failed

    @property
    def finished(self) -> bool:
        return self.position == len(STEPS)

    @property
    def summary(self) -> dict[str, Any] | None:
        return self.counts.get("finish")

    def call(self, step: str) -> dict[str, Any]:
        """Run one step once, with freshly built hooks, like one Airflow try of its task."""
        from email_sync.crm.salesforce import SalesforceCrm
        from email_sync.pipeline import extract, filter as filter_step, finish, insert, match, upload
        from hooks.mail import mail_source
        from hooks.salesforce import SalesforceSessionHook
        from hooks.state import StateStoreHook

        ctx = self.ctx
        store = StateStoreHook().get_store()

        def mail() -> Any:
            return mail_source(ctx.settings.source.value, ctx.settings.mailbox)

        def crm() -> Any:
            sf = SalesforceSessionHook(salesforce_conn_id="salesforce_default").get_conn()
            return SalesforceCrm(sf, bulk_threshold=ctx.org.bulk_threshold, reserve=ctx.org.api_reserve)

        now = datetime.now(UTC)
        calls: dict[str, Callable[[], dict[str, Any]]] = {
            "extract": lambda: extract.extract(ctx, mail, store, self.interval, now),
            "filter": lambda: filter_step.filter_mail(ctx, store),
            "match": lambda: match.match(ctx, crm, store),
            "insert": lambda: insert.insert_tasks(ctx, crm, store),
            "upload": lambda: upload.upload_attachments(ctx, mail, crm, store),
            "finish": lambda: finish.finish(ctx, mail, crm, store, {k: v for k, v in self.counts.items() if k != "finish"}),
        }
        try:
            counts = calls[step]()
        finally:
            store.engine.dispose()  # what a finished task process leaves: no open session
        self.counts[step] = counts
        return counts

    def advance(self, tries: int = 2) -> bool:
        """Run the next step, retried up to ``tries`` times in all; False once the run has stopped."""
        from email_sync.errors import PermanentError

        if self.stopped or self.finished:
            return False
        step = STEPS[self.position]
        for attempt in range(tries):
            try:
                self.call(step)
            except Exception as exc:  # noqa: BLE001 - whatever Airflow would catch
                self.errors.append((step, exc))
                if isinstance(exc, PermanentError) or attempt == tries - 1:
                    self.stopped = True
                    return False
                continue
            self.position += 1
            return True
        return False

    def run(self, until: int = len(STEPS), tries: int = 2) -> bool:
        """Run the steps up to index ``until`` (exclusive); True when they all succeeded."""
        while self.position < until:
            if not self.advance(tries):
                return False
        return True


@contextlib.contextmanager
def _pg_admin() -> Iterator[Any]:
    """An autocommit connection to database ``test`` (CREATE / DROP DATABASE)."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _pg_terminate(admin: Any, database: str) -> None:
    import sqlalchemy as sa

    admin.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": database})


def _tag(subject: str) -> str:
    found = _TAG.match(subject or "")
    return found.group(1) if found else ""


@pytest.fixture
def sync_world(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncWorld]:
    """Fresh demo sandboxes, state DB, staging dir and a private copy of the job config."""
    from sandbox.demo_data import build_demo

    yield from start_world(build_demo(), tmp_path, monkeypatch)


def start_world(demo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                backend: str = "sqlite") -> Iterator[SyncWorld]:
    """A :class:`SyncWorld` over sandboxes seeded from ``demo`` (a ``sandbox.demo_data.Demo``).

    ``backend``: the state store, ``sqlite`` or ``postgres`` (a fresh database, dropped when
    the world ends; the test is skipped when the server is not reachable).
    """
    import exchangelib.protocol

    from sandbox.stack import SandboxStack

    if backend not in BACKENDS:
        raise ValueError(f"unknown state-store backend {backend!r}")
    database = None
    if backend == "postgres":
        from tests.state_backends import postgres_available

        reason = postgres_available()
        if reason:
            pytest.skip(reason)
        database = f"es_{uuid.uuid4().hex[:12]}"
        with _pg_admin() as admin:
            admin.exec_driver_sql(f'CREATE DATABASE "{database}"')
    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    world = None
    try:
        with SandboxStack.start(demo.ews, demo.salesforce) as stack:
            world = SyncWorld(stack, demo, tmp_path / "state.db", tmp_path / "staging", config_dir, backend, database)
            for name, value in stack.environment(world.state_db, world.staging, max_wait=5).items():
                monkeypatch.setenv(name, value)
            monkeypatch.setenv("AIRFLOW_CONN_EMAIL_SYNC_STATE", json.dumps(world.state_connection()))
            monkeypatch.setenv("EMAIL_SYNC_CONFIG_DIR", str(config_dir))
            yield world
            exchangelib.protocol.close_connections()
    finally:
        if world is not None:
            world.drop_databases()
        elif database is not None:
            with _pg_admin() as admin:
                admin.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# ``with world_of(demo, path, monkeypatch, backend) as world:`` ends the world (sandboxes
# stopped, PostgreSQL database dropped) even when the block fails.
world_of = contextlib.contextmanager(start_world)
