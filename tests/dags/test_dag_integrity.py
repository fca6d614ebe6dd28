"""The DAG file as Airflow's own DagBag sees it: one DAG per job, invalid jobs visible."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

DAGS = PROJECT_ROOT / "dags"
CONFIG = PROJECT_ROOT / "include" / "email_sync"
TASKS = ["extract_folder_mail", "filter_by_mode", "match_recipients", "bulk_insert_tasks", "upload_attachments",
         "mark_synced_and_summarize"]


def _bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_job_becomes_one_dag_with_tags_retries_and_its_schedule():
    bag = _bag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["email_sync__alice", "email_sync__bob", "email_sync__carol"]
    alice = bag.dags["email_sync__alice"]
    assert {"email-sync", "mode:all"} <= set(alice.tags)
    assert alice.max_active_runs == 1 and alice.catchup is False
    assert alice.timetable.summary == "every 30 min, Mon–Fri 08:00–18:00 Europe/Berlin"
    assert [t.task_id for t in alice.topological_sort()] == TASKS
    for task in alice.tasks:
        assert task.retries == 3 and task.retry_exponential_backoff
    assert "| `mode` | all | user |" in alice.doc_md
    assert "| `alternate_email_fields` | true | locked |" in alice.doc_md


def test_an_invalid_job_shows_as_a_config_error_dag_and_the_others_still_load(tmp_path, monkeypatch):
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    (config / "jobs" / "erin.yaml").write_text(yaml.safe_dump(
        {"mode": "all", "mailbox": "erin@example.com", "salesforce_user": "erin@example.com", "frequency_minutes": 5}))
    monkeypatch.setenv("EMAIL_SYNC_CONFIG_DIR", str(config))
    bag = _bag()
    assert bag.import_errors == {}
    assert {"email_sync__alice", "email_sync__bob", "email_sync__carol", "email_sync__erin"} == set(bag.dag_ids)
    erin = bag.dags["email_sync__erin"]
    assert "config-error" in erin.tags
    assert "erin" in erin.description and "frequency_minutes" in erin.description and "5" in erin.description
    assert [t.task_id for t in erin.tasks] == ["config_error"]


def test_a_task_run_parses_only_its_own_dag(monkeypatch):
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "email_sync__bob")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "extract_folder_mail")
    assert _bag().dag_ids == ["email_sync__bob"]


def test_mode_off_dag_is_paused_on_creation(tmp_path, monkeypatch):
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    (config / "jobs" / "frank.yaml").write_text(yaml.safe_dump({"mailbox": "frank@example.com"}))
    monkeypatch.setenv("EMAIL_SYNC_CONFIG_DIR", str(config))
    frank = _bag().dags["email_sync__frank"]
    assert frank.is_paused_upon_creation is True and "OFF" in frank.description


@pytest.mark.parametrize("task_id", TASKS)
def test_operators_render_no_secret_or_mail_content(task_id):
    task = _bag().dags["email_sync__alice"].get_task(task_id)
    rendered = {name: getattr(task, name) for name in task.template_fields}
    assert rendered == {}  # ids only, and none of them templated
