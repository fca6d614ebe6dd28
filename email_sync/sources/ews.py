"""Exchange Web Services mail source: folder mail → :class:`MailItem` batches, via exchangelib.

An I/O adapter, not a rule: it takes a ready exchangelib ``Account`` (the Airflow hook makes
one from a Connection) so it runs the same against Exchange and the EWS sandbox. Requests are
paged (FindItem pages and GetItem chunks of up to ``page_size``) and ask only for the fields
the sync reads; attachment *metadata* comes with the items, content is fetched on upload, one
GetAttachment request per batch the caller bounds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import lxml.etree
from exchangelib import Account, FileAttachment, HTMLBody, Message
from exchangelib.attachments import AttachmentId
from exchangelib.errors import ErrorTimeoutExpired, SOAPError
from exchangelib.folders import BaseFolder
from exchangelib.protocol import BaseProtocol
from exchangelib.services import GetAttachment
from exchangelib.util import MNS, SOAPNS, TNS, BytesGeneratorIO, safe_b64decode

from email_sync.models import Address, AttachmentRef, MailItem

log = logging.getLogger(__name__)

FIELDS = (
    "message_id", "subject", "body", "sender", "author", "to_recipients", "cc_recipients",
    "bcc_recipients", "datetime_sent", "datetime_received", "in_reply_to", "references",
    "conversation_id", "categories", "sensitivity", "attachments",
)
PAGE_SIZE = 1000  # EWS's maximum FindItem page; GetItem chunks of the same size

# Well-known folder names → exchangelib's distinguished-folder accessor.
_DISTINGUISHED = {"inbox": "inbox", "sent items": "sent", "sent": "sent", "drafts": "drafts",
                  "deleted items": "trash", "junk email": "junk", "outbox": "outbox"}


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An item EWS could not return or we could not convert: skipped with a reason, never fatal."""

    item_id: str | None
    folder: str
    reason: str


class _ReadResponse(requests.Response):
    """A response read in full, whose ``iter_content()`` yields 64 KiB slices by default.

    exchangelib parses every SOAP answer from ``response.iter_content()`` with requests'
    default chunk size of one byte; for a 30 MB GetAttachment answer that is 30 million
    generator steps, most of the upload step's time. The bytes are already in memory, so a
    larger slice changes nothing but the speed (docs/BENCHMARKS.md).
    """

    def iter_content(self, chunk_size: int | None = 64 * 1024, decode_unicode: bool = False) -> Iterator[Any]:
        return super().iter_content(chunk_size=chunk_size, decode_unicode=decode_unicode)


class _EwsTransport:
    """What the sync adds to exchangelib's HTTP adapter: a request count and read-in-full answers.

    Installed through exchangelib's own extension point, ``BaseProtocol.HTTP_ADAPTER_CLS``,
    by subclassing whatever adapter is configured there, so nothing else changes. Streaming
    requests (``stream=True``) are left as they are.
    """

    total = 0
    _lock = threading.Lock()

    @classmethod
    def install(cls) -> None:
        base = BaseProtocol.HTTP_ADAPTER_CLS
        if getattr(base, "_sync_transport", False):
            return

        def send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            with cls._lock:
                cls.total += 1
            response = base.send(adapter, request, *args, **kwargs)
            if not kwargs.get("stream") and type(response) is requests.Response:
                response.__class__ = _ReadResponse
            return response

        BaseProtocol.HTTP_ADAPTER_CLS = type(f"Sync{base.__name__}", (base,),
                                             {"send": send, "_sync_transport": True})


# At import, so requests made while an Account is set up (version discovery) count too.
_EwsTransport.install()


class _StreamedGetAttachment(GetAttachment):
    """GetAttachment whose response is parsed as it arrives, each file decoded as it completes.

    exchangelib reads a whole response into memory, then parses all of it into one tree
    before anything is converted: for a 25 MB batch, its 33 MB of base64 as the body, again
    in the tree, briefly a third time while the body is read, next to the decoded files.
    Here the body streams into ``lxml.etree.iterparse``; each ``t:Content`` is decoded when
    its element ends and its text is dropped, so memory holds the decoded batch plus one
    file's base64. Still one request per batch, and the whole response is parsed before
    anything is returned, as exchangelib does: SOAP faults (ErrorServerBusy and its
    retries) and per-attachment errors go through exchangelib's own handling unchanged.
    """

    _SLOT = "email-sync-content"  # attribute on a FileAttachment element: index into _decoded
    _MESSAGE, _RESPONSE = f"{{{MNS}}}GetAttachmentResponseMessage", f"{{{MNS}}}GetAttachmentResponse"
    _CONTENT, _FILE, _FAULT = f"{{{TNS}}}Content", f"{{{TNS}}}FileAttachment", f"{{{SOAPNS}}}Fault"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.streaming = True  # exchangelib POSTs with stream=True and hands us the response
        self._decoded: list[bytes | None] = []

    def _get_soap_messages(self, body: Any) -> list[Any]:
        # In streaming mode GetAttachment passes the HTTP response on as ``body``. iter_content
        # also serves a body exchangelib already read (an HTTP 500 carrying a SOAP fault).
        try:
            return self._parse(BytesGeneratorIO(body.iter_content(64 * 1024)))
        except OSError as e:  # requests' errors are OSErrors too
            # What exchangelib raises for a connection lost while reading a whole response.
            raise ErrorTimeoutExpired(f"Reraised from {e.__class__.__name__}({e})") from e

    def _parse(self, stream: Any) -> list[Any]:
        messages, response = [], None
        for _, elem in lxml.etree.iterparse(stream, events=("end",), resolve_entities=False, huge_tree=True,
                                            recover=True, tag=(self._CONTENT, self._MESSAGE, self._RESPONSE,
                                                               self._FAULT)):
            if elem.tag == self._CONTENT:
                self._take_content(elem)
            elif elem.tag == self._MESSAGE:
                messages.append(elem)
            elif elem.tag == self._RESPONSE:
                response = elem
            else:
                self._raise_soap_errors(fault=elem)  # raises ErrorServerBusy, SOAPError, ...
        if response is None:
            raise SOAPError(f"Unknown SOAP response (expected {self._RESPONSE} or Fault)")
        return messages or [response]

    def _take_content(self, elem: Any) -> None:
        """Decode a file's base64 now and drop it from the tree; the FileAttachment keeps an index."""
        attachment = elem.getparent()
        if attachment is None or attachment.tag != self._FILE or not elem.text:
            return  # left as is: exchangelib treats it as before
        self._decoded.append(safe_b64decode(elem.text))
        attachment.set(self._SLOT, str(len(self._decoded) - 1))
        attachment.remove(elem)

    def _elem_to_obj(self, elem: Any) -> Any:
        slot = elem.get(self._SLOT)
        obj = super()._elem_to_obj(elem)
        if slot is not None:
            obj._content, self._decoded[int(slot)] = self._decoded[int(slot)], None
        return obj


class EwsMailSource:
    def __init__(self, account: Account, page_size: int = PAGE_SIZE) -> None:
        self.account = account
        self.page_size = page_size
        self._requests_at_start = _EwsTransport.total

    @property
    def requests(self) -> int:
        """EWS HTTP requests sent in this process since this source was made (incl. retries)."""
        return _EwsTransport.total - self._requests_at_start

    # -- folders --------------------------------------------------------------------
    def folder(self, path: str) -> BaseFolder:
        """Resolve ``Inbox/Clients`` style paths; the first segment may be a well-known folder."""
        head, *rest = [p for p in path.split("/") if p]
        accessor = _DISTINGUISHED.get(head.strip().lower())
        folder = getattr(self.account, accessor) if accessor else self.account.msg_folder_root / head
        for part in rest:
            folder = folder / part
        return folder

    def is_sent_folder(self, path: str) -> bool:
        head = next(p for p in path.split("/") if p)
        return _DISTINGUISHED.get(head.strip().lower()) == "sent"

    # -- extraction -----------------------------------------------------------------
    def extract(self, folders: Iterable[str], start: datetime, end: datetime) -> Iterator[MailItem | Unreadable]:
        """Items with start < time <= end per folder (sent time in Sent Items, else received)."""
        for path in folders:
            folder = self.folder(path)
            field = "datetime_sent" if self.is_sent_folder(path) else "datetime_received"
            query = folder.filter(**{f"{field}__gt": start, f"{field}__lte": end}).only(*FIELDS).order_by(field)
            query.page_size = self.page_size
            query.chunk_size = self.page_size
            yield from self._convert_all(query, path)

    def fetch(self, refs: Iterable[tuple[str, str]]) -> Iterator[MailItem | Unreadable]:
        """Re-read specific items (retries of earlier failures): ``refs`` = (item_id, folder)."""
        refs = list(refs)
        if not refs:
            return
        folders = {item_id: folder for item_id, folder in refs}
        results = self.account.fetch(ids=[(item_id, None) for item_id, _ in refs],
                                     only_fields=list(FIELDS), chunk_size=self.page_size)
        for (item_id, _), result in zip(refs, results, strict=True):
            yield from self._convert_all([result], folders[item_id], fallback_id=item_id)

    def _convert_all(self, results: Iterable[Any], folder: str, fallback_id: str | None = None) -> Iterator[MailItem | Unreadable]:
        for result in results:
            if isinstance(result, Exception):
                yield Unreadable(fallback_id, folder, f"ews_error:{type(result).__name__}")
                continue
            try:
                yield to_mail_item(result, folder)
            except Exception as exc:  # one bad item never stops the run
                yield Unreadable(getattr(result, "id", fallback_id), folder, f"unconvertible:{type(exc).__name__}")

    # -- attachments and write-back ---------------------------------------------------
    def attachment_contents(self, attachment_ids: Sequence[str]) -> list[bytes | Exception]:
        """Contents of these file attachments, in order: one GetAttachment request for all.

        The caller bounds how many bytes it asks for at once (memory); an attachment EWS
        refuses comes back as its exception, so one bad file never stops the others.
        """
        if not attachment_ids:
            return []
        service = _StreamedGetAttachment(account=self.account, chunk_size=len(attachment_ids))
        answers = service.call(items=[AttachmentId(id=i) for i in attachment_ids], include_mime_content=False,
                               body_type=None, filter_html_content=None, additional_fields=None)
        return [a if isinstance(a, Exception) else (a.content or b"") for a in answers]

    def add_category(self, items: Iterable[tuple[str, str | None, tuple[str, ...]]], category: str) -> list[str]:
        """Add ``category`` to items given as (item_id, change_key, current categories).

        Returns the ids of the items that now carry it (including those that already did);
        an item EWS refused is left out and logged by error type, so the caller retries it.
        One UpdateItem request per ``page_size`` items.
        """
        done: list[str] = []
        updates = []
        for item_id, change_key, categories in items:
            if any(c.lower() == category.lower() for c in categories):
                done.append(item_id)
                continue
            message = Message(account=self.account, id=item_id, changekey=change_key,
                              categories=[*categories, category])
            updates.append((message, ["categories"]))
        if not updates:
            return done
        results = list(self.account.bulk_update(updates, chunk_size=self.page_size))
        errors = [r for r in results if isinstance(r, Exception)]
        done.extend(m.id for (m, _), r in zip(updates, results, strict=True) if not isinstance(r, Exception))
        if errors:
            log.warning("CRM category not written on %d item(s): %s", len(errors), type(errors[0]).__name__)
        return done


def _address(mailbox: Any) -> Address | None:
    if mailbox is None or not getattr(mailbox, "email_address", None):
        return None
    return Address(email=mailbox.email_address, name=mailbox.name or "")


def _addresses(mailboxes: Iterable[Any] | None) -> tuple[Address, ...]:
    return tuple(a for a in (_address(m) for m in mailboxes or ()) if a is not None)


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    # EWSDateTime.astimezone() insists on an EWSTimeZone: go through the POSIX timestamp instead.
    return datetime.fromtimestamp(value.timestamp(), tz=UTC)


def to_mail_item(message: Any, folder: str) -> MailItem:
    """Convert an exchangelib item (only the fields in FIELDS are loaded) to a MailItem."""
    body = message.body or ""
    attachments = tuple(
        AttachmentRef(
            attachment_id=a.attachment_id.id,
            name=a.name or "attachment",
            size=int(a.size or 0),
            content_type=a.content_type or "application/octet-stream",
            is_inline=bool(a.is_inline),
        )
        for a in message.attachments or ()
        if isinstance(a, FileAttachment)
    )
    conversation = getattr(message, "conversation_id", None)
    return MailItem(
        item_id=message.id,
        change_key=message.changekey,
        message_id=message.message_id or message.id,
        folder=folder,
        subject=message.subject or "",
        body=str(body),
        body_is_html=isinstance(body, HTMLBody),
        sender=_address(message.sender) or _address(getattr(message, "author", None)),
        to=_addresses(message.to_recipients),
        cc=_addresses(message.cc_recipients),
        bcc=_addresses(message.bcc_recipients),
        sent_at=_utc(message.datetime_sent),
        received_at=_utc(message.datetime_received),
        in_reply_to=message.in_reply_to,
        references=tuple((message.references or "").split()),
        conversation_id=getattr(conversation, "id", None),
        categories=tuple(message.categories or ()),
        sensitivity=message.sensitivity or "Normal",
        attachments=attachments,
    )
