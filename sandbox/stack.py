"""Both sandboxes started together, plus the Airflow Connections that point the product at them.

The demo (``scripts/demo.py``), the end-to-end tests and the benchmarks all run the real
DAGs against a :class:`SandboxStack`; production differs only in the Connections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.demo_data import SERVICE_ACCOUNT
from sandbox.ews import EwsSandbox
from sandbox.salesforce import SalesforceSandbox

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EWS_VERSION = "15.1.2507.0"  # Exchange 2016 CU; given explicitly so no request is spent detecting it


@dataclass
class SandboxStack:
    """A started EWS sandbox and Salesforce sandbox (use as a context manager)."""

    ews: EwsSandbox
    salesforce: SalesforceSandbox

    @classmethod
    def start(cls, ews_seed: dict[str, Any], salesforce_seed: dict[str, Any]) -> SandboxStack:
        ews = EwsSandbox(ews_seed).start()
        try:
            salesforce = SalesforceSandbox(salesforce_seed).start()
        except BaseException:
            ews.stop()
            raise
        return cls(ews, salesforce)

    def stop(self) -> None:
        self.salesforce.stop()
        self.ews.stop()

    def __enter__(self) -> SandboxStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connections(self, state_db: Path, *, max_wait: float = 30) -> dict[str, dict[str, Any]]:
        """The three Connections (as Airflow's JSON form) the DAGs use by default."""
        return {
            "exchange_default": {
                "conn_type": "generic", "host": self.ews.endpoint,
                "login": SERVICE_ACCOUNT[0], "password": SERVICE_ACCOUNT[1],
                "extra": {"auth_type": "basic", "access_type": "impersonation", "version": EWS_VERSION,
                          "max_wait": max_wait},
            },
            "salesforce_default": {
                "conn_type": "salesforce", "password": self.salesforce.session_id,
                "extra": {"instance_url": self.salesforce.instance_url, "ca_bundle": str(self.salesforce.ca_bundle)},
            },
            "email_sync_state": {"conn_type": "sqlite", "host": str(state_db)},
        }

    def environment(self, state_db: Path, staging_dir: Path, **kwargs: Any) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables (and the staging dir) for a process running the DAGs."""
        env = {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)
               for conn_id, conn in self.connections(state_db, **kwargs).items()}
        env["EMAIL_SYNC_STAGING_DIR"] = str(staging_dir)
        return env


def local_airflow_env(airflow_home: Path) -> dict[str, str]:
    """Environment of a private local Airflow on SQLite running this project's DAGs and plugins.

    Used by the demo, the tests and the benchmarks, so all three run the same Airflow setup.
    """
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home}/airflow.db",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    }
