"""One DAG per sync job, and a visible placeholder DAG per invalid job.

Parse-time work is only reading the YAML config (no network, no database); operators,
hooks and the sync core's heavy dependencies are imported when a task runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from email_sync.config import Job, JobConfigError
from email_sync.settings import JOB_FIELDS, Mode, format_setting
from operators.email_sync import (
    EXCHANGE_POOL,
    SALESFORCE_POOL,
    BulkInsertTasksOperator,
    ExtractFolderMailOperator,
    FilterByModeOperator,
    FinishSyncOperator,
    MatchRecipientsOperator,
    UploadAttachmentsOperator,
)
from timetables.sync_window import SyncWindowTimetable

DAG_PREFIX = "email_sync__"
TAGS = ["email-sync"]
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


def build_sync_dag(job: Job, config_dir: str, **operator_args: Any) -> DAG:
    """The DAG of one valid job: extract → filter → match → insert → upload → finish.

    ``operator_args`` (connection ids, staging dir) go to every operator; tests and the
    demo use them, production keeps the defaults.
    """
    s = job.settings
    window = s.window
    with DAG(
        dag_id=dag_id_for(job.job_id),
        description=f"{s.mailbox} → Salesforce, mode {s.mode.value}" + (" (OFF: paused, syncs nothing)" if s.mode is Mode.OFF else ""),
        doc_md=_doc(job),
        schedule=SyncWindowTimetable(
            frequency_minutes=s.frequency_minutes, days=window.weekdays, start=window.start, end=window.end,
            timezone=s.timezone, lookback_days=s.lookback_days,
        ),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=s.mode is Mode.OFF,
        tags=[*TAGS, f"mode:{s.mode.value}"],
        params={},
    ) as dag:
        # Task arguments are passed directly rather than as DAG default_args: Airflow deep-copies
        # default_args for every task, a measurable share of parsing a thousand DAGs.
        common = {"job_id": job.job_id, "config_dir": config_dir, **TASK_ARGS, **operator_args}
        extract = ExtractFolderMailOperator(task_id="extract_folder_mail", pool=EXCHANGE_POOL, **common)
        filtered = FilterByModeOperator(task_id="filter_by_mode", **common)
        matched = MatchRecipientsOperator(task_id="match_recipients", pool=SALESFORCE_POOL, **common)
        inserted = BulkInsertTasksOperator(task_id="bulk_insert_tasks", pool=SALESFORCE_POOL, **common)
        uploaded = UploadAttachmentsOperator(task_id="upload_attachments", pool=SALESFORCE_POOL, **common)
        finished = FinishSyncOperator(
            task_id="mark_synced_and_summarize", pool=EXCHANGE_POOL,
            upstream_steps={"extract": extract.task_id, "filter": filtered.task_id, "match": matched.task_id,
                            "insert": inserted.task_id, "upload": uploaded.task_id},
            **common,
        )
        extract >> filtered >> matched >> inserted >> uploaded >> finished
    return dag


def build_error_dag(job_id: str, errors: list[JobConfigError]) -> DAG:
    """A paused DAG that shows an invalid job in the UI; its one task fails with the errors."""
    from airflow.providers.standard.operators.python import PythonOperator

    message = "; ".join(str(e) for e in errors)
    with DAG(
        dag_id=dag_id_for(job_id),
        description=f"CONFIG ERROR: {message}"[:500],
        doc_md="## Invalid sync job\n\n" + "\n".join(f"- {e}" for e in errors) + "\n\nFix the job file; "
        "`python -m email_sync validate include/email_sync` shows every problem. Other jobs are not affected.",
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
