from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.faults.invariants import JOB, reference_state
from tests.state_backends import postgres_available
from tests.sync_world import start_world, sync_world  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The state store a world uses: SQLite, and PostgreSQL when the server at 127.0.0.1:5432 answers."""
    if request.param == "postgres":
        reason = postgres_available()
        if reason:
            pytest.skip(reason)
    return request.param


@pytest.fixture(scope="module")
def demo(airflow_db: Path) -> Any:
    """The demo data with one fixed "now" for every world of a module, so every world holds the same mail."""
    from sandbox.demo_data import build_demo

    return build_demo(now=datetime.now(UTC) - timedelta(minutes=5))


@pytest.fixture(scope="module")
def reference(demo: Any, airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The org, mailbox, call counts and summary of an undisturbed run (SQLite; the backends must agree)."""
    with pytest.MonkeyPatch.context() as mp:
        for world in start_world(demo, tmp_path_factory.mktemp("reference"), mp):
            world.run(JOB)
            state = reference_state(world)
            world.close_store()
    assert state["duplicate_keys"] == [] and len(state["tasks"]) > 80
    assert any(r for _, r in state["relations"]) and any(f for _, f in state["files"])
    return state
