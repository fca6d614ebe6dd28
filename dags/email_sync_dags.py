"""Email sync: one DAG per sync job (``email_sync__<job>``) from ``include/email_sync``.

Invalid jobs appear as paused ``email_sync__<job>`` DAGs tagged ``config-error`` whose
description names the job, field and value; valid jobs are unaffected. A task run parses
only its own DAG (``get_parsing_context``). ``EMAIL_SYNC_CONFIG_DIR`` overrides the config
directory (tests, the demo, the benchmarks). Parsed job files are kept between parses in
``EMAIL_SYNC_CACHE_DIR`` (default: a per-user temp dir), reused only for unchanged bytes.
"""

from __future__ import annotations

from airflow.sdk import get_parsing_context

from dag_factory.sync_dags import DAG_PREFIX, build_error_dag, build_sync_dag, config_dag_args, dag_id_for
from email_sync.rules.config import default_cache_dir, deployment_config_dir, load_jobs

CONFIG_DIR = deployment_config_dir()

_wanted = get_parsing_context().dag_id
if _wanted and _wanted.startswith(DAG_PREFIX):  # a task process: its own job's file only
    _loaded = load_jobs(CONFIG_DIR, only=_wanted[len(DAG_PREFIX):])
else:  # every job; parsed job files are reused across parses while their bytes are unchanged
    _loaded = load_jobs(CONFIG_DIR, cache_dir=default_cache_dir())

_dag_args = config_dag_args()
for _job in _loaded.jobs:
    globals()[dag_id_for(_job.job_id)] = build_sync_dag(_job, dag_args=_dag_args)

_errors_by_job: dict[str, list] = {}
for _error in _loaded.errors:
    _errors_by_job.setdefault(_error.job_id or "policy", []).append(_error)
for _job_id, _errors in _errors_by_job.items():
    if dag_id_for(_job_id) not in globals():
        globals()[dag_id_for(_job_id)] = build_error_dag(_job_id, _errors)
