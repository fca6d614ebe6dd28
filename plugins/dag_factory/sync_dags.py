"""One DAG per sync job, and a visible placeholder DAG per invalid job.

Parse-time work is only reading the YAML config (no network, no database); operators,
hooks and the sync core's heavy dependencies are imported when a task runs.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs
from airflow.sdk import DAG

from email_sync.rules.config import Job, JobConfigError, JobLoadResult
from email_sync.rules.settings import JOB_FIELDS, Mode, format_setting
from operators.email_sync import (
    DAG_PREFIX,
    EXCHANGE_POOL,
    SALESFORCE_POOL,
    STEP_TASK_IDS,
    BulkInsertTasksOperator,
    ExtractFolderMailOperator,
    FilterByModeOperator,
    FinishSyncOperator,
    MatchRecipientsOperator,
    UploadAttachmentsOperator,
)
from timetables.sync_window import SyncWindowTimetable

TAGS = ["email-sync"]
# The error DAG of the policy's own errors (and a missing config directory): job_id None.
POLICY_ERRORS_KEY = "policy"
# What Airflow accepts as a DAG id (ASCII only, to be safe), and its length limit.
_DAG_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")
# Airflow's config-backed DAG defaults that build_sync_dag does not set itself.
_CONFIG_DEFAULTED_DAG_ARGS = ("max_active_tasks", "max_consecutive_failed_dag_runs", "disable_bundle_versioning")
TASK_ARGS: dict[str, Any] = {
    "owner": "email-sync",
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
    "execution_timeout": timedelta(hours=2),
}


def dag_id_for(job_id: str) -> str:
    return f"{DAG_PREFIX}{job_id}"


def config_dag_args() -> dict[str, Any]:
    """The DAG arguments Airflow defaults from its config, evaluated once for a whole DAG file.

    Airflow evaluates these defaults for every DAG, and each config lookup scans the process
    environment (tens of µs, a measurable share of a thousand DAGs). The values come from the
    DAG class's own default factories, so they are exactly what Airflow would have set.
    """
    fields = attrs.fields_dict(DAG)
    return {
        name: fields[name].default.factory()
        for name in _CONFIG_DEFAULTED_DAG_ARGS
        if name in fields and isinstance(fields[name].default, attrs.Factory)
    }


def build_sync_dag(job: Job, *, dag_args: Mapping[str, Any] | None = None) -> DAG:
    """The DAG of one valid job: extract → filter → match → insert → upload → finish.

    ``dag_args``: :func:`config_dag_args`, passed by a caller building many DAGs (read here
    otherwise). The operators need no arguments of their own (see ``operators.email_sync``).
    """
    s = job.settings
    window = s.window
    with DAG(
        **(config_dag_args() if dag_args is None else dag_args),
        dag_id=dag_id_for(job.job_id),
        description=f"{s.mailbox} → Salesforce, mode {s.mode.value}" + (" (OFF: paused, syncs nothing)" if s.mode is Mode.OFF else ""),
        doc_md=_doc(job),
        schedule=_timetable(s.frequency_minutes, window.weekdays, window.start, window.end, s.timezone, s.lookback_days),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=s.mode is Mode.OFF,
        tags=[*TAGS, f"mode:{s.mode.value}"],
        params={},
    ) as dag:
        # Task arguments are passed directly rather than as DAG default_args: Airflow deep-copies
        # default_args for every task, a measurable share of parsing a thousand DAGs.
        ids = STEP_TASK_IDS
        extract = ExtractFolderMailOperator(task_id=ids["extract"], pool=EXCHANGE_POOL, **TASK_ARGS)
        filtered = FilterByModeOperator(task_id=ids["filter"], **TASK_ARGS)
        matched = MatchRecipientsOperator(task_id=ids["match"], pool=SALESFORCE_POOL, **TASK_ARGS)
        inserted = BulkInsertTasksOperator(task_id=ids["insert"], pool=SALESFORCE_POOL, **TASK_ARGS)
        uploaded = UploadAttachmentsOperator(task_id=ids["upload"], pool=SALESFORCE_POOL, **TASK_ARGS)
        finished = FinishSyncOperator(task_id=ids["finish"], pool=EXCHANGE_POOL, **TASK_ARGS)
        extract >> filtered >> matched >> inserted >> uploaded >> finished
    return dag


@functools.lru_cache(maxsize=4096)
def _timetable(
    frequency_minutes: int, days: tuple[int, ...], start: str, end: str, timezone: str, lookback_days: int
) -> SyncWindowTimetable:
    """One timetable per distinct schedule, shared by the DAGs that have it.

    A timetable is immutable, and Airflow checks each DAG's against its ``Timetable`` protocol
    (reading ``summary`` and ``description``) and validates it: computed once per schedule
    instead of once per DAG. Arguments come from validated settings (ints, strs, a tuple).
    """
    return SyncWindowTimetable(
        frequency_minutes=frequency_minutes, days=days, start=start, end=end,
        timezone=timezone, lookback_days=lookback_days,
    )


def config_errors_by_job(loaded: JobLoadResult) -> dict[str, list[JobConfigError]]:
    """The errors each config-error DAG shows, by job id (``"policy"``: the policy's own).

    A job stopped by an invalid policy (``blocked_by_policy``) gets its own entry with the
    policy's errors, so it stays visible as ``email_sync__<job>`` (its runs and history with
    it) instead of vanishing until the policy is fixed.
    """
    groups: dict[str, list[JobConfigError]] = {}
    for error in loaded.errors:
        groups.setdefault(error.job_id if error.job_id is not None else POLICY_ERRORS_KEY, []).append(error)
    policy_errors = [e for e in loaded.errors if e.job_id is None]
    for job_id in loaded.blocked_by_policy:
        group = groups.setdefault(job_id, [])
        group.extend(e for e in policy_errors if e not in group)
    return groups


def error_dag_id(job_id: str) -> str:
    """``email_sync__<job>``; for a file name Airflow cannot take as a DAG id (a space, too
    long: the job is invalid anyway), a readable id with a digest of the name, which no
    valid job id can produce (valid ids have no ``-``), so the file still shows as an error
    instead of failing the whole DAG file."""
    dag_id = dag_id_for(job_id)
    if _DAG_ID.fullmatch(dag_id):
        return dag_id
    readable = re.sub(r"[^A-Za-z0-9_.]+", "-", job_id)[:100].strip("-")
    digest = hashlib.blake2b(job_id.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
    return dag_id_for(f"{readable}-{digest}" if readable else digest)


def build_error_dag(job_id: str, errors: list[JobConfigError]) -> DAG:
    """A paused DAG that shows an invalid job in the UI; its one task fails with the errors.

    The DAG id is the job's own (:func:`error_dag_id`), so an invalid job keeps its DAG and
    run history. When the errors are the policy's, the DAG says no job syncs until the
    policy is fixed (fail closed), and where to fix it.
    """
    from airflow.providers.standard.operators.python import PythonOperator

    message = "; ".join(str(e) for e in errors)
    policy_paths = sorted({e.path for e in errors if e.job_id is None and e.path})
    if policy_paths and job_id != POLICY_ERRORS_KEY:
        description = f"CONFIG ERROR: job {job_id!r} not loaded, the policy is invalid (no job syncs): {message}"
        heading = "## Sync job not loaded: the policy is invalid"
        advice = (
            f"Fix `{policy_paths[0]}`: no job syncs while the policy is invalid, because it holds the "
            "locks and the exclusion lists. This job's own file was not checked yet."
        )
    elif policy_paths:  # the policy's own DAG (or a missing config directory)
        description = f"CONFIG ERROR: {message}"
        heading = "## Invalid sync configuration"
        advice = "No job syncs until this is fixed; every job shows as its own config-error DAG naming it."
    else:
        description = f"CONFIG ERROR: {message}"
        heading = "## Invalid sync job"
        advice = "Fix the job file; other jobs are not affected."
    with DAG(
        dag_id=error_dag_id(job_id),
        description=description[:500],
        doc_md=f"{heading}\n\n" + "\n".join(f"- {e}" for e in errors) + f"\n\n{advice} "
        "`python -m email_sync validate include/email_sync` shows every problem.",
        schedule=None,
        is_paused_upon_creation=True,
        tags=[*TAGS, "config-error"],
        default_args={"owner": "email-sync"},
    ) as dag:
        PythonOperator(task_id="config_error", python_callable=_fail, op_args=[message])
    return dag


def _fail(message: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


def _doc(job: Job) -> str:
    rows = "\n".join(
        f"| `{name}` | {format_setting(getattr(job.settings, name))} | {job.provenance[name]} |" for name in JOB_FIELDS
    )
    notes = "".join(f"\n- {n}" for n in job.notes)
    return (
        f"## Email sync: `{job.job_id}`\n\nRecords `{job.settings.mailbox}`'s email in Salesforce as completed "
        f"Tasks. Config file: `{job.path}`. Trigger = **Sync Now** (everything since the last successful sync).\n\n"
        f"| setting | effective value | from |\n|---|---|---|\n{rows}\n" + (f"\nNotes:{notes}\n" if notes else "")
    )
