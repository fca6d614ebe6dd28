"""The EWS sandbox server: SOAP 1.1 over plain HTTP at ``/EWS/Exchange.asmx``.

One counted operation per SOAP request, named by the operation element (``FindItem``,
``GetItem``, ...). Requests without valid Basic credentials get ``401`` with
``WWW-Authenticate: Basic`` (what exchangelib's auth-type detection probes for) and are not
counted: like IIS, they never reach EWS.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from sandbox.ews import query
from sandbox.ews.props import (
    Shape,
    attachment_element,
    folder_element,
    item_element,
    wanted_folder_fields,
    wanted_item_fields,
)
from sandbox.ews.soap import (
    MNS,
    TNS,
    XSI,
    EwsError,
    SoapFault,
    error_message,
    fault_envelope,
    local,
    parse_request,
    response_envelope,
    sub_m,
    sub_t,
    success_message,
    xml_bool,
)
from sandbox.ews.store import Account, Folder, Message, Store, decode_sync_state, encode_sync_state
from sandbox.faults import FaultKind, FaultRule
from sandbox.server import Request, Response, SandboxServer

SERVICE_PATH = "/EWS/Exchange.asmx"
SOAP_CONTENT_TYPE = "text/xml; charset=utf-8"
FIND_COUNT_LIMIT = 1000  # Exchange's default EWSFindCountLimit: at most 1,000 items per FindItem page
MAX_SYNC_CHANGES = 512  # SyncFolderItems MaxChangesReturned upper bound (EWS schema)


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _missing(kind: str, given_id: str, not_found: str) -> EwsError:
    """Exchange tells an id it cannot decode (malformed) from a well-formed id of a gone object."""
    try:
        decoded = base64.b64decode(given_id[6:], validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if decoded.startswith(f"sandbox-{kind}-"):
        return EwsError(not_found)
    return EwsError("ErrorInvalidIdMalformed")


@dataclass
class Context:
    """Who is calling: the authenticated account and the mailbox owner it acts as."""

    principal: Account
    address: str  # effective user (the impersonated one, or the principal itself)
    impersonating: bool = False


class EwsSandbox(SandboxServer):
    """A stateful loopback Exchange Web Services endpoint for exchangelib.

    ``EwsSandbox(seed_data)`` seeds from a dict (see :mod:`sandbox.ews.seed`); ``.store`` is the
    live :class:`~sandbox.ews.store.Store`; ``.endpoint`` is the full service URL.
    """

    name = "ews"

    def __init__(self, seed_data: dict[str, Any] | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 seed: int = 0, base_dir: str | Path | None = None) -> None:
        super().__init__(host, port, tls=False, seed=seed)
        self.store = Store(seed=seed)
        self.realm = host
        self.auth_failures = 0  # requests rejected with 401 (not counted in ``calls``)
        self._auth_lock = threading.Lock()
        self._cache: OrderedDict[tuple[Any, ...], list[str]] = OrderedDict()
        if seed_data:
            from sandbox.ews.seed import load_seed

            load_seed(self.store, seed_data, base_dir=base_dir)

    @classmethod
    def from_files(cls, *paths: str | Path, **kwargs: Any) -> EwsSandbox:
        """A sandbox seeded from YAML/JSON seed files (applied in order)."""
        from sandbox.ews.seed import load_file

        sandbox = cls(**kwargs)
        for path in paths:
            load_file(sandbox.store, path)
        return sandbox

    @property
    def endpoint(self) -> str:
        return self.base_url + SERVICE_PATH

    def start(self) -> EwsSandbox:
        super().start()
        return self

    def __enter__(self) -> EwsSandbox:
        return self.start()

    def state(self) -> dict[str, Any]:
        return self.store.state()

    # -- SandboxServer hooks --------------------------------------------------------------------
    def operation(self, request: Request) -> str | None:
        if request.path.lower() != SERVICE_PATH.lower() or request.method != "POST":
            return None
        account = self._authenticate(request)
        request._ews_account = account  # type: ignore[attr-defined]
        if account is None:
            with self._auth_lock:
                self.auth_failures += 1
            return None
        try:
            header, op_el = parse_request(request.body)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a schema failure
            request._ews_parsed = exc  # type: ignore[attr-defined]
            return None
        request._ews_parsed = (header, op_el)  # type: ignore[attr-defined]
        return local(op_el.tag)

    def dispatch(self, request: Request, operation: str | None) -> Response:
        if request.path.lower() != SERVICE_PATH.lower():
            return Response.text("404 - File or directory not found.", status=404)
        if hasattr(request, "_ews_account"):  # authenticated (or not) in operation() already
            account = request._ews_account
        else:
            account = self._authenticate(request)
        if account is None:
            return self._unauthorized()
        if request.method != "POST":
            return Response.text("<html><body>You have created a service.</body></html>",
                                 content_type="text/html; charset=utf-8")
        parsed = getattr(request, "_ews_parsed", None)
        if not isinstance(parsed, tuple):
            text = f"The request failed schema validation: {parsed}"
            return self._soap(fault_envelope("ErrorSchemaValidation", text), status=500)
        header, op_el = parsed
        assert operation is not None
        try:
            ctx = self._context(account, header)
            handler: Callable[[Context, etree._Element], list[etree._Element]] | None = getattr(
                self, f"_op_{operation}", None)
            with self.store.lock:
                if handler is None:
                    error = EwsError("ErrorInvalidOperation",
                                     f"The EWS sandbox does not implement the {operation} operation.")
                    messages = [error_message(operation, error)]
                else:
                    try:
                        messages = handler(ctx, op_el)
                    except EwsError as error:
                        messages = [error_message(operation, error)]
        except SoapFault as fault:
            return self._soap(fault_envelope(fault.code, fault.text, fault.values), status=fault.status)
        return self._soap(response_envelope(operation, messages))

    def fault_response(self, operation: str, rule: FaultRule) -> Response:
        if rule.kind is FaultKind.THROTTLE:
            back_off = rule.retry_after if rule.retry_after is not None else 0.1
            body = fault_envelope("ErrorServerBusy", "The server cannot service this request right now. "
                                  "Try again later.", {"BackOffMilliseconds": str(int(round(back_off * 1000)))})
            return self._soap(body, status=500)
        headers: dict[str, str] = {}
        if rule.retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(rule.retry_after)))
        status = rule.status
        if status == 401:
            return self._unauthorized()
        if status == 500:
            html = "<html><head><title>Runtime Error</title></head><body><h1>Server Error in '/EWS' Application." \
                   "</h1><h2><i>Runtime Error</i></h2></body></html>"
            return Response.text(html, status=500, content_type="text/html; charset=utf-8", headers=headers)
        if status == 503:
            html = "<HTML><HEAD><TITLE>Service Unavailable</TITLE></HEAD><BODY><h2>Service Unavailable</h2>" \
                   "<hr><p>HTTP Error 503. The service is unavailable.</p></BODY></HTML>"
            return Response.text(html, status=503, content_type="text/html; charset=us-ascii", headers=headers)
        return Response.text(f"HTTP Error {status}", status=status, headers=headers)

    # -- plumbing -----------------------------------------------------------------------------
    def _soap(self, body: bytes, status: int = 200) -> Response:
        return Response(status, body, {"Content-Type": SOAP_CONTENT_TYPE})

    def _unauthorized(self) -> Response:
        return Response(401, b"", {"WWW-Authenticate": f'Basic realm="{self.realm}"',
                                   "Content-Type": "text/html"})

    def _authenticate(self, request: Request) -> Account | None:
        value = request.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        if not sep:
            return None
        return self.store.authenticate(username, password)

    def _context(self, account: Account, header: etree._Element | None) -> Context:
        ctx = Context(principal=account, address=account.email)
        if header is None:
            return ctx
        impersonation = header.find(_q(TNS, "ExchangeImpersonation"))
        if impersonation is None:
            return ctx
        sid = impersonation.find(_q(TNS, "ConnectingSID"))
        target = None
        if sid is not None:
            for child in sid:
                if child.text and local(child.tag) in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName"):
                    target = child.text.strip()
                    break
        if not target:
            raise SoapFault("ErrorSchemaValidation", "The ExchangeImpersonation header needs a ConnectingSID.")
        with self.store.lock:
            mailbox = self.store.mailboxes.get(target.lower())
            if mailbox is None:
                owner = self.store.account_for(target)
                mailbox = self.store.mailboxes.get(owner.email.lower()) if owner else None
        if mailbox is None:
            raise SoapFault("ErrorNonExistentMailbox")
        if mailbox.address.lower() != account.email.lower() and not account.impersonation:
            raise SoapFault("ErrorImpersonateUserDenied")
        return Context(principal=account, address=mailbox.address, impersonating=True)

    def _check_mailbox(self, ctx: Context, address: str) -> None:
        if address.lower() not in self.store.mailboxes:
            raise EwsError("ErrorNonExistentMailbox")
        if not self.store.can_open(ctx.address, address):
            raise EwsError("ErrorAccessDenied")

    def _folder(self, ctx: Context, id_el: etree._Element) -> Folder:
        kind = local(id_el.tag)
        if kind == "FolderId":
            folder_id = id_el.get("Id", "")
            folder = self.store.folders.get(folder_id)
            if folder is None:
                raise _missing("folder", folder_id, "ErrorFolderNotFound")
            self._check_mailbox(ctx, folder.mailbox)
            return folder
        if kind == "DistinguishedFolderId":
            address = ctx.address
            mailbox_el = id_el.find(_q(TNS, "Mailbox"))
            if mailbox_el is not None:
                email = mailbox_el.findtext(_q(TNS, "EmailAddress"))
                if email:
                    address = email.strip()
            self._check_mailbox(ctx, address)
            box = self.store.mailboxes[address.lower()]
            folder = box.distinguished.get((id_el.get("Id") or "").lower())
            if folder is None:
                raise EwsError("ErrorFolderNotFound")
            return folder
        raise EwsError("ErrorInvalidOperation", f"The folder id type {kind} is not supported by the sandbox.")

    def _item(self, ctx: Context, id_el: etree._Element) -> Message:
        if local(id_el.tag) != "ItemId":
            raise EwsError("ErrorInvalidOperation", f"The item id type {local(id_el.tag)} is not supported.")
        item_id = id_el.get("Id", "")
        msg = self.store.items.get(item_id)
        if msg is None:
            raise _missing("item", item_id, "ErrorItemNotFound")
        self._check_mailbox(ctx, msg.mailbox)
        return msg

    @staticmethod
    def _paging(view: etree._Element | None, total: int) -> tuple[int, int]:
        """(start, stop) indexes of the requested page of ``total`` results."""
        if view is None:
            return 0, min(total, FIND_COUNT_LIMIT)
        max_entries = int(view.get("MaxEntriesReturned") or FIND_COUNT_LIMIT)
        max_entries = max(1, min(max_entries, FIND_COUNT_LIMIT))
        offset = max(0, int(view.get("Offset") or 0))
        if view.get("BasePoint", "Beginning") == "End":
            stop = max(0, total - offset)
            return max(0, stop - max_entries), stop
        start = min(offset, total)
        return start, min(total, start + max_entries)

    @staticmethod
    def _root_folder(msg: etree._Element, start: int, stop: int, total: int) -> etree._Element:
        return sub_m(msg, "RootFolder", IndexedPagingOffset=str(stop), TotalItemsInView=str(total),
                     IncludesLastItemInRange=xml_bool(stop >= total))

    # -- operations ---------------------------------------------------------------------------
    def _op_ConvertId(self, ctx: Context, op: etree._Element) -> list[etree._Element]:
        destination = op.get("DestinationFormat", "EwsId")
        messages = []
        source_ids = op.find(_q(MNS, "SourceIds"))
        for source in (source_ids if source_ids is not None else []):
            source_id = source.get("Id", "")
            if source_id in self.store.items or source_id in self.store.folders:
                msg = success_message("ConvertId")
                sub_m(msg, "AlternateId", Format=destination, Id=source_id, Mailbox=source.get("Mailbox", ""),
                      **{f"{{{XSI}}}type": "t:AlternateIdType"})
            else:
                msg = error_message("ConvertId", EwsError("ErrorInvalidIdMalformed"))
            messages.append(msg)
        return messages

    def _op_ResolveNames(self, ctx: Context, op: etree._Element) -> list[etree._Element]:
        messages = []
        for entry in op.findall(_q(MNS, "UnresolvedEntry")):
            text = (entry.text or "").strip()
            needle = text[5:] if text.lower().startswith("smtp:") else text
            needle = needle.lower()
            found: dict[str, tuple[str, str]] = {}
            for box in self.store.mailboxes.values():
                account = self.store.account_for(box.address)
                names = [box.address.lower(), box.name.lower()]
                if account is not None:
                    names += [account.username.lower(), (account.name or "").lower()]
                exact = needle == box.address.lower()
                if needle and (exact or any(n.startswith(needle) for n in names if n)):
                    found[box.address.lower()] = ((account.name if account and account.name else box.name),
                                                  box.address)
            if not found:
                messages.append(error_message("ResolveNames", EwsError("ErrorNameResolutionNoResults")))
                continue
            many = len(found) > 1
            if many:
                error = EwsError("ErrorNameResolutionMultipleResults")
                msg = etree.Element(_q(MNS, "ResolveNamesResponseMessage"), ResponseClass="Warning")
                sub_m(msg, "MessageText", error.text)
                sub_m(msg, "ResponseCode", error.code)
                sub_m(msg, "DescriptiveLinkKey", "0")
            else:
                msg = success_message("ResolveNames")
            results = list(found.values())[:100]
            rset = sub_m(msg, "ResolutionSet", TotalItemsInView=str(len(results)),
                         IncludesLastItemInRange="true")
            for name, address in results:
                resolution = sub_t(rset, "Resolution")
                mbx = sub_t(resolution, "Mailbox")
                sub_t(mbx, "Name", name)
                sub_t(mbx, "EmailAddress", address)
                sub_t(mbx, "RoutingType", "SMTP")
                sub_t(mbx, "MailboxType", "Mailbox")
            messages.append(msg)
        return messages

    def _op_GetFolder(self, ctx: Context, op: etree._Element) -> list[etree._Element]:
        fields = wanted_folder_fields(Shape.parse(op.find(_q(MNS, "FolderShape"))))
        messages = []
        for id_el in op.find(_q(MNS, "FolderIds")) if op.find(_q(MNS, "FolderIds")) is not None else []:
            try:
                folder = self._folder(ctx, id_el)
            except EwsError as error:
                messages.append(error_message("GetFolder", error))
                continue
            msg = success_message("GetFolder")
            folder_element(sub_m(msg, "Folders"), folder, fields)
            messages.append(msg)
        return messages

    def _op_FindFolder(self, ctx: Context, op: etree._Element) -> list[etree._Element]:
        fields = wanted_folder_fields(Shape.parse(op.find(_q(MNS, "FolderShape"))))
        traversal = op.get("Traversal", "Shallow")
        view = op.find(_q(MNS, "IndexedPageFolderView"))
        compiled = query.compile_restriction(op.find(_q(MNS, "Restriction")), query.FOLDER_FIELDS)
        messages = []
        parents = op.find(_q(MNS, "ParentFolderIds"))
        for id_el in parents if parents is not None else []:
            try:
                parent = self._folder(ctx, id_el)
            except EwsError as error:
                messages.append(error_message("FindFolder", error))
                continue
            if traversal == "Deep":
                found = list(parent.walk())
            elif traversal == "Shallow":
                found = list(parent.children)
            else:  # SoftDeleted: the sandbox keeps no soft-deleted folders
                found = []
            found = [f for f in found if compiled.predicate(f)]
            start, stop = self._paging(view, len(found))
            msg = success_message("FindFolder")
            container = sub_t(self._root_folder(msg, start, stop, len(found)), "Folders")
            for folder in found[start:stop]:
                folder_element(container, folder, fields)
            messages.append(msg)
        return messages

    def _find_ids(self, folder: Folder, restriction: etree._Element | None,
                  sort_order: etree._Element | None) -> list[str]:
        key = (folder.folder_id, folder.version,
               etree.tostring(restriction) if restriction is not None else b"",
               etree.tostring(sort_order) if sort_order is not None else b"")
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        compiled = query.compile_restriction(restriction, query.ITEM_FIELDS)
        items = query.sort_items(query.candidate_messages(folder, compiled), sort_order)
        ids = [m.item_id for m in items]
        self._cache[key] = ids
        while len(self._cache) > 64:
            self._cache.popitem(last=False)
        return ids

    def _op_FindItem(self, ctx: Context, op: etree._Element) -> list[etree._Element]:
        shape = Shape.parse(op.find(_q(MNS, "ItemShape")))
        fields = wanted_item_fields(shape, find=True)
        traversal = op.get("Traversal", "Shallow")
        if op.find(_q(MNS, "QueryString")) is not None:
            raise EwsError("ErrorUnsupportedQueryFilter", "AQS QueryString searches are not supported by the sandbox.")
        if op.find(_q(MNS, "GroupBy")) is not None or op.find(_q(MNS, "DistinguishedGroupBy")) is not None:
            raise EwsError("ErrorInvalidOperation", "Grouped FindItem is not supported by the sandbox.")
        if op.find(_q(MNS, "CalendarView")) is not None or op.find(_q(MNS, "ContactsView")) is not None:
            raise EwsError("ErrorInvalidOperation", "Calendar and contact views are not supported by the sandbox.")
        view = op.find(_q(MNS, "IndexedPageItemView"))  # None: the first 1,000 results
        restriction = op.find(_q(MNS, "Restriction"))
        sort_order = op.find(_q(MNS, "SortOrder"))
        messages = []
        parents = op.find(_q(MNS, "ParentFolderIds"))
        for id_el in parents if parents is not None else []:
            try:
                folder = self._folder(ctx, id_el)
                ids = self._find_ids(folder, restriction, sort_order) if traversal == "Shallow" else []
            except EwsError as error:
                messages.append(error_message("FindItem", error))
                continue
            start, stop = self._paging(view, len(ids))
            msg = success_message("FindItem")
            container = sub_t(self._root_folder(msg, start, stop, len(ids)), "Items")
            for item_id in ids[start:stop]:
                item_element(container, self.store.items[item_id], shape, fields)
            messages.append(msg)
        return messages

    def _op_GetItem(self, ctx: Context, op: etree._Element) -> list[etree._Element]:
        shape = Shape.parse(op.find(_q(MNS, "ItemShape")))
        fields = wanted_item_fields(shape)
        messages = []
        ids = op.find(_q(MNS, "ItemIds"))
        for id_el in ids if ids is not None else []:
            try:
                item = self._item(ctx, id_el)
            except EwsError as error:
                msg = error_message("GetItem", error)
                sub_m(msg, "Items")
                messages.append(msg)
                continue
            msg = success_message("GetItem")
            item_element(sub_m(msg, "Items"), item, shape, fields)
            messages.append(msg)
        return messages

    def _op_GetAttachment(self, ctx: Context, op: etree._Element) -> list[etree._Element]:
        shape = Shape.parse(op.find(_q(MNS, "AttachmentShape")))  # for an item attachment's item
        messages = []
        ids = op.find(_q(MNS, "AttachmentIds"))
        for id_el in ids if ids is not None else []:
            attachment_id = id_el.get("Id", "")
            try:
                found = self.store.attachments.get(attachment_id)
                if found is None:
                    error = _missing("attachment", attachment_id, "ErrorInvalidAttachmentId")
                    if error.code == "ErrorInvalidAttachmentId":
                        error.text = "The attachment ID is invalid or the attachment does not exist."
                    raise error
                parent, att = found
                self._check_mailbox(ctx, parent.mailbox)
            except EwsError as error:
                messages.append(error_message("GetAttachment", error))
                continue
            msg = success_message("GetAttachment")
            attachment_element(sub_m(msg, "Attachments"), att, with_content=True, shape=shape)
            messages.append(msg)
        return messages

    def _op_UpdateItem(self, ctx: Context, op: etree._Element) -> list[etree._Element]:
        conflict_resolution = op.get("ConflictResolution", "AutoResolve")
        disposition = op.get("MessageDisposition", "SaveOnly")
        messages = []
        changes = op.find(_q(MNS, "ItemChanges"))
        for change in changes if changes is not None else []:
            try:
                if disposition != "SaveOnly":
                    raise EwsError("ErrorInvalidOperation",
                                   "The sandbox only saves updates (MessageDisposition=SaveOnly).")
                id_el = change.find(_q(TNS, "ItemId"))
                if id_el is None:
                    raise EwsError("ErrorInvalidOperation", "Only ItemId targets are supported by the sandbox.")
                item = self._item(ctx, id_el)
                change_key = id_el.get("ChangeKey")
                if conflict_resolution == "NeverOverwrite" and change_key and change_key != item.change_key:
                    raise EwsError("ErrorIrresolvableConflict")
                updates = self._apply_updates(item, change.find(_q(TNS, "Updates")))
            except EwsError as error:
                messages.append(error_message("UpdateItem", error))
                continue
            for name, value in updates.items():
                setattr(item, name, value)
            if updates:
                self.store._touch(item)
            msg = success_message("UpdateItem")
            items = sub_m(msg, "Items")
            sub_t(sub_t(items, item.element), "ItemId", Id=item.item_id, ChangeKey=item.change_key)
            sub_t(sub_m(msg, "ConflictResults"), "Count", "0")
            messages.append(msg)
        return messages

    _UPDATABLE = {
        "item:Categories": "categories",
        "message:IsRead": "is_read",
        "item:Subject": "subject",
        "item:Importance": "importance",
        "item:Sensitivity": "sensitivity",
    }

    def _apply_updates(self, item: Message, updates: etree._Element | None) -> dict[str, Any]:
        """Validate an ``<t:Updates>`` list; returns the new attribute values (applied by the caller)."""
        new: dict[str, Any] = {}
        for update in updates if updates is not None else []:
            action = local(update.tag)
            uri_el = update.find(_q(TNS, "FieldURI"))
            uri = uri_el.get("FieldURI") if uri_el is not None else None
            if uri not in self._UPDATABLE:
                raise EwsError("ErrorInvalidPropertySet",
                               f"The sandbox cannot update the property {uri or local(update[0].tag)}.")
            attr = self._UPDATABLE[uri]
            current = new.get(attr, getattr(item, attr))
            if action == "DeleteItemField":
                new[attr] = () if attr == "categories" else None
                if attr != "categories":
                    raise EwsError("ErrorInvalidPropertySet", f"The property {uri} cannot be deleted.")
                continue
            if action not in ("SetItemField", "AppendToItemField"):
                raise EwsError("ErrorInvalidOperation", f"Unknown update action {action}.")
            holder = next((c for c in update if local(c.tag) != "FieldURI"), None)
            value_el = holder[0] if holder is not None and len(holder) else None
            if value_el is None:
                raise EwsError("ErrorInvalidPropertySet", f"No value for {uri}.")
            if attr == "categories":
                values = tuple((s.text or "") for s in value_el.findall(_q(TNS, "String")))
                if action == "AppendToItemField":
                    values = tuple(current) + tuple(v for v in values if v not in current)
                new[attr] = values
            elif action == "AppendToItemField":
                raise EwsError("ErrorInvalidPropertyAppend", f"The property {uri} does not support append.")
            elif attr == "is_read":
                new[attr] = (value_el.text or "").strip().lower() in ("true", "1")
            else:
                text = value_el.text or ""
                if attr == "importance" and text not in ("Low", "Normal", "High"):
                    raise EwsError("ErrorSchemaValidation", f"Invalid Importance {text!r}.")
                if attr == "sensitivity" and text not in ("Normal", "Personal", "Private", "Confidential"):
                    raise EwsError("ErrorSchemaValidation", f"Invalid Sensitivity {text!r}.")
                new[attr] = text
        return new

    def _op_SyncFolderItems(self, ctx: Context, op: etree._Element) -> list[etree._Element]:
        shape = Shape.parse(op.find(_q(MNS, "ItemShape")))
        fields = wanted_item_fields(shape, find=True)
        sync_folder = op.find(_q(MNS, "SyncFolderId"))
        try:
            max_changes = int(op.findtext(_q(MNS, "MaxChangesReturned")) or "100")
        except ValueError:
            max_changes = 0
        if not 1 <= max_changes <= MAX_SYNC_CHANGES:
            raise SoapFault("ErrorSchemaValidation", "The request failed schema validation: MaxChangesReturned "
                            f"must be between 1 and {MAX_SYNC_CHANGES}.")
        ignore = {e.get("Id") for e in op.findall(f"{_q(MNS, 'Ignore')}/{_q(TNS, 'ItemId')}")}
        try:
            if sync_folder is None or len(sync_folder) == 0:
                raise EwsError("ErrorInvalidRequest", "SyncFolderId is required.")
            folder = self._folder(ctx, sync_folder[0])
            token = (op.findtext(_q(MNS, "SyncState")) or "").strip()
            watermark = 0
            if token:
                try:
                    state_folder, watermark = decode_sync_state(token)
                except Exception:  # noqa: BLE001 - any undecodable token is corrupt state
                    raise EwsError("ErrorInvalidSyncStateData") from None
                if state_folder != folder.folder_id:
                    raise EwsError("ErrorInvalidSyncStateData")
        except EwsError as error:
            msg = error_message("SyncFolderItems", error)
            msg.insert(3, etree.Element(_q(MNS, "SyncState")))
            inc = etree.Element(_q(MNS, "IncludesLastItemInRange"))
            inc.text = "true"
            msg.insert(4, inc)
            return [msg]

        changes, new_watermark, complete = self._changes_since(folder, watermark, max_changes, ignore)
        msg = success_message("SyncFolderItems")
        sub_m(msg, "SyncState", encode_sync_state(folder.folder_id, new_watermark))
        sub_m(msg, "IncludesLastItemInRange", xml_bool(complete))
        container = sub_m(msg, "Changes")
        for kind, item_id, change_key in changes:
            if kind == "delete":
                sub_t(sub_t(container, "Delete"), "ItemId", Id=item_id, ChangeKey=change_key)
            else:
                wrapper = sub_t(container, "Create" if kind == "create" else "Update")
                item_element(wrapper, self.store.items[item_id], shape, fields)
        return [msg]

    def _changes_since(self, folder: Folder, watermark: int, limit: int,
                       ignore: set[str | None]) -> tuple[list[tuple[str, str, str]], int, bool]:
        log = folder.changes
        lo = 0
        hi = len(log)
        while lo < hi:  # first entry with seq > watermark
            mid = (lo + hi) // 2
            if log[mid][0] <= watermark:
                lo = mid + 1
            else:
                hi = mid
        out: list[tuple[str, str, str]] = []
        last_seq = watermark
        for seq, kind, item_id, created_seq, change_key in log[lo:]:
            if kind == "delete":
                if created_seq > watermark or item_id in ignore:
                    last_seq = seq
                    continue
                entry = ("delete", item_id, change_key)
            else:
                msg = folder.items.get(item_id)
                if msg is None or msg.change_seq != seq or item_id in ignore:
                    last_seq = seq  # superseded by a later change (or deleted): nothing to report here
                    continue
                entry = ("create" if msg.seq > watermark else "update", item_id, msg.change_key)
            if len(out) == limit:
                return out, last_seq, False
            out.append(entry)
            last_seq = seq
        return out, max(last_seq, self.store.current_seq), True
