"""What the run steps need from the CRM, and the values that cross that line.

:class:`Crm` is the interface the pipeline is written against; ``email_sync.crm.salesforce``
is its implementation (tests use in-memory fakes). Results are per record, so one refused
record never hides the others; their messages never carry the values we sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class RecordResult:
    """The outcome for one record: its Id, or Salesforce's error code and message."""

    key: str  # the idempotency key (or attachment key, or "task_id:contact_id") the result is for
    id: str | None  # Salesforce Id when successful
    created: bool  # True if newly created, False if it already existed (upsert matched)
    error_code: str | None = None  # e.g. "STRING_TOO_LONG"
    error_message: str | None = None  # Salesforce's message

    def __post_init__(self) -> None:
        if self.error_message:
            object.__setattr__(self, "error_message", without_values(self.error_message))

    @property
    def ok(self) -> bool:
        return self.error_code is None


_QUOTED_VALUE = re.compile(r"(data value too large|bad value for [\w ]+?|invalid [\w ]+?): .*?(?= \(max length=|$)",
                           re.IGNORECASE | re.DOTALL)


def without_values(message: str) -> str:
    """Salesforce's error message without the record value it quotes.

    ``Subject: data value too large: <the subject> (max length=255)`` would otherwise carry
    mail content into logs and the state store; the code, field and limit are what matter.
    """
    return _QUOTED_VALUE.sub(lambda m: f"{m.group(1)} (value not shown)", message)


@dataclass(frozen=True)
class FileUpload:
    """One attachment to publish as a Salesforce File on a Task."""

    key: str  # the attachment key (email_sync.rules.keys.attachment_key)
    task_id: str
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    owner_id: str | None = None


class Crm(Protocol):
    """The CRM operations of a run (``email_sync.crm.salesforce.SalesforceCrm``)."""

    calls: int  # API calls this client made

    def query_each(self, statements: Sequence[str]) -> list[list[dict[str, Any]]]: ...
    def describe_fields(self, sobject: str) -> list[dict[str, Any]]: ...
    def user_id(self, user: str) -> str: ...
    def check_budget(self, needed_calls: int, reserve: int, known: tuple[int, int] | None = None) -> None: ...
    def api_usage(self) -> tuple[int, int] | None: ...
    def upsert_tasks(self, records: Iterable[tuple[str, Mapping[str, Any]]]) -> list[RecordResult]: ...
    def ensure_task_relations(self, pairs: Mapping[str, Sequence[str]], *,
                              check_existing: bool) -> list[RecordResult]: ...
    def find_tasks(self, keys: Sequence[str]) -> dict[str, str]: ...
    def find_files(self, task_ids: Sequence[str]) -> list[dict[str, Any]]: ...
    def upload_files(self, files: Sequence[FileUpload]) -> list[RecordResult]: ...
