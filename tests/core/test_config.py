"""Settings, policy merge and config loading (email_sync.rules.settings/policy/config/__main__)."""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from email_sync.__main__ import main
from email_sync.rules.classify import compile_rules
from email_sync.rules.config import JobConfigError, load_jobs
from email_sync.rules.policy import Policy, Source, merge_job_settings, parse_policy
from email_sync.rules.settings import JOB_FIELDS, MatchObject, Mode, OrgSettings, Window

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT / "include" / "email_sync"
BASE_JOB = {"mode": "all", "mailbox": "u@example.com", "salesforce_user": "u@example.com"}


def write_config(root: Path, policy: str | None, jobs: dict[str, str]) -> Path:
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    if policy is not None:
        (root / "policy.yaml").write_text(policy)
    for name, text in jobs.items():
        (root / "jobs" / name).write_text(text)
    return root


def dump(values: dict[str, Any]) -> str:
    return yaml.safe_dump(values)


# --- the shipped example -----------------------------------------------------------------------


def test_example_config_is_valid() -> None:
    result = load_jobs(EXAMPLE)
    assert result.errors == []
    jobs = {j.job_id: j for j in result.jobs}
    assert sorted(jobs) == ["alice", "bob", "carol"]
    alice = jobs["alice"].settings
    assert (alice.mode, alice.timezone, alice.frequency_minutes) == (Mode.ALL, "Europe/Berlin", 30)
    assert alice.window == Window(("mon", "tue", "wed", "thu", "fri"), "08:00", "18:00")
    assert jobs["bob"].settings.mode is Mode.DESIGNATED and jobs["bob"].settings.timezone == "America/New_York"
    carol = jobs["carol"].settings
    assert carol.shared_activities and carol.record_all_attachments and not carol.owned_records_only
    assert jobs["bob"].provenance["alternate_email_fields"] is Source.LOCKED
    assert jobs["bob"].notes == ("alternate_email_fields: locked by policy; user value false ignored",)
    assert result.org.internal_domains == ("example.com",)
    assert all(j.settings.mailbox.endswith("@example.com") for j in result.jobs)


def test_validate_cli_on_example() -> None:
    out = io.StringIO()
    assert main(["validate", str(EXAMPLE)], out) == 0
    text = out.getvalue()
    assert "job alice" in text and "Mon–Fri 08:00–18:00" in text and "[locked]" in text
    assert "3 job(s) valid, 0 error(s)" in text


def test_validate_cli_as_module(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "email_sync", "validate", str(EXAMPLE)],
                        capture_output=True, text=True, cwd=PROJECT, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    write_config(tmp_path, None, {"bad.yaml": "mode: sometimes\nmailbox: b@example.com\n"})
    bad = subprocess.run([sys.executable, "-m", "email_sync", "validate", str(tmp_path)],
                         capture_output=True, text=True, cwd=PROJECT, timeout=60)  # fmt: skip
    assert bad.returncode == 1
    assert "job 'bad': field 'mode': value 'sometimes'" in bad.stdout


# --- merge precedence ------------------------------------------------------------------------


POLICY = parse_policy({
    "org": {"default_timezone": "Europe/Paris", "min_frequency_minutes": 60},
    "defaults": {"lookback_days": 3, "window": {"days": ["mon", "tue"], "start": "07:00", "end": "19:00"}},
    "locked": ["owned_records_only"],
})[0]  # fmt: skip


def test_precedence_default_policy_user_locked() -> None:
    merged = merge_job_settings({**BASE_JOB, "lookback_days": 5, "owned_records_only": True}, POLICY)
    assert merged.errors == ()
    s = merged.settings
    assert s is not None
    assert (s.lookback_days, merged.provenance["lookback_days"]) == (5, Source.USER)
    assert (s.frequency_minutes, merged.provenance["frequency_minutes"]) == (120, Source.DEFAULT)
    assert (s.timezone, merged.provenance["timezone"]) == ("Europe/Paris", Source.DEFAULT)
    assert (s.owned_records_only, merged.provenance["owned_records_only"]) == (False, Source.LOCKED)
    assert merged.notes == ("owned_records_only: locked by policy; user value true ignored",)
    without = merge_job_settings(BASE_JOB, POLICY)
    assert without.settings is not None and without.settings.lookback_days == 3
    assert without.provenance["lookback_days"] is Source.POLICY


def test_partial_window_keeps_policy_values() -> None:
    merged = merge_job_settings({**BASE_JOB, "window": {"end": "17:30"}}, POLICY)
    assert merged.settings is not None
    assert merged.settings.window == Window(("mon", "tue"), "07:00", "17:30")


def test_user_exclusions_add_to_admin_lists() -> None:
    policy = parse_policy({"org": {"excluded_domains": ["admin.example"], "excluded_addresses": ["x@admin2.example"]}})[0]
    merged = merge_job_settings({**BASE_JOB, "excluded_domains": ["mine.example"], "excluded_addresses": []}, policy)
    assert merged.settings is not None
    rules = compile_rules(merged.settings, policy.org)
    assert "admin.example" in rules.excluded_domains and "mine.example" in rules.excluded_domains
    assert rules.excluded_addresses == {"x@admin2.example"}


VALID_POLICY_VALUES: dict[str, Any] = {
    "mode": "designated", "frequency_minutes": 90, "window": {"days": ["sat"], "start": "10:00", "end": "12:00"},
    "timezone": "Asia/Tokyo", "lookback_days": 7, "folders": ["Inbox/Clients"], "activity_type": "Call",
    "record_all_attachments": True, "alternate_email_fields": False, "match_objects": ["leads"],
    "owned_records_only": True, "shared_activities": True,
}  # fmt: skip
LOCKABLE = sorted(name for name, spec in JOB_FIELDS.items() if not spec.per_job)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)


@given(st.sampled_from(LOCKABLE), json_values, st.booleans())
@settings(max_examples=300, deadline=None)
def test_locked_setting_always_equals_policy_value(name: str, user_value: Any, has_default: bool) -> None:
    defaults = {name: VALID_POLICY_VALUES[name]} if has_default and name in VALID_POLICY_VALUES else {}
    policy, errors = parse_policy({"defaults": defaults, "locked": [name]})
    assert errors == []
    expected = policy.fallback(name)[0]
    base = {**BASE_JOB, "mode": "designated"} if name == "mode" else dict(BASE_JOB)
    merged = merge_job_settings({**base, name: user_value}, policy)
    assert merged.errors == (), merged.errors
    assert merged.settings is not None
    assert getattr(merged.settings, name) == expected
    assert merged.provenance[name] is Source.LOCKED
    assert any(n.startswith(f"{name}: locked by policy; user value") for n in merged.notes)


# --- errors name the job and the field ------------------------------------------------------------

BAD_VALUES: list[tuple[str, Any, str]] = [
    ("mode", "sometimes", "one of off, all, designated"),
    ("mode", False, "one of off, all, designated"),
    ("mailbox", "not-an-address", "email address"),
    ("mailbox", None, "email address"),
    ("salesforce_user", "00512345", "User Id"),
    ("salesforce_user", "bob", "username"),
    ("frequency_minutes", 29, "between 30 and 1440"),
    ("frequency_minutes", 1441, "between 30 and 1440"),
    ("frequency_minutes", "30", "whole number"),
    ("frequency_minutes", True, "whole number"),
    ("window", {"start": "18:00", "end": "08:00"}, "across midnight"),
    ("window", {"start": "22:00", "end": "22:00"}, "across midnight"),
    ("window", {"start": "25:00"}, "HH:MM"),
    ("window", {"end": "24:01"}, "HH:MM"),
    ("window", {"start": "24:00"}, "23:59"),
    ("window", {"start": 8}, "quoted time"),
    ("window", {"days": []}, "at least one day"),
    ("window", {"days": ["funday"]}, "mon tue"),
    ("window", {"stat": "08:00"}, "unknown key"),
    ("window", "9-5", "mapping"),
    ("timezone", "Mars/Olympus", "IANA"),
    ("timezone", "", "IANA"),
    ("lookback_days", 0, "between 1 and 30"),
    ("lookback_days", 31, "between 1 and 30"),
    ("folders", [], "at least one"),
    ("folders", "Inbox", "list"),
    ("folders", [""], "non-empty"),
    ("activity_type", "", "non-empty"),
    ("activity_type", 5, "non-empty"),
    ("record_all_attachments", "yes", "true or false"),
    ("alternate_email_fields", 1, "true or false"),
    ("match_objects", [], "contacts, leads or both"),
    ("match_objects", ["accounts"], "contacts or leads"),
    ("owned_records_only", "false", "true or false"),
    ("shared_activities", None, "true or false"),
    ("excluded_addresses", ["nope"], "email address"),
    ("excluded_domains", ["a b"], "domain"),
    ("mailbx", "x@example.com", "did you mean mailbox?"),
]


@given(
    st.sampled_from(BAD_VALUES),
    st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True),
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_config_errors_name_job_and_field(bad: tuple[str, Any, str], job_id: str) -> None:
    field, value, words = bad
    with tempfile.TemporaryDirectory() as tmp:
        root = write_config(Path(tmp), None, {
            f"{job_id}.yaml": dump({**BASE_JOB, "mailbox": f"{job_id}@example.com", field: value}),
            "zz_other_ok.yaml": dump({**BASE_JOB, "mailbox": "other@example.com"}),
        })  # fmt: skip
        result = load_jobs(root)
    mine = [e for e in result.errors if e.job_id == job_id]
    assert mine, result.errors
    assert all(e.field == field or e.field.startswith((f"{field}.", f"{field}[")) for e in mine), mine
    assert any(words in e.message for e in mine), mine
    assert f"job {job_id!r}: field {mine[0].field!r}" in str(mine[0])
    assert [j.job_id for j in result.jobs] == ["zz_other_ok"]  # the other job still loads


@pytest.mark.parametrize(
    ("job", "field", "words"),
    [
        ({"mailbox": "a@example.com", "mode": "all"}, "salesforce_user", "required when mode is all"),
        ({"mode": "off"}, "mailbox", "is required"),
        ({**BASE_JOB, "frequency_minutes": 45}, "frequency_minutes", "at least 60"),
    ],
)
def test_cross_field_errors(job: dict[str, Any], field: str, words: str) -> None:
    merged = merge_job_settings(job, POLICY)
    assert merged.settings is None
    assert [(e.field, words in e.message) for e in merged.errors] == [(field, True)]


def test_mode_off_needs_no_salesforce_user() -> None:
    merged = merge_job_settings({"mailbox": "a@example.com", "mode": "off"}, Policy())
    assert merged.settings is not None and merged.settings.mode is Mode.OFF


def test_yaml_11_pitfalls_are_read_as_written(tmp_path: Path) -> None:
    write_config(tmp_path, "defaults:\n  mode: off\n", {
        "a.yaml": "mailbox: a@example.com\nmode: off\nwindow: {start: 8:00, end: 18:00}\n",
    })  # fmt: skip
    result = load_jobs(tmp_path)
    assert result.errors == []
    [job] = result.jobs
    assert job.settings.mode is Mode.OFF
    assert (job.settings.window.start, job.settings.window.end) == ("08:00", "18:00")


@pytest.mark.parametrize(
    ("name", "text", "field", "words"),
    [
        ("Bad-Name.yaml", dump(BASE_JOB), "job_id", "must match"),
        ("x.yml", dump(BASE_JOB), "(file)", "rename to .yaml"),
        ("broken.yaml", "mode: [all\n", "(file)", "expected"),
        ("dupkey.yaml", "mode: all\nmode: off\n", "(file)", "duplicate key 'mode'"),
        ("list.yaml", "- mode\n", "(file)", "mapping"),
        ("empty.yaml", "", "(file)", "mapping"),
    ],
)
def test_file_level_errors(tmp_path: Path, name: str, text: str, field: str, words: str) -> None:
    write_config(tmp_path, None, {name: text, "ok.yaml": dump(BASE_JOB)})
    result = load_jobs(tmp_path)
    [error] = result.errors
    assert (error.job_id, error.field) == (Path(name).stem, field)
    assert words in error.message
    assert [j.job_id for j in result.jobs] == ["ok"]


def test_duplicate_mailbox_names_both_jobs(tmp_path: Path) -> None:
    write_config(tmp_path, None, {
        "a.yaml": dump({**BASE_JOB, "mailbox": "Same@Example.com"}),
        "b.yaml": dump({**BASE_JOB, "mailbox": "same@example.com"}),
        "c.yaml": dump({**BASE_JOB, "mailbox": "c@example.com"}),
    })  # fmt: skip
    result = load_jobs(tmp_path)
    assert [j.job_id for j in result.jobs] == ["c"]
    assert sorted((e.job_id, e.field) for e in result.errors) == [("a", "mailbox"), ("b", "mailbox")]
    assert "'b'" in result.errors[0].message and "'a'" in result.errors[1].message


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ("org:\n  internal_domain: [example.com]\n", "org.internal_domain"),
        ("org:\n  max_shared_relations: 51\n", "org.max_shared_relations"),
        ("org:\n  email_fields: {Contact: [Email, 'Bad Field']}\n", "org.email_fields.Contact[1]"),
        ("org:\n  email_fields: {Account: [Email]}\n", "org.email_fields.Account"),
        ("defaults:\n  lookback_days: 45\n", "defaults.lookback_days"),
        ("defaults:\n  mailbox: a@example.com\n", "defaults.mailbox"),
        ("defaults:\n  excluded_domains: [a.example]\n", "defaults.excluded_domains"),
        ("defaults:\n  frequency_minutes: 60\norg:\n  min_frequency_minutes: 90\n", "defaults.frequency_minutes"),
        ("org:\n  min_frequency_minutes: 180\n", "defaults.frequency_minutes"),
        ("locked: [mode, salesforce_user]\n", "locked[1]"),
        ("locked: [mood]\n", "locked[0]"),
        ("lockd: [mode]\n", "lockd"),
        ("org: [1]\n", "org"),
    ],
)
def test_invalid_policy_loads_no_job(tmp_path: Path, policy: str, field: str) -> None:
    write_config(tmp_path, policy, {"ok.yaml": dump(BASE_JOB)})
    result = load_jobs(tmp_path)
    assert result.jobs == []
    assert [(e.job_id, e.field) for e in result.errors] == [(None, field)]
    assert str(result.errors[0]).startswith(f"policy: field {field!r}")


def test_missing_policy_uses_builtin_defaults(tmp_path: Path) -> None:
    write_config(tmp_path, None, {"a.yaml": dump(BASE_JOB)})
    result = load_jobs(tmp_path)
    assert result.errors == [] and result.org == OrgSettings()
    settings_ = result.jobs[0].settings
    assert settings_.match_objects == (MatchObject.CONTACTS, MatchObject.LEADS)
    assert settings_.timezone == "UTC" and settings_.frequency_minutes == 120


def test_missing_config_dir(tmp_path: Path) -> None:
    result = load_jobs(tmp_path / "nope")
    assert result.jobs == [] and [e.field for e in result.errors] == ["(dir)"]


def test_error_str_is_readable() -> None:
    error = JobConfigError("alice", "window.end", "08:00", "must be later than start 18:00")
    assert str(error) == "job 'alice': field 'window.end': value '08:00': must be later than start 18:00"


def test_parsed_yaml_cache_gives_the_same_result_and_follows_edits(tmp_path: Path) -> None:
    """The DAG file keeps parsed job files between parses (speed: bench/, docs/BENCHMARKS.md)."""
    config = write_config(tmp_path / "config", (EXAMPLE / "policy.yaml").read_text(), {
        f"user_{i:04d}.yaml": dump({**BASE_JOB, "mailbox": f"user{i}@example.com", "frequency_minutes": 30 + i})
        for i in range(200)
    } | {"broken.yaml": "mode: [all\n", "dupkey.yaml": "mode: all\nmode: off\n"})  # fmt: skip
    cache = tmp_path / "cache"

    def view(result: Any) -> tuple[Any, Any]:
        return [(j.job_id, j.settings) for j in result.jobs], [str(e) for e in result.errors]

    plain = view(load_jobs(config))
    assert len(plain[0]) == 200 and len(plain[1]) == 2
    assert view(load_jobs(config, cache_dir=cache)) == plain  # cold: parses and writes the cache
    assert list(cache.iterdir()) and view(load_jobs(config, cache_dir=cache)) == plain  # warm: same result

    (config / "jobs" / "user_0007.yaml").write_text(dump({**BASE_JOB, "mailbox": "user7@example.com",
                                                          "mode": "designated"}))
    edited = load_jobs(config, cache_dir=cache)
    assert {j.job_id: j.settings.mode for j in edited.jobs}["user_0007"] is Mode.DESIGNATED
    assert view(edited) == view(load_jobs(config))


def test_parsed_yaml_cache_is_not_used_in_a_directory_others_can_write(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", None, {"a.yaml": dump(BASE_JOB)})
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert [j.job_id for j in load_jobs(config, cache_dir=shared).jobs] == ["a"]
    assert list(shared.iterdir()) == []  # nothing written where someone else could plant parsed config


@given(st.dictionaries(st.one_of(st.sampled_from(sorted(JOB_FIELDS)), st.text(max_size=10), st.integers()),
                       json_values, max_size=6))  # fmt: skip
@settings(max_examples=120, deadline=None)
def test_merge_never_raises(user: dict[Any, Any]) -> None:
    merged = merge_job_settings({**BASE_JOB, **user}, POLICY)
    assert (merged.settings is None) == bool(merged.errors)
