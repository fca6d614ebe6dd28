"""Which attachments of a recorded email are uploaded as Salesforce Files (SPEC §4).

Attachments go up when the email is recorded and either the job records all attachments
or the email is tagged (Record-Attachments smart address or category); that choice is
``Decision.record_attachments``. Inline images are part of the body, never attachments.
Files over the org's ``attachment_max_bytes`` (5 MB) are skipped and reported; the email
itself still syncs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from email_sync.rules.classify import Decision
from email_sync.rules.keys import attachment_key, email_identity
from email_sync.rules.models import AttachmentRef, MailItem
from email_sync.rules.settings import OrgSettings


class AttachmentSkipReason(StrEnum):
    """Why a requested attachment was not uploaded."""

    TOO_LARGE = "attachment_too_large"  # over org attachment_max_bytes
    EMPTY = "attachment_empty"  # 0 bytes: Salesforce refuses an empty ContentVersion


@dataclass(frozen=True, slots=True)
class SelectedAttachment:
    """An attachment to upload and its stable key (the ``sync_file`` row's identity)."""

    ref: AttachmentRef
    key: str


class AttachmentPlan(NamedTuple):
    """The uploads for one email and the requested attachments that were skipped.

    A named tuple, so ``upload, skipped = select_attachments(...)`` works too.
    """

    upload: tuple[SelectedAttachment, ...] = ()
    skipped: tuple[tuple[AttachmentRef, AttachmentSkipReason], ...] = ()


def select_attachments(item: MailItem, decision: Decision, org: OrgSettings) -> AttachmentPlan:
    """Split an email's attachments into uploads and reported skips (none if not requested)."""
    if not decision.record or not decision.record_attachments:
        return AttachmentPlan()
    upload: list[SelectedAttachment] = []
    skipped: list[tuple[AttachmentRef, AttachmentSkipReason]] = []
    identity = email_identity(item)
    if identity is None:  # classify makes id-less mail malformed; never reached for recorded mail
        return AttachmentPlan()
    seen: Counter[tuple[str, int]] = Counter()
    for ref in item.attachments:
        if ref.is_inline:
            continue
        occurrence = seen[(ref.name, ref.size)]
        seen[(ref.name, ref.size)] += 1
        if ref.size <= 0:
            skipped.append((ref, AttachmentSkipReason.EMPTY))
        elif ref.size > org.attachment_max_bytes:
            skipped.append((ref, AttachmentSkipReason.TOO_LARGE))
        else:
            key = attachment_key(identity, ref.name, ref.size, occurrence)
            upload.append(SelectedAttachment(ref, key))
    return AttachmentPlan(tuple(upload), tuple(skipped))
