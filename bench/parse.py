"""DAG-file parse benchmarks: our DAG file for N jobs next to a plain DAG file of N DAGs.

Both go through Airflow's own ``DagBag`` in fresh processes (:mod:`bench.parse_child`),
interleaved, ``reps`` times each; the median is reported (the machine has 2 cores and may
be busy, so single runs are noisy).

- **ours**: ``dags/email_sync_dags.py`` with ``EMAIL_SYNC_CONFIG_DIR`` holding the shipped
  policy and N generated job files (a mix of modes, windows, time zones and options).
- **plain**: a generated file creating N DAGs of six chained ``EmptyOperator`` with a
  30-minute ``timedelta`` schedule: what Airflow costs for the same number of DAGs/tasks.
- **task process**: ``_AIRFLOW_PARSING_CONTEXT_DAG_ID`` set (what Airflow sets when a
  worker runs a task): our file then loads one job file and builds one DAG.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.env import ROOT, launch, write_config

MODES = ("all", "designated", "all", "off", "all")
TIMEZONES = ("Europe/Berlin", "America/New_York", "Europe/London", "Asia/Tokyo", "UTC")
WINDOWS = ({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"},
           {"days": ["mon", "tue", "wed", "thu", "fri", "sat"], "start": "07:00", "end": "21:00"},
           None)

PLAIN_DAG_FILE = '''"""Baseline for the parse benchmark: {n} plain DAGs of six chained EmptyOperators."""
from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

for i in range({n}):
    with DAG(dag_id=f"plain_{{i:05d}}", schedule=timedelta(minutes=30), start_date=datetime(2024, 1, 1),
             catchup=False, tags=["plain"]) as dag:
        previous = None
        for task_id in ("extract", "filter", "match", "insert", "upload", "finish"):
            task = EmptyOperator(task_id=task_id)
            if previous is not None:
                previous >> task
            previous = task
    globals()[dag.dag_id] = dag
'''


def job_settings(i: int) -> dict[str, Any]:
    """A deterministic, varied job file for user ``i``."""
    user = f"user{i:05d}"
    settings: dict[str, Any] = {"mode": MODES[i % len(MODES)], "mailbox": f"{user}@example.com",
                                "salesforce_user": f"{user}@example.com", "timezone": TIMEZONES[i % len(TIMEZONES)],
                                "frequency_minutes": (30, 60, 120)[i % 3]}
    window = WINDOWS[i % len(WINDOWS)]
    if window:
        settings["window"] = window
    if i % 4 == 1:
        settings["shared_activities"] = True
    if i % 6 == 2:
        settings.update({"record_all_attachments": True, "folders": ["Inbox", "Inbox/Clients", "Sent Items"]})
    if i % 7 == 3:
        settings["excluded_domains"] = [f"family{i}.example"]
    return settings


def write_jobs(config_dir: Path, n: int) -> Path:
    return write_config(config_dir, {f"user{i:05d}": job_settings(i) for i in range(n)})


def write_plain(folder: Path, n: int) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "plain_dags.py").write_text(PLAIN_DAG_FILE.format(n=n))
    return folder


def _child(kind: str, folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """One fresh parse process; its JSON line, with its own peak RSS from :func:`bench.env.launch`."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        measured = launch([sys.executable, "-m", "bench.parse_child", kind, str(folder)], env, out, err, timeout=900)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if measured.returncode != 0 or not lines:
        raise RuntimeError(f"parse child {kind} {folder} failed:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return {**json.loads(lines[-1]), "peak_rss_mb": measured.peak_rss_mb}


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 4) if values else None


def measure_parse(sizes: tuple[int, ...], base_env: dict[str, str], workdir: Path, *, reps: int = 3,
                  context_reps: int = 5, log: Any = print) -> dict[str, Any]:
    # Bytecode caches on (a deployed Airflow keeps them): this machine's environment sets
    # PYTHONDONTWRITEBYTECODE=1, which would make every fresh process compile the project.
    base_env = {k: v for k, v in base_env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    warm_config = write_jobs(workdir / "config-warmup", 2)
    _child("dagbag", ROOT / "dags", {**base_env, "EMAIL_SYNC_CONFIG_DIR": str(warm_config)})
    _child("components", ROOT / "dags", {**base_env, "EMAIL_SYNC_CONFIG_DIR": str(warm_config),
                                         "_AIRFLOW_PARSING_CONTEXT_DAG_ID": "email_sync__user00001"})
    rows = []
    for n in sizes:
        config = write_jobs(workdir / f"config-{n}", n)
        plain = write_plain(workdir / f"plain-{n}", n)
        ours_env = {**base_env, "EMAIL_SYNC_CONFIG_DIR": str(config)}
        _child("dagbag", ROOT / "dags", ours_env)  # steady state: parsed-YAML cache and page cache warm
        ours, base = [], []
        for rep in range(reps):  # interleaved, so drift on a shared machine hits both alike
            ours.append(_child("dagbag", ROOT / "dags", {**ours_env, **({"BENCH_BREAKDOWN": "1"} if rep == 0 else {})}))
            base.append(_child("dagbag", plain, base_env))
        for result, expected in ((ours[0], n), (base[0], n)):
            if result["import_errors"] or result["dags"] != expected:
                raise RuntimeError(f"parse of {n} jobs: {result}")
        row = {
            "jobs": n,
            "ours_seconds": _median(ours, "dagbag_seconds"),
            "plain_seconds": _median(base, "dagbag_seconds"),
            "ours_runs": [round(r["dagbag_seconds"], 3) for r in ours],
            "plain_runs": [round(r["dagbag_seconds"], 3) for r in base],
            "ours_cpu_seconds": _median(ours, "dagbag_cpu_seconds"),
            "plain_cpu_seconds": _median(base, "dagbag_cpu_seconds"),
            "ours_peak_rss_mb": round(max(r["peak_rss_mb"] for r in ours), 1),
            "plain_peak_rss_mb": round(max(r["peak_rss_mb"] for r in base), 1),
            "ours_breakdown": {"load_jobs_seconds": round(ours[0]["load_jobs_seconds"], 4),
                               "load_jobs_cached_seconds": round(ours[0]["load_jobs_cached_seconds"], 4),
                               "build_dags_seconds_warm": round(ours[0]["build_dags_seconds"], 4)},
            "airflow_import_seconds": _median(ours + base, "airflow_import_seconds"),
        }
        # The ratio compares CPU time (see parse_child.dagbag); wall-time medians are kept beside it.
        row["ratio"] = round(row["ours_cpu_seconds"] / row["plain_cpu_seconds"], 3) if row["plain_cpu_seconds"] else None
        row["wall_ratio"] = round(row["ours_seconds"] / row["plain_seconds"], 3) if row["plain_seconds"] else None
        rows.append(row)
        log(f"    {n:>5} jobs: ours {row['ours_cpu_seconds']:.3f}s CPU, plain {row['plain_cpu_seconds']:.3f}s CPU, "
            f"ratio {row['ratio']:.2f} (wall {row['wall_ratio']:.2f}; medians of {reps})")

    # A task process: only its own DAG, with the largest config directory.
    n = max(sizes)
    config = workdir / f"config-{n}"
    own = f"email_sync__user{n // 2:05d}"
    ctx_env = {**base_env, "EMAIL_SYNC_CONFIG_DIR": str(config), "_AIRFLOW_PARSING_CONTEXT_DAG_ID": own,
               "_AIRFLOW_PARSING_CONTEXT_TASK_ID": "extract_folder_mail"}
    one_plain = write_plain(workdir / "plain-1-context", 1)
    _child("dagbag", one_plain, base_env)  # its bytecode cache

    def probe(env: dict[str, str], reps_: int) -> dict[str, Any]:
        ctx, floor, parts = [], [], []
        for _ in range(reps_):
            ctx.append(_child("dagbag", ROOT / "dags", {**ctx_env, **env}))
            floor.append(_child("dagbag", one_plain, {**base_env, **env}))
            parts.append(_child("components", ROOT / "dags", {**ctx_env, **env}))
        if ctx[0]["dags"] != 1 or ctx[0]["import_errors"]:
            raise RuntimeError(f"parsing-context parse did not build exactly its own DAG: {ctx[0]}")
        return {
            "airflow_import_seconds": _median(ctx, "airflow_import_seconds"),
            "own_dag_seconds": _median(ctx, "dagbag_seconds"),
            "own_dag_runs": [round(r["dagbag_seconds"], 4) for r in ctx],
            "plain_one_dag_seconds": _median(floor, "dagbag_seconds"),
            "components": {k: _median(parts, k) for k in ("project_import_seconds", "load_own_job_seconds",
                                                         "build_own_dag_seconds")},
        }

    context = {"jobs_in_config": n, "dag_id": own, **probe({}, context_reps),
               "cold_bytecode": probe({"BENCH_COLD": "1"}, max(1, context_reps // 2 + 1))}
    log(f"    task process ({n} job files, parsing context {own}): DagBag {context['own_dag_seconds'] * 1000:.0f} ms "
        f"after Airflow's import (one plain DAG: {context['plain_one_dag_seconds'] * 1000:.0f} ms); without "
        f"bytecode cache {context['cold_bytecode']['own_dag_seconds'] * 1000:.0f} ms")
    return {"sizes": rows, "task_process": context, "reps": reps, "context_reps": context_reps}
