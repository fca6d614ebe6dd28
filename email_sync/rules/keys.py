"""Deterministic identities for emails, Tasks and files: what makes the sync exactly-once.

A key depends only on what identifies the thing (job, RFC 5322 Message-ID, part number,
attachment), never on run, time or Salesforce limits, so a retry, a re-run, Sync Now
during a scheduled run, and an overlapping backfill all compute the same key; the ledger
and Salesforce's external-id field then refuse a second copy.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC

from email_sync.rules.addresses import normalize_address, normalize_message_id
from email_sync.rules.models import MailItem

# Task field that carries the key. Define it as Text(40), External ID, Unique.
IDEMPOTENCY_FIELD = "Email_Sync_Key__c"
# 40 hex characters = 160 bits of SHA-256: collision-free for any mail volume, short
# enough for a Text(40) external-id field and the ledger's VARCHAR(64) column.
IDEMPOTENCY_KEY_LENGTH = 40
IDEMPOTENCY_KEY_RE = re.compile(rf"^[0-9a-f]{{{IDEMPOTENCY_KEY_LENGTH}}}$")
MESSAGE_KEY_LENGTH = 32
# Bumping the version changes every key: only do it together with a ledger migration.
_KEY_VERSION = "email-sync/v1"
_SEP = "\x1f"  # unit separator: cannot occur in a job id or a Message-ID


def missing_key_field_message(detail: str) -> str:
    """What to tell an admin whose org lacks :data:`IDEMPOTENCY_FIELD` (wherever it is found)."""
    return (f"Salesforce Task has no usable external-id field {IDEMPOTENCY_FIELD} ({detail}). Ask a Salesforce "
            f"admin to create Task.{IDEMPOTENCY_FIELD} as Text(40), External ID, Unique (docs/CONNECTIONS.md); "
            "without it a retry could duplicate Tasks.")


def message_key(message_id: str) -> str:
    """How the ledger refers to an email: 32 hex of SHA-256 of the normalised Message-ID.

    Normalised = without angle brackets and surrounding space, lower-cased, so EWS and
    Graph (which present Message-IDs differently) and servers that change case agree.
    128 bits is ample.
    """
    normalized = normalize_message_id(message_id)
    if normalized is None:
        raise ValueError("an email needs a Message-ID (or item id) to have a key")
    return hashlib.sha256(normalized.lower().encode("utf-8")).hexdigest()[:MESSAGE_KEY_LENGTH]


def email_identity(item: MailItem) -> str | None:
    """The id an email's keys are built from: its Message-ID, else one made from its content.

    An email without a Message-ID gets ``<hash@no-message-id.email-sync>`` from what stays
    the same wherever the email is and whichever source reads it: sender, sent time,
    subject and recipients. (The source's item id would change with a move between folders
    and differs between EWS and Graph, so a backfill after a move would record it again.)
    The item id is the last resort, for an email without sender and sent time. None when
    nothing identifies it; classification then skips it as malformed.
    """
    if normalize_message_id(item.message_id) is not None:
        return item.message_id
    sender = normalize_address(item.sender.email) if item.sender else None
    if sender or item.sent_at is not None:
        recipients = sorted(filter(None, (normalize_address(a.email) for a in item.recipients)))
        sent = item.sent_at.astimezone(UTC).isoformat(timespec="seconds") if item.sent_at else ""
        text = _SEP.join((sender or "", sent, item.subject or "", *recipients))
        return f"<{hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]}@no-message-id.email-sync>"
    if normalize_message_id(item.item_id) is not None:
        return item.item_id
    return None


def idempotency_key(job_id: str, message_id: str, part: int) -> str:
    """The Task's external id for (job, email, part); ``part`` is 1-based.

    The part count is deliberately not part of the key: if a describe change ever splits
    the same email differently, part 1 keeps its identity.
    """
    if part < 1:
        raise ValueError("part numbers start at 1")
    text = _SEP.join((_KEY_VERSION, job_id, message_key(message_id), str(part)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:IDEMPOTENCY_KEY_LENGTH]


def attachment_key(message_id: str, name: str, size: int, occurrence: int = 0) -> str:
    """SHA-256 hex (64) identifying one attachment of one email (the ``sync_file`` key).

    Built from what the user sees (file name and size) rather than the source's
    attachment id, which embeds the item id and changes when an item moves folders in
    EWS. ``occurrence`` tells apart attachments with the same name and size (0, 1, ...
    in the email's attachment order).
    """
    text = _SEP.join((_KEY_VERSION, message_key(message_id), name, str(size), str(occurrence)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
