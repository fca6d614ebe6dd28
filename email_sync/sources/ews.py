"""Exchange Web Services mail source: a :class:`~email_sync.sources.base.MailSource` over exchangelib.

An I/O adapter, not a rule: it takes an exchangelib ``Account`` (or a function that opens
one; the Airflow hook makes it from a Connection) so it runs the same against Exchange and
the EWS sandbox. Requests are paged (FindItem pages and GetItem chunks of up to
``page_size``) and ask only for the fields the sync reads; attachment *metadata* comes with
the items, content is fetched on upload, one GetAttachment request per batch the caller bounds.

exchangelib's errors stop here: every public method translates them into
:mod:`email_sync.errors` (401 → AuthenticationFailed, a missing folder or mailbox →
SetupProblem, anything else → TransientError). The folder cursor is the time a folder is
synced through (ISO-8601 UTC).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests
import lxml.etree
from exchangelib import Account, FileAttachment, HTMLBody, ItemAttachment, Message
from exchangelib.items import NEVER_OVERWRITE, SAVE_ONLY, SEND_TO_NONE
from exchangelib.attachments import AttachmentId
from exchangelib.errors import (
    ErrorCannotOpenFileAttachment,
    ErrorCorruptData,
    ErrorFolderNotFound,
    ErrorImpersonateUserDenied,
    ErrorInvalidAttachmentId,
    ErrorIrresolvableConflict,
    ErrorItemNotFound,
    ErrorNonExistentMailbox,
    ErrorTimeoutExpired,
    SOAPError,
    UnauthorizedError,
)
from exchangelib.folders import BaseFolder
from exchangelib.protocol import BaseProtocol
from exchangelib.services import GetAttachment, UpdateItem
from exchangelib.util import MNS, SOAPNS, TNS, BytesGeneratorIO, safe_b64decode

from email_sync.errors import AuthenticationFailed, SetupProblem, SyncError, TransientError
from email_sync.rules.classify import is_outbound_folder
from email_sync.rules.models import Address, AttachmentRef, MailItem, Unreadable
from email_sync.sources.base import CategoryTarget, Folder, FolderRead, MailSource, ReadResult, RequestCounter

log = logging.getLogger(__name__)
# ``item_class`` tells meetings, receipts and reports from email; ``headers`` (EWS
# InternetMessageHeaders: the headers the item arrived with, parsed from its transport headers)
# carries ``Auto-Submitted``, which Exchange keeps in no property of its own.
FIELDS = (
    "message_id", "subject", "body", "sender", "author", "to_recipients", "cc_recipients",
    "bcc_recipients", "datetime_sent", "datetime_received", "in_reply_to", "references",
    "conversation_id", "categories", "sensitivity", "attachments", "item_class", "headers",
)
PAGE_SIZE = 1000  # EWS's maximum FindItem page; GetItem chunks of the same size
FIND_CHUNK = 50  # Message-IDs per FindItem restriction when looking for moved emails
CONFLICT_ROUNDS = 3  # read-merge-write rounds for an item the user changes while we write

# Well-known folder names → exchangelib's distinguished-folder accessor.
_DISTINGUISHED = {"inbox": "inbox", "sent items": "sent", "sent": "sent", "drafts": "drafts",
                  "deleted items": "trash", "junk email": "junk", "outbox": "outbox"}


class _ReadResponse(requests.Response):
    """A response read in full, whose ``iter_content()`` yields 64 KiB slices by default.

    exchangelib parses every SOAP answer from ``response.iter_content()`` with requests'
    default chunk size of one byte; for a 30 MB GetAttachment answer that is 30 million
    generator steps, most of the upload step's time. The bytes are already in memory, so a
    larger slice changes nothing but the speed (docs/BENCHMARKS.md).
    """

    def iter_content(self, chunk_size: int | None = 64 * 1024, decode_unicode: bool = False) -> Iterator[Any]:
        return super().iter_content(chunk_size=chunk_size, decode_unicode=decode_unicode)


# The source whose call is running: the transport counts each request into its counter.
_ACTIVE: contextvars.ContextVar[RequestCounter | None] = contextvars.ContextVar("ews_source", default=None)
_OPERATION = re.compile(rb":Body[^>]*>\s*<(?:[\w-]+:)?(\w+)")
# A character reference XML 1.0 forbids (a control character, e.g. &#x7; in a subject, as
# Exchange sends it). lxml's recovering parser, which exchangelib uses, drops every later
# entity of the response after one, corrupting the other emails on the page: such
# references become U+FFFD before exchangelib parses the answer.
_INVALID_REFERENCE = re.compile(rb"&#(?:[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F])|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));")


def instrument(protocol: BaseProtocol) -> None:
    """Count each request of this protocol's sessions and read answers in 64 KiB slices.

    Applied to one exchangelib protocol (the hook's), not process-wide: every session the
    protocol creates gets its HTTP adapter's ``send`` wrapped. A request is counted for the
    :class:`EwsMailSource` whose call sent it, by EWS operation (the SOAP body's first
    element). Streaming requests (``stream=True``) are passed on as they are.
    """
    if getattr(protocol, "_email_sync_instrumented", False):
        return
    create_session = protocol.create_session

    def instrumented_session() -> Any:
        session = create_session()
        for adapter in session.adapters.values():
            adapter.send = _counting_send(adapter.send)
        return session

    protocol.create_session = instrumented_session  # type: ignore[method-assign]
    protocol.close()  # sessions made before would bypass the count
    protocol._email_sync_instrumented = True  # type: ignore[attr-defined]


def _counting_send(send: Callable[..., Any]) -> Callable[..., Any]:
    def counted(request: Any, *args: Any, **kwargs: Any) -> Any:
        counter = _ACTIVE.get()
        if counter is not None:
            found = _OPERATION.search(request.body[:4096]) if isinstance(request.body, bytes) else None
            counter.add(found.group(1).decode() if found else "other")
        response = send(request, *args, **kwargs)
        if not kwargs.get("stream") and type(response) is requests.Response:
            response.__class__ = _ReadResponse
            if b"&#" in response.content and _INVALID_REFERENCE.search(response.content):
                response._content = _INVALID_REFERENCE.sub(b"&#xFFFD;", response.content)
        return response

    return counted


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """exchangelib's and requests' errors as :mod:`email_sync.errors`, at the source's edge."""
    try:
        yield
    except SyncError:
        raise
    except UnauthorizedError as exc:
        raise AuthenticationFailed(f"Exchange refused the credentials ({exc}); fix the Exchange Connection") from exc
    except (ErrorNonExistentMailbox, ErrorImpersonateUserDenied) as exc:
        raise SetupProblem(f"Exchange: {type(exc).__name__}: {exc}; check the job's mailbox and the service "
                           "account's impersonation rights") from exc
    except Exception as exc:
        raise TransientError(f"Exchange: {type(exc).__name__}: {exc}") from exc


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

    # An attachment the item lists but Exchange cannot serve (moved, deleted, corrupt) is
    # answered in its own slot, so it costs that file alone, not the batch.
    ERRORS_TO_CATCH_IN_RESPONSE = (*GetAttachment.ERRORS_TO_CATCH_IN_RESPONSE, ErrorInvalidAttachmentId,
                                   ErrorItemNotFound, ErrorCannotOpenFileAttachment, ErrorCorruptData)
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


class _CategoryUpdate(UpdateItem):
    """UpdateItem whose conflict (the user changed the item since our read) or vanished item is
    answered in that item's slot, as exchangelib does for other per-item errors, not raised
    for the whole batch."""

    ERRORS_TO_CATCH_IN_RESPONSE = (*UpdateItem.ERRORS_TO_CATCH_IN_RESPONSE, ErrorIrresolvableConflict,
                                   ErrorItemNotFound)


class EwsMailSource(MailSource):
    """A mailbox over EWS; ``account`` is an exchangelib Account or a function opening one.

    Pass a function to have the requests made while the account is set up (version
    discovery) counted and translated too.
    """

    kind: ClassVar[str] = "ews"

    def __init__(self, account: Account | Callable[[], Account], page_size: int = PAGE_SIZE) -> None:
        self.page_size = page_size
        self._counter = RequestCounter()
        self._folders: dict[str, tuple[BaseFolder, bool]] = {}
        with self._call():
            self.account = account if isinstance(account, Account) else account()
        instrument(self.account.protocol)

    @property
    def requests(self) -> Mapping[str, int]:
        """EWS HTTP requests this source sent (retries included), by operation."""
        return self._counter.snapshot()

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        token = _ACTIVE.set(self._counter)
        try:
            with translated_errors():
                yield
        finally:
            _ACTIVE.reset(token)

    def _counted(self, results: Iterator[ReadResult]) -> Iterator[ReadResult]:
        """Iterate ``results`` with this source's requests counted and errors translated."""
        while True:
            with self._call():
                result = next(results, None)
            if result is None:
                return
            yield result

    # -- folders --------------------------------------------------------------------
    def _folder(self, path: str) -> tuple[BaseFolder, bool]:
        """The folder at an ``Inbox/Clients`` style path, and whether it is at or under Sent Items.

        The first segment may be a well-known name (no request to tell Sent Items); any other
        top folder is compared with the mailbox's Sent Items by id, so a localised Sent Items
        counts too. Resolved once per path and source: the read of a folder reuses it.
        """
        if path not in self._folders:
            head, *rest = [p for p in path.split("/") if p]
            accessor = _DISTINGUISHED.get(head.strip().lower())
            top = getattr(self.account, accessor) if accessor else self.account.msg_folder_root / head
            under_sent = accessor == "sent" if accessor else top.id == self.account.sent.id
            folder = top
            for part in rest:
                folder = folder / part
            self._folders[path] = (folder, under_sent)
        return self._folders[path]

    def resolve_folders(self, paths: Sequence[str], sent_folders: Sequence[str] = ()) -> list[Folder]:
        """Each path as a Folder: sent when at or under Sent Items, or declared in ``sent_folders``."""
        resolved = []
        with self._call():
            for path in paths:
                try:
                    folder, under_sent = self._folder(path)
                except ErrorFolderNotFound as exc:
                    raise SetupProblem(f"folder {path!r} not found in the mailbox: fix the job's folders") from exc
                resolved.append(Folder(path, folder.id or path, under_sent or is_outbound_folder(path, sent_folders)))
        return resolved

    # -- extraction -----------------------------------------------------------------
    def read_folder(self, folder: Folder, start: datetime, end: datetime, cursor: str | None) -> FolderRead:
        """Items with start < time <= end (sent time in sent folders, else received).

        The cursor is the time the folder was synced through; a run that starts later than
        it (the interval after a failed run) reads from the cursor instead, so nothing between
        is lost. The new cursor is ``end``.
        """
        if cursor is not None:
            start = min(start, datetime.fromisoformat(cursor))
        field = "datetime_sent" if folder.is_sent else "datetime_received"

        def items() -> Iterator[ReadResult]:
            query = self._folder(folder.path)[0].filter(**{f"{field}__gt": start, f"{field}__lte": end})
            query = query.only(*FIELDS).order_by(field)
            query.page_size = self.page_size
            query.chunk_size = self.page_size
            yield from self._convert_all(query, folder)

        return FolderRead(self._counted(items()), cursor=end.astimezone(UTC).isoformat())

    def fetch(self, refs: Iterable[tuple[str, Folder]]) -> Iterator[ReadResult]:
        """Re-read specific items (retries of earlier failures)."""
        refs = list(refs)
        if not refs:
            return iter(())

        def items() -> Iterator[ReadResult]:
            results = self.account.fetch(ids=[(item_id, None) for item_id, _ in refs],
                                         only_fields=list(FIELDS), chunk_size=self.page_size)
            for (item_id, folder), result in zip(refs, results, strict=True):
                yield from self._convert_all([result], folder, fallback_id=item_id)

        return self._counted(items())

    def _convert_all(self, results: Iterable[Any], folder: Folder, fallback_id: str | None = None) -> Iterator[ReadResult]:
        for result in results:
            if isinstance(result, Exception):
                yield Unreadable(fallback_id, folder.path, f"ews_error:{type(result).__name__}")
                continue
            try:
                yield to_mail_item(result, folder)
            except Exception as exc:  # one bad item never stops the run
                yield Unreadable(getattr(result, "id", fallback_id), folder.path, f"unconvertible:{type(exc).__name__}")

    def find_by_message_id(self, folders: Sequence[Folder], message_ids: Sequence[str]) -> dict[str, list[CategoryTarget]]:
        """FindItem per folder with an InternetMessageId restriction, ``FIND_CHUNK`` ids at a time."""
        found: dict[str, list[CategoryTarget]] = {}
        wanted = sorted(set(message_ids))
        with self._call():
            for folder in folders:
                for start in range(0, len(wanted), FIND_CHUNK):
                    query = self._folder(folder.path)[0].filter(message_id__in=wanted[start:start + FIND_CHUNK])
                    for item in query.only("message_id", "categories"):
                        if isinstance(item, Exception) or not item.message_id:
                            continue
                        found.setdefault(item.message_id, []).append(
                            CategoryTarget(item.id, item.changekey, tuple(item.categories or ())))
        return found

    # -- attachments and write-back ---------------------------------------------------
    def attachment_contents(self, attachment_ids: Sequence[str]) -> list[bytes | Exception]:
        """Contents of these file attachments, in order: one GetAttachment request for all.

        The caller bounds how many bytes it asks for at once (memory); an attachment EWS
        refuses comes back as its exception, so one bad file never stops the others.
        """
        if not attachment_ids:
            return []
        with self._call():
            service = _StreamedGetAttachment(account=self.account, chunk_size=len(attachment_ids))
            answers = service.call(items=[AttachmentId(id=i) for i in attachment_ids], include_mime_content=False,
                                   body_type=None, filter_html_content=None, additional_fields=None)
            return [a if isinstance(a, Exception) else (a.content or b"") for a in answers]

    def add_category(self, items: Iterable[CategoryTarget], category: str) -> list[str]:
        """Add ``category`` by read-merge-write against each item's current state.

        The targets' categories are what the sync saw at extract; the user may have changed
        them since. So the items are read again (categories only, one GetItem per
        ``page_size``) and written with their fresh ChangeKey and ``NeverOverwrite``: a
        category the user added is kept, one they removed is not put back, and an item the
        user changed between our read and our write is refused by Exchange (a conflict) and
        read and merged again, up to ``CONFLICT_ROUNDS`` times; then a later run tries it.
        Returns the ids that now carry the category (also those that already did).
        """
        targets = list(items)
        done = [t.item_id for t in targets if _has(t.categories, category)]
        todo = [t.item_id for t in targets if not _has(t.categories, category)]
        for _ in range(CONFLICT_ROUNDS):
            if not todo:
                break
            written, todo = self._merge_write(todo, category)
            done.extend(written)
        return done

    def _merge_write(self, item_ids: list[str], category: str) -> tuple[list[str], list[str]]:
        """One read-merge-write round: (ids that now carry the category, ids refused by a conflict)."""
        done, updates = [], []
        with self._call():
            current = list(self.account.fetch(ids=[(i, None) for i in item_ids], only_fields=["categories"],
                                              chunk_size=self.page_size))
            for item_id, item in zip(item_ids, current, strict=True):
                if isinstance(item, Exception):
                    continue  # gone (moved?) or unreadable: the caller looks for it or tries again
                if _has(item.categories or (), category):
                    done.append(item_id)
                    continue
                message = Message(account=self.account, id=item.id, changekey=item.changekey,
                                  categories=[*(item.categories or ()), category])
                updates.append((item_id, message))
            if not updates:
                return done, []
            service = _CategoryUpdate(account=self.account, chunk_size=self.page_size)
            results = list(service.call(items=[(m, ["categories"]) for _, m in updates],
                                        conflict_resolution=NEVER_OVERWRITE, message_disposition=SAVE_ONLY,
                                        send_meeting_invitations_or_cancellations=SEND_TO_NONE,
                                        suppress_read_receipts=True))
        conflicts = [i for (i, _), r in zip(updates, results, strict=True) if isinstance(r, ErrorIrresolvableConflict)]
        errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, ErrorIrresolvableConflict)]
        done.extend(i for (i, _), r in zip(updates, results, strict=True) if not isinstance(r, Exception))
        if errors:
            log.warning("CRM category not written on %d item(s): %s", len(errors), type(errors[0]).__name__)
        return done, conflicts


def _has(categories: Iterable[str], category: str) -> bool:
    return any(c.lower() == category.lower() for c in categories)


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


def to_mail_item(message: Any, folder: Folder) -> MailItem:
    """Convert an exchangelib item (only the fields in FIELDS are loaded) to a MailItem.

    Mail folders hold more than ``Message``: exchangelib returns MeetingRequest,
    MeetingResponse, MeetingCancellation, CalendarItem, ... for what Exchange serves as
    such. Each is converted from the fields it has (an appointment has no recipients or
    Message-ID) and keeps its ``item_class``, so the rules can skip it with its own reason
    instead of it failing here as unconvertible.
    """
    body = _get(message, "body") or ""
    conversation = _get(message, "conversation_id")
    return MailItem(
        item_id=message.id,
        change_key=message.changekey,
        message_id=_get(message, "message_id") or "",
        folder=folder.path,
        in_sent_folder=folder.is_sent,
        subject=_get(message, "subject") or "",
        body=str(body),
        body_is_html=isinstance(body, HTMLBody),
        sender=_address(_get(message, "author")) or _address(_get(message, "sender")),  # From, else Sender
        to=_addresses(_get(message, "to_recipients")),
        cc=_addresses(_get(message, "cc_recipients")),
        bcc=_addresses(_get(message, "bcc_recipients")),
        sent_at=_utc(_get(message, "datetime_sent")),
        received_at=_utc(_get(message, "datetime_received")),
        in_reply_to=_get(message, "in_reply_to"),
        references=tuple((_get(message, "references") or "").split()),
        conversation_id=getattr(conversation, "id", None),
        categories=tuple(_get(message, "categories") or ()),
        sensitivity=_get(message, "sensitivity") or "Normal",
        attachments=tuple(_attachment_ref(a) for a in _get(message, "attachments") or ()
                          if isinstance(a, (FileAttachment, ItemAttachment))),
        item_class=(_get(message, "item_class") or "IPM.Note").strip(),
        auto_submitted=_header(_get(message, "headers"), "Auto-Submitted"),
    )


def _get(item: Any, name: str) -> Any:
    """A loaded field of any exchangelib item class; None for a field its class does not have."""
    return getattr(item, name, None)


def _attachment_ref(attachment: Any) -> AttachmentRef:
    """A file or item attachment's metadata; the name exactly as Exchange gives it (the rules
    make the upload name). An item attachment (an attached email, meeting, contact) is listed
    with ``kind="item"`` so the run reports it; its content is never fetched."""
    if isinstance(attachment, ItemAttachment):
        return AttachmentRef(attachment_id=attachment.attachment_id.id, name=attachment.name or "attached item",
                             size=int(attachment.size or 0), content_type=attachment.content_type or "message/rfc822",
                             is_inline=bool(attachment.is_inline), kind="item")
    return AttachmentRef(attachment_id=attachment.attachment_id.id, name=attachment.name or "attachment",
                         size=int(attachment.size or 0),
                         content_type=attachment.content_type or "application/octet-stream",
                         is_inline=bool(attachment.is_inline))


def _header(headers: Iterable[Any] | None, name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive) among exchangelib's MessageHeaders."""
    wanted = name.lower()
    for header in headers or ():
        if (header.name or "").strip().lower() == wanted:
            return " ".join((header.value or "").split())  # unfolded
    return None
