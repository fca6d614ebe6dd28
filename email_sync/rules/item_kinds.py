"""Which items in a mail folder are emails a person wrote (SPEC §3 rule 6).

A synced folder holds more than email: meeting requests, responses and cancellations,
calendar items, read and delivery receipts, non-delivery reports and automatic replies.
None of them is recorded as an email, and each gets its own skip reason, so a run summary
says what was left out. The decision reads the item itself, never its subject or body text:

1. its Exchange message class (``MailItem.item_class``, e.g. ``IPM.Schedule.Meeting.Request``),
   compared case-insensitively by prefix, as Exchange and Outlook do (a class names a form,
   and ``IPM.Note.Foo`` is a kind of ``IPM.Note``);
2. for an ordinary message class, its RFC 3834 ``Auto-Submitted`` header
   (``MailItem.auto_submitted``): anything but ``no`` was sent by a program. This catches
   the out-of-office replies of other organisations' servers, which arrive as ``IPM.Note``.

Message classes are Microsoft's ("Item Types and Message Classes", MS-OXOMSG, MS-OXOCAL):

- ``REPORT.*.NDR``: non_delivery_report (a bounce, also of a meeting request);
- other ``REPORT.*`` (``.DR``, ``.IPNRN``, ``.IPNNRN``, ``.Delayed``, ...), ``IPM.Note.Receipt.SMIME``
  (a signed read receipt), ``IPM.Recall.Report.*``: receipt;
- ``IPM.Schedule.Meeting.*`` (``Request``, ``Resp.Pos/Neg/Tent``, ``Canceled``,
  ``Notification.Forward``), ``IPM.Notification.Meeting``: meeting_message;
- ``IPM.Appointment``, ``IPM.OLE.CLASS.{00061055-0000-0000-C000-000000000046}`` (an exception of
  a recurring appointment): calendar_item;
- ``IPM.Note.Rules.*`` (``OofTemplate.Microsoft``, ``ReplyTemplate.Microsoft``): automatic_reply;
- ``IPM.Note``, any other ``IPM.Note.*`` (S/MIME, signed, custom forms), no class: an email;
- anything else (``IPM.Contact``, ``IPM.Task``, ``IPM.TaskRequest``, ``IPM.StickyNote``,
  ``IPM.Post``, ``IPM.Sharing``, ``IPM.Outlook.Recall``, ...): other_item.

Pure: no I/O. The reasons' values are members of
:class:`email_sync.rules.classify.SkipReason` (classify maps them; this module cannot import
classify, which imports it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from email_sync.rules.models import MailItem

EMAIL_CLASS = "IPM.Note"
_KEYWORD_END = re.compile(r"[;(\s]")  # the keyword ends at parameters, a comment or white space
_DETAIL = 100  # characters of the class or header value kept in the (stored) skip detail
_RECURRING_EXCEPTION = "ipm.ole.class.{00061055-0000-0000-c000-000000000046}"


class ItemKind(StrEnum):
    """What an item in a mail folder is; every kind but EMAIL is a skip reason of its own."""

    EMAIL = "email"
    MEETING_MESSAGE = "meeting_message"  # meeting request, response, cancellation, forward notification
    CALENDAR_ITEM = "calendar_item"  # an appointment or meeting itself (IPM.Appointment)
    RECEIPT = "receipt"  # read / not-read receipt, delivery receipt, delay or relay notice, recall report
    NON_DELIVERY_REPORT = "non_delivery_report"  # a bounce (REPORT.*.NDR)
    AUTOMATIC_REPLY = "automatic_reply"  # out-of-office or rule reply (IPM.Note.Rules.*, Auto-Submitted: auto-replied)
    AUTOMATIC_MESSAGE = "automatic_message"  # sent by a program, not a reply (Auto-Submitted: auto-generated, ...)
    OTHER_ITEM = "other_item"  # contact, task, note, post, sharing invitation, recall, ... filed in a mail folder


@dataclass(frozen=True, slots=True)
class NotAnEmail:
    """Why an item is not recorded as an email: its kind and a detail (the class or header value)."""

    kind: ItemKind
    detail: str


def kind_of_class(item_class: str | None) -> ItemKind:
    """The kind an Exchange message class names (case-insensitive; empty means an email)."""
    cls = (item_class or "").strip().casefold()
    if not cls:
        return ItemKind.EMAIL
    if _is(cls, "report"):
        return ItemKind.NON_DELIVERY_REPORT if cls.endswith(".ndr") else ItemKind.RECEIPT
    if _is(cls, "ipm.schedule.meeting") or _is(cls, "ipm.notification.meeting"):
        return ItemKind.MEETING_MESSAGE
    if _is(cls, "ipm.appointment") or cls == _RECURRING_EXCEPTION:
        return ItemKind.CALENDAR_ITEM
    if _is(cls, "ipm.note.rules"):
        return ItemKind.AUTOMATIC_REPLY
    if _is(cls, "ipm.note.receipt") or _is(cls, "ipm.recall.report"):
        return ItemKind.RECEIPT
    if _is(cls, "ipm.note"):
        return ItemKind.EMAIL
    return ItemKind.OTHER_ITEM


def kind_of_auto_submitted(value: str | None) -> ItemKind:
    """The kind an ``Auto-Submitted`` header value names (RFC 3834 §5; parameters, comments ignored).

    Absent or ``no``: written by a person. ``auto-replied``: an automatic reply
    (out-of-office, vacation responder). Any other value (``auto-generated``,
    ``auto-notified``, an extension): sent by a program.
    """
    keyword = _KEYWORD_END.split((value or "").strip(), maxsplit=1)[0].casefold()
    if not keyword or keyword == "no":
        return ItemKind.EMAIL
    if keyword == "auto-replied":
        return ItemKind.AUTOMATIC_REPLY
    return ItemKind.AUTOMATIC_MESSAGE


def not_an_email(item: MailItem) -> NotAnEmail | None:
    """None for an email a person wrote; else what the item is (first its class, then its header)."""
    kind = kind_of_class(item.item_class)
    if kind is not ItemKind.EMAIL:
        return NotAnEmail(kind, f"item class {item.item_class.strip()[:_DETAIL]}")
    kind = kind_of_auto_submitted(item.auto_submitted)
    if kind is not ItemKind.EMAIL:
        return NotAnEmail(kind, f"Auto-Submitted: {(item.auto_submitted or '').strip()[:_DETAIL]}")
    return None


def _is(cls: str, prefix: str) -> bool:
    """``cls`` is ``prefix`` or a class below it (``prefix.…``); both already case-folded."""
    return cls == prefix or cls.startswith(prefix + ".")
