"""Who and where a run is, and the bookkeeping every step shares.

A :class:`RunContext` names one job's run and its staging directory; the helpers read the
ledger and remember Salesforce's API usage between steps. Nothing here talks to a mailbox.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from email_sync.crm.base import Crm
from email_sync.errors import TransientError
from email_sync.rules.keys import email_identity, message_key
from email_sync.rules.models import MailItem
from email_sync.rules.settings import JobSettings, OrgSettings
from email_sync.store.state_store import LedgerRow, StateStore

MAX_ATTEMPTS = 5  # an email whose Task Salesforce keeps refusing is retried by this many runs
METADATA_TTL = timedelta(hours=24)  # describe and owner ids are cached this long
# Staged mail of a run that ended without cleaning up (its worker was killed on its last try)
# is pruned by the job's next finished run after this; a run that fails cleans up itself.
STAGING_RETENTION = timedelta(days=1)
# The daily API usage the last Salesforce answer reported (Sforce-Limit-Info), shared by the
# steps of a run so the budget check costs no extra call; minutes old at most.
API_USAGE_CACHE = "salesforce:api_usage"
API_USAGE_TTL = timedelta(minutes=15)
# The job's lease: held by the step that writes (insert, upload, finish) and renewed by a
# heartbeat while it runs, so a holder that died frees the job within LEASE_TTL; another run
# waits up to LEASE_WAIT for it, then fails the step as transient (Airflow retries it).
LEASE_TTL = timedelta(seconds=60)
LEASE_WAIT = timedelta(minutes=15)

log = logging.getLogger(__name__)


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
        """A staged file of this run; its directories exist and only their owner can enter them."""
        for directory in (self.staging_root, self.staging_root / self.job_id, self.staging):
            directory.mkdir(mode=0o700, exist_ok=True)
            if directory.stat().st_uid == os.getuid() and directory.stat().st_mode & 0o077:
                directory.chmod(0o700)  # made by an older version, or by a umask that let others in
        return self.staging / name

    def discard_staging(self) -> None:
        """Delete what this run staged (mail content at rest) once no retry can use it."""
        shutil.rmtree(self.staging, ignore_errors=True)


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


@contextlib.contextmanager
def job_lease(ctx: RunContext, store: StateStore, *, wait: timedelta = LEASE_WAIT,
              poll_seconds: float = 1.0) -> Iterator[None]:
    """Write a job's objects as its only writer: two runs of one job never interleave their writes.

    Airflow runs two runs of one DAG at once (a backfill beside the schedule, Sync Now during a
    scheduled run); each writing step takes the job's lease first, so the second waits, then
    sees what the first confirmed. The holder is the run, so a retry of the same run's step
    takes over at once; a holder that died loses the lease when its heartbeat stops.
    """
    deadline = time.monotonic() + wait.total_seconds()
    while (other := store.take_lease(ctx.job_id, ctx.run_id, LEASE_TTL)) is not None:
        if time.monotonic() > deadline:
            raise TransientError(f"job {ctx.job_id}: run {other} is still writing this job's objects")
        log.info("job %s: waiting for run %s to finish writing", ctx.job_id, other)
        time.sleep(poll_seconds)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(LEASE_TTL.total_seconds() / 3):
            try:
                store.take_lease(ctx.job_id, ctx.run_id, LEASE_TTL)
            except TransientError as exc:  # the next beat tries again; the step itself goes on
                log.warning("job %s: lease not renewed: %s", ctx.job_id, exc)

    beat = threading.Thread(target=heartbeat, name=f"lease-{ctx.job_id}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        store.release_lease(ctx.job_id, ctx.run_id)
