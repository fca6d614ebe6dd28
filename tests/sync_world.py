"""Running the real sync DAGs in Airflow against the sandboxes (fixtures for tests/dags, tests/faults).

Import the fixtures into a conftest: ``from tests.sync_world import sync_world  # noqa: F401``.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "include" / "email_sync"
_TAG = re.compile(r"^\[(\w+)\]")


@dataclass
class SyncWorld:
    """Sandboxes + the environment the DAGs run in, with helpers to run and inspect."""

    stack: Any
    demo: Any
    state_db: Path
    staging: Path
    config_dir: Path

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
        from email_sync.store.state_store import StateStore

        return StateStore.from_url(f"sqlite:///{self.state_db}")

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


def _tag(subject: str) -> str:
    found = _TAG.match(subject or "")
    return found.group(1) if found else ""


@pytest.fixture
def sync_world(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncWorld]:
    """Fresh demo sandboxes, state DB, staging dir and a private copy of the job config."""
    from sandbox.demo_data import build_demo

    yield from start_world(build_demo(), tmp_path, monkeypatch)


def start_world(demo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncWorld]:
    """A :class:`SyncWorld` over sandboxes seeded from ``demo`` (a ``sandbox.demo_data.Demo``)."""
    import exchangelib.protocol

    from sandbox.stack import SandboxStack

    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    with SandboxStack.start(demo.ews, demo.salesforce) as stack:
        world = SyncWorld(stack, demo, tmp_path / "state.db", tmp_path / "staging", config_dir)
        for name, value in stack.environment(world.state_db, world.staging, max_wait=5).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("EMAIL_SYNC_CONFIG_DIR", str(config_dir))
        yield world
        exchangelib.protocol.close_connections()
