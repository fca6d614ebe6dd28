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
    zone. Each part gets its own idempotency key and a part marker ``(part i of n)``:
    at the end of the Subject when every labelled Subject fits, otherwise as the first
    line of each part's Description (the Subject then stays the email's subject). Only a
    Subject too long on its own skips the email as ``subject_too_long``.
    """
    decision = finalize(decision, match)
    if decision.reason is not None or match is None:
        return TaskBuild((), decision.reason or SkipReason.NOT_MATCHED, decision.detail)
    assert decision.email_at is not None  # classify makes undated mail malformed
    limits = {**DEFAULT_LIMITS, **(limits or {})}
    identity = email_identity(item)
    assert identity is not None  # classify makes id-less mail malformed

    subject = clean_subject(item.subject)
    if not fits(subject, limits["Subject"]):
        return TaskBuild((), SkipReason.SUBJECT_TOO_LONG, f"{len(subject)} characters")
    body = html_to_text(item.body) if item.body_is_html else item.body
    subjects, descriptions = _parts(subject, body, limits["Subject"], limits["Description"])
    n = len(descriptions)

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


def part_marker(part: int, parts: int) -> str:
    """The label of one part of a split email: ``(part 2 of 3)``."""
    return f"(part {part} of {parts})"


def _parts(
    subject: str, body: str, subject_limit: FieldLimit, description_limit: FieldLimit
) -> tuple[list[str], list[str]]:
    """Subjects and Descriptions of the Tasks of one email (``subject`` fits on its own).

    A body that fits gives one Task, unlabelled. A longer one is split; each part is
    labelled with :func:`part_marker` where the label fits: after the Subject
    (``"Quote (part 1 of 3)"``) when every labelled Subject fits, else as the first line
    of each Description (``(part 1 of 3)`` and a line break, then the part), the split
    then leaving room for that line. One place for the whole email, so its parts read alike.
    """
    descriptions = split_to_fit(body, description_limit)
    n = len(descriptions)
    if n == 1:
        return [subject], descriptions
    labelled = [f"{subject} {part_marker(i, n)}" for i in range(1, n + 1)]
    if all(fits(s, subject_limit) for s in labelled):
        return labelled, descriptions
    # The marker goes into the Description: reserve room for the longest one with as many
    # digits as the part count has; when the tighter split needs more digits, reserve
    # those. The reserved digits only grow, so this ends after a step or two.
    digits = len(str(n))
    while True:
        widest = 10**digits - 1
        reserve = len(part_marker(widest, widest)) + 1  # ASCII: units == bytes; +1 for "\n"
        chunks = split_to_fit(body, _less(description_limit, reserve))
        n = len(chunks)
        if len(str(n)) <= digits:
            break
        digits = len(str(n))
    descriptions = [f"{part_marker(i, n)}\n{chunk}" for i, chunk in enumerate(chunks, 1)]
    return [subject] * n, descriptions


def _less(limit: FieldLimit, reserve: int) -> FieldLimit:
    """``limit`` with ``reserve`` ASCII characters already taken."""
    smaller = FieldLimit(limit.length - reserve, None if limit.byte_length is None else limit.byte_length - reserve)
    if smaller.length < 2 or (smaller.byte_length is not None and smaller.byte_length < 4):
        raise ValueError(f"Description holds {limit.length} characters; a part marker needs {reserve} of them")
    return smaller


def clean_subject(subject: str) -> str:
    """The Subject as written: header folding (line breaks, tabs) becomes single spaces."""
    cleaned = " ".join(subject.split())
    return cleaned or NO_SUBJECT


def _truncated(name: str, value: Any, limits: Mapping[str, FieldLimit]) -> Any:
    limit = limits.get(name)
    if name in _NOT_TRUNCATED or limit is None or not isinstance(value, str):
        return value
    return truncate(value, limit)
