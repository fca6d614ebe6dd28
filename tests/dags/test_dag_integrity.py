"""The DAG file as Airflow's own DagBag sees it: one DAG per job, invalid jobs visible."""

from __future__ import annotations

import shutil

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


def _config_copy(tmp_path, monkeypatch, **files: str):
    """The shipped config with `files` added under jobs/ (`policy` replaces policy.yaml)."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    for name, text in files.items():
        (config / ("policy.yaml" if name == "policy" else f"jobs/{name}.yaml")).write_text(text)
    monkeypatch.setenv("EMAIL_SYNC_CONFIG_DIR", str(config))
    monkeypatch.setenv("EMAIL_SYNC_CACHE_DIR", str(tmp_path / "cache"))
    return config


def _laughs(levels: int) -> str:
    """Nested aliases ("billion laughs"): 9**levels strings once expanded."""
    lines = ["  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "mode: all\nmailbox: erin@example.com\nsalesforce_user: erin@example.com\nexcluded_domains:\n" + "\n".join(lines)


def test_a_job_file_that_expands_too_far_is_its_own_config_error(tmp_path, monkeypatch):
    _config_copy(tmp_path, monkeypatch, erin=_laughs(7))  # 4.8 million nodes expanded, 500 bytes written
    bag = _bag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["email_sync__alice", "email_sync__bob", "email_sync__carol", "email_sync__erin"]
    erin = bag.dags["email_sync__erin"]
    assert "config-error" in erin.tags and erin.is_paused_upon_creation
    assert "job 'erin'" in erin.description and "nodes (aliases expanded)" in erin.description
    assert "config-error" not in bag.dags["email_sync__alice"].tags
    assert sum(p.stat().st_size for p in (tmp_path / "cache").iterdir()) < 10_000  # the expansion is not cached


def test_a_task_run_refuses_its_job_when_another_job_file_declares_its_mailbox(tmp_path, monkeypatch):
    """A task process (or `airflow dags test`) parses only its own job: the shared mailbox must
    still refuse it, or both jobs would record the same mail. The task-process parse stays as
    cheap as one DAG (no scan of every job file); the task refuses the job when it runs."""
    from airflow.sdk.exceptions import AirflowFailException

    _config_copy(tmp_path, monkeypatch, alice2=yaml.safe_dump(
        {"mode": "all", "mailbox": "Alice@Example.com", "salesforce_user": "alice@example.com"}))
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "email_sync__alice")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "extract_folder_mail")
    bag = _bag()
    assert bag.import_errors == {} and bag.dag_ids == ["email_sync__alice"]
    extract = bag.dags["email_sync__alice"].get_task("extract_folder_mail")
    with pytest.raises(AirflowFailException, match="also used by job 'alice2'"):
        extract.execute({"run_id": "manual__shared", "ti": None})


def test_an_invalid_policy_keeps_every_job_visible_as_its_own_paused_config_error(tmp_path, monkeypatch):
    _config_copy(tmp_path, monkeypatch, policy="org:\n  max_shared_relations: 51\n")
    bag = _bag()
    assert bag.import_errors == {}
    jobs = ["email_sync__alice", "email_sync__bob", "email_sync__carol"]
    assert sorted(bag.dag_ids) == [*jobs, "email_sync__policy"]
    for dag_id in jobs:
        dag = bag.dags[dag_id]  # the job's own dag_id: its runs and history stay with it
        assert "config-error" in dag.tags and dag.is_paused_upon_creation and dag.schedule is None
        assert f"job '{dag_id.removeprefix('email_sync__')}' not loaded, the policy is invalid" in dag.description
        assert "policy: field 'org.max_shared_relations': value 51" in dag.description
        assert "policy.yaml" in dag.doc_md and "no job syncs" in dag.doc_md
        assert [t.task_id for t in dag.tasks] == ["config_error"]  # fails closed: nothing syncs


def test_an_invalid_policy_is_named_by_a_task_run_of_any_job(tmp_path, monkeypatch):
    _config_copy(tmp_path, monkeypatch, policy="locked: [mood]\n")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "email_sync__bob")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "config_error")
    bag = _bag()
    assert "email_sync__bob" in bag.dag_ids and "locked[0]" in bag.dags["email_sync__bob"].description


def test_a_job_file_name_airflow_cannot_take_as_a_dag_id_does_not_hide_the_other_jobs(tmp_path, monkeypatch):
    _config_copy(tmp_path, monkeypatch, **{"my job": "mode: all\n", "x" * 245: "mode: all\n"})
    bag = _bag()
    assert bag.import_errors == {}
    assert {"email_sync__alice", "email_sync__bob", "email_sync__carol"} <= set(bag.dag_ids)
    errors = [d for d in bag.dags.values() if "config-error" in d.tags]
    assert len(errors) == 2 and all("must match" in d.description for d in errors)
    assert any(d.dag_id.startswith("email_sync__my-job-") for d in errors)
