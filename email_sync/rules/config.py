"""Loading job configuration from a directory: ``policy.yaml`` + ``jobs/<job_id>.yaml``.

One bad job file must never stop the others (SPEC §1), so every problem becomes a
:class:`JobConfigError` value naming the job, the field and the value, and loading goes
on. The exceptions are deliberate: an invalid policy loads no job at all, because the
policy holds the locks and the exclusion lists, and running jobs without them could sync
mail the admin excluded.

YAML is read with libyaml (``CSafeLoader``) and a YAML 1.2-style resolver: ``off``/``no``
stay strings (so ``mode: off`` means off, not false) and ``18:00`` stays a time string
(YAML 1.1 would read it as the base-60 integer 1080). Duplicate keys are errors.

Every config file is bounded while it is loaded (:data:`LIMITS`): its size before parsing,
and its anchors, aliases, nesting depth and node count (aliases followed) while its node
graph is composed, before anything is constructed. A file over a bound is that file's
error; nothing beyond the bound is ever built, cached or validated.
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


@dataclass(frozen=True, slots=True)
class ConfigLimits:
    """What one config file (a job file or the policy) may hold; see docs/CONFIG.md.

    A job file is a flat mapping of about 16 settings, 4 levels deep at most (``window.days[0]``;
    the policy's ``org.email_fields.Contact[0]``), so each bound is far above any real file
    and far below what would slow a DAG-file parse: a file that reaches one is refused.
    """

    max_bytes: int = 64 * 1024  # the file's size, checked before parsing
    max_depth: int = 20  # nodes on the deepest path, scalar included (`window.days[0]`: 4), aliases followed
    max_anchors: int = 100  # anchors (&name) defined
    max_aliases: int = 100  # aliases (*name) used
    max_nodes: int = 20_000  # nodes of the document with every alias expanded


LIMITS = ConfigLimits()


class ConfigLimitError(yaml.YAMLError):
    """A config file over one of :data:`LIMITS`; raised before the document is built."""


class ConfigLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe YAML loader with YAML 1.2 core scalars, duplicate-key detection and the
    :data:`LIMITS` bounds.

    The node graph is composed here from libyaml's events (instead of by libyaml's own
    composer, which recurses in C: a few thousand nested brackets crash the process), without
    recursion, and measured on the way: nesting, anchors, aliases, and the node count and
    depth of the document *as constructing it would expand it* (an alias counts the whole
    subtree it names, so nested aliases, "billion laughs", are refused after a few hundred
    events, long before anything is expanded). Nothing is constructed until the whole
    document is known to be within bounds.
    """

    # Replaces (not extends) the YAML 1.1 table: no yes/no/on/off booleans, no base-60
    # numbers, no implicit timestamps, no leading-zero octals.
    yaml_implicit_resolvers: dict = {}

    def get_single_node(self) -> yaml.Node | None:
        self.get_event()  # StreamStartEvent
        document = None
        if not self.check_event(yaml.StreamEndEvent):
            document = self._compose_bounded_document()
        if not self.check_event(yaml.StreamEndEvent):
            event = self.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream", document.start_mark if document else None,
                "but found another document", event.start_mark,
            )  # fmt: skip
        self.get_event()  # StreamEndEvent
        return document

    def _compose_bounded_document(self) -> yaml.Node:
        # One pass over libyaml's events with an explicit stack (no recursion). `total` counts
        # the nodes of the document as constructing it would expand it: an alias adds the
        # size of the node it names. Each open collection's frame: [node, `total` when it
        # opened, the deepest level reached below it (absolute), pending mapping key or None].
        limits = LIMITS
        max_nodes, max_depth = limits.max_nodes, limits.max_depth
        get_event, resolve = self.get_event, self.resolve
        scalar_event, alias_event, scalar_node, sequence_node = (
            yaml.ScalarEvent, yaml.AliasEvent, yaml.ScalarNode, yaml.SequenceNode
        )
        starts = {yaml.SequenceStartEvent: yaml.SequenceNode, yaml.MappingStartEvent: yaml.MappingNode}
        get_event()  # DocumentStartEvent
        anchors: dict[str, yaml.Node] = {}
        # (expanded node count, expanded depth) of each complete anchored node; an alias to an
        # anchored node not in it yet (still open: one of its own ancestors) is recursive.
        measured: dict[int, tuple[int, int]] = {}
        anchored: set[int] = set()
        stack: list[list[Any]] = []
        total = aliases = 0
        while True:
            event = get_event()
            kind = type(event)
            level = len(stack) + 1  # the level of the node this event adds or closes
            if kind is scalar_event:
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(scalar_node, event.value, event.implicit)
                node = scalar_node(tag, event.value, event.start_mark, event.end_mark, style=event.style)
                total += 1
                deepest = level
                if level > max_depth:
                    raise _limit_error(f"nested deeper than {max_depth} levels", event)
                if event.anchor is not None:
                    self._add_anchor(anchors, event, node)
                    measured[id(node)] = (1, 1)
            elif kind in starts:
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(starts[kind], None, event.implicit)
                node = starts[kind](tag, [], event.start_mark, None, flow_style=event.flow_style)
                if event.anchor is not None:
                    self._add_anchor(anchors, event, node)
                    anchored.add(id(node))
                if level > max_depth:
                    raise _limit_error(f"nested deeper than {max_depth} levels", event)
                total += 1
                stack.append([node, total, level, None])
                continue
            elif kind is alias_event:
                aliases += 1
                if aliases > limits.max_aliases:
                    raise _limit_error(f"more than {limits.max_aliases} aliases", event)
                node = anchors.get(event.anchor)
                if node is None:
                    raise yaml.composer.ComposerError(
                        None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                    )
                size = measured.get(id(node))
                if size is None:
                    raise _limit_error(f"recursive alias *{event.anchor} (used inside its own anchor)", event)
                total += size[0]
                deepest = level - 1 + size[1]
                if deepest > max_depth:
                    raise _limit_error(f"nested deeper than {max_depth} levels (aliases expanded)", event)
            else:  # the end of a sequence or mapping (libyaml gives no other event in a document)
                node, opened, deepest, _ = stack.pop()
                node.end_mark = event.end_mark
                level -= 1
                if id(node) in anchored:
                    measured[id(node)] = (total - opened + 1, deepest - level + 1)
            if total > max_nodes:
                raise _limit_error(f"expands to more than {max_nodes} nodes (aliases expanded)", event)
            # `node` is complete (a scalar, a closed collection, or an alias): add it to its parent.
            if not stack:  # the root (never an alias: an alias needs an anchor before it)
                break
            parent = stack[-1]
            if deepest > parent[2]:
                parent[2] = deepest
            collection = parent[0]
            if type(collection) is sequence_node:
                collection.value.append(node)
            elif parent[3] is None:
                parent[3] = node
            else:
                collection.value.append((parent[3], node))
                parent[3] = None
        get_event()  # DocumentEndEvent
        return node

    def _add_anchor(self, anchors: dict[str, yaml.Node], event: yaml.Event, node: yaml.Node) -> None:
        if event.anchor in anchors:
            raise yaml.composer.ComposerError(
                f"found duplicate anchor {event.anchor!r}; first occurrence",
                anchors[event.anchor].start_mark, "second occurrence", event.start_mark,
            )  # fmt: skip
        if len(anchors) >= LIMITS.max_anchors:
            raise _limit_error(f"more than {LIMITS.max_anchors} anchors", event)
        anchors[event.anchor] = node

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
    # Jobs whose file is there but that were not loaded because the policy is invalid (its
    # errors are in ``errors``, job_id None): each is refused, and still known by its id.
    blocked_by_policy: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


def _limit_error(problem: str, event: yaml.Event) -> ConfigLimitError:
    mark = event.start_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return ConfigLimitError(f"refused: {problem}{where}; a config file may not exceed {_limits_text()}")


def _limits_text() -> str:
    return (
        f"{LIMITS.max_bytes // 1024} KiB, {LIMITS.max_depth} levels of nesting, {LIMITS.max_anchors} anchors, "
        f"{LIMITS.max_aliases} aliases and {LIMITS.max_nodes} nodes with aliases expanded"
    )


def read_config_bytes(path: Path | str) -> bytes:
    """A config file's bytes; :class:`ConfigLimitError` (reading no more than the bound) when
    it is larger than ``LIMITS.max_bytes``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks, size = [], 0
        while size <= LIMITS.max_bytes:
            chunk = os.read(fd, LIMITS.max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > LIMITS.max_bytes:
            size = max(size, os.fstat(fd).st_size)
            raise ConfigLimitError(f"refused: the file has {size} bytes; a config file may not exceed {_limits_text()}")
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_yaml(path: Path) -> Any:
    """Parse one YAML file with :class:`ConfigLoader`, within :data:`LIMITS`."""
    return _parse_yaml(read_config_bytes(path), path)


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
        """What :func:`read_yaml` returns for ``path`` (same value, same errors).

        The size bound is checked before the cache is consulted, and only a document that
        was built (so within every bound) is ever stored."""
        data = read_config_bytes(path)
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


def load_jobs(config_dir: str | Path, only: str | None = None, *, cache_dir: Path | None = None,
              shared_mailbox_check: bool = True) -> JobLoadResult:
    """Load and validate every job under ``config_dir``; never raises for bad content.

    ``only`` loads just that job (a task run needs its own job, not a thousand), with the
    same outcome for it as the full load: its own file is validated, and every other job
    file that may declare the same mailbox (a byte check rules out the rest without parsing
    them) is loaded too, so a shared mailbox refuses it with the full load's error. That
    scan reads every job file; ``shared_mailbox_check=False`` skips it where a later load
    makes the check anyway (the DAG file in a task process: the operator refuses the job
    when it runs, so parsing stays as cheap as building one DAG).
    ``cache_dir`` keeps the job files' parsed YAML there between full loads
    (:class:`ParsedYamlCache`); the result is the same with or without.

    An invalid policy loads no job (fail closed); the jobs it stops are listed in
    ``blocked_by_policy`` (their ids are their file names, known without a policy).
    """
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        error = JobConfigError(None, "(dir)", str(config_dir), "config directory not found", str(config_dir))
        return JobLoadResult([], [error], OrgSettings(), Policy())
    jobs_dir = config_dir / JOBS_DIR
    policy, errors = load_policy(config_dir)
    if errors:
        return _blocked_by_policy(jobs_dir, only, policy, errors)
    if only is not None:
        return _load_one(jobs_dir, only, policy, shared_mailbox_check)

    jobs: list[Job] = []
    cache = ParsedYamlCache(cache_dir, config_dir) if cache_dir is not None else None
    for path in _job_files(jobs_dir, errors):
        job, job_errors = load_job(path, policy, cache.read_yaml if cache else read_yaml)
        errors.extend(job_errors)
        if job is not None:
            jobs.append(job)
    if cache is not None:
        cache.save()
    jobs, duplicate_errors = _drop_duplicate_mailboxes(jobs)
    errors.extend(duplicate_errors)
    return JobLoadResult(jobs, errors, policy.org, policy)


def _blocked_by_policy(
    jobs_dir: Path, only: str | None, policy: Policy, errors: list[JobConfigError]
) -> JobLoadResult:
    """No job loads with an invalid policy; the job files are still listed (by name only,
    nothing in them is read), so every job stays visible with the policy's errors."""
    if only is None:
        paths = _job_files(jobs_dir, errors)
    else:
        path = jobs_dir / f"{only}.yaml"
        paths = [path] if path.is_file() else []
    blocked = []
    for path in paths:
        name_error = _job_id_error(path)
        if name_error is None:
            blocked.append(path.stem)
        else:
            errors.append(name_error)
    return JobLoadResult([], errors, policy.org, policy, blocked_by_policy=tuple(blocked))


def _load_one(jobs_dir: Path, job_id: str, policy: Policy, shared_mailbox_check: bool) -> JobLoadResult:
    """Job ``job_id`` alone, refused exactly as the full load refuses it (mailbox included)."""
    path = jobs_dir / f"{job_id}.yaml"
    if not path.is_file():
        return JobLoadResult([], [], policy.org, policy)
    job, errors = load_job(path, policy)
    if job is not None and shared_mailbox_check:
        owners = _mailbox_owners(jobs_dir, job, policy)
        if len(owners) > 1:
            _, duplicate_errors = _drop_duplicate_mailboxes(owners)
            job, errors = None, [e for e in duplicate_errors if e.job_id == job_id]
    return JobLoadResult([job] if job else [], errors, policy.org, policy)


def _mailbox_owners(jobs_dir: Path, job: Job, policy: Policy) -> list[Job]:
    """Every valid job with ``job``'s mailbox (``job`` included), in the full load's order.

    Which other file declares the mailbox is only known once it is parsed and validated (the
    address is normalised, and only a valid job counts, as in the full load); parsing a
    thousand files would cost a task process far more than loading its own. A cheap check
    of the bytes first rules a file out when it provably cannot declare the address: it is
    ASCII without backslashes (so no escapes, no non-ASCII case folding) and does not contain
    the address, case-insensitively. An address is normalised by stripping and lower-casing
    and has no whitespace, so one a file does declare appears in it verbatim up to case
    (single-quoted ``''`` is the one other way to write a character, so an address with a
    quote in it is always parsed). Every other file is loaded, as the full load loads it.
    """
    mailbox = job.settings.mailbox
    needle = mailbox.encode() if "'" not in mailbox else None
    owners = []
    own = f"{job.job_id}.yaml"
    folder = f"{jobs_dir}{os.sep}"
    for name in _job_file_names(jobs_dir):  # strings, not paths: a thousand files are scanned
        if not name.endswith(".yaml"):
            continue
        if name == own:
            owners.append(job)
            continue
        if needle is not None:
            try:
                data = read_config_bytes(folder + name)
            except (OSError, ValueError, yaml.YAMLError):
                continue  # unreadable or too large: an error in the full load too, never an owner
            if data.isascii() and b"\\" not in data and needle not in data.lower():
                continue
        other, _ = load_job(jobs_dir / name, policy)
        if other is not None and other.settings.mailbox == mailbox:
            owners.append(other)
    return owners


def _job_file_names(jobs_dir: Path) -> list[str]:
    """The names of the files in ``jobs_dir`` (hidden ones aside), sorted; [] without it."""
    if not jobs_dir.is_dir():
        return []
    # scandir: a directory entry knows whether it is a file without a stat() per file; names
    # sort as strings (the order of paths in one directory), far cheaper than Path objects.
    with os.scandir(jobs_dir) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file())


def _job_files(jobs_dir: Path, errors: list[JobConfigError]) -> list[Path]:
    paths = [jobs_dir / name for name in _job_file_names(jobs_dir)]
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

    name_error = _job_id_error(path)
    if name_error is not None:
        return None, [name_error]
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


def _job_id_error(path: Path) -> JobConfigError | None:
    """The error of a job file whose name is not a valid job id, else None."""
    job_id = path.stem
    if JOB_ID_PATTERN.fullmatch(job_id) and len(job_id) <= MAX_JOB_ID_LENGTH:
        return None
    message = f"file name must match {JOB_ID_PATTERN.pattern} (at most {MAX_JOB_ID_LENGTH} characters)"
    return JobConfigError(job_id, "job_id", job_id, message, str(path))


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
