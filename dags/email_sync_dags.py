"""Email sync: one DAG per sync job (``email_sync__<job>``) from ``include/email_sync``.

Invalid jobs appear as paused ``email_sync__<job>`` DAGs tagged ``config-error`` whose
description names the job, field and value; valid jobs are unaffected. An invalid policy
loads no job, and every job then shows as its own config-error DAG naming the policy's
errors (besides ``email_sync__policy``). A task run parses only its own DAG
(``get_parsing_context``); a job sharing its mailbox with another is refused by its
task when it runs (the operator loads the job with the shared-mailbox check). ``EMAIL_SYNC_CONFIG_DIR`` overrides the config directory (tests, the
demo, the benchmarks). Parsed job files are kept between parses in
``EMAIL_SYNC_CACHE_DIR`` (default: a per-user temp dir), reused only for unchanged bytes.
"""

from __future__ import annotations

from airflow.sdk import get_parsing_context

from dag_factory.sync_dags import (
    DAG_PREFIX,
    build_error_dag,
    build_sync_dag,
    config_dag_args,
    config_errors_by_job,
    dag_id_for,
)
from email_sync.rules.config import default_cache_dir, deployment_config_dir, load_jobs

CONFIG_DIR = deployment_config_dir()

_wanted = get_parsing_context().dag_id
if _wanted and _wanted.startswith(DAG_PREFIX):  # a task process: its own job's file only
    # The shared-mailbox scan reads every job file; the operator makes it when the task runs.
    _loaded = load_jobs(CONFIG_DIR, only=_wanted[len(DAG_PREFIX):], shared_mailbox_check=False)
else:  # every job; parsed job files are reused across parses while their bytes are unchanged
    _loaded = load_jobs(CONFIG_DIR, cache_dir=default_cache_dir())

_dag_args = config_dag_args()
for _job in _loaded.jobs:
    globals()[dag_id_for(_job.job_id)] = build_sync_dag(_job, dag_args=_dag_args)

for _job_id, _errors in config_errors_by_job(_loaded).items():
    if dag_id_for(_job_id) not in globals():
        _error_dag = build_error_dag(_job_id, _errors)
        globals()[_error_dag.dag_id] = _error_dag
