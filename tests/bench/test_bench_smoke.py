"""Smoke test of the benchmark suite (bench/): it runs, and its results have the agreed shape.

Not a benchmark: no timing is asserted. Two tiny real DAG runs (0 and 1 email) through the
same command as ``bash scripts/bench.sh``; the empty run must make no Salesforce call.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.timeout(300)


def test_quick_data_and_a_tiny_benchmark_run(tmp_path):
    from bench.data import USERS, build_dataset

    first = build_dataset({user: 25 for user in USERS})
    again = build_dataset({user: 25 for user in USERS}, now=None)
    assert first.stats == again.stats and first.jobs == again.jobs  # fixed seed: the same data every time
    assert first.stats["emails"] == 100 and first.stats["attachments"] == 32
    assert {j["mode"] for j in first.jobs.values()} == {"all", "designated", "off"}
    assert first.stats["contacts"] == 3_500 and first.stats["leads"] == 1_500

    output = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", "0,1", "--task-process-sizes=",
         "--parse-sizes=", "--no-mixed", "--output", str(output), "--workdir", str(tmp_path / "out")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    results = json.loads(output.read_text())
    assert list(results) == ["schema_version", "benchmark", "environment", "dataset", "pipeline", "mixed", "parse",
                             "targets"]
    empty, one = results["pipeline"]["runs"]
    assert (empty["emails"], one["emails"]) == (0, 1)
    assert empty["status"] == one["status"] == "success"
    assert empty["salesforce_calls"] == {"total": 0, "by_operation": {}}
    # The data is fixed, so the counts are exact: one email costs the owner lookup and the
    # Contact and Lead lookups (two Composite calls) and the Task field sizes (describe) ...
    assert one["salesforce_calls"] == {"total": 3, "by_operation": {"composite": 2, "describe": 1}}
    # ... and on the EWS side: folder lookups, one FindItem per folder, one GetItem.
    assert one["ews_requests"] == {"total": 9, "by_operation": {"FindFolder": 1, "FindItem": 3, "GetFolder": 4,
                                                                 "GetItem": 1}}
    assert empty["ews_requests"]["total"] == 8  # the same, without GetItem
    assert [t["task_id"] for t in one["tasks"]] == [
        "extract_folder_mail", "filter_by_mode", "match_recipients", "bulk_insert_tasks", "upload_attachments",
        "mark_synced_and_summarize"]
    for run in (empty, one):
        assert {"salesforce_calls", "ews_requests", "tasks", "run_seconds", "emails_per_second", "process",
                "summary"} <= set(run)
        assert {"seconds", "peak_rss_mb", "salesforce_calls", "ews_requests"} <= set(run["tasks"][0])
        assert {"wall_seconds", "peak_rss_mb"} <= set(run["process"])
    targets = {t["id"]: t for t in results["targets"]}
    assert targets["empty_run_salesforce_calls"]["status"] == "met"
    assert targets["salesforce_calls_10000"]["status"] == "not measured"
    assert "Targets" in result.stdout
