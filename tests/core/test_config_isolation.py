"""One config file cannot take other jobs down, and a job is refused the same way however it
is loaded (issue 14: bounded YAML, the mailbox check with ``only=``, a broken policy)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from email_sync.rules.config import LIMITS, load_jobs, read_yaml

from tests.core.test_config import BASE_JOB, EXAMPLE, PROJECT, write_config  # noqa: F401  (one home)


def job(mailbox: str, **settings_: Any) -> str:
    return yaml.safe_dump({**BASE_JOB, "mailbox": mailbox, **settings_})


def laugh_lines(levels: int, indent: str, width: int = 9) -> str:
    """ "Billion laughs": list items, each an anchored list of `width` aliases of the one before."""
    items = [f"&l0 [{', '.join(['lol'] * width)}]"]
    items += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "".join(f"{indent}- {item}\n" for item in items)


def laughs(levels: int) -> str:
    head = "mode: all\nmailbox: erin@example.com\nsalesforce_user: erin@example.com\nexcluded_domains:\n"
    return head + laugh_lines(levels, "  ")


# --- 12. what one file may expand to ------------------------------------------------------------


def test_billion_laughs_job_is_refused_quickly_and_alone_in_a_fresh_process(tmp_path: Path) -> None:
    """A file like the issue's 660 bytes: 9 levels of 9 aliases, 387 million strings expanded."""
    bomb = laughs(9)
    assert len(bomb.encode()) < 700
    config = write_config(tmp_path / "config", (EXAMPLE / "policy.yaml").read_text(), {
        "erin.yaml": bomb, "ok.yaml": job("ok@example.com"),
    })  # fmt: skip
    script = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from email_sync.rules.config import load_jobs
        for cache in (None, Path({str(tmp_path / 'cache')!r})):
            r = load_jobs({str(config)!r}, cache_dir=cache)
            print(json.dumps([[j.job_id for j in r.jobs], [(e.job_id, e.field, e.message) for e in r.errors]]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout.splitlines()) == 2  # without and with the cache
    for line in done.stdout.splitlines():
        jobs, errors = json.loads(line)
        assert jobs == ["ok"]
        [(job_id, field, message)] = errors
        assert (job_id, field) == ("erin", "(file)")
        assert f"more than {LIMITS.max_nodes} nodes" in message and "aliases" in message
    cached = list((tmp_path / "cache").iterdir())
    assert cached and all(p.stat().st_size < 4096 for p in cached)  # only ok.yaml's few settings


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (laughs(6), f"more than {LIMITS.max_nodes} nodes (aliases expanded)"),
        ("mode: all\nfolders: &a [Inbox, *a]\n", "recursive alias *a"),
        ("mode: all\nexcluded_domains: [" + ", ".join(f"&a{i} d{i}.example" for i in range(101)) + "]\n",
         "more than 100 anchors"),
        ("mode: all\nx: &a a.example\nexcluded_domains: [" + ", ".join(["*a"] * 101) + "]\n", "more than 100 aliases"),
        ("mode: all\nfolders: " + "[" * 25 + "]" * 25 + "\n", "nested deeper than 20 levels"),
        ("a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 25)), "deeper than 20 levels (aliases expanded)"),
        ("mode: all\n# " + "x" * LIMITS.max_bytes + "\n", f"the file has {LIMITS.max_bytes + 13} bytes"),
    ],
    ids=["laughs", "recursive", "anchors", "aliases", "depth", "alias-depth", "size"],
)
def test_a_file_over_a_bound_is_that_jobs_error_and_never_cached(tmp_path: Path, text: str, words: str) -> None:
    config = write_config(tmp_path / "config", None, {"erin.yaml": text, "ok.yaml": job("ok@example.com")})
    cache = tmp_path / "cache"
    for result in (load_jobs(config), load_jobs(config, cache_dir=cache), load_jobs(config, cache_dir=cache)):
        assert [j.job_id for j in result.jobs] == ["ok"]
        [error] = result.errors
        assert (error.job_id, error.field) == ("erin", "(file)")
        assert words in error.message and "refused" in error.message, error.message
        assert str(error).startswith("job 'erin': field '(file)'")
    [cache_file] = cache.iterdir()
    entries = json.loads(cache_file.read_bytes())["entries"]
    assert [e["mailbox"] for e in entries.values()] == ["ok@example.com"]  # the refused file is not stored
    assert load_jobs(config, only="erin").errors == [error]  # a task process refuses it the same way


def test_deep_nesting_is_refused_without_crashing_the_process(tmp_path: Path) -> None:
    """30,000 nested brackets fit in 64 KiB; libyaml's own composer recurses on them in C and
    kills the process (every DAG of the DAG file with it)."""
    config = write_config(tmp_path, None, {"erin.yaml": "[" * 30_000 + "]" * 30_000, "ok.yaml": job("ok@example.com")})
    script = (f"import json; from email_sync.rules.config import load_jobs; r = load_jobs({str(config)!r}); "
              "print(json.dumps([[j.job_id for j in r.jobs], [(e.job_id, e.message) for e in r.errors]]))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    jobs, [(job_id, message)] = json.loads(done.stdout)
    assert jobs == ["ok"] and job_id == "erin" and message.startswith("refused: nested deeper than 20 levels")


def test_files_within_the_bounds_load_as_before(tmp_path: Path) -> None:
    at_limit = job("a@example.com")
    at_limit += "#" * (LIMITS.max_bytes - len(at_limit.encode()) - 1) + "\n"
    assert len(at_limit.encode()) == LIMITS.max_bytes
    policy = "org:\n  internal_domains: &own [example.com]\n  excluded_domains: *own\nlocked: &l [alternate_email_fields]\n"
    config = write_config(tmp_path, policy, {
        "a.yaml": at_limit,
        "b.yaml": job("b@example.com", excluded_addresses=[f"x{i}@spam.example" for i in range(2000)]),
        "c.yaml": "mode: all\nmailbox: &m c@example.com\nsalesforce_user: *m\nwindow: {days: &d [mon, tue], start: '08:00'}\n",
    })  # fmt: skip
    result = load_jobs(config)
    assert result.errors == []
    assert [j.job_id for j in result.jobs] == ["a", "b", "c"]
    assert result.org.excluded_domains == ("example.com",)
    assert len(result.jobs[1].settings.excluded_addresses) == 2000
    assert result.jobs[2].settings.salesforce_user == "c@example.com"


def test_yaml_is_read_as_libyaml_reads_it(tmp_path: Path) -> None:
    """The bounded composer builds the same documents, and the same errors, as libyaml's."""
    from email_sync.rules.config import ConfigLoader

    class Reference(ConfigLoader):  # the loader before the bounds: libyaml's own composer
        get_single_node = yaml.CSafeLoader.get_single_node

    texts = [
        "mode: off\nwindow: {start: 8:00, end: 18:00, days: [mon]}\nn: 08\nb: yes\nf: 1.5e3\nz: ~\nh: 0x1F\n",
        "x: &a [1, {b: [2, 3]}]\ny: *a\nz: [*a, *a]\n", "- a\n- b\n", "42", "", "# only a comment\n",
        "a: !!binary aGVsbG8=\n", "!!set {a, b}\n", "--- a\n...\n", "a: 1\na: 2\n", "a: [1\n", "--- 1\n--- 2\n",
        "? [a, b]\n: c\n", "a: !!python/name:os.system\n",
    ]
    for i, text in enumerate(texts):
        path = tmp_path / f"t{i}.yaml"
        path.write_text(text)
        outcomes = []
        for read in (read_yaml, lambda p: yaml.load(p.read_bytes(), Loader=Reference)):  # noqa: S506
            try:
                outcomes.append(("ok", read(path)))
            except yaml.YAMLError as exc:
                outcomes.append((type(exc).__name__, str(exc).split("\n")[0]))
        assert outcomes[0] == outcomes[1], text


def test_bounded_policy_refuses_every_job_and_lists_them(tmp_path: Path) -> None:
    policy = "org:\n  crm_category: CRM\ndefaults:\n  folders:\n" + laugh_lines(7, "    ")
    config = write_config(tmp_path, policy, {"a.yaml": job("a@example.com"), "b.yaml": job("b@example.com")})
    result = load_jobs(config)
    assert result.jobs == []
    [error] = result.errors
    assert (error.job_id, error.field) == (None, "(file)") and "nodes (aliases expanded)" in error.message
    assert result.blocked_by_policy == ("a", "b")


# --- 13. a shared mailbox, whichever way the jobs are loaded ---------------------------------------


def test_only_refuses_a_job_whose_mailbox_another_job_file_declares(tmp_path: Path) -> None:
    config = write_config(tmp_path, None, {
        "a.yaml": job("Same@Example.com"),
        "b.yaml": job("same@example.com"),
        "c.yaml": job("c@example.com"),
    })  # fmt: skip
    full = load_jobs(config)
    for job_id, other in (("a", "'b'"), ("b", "'a'")):
        one = load_jobs(config, only=job_id)
        assert one.jobs == []
        [error] = one.errors
        assert (error.job_id, error.field, error.value) == (job_id, "mailbox", "same@example.com")
        assert f"also used by job {other}" in error.message
        assert one.errors == [e for e in full.errors if e.job_id == job_id]  # the full load's very error
    assert [j.job_id for j in load_jobs(config, only="c").jobs] == ["c"]


def test_only_sees_a_mailbox_however_the_other_file_spells_it(tmp_path: Path) -> None:
    spellings = {
        "b.yaml": 'mode: all\nmailbox: "\\x61lice@example.com"\nsalesforce_user: b@example.com\n',  # escape
        "c.yaml": "mode: all\nmailbox: '\"Alice\" <ALICE@Example.COM.>'\nsalesforce_user: c@example.com\n",
        "d.yaml": "mode: all\nmailbox: mailto:alice@EXAMPLE.com\nsalesforce_user: d@example.com\n",
        "e.yaml": "mode: all\nx0: &m \"al\\u0069ce@example.com\"\n",  # invalid job (unknown key): never an owner
        "f.yaml": "mode: all\nmailbox: 'alİce@example.com'\nsalesforce_user: f@example.com\n",  # another address
    }
    config = write_config(tmp_path, None, {"a.yaml": job("alice@example.com"), **spellings})
    full = load_jobs(config)
    [error] = load_jobs(config, only="a").errors
    assert "also used by job 'b', 'c', 'd'" in error.message
    assert [error] == [e for e in full.errors if e.job_id == "a"]
    assert [j.job_id for j in full.jobs] == ["f"]


def test_only_ignores_an_invalid_job_with_the_same_mailbox_as_the_full_load_does(tmp_path: Path) -> None:
    config = write_config(tmp_path, None, {
        "a.yaml": job("same@example.com"),
        "b.yaml": job("same@example.com", frequency_minutes=5),
    })  # fmt: skip
    assert [j.job_id for j in load_jobs(config).jobs] == ["a"]
    assert [j.job_id for j in load_jobs(config, only="a").jobs] == ["a"]


MAILBOX_SPELLINGS = [
    "m@example.com", "M@Example.com", '"\\x6d@example.com"', "'\"M\" <m@example.com>'", "mailto:m@example.com",
    "m@example.com.", "'o''m@example.com'", "o'm@example.com", "n@example.com", "'\\x6d@example.com'",
]


@given(st.lists(st.tuples(st.sampled_from(MAILBOX_SPELLINGS), st.booleans()), min_size=1, max_size=5))
@settings(max_examples=60, deadline=None)
def test_only_gives_each_job_exactly_what_the_full_load_gives_it(tmp_path_factory: Any, jobs: list[Any]) -> None:
    config = tmp_path_factory.mktemp("config")
    write_config(config, None, {
        f"j{i}.yaml": f"mode: all\nmailbox: {spelling}\nsalesforce_user: u@example.com\n"
        + ("" if valid else "frequency_minutes: 5\n")
        for i, (spelling, valid) in enumerate(jobs)
    })  # fmt: skip
    full = load_jobs(config)
    for i in range(len(jobs)):
        one = load_jobs(config, only=f"j{i}")
        assert [(j.job_id, j.settings) for j in one.jobs] == [(j.job_id, j.settings) for j in full.jobs if j.job_id == f"j{i}"]
        assert one.errors == [e for e in full.errors if e.job_id == f"j{i}"]


def test_a_task_refuses_to_run_a_job_whose_mailbox_another_job_took_since_the_dag_was_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operators' own path: ``run_context`` loads ``only=`` its job at execute time."""
    from airflow.sdk.exceptions import AirflowFailException
    from dag_factory.sync_dags import build_sync_dag

    config = write_config(tmp_path, None, {"a.yaml": job("a@example.com")})
    [parsed] = load_jobs(config).jobs
    dag = build_sync_dag(parsed)
    (config / "jobs" / "b.yaml").write_text(job("A@example.com"))
    monkeypatch.setenv("EMAIL_SYNC_CONFIG_DIR", str(config))
    with pytest.raises(AirflowFailException, match=r"sync job 'a' is not valid any more: .*also used by job 'b'"):
        dag.get_task("extract_folder_mail").run_context({"run_id": "manual__1"})


# --- 14. a broken policy keeps every job known -------------------------------------------------------


def test_an_invalid_policy_lists_the_jobs_it_stops(tmp_path: Path) -> None:
    config = write_config(tmp_path, "org:\n  max_shared_relations: 51\n", {
        "a.yaml": job("a@example.com"), "b.yaml": "mode: [broken\n", "Bad-Name.yaml": job("x@example.com"),
        "old.yml": job("o@example.com"),
    })  # fmt: skip
    result = load_jobs(config)
    assert result.jobs == []
    assert result.blocked_by_policy == ("a", "b")  # by file name: nothing in them is read
    assert [(e.job_id, e.field) for e in result.errors] == [
        (None, "org.max_shared_relations"), ("old", "(file)"), ("Bad-Name", "job_id")]
    one = load_jobs(config, only="a")
    assert (one.jobs, one.blocked_by_policy) == ([], ("a",))
    assert [(e.job_id, e.field) for e in one.errors] == [(None, "org.max_shared_relations")]
    assert load_jobs(config, only="nope").blocked_by_policy == ()
