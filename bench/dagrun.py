"""Child process: one real DAG run through ``dag.test()``, measured; writes a JSON result.

``python -m bench.dagrun run <dag_id> <out.json>``, started by :mod:`bench.pipeline` with the
Airflow environment, the sandboxes' Connections and ``EMAIL_SYNC_CONFIG_DIR`` set
(``inspect <dag_id> <out.json> <run_id>`` only reads an existing run's TaskInstances). Under
``dag.test()`` all six tasks run in this one process, one after the other, so:

- wall time per task: the TaskInstance's ``start_date``/``end_date`` in the metadata DB;
- memory: a sampler thread reads this process's resident set (``/proc/self/statm``) every
  10 ms; a task's peak RSS is the highest sample between its start and end. The process's
  overall peak is ``ru_maxrss`` (the parent also reads it, through :mod:`bench.launch`).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


def current_rss() -> int:
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[1]) * PAGE


class RssSampler(threading.Thread):
    """Samples the process's resident set every ``interval`` seconds: (unix time, bytes)."""

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.time(), current_rss()))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.samples.append((time.time(), current_rss()))

    def peak(self, start: float, end: float) -> int:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside) if inside else 0


def task_rows(run: Any, dag: Any, sampler: RssSampler | None = None) -> list[dict[str, Any]]:
    """Per TaskInstance: state, wall time (start/end dates), sampled peak RSS, returned counts (XCom)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    tasks: list[dict[str, Any]] = []
    order = {t.task_id: i for i, t in enumerate(dag.topological_sort())} if dag is not None else {}
    with create_session() as session:
        tis = sorted(run.get_task_instances(session=session), key=lambda ti: order.get(ti.task_id, 99))
        for ti in tis:
            start, end = ti.start_date, ti.end_date
            xcom = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=ti.task_id,
                                                      key="return_value")).first()
            value = XComModel.deserialize_value(xcom) if xcom is not None else None
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            tasks.append({
                "task_id": ti.task_id,
                "state": str(getattr(ti.state, "value", ti.state)),
                "seconds": round((end - start).total_seconds(), 3) if start and end else None,
                "peak_rss_mb": round(sampler.peak(start.timestamp(), end.timestamp()) / MB, 1)
                if sampler is not None and start and end else None,
                "counts": value if isinstance(value, dict) else None,
            })
    return tasks


def inspect(dag_id: str, out: Path, run_id: str) -> int:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).one()
        session.expunge(run)
    out.write_text(json.dumps({"dag_id": dag_id, "run_id": run_id, "tasks": task_rows(run, None)}, indent=1,
                              default=str))
    return 0


def main(dag_id: str, out: Path) -> int:
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    import airflow  # noqa: F401  (timed: Airflow's own import)
    from airflow.dag_processing.dagbag import DagBag

    imported = time.perf_counter()
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    parsed = time.perf_counter()
    if bag.import_errors or dag_id not in bag.dags:
        raise SystemExit(f"DAG {dag_id} not loaded: {bag.import_errors}")
    dag = bag.dags[dag_id]
    for task in dag.tasks:  # measure one attempt: a failure shows as a failed task, not as retries
        task.retries = 0
        task.retry_delay = timedelta(0)
    rss_before_run = current_rss()
    run = dag.test(logical_date=None)  # a Sync Now: everything since the last sync (here: lookback)
    finished = time.perf_counter()
    sampler.stop()
    tasks = task_rows(run, dag, sampler)
    result = {
        "dag_id": dag_id,
        "run_id": run.run_id,
        "state": str(getattr(run.state, "value", run.state)),
        "airflow_import_seconds": round(imported - started, 3),
        "dagbag_parse_seconds": round(parsed - imported, 3),
        "dag_test_seconds": round(finished - parsed, 3),
        "rss_before_run_mb": round(rss_before_run / MB, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_samples": len(sampler.samples),
        "tasks": tasks,
    }
    out.write_text(json.dumps(result, indent=1, default=str))
    return 0 if result["state"] == "success" else 1


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "run":
        sys.exit(main(args[0], Path(args[1])))
    sys.exit(inspect(args[0], Path(args[1]), args[2]))
