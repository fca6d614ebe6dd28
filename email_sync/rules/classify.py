"""Which emails are recorded (SPEC §3): one email in, one :class:`Decision` out.

Checks run in one fixed order and the first that fails gives the reason, so a skipped
email always has exactly one, stable reason (docs/RULES.md lists the order and why):

    not an email a person wrote (meeting_message, calendar_item, receipt, non_delivery_report,
    automatic_reply, automatic_message, other_item: email_sync.rules.item_kinds)
    → malformed → mode_off → excluded_category → excluded_smart_address → private
    → excluded_address → internal_only → not_designated → (matching) not_matched
    → (task building) subject_too_long

Classification never touches Salesforce; :func:`email_sync.rules.matching.finalize` applies the matching outcome.
Bad input never raises: it becomes ``malformed``, so one odd email cannot stop a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from email_sync.rules.addresses import DomainSet, message_ids_in, normalize_address, normalize_message_id
from email_sync.rules.item_kinds import not_an_email
from email_sync.rules.keys import email_identity, message_key
from email_sync.rules.models import Address, Direction, MailItem
from email_sync.rules.settings import JobSettings, Mode, OrgSettings

PRIVATE_SENSITIVITIES = frozenset({"private", "confidential"})


class SkipReason(StrEnum):
    """Why an email was not recorded; machine-readable, stored per email per run."""

    MALFORMED = "malformed"  # no Message-ID/item id, no date, no sender (inbound) or no recipient (outbound)
    MODE_OFF = "mode_off"  # the job's mode is off
    EXCLUDED_CATEGORY = "excluded_category"  # carries the DoNotSync category
    EXCLUDED_SMART_ADDRESS = "excluded_smart_address"  # DoNotRecord smart address among To/Cc/Bcc
    PRIVATE = "private"  # Private/Confidential sensitivity and org sync_private is false
    EXCLUDED_ADDRESS = "excluded_address"  # an address on it is on an admin/user exclusion list
    INTERNAL_ONLY = "internal_only"  # no external participant
    NOT_DESIGNATED = "not_designated"  # designated mode, no designation, not a reply
    NOT_MATCHED = "not_matched"  # no participant matches a Contact/Lead
    SUBJECT_TOO_LONG = "subject_too_long"  # the Subject alone exceeds its field (part markers move aside)
    ALREADY_RECORDED = "already_recorded"  # every Task of it exists (an overlap, retry or backfill)
    # Not an email a person wrote (SPEC §3 rule 6; email_sync.rules.item_kinds): checked first.
    MEETING_MESSAGE = "meeting_message"  # meeting request, response, cancellation (IPM.Schedule.Meeting.*)
    CALENDAR_ITEM = "calendar_item"  # an appointment filed in a mail folder (IPM.Appointment)
    RECEIPT = "receipt"  # read/not-read/delivery receipt, delay notice (REPORT.*, not NDR)
    NON_DELIVERY_REPORT = "non_delivery_report"  # a bounce (REPORT.*.NDR)
    AUTOMATIC_REPLY = "automatic_reply"  # out-of-office/rule reply (IPM.Note.Rules.*, Auto-Submitted: auto-replied)
    AUTOMATIC_MESSAGE = "automatic_message"  # sent by a program (Auto-Submitted other than no / auto-replied)
    OTHER_ITEM = "other_item"  # contact, task, note, post, ... in a mail folder (no email class)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one email.

    ``reason`` is None while the email is still to be recorded. ``participants`` are the
    external addresses to match, normalised, in header order (inbound: the sender;
    outbound: To, Cc, Bcc). ``email_at`` is the sent (outbound) or received (inbound)
    time, timezone-aware.
    """

    reason: SkipReason | None
    direction: Direction | None = None
    participants: tuple[str, ...] = ()
    designated: bool = False
    is_reply: bool = False
    record_attachments: bool = False
    email_at: datetime | None = None
    detail: str = ""

    @property
    def record(self) -> bool:
        """Whether the email is (still) to be recorded."""
        return self.reason is None


@dataclass(frozen=True, slots=True)
class Rules:
    """A job's settings and the org's, pre-normalised for classifying many emails."""

    mode: Mode
    mailbox: str
    internal_domains: DomainSet
    excluded_addresses: frozenset[str]
    excluded_domains: DomainSet
    smart_addresses: frozenset[str]
    record_address: str | None
    do_not_record_address: str | None
    record_attachments_address: str | None
    crm_category: str
    do_not_sync_category: str
    record_attachments_category: str | None
    sync_private: bool
    reply_window: timedelta
    record_all_attachments: bool


def compile_rules(settings: JobSettings, org: OrgSettings) -> Rules:
    """Build :class:`Rules` once per run. Exclusion lists are the org's plus the user's."""
    return Rules(
        mode=settings.mode,
        mailbox=settings.mailbox,
        internal_domains=DomainSet(org.internal_domains),
        excluded_addresses=frozenset(org.excluded_addresses) | frozenset(settings.excluded_addresses),
        excluded_domains=DomainSet((*org.excluded_domains, *settings.excluded_domains)),
        smart_addresses=org.smart_addresses,
        record_address=org.record_address,
        do_not_record_address=org.do_not_record_address,
        record_attachments_address=org.record_attachments_address,
        crm_category=org.crm_category.casefold(),
        do_not_sync_category=org.do_not_sync_category.casefold(),
        record_attachments_category=(org.record_attachments_category or "").casefold() or None,
        sync_private=org.sync_private,
        reply_window=timedelta(days=org.reply_window_days),
        record_all_attachments=settings.record_all_attachments,
    )


def classify(
    item: MailItem, rules: Rules, recorded: Mapping[str, datetime] | None = None
) -> Decision:
    """Decide whether one email is a candidate for recording (matching still to come).

    ``recorded`` maps :func:`email_sync.rules.keys.message_key` of emails this job recorded to
    their sent/received time (the ledger's ``email_at``). It must hold every referenced
    original recorded at or after :func:`reply_lookup_since` of the emails classified
    (``StateStore.recorded_since(job, referenced_keys, reply_lookup_since(items, rules))``),
    never a window counted back from "now": the window runs from the original to the
    reply (:func:`_replies_to_recorded`), so a backfill decides as the original run did.
    Older or later entries are harmless. It is only used to recognise
    inbound replies in ``designated`` mode.
    """
    sender = _normalized(item.sender)
    recipients = _unique(a for a in (_normalized(r) for r in item.recipients) if a)
    direction = _direction(item, sender, rules)
    email_at = _email_time(item, direction)

    kind = not_an_email(item)  # a meeting, receipt, report or automatic reply is no email at all
    if kind is not None:
        return Decision(SkipReason(kind.kind.value), direction, email_at=email_at, detail=kind.detail)

    malformed = _malformed_detail(item, direction, sender, recipients, email_at)
    if malformed:
        return Decision(SkipReason.MALFORMED, direction, email_at=email_at, detail=malformed)

    def skip(reason: SkipReason, detail: str = "") -> Decision:
        return Decision(reason, direction, email_at=email_at, detail=detail)

    categories = {c.strip().casefold() for c in item.categories if c}
    if rules.mode is Mode.OFF:
        return skip(SkipReason.MODE_OFF)
    if rules.do_not_sync_category in categories:
        return skip(SkipReason.EXCLUDED_CATEGORY)
    if rules.do_not_record_address and rules.do_not_record_address in recipients:
        return skip(SkipReason.EXCLUDED_SMART_ADDRESS)
    if not rules.sync_private and (item.sensitivity or "").strip().casefold() in PRIVATE_SENSITIVITIES:
        return skip(SkipReason.PRIVATE, item.sensitivity)

    everyone = _unique(a for a in (sender, *recipients) if a and a not in rules.smart_addresses)
    excluded = _exclusion_detail(everyone, rules)
    if excluded:
        return skip(SkipReason.EXCLUDED_ADDRESS, excluded)

    candidates = (sender,) if direction is Direction.INBOUND else recipients
    participants = tuple(a for a in candidates if a and _is_external(a, rules))
    if not participants:
        return skip(SkipReason.INTERNAL_ONLY)

    designated = rules.crm_category in categories or (
        rules.record_address is not None and rules.record_address in recipients
    )
    is_reply = (
        direction is Direction.INBOUND
        and email_at is not None
        and _replies_to_recorded(item, email_at, recorded or {}, rules.reply_window)
    )
    if rules.mode is Mode.DESIGNATED and not designated and not is_reply:
        return skip(SkipReason.NOT_DESIGNATED)

    record_attachments = (
        rules.record_all_attachments
        or (rules.record_attachments_address is not None and rules.record_attachments_address in recipients)
        or (rules.record_attachments_category is not None and rules.record_attachments_category in categories)
    )
    return Decision(
        None, direction, participants, designated, is_reply, record_attachments, email_at
    )


def is_outbound_folder(folder: str, sent_folders: Iterable[str]) -> bool:
    """Whether a folder path is one of ``sent_folders`` or below one (case-insensitive, ``/`` paths).

    Used by the mail sources for the folders an admin declares outbound (``org.sent_folders``);
    classification reads the source's decision from ``MailItem.in_sent_folder``.
    """
    sent_folders = [s.strip().strip("/").casefold() for s in sent_folders]
    path = folder.strip().strip("/").casefold()
    return any(path == s or path.startswith(s + "/") for s in sent_folders)


def _direction(item: MailItem, sender: str | None, rules: Rules) -> Direction:
    if sender == rules.mailbox or item.in_sent_folder:
        return Direction.OUTBOUND
    return Direction.INBOUND


def _email_time(item: MailItem, direction: Direction) -> datetime | None:
    """Sent time for outbound, received time for inbound, the other as a fallback.

    A naive datetime is taken as UTC (the batch format promises UTC) rather than dropped.
    """
    first, second = (
        (item.sent_at, item.received_at)
        if direction is Direction.OUTBOUND
        else (item.received_at, item.sent_at)
    )
    when = first or second
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _malformed_detail(
    item: MailItem,
    direction: Direction,
    sender: str | None,
    recipients: tuple[str, ...],
    email_at: datetime | None,
) -> str:
    if email_identity(item) is None or (normalize_message_id(item.message_id) is None
                                        and normalize_message_id(item.item_id) is None):
        return "no Message-ID or item id"
    if email_at is None:
        return "no sent/received time"
    if direction is Direction.INBOUND and sender is None:
        return "no usable sender address"
    if direction is Direction.OUTBOUND and not recipients:
        return "no usable recipient address"
    return ""


def _exclusion_detail(addresses: Iterable[str], rules: Rules) -> str:
    """Which list excluded the email (never the address itself: details are stored)."""
    for address in addresses:
        if address in rules.excluded_addresses:
            return "address on exclusion list"
        if rules.excluded_domains.contains_address(address):
            return "domain on exclusion list"
    return ""


def _is_external(address: str, rules: Rules) -> bool:
    """Not the mailbox itself, not a smart address, not in an internal domain."""
    return (
        address != rules.mailbox
        and address not in rules.smart_addresses
        and not rules.internal_domains.contains_address(address)
    )


def _replies_to_recorded(
    item: MailItem, email_at: datetime, recorded: Mapping[str, datetime], window: timedelta
) -> bool:
    """Whether In-Reply-To/References name an email this job recorded within the window.

    The window runs from the original to the reply, both by their own email times:
    ``0 <= reply time - original time <= window``. Neither "now" nor the run's interval
    enters, so a scheduled run and a later backfill of the same reply decide alike. An
    original later than the reply (a clock gone wrong, a forged header) does not count.
    """
    if not recorded:
        return False
    for msg_id in message_ids_in((item.in_reply_to, *item.references)):
        original_at = recorded.get(message_key(msg_id))
        if original_at is None:
            continue
        if original_at.tzinfo is None:
            original_at = original_at.replace(tzinfo=UTC)
        if timedelta(0) <= email_at - original_at <= window:
            return True
    return False


def reply_lookup_since(items: Iterable[MailItem], rules: Rules) -> datetime | None:
    """The ``since`` for looking up the recorded originals these emails may reply to.

    The earliest time (sent or received, whichever is earlier) of any email that names
    another in In-Reply-To/References, minus the reply window: every original a reply
    of the batch can count (:func:`_replies_to_recorded`) was recorded at or after it,
    however far back the run's interval lies (a backfill). None when no email names
    another: there is nothing to look up. Pass the result to
    ``StateStore.recorded_since`` and the answer to :func:`classify` as ``recorded``.
    """
    earliest: datetime | None = None
    for item in items:
        if not message_ids_in((item.in_reply_to, *item.references)):
            continue
        for when in (item.sent_at, item.received_at):
            if when is None:
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            if earliest is None or when < earliest:
                earliest = when
    return None if earliest is None else earliest - rules.reply_window


def _normalized(address: Address | None) -> str | None:
    return normalize_address(address.email) if address is not None else None


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(addresses))
