"""Which attachments of a recorded email are uploaded as Salesforce Files (SPEC §4).

Attachments go up when the email is recorded and either the job records all attachments
or the email is tagged (Record-Attachments smart address or category); that choice is
``Decision.record_attachments``. Inline images are part of the body, never attachments.
Every other requested attachment is uploaded or skipped with a reason the run counts
(``match`` adds ``attachments_<reason>`` per skipped file); the email itself still syncs:

- over the org's ``attachment_max_bytes`` (5 MB): ``attachment_too_large``;
- 0 bytes: ``attachment_empty`` (Salesforce refuses an empty ContentVersion);
- an attached email, meeting or contact (an item attachment): ``item_attachment``;
- an S/MIME signature (``smime.p7s``, ``application/(x-)pkcs7-signature``, the
  ``multipart/signed`` wrapper Exchange stores a signed message's content in, certificates
  ``smime.p7c``): ``smime_signature``; the protected content of an encrypted or opaque-signed
  message (``smime.p7m``, ``application/(x-)pkcs7-mime``): ``smime_message``. Neither
  opens in Salesforce. A document that is itself signed (``invoice.xml.p7m``, as e-invoices
  are) is a file like any other and uploaded.

The name Salesforce sees (``PathOnClient``, Title) is :func:`upload_name` of the source's
name: a file name, never a path. The attachment key still comes from the name as the source
gave it, so keys of files already uploaded do not change.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, replace
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
    ITEM_ATTACHMENT = "item_attachment"  # an attached email/meeting/contact, not a file
    SMIME_SIGNATURE = "smime_signature"  # S/MIME signature or signed-message wrapper
    SMIME_MESSAGE = "smime_message"  # S/MIME encrypted / opaque-signed content (smime.p7m)


DEFAULT_NAME = "attachment"
MAX_NAME_CHARS = 255  # ContentVersion.Title's length; PathOnClient allows more
_SIGNATURE_TYPES = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature", "multipart/signed"})
_SMIME_NAMES = {"smime.p7s": AttachmentSkipReason.SMIME_SIGNATURE, "smime.p7c": AttachmentSkipReason.SMIME_SIGNATURE,
                "smime.p7m": AttachmentSkipReason.SMIME_MESSAGE}
_SEPARATORS = re.compile(r"[\\/]")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Bidirectional overrides and isolates: "invoice\u202Efdp.exe" displays as "invoiceexe.pdf".
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


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
        if ref.kind != "file":  # never counted below: file keys stay what they were before items were listed
            skipped.append((ref, AttachmentSkipReason.ITEM_ATTACHMENT))
            continue
        occurrence = seen[(ref.name, ref.size)]
        seen[(ref.name, ref.size)] += 1
        smime = smime_part(ref)
        if smime is not None:
            skipped.append((ref, smime))
        elif ref.size <= 0:
            skipped.append((ref, AttachmentSkipReason.EMPTY))
        elif ref.size > org.attachment_max_bytes:
            skipped.append((ref, AttachmentSkipReason.TOO_LARGE))
        else:
            key = attachment_key(identity, ref.name, ref.size, occurrence)  # the source's name: keys never change
            upload.append(SelectedAttachment(replace(ref, name=upload_name(ref.name)), key))
    return AttachmentPlan(tuple(upload), tuple(skipped))


def upload_name(name: str) -> str:
    """The file name Salesforce gets (``PathOnClient``, Title) for a source's attachment name.

    Names come from the sender: ``../../etc/passwd`` or ``C:\\x\\y.pdf`` are possible. Kept:
    the last component between ``/`` and ``\\`` with anything left once cleaned of control
    characters (C0, C1, DEL, and U+FFFD, which stands for one), bidirectional overrides, drive letters and outer white space;
    ``.`` and ``..`` are no names. Nothing left gives ``attachment``. At most 255 characters, the
    extension kept.
    """
    last = next((c for c in map(_clean, reversed(_SEPARATORS.split(name or ""))) if c), "")
    if last in ("", ".", ".."):
        return DEFAULT_NAME
    if len(last) > MAX_NAME_CHARS:
        stem, dot, ext = last.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16:
            last = stem[: MAX_NAME_CHARS - len(ext) - 1].rstrip() + "." + ext
        else:
            last = last[:MAX_NAME_CHARS].rstrip()
    return last


def _clean(component: str) -> str:
    """One path component without control characters, bidi controls, drive letters or outer spaces."""
    # U+FFFD stands for a control character the mail source could not pass on (see the EWS source).
    text = "".join(c for c in component
                   if unicodedata.category(c) != "Cc" and c not in _BIDI_CONTROLS and c != "\ufffd").strip()
    while True:
        shorter = _DRIVE.sub("", text).strip()
        if shorter == text:
            return text
        text = shorter


def smime_part(ref: AttachmentRef) -> AttachmentSkipReason | None:
    """The S/MIME skip reason of an attachment that is a signature or protected content, else None.

    By content type (a detached signature, Exchange's ``multipart/signed`` wrapper) or by
    the names S/MIME agents give these parts (RFC 8551: ``smime.p7s``, ``smime.p7m``,
    ``smime.p7c``). ``application/pkcs7-mime`` under another name is a signed document the
    sender attached on purpose (e-invoices travel as ``*.xml.p7m``): uploaded.
    """
    content_type = (ref.content_type or "").split(";", 1)[0].strip().lower()
    if content_type in _SIGNATURE_TYPES:
        return AttachmentSkipReason.SMIME_SIGNATURE
    by_name = _SMIME_NAMES.get(upload_name(ref.name).lower())
    if by_name is not None:
        return by_name
    return None
