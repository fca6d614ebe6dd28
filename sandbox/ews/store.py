"""Thread-safe in-memory Exchange state: accounts, mailboxes, folder trees, messages.

Everything the EWS sandbox answers comes from here, and tests read it back here (for example
the CRM category the sync wrote onto a message). Ids look like Exchange's opaque base64 ids
but are just counters, so a sandbox seeded the same way hands out the same ids.

Messages are indexed per folder by received and sent time (sorted lists, for range
restrictions) and by change sequence (an append-only log, for ``SyncFolderItems``).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import json
import mimetypes
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses, parseaddr
from html.parser import HTMLParser
from typing import Any

# (distinguished id, display name, FolderClass, response element, parent distinguished id)
WELL_KNOWN_FOLDERS: tuple[tuple[str, str, str | None, str, str | None], ...] = (
    ("root", "root", None, "Folder", None),
    ("msgfolderroot", "Top of Information Store", None, "Folder", "root"),
    ("inbox", "Inbox", "IPF.Note", "Folder", "msgfolderroot"),
    ("sentitems", "Sent Items", "IPF.Note", "Folder", "msgfolderroot"),
    ("deleteditems", "Deleted Items", "IPF.Note", "Folder", "msgfolderroot"),
    ("drafts", "Drafts", "IPF.Note", "Folder", "msgfolderroot"),
    ("outbox", "Outbox", "IPF.Note", "Folder", "msgfolderroot"),
    ("junkemail", "Junk Email", "IPF.Note", "Folder", "msgfolderroot"),
    ("calendar", "Calendar", "IPF.Appointment", "CalendarFolder", "msgfolderroot"),
    ("contacts", "Contacts", "IPF.Contact", "ContactsFolder", "msgfolderroot"),
    ("tasks", "Tasks", "IPF.Task", "TasksFolder", "msgfolderroot"),
    ("notes", "Notes", "IPF.StickyNote", "Folder", "msgfolderroot"),
    ("journal", "Journal", "IPF.Journal", "Folder", "msgfolderroot"),
)

SENSITIVITIES = ("Normal", "Personal", "Private", "Confidential")
IMPORTANCES = ("Low", "Normal", "High")

# Message class (case-insensitive, the class or one below it) -> the EWS element Exchange serves
# such an item as, in FindItem, GetItem, SyncFolderItems and as an attached item. Meeting
# responses are MeetingResponse (AcceptItem/DeclineItem/TentativelyAcceptItem only exist to
# *create* a response); reports (REPORT.*) and every IPM.Note.* class are Message. First match wins.
ELEMENT_BY_CLASS: tuple[tuple[str, str], ...] = (
    ("IPM.Schedule.Meeting.Request", "MeetingRequest"),
    ("IPM.Schedule.Meeting.Resp", "MeetingResponse"),
    ("IPM.Schedule.Meeting.Canceled", "MeetingCancellation"),
    ("IPM.Schedule.Meeting", "MeetingMessage"),
    ("IPM.Appointment", "CalendarItem"),
    ("IPM.OLE.CLASS.{00061055-0000-0000-C000-000000000046}", "CalendarItem"),
    ("IPM.Contact", "Contact"),
    ("IPM.DistList", "DistributionList"),
    ("IPM.Task", "Task"),
    ("IPM.Post", "PostItem"),
    ("IPM.Note", "Message"),
    ("REPORT", "Message"),
    ("IPM.TaskRequest", "Message"),
    ("IPM.Sharing", "Message"),
    ("IPM.Outlook.Recall", "Message"),
    ("IPM.Recall.Report", "Message"),
)
MESSAGE_ELEMENTS = frozenset({"Message", "MeetingRequest", "MeetingResponse", "MeetingCancellation", "MeetingMessage"})


def element_for_class(item_class: str) -> str:
    """The EWS element for a message class; ``Item`` for a class EWS has no type of its own for."""
    cls = (item_class or "IPM.Note").strip().casefold()
    for prefix, element in ELEMENT_BY_CLASS:
        p = prefix.casefold()
        if cls == p or cls.startswith(p + "."):
            return element
    return "Item"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def to_utc(value: datetime | str | None) -> datetime | None:
    """Parse ISO text or normalise a datetime to UTC, whole seconds (what EWS stores and answers)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class Addr:
    """A mailbox as EWS renders it: Name, EmailAddress, RoutingType, MailboxType."""

    email: str
    name: str = ""
    routing_type: str = "SMTP"
    mailbox_type: str = "OneOff"

    @classmethod
    def parse(cls, value: Any) -> Addr | None:
        if value is None or value == "":
            return None
        if isinstance(value, Addr):
            return value
        if isinstance(value, dict):
            email = value.get("email") or value.get("email_address") or value.get("address") or ""
            return cls(email=email, name=value.get("name") or "",
                       routing_type=value.get("routing_type", "SMTP"),
                       mailbox_type=value.get("mailbox_type", "OneOff"))
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(email=value[1], name=value[0] or "")
        name, email = parseaddr(str(value))
        return cls(email=email or str(value).strip(), name=name)

    @classmethod
    def parse_list(cls, value: Any) -> tuple[Addr, ...]:
        if value is None or value == "":
            return ()
        if isinstance(value, str):
            return tuple(cls(email=e, name=n) for n, e in getaddresses([value]) if e)
        if isinstance(value, (Addr, dict)):
            value = [value]
        out = []
        for v in value:
            a = cls.parse(v)
            if a is not None and a.email:
                out.append(a)
        return tuple(out)

    @property
    def display(self) -> str:
        return self.name or self.email


@dataclass(eq=False)
class Attachment:
    """A file attachment, or with ``item`` set an item attachment (an attached email, meeting, ...).

    File: ``data=None`` means synthetic, ``size`` deterministic bytes made on fetch. Item:
    ``item`` is the attached item (a :class:`Message` in no folder index, without an item
    id), ``size`` its size and :meth:`content` its MIME content.
    """

    attachment_id: str
    name: str
    content_type: str
    size: int
    is_inline: bool = False
    content_id: str | None = None
    data: bytes | None = None
    last_modified: datetime = field(default_factory=_now)
    synthetic_seed: str = ""
    item: Message | None = None

    @property
    def is_item(self) -> bool:
        return self.item is not None

    def content(self) -> bytes:
        if self.item is not None:
            return self.item.mime_content()
        if self.data is not None:
            return self.data
        return synthetic_bytes(self.synthetic_seed or self.name, self.size)


def synthetic_bytes(seed: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes (a repeated 4 KiB block derived from ``seed``)."""
    if size <= 0:
        return b""
    block = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(128))
    repeats, rest = divmod(size, len(block))
    return block * repeats + block[:rest]


@dataclass(eq=False)
class Message:
    item_id: str
    folder: Folder
    seq: int  # change sequence at creation
    change_seq: int  # change sequence of the last change
    subject: str = ""
    body: str = ""
    body_type: str = "Text"  # "Text" or "HTML"
    author: Addr | None = None  # EWS "From"
    sender: Addr | None = None  # EWS "Sender" (defaults to From)
    to: tuple[Addr, ...] = ()
    cc: tuple[Addr, ...] = ()
    bcc: tuple[Addr, ...] = ()
    reply_to: tuple[Addr, ...] = ()
    sent: datetime | None = None
    received: datetime | None = None
    created: datetime | None = None
    last_modified: datetime | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    conversation_id: str = ""
    categories: tuple[str, ...] = ()
    sensitivity: str = "Normal"
    importance: str = "Normal"
    item_class: str = "IPM.Note"
    is_read: bool = False
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    mime: bytes | None = None
    version: int = 1
    embedded: bool = False  # the item of an item attachment: no id, no folder index

    @property
    def element(self) -> str:
        """The EWS element Exchange serves this item as (``Message``, ``MeetingRequest``, ...)."""
        return element_for_class(self.item_class)

    @property
    def change_key(self) -> str:
        return "CQAAABYAAA" + base64.b64encode(f"{self.item_id[-12:]}:{self.version}".encode()).decode()

    @property
    def mailbox(self) -> str:
        return self.folder.mailbox

    @property
    def has_attachments(self) -> bool:
        # Exchange reports HasAttachments=false when the only attachments are inline images.
        return any(not a.is_inline for a in self.attachments)

    @property
    def size(self) -> int:
        return 1024 + len(self.body.encode("utf-8")) + sum(a.size for a in self.attachments)

    @property
    def text_body(self) -> str:
        return html_to_text(self.body) if self.body_type == "HTML" else self.body

    @property
    def conversation_topic(self) -> str:
        return re.sub(r"^\s*((re|fw|fwd|aw|wg)\s*:\s*)+", "", self.subject, flags=re.IGNORECASE)

    def mime_content(self) -> bytes:
        """The item as RFC 822 bytes: the ``.eml`` it was seeded from, else made from its fields."""
        if self.mime is not None:
            return self.mime
        out = EmailMessage(policy=email.policy.SMTP)
        for name, value in (("From", _mime_addrs((self.author,) if self.author else ())), ("To", _mime_addrs(self.to)),
                            ("Cc", _mime_addrs(self.cc)), ("Subject", self.subject),
                            ("Date", format_datetime(self.sent) if self.sent else ""),
                            ("Message-ID", self.message_id or ""), ("In-Reply-To", self.in_reply_to or ""),
                            ("References", " ".join(self.references))):
            if value:
                out[name] = _printable(value)
        out.set_content(self.body, subtype="html" if self.body_type == "HTML" else "plain")
        return out.as_bytes()

    def summary(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "subject": self.subject, "item_class": self.item_class,
                "categories": list(self.categories),
                "received": self.received.isoformat() if self.received else None,
                "message_id": self.message_id}


@dataclass(eq=False)
class Folder:
    folder_id: str
    mailbox: str
    name: str
    folder_class: str | None
    element: str = "Folder"
    parent: Folder | None = None
    distinguished: str | None = None
    children: list[Folder] = field(default_factory=list)
    items: dict[str, Message] = field(default_factory=dict)
    version: int = 1  # bumped on every change to the folder's items (query cache key)
    by_received: list[tuple[datetime, int, str]] = field(default_factory=list)
    by_sent: list[tuple[datetime, int, str]] = field(default_factory=list)
    # append-only change log for SyncFolderItems: (seq, kind, item_id, created_seq, change_key)
    changes: list[tuple[int, str, str, int, str]] = field(default_factory=list)

    @property
    def change_key(self) -> str:
        return "AQAAABYAAA" + base64.b64encode(f"{self.folder_id[-10:]}:{self.version}".encode()).decode()

    @property
    def path(self) -> str:
        """Path below Top of Information Store, e.g. ``Inbox/Clients`` ('' for that folder)."""
        if self.distinguished == "root":
            return "(root)"
        parts = []
        f: Folder | None = self
        while f is not None and f.distinguished not in ("msgfolderroot", "root"):
            parts.append(f.name)
            f = f.parent
        return "/".join(reversed(parts))

    @property
    def unread_count(self) -> int:
        return sum(1 for i in self.items.values() if not i.is_read)

    def walk(self) -> Iterator[Folder]:
        for child in self.children:
            yield child
            yield from child.walk()


@dataclass(eq=False)
class Mailbox:
    address: str
    name: str
    root: Folder
    distinguished: dict[str, Folder] = field(default_factory=dict)
    delegates: set[str] = field(default_factory=set)  # lower-cased usernames / addresses allowed in


@dataclass(eq=False)
class Account:
    username: str
    password: str
    email: str
    name: str = ""
    impersonation: bool = False  # holds the ApplicationImpersonation role
    delegate_for: set[str] = field(default_factory=set)  # lower-cased mailbox addresses

    def public(self) -> dict[str, Any]:
        return {"username": self.username, "email": self.email, "impersonation": self.impersonation,
                "delegate_for": sorted(self.delegate_for)}


class Store:
    """The sandbox's mailbox state. All public methods are thread-safe."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self.folders: dict[str, Folder] = {}
        self.items: dict[str, Message] = {}
        self.attachments: dict[str, tuple[Message, Attachment]] = {}
        self._ids = itertools.count(1)
        self._seq = 0

    # -- ids --------------------------------------------------------------------------------
    def _new_id(self, prefix: str, kind: str) -> str:
        n = next(self._ids)
        return prefix + base64.b64encode(f"sandbox-{kind}-{n:09d}".encode()).decode()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def current_seq(self) -> int:
        with self.lock:
            return self._seq

    # -- accounts and mailboxes ---------------------------------------------------------------
    def add_account(self, username: str, password: str, email: str | None = None, *, name: str = "",
                    impersonation: bool = False, delegate_for: Iterable[str] = (),
                    create_mailbox: bool = True) -> Account:
        email = email or (username if "@" in username else f"{username}@example.com")
        account = Account(username=username, password=password, email=email, name=name or "",
                          impersonation=bool(impersonation),
                          delegate_for={a.lower() for a in delegate_for})
        with self.lock:
            self.accounts[username.lower()] = account
            if create_mailbox:
                self.add_mailbox(email, name=name)
        return account

    def authenticate(self, username: str, password: str) -> Account | None:
        """Basic auth: the user name may be ``user``, ``DOMAIN\\user``, the UPN or the SMTP address."""
        wanted = {username.lower(), username.split("\\")[-1].lower()}
        with self.lock:
            for account in self.accounts.values():
                if account.username.lower() in wanted or account.email.lower() in wanted:
                    return account if account.password == password else None
        return None

    def account_for(self, address: str) -> Account | None:
        address = address.lower()
        with self.lock:
            for account in self.accounts.values():
                if account.email.lower() == address or account.username.lower() == address:
                    return account
        return None

    def add_mailbox(self, address: str, *, name: str = "", delegates: Iterable[str] = ()) -> Mailbox:
        key = address.lower()
        with self.lock:
            existing = self.mailboxes.get(key)
            if existing is not None:
                existing.delegates.update(d.lower() for d in delegates)
                if name and not existing.name:
                    existing.name = name
                return existing
            mailbox = Mailbox(address=address, name=name or address.split("@")[0], root=None,  # type: ignore[arg-type]
                              delegates={d.lower() for d in delegates})
            for dist_id, display, folder_class, element, parent_id in WELL_KNOWN_FOLDERS:
                parent = mailbox.distinguished.get(parent_id) if parent_id else None
                folder = self._new_folder(address, display, folder_class, parent, element=element,
                                          distinguished=dist_id)
                mailbox.distinguished[dist_id] = folder
            mailbox.root = mailbox.distinguished["root"]
            self.mailboxes[key] = mailbox
            return mailbox

    def mailbox(self, address: str) -> Mailbox:
        with self.lock:
            try:
                return self.mailboxes[address.lower()]
            except KeyError:
                raise KeyError(f"no mailbox {address!r} in the EWS sandbox") from None

    def can_open(self, user: str, mailbox_address: str) -> bool:
        """May the (effective) user ``user`` open ``mailbox_address``: own mailbox or delegate."""
        user_l, target = user.lower(), mailbox_address.lower()
        if user_l == target:
            return True
        with self.lock:
            account = self.account_for(user_l)
            if account is not None:
                if target in account.delegate_for or account.email.lower() == target:
                    return True
                names = {account.username.lower(), account.email.lower()}
            else:
                names = {user_l}
            mailbox = self.mailboxes.get(target)
            return mailbox is not None and bool(mailbox.delegates & names)

    # -- folders ------------------------------------------------------------------------------
    def _new_folder(self, mailbox: str, name: str, folder_class: str | None, parent: Folder | None, *,
                    element: str = "Folder", distinguished: str | None = None) -> Folder:
        folder = Folder(folder_id=self._new_id("AQMkAD", "folder"), mailbox=mailbox, name=name,
                        folder_class=folder_class, element=element, parent=parent,
                        distinguished=distinguished)
        if parent is not None:
            parent.children.append(folder)
        self.folders[folder.folder_id] = folder
        return folder

    def folder(self, mailbox: str, path: str, *, create: bool = False) -> Folder:
        """A folder by path below Top of Information Store (``Inbox/Clients``), case-insensitive.

        A distinguished id (``inbox``, ``sentitems``, ``msgfolderroot``, ``root``) works too.
        """
        with self.lock:
            box = self.mailbox(mailbox) if not create else self.add_mailbox(mailbox)
            clean = path.strip().strip("/")
            if clean.lower() in box.distinguished:
                return box.distinguished[clean.lower()]
            current = box.distinguished["msgfolderroot"]
            parts = [p for p in clean.split("/") if p]
            if parts and parts[0].lower() == "top of information store":
                parts = parts[1:]
            for part in parts:
                match = next((c for c in current.children if c.name.lower() == part.lower()), None)
                if match is None:
                    if not create:
                        raise KeyError(f"no folder {path!r} in mailbox {mailbox!r}")
                    match = self._new_folder(box.address, part, current.folder_class or "IPF.Note", current,
                                             element=current.element)
                current = match
            return current

    def add_folder(self, mailbox: str, path: str, folder_class: str = "IPF.Note") -> Folder:
        with self.lock:
            folder = self.folder(mailbox, path, create=True)
            if folder.folder_class is None and folder.distinguished is None:
                folder.folder_class = folder_class
            return folder

    # -- messages -----------------------------------------------------------------------------
    def add_message(self, mailbox: str, folder_path: str = "Inbox", **fields: Any) -> str:
        """Add one message; returns its EWS item id.

        Fields: subject, body, body_type (Text/HTML), from (or author), sender, to, cc, bcc,
        reply_to, sent, received (ISO text or datetime), message_id, in_reply_to, references
        (list or space-separated text), conversation_id, categories, sensitivity, importance,
        item_class, is_read, attachments [{name, size | content | content_b64, content_type,
        is_inline, content_id} or {item: {message fields}, name, is_inline} for an item
        attachment], headers [(name, value)], mime (raw RFC 822 bytes).
        """
        with self.lock:
            folder = self.folder(mailbox, folder_path, create=True)
            return self._add_message(folder, fields).item_id

    def _add_message(self, folder: Folder, fields: dict[str, Any]) -> Message:
        msg = self._build_message(folder, fields)
        item_id, seq = msg.item_id, msg.seq
        folder.items[item_id] = msg
        bisect.insort(folder.by_received, (msg.received, seq, item_id))
        bisect.insort(folder.by_sent, (msg.sent, seq, item_id))
        folder.changes.append((seq, "create", item_id, seq, msg.change_key))
        folder.version += 1
        self.items[item_id] = msg
        return msg

    def _build_message(self, folder: Folder, fields: dict[str, Any], *, embedded: bool = False) -> Message:
        """A message from seed fields; ``embedded``: the item of an item attachment (no id, no change)."""
        fields = dict(fields)
        unknown = set(fields) - _MESSAGE_FIELDS
        if unknown:
            raise ValueError(f"unknown message field(s): {sorted(unknown)}")
        author = Addr.parse(fields.pop("from", None) or fields.pop("author", None))
        sender = Addr.parse(fields.pop("sender", None)) or author
        sent = to_utc(fields.pop("sent", None))
        received = to_utc(fields.pop("received", None))
        if received is None:
            received = sent or _now()
        if sent is None:
            sent = received
        body_type = str(fields.pop("body_type", "") or "").strip()
        body = fields.pop("body", "") or ""
        if not body_type:
            body_type = "HTML" if re.match(r"\s*<(!doctype|html|body|div|p)\b", body, re.IGNORECASE) else "Text"
        body_type = {"html": "HTML", "text": "Text"}.get(body_type.lower(), body_type)
        if body_type not in ("HTML", "Text"):
            raise ValueError(f"body_type must be Text or HTML, not {body_type!r}")
        references = fields.pop("references", None) or ()
        if isinstance(references, str):
            references = tuple(references.split())
        message_id = fields.pop("message_id", None)
        in_reply_to = fields.pop("in_reply_to", None)
        seq = 0 if embedded else self._next_seq()
        item_id = "" if embedded else self._new_id("AAMkAD", "item")
        categories = fields.pop("categories", None) or ()
        if isinstance(categories, str):
            categories = (categories,)
        sensitivity = fields.pop("sensitivity", None) or "Normal"
        importance = fields.pop("importance", None) or "Normal"
        if sensitivity not in SENSITIVITIES:
            raise ValueError(f"sensitivity must be one of {SENSITIVITIES}")
        if importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {IMPORTANCES}")
        known = self._known_addr
        msg = Message(
            item_id=item_id, folder=folder, seq=seq, change_seq=seq,
            subject=fields.pop("subject", "") or "", body=body, body_type=body_type,
            author=known(author), sender=known(sender),
            to=tuple(map(known, Addr.parse_list(fields.pop("to", None)))),
            cc=tuple(map(known, Addr.parse_list(fields.pop("cc", None)))),
            bcc=tuple(map(known, Addr.parse_list(fields.pop("bcc", None)))),
            reply_to=tuple(map(known, Addr.parse_list(fields.pop("reply_to", None)))),
            sent=sent, received=received, created=received, last_modified=received,
            message_id=message_id, in_reply_to=in_reply_to, references=tuple(references),
            categories=tuple(categories), sensitivity=sensitivity, importance=importance,
            item_class=fields.pop("item_class", None) or "IPM.Note",
            is_read=bool(fields.pop("is_read", False)),
            headers=tuple(tuple(h) for h in fields.pop("headers", None) or ()),
            mime=fields.pop("mime", None), embedded=embedded,
        )
        msg.conversation_id = fields.pop("conversation_id", None) or _conversation_id(msg)
        for att in fields.pop("attachments", None) or ():
            self._attach(msg, att)
        return msg

    def _known_addr(self, addr: Addr | None) -> Addr | None:
        """Addresses of mailboxes in this store resolve like Exchange does: MailboxType Mailbox, with a name."""
        if addr is None:
            return None
        box = self.mailboxes.get(addr.email.lower())
        if box is None or addr.mailbox_type != "OneOff":
            return addr
        account = self.account_for(addr.email)
        name = addr.name or (account.name if account and account.name else box.name)
        return Addr(email=addr.email, name=name, routing_type=addr.routing_type, mailbox_type="Mailbox")

    def _attach(self, msg: Message, spec: dict[str, Any] | Attachment) -> Attachment:
        if isinstance(spec, Attachment):
            att = spec
        elif spec.get("item") is not None:  # an item attachment: the attached email, meeting, ...
            item = self._build_message(msg.folder, spec["item"], embedded=True)
            att = Attachment(attachment_id="", name=spec.get("name") or item.subject or "Untitled Attachment",
                             content_type=spec.get("content_type") or "", size=item.size,
                             is_inline=bool(spec.get("is_inline", False)), content_id=spec.get("content_id"),
                             last_modified=msg.received or _now(), item=item)
        else:
            spec = dict(spec)
            name = spec.get("name") or "attachment.bin"
            data: bytes | None = None
            if spec.get("content_b64") is not None:
                data = base64.b64decode(spec["content_b64"])
            elif spec.get("content") is not None:
                content = spec["content"]
                data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            size = len(data) if data is not None else int(spec.get("size") or 0)
            content_type = spec.get("content_type") or mimetypes.guess_type(name)[0] or "application/octet-stream"
            att = Attachment(attachment_id="", name=name, content_type=content_type, size=size,
                             is_inline=bool(spec.get("is_inline", False)), content_id=spec.get("content_id"),
                             data=data, last_modified=msg.received or _now())
        att.attachment_id = self._new_id("AAMkAD", "attachment")
        att.synthetic_seed = f"{self.seed}:{att.name}:{att.size}:{att.attachment_id}"
        if att.is_inline and not att.content_id:
            att.content_id = f"{att.name}@sandbox"
        msg.attachments = msg.attachments + (att,)
        self.attachments[att.attachment_id] = (msg, att)
        return att

    def message(self, item_id: str) -> Message:
        with self.lock:
            return self.items[item_id]

    def messages(self, mailbox: str, folder_path: str | None = None) -> list[Message]:
        """Messages of a mailbox (optionally one folder), in insertion order. Treat as read-only."""
        with self.lock:
            box = self.mailbox(mailbox)
            folders = [self.folder(mailbox, folder_path)] if folder_path is not None else list(box.root.walk())
            return [m for f in folders for m in f.items.values()]

    def find_message(self, mailbox: str, message_id: str) -> Message | None:
        with self.lock:
            return next((m for m in self.messages(mailbox) if m.message_id == message_id), None)

    def update_message(self, item_id: str, **changes: Any) -> Message:
        """Change fields of a stored message (a new ChangeKey; a SyncFolderItems Update)."""
        with self.lock:
            msg = self.items[item_id]
            for name, value in changes.items():
                if name == "categories":
                    value = (value,) if isinstance(value, str) else tuple(value or ())
                elif name in ("to", "cc", "bcc", "reply_to"):
                    value = tuple(map(self._known_addr, Addr.parse_list(value)))
                elif name in ("author", "from", "sender"):
                    name = "author" if name == "from" else name
                    value = self._known_addr(Addr.parse(value))
                elif name in ("sent", "received"):
                    raise ValueError("sent/received cannot change after delivery")
                elif name not in _MESSAGE_FIELDS or name in ("attachments", "mime"):
                    raise ValueError(f"cannot update field {name!r}")
                setattr(msg, name, value)
            self._touch(msg)
            return msg

    def _touch(self, msg: Message) -> None:
        msg.version += 1
        msg.last_modified = _now()
        seq = self._next_seq()
        msg.change_seq = seq
        folder = msg.folder
        folder.changes.append((seq, "update", msg.item_id, msg.seq, msg.change_key))
        folder.version += 1

    def delete_message(self, item_id: str) -> None:
        with self.lock:
            msg = self.items.pop(item_id)
            folder = msg.folder
            del folder.items[item_id]
            folder.by_received.remove((msg.received, msg.seq, item_id))
            folder.by_sent.remove((msg.sent, msg.seq, item_id))
            for att in msg.attachments:
                self.attachments.pop(att.attachment_id, None)
            folder.changes.append((self._next_seq(), "delete", item_id, msg.seq, msg.change_key))
            folder.version += 1

    def set_categories(self, item_id: str, categories: Iterable[str]) -> Message:
        return self.update_message(item_id, categories=tuple(categories))

    # -- bulk helpers -------------------------------------------------------------------------
    def add_synthetic(self, mailbox: str, folder_path: str, count: int, *, start: datetime | str,
                      step_seconds: int = 60, sender_domain: str = "client.example",
                      recipient: str | None = None, outbound: bool = False, subject: str = "Message {n}",
                      body: str = "Body of message {n}.", **extra: Any) -> list[str]:
        """Add ``count`` deterministic messages, one every ``step_seconds`` from ``start``."""
        begin = to_utc(start)
        assert begin is not None
        owner = recipient or mailbox
        ids = []
        with self.lock:
            folder = self.folder(mailbox, folder_path, create=True)
            for n in range(count):
                when = begin + timedelta(seconds=step_seconds * n)
                external = f"contact{n % 97}@{sender_domain}"
                fields = dict(subject=subject.format(n=n), body=body.format(n=n), sent=when, received=when,
                              message_id=f"<synthetic-{n}.{folder.folder_id[-8:]}@{sender_domain}>", **extra)
                if outbound:
                    fields.update({"from": owner, "to": [external]})
                else:
                    fields.update({"from": external, "to": [owner]})
                ids.append(self._add_message(folder, fields).item_id)
        return ids

    # -- introspection --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        with self.lock:
            mailboxes: dict[str, Any] = {}
            for box in self.mailboxes.values():
                folders = {}
                for f in box.root.walk():
                    if not f.items and f.distinguished:
                        continue
                    folders[f.path] = {"folder_id": f.folder_id, "count": len(f.items),
                                       "messages": [m.summary() for m in f.items.values()]}
                mailboxes[box.address] = {"folders": folders, "delegates": sorted(box.delegates)}
            return {"accounts": [a.public() for a in self.accounts.values()], "mailboxes": mailboxes,
                    "totals": {"messages": len(self.items), "attachments": len(self.attachments)}}


_MESSAGE_FIELDS = {
    "subject", "body", "body_type", "from", "author", "sender", "to", "cc", "bcc", "reply_to", "sent",
    "received", "message_id", "in_reply_to", "references", "conversation_id", "categories", "sensitivity",
    "importance", "item_class", "is_read", "attachments", "headers", "mime",
}


def _mime_addrs(addrs: Iterable[Addr]) -> str:
    return ", ".join(formataddr((a.name, a.email)) for a in addrs)


def _printable(value: str) -> str:
    """A header value the email package accepts (no line breaks or other control characters)."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", value).strip()


def _conversation_id(msg: Message) -> str:
    """Stable per thread: the first Reference (thread root), else In-Reply-To, else own id/subject."""
    root = (msg.references[0] if msg.references else None) or msg.in_reply_to or msg.message_id \
        or msg.conversation_topic.lower()
    digest = hashlib.sha1(root.encode("utf-8")).digest()
    return "AAQkAD" + base64.b64encode(digest).decode()


class _TextExtractor(HTMLParser):
    BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Plain text of an HTML body, roughly as Exchange renders TextBody."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def encode_sync_state(folder_id: str, watermark: int) -> str:
    return base64.b64encode(json.dumps({"v": 1, "f": folder_id, "w": watermark}).encode()).decode()


def decode_sync_state(token: str) -> tuple[str, int]:
    data = json.loads(base64.b64decode(token.encode(), validate=True))
    return str(data["f"]), int(data["w"])
