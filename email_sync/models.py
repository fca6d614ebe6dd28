"""The batch format every mail source produces and every later stage reads.

EWS (exchangelib) and Microsoft Graph extractors both emit :class:`MailItem` values, so
the rules downstream never know which source the mail came from. Everything here is
plain, immutable data: no I/O, no Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Direction(StrEnum):
    """Whether the mailbox owner received or sent the email."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox address as seen on an email.

    ``email`` is kept as the source gave it; matching normalises it (see
    ``email_sync.addresses``). ``name`` is the display name, possibly empty.
    """

    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """Attachment metadata only: content is fetched one attachment at a time on upload."""

    attachment_id: str
    name: str
    size: int
    content_type: str = "application/octet-stream"
    is_inline: bool = False


@dataclass(frozen=True, slots=True)
class MailItem:
    """One email as extracted from a mail folder.

    ``item_id`` is the source's stable id (EWS ItemId or Graph immutable id); it is what
    the category write-back uses. ``message_id`` is the RFC 5322 Message-ID, the identity
    used for idempotency keys and reply detection (falls back to ``item_id`` when a
    message has none). Datetimes are timezone-aware (UTC).
    """

    item_id: str
    message_id: str
    folder: str
    subject: str = ""
    body: str = ""
    body_is_html: bool = False
    sender: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    sent_at: datetime | None = None
    received_at: datetime | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    conversation_id: str | None = None
    categories: tuple[str, ...] = ()
    sensitivity: str = "Normal"
    attachments: tuple[AttachmentRef, ...] = field(default_factory=tuple)
    change_key: str | None = None

    @property
    def recipients(self) -> tuple[Address, ...]:
        """To, Cc and Bcc in that order."""
        return self.to + self.cc + self.bcc
