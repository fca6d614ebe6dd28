"""Who and where a run is, and the bookkeeping every step shares.

A :class:`RunContext` names one job's run and its staging directory; the helpers read the
ledger and remember Salesforce's API usage between steps. Nothing here talks to a mailbox.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from email_sync.crm.base import Crm
from email_sync.rules.keys import email_identity, message_key
from email_sync.rules.models import MailItem
from email_sync.rules.settings import JobSettings, OrgSettings
from email_sync.store.state_store import LedgerRow, StateStore

MAX_ATTEMPTS = 5  # an email whose Task Salesforce keeps refusing is retried by this many runs
METADATA_TTL = timedelta(hours=24)  # describe and owner ids are cached this long
STAGING_RETENTION = timedelta(days=7)  # staged files of failed runs are pruned after this
# The daily API usage the last Salesforce answer reported (Sforce-Limit-Info), shared by the
# steps of a run so the budget check costs no extra call; minutes old at most.
API_USAGE_CACHE = "salesforce:api_usage"
API_USAGE_TTL = timedelta(minutes=15)


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


def item_key(item: MailItem) -> str:
    """The ledger's key of a staged email: its message key, or its item id without a Message-ID."""
    identity = email_identity(item)
    return message_key(identity) if identity else f"item:{item.item_id}"


def ledger_by_message(store: StateStore, job_id: str, keys: list[str]) -> dict[str, list[LedgerRow]]:
    by_message: dict[str, list[LedgerRow]] = {}
    for row in store.ledger(job_id, keys) if keys else []:
        by_message.setdefault(row.message_key, []).append(row)
    return by_message


def remember_usage(client: Crm, store: StateStore) -> None:
    """Keep the API usage Salesforce last reported for the run's later budget checks."""
    usage = client.api_usage()
    if usage is not None:
        store.cache_put(API_USAGE_CACHE, list(usage), API_USAGE_TTL)


def ints(counts: Counter[str]) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(counts.items())}
