"""The Salesforce Task(s) for one recorded email (SPEC §4).

One completed Task per email, or per part when the body is longer than Description
holds. Field sizes come from describe (``limits``, cached by the caller). Subject is never
truncated (an email whose Subject does not fit is skipped and reported); Description is
split, never truncated; every other field is truncated to fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from email_sync.rules.classify import Decision, SkipReason
from email_sync.rules.keys import IDEMPOTENCY_FIELD, email_identity, idempotency_key
from email_sync.rules.matching import Match, finalize
from email_sync.rules.models import MailItem
from email_sync.rules.settings import JobSettings
from email_sync.rules.text import FieldLimit, fits, html_to_text, split_to_fit, truncate

# Used when describe did not report a field (Salesforce's standard Task sizes).
DEFAULT_LIMITS: Mapping[str, FieldLimit] = {
    "Subject": FieldLimit(255, 765),
    "Description": FieldLimit(32_000, 96_000),
}
NO_SUBJECT = "(no subject)"
_NOT_TRUNCATED = frozenset({"Subject", "Description", IDEMPOTENCY_FIELD})


@dataclass(frozen=True, slots=True)
class TaskDraft:
    """One Task to create: its sObject fields (key field included) and relations.

    ``related_contact_ids`` are the Contacts to relate when shared activities are on,
    WhoId first (only ``[1:]`` need TaskRelation rows).
    """

    idempotency_key: str
    part: int
    parts: int
    fields: Mapping[str, Any]
    related_contact_ids: tuple[str, ...] = ()

    def sobject(self) -> dict[str, Any]:
        """A fresh dict of the fields, ready for sObject Collections or a Bulk CSV row."""
        return dict(self.fields)


@dataclass(frozen=True, slots=True)
class TaskBuild:
    """The Tasks for one email, or why there are none."""

    tasks: tuple[TaskDraft, ...]
    skip_reason: SkipReason | None = None
    detail: str = ""

    @property
    def parts(self) -> int:
        return len(self.tasks)


def field_limits_from_describe(describe: Mapping[str, Any]) -> dict[str, FieldLimit]:
    """``{field: FieldLimit}`` from a ``/sobjects/Task/describe`` response (cache the result)."""
    limits = {}
    for spec in describe.get("fields", ()):
        length = spec.get("length") or 0
        if length > 0:
            limits[spec["name"]] = FieldLimit(int(length), int(spec.get("byteLength") or 0) or None)
    return limits


def build_tasks(
    job_id: str,
    item: MailItem,
    decision: Decision,
    match: Match | None,
    settings: JobSettings,
    owner_id: str,
    limits: Mapping[str, FieldLimit] | None = None,
) -> TaskBuild:
    """The Task drafts for one email; skipped (with the reason) when it is not recorded.

    ``ActivityDate`` is the decision's sent/received time as a date in the job's time
    zone. Each part gets its own idempotency key; Subjects of split emails end with
    ``" (part i of n)"`` and must fit with the suffix, or the whole email is skipped as
    ``subject_too_long`` (a partial email is never recorded).
    """
    decision = finalize(decision, match)
    if decision.reason is not None or match is None:
        return TaskBuild((), decision.reason or SkipReason.NOT_MATCHED, decision.detail)
    assert decision.email_at is not None  # classify makes undated mail malformed
    limits = {**DEFAULT_LIMITS, **(limits or {})}
    identity = email_identity(item)
    assert identity is not None  # classify makes id-less mail malformed

    subject = clean_subject(item.subject)
    body = html_to_text(item.body) if item.body_is_html else item.body
    descriptions = split_to_fit(body, limits["Description"])
    n = len(descriptions)
    subjects = [subject if n == 1 else f"{subject} (part {i} of {n})" for i in range(1, n + 1)]
    if not all(fits(s, limits["Subject"]) for s in subjects):
        detail = f"{len(subject)} characters" + (f", {n} parts" if n > 1 else "")
        return TaskBuild((), SkipReason.SUBJECT_TOO_LONG, detail)

    common: dict[str, Any] = {
        "Status": "Completed",
        "TaskSubtype": "Email",
        "ActivityDate": decision.email_at.astimezone(settings.zone).date().isoformat(),
        "OwnerId": owner_id,
        "WhoId": match.who_id,
    }
    if settings.activity_type is not None:
        common["Type"] = settings.activity_type
    common = {name: _truncated(name, value, limits) for name, value in common.items()}

    drafts = []
    for part, (part_subject, description) in enumerate(zip(subjects, descriptions, strict=True), 1):
        key = idempotency_key(job_id, identity, part)
        key_limit = limits.get(IDEMPOTENCY_FIELD)
        if key_limit is not None and not fits(key, key_limit):
            raise ValueError(f"{IDEMPOTENCY_FIELD} holds {key_limit.length} characters; keys need {len(key)}")
        fields = {**common, "Subject": part_subject, IDEMPOTENCY_FIELD: key}
        if description:
            fields["Description"] = description
        drafts.append(TaskDraft(key, part, n, fields, match.related_contact_ids))
    return TaskBuild(tuple(drafts))


def clean_subject(subject: str) -> str:
    """The Subject as written: header folding (line breaks, tabs) becomes single spaces."""
    cleaned = " ".join(subject.split())
    return cleaned or NO_SUBJECT


def _truncated(name: str, value: Any, limits: Mapping[str, FieldLimit]) -> Any:
    limit = limits.get(name)
    if name in _NOT_TRUNCATED or limit is None or not isinstance(value, str):
        return value
    return truncate(value, limit)
