"""Run-size benchmarks: real DAG runs against freshly seeded sandboxes, measured.

Each measured run gets its own world: a new :class:`~sandbox.stack.SandboxStack` seeded
with :mod:`bench.data`, a new state store, staging directory and config directory (the
shipped ``policy.yaml`` + the generated job files). The sandboxes stay in this process
(threads on loopback ports) and count every request; the DAG runs in child processes
with the Connections pointing at them, so a child's peak RSS is the product's alone.

Two ways to run one DAG run:

- ``dag.test``: one child (:mod:`bench.dagrun`) runs all six tasks in one process, as
  ``dag.test()`` does. Wall time per task from the TaskInstances, per-task RSS sampled.
- ``task processes``: the run is created (``airflow dags reserialize`` + ``dags
  trigger``), then every task runs in its own ``airflow tasks test <dag> <task> <run>``
  process, as a worker would run it; each process's wall time and peak RSS through
  ``wait4`` in :mod:`bench.launch` (not here: see :func:`bench.env.launch`). ``tasks
  test`` runs Airflow's execution API in-process, so its floor is measured too (the same
  command on a one-EmptyOperator DAG).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.data import Dataset, build_dataset
from bench.env import Measured, run_measured, tail, write_config

TASKS = ("extract_folder_mail", "filter_by_mode", "match_recipients", "bulk_insert_tasks", "upload_attachments",
         "mark_synced_and_summarize")
MAIN_JOB = "ana"  # mode all, shared activities, every attachment: the heaviest job


class BenchFailure(RuntimeError):
    pass


def _world(dataset: Dataset, workdir: Path) -> tuple[Path, Path, Path]:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = write_config(workdir / "config", dataset.jobs)
    return config, workdir / "state.db", workdir / "staging"


def _env(base_env: dict[str, str], stack: Any, config: Path, state_db: Path, staging: Path) -> dict[str, str]:
    env = {**base_env, **stack.environment(state_db, staging, max_wait=30), "EMAIL_SYNC_CONFIG_DIR": str(config)}
    return env


def _calls(counter: Any) -> dict[str, Any]:
    snapshot = {k: v for k, v in sorted(counter.snapshot().items()) if v}
    return {"total": sum(snapshot.values()), "by_operation": snapshot}


def _org_state(stack: Any) -> dict[str, int]:
    org = stack.salesforce.org
    tasks = org.records("Task")
    files = org.records("ContentVersion")
    return {"tasks": len(tasks), "files": len(files),
            "file_bytes": sum(int(f.get("ContentSize") or 0) for f in files)}


def _run_summary(counts_by_task: dict[str, Any]) -> dict[str, Any]:
    return dict(counts_by_task.get("mark_synced_and_summarize") or {})


def _dag_test(env: dict[str, str], dag_id: str, workdir: Path, label: str) -> tuple[Measured, dict[str, Any]]:
    out = workdir / f"{label}.json"
    measured = run_measured([sys.executable, "-m", "bench.dagrun", "run", dag_id, str(out)], env,
                            workdir / f"{label}.log")
    if not out.exists():
        raise BenchFailure(f"{label}: the DAG run child failed (exit {measured.returncode}):\n"
                           f"{tail(workdir / f'{label}.log')}")
    return measured, json.loads(out.read_text())


def _task_rows(child: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for task in child["tasks"]:
        counts = task.get("counts") or {}
        rows.append({
            "task_id": task["task_id"], "state": task["state"], "seconds": task["seconds"],
            "peak_rss_mb": task["peak_rss_mb"],
            "salesforce_calls": counts.get("salesforce_calls", 0) if task["task_id"] != TASKS[-1] else 0,
            "ews_requests": sum((counts.get("source_requests") or {}).values()) if task["task_id"] != TASKS[-1]
            else None,
        })
    # the last task's counts are the run summary (sums); its own EWS requests are the rest
    if rows and rows[-1]["task_id"] == TASKS[-1]:
        summary = child["tasks"][-1].get("counts") or {}
        own = summary.get("source_requests", 0) - sum(r["ews_requests"] or 0 for r in rows[:-1])
        rows[-1]["ews_requests"] = max(own, 0)
    return rows


def measure_run(size: int, base_env: dict[str, str], workdir: Path, *,
                log: Any = print) -> dict[str, Any]:
    """One Sync Now run of the main job over ``size`` emails, under ``dag.test`` (one process)."""
    dataset = build_dataset({MAIN_JOB: size})
    config, state_db, staging = _world(dataset, workdir)
    from sandbox.stack import SandboxStack

    started = time.perf_counter()
    with SandboxStack.start(dataset.ews, dataset.salesforce) as stack:
        seeded = time.perf_counter() - started
        stack.ews.calls.reset()
        stack.salesforce.calls.reset()
        env = _env(base_env, stack, config, state_db, staging)
        measured, child = _dag_test(env, f"email_sync__{MAIN_JOB}", workdir, "run")
        sf, ews = _calls(stack.salesforce.calls), _calls(stack.ews.calls)
        org = _org_state(stack)
    tasks = _task_rows(child)
    run_seconds = round(sum(t["seconds"] or 0 for t in tasks), 3)
    result = {
        "emails": size,
        "attachments": dataset.stats["attachments"],
        "attachment_mb": round(dataset.stats["attachment_bytes"] / 2**20, 1),
        "job": MAIN_JOB,
        "status": child["state"],
        "salesforce_calls": sf,
        "ews_requests": ews,
        "summary": _run_summary({t["task_id"]: t.get("counts") for t in child["tasks"]}),
        "org_after": org,
        "tasks": tasks,
        "run_seconds": run_seconds,
        "emails_per_second": round(size / run_seconds, 1) if size and run_seconds else None,
        "process": {"wall_seconds": round(measured.wall_seconds, 2), "peak_rss_mb": round(measured.peak_rss_mb, 1),
                    "airflow_import_seconds": child["airflow_import_seconds"],
                    "dagbag_parse_seconds": child["dagbag_parse_seconds"],
                    "rss_before_run_mb": child["rss_before_run_mb"]},
        "seed_seconds": round(seeded, 2),
    }
    log(f"    {size:>6} emails: {child['state']}, {sf['total']} Salesforce calls, {ews['total']} EWS requests, "
        f"run {run_seconds:.1f}s, peak RSS {measured.peak_rss_mb:.0f} MB")
    if child["state"] != "success":
        raise BenchFailure(f"run of {size} emails ended {child['state']}:\n{tail(workdir / 'run.log')}")
    return result


def measure_task_processes(size: int, base_env: dict[str, str], workdir: Path, *, log: Any = print) -> dict[str, Any]:
    """The same run with every task in its own ``airflow tasks test`` process (worker-like)."""
    dataset = build_dataset({MAIN_JOB: size})
    config, state_db, staging = _world(dataset, workdir)
    dag_id = f"email_sync__{MAIN_JOB}"
    run_id = f"bench__{size}__{int(time.time())}"
    from sandbox.stack import SandboxStack

    rows = []
    with SandboxStack.start(dataset.ews, dataset.salesforce) as stack:
        env = _env(base_env, stack, config, state_db, staging)
        for label, args in (("reserialize", ["dags", "reserialize"]),
                            ("trigger", ["dags", "trigger", dag_id, "--run-id", run_id])):
            done = run_measured([sys.executable, "-m", "airflow", *args], env, workdir / f"{label}.log")
            if done.returncode:
                raise BenchFailure(f"airflow {' '.join(args)} failed:\n{tail(workdir / f'{label}.log')}")
        stack.ews.calls.reset()
        stack.salesforce.calls.reset()
        for task_id in TASKS:
            sf_before, ews_before = stack.salesforce.calls.total, stack.ews.calls.total
            measured = run_measured([sys.executable, "-m", "airflow", "tasks", "test", dag_id, task_id, run_id],
                                    env, workdir / f"{task_id}.log")
            rows.append({"task_id": task_id, "exit": measured.returncode,
                         "process_seconds": round(measured.wall_seconds, 2),
                         "peak_rss_mb": round(measured.peak_rss_mb, 1),
                         "salesforce_calls": stack.salesforce.calls.total - sf_before,
                         "ews_requests": stack.ews.calls.total - ews_before})
            if measured.returncode:
                raise BenchFailure(f"airflow tasks test {task_id} failed:\n{tail(workdir / f'{task_id}.log')}")
        sf, ews = _calls(stack.salesforce.calls), _calls(stack.ews.calls)
        inspected = workdir / "inspect.json"
        run_measured([sys.executable, "-m", "bench.dagrun", "inspect", dag_id, str(inspected), run_id], env,
                     workdir / "inspect.log")
    summary: dict[str, Any] = {}
    if inspected.exists():
        by_task = {t["task_id"]: t for t in json.loads(inspected.read_text())["tasks"]}
        for row in rows:
            row["task_seconds"] = (by_task.get(row["task_id"]) or {}).get("seconds")
            row["state"] = (by_task.get(row["task_id"]) or {}).get("state")
        summary = (by_task.get(TASKS[-1]) or {}).get("counts") or {}
    result = {"emails": size, "job": MAIN_JOB, "tasks": rows, "salesforce_calls": sf, "ews_requests": ews,
              "summary": summary, "max_task_peak_rss_mb": max(r["peak_rss_mb"] for r in rows)}
    log(f"    {size:>6} emails, one process per task: peak RSS per task "
        + ", ".join(f"{r['task_id'].split('_')[0]} {r['peak_rss_mb']:.0f}" for r in rows) + " MB")
    return result


def measure_tasks_test_floor(base_env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Peak RSS and wall time of ``airflow tasks test`` on one EmptyOperator: what Airflow itself costs."""
    shutil.rmtree(workdir, ignore_errors=True)
    dags = workdir / "dags"
    dags.mkdir(parents=True)
    (dags / "floor_dag.py").write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import DAG\n"
        "from airflow.providers.standard.operators.empty import EmptyOperator\n\n"
        "with DAG(dag_id='bench_floor', schedule=None, start_date=datetime(2024, 1, 1)) as dag:\n"
        "    EmptyOperator(task_id='noop')\n")
    env = {**base_env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    run_id = f"bench_floor__{int(time.time())}"
    for label, args in (("reserialize", ["dags", "reserialize"]),
                        ("trigger", ["dags", "trigger", "bench_floor", "--run-id", run_id])):
        done = run_measured([sys.executable, "-m", "airflow", *args], env, workdir / f"{label}.log")
        if done.returncode:
            raise BenchFailure(f"airflow {' '.join(args)} failed:\n{tail(workdir / f'{label}.log')}")
    measured = run_measured([sys.executable, "-m", "airflow", "tasks", "test", "bench_floor", "noop", run_id], env,
                            workdir / "noop.log")
    return {"process_seconds": round(measured.wall_seconds, 2), "peak_rss_mb": round(measured.peak_rss_mb, 1),
            "exit": measured.returncode}


def measure_mixed(mailboxes: dict[str, int], base_env: dict[str, str], workdir: Path, *,
                  log: Any = print) -> dict[str, Any]:
    """Every job of the mixed data set (several mailboxes, modes), one DAG run each, one org."""
    dataset = build_dataset(mailboxes)
    config, state_db, staging = _world(dataset, workdir)
    from sandbox.stack import SandboxStack

    runs = []
    with SandboxStack.start(dataset.ews, dataset.salesforce) as stack:
        env = _env(base_env, stack, config, state_db, staging)
        for job_id in mailboxes:
            stack.ews.calls.reset()
            stack.salesforce.calls.reset()
            measured, child = _dag_test(env, f"email_sync__{job_id}", workdir, f"run-{job_id}")
            tasks = _task_rows(child)
            sf, ews = _calls(stack.salesforce.calls), _calls(stack.ews.calls)
            summary = _run_summary({t["task_id"]: t.get("counts") for t in child["tasks"]})
            runs.append({
                "job": job_id, "mode": dataset.jobs[job_id]["mode"], "emails": mailboxes[job_id],
                "status": child["state"], "salesforce_calls": sf["total"], "ews_requests": ews["total"],
                "recorded": summary.get("recorded", 0), "tasks_created": summary.get("tasks_created", 0),
                "attachments_uploaded": summary.get("attachments_uploaded", 0),
                "run_seconds": round(sum(t["seconds"] or 0 for t in tasks), 2),
                "peak_rss_mb": round(measured.peak_rss_mb, 1),
            })
            log(f"    job {job_id:<7} ({runs[-1]['mode']:<10}) {mailboxes[job_id]:>5} emails: {child['state']}, "
                f"{sf['total']} Salesforce calls, {ews['total']} EWS requests, run {runs[-1]['run_seconds']:.1f}s")
            if child["state"] != "success":
                raise BenchFailure(f"mixed run of {job_id} ended {child['state']}:\n"
                                   f"{tail(workdir / f'run-{job_id}.log')}")
    total = {k: sum(r[k] for r in runs) for k in ("emails", "salesforce_calls", "ews_requests", "recorded",
                                                   "tasks_created", "attachments_uploaded")}
    return {"dataset": {k: v for k, v in dataset.stats.items() if k != "mailboxes"},
            "mailboxes": dataset.stats["mailboxes"], "runs": runs, "total": total}
