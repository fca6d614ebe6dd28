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

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from email_sync.rules.policy import Policy, Source, merge_job_settings, parse_policy
from email_sync.rules.settings import JobSettings, OrgSettings

JOB_ID_PATTERN = re.compile(r"^[a-z0-9_]+$")
# sync_* tables store job_id in VARCHAR(100); it is also the DAG id's suffix.
MAX_JOB_ID_LENGTH = 100
POLICY_FILE = "policy.yaml"
JOBS_DIR = "jobs"
CACHE_DIR_ENV = "EMAIL_SYNC_CACHE_DIR"
CONFIG_DIR_ENV = "EMAIL_SYNC_CONFIG_DIR"

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
    return _parse_yaml(path.read_bytes(), path)


def _parse_yaml(data: bytes, path: Path) -> Any:
    """Parse a YAML file's bytes; error marks name ``path``, as when parsing the file itself."""
    stream = io.BytesIO(data)
    stream.name = str(path)
    return yaml.load(stream, Loader=ConfigLoader)  # noqa: S506 - a safe loader subclass


def deployment_config_dir() -> Path:
    """The deployment's config directory: ``$EMAIL_SYNC_CONFIG_DIR``, else this project's
    ``include/email_sync``. The DAG file and the tasks it runs read the same one."""
    configured = os.environ.get(CONFIG_DIR_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "include" / "email_sync"


def default_cache_dir() -> Path:
    """Where parsed job files are kept between DAG-file parses: ``$EMAIL_SYNC_CACHE_DIR``,
    else a per-user directory under the system temp dir."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"email_sync-cache-{getattr(os, 'getuid', lambda: 'user')()}"


class ParsedYamlCache:
    """Parsed job files of one config directory, keyed by a digest of each file's bytes.

    YAML parsing is most of loading a thousand job files, and a DAG-file parse repeats it
    every few seconds for files that rarely change. Each file is still read on every load;
    only its parse is reused, and only for the very same bytes, parsed by the very same
    loader (the key includes this module's source and the yaml version). Only plain JSON
    values are kept (str keys; str, int, float, bool, null, lists), which JSON gives back
    exactly; anything else, and every file that fails to parse, is parsed each time. The
    cache is a JSON file (no code), in a directory owned by this user and writable by no
    one else, or it is not used; any problem reading or writing it just means no cache.
    """

    def __init__(self, cache_dir: Path, config_dir: Path) -> None:
        name = hashlib.blake2b(str(config_dir.resolve()).encode(), digest_size=12).hexdigest()
        self.path = cache_dir / f"jobs-{name}.json"
        self.version = _loader_version()
        self.enabled = _private_dir(cache_dir)
        self.entries: dict[str, Any] = self._read() if self.enabled else {}
        self.used: dict[str, Any] = {}

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != self.version or not isinstance(data.get("entries"), dict):
            return {}
        return data["entries"]

    def read_yaml(self, path: Path) -> Any:
        """What :func:`read_yaml` returns for ``path`` (same value, same errors)."""
        data = path.read_bytes()
        key = hashlib.blake2b(data, digest_size=16).hexdigest()
        if key in self.entries:
            raw = self.used[key] = self.entries[key]
            return raw
        raw = _parse_yaml(data, path)
        if _plain_json(raw):
            self.used[key] = raw
        return raw

    def save(self) -> None:
        """Write back the entries this load used, when they differ from what was read."""
        if not self.enabled or self.used.keys() == self.entries.keys():
            return
        payload = json.dumps({"version": self.version, "entries": self.used}, separators=(",", ":"))
        temporary = None
        try:
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=".jobs-", delete=False) as handle:
                temporary = handle.name
                handle.write(payload)
            os.replace(temporary, self.path)  # atomic: concurrent parses never see half a file
        except OSError:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)


def _loader_version() -> str:
    """Changes whenever parsing could: this module's source (the loader) or the yaml library."""
    digest = hashlib.blake2b(Path(__file__).read_bytes(), digest_size=12)
    digest.update(f"{yaml.__version__}:{getattr(yaml, '__with_libyaml__', False)}".encode())
    return digest.hexdigest()


def _private_dir(path: Path) -> bool:
    """Create ``path`` (0700) if needed; True when it is a directory of this user that no one
    else can write to (so nobody else can plant parsed config in it)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError:
        return False
    getuid = getattr(os, "getuid", None)
    return path.is_dir() and (getuid is None or info.st_uid == getuid()) and not info.st_mode & 0o022


def _plain_json(value: Any) -> bool:
    """Whether ``json.loads(json.dumps(value))`` gives back exactly ``value`` (types included)."""
    kind = type(value)
    if kind in (str, int, float, bool) or value is None:
        return True
    if kind is list:
        return all(_plain_json(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain_json(v) for k, v in value.items())
    return False


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


def load_jobs(config_dir: str | Path, only: str | None = None, *, cache_dir: Path | None = None) -> JobLoadResult:
    """Load and validate every job under ``config_dir``; never raises for bad content.

    ``only`` loads just that job's file (a task run needs its own job, not a thousand):
    the cross-job mailbox check is then skipped, as the full load made on every DAG-folder
    parse already refused such jobs. ``cache_dir`` keeps the job files' parsed YAML there
    between full loads (:class:`ParsedYamlCache`); the result is the same with or without.
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
    cache = ParsedYamlCache(cache_dir, config_dir) if cache_dir is not None else None
    for path in _job_files(config_dir / JOBS_DIR, errors):
        job, job_errors = load_job(path, policy, cache.read_yaml if cache else read_yaml)
        errors.extend(job_errors)
        if job is not None:
            jobs.append(job)
    if cache is not None:
        cache.save()
    jobs, duplicate_errors = _drop_duplicate_mailboxes(jobs)
    errors.extend(duplicate_errors)
    return JobLoadResult(jobs, errors, policy.org, policy)


def _job_files(jobs_dir: Path, errors: list[JobConfigError]) -> list[Path]:
    if not jobs_dir.is_dir():
        return []
    # scandir: a directory entry knows whether it is a file without a stat() per file; names
    # sort as strings (the order of paths in one directory), far cheaper than Path objects.
    with os.scandir(jobs_dir) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file())
    paths = [jobs_dir / name for name in names]
    for path in paths:
        if path.suffix == ".yml":
            errors.append(JobConfigError(path.stem, "(file)", path.name, "rename to .yaml", str(path)))
    return [p for p in paths if p.suffix == ".yaml"]


def load_job(
    path: Path, policy: Policy, read: Callable[[Path], Any] = read_yaml
) -> tuple[Job | None, list[JobConfigError]]:
    """One job file, merged with the policy; the job is None when any error was found."""
    job_id = path.stem

    def error(field: str, value: Any, message: str) -> JobConfigError:
        return JobConfigError(job_id, field, value, message, str(path))

    if not JOB_ID_PATTERN.match(job_id) or len(job_id) > MAX_JOB_ID_LENGTH:
        return None, [
            error("job_id", job_id, f"file name must match {JOB_ID_PATTERN.pattern} (at most {MAX_JOB_ID_LENGTH} characters)")
        ]
    try:
        raw = read(path)
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
