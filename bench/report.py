"""Targets, the results JSON and the readable table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TASK_SHORT = {"extract_folder_mail": "extract", "filter_by_mode": "filter", "match_recipients": "match",
              "bulk_insert_tasks": "insert", "upload_attachments": "upload", "mark_synced_and_summarize": "finish"}
# How every peak RSS in the results is taken (bench/env.py launch()).
RSS_METHOD = ("a process's peak RSS is ru_maxrss from wait4, taken by a small launcher (bench/launch.py) that "
              "spawns it, so it is that process's own peak, not one inherited from the benchmark process")
TOP_LEVEL_KEYS = ("schema_version", "benchmark", "environment", "dataset", "pipeline", "mixed", "parse", "targets")


def _run(results: dict[str, Any], emails: int) -> dict[str, Any] | None:
    return next((r for r in results["pipeline"]["runs"] if r["emails"] == emails), None)


def _target(tid: str, text: str, measured: Any, limit: float, unit: str, *, exact: bool = False,
            note: str = "") -> dict[str, Any]:
    if measured is None:
        return {"id": tid, "target": text, "measured": None, "unit": unit, "status": "not measured", "note": note}
    met = measured == limit if exact else measured <= limit
    return {"id": tid, "target": text, "measured": measured, "unit": unit, "status": "met" if met else "missed",
            "note": note}


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    empty, big = _run(results, 0), _run(results, 10_000)
    parse_rows = {r["jobs"]: r for r in (results["parse"] or {}).get("sizes", [])}
    context = (results["parse"] or {}).get("task_process")
    processes = {r["emails"]: r for r in results["pipeline"]["task_processes"]}
    floor = results["pipeline"]["tasks_test_floor"]
    targets = [
        _target("empty_run_salesforce_calls", "empty run: 0 Salesforce calls",
                empty["salesforce_calls"]["total"] if empty else None, 0, "calls", exact=True),
        _target("salesforce_calls_10000", "10,000 emails: <= 60 Salesforce calls",
                big["salesforce_calls"]["total"] if big else None, 60, "calls",
                note=("by operation: " + ", ".join(f"{k} {v}" for k, v in big["salesforce_calls"]["by_operation"].items()))
                if big else ""),
        _target("ews_requests_10000", "10,000 emails: <= 150 EWS requests",
                big["ews_requests"]["total"] if big else None, 150, "requests",
                note=("by operation: " + ", ".join(f"{k} {v}" for k, v in big["ews_requests"]["by_operation"].items()))
                if big else ""),
        _target("parse_ratio_1000", "DAG-file parse, 1,000 jobs: <= 1.2x the parse of 1,000 plain DAGs",
                parse_rows[1000]["ratio"] if 1000 in parse_rows else None, 1.2, "x",
                note=(f"CPU time, median of {results['parse']['reps']}: ours {parse_rows[1000]['ours_cpu_seconds']:.3f}s vs "
                      f"plain {parse_rows[1000]['plain_cpu_seconds']:.3f}s (wall: {parse_rows[1000]['ours_seconds']:.3f}s vs "
                      f"{parse_rows[1000]['plain_seconds']:.3f}s)"
                      if 1000 in parse_rows else "")),
        _target("task_process_parse_ms", "task process building only its own DAG: <= 50 ms beyond Airflow's import",
                round(context["own_dag_seconds"] * 1000, 1) if context else None, 50, "ms",
                note=(f"DagBag of the DAG file with the parsing context, {context['jobs_in_config']} job files; one "
                      f"plain DAG file takes {context['plain_one_dag_seconds'] * 1000:.0f} ms the same way"
                      if context else "")),
    ]
    rss_note, rss_value = "", None
    if 10_000 in processes:
        rss_value = processes[10_000]["max_task_peak_rss_mb"]
        rss_note = (f"largest 'airflow tasks test' process of the run (one process per task); that command's own "
                    f"floor is {floor['peak_rss_mb']:.0f} MB" if floor else "largest task process")
        if big:
            rss_note += f"; all six tasks in one dag.test process: {big['process']['peak_rss_mb']:.0f} MB"
    elif big:
        rss_value = big["process"]["peak_rss_mb"]
        rss_note = "all six tasks in one dag.test process (no per-task processes measured)"
    if rss_value is not None:
        rss_note += f"; {RSS_METHOD}"
    targets.append(_target("peak_rss_10000", "10,000-email run with its attachments: peak RSS <= 400 MB",
                           rss_value, 400, "MB", note=rss_note))
    return targets


def write_json(results: dict[str, Any], path: Path) -> None:
    missing = [k for k in TOP_LEVEL_KEYS if k not in results]
    if missing:
        raise ValueError(f"results lack {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: results[k] for k in TOP_LEVEL_KEYS}, indent=1, ensure_ascii=False) + "\n")


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def table(results: dict[str, Any]) -> str:
    out: list[str] = []
    env = results["environment"]
    out.append(f"Email sync benchmarks ({'quick' if results['benchmark']['quick'] else 'full'}) - "
               f"{env['cpus']} CPUs, Python {env['python']}, Airflow {env['airflow']}, git {env['git_head'][:10]}"
               + (" (dirty)" if env["git_dirty"] else ""))
    runs = results["pipeline"]["runs"]
    if runs:
        out.append("")
        out.append("Pipeline: one Sync Now DAG run of job 'ana' (mode all, shared activities, every attachment), "
                   "dag.test, all tasks in one process")
        head = (f"{'emails':>7} {'status':<8}{'SF calls':>9}{'EWS req':>8}{'run s':>8}{'emails/s':>9}{'RSS MB':>8}  "
                + " ".join(f"{s:>7}" for s in TASK_SHORT.values()) + "  (seconds per task)")
        out += [head, "-" * len(head)]
        for r in runs:
            per_task = {t["task_id"]: t["seconds"] for t in r["tasks"]}
            out.append(f"{r['emails']:>7} {r['status']:<8}{r['salesforce_calls']['total']:>9}{r['ews_requests']['total']:>8}"
                       f"{r['run_seconds']:>8.1f}{_fmt(r['emails_per_second'], '.0f'):>9}{r['process']['peak_rss_mb']:>8.0f}  "
                       + " ".join(f"{_fmt(per_task.get(t), '.2f'):>7}" for t in TASK_SHORT))
        big = runs[-1]
        out.append("")
        out.append(f"Largest run ({big['emails']} emails, {big['attachments']} attachments, {big['attachment_mb']} MB): "
                   f"recorded {big['summary'].get('recorded')}, Tasks {big['summary'].get('tasks_created')}, "
                   f"files {big['summary'].get('attachments_uploaded')}")
        out.append("  Salesforce: " + ", ".join(f"{k} {v}" for k, v in big["salesforce_calls"]["by_operation"].items()))
        out.append("  EWS:        " + ", ".join(f"{k} {v}" for k, v in big["ews_requests"]["by_operation"].items()))
        procs = {p["emails"]: p for p in results["pipeline"]["task_processes"]}
        head = f"  {'task':<27}{'seconds':>8}{'RSS MB*':>8}{'SF':>5}{'EWS':>5}"
        if big["emails"] in procs:
            head += f"{'own process: s':>16}{'RSS MB':>8}"
        out += [head]
        proc_rows = {t["task_id"]: t for t in procs.get(big["emails"], {}).get("tasks", [])}
        for t in big["tasks"]:
            line = (f"  {t['task_id']:<27}{_fmt(t['seconds'], '.2f'):>8}{_fmt(t['peak_rss_mb'], '.0f'):>8}"
                    f"{_fmt(t['salesforce_calls']):>5}{_fmt(t['ews_requests']):>5}")
            if t["task_id"] in proc_rows:
                p = proc_rows[t["task_id"]]
                line += f"{p['process_seconds']:>16.1f}{p['peak_rss_mb']:>8.0f}"
            out.append(line)
        out.append("  * RSS of the shared dag.test process while the task ran (includes earlier tasks' imports)")
        out.append(f"  {RSS_METHOD}")
        floor = results["pipeline"]["tasks_test_floor"]
        if floor:
            out.append(f"  'airflow tasks test' of one EmptyOperator (the command's own floor): "
                       f"{floor['process_seconds']:.1f}s, {floor['peak_rss_mb']:.0f} MB")
    mixed = results["mixed"]
    if mixed:
        out.append("")
        out.append(f"Mixed data set: {mixed['total']['emails']} emails in {len(mixed['runs'])} mailboxes, one DAG run per job")
        head = f"  {'job':<8}{'mode':<12}{'emails':>7}{'SF calls':>9}{'EWS req':>8}{'recorded':>9}{'files':>7}{'run s':>8}{'RSS MB':>8}"
        out.append(head)
        for r in mixed["runs"]:
            out.append(f"  {r['job']:<8}{r['mode']:<12}{r['emails']:>7}{r['salesforce_calls']:>9}{r['ews_requests']:>8}"
                       f"{r['recorded']:>9}{r['attachments_uploaded']:>7}{r['run_seconds']:>8.1f}{r['peak_rss_mb']:>8.0f}")
        t = mixed["total"]
        out.append(f"  {'total':<20}{t['emails']:>7}{t['salesforce_calls']:>9}{t['ews_requests']:>8}{t['recorded']:>9}"
                   f"{t['attachments_uploaded']:>7}")
    parse = results["parse"]
    if parse:
        out.append("")
        out.append(f"DAG-file parse through DagBag (median of {parse['reps']} fresh processes; ratio of CPU times)")
        head = (f"  {'jobs':>6}{'ours CPU s':>12}{'plain CPU s':>13}{'ratio':>7}{'ours wall s':>13}{'plain wall s':>14}"
                f"{'wall ratio':>12}{'ours RSS MB':>13}{'plain RSS MB':>14}")
        out.append(head)
        for r in parse["sizes"]:
            out.append(f"  {r['jobs']:>6}{r['ours_cpu_seconds']:>12.3f}{r['plain_cpu_seconds']:>13.3f}{r['ratio']:>7.2f}"
                       f"{r['ours_seconds']:>13.3f}{r['plain_seconds']:>14.3f}{r['wall_ratio']:>12.2f}"
                       f"{r['ours_peak_rss_mb']:>13.0f}{r['plain_peak_rss_mb']:>14.0f}")
        c = parse["task_process"]
        comp = c["components"]
        out.append(f"  task process, parsing context ({c['jobs_in_config']} job files): DagBag "
                   f"{c['own_dag_seconds'] * 1000:.1f} ms after Airflow's import ({c['airflow_import_seconds']:.2f}s); "
                   f"one plain DAG {c['plain_one_dag_seconds'] * 1000:.1f} ms; split: imports "
                   f"{comp['project_import_seconds'] * 1000:.1f} ms, load own job {comp['load_own_job_seconds'] * 1000:.1f} ms, "
                   f"build own DAG {comp['build_own_dag_seconds'] * 1000:.1f} ms")
    out.append("")
    out.append("Targets")
    for t in results["targets"]:
        out.append(f"  [{t['status']:^12}] {t['target']}: {_fmt(t['measured'])} {t['unit']}"
                   + (f"  ({t['note']})" if t["note"] else ""))
    return "\n".join(out)
