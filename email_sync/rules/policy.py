"""Admin policy and the merge that turns a user's job file into effective settings.

Precedence per setting (SPEC §1 "Admin policy"): a locked setting always takes the policy
value and ignores the user's (noted in the report); otherwise the user's value; otherwise
the policy default; otherwise the built-in default. Every value is validated by the same
parser whichever layer it came from, so a bad policy default is caught once, at load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from email_sync.rules.settings import (
    JOB_FIELDS,
    MIN_FREQUENCY_MINUTES,
    Default,
    FieldSpec,
    JobSettings,
    Mode,
    OrgSettings,
    SettingError,
    parse_org,
    parse_setting,
    unknown_key_error,
)

POLICY_SECTIONS = ("org", "defaults", "locked")


class Source(StrEnum):
    """Where an effective setting came from (shown by ``python -m email_sync validate``)."""

    DEFAULT = "default"  # built-in default
    POLICY = "policy"  # the policy's defaults: section
    USER = "user"  # the job file
    LOCKED = "locked"  # the policy locks it; any user value was ignored


@dataclass(frozen=True, slots=True)
class Policy:
    """The validated org policy: org settings, per-setting defaults and the locked names."""

    org: OrgSettings = field(default_factory=OrgSettings)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    locked: frozenset[str] = frozenset()

    def fallback(self, name: str) -> tuple[Any, Source]:
        """The value a setting takes when the job file does not set it."""
        if name in self.defaults:
            return self.defaults[name], Source.POLICY
        default = JOB_FIELDS[name].default
        if default is Default.ORG_TIMEZONE:
            default = self.org.default_timezone
        return default, Source.DEFAULT


@dataclass(frozen=True, slots=True)
class MergedSettings:
    """The outcome of merging one job file with the policy.

    ``settings`` is None exactly when ``errors`` is non-empty: a job is loaded whole or
    not at all, never with a silently defaulted field.
    """

    settings: JobSettings | None
    provenance: dict[str, Source]
    notes: tuple[str, ...]
    errors: tuple[SettingError, ...]


def parse_policy(raw: Mapping[str, Any]) -> tuple[Policy, list[SettingError]]:
    """Validate a policy document (``org:``, ``defaults:``, ``locked:``); errors name the field."""
    errors: list[SettingError] = []
    for key in raw:
        if key not in POLICY_SECTIONS:
            errors.append(unknown_key_error(str(key), key, raw[key], dict.fromkeys(POLICY_SECTIONS)))

    org_raw = raw.get("org") or {}
    if not isinstance(org_raw, dict):
        errors.append(SettingError("org", org_raw, "must be a mapping"))
        org_raw = {}
    org, org_errors = parse_org(org_raw)
    errors.extend(org_errors)

    locked = _parse_locked(raw.get("locked") or [], errors)
    defaults = _parse_defaults(raw.get("defaults") or {}, org, errors)
    return Policy(org=org, defaults=defaults, locked=locked), errors


def _parse_locked(value: Any, errors: list[SettingError]) -> frozenset[str]:
    if not isinstance(value, list):
        errors.append(SettingError("locked", value, "must be a list of setting names"))
        return frozenset()
    names = set()
    for i, name in enumerate(value):
        spec = JOB_FIELDS.get(name) if isinstance(name, str) else None
        if spec is None:
            errors.append(unknown_key_error(f"locked[{i}]", name, name, JOB_FIELDS))
        elif spec.per_job:
            errors.append(SettingError(f"locked[{i}]", name, "identifies a job and cannot be locked"))
        else:
            names.add(name)
    return frozenset(names)


def _parse_defaults(value: Any, org: OrgSettings, errors: list[SettingError]) -> dict[str, Any]:
    if not isinstance(value, dict):
        errors.append(SettingError("defaults", value, "must be a mapping of setting: value"))
        return {}
    defaults: dict[str, Any] = {}
    builtin = Policy(org=org)
    for name, raw_value in value.items():
        spec = JOB_FIELDS.get(name)
        if spec is None:
            errors.append(unknown_key_error(f"defaults.{name}", name, raw_value, JOB_FIELDS))
        elif spec.per_job:
            errors.append(SettingError(f"defaults.{name}", raw_value, "identifies a job and has no default"))
        elif not spec.policy_default:
            errors.append(
                SettingError(f"defaults.{name}", raw_value, f"set the admin list as org.{name} instead")
            )
        else:
            try:
                defaults[name] = parse_setting(spec, raw_value, builtin.fallback(name)[0])
            except SettingError as exc:
                errors.append(SettingError(f"defaults.{exc.field}", exc.value, exc.message))
    # Checked on the effective fallback, so a raised minimum with no matching default
    # fails once here instead of once per job.
    frequency = defaults.get("frequency_minutes", builtin.fallback("frequency_minutes")[0])
    if frequency < org.min_frequency_minutes:
        errors.append(
            SettingError(
                "defaults.frequency_minutes",
                frequency,
                f"must be at least org.min_frequency_minutes ({org.min_frequency_minutes})",
            )
        )
    return defaults


def merge_job_settings(user: Mapping[str, Any], policy: Policy) -> MergedSettings:
    """Effective settings of one job file: lock > user > policy default > built-in default."""
    errors: list[SettingError] = []
    notes: list[str] = []
    values: dict[str, Any] = {}
    provenance: dict[str, Source] = {}

    for name in user:
        if name not in JOB_FIELDS:
            errors.append(unknown_key_error(str(name), name, user[name], JOB_FIELDS))

    for name, spec, fallback, source in _fallbacks(policy):
        if name in policy.locked:
            values[name], provenance[name] = fallback, Source.LOCKED
            if name in user:
                notes.append(f"{name}: locked by policy; user value {_show(user[name])} ignored")
        elif name in user:
            try:
                values[name] = parse_setting(spec, user[name], fallback)
                provenance[name] = Source.USER
            except SettingError as exc:
                errors.append(exc)
        else:
            values[name], provenance[name] = fallback, source

    if not errors:
        errors.extend(_cross_field_errors(values, policy.org))
    if errors:
        return MergedSettings(None, provenance, tuple(notes), tuple(errors))
    return MergedSettings(JobSettings(**values), provenance, tuple(notes), ())


_last_fallbacks: tuple[Policy, tuple[tuple[str, FieldSpec, Any, Source], ...]] | None = None


def _fallbacks(policy: Policy) -> tuple[tuple[str, FieldSpec, Any, Source], ...]:
    """Every setting with its fallback under ``policy``: worked out once per policy (the
    last one seen), not once per job file, since a load merges every job with one policy."""
    global _last_fallbacks
    if _last_fallbacks is None or _last_fallbacks[0] is not policy:
        _last_fallbacks = (policy, tuple((name, spec, *policy.fallback(name)) for name, spec in JOB_FIELDS.items()))
    return _last_fallbacks[1]


def _show(value: Any) -> str:
    """A raw YAML value as YAML/JSON would write it (``false``, ``"x"``, ``[1, 2]``)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _cross_field_errors(values: Mapping[str, Any], org: OrgSettings) -> list[SettingError]:
    """Rules that involve more than one setting, or a setting and the org."""
    errors = []
    if values["mailbox"] is None:
        errors.append(SettingError("mailbox", None, "is required"))
    if values["mode"] is not Mode.OFF and values["salesforce_user"] is None:
        errors.append(SettingError("salesforce_user", None, f"is required when mode is {values['mode']}"))
    minimum = max(MIN_FREQUENCY_MINUTES, org.min_frequency_minutes)
    if values["frequency_minutes"] < minimum:
        errors.append(
            SettingError(
                "frequency_minutes",
                values["frequency_minutes"],
                f"must be at least {minimum} (org.min_frequency_minutes)",
            )
        )
    return errors
