"""Test-wide setup.

Airflow reads its configuration when first imported, so the environment for a private,
throw-away Airflow (SQLite metadata DB under a temp AIRFLOW_HOME, this project's dags/ and
plugins/, no examples) is set here, before any test module can import it. Tests that need the
metadata database request the ``airflow_db`` fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sandbox.stack import local_airflow_env  # imports no Airflow: safe before the environment is set

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="email-sync-test-airflow-"))

os.environ.update(local_airflow_env(AIRFLOW_HOME))
if str(PROJECT_ROOT / "plugins") not in sys.path:
    sys.path.append(str(PROJECT_ROOT / "plugins"))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database (SQLite) for this test session."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout}\n{result.stderr}")
    return AIRFLOW_HOME
