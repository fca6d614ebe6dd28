"""Loading job configuration from a directory: ``policy.yaml`` + ``jobs/<job_id>.yaml``.

One bad job file must never stop the others (SPEC §1), so every problem becomes a
:class:`JobConfigError` value naming the job, the field and the value, and loading goes
on. The exceptions are deliberate: an invalid policy loads no job at all, because the
policy holds the locks and the exclusion lists, and running jobs without them could sync
mail the admin excluded.

YAML is read with libyaml (``CSafeLoader``) and a YAML 1.2-style resolver: ``off``/``no``
stay strings (so ``mode: off`` means off, not false) and ``18:00`` stays a time string
(YAML 1.1 would read it as the base-60 integer 1080). Duplicate keys are errors.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from email_sync.policy import Policy, Source, merge_job_settings, parse_policy
from email_sync.settings import JobSettings, OrgSettings

JOB_ID_PATTERN = re.compile(r"^[a-z0-9_]+$")
# sync_* tables store job_id in VARCHAR(100); it is also the DAG id's suffix.
MAX_JOB_ID_LENGTH = 100
POLICY_FILE = "policy.yaml"
JOBS_DIR = "jobs"

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe YAML loader with YAML 1.2 core scalars and duplicate-key detection."""

    # Replaces (not extends) the YAML 1.1 table: no yes/no/on/off booleans, no base-60
    # numbers, no implicit timestamps, no leading-zero octals.
    yaml_implicit_resolvers: dict = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):  # config keys are plain scalars
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    ConfigLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


@dataclass(frozen=True, slots=True)
class JobConfigError:
    """One configuration problem: which job (None = the policy), field, value and why."""

    job_id: str | None
    field: str
    value: Any
    message: str
    path: str = ""

    def __str__(self) -> str:
        where = f"job {self.job_id!r}" if self.job_id is not None else "policy"
        value = repr(self.value)
        if len(value) > 80:
            value = value[:77] + "..."
        return f"{where}: field {self.field!r}: value {value}: {self.message}"


@dataclass(frozen=True, slots=True)
class Job:
    """One valid sync job: effective settings, where each came from, and notices."""

    job_id: str
    settings: JobSettings
    provenance: Mapping[str, Source]
    notes: tuple[str, ...] = ()
    path: str = ""


@dataclass(frozen=True, slots=True)
class JobLoadResult:
    """Everything a load found: the valid jobs, every error, and the org settings."""

    jobs: list[Job]
    errors: list[JobConfigError]
    org: OrgSettings
    policy: Policy

    @property
    def ok(self) -> bool:
        return not self.errors


def read_yaml(path: Path) -> Any:
    """Parse one YAML file with :class:`ConfigLoader`."""
    with path.open("rb") as handle:
        return yaml.load(handle, Loader=ConfigLoader)  # noqa: S506 - a safe loader subclass


def load_policy(config_dir: Path) -> tuple[Policy, list[JobConfigError]]:
    """The policy from ``policy.yaml``; built-in defaults when the file does not exist."""
    path = config_dir / POLICY_FILE
    if not path.exists():
        return Policy(), []
    try:
        raw = read_yaml(path)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return Policy(), [JobConfigError(None, "(file)", str(path), _first_line(exc), str(path))]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return Policy(), [JobConfigError(None, "(file)", type(raw).__name__, "must be a mapping", str(path))]
    policy, errors = parse_policy(raw)
    return policy, [JobConfigError(None, e.field, e.value, e.message, str(path)) for e in errors]


def load_jobs(config_dir: str | Path, only: str | None = None) -> JobLoadResult:
    """Load and validate every job under ``config_dir``; never raises for bad content.

    ``only`` loads just that job's file (a task run needs its own job, not a thousand):
    the cross-job mailbox check is then skipped, as the full load made on every DAG-folder
    parse already refused such jobs.
    """
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        error = JobConfigError(None, "(dir)", str(config_dir), "config directory not found", str(config_dir))
        return JobLoadResult([], [error], OrgSettings(), Policy())
    policy, errors = load_policy(config_dir)
    if errors:
        return JobLoadResult([], errors, policy.org, policy)

    jobs: list[Job] = []
    if only is not None:
        path = config_dir / JOBS_DIR / f"{only}.yaml"
        job, job_errors = load_job(path, policy) if path.is_file() else (None, [])
        return JobLoadResult([job] if job else [], errors + job_errors, policy.org, policy)
    for path in _job_files(config_dir / JOBS_DIR, errors):
        job, job_errors = load_job(path, policy)
        errors.extend(job_errors)
        if job is not None:
            jobs.append(job)
    jobs, duplicate_errors = _drop_duplicate_mailboxes(jobs)
    errors.extend(duplicate_errors)
    return JobLoadResult(jobs, errors, policy.org, policy)


def _job_files(jobs_dir: Path, errors: list[JobConfigError]) -> list[Path]:
    if not jobs_dir.is_dir():
        return []
    paths = sorted(p for p in jobs_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    for path in paths:
        if path.suffix == ".yml":
            errors.append(JobConfigError(path.stem, "(file)", path.name, "rename to .yaml", str(path)))
    return [p for p in paths if p.suffix == ".yaml"]


def load_job(path: Path, policy: Policy) -> tuple[Job | None, list[JobConfigError]]:
    """One job file, merged with the policy; the job is None when any error was found."""
    job_id = path.stem

    def error(field: str, value: Any, message: str) -> JobConfigError:
        return JobConfigError(job_id, field, value, message, str(path))

    if not JOB_ID_PATTERN.match(job_id) or len(job_id) > MAX_JOB_ID_LENGTH:
        return None, [
            error("job_id", job_id, f"file name must match {JOB_ID_PATTERN.pattern} (at most {MAX_JOB_ID_LENGTH} characters)")
        ]
    try:
        raw = read_yaml(path)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return None, [error("(file)", path.name, _first_line(exc))]
    if not isinstance(raw, dict):
        return None, [error("(file)", type(raw).__name__, "must be a mapping of setting: value")]
    merged = merge_job_settings(raw, policy)
    if merged.settings is None:
        return None, [error(e.field, e.value, e.message) for e in merged.errors]
    return Job(job_id, merged.settings, merged.provenance, merged.notes, str(path)), []


def _drop_duplicate_mailboxes(jobs: list[Job]) -> tuple[list[Job], list[JobConfigError]]:
    """Jobs sharing a mailbox would each record the same mail: none of them loads."""
    by_mailbox: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_mailbox[job.settings.mailbox].append(job)
    errors = []
    dropped = set()
    for mailbox, owners in by_mailbox.items():
        if len(owners) < 2:
            continue
        names = [j.job_id for j in owners]
        for job in owners:
            others = ", ".join(repr(n) for n in names if n != job.job_id)
            errors.append(
                JobConfigError(
                    job.job_id, "mailbox", mailbox,
                    f"also used by job {others}; a mailbox belongs to one job only (none of them loads)",
                    job.path,
                )
            )  # fmt: skip
            dropped.add(job.job_id)
    return [j for j in jobs if j.job_id not in dropped], errors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.split("\n")[:3]) if text else type(exc).__name__
