"""The batch format every mail source produces and every later stage reads.

Every mail source (``email_sync.sources``) emits :class:`MailItem` values, or
:class:`Unreadable` for an item it could not read, so the rules downstream never know which
source the mail came from. Everything here is plain, immutable data: no I/O, no Airflow.
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
    ``email_sync.rules.addresses``). ``name`` is the display name, possibly empty.
    """

    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """Attachment metadata only: contents are fetched on upload, one bounded batch at a time.

    ``name`` is the file name exactly as the source gave it (it may hold path separators or
    control characters; :mod:`email_sync.rules.attachments` makes the name Salesforce sees).
    ``kind`` is ``"file"`` (a file attachment) or ``"item"`` (an attached email, meeting or
    contact: an EWS ItemAttachment / Graph itemAttachment), which is reported, not uploaded.
    """

    attachment_id: str
    name: str
    size: int
    content_type: str = "application/octet-stream"
    is_inline: bool = False
    kind: str = "file"


@dataclass(frozen=True, slots=True)
class MailItem:
    """One email as extracted from a mail folder.

    ``item_id`` is the source's stable id (EWS ItemId or Graph immutable id); it is what
    the category write-back uses. ``message_id`` is the RFC 5322 Message-ID ("" when the
    message has none), the identity used for idempotency keys and reply detection
    (``email_sync.rules.keys.email_identity`` makes one for a message without). Datetimes are timezone-aware (UTC). ``in_sent_folder`` is the
    source's decision that the item's folder holds outbound mail
    (:class:`email_sync.sources.base.Folder`).

    ``item_class`` is the item's Exchange message class as the server gives it
    (``IPM.Note``, ``IPM.Schedule.Meeting.Request``, ``REPORT.IPM.Note.NDR``, ...; Graph
    sources derive it from the message's type); ``auto_submitted`` is the value of its
    RFC 3834 ``Auto-Submitted`` header, None when absent. Both tell a person's email from
    meeting mail, calendar items, receipts, reports and automatic replies
    (:mod:`email_sync.rules.item_kinds`).
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
    in_sent_folder: bool = False
    item_class: str = "IPM.Note"
    auto_submitted: str | None = None

    @property
    def recipients(self) -> tuple[Address, ...]:
        """To, Cc and Bcc in that order."""
        return self.to + self.cc + self.bcc


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An item the source could not return or convert: skipped with a reason, never fatal."""

    item_id: str | None
    folder: str
    reason: str
