"""Child process of the parse benchmarks: one fresh interpreter per measurement.

``python -m bench.parse_child <kind> <dag_folder>`` prints one JSON line (its peak RSS is taken
by the parent through :func:`bench.env.launch`, not here). Only the standard
library is imported before the timed phases, so nothing is warm that a real parse would
not have warm:

- ``dagbag``: time Airflow's import (``airflow.sdk``, ``DagBag``), then ``DagBag(folder)``;
  with ``BENCH_BREAKDOWN=1`` also, warm, how long ``load_jobs`` and building the DAGs take.
With ``BENCH_COLD=1`` everything imported after Airflow compiles from source (no bytecode
cache); otherwise the usual ``__pycache__`` is used (the parent warms it first).

- ``components``: a task process's extra work split up: importing this project's DAG
  modules, ``load_jobs(only=<its job>)``, building its one DAG (``_AIRFLOW_PARSING_CONTEXT_DAG_ID``).
"""

from __future__ import annotations

import json
import os
import sys
import time


def airflow_import() -> float:
    started = time.perf_counter()
    import airflow.sdk  # noqa: F401
    import airflow.timetables.base  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag  # noqa: F401

    elapsed = time.perf_counter() - started
    if os.environ.get("BENCH_COLD"):
        # No bytecode cache from here on: what follows compiles from source (a fresh container
        # with PYTHONDONTWRITEBYTECODE=1, like this dev machine's environment).
        import tempfile

        sys.pycache_prefix = tempfile.mkdtemp(prefix="bench-cold-pyc-")
        sys.dont_write_bytecode = True
    return elapsed


def dagbag(folder: str) -> dict:
    result: dict = {"airflow_import_seconds": airflow_import()}
    from airflow.dag_processing.dagbag import DagBag

    started, cpu_started = time.perf_counter(), time.process_time()
    bag = DagBag(dag_folder=folder)
    result["dagbag_seconds"] = time.perf_counter() - started
    # CPU time too: parsing is single-threaded and CPU-bound, and on a shared 2-core machine
    # wall time also counts the time other processes held the CPU.
    result["dagbag_cpu_seconds"] = time.process_time() - cpu_started
    result["dags"] = len(bag.dags)
    result["tasks"] = sum(len(d.tasks) for d in bag.dags.values())
    result["import_errors"] = len(bag.import_errors)
    if bag.import_errors:
        result["first_error"] = str(next(iter(bag.import_errors.values())))[-500:]
    if os.environ.get("BENCH_BREAKDOWN") and os.environ.get("EMAIL_SYNC_CONFIG_DIR"):
        from dag_factory.sync_dags import build_sync_dag, config_dag_args
        from email_sync.rules.config import default_cache_dir, load_jobs

        config = os.environ["EMAIL_SYNC_CONFIG_DIR"]
        started = time.perf_counter()
        loaded = load_jobs(config)
        result["load_jobs_seconds"] = time.perf_counter() - started  # every YAML file parsed
        started = time.perf_counter()
        load_jobs(config, cache_dir=default_cache_dir())  # as the DAG file loads (parsed files reused)
        result["load_jobs_cached_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        dag_args = config_dag_args()
        for job in loaded.jobs:
            build_sync_dag(job, dag_args=dag_args)
        result["build_dags_seconds"] = time.perf_counter() - started
    return result


def components(folder: str) -> dict:
    result: dict = {"airflow_import_seconds": airflow_import()}
    started = time.perf_counter()
    from dag_factory.sync_dags import DAG_PREFIX, build_sync_dag
    from email_sync.rules.config import load_jobs

    result["project_import_seconds"] = time.perf_counter() - started
    wanted = os.environ["_AIRFLOW_PARSING_CONTEXT_DAG_ID"]
    config = os.environ["EMAIL_SYNC_CONFIG_DIR"]
    started = time.perf_counter()
    loaded = load_jobs(config, only=wanted[len(DAG_PREFIX):])
    result["load_own_job_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    dags = [build_sync_dag(job) for job in loaded.jobs]
    result["build_own_dag_seconds"] = time.perf_counter() - started
    result["dags"] = len(dags)
    return result


if __name__ == "__main__":
    kind, folder = sys.argv[1], sys.argv[2]
    print(json.dumps({"dagbag": dagbag, "components": components}[kind](folder)))
