"""What a sync job and the org policy can be configured with: types, defaults, ranges.

One table (:data:`JOB_FIELDS`, :data:`ORG_FIELDS`) holds every setting's built-in default,
its parser (which validates and normalises) and its documentation, so validation, policy
merge, the ``validate`` report and docs/CONFIG.md all read the same source. Parsers raise
:class:`SettingError`; collecting errors per job is the caller's business (config.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import Enum, StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from email_sync.rules import schedule
from email_sync.rules.addresses import normalize_address, normalize_domain

# Schedule bounds have one home, the schedule math: at least every 30 min (SPEC §1), at
# most once a day; lookback 1-30 days.
MIN_FREQUENCY_MINUTES = schedule.MIN_FREQUENCY_MINUTES
MAX_FREQUENCY_MINUTES = schedule.MAX_FREQUENCY_MINUTES
MIN_LOOKBACK_DAYS = schedule.MIN_LOOKBACK_DAYS
MAX_LOOKBACK_DAYS = schedule.MAX_LOOKBACK_DAYS
# Salesforce: a Task relates to at most 50 Contacts (shared activities).
MAX_SHARED_RELATIONS = 50
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SALESFORCE_USER_ID = re.compile(r"^005[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")


class SettingError(ValueError):
    """One invalid setting value: which field (dotted path), the value, and why."""

    def __init__(self, field_name: str, value: Any, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.value = value
        self.message = message


class Mode(StrEnum):
    """Which emails a job records (SPEC §1)."""

    OFF = "off"
    ALL = "all"
    DESIGNATED = "designated"


_MODE_VALUES = frozenset(m.value for m in Mode)


class MatchObject(StrEnum):
    """Salesforce objects an email may be matched to."""

    CONTACTS = "contacts"
    LEADS = "leads"

    @property
    def sobject(self) -> str:
        """The Salesforce API name (``Contact``/``Lead``)."""
        return {"contacts": "Contact", "leads": "Lead"}[self.value]


class SourceKind(StrEnum):
    """Which mail source reads a job's mailbox (``email_sync.sources``)."""

    EWS = "ews"  # Exchange Server (and Exchange Online while EWS lasts) through exchangelib


_SOURCE_VALUES = frozenset(s.value for s in SourceKind)


@dataclass(frozen=True, slots=True)
class Window:
    """Days of week and a time-of-day range, in the job's time zone.

    ``start``/``end`` are ``HH:MM``; ``end`` may be ``24:00``. ``start < end`` always:
    windows across midnight are rejected at load time rather than guessed at.
    """

    days: tuple[str, ...] = tuple(WEEKDAYS[d] for d in sorted(schedule.DEFAULT_DAYS))
    start: str = schedule.DEFAULT_START
    end: str = schedule.DEFAULT_END

    @property
    def weekdays(self) -> tuple[int, ...]:
        """The days as ``datetime.weekday()`` numbers (Mon = 0)."""
        return tuple(WEEKDAYS.index(d) for d in self.days)

    def describe(self) -> str:
        """Human summary, e.g. ``Mon–Fri 08:00–18:00``."""
        return f"{schedule.format_days(self.weekdays)} {self.start}–{self.end}"


@dataclass(frozen=True, slots=True)
class JobSettings:
    """The effective settings of one sync job (after policy merge). See docs/CONFIG.md."""

    mailbox: str
    mode: Mode = Mode.OFF
    source: SourceKind = SourceKind.EWS
    salesforce_user: str | None = None
    frequency_minutes: int = schedule.DEFAULT_FREQUENCY_MINUTES
    window: Window = Window()
    timezone: str = "UTC"
    lookback_days: int = MIN_LOOKBACK_DAYS
    folders: tuple[str, ...] = ("Inbox", "Sent Items")
    activity_type: str | None = None
    record_all_attachments: bool = False
    alternate_email_fields: bool = True
    match_objects: tuple[MatchObject, ...] = (MatchObject.CONTACTS, MatchObject.LEADS)
    owned_records_only: bool = False
    shared_activities: bool = False
    excluded_addresses: tuple[str, ...] = ()
    excluded_domains: tuple[str, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        """The job's time zone object (cached per name)."""
        return zone(self.timezone)


@dataclass(frozen=True, slots=True)
class OrgSettings:
    """Org-wide settings that no user can change (the ``org:`` section of policy.yaml)."""

    internal_domains: tuple[str, ...] = ()
    crm_category: str = "CRM"
    do_not_sync_category: str = "DoNotSync"
    record_address: str | None = None
    do_not_record_address: str | None = None
    record_attachments_address: str | None = None
    record_attachments_category: str | None = "RecordAttachments"
    excluded_addresses: tuple[str, ...] = ()
    excluded_domains: tuple[str, ...] = ()
    email_fields: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {"Contact": ("Email",), "Lead": ("Email",)}
    )
    sent_folders: tuple[str, ...] = ("Sent Items",)
    sync_private: bool = False
    reply_window_days: int = 10
    default_timezone: str = "UTC"
    min_frequency_minutes: int = MIN_FREQUENCY_MINUTES
    max_shared_relations: int = MAX_SHARED_RELATIONS
    attachment_max_bytes: int = 5 * 1024 * 1024
    api_reserve: int = 1000
    bulk_threshold: int = 2000

    @property
    def smart_addresses(self) -> frozenset[str]:
        """The configured smart addresses: tags, never participants."""
        found = (self.record_address, self.do_not_record_address, self.record_attachments_address)
        return frozenset(a for a in found if a)


# --- parsers -----------------------------------------------------------------------------
# Each takes the raw YAML value (and the field name, for the error) and returns the
# normalised value or raises SettingError.

Parser = Callable[[str, Any], Any]


def _type_name(value: Any) -> str:
    return type(value).__name__


def parse_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingError(name, value, f"must be true or false, not {_type_name(value)}")
    return value


def int_between(low: int, high: int | None) -> Parser:
    """A parser for an integer in ``[low, high]`` (no upper bound when high is None)."""

    def parse(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingError(name, value, f"must be a whole number, not {_type_name(value)}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise SettingError(name, value, f"must be {bound}")
        return value

    return parse


def parse_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SettingError(name, value, "must be a non-empty string")
    return value.strip()


def optional(parser: Parser) -> Parser:
    """Allow ``null`` (YAML ``~``/``null``) in addition to what ``parser`` accepts."""

    def parse(name: str, value: Any) -> Any:
        return None if value is None else parser(name, value)

    return parse


def parse_mode(name: str, value: Any) -> Mode:
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in _MODE_VALUES:
        raise SettingError(name, value, "must be one of off, all, designated")
    return Mode(text)


def parse_source(name: str, value: Any) -> SourceKind:
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in _SOURCE_VALUES:
        raise SettingError(name, value, "must be one of " + ", ".join(sorted(_SOURCE_VALUES)))
    return SourceKind(text)


def parse_address(name: str, value: Any) -> str:
    address = normalize_address(value) if isinstance(value, str) else None
    if address is None:
        raise SettingError(name, value, "must be an email address like someone@example.com")
    return address


def parse_salesforce_user(name: str, value: Any) -> str:
    """A User Id (``005…``, 15 or 18 characters) or a username (email-shaped)."""
    if isinstance(value, str) and _SALESFORCE_USER_ID.match(value.strip()):
        return value.strip()
    if isinstance(value, str) and value.strip().lower().startswith("005") and "@" not in value:
        raise SettingError(name, value, "looks like a User Id but is not 15 or 18 letters/digits")
    if isinstance(value, str) and normalize_address(value) is not None:
        # Salesforce usernames are email-shaped and case-insensitive.
        return value.strip().lower()
    raise SettingError(name, value, "must be a Salesforce User Id (005…) or a username")


def _list_of(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise SettingError(name, value, f"must be a list, not {_type_name(value)}")
    return value


def _unique(items: list[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


def parse_address_list(name: str, value: Any) -> tuple[str, ...]:
    return _unique([parse_address(f"{name}[{i}]", v) for i, v in enumerate(_list_of(name, value))])


def parse_domain_list(name: str, value: Any) -> tuple[str, ...]:
    parsed = []
    for i, raw in enumerate(_list_of(name, value)):
        domain = normalize_domain(raw) if isinstance(raw, str) else None
        if domain is None:
            raise SettingError(f"{name}[{i}]", raw, "must be a domain like example.com")
        parsed.append(domain)
    return _unique(parsed)


def parse_text_list(name: str, value: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    items = _list_of(name, value)
    if not items and not allow_empty:
        raise SettingError(name, value, "must list at least one entry")
    return _unique([parse_text(f"{name}[{i}]", v) for i, v in enumerate(items)])


def parse_folders(name: str, value: Any) -> tuple[str, ...]:
    return parse_text_list(name, value)


def parse_timezone(name: str, value: Any) -> str:
    try:
        schedule.load_zone(value)
    except ValueError:
        raise SettingError(name, value, "must be a known IANA time zone name like Europe/Berlin") from None
    return value.strip()


def parse_match_objects(name: str, value: Any) -> tuple[MatchObject, ...]:
    chosen = set()
    for i, raw in enumerate(_list_of(name, value)):
        try:
            chosen.add(MatchObject(str(raw).strip().lower()))
        except ValueError:
            raise SettingError(f"{name}[{i}]", raw, "must be contacts or leads") from None
    if not chosen:
        raise SettingError(name, value, "must list contacts, leads or both")
    return tuple(m for m in MatchObject if m in chosen)


def parse_window(name: str, value: Any, fallback: Window) -> Window:
    """A window mapping; keys left out keep the fallback's (policy or built-in) values.

    Day names and times are read by :mod:`email_sync.rules.schedule`'s parsers, so the config
    and the timetable agree on what a valid window is; errors name the sub-field.
    """
    if not isinstance(value, dict):
        raise SettingError(name, value, "must be a mapping with days, start and end")
    unknown = sorted(set(value) - {"days", "start", "end"})
    if unknown:
        raise SettingError(f"{name}.{unknown[0]}", value[unknown[0]], "unknown key (use days, start, end)")
    days = fallback.days
    if "days" in value:
        picked = set()
        for i, day in enumerate(_list_of(f"{name}.days", value["days"])):
            try:
                picked.add(schedule.parse_day(day))
            except ValueError:
                raise SettingError(f"{name}.days[{i}]", day, "must be one of mon tue wed thu fri sat sun") from None
        if not picked:
            raise SettingError(f"{name}.days", value["days"], "must list at least one day")
        days = tuple(WEEKDAYS[i] for i in sorted(picked))
    start = _parse_time(f"{name}.start", value.get("start", fallback.start))
    end = _parse_time(f"{name}.end", value.get("end", fallback.end))
    if start == schedule.END_OF_DAY:
        raise SettingError(f"{name}.start", start, "24:00 is only allowed as the end; use 00:00 to 23:59")
    if _minutes(start) >= _minutes(end):
        raise SettingError(
            f"{name}.end",
            end,
            f"must be later than start {start}: windows across midnight are not supported "
            "(end at 24:00 and add the next day to the window days)",
        )
    return Window(days=days, start=start, end=end)


def _parse_window_alone(name: str, value: Any) -> Window:
    return parse_window(name, value, Window())


def _parse_time(name: str, value: Any) -> str:
    """``"HH:MM"`` (``"8:00"`` allowed) normalised to two-digit hours; ``"24:00"`` kept."""
    if not isinstance(value, str):
        raise SettingError(name, value, 'must be a quoted time "HH:MM"')
    try:
        return schedule.format_time_of_day(schedule.parse_time_of_day(value))
    except ValueError:
        raise SettingError(name, value, 'must be a time "HH:MM" between 00:00 and 24:00') from None


def _minutes(hhmm: str) -> int:
    return schedule.parse_time_of_day(hhmm)


def parse_api_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _API_NAME.match(value.strip()):
        raise SettingError(name, value, "must be a Salesforce field API name like Secondary_Email__c")
    return value.strip()


def parse_email_fields(name: str, value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise SettingError(name, value, "must be a mapping like {Contact: [Email], Lead: [Email]}")
    parsed: dict[str, tuple[str, ...]] = {}
    for obj, fields_value in value.items():
        if obj not in ("Contact", "Lead"):
            raise SettingError(f"{name}.{obj}", fields_value, "unknown object (use Contact, Lead)")
        items = _list_of(f"{name}.{obj}", fields_value)
        if not items:
            raise SettingError(f"{name}.{obj}", fields_value, "must list at least one field")
        parsed[obj] = _unique([parse_api_name(f"{name}.{obj}[{i}]", f) for i, f in enumerate(items)])
    for obj in ("Contact", "Lead"):
        parsed.setdefault(obj, ("Email",))
    return parsed


def zone(name: str) -> ZoneInfo:
    """ZoneInfo by IANA name (ZoneInfo caches instances itself)."""
    return ZoneInfo(name)


# --- the field tables ---------------------------------------------------------------------


_DATACLASS_DEFAULT: Any = object()  # FieldSpec.default until _table fills in the dataclass's


class Default(StrEnum):
    """Built-in defaults that are not constants."""

    ORG_TIMEZONE = "org default_timezone"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One setting: its parser, documentation and built-in default.

    The default is the settings dataclass's own (:func:`_table` fills it in), so each
    default is written once; only a default that is not a plain value (the org's time
    zone) or a required setting (``None``) is given here. ``per_job`` settings identify a
    job (mailbox, Salesforce user): a policy can neither default nor lock them.
    ``policy_default`` is False where the policy expresses the value elsewhere (the admin
    exclusion lists live in the ``org:`` section).
    """

    name: str
    parse: Parser
    doc: str
    per_job: bool = False
    policy_default: bool = True
    default: Any = _DATACLASS_DEFAULT


def _table(settings_class: type, *specs: FieldSpec) -> dict[str, FieldSpec]:
    """The settings table of a dataclass: one spec per field, defaults taken from the class."""
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
                for f in fields(settings_class) if f.default is not MISSING or f.default_factory is not MISSING}
    table = {s.name: s if s.default is not _DATACLASS_DEFAULT else replace(s, default=defaults[s.name])
             for s in specs}
    assert set(table) == {f.name for f in fields(settings_class)}, "one spec per field"
    return table


JOB_FIELDS: dict[str, FieldSpec] = _table(
    JobSettings,
        FieldSpec("mode", parse_mode, "off | all | designated"),
        FieldSpec("mailbox", parse_address, "the Exchange mailbox (SMTP address); unique across jobs", per_job=True, default=None),
        FieldSpec("source", parse_source, "mail source that reads the mailbox: ews"),
        FieldSpec(
            "salesforce_user", optional(parse_salesforce_user),
            "Task owner: User Id (005…) or username; required unless mode is off", per_job=True,
        ),
        FieldSpec(
            "frequency_minutes", int_between(MIN_FREQUENCY_MINUTES, MAX_FREQUENCY_MINUTES),
            "minutes between runs; at least 30 and at least org min_frequency_minutes; at most 1440",
        ),
        FieldSpec("window", _parse_window_alone, "days (mon…sun) and start/end HH:MM (end may be 24:00)"),
        FieldSpec("timezone", parse_timezone, "IANA time zone of the window and dates", default=Default.ORG_TIMEZONE),
        FieldSpec("lookback_days", int_between(MIN_LOOKBACK_DAYS, MAX_LOOKBACK_DAYS), "how far back the first sync / a backfill reaches, 1–30"),
        FieldSpec("folders", parse_folders, "Exchange folder paths to sync"),
        FieldSpec("activity_type", optional(parse_text), "Task Type picklist value; null = Salesforce default"),
        FieldSpec("record_all_attachments", parse_bool, "upload attachments of every recorded email"),
        FieldSpec("alternate_email_fields", parse_bool, "match on every org email_fields field, not only Email"),
        FieldSpec("match_objects", parse_match_objects, "contacts, leads or both"),
        FieldSpec("owned_records_only", parse_bool, "match only records this user owns"),
        FieldSpec("shared_activities", parse_bool, "relate one Task to every matching Contact (max 50)"),
        FieldSpec(
            "excluded_addresses", parse_address_list,
            "user's own excluded addresses, added to the org list", policy_default=False,
        ),
        FieldSpec(
            "excluded_domains", parse_domain_list,
            "user's own excluded domains, added to the org list", policy_default=False,
        ),
)  # fmt: skip


ORG_FIELDS: dict[str, FieldSpec] = _table(
    OrgSettings,
        FieldSpec("internal_domains", parse_domain_list, "the org's own domains (subdomains included)"),
        FieldSpec("crm_category", parse_text, "Exchange category that designates an email and marks it synced"),
        FieldSpec("do_not_sync_category", parse_text, "Exchange category that excludes an email"),
        FieldSpec("record_address", optional(parse_address), "smart address that designates an email"),
        FieldSpec("do_not_record_address", optional(parse_address), "smart address that excludes an email"),
        FieldSpec("record_attachments_address", optional(parse_address), "smart address that records attachments"),
        FieldSpec("record_attachments_category", optional(parse_text), "category that records attachments"),
        FieldSpec("excluded_addresses", parse_address_list, "admin exclusion list: addresses"),
        FieldSpec("excluded_domains", parse_domain_list, "admin exclusion list: domains (subdomains included)"),
        FieldSpec("email_fields", parse_email_fields, "email fields per object"),
        FieldSpec("sent_folders", parse_folders, "folders whose mail is outbound (and their subfolders)"),
        FieldSpec("sync_private", parse_bool, "sync Private/Confidential emails"),
        FieldSpec("reply_window_days", int_between(1, MAX_LOOKBACK_DAYS), "days a reply to a recorded email is still recorded"),
        FieldSpec("default_timezone", parse_timezone, "time zone of jobs that set none"),
        FieldSpec("min_frequency_minutes", int_between(MIN_FREQUENCY_MINUTES, MAX_FREQUENCY_MINUTES), "lowest frequency_minutes a job may use"),
        FieldSpec("max_shared_relations", int_between(1, MAX_SHARED_RELATIONS), "most Contacts one Task is related to"),
        FieldSpec("attachment_max_bytes", int_between(1, 2 * 1024**3), "largest attachment uploaded, bytes"),
        FieldSpec("api_reserve", int_between(0, None), "daily API calls left untouched for other integrations"),
        FieldSpec("bulk_threshold", int_between(1, None), "Tasks per run above which Bulk API 2.0 is used"),
)  # fmt: skip



def parse_setting(spec: FieldSpec, value: Any, fallback: Any) -> Any:
    """Validate one raw value for a setting; ``fallback`` is what applies without it.

    Only ``window`` uses the fallback: keys a user leaves out of a window mapping keep
    the policy's (or built-in) values instead of silently resetting.
    """
    if spec.name == "window":
        return parse_window(spec.name, value, fallback)
    return spec.parse(spec.name, value)


def parse_org(raw: Mapping[str, Any]) -> tuple[OrgSettings, list[SettingError]]:
    """The org section, validated; invalid or unknown keys become errors (field ``org.<key>``)."""
    values: dict[str, Any] = {}
    errors: list[SettingError] = []
    for key, value in raw.items():
        spec = ORG_FIELDS.get(key)
        if spec is None:
            errors.append(unknown_key_error(f"org.{key}", key, value, ORG_FIELDS))
            continue
        try:
            values[key] = spec.parse(key, value)
        except SettingError as exc:
            errors.append(SettingError(f"org.{exc.field}", exc.value, exc.message))
    return OrgSettings(**values), errors


def unknown_key_error(path: str, key: Any, value: Any, known: Mapping[str, Any]) -> SettingError:
    """An unknown-key error, suggesting the closest known name (typos must not pass silently)."""
    import difflib

    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return SettingError(path, value, f"unknown setting{hint}")


def is_salesforce_user_id(value: str) -> bool:
    """Whether a ``salesforce_user`` value is already a User Id (no lookup needed)."""
    return bool(_SALESFORCE_USER_ID.match(value))


def format_setting(value: Any) -> str:
    """A setting value as config would write it (short and unambiguous): reports and DAG docs."""
    if value is None:
        return "null"
    if isinstance(value, Window):
        return value.describe()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(format_setting(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_setting(v)}" for k, v in value.items()) + "}"
    return str(value)
