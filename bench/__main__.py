"""``python -m bench`` (or ``bash scripts/bench.sh``): the benchmark suite. See docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "plugins") not in sys.path:
    sys.path.append(str(ROOT / "plugins"))

FULL = {"sizes": (0, 1, 100, 1_000, 10_000), "task_process_sizes": (10_000,), "parse_sizes": (1, 100, 1_000, 5_000),
        "mixed": True}
QUICK = {"sizes": (0, 1, 100), "task_process_sizes": (100,), "parse_sizes": (1, 100), "mixed": True}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def _git() -> tuple[str, list[str]]:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.splitlines()
        return head or "unknown", sorted(line[3:] for line in dirty)
    except OSError:
        return "unknown", []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 0, 1, 100 emails; 1 and 100 jobs")
    parser.add_argument("--sizes", type=_ints, help="emails per measured run, e.g. 0,1,100,1000,10000")
    parser.add_argument("--task-process-sizes", type=_ints,
                        help="sizes also run with one `airflow tasks test` process per task (peak RSS per task)")
    parser.add_argument("--parse-sizes", type=_ints, help="job counts of the parse benchmark, e.g. 1,100,1000,5000")
    parser.add_argument("--parse-reps", type=int, default=5, help="fresh processes per parse measurement (median)")
    parser.add_argument("--no-mixed", action="store_true", help="skip the mixed data set (four jobs, four modes)")
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results.json; "
                                                     "--quick: bench/out/results-quick.json)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out",
                        help="scratch space: Airflow home, sandboxes' state, logs (default bench/out, gitignored)")
    args = parser.parse_args(argv)

    plan = dict(QUICK if args.quick else FULL)
    for key in ("sizes", "task_process_sizes", "parse_sizes"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    if args.no_mixed:
        plan["mixed"] = False
    output = args.output or (ROOT / "bench" / "out" / "results-quick.json" if args.quick
                             else ROOT / "bench" / "results.json")
    workdir = args.workdir.resolve()

    from importlib.metadata import version

    from bench import data, parse, pipeline, report
    from bench.env import prepare_airflow

    airflow_version = version("apache-airflow")

    started = time.perf_counter()
    head, dirty = _git()

    def log(message: str) -> None:
        print(message, flush=True)

    log(f"==> Airflow {airflow_version} on SQLite in {workdir / 'airflow'} (airflow db migrate)")
    env = prepare_airflow(workdir / "airflow")

    results: dict[str, Any] = {
        "schema_version": 1,
        "benchmark": {"quick": args.quick, "sizes": list(plan["sizes"]),
                      "task_process_sizes": list(plan["task_process_sizes"]),
                      "parse_sizes": list(plan["parse_sizes"]),
                      "parse_reps": args.parse_reps, "mixed": plan["mixed"], "main_job": pipeline.MAIN_JOB,
                      "main_job_settings": data.JOBS[pipeline.MAIN_JOB]},
        "environment": {"python": platform.python_version(), "airflow": airflow_version,
                        "cpus": os.cpu_count(), "platform": platform.platform(), "git_head": head,
                        "git_dirty": dirty, "started_at": datetime.now(UTC).replace(microsecond=0).isoformat()},
        "dataset": {"seed": data.SEED, "contacts": data.CONTACTS, "leads": data.LEADS,
                    "attachments_per_email": data.ATTACHMENTS_PER_EMAIL,
                    "attachment_tiers": [{"share": s, "min_bytes": lo, "max_bytes": hi}
                                         for s, lo, hi in data.ATTACHMENT_TIERS],
                    "inline_share": data.INLINE_SHARE, "tag_weights": data.TAGS, "folders": list(data.FOLDERS),
                    "jobs": data.JOBS, "full_mailboxes": data.FULL_MAILBOXES},
        "pipeline": {"runs": [], "task_processes": [], "tasks_test_floor": None},
        "mixed": None,
        "parse": None,
        "targets": [],
    }

    if plan["sizes"]:
        log("==> pipeline: one Sync Now run per size under dag.test (fresh sandboxes each)")
        for size in plan["sizes"]:
            results["pipeline"]["runs"].append(
                pipeline.measure_run(size, env, workdir / "pipeline" / f"run-{size}", log=log))
    if plan["task_process_sizes"]:
        log("==> one `airflow tasks test` process per task")
        results["pipeline"]["tasks_test_floor"] = pipeline.measure_tasks_test_floor(env, workdir / "pipeline" / "floor")
        log(f"    floor (one EmptyOperator): {results['pipeline']['tasks_test_floor']['peak_rss_mb']:.0f} MB")
        for size in plan["task_process_sizes"]:
            results["pipeline"]["task_processes"].append(
                pipeline.measure_task_processes(size, env, workdir / "pipeline" / f"tasks-{size}", log=log))
    if plan["mixed"]:
        mailboxes = data.FULL_MAILBOXES if not args.quick else {u: 25 for u in data.USERS}
        log(f"==> mixed data set: {sum(mailboxes.values())} emails in {len(mailboxes)} mailboxes")
        results["mixed"] = pipeline.measure_mixed(mailboxes, env, workdir / "mixed", log=log)
    if plan["parse_sizes"]:
        log(f"==> DAG-file parse through DagBag: {', '.join(map(str, plan['parse_sizes']))} jobs vs plain DAGs")
        results["parse"] = parse.measure_parse(tuple(plan["parse_sizes"]), env, workdir / "parse",
                                               reps=args.parse_reps, log=log)

    results["targets"] = report.evaluate_targets(results)
    results["environment"]["duration_seconds"] = round(time.perf_counter() - started, 1)
    report.write_json(results, output)
    print()
    print(report.table(results))
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
