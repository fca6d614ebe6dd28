"""Rendering of items, attachments and folders as EWS ``t:`` elements.

Properties are emitted in the order of the EWS schema (``ItemType`` then ``MessageType``),
only those the request's shape asks for (``BaseShape`` plus ``AdditionalProperties``). The
element follows the item's class (``t:Message``, ``t:MeetingRequest``, ``t:CalendarItem``, ...;
:func:`sandbox.ews.store.element_for_class`); non-message elements get ItemType's properties
only. Of extended properties only PR_TRANSPORT_MESSAGE_HEADERS (0x007D) is known; other
unknown property paths (calendar fields, ...) are ignored, like a property that has no value
on the item. Text that XML cannot hold goes out as character references (``sandbox.ews.soap``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import format_datetime

from lxml import etree

from sandbox.ews.soap import local, sub_t, xml_bool, xml_datetime
from sandbox.ews.store import MESSAGE_ELEMENTS, Addr, Attachment, Folder, Message, html_to_text


@dataclass
class Shape:
    base: str = "IdOnly"  # IdOnly | Default | AllProperties
    fields: set[str] = field(default_factory=set)
    body_type: str = "Best"  # Best | HTML | Text
    extended: list[dict[str, str]] = field(default_factory=list)  # ExtendedFieldURI attributes, as asked
    include_mime: bool = False  # AttachmentShape IncludeMimeContent (the item of an item attachment)

    @classmethod
    def parse(cls, elem: etree._Element | None) -> Shape:
        shape = cls()
        if elem is None:
            return shape
        for child in elem:
            name = local(child.tag)
            if name == "BaseShape":
                shape.base = (child.text or "IdOnly").strip()
            elif name == "BodyType":
                shape.body_type = (child.text or "Best").strip()
            elif name == "IncludeMimeContent":
                shape.include_mime = (child.text or "").strip().lower() == "true"
            elif name == "AdditionalProperties":
                for prop in child:
                    uri = prop.get("FieldURI")
                    if uri:
                        shape.fields.add(uri)
                    elif local(prop.tag) == "ExtendedFieldURI":
                        shape.extended.append(dict(prop.attrib))
        return shape


def _mailbox(parent: etree._Element, tag: str, addr: Addr) -> None:
    box = sub_t(parent, tag)
    _mailbox_el(box, addr)


def _mailbox_el(parent: etree._Element, addr: Addr) -> None:
    mbx = sub_t(parent, "Mailbox")
    if addr.name:
        sub_t(mbx, "Name", addr.name)
    sub_t(mbx, "EmailAddress", addr.email)
    sub_t(mbx, "RoutingType", addr.routing_type or "SMTP")
    sub_t(mbx, "MailboxType", addr.mailbox_type or "OneOff")


def _mailboxes(parent: etree._Element, tag: str, addrs: tuple[Addr, ...]) -> None:
    if not addrs:
        return
    box = sub_t(parent, tag)
    for addr in addrs:
        _mailbox_el(box, addr)


def _body(parent: etree._Element, tag: str, msg: Message, body_type: str) -> None:
    text, native = msg.body, msg.body_type
    if body_type == "Text" and native == "HTML":
        text, native = html_to_text(text), "Text"
    elif body_type == "HTML" and native == "Text":
        escaped = (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                   .replace("\n", "<br>\r\n"))
        text, native = f"<html><body><div>{escaped}</div></body></html>", "HTML"
    sub_t(parent, tag, text, BodyType=native, IsTruncated="false")


def attachment_element(parent: etree._Element, att: Attachment, *, with_content: bool,
                       shape: Shape | None = None) -> None:
    """``t:FileAttachment`` or ``t:ItemAttachment`` (AttachmentType's fields in schema order).

    ``with_content`` (GetAttachment): a file's base64 ``Content``; an item attachment's item
    as its own element (``t:Message``, ``t:MeetingRequest``, ...) with the properties of
    ``shape`` (the request's AttachmentShape), like Exchange answers it.
    """
    el = sub_t(parent, "ItemAttachment" if att.is_item else "FileAttachment")
    sub_t(el, "AttachmentId", Id=att.attachment_id)
    sub_t(el, "Name", att.name)
    if att.content_type:
        sub_t(el, "ContentType", att.content_type)
    if att.content_id:
        sub_t(el, "ContentId", att.content_id)
    sub_t(el, "Size", str(att.size))
    sub_t(el, "LastModifiedTime", xml_datetime(att.last_modified))
    sub_t(el, "IsInline", xml_bool(att.is_inline))
    if att.item is not None:
        if with_content:
            shape = shape or Shape()
            fields = set(DEFAULT_ITEM_FIELDS) | shape.fields
            if shape.include_mime:
                fields.add("item:MimeContent")
            item_element(el, att.item, shape, fields)
        return
    sub_t(el, "IsContactPhoto", "false")
    if with_content:
        sub_t(el, "Content", base64.b64encode(att.content()).decode("ascii"))


def _headers(msg: Message) -> list[tuple[str, str]]:
    """InternetMessageHeaders: an ``.eml``'s own headers; else made from the fields, with any
    seeded ``headers`` added (one of the same name replacing the made one)."""
    if msg.headers and msg.mime is not None:
        return list(msg.headers)
    out = [h for h in _made_headers(msg) if h[0].lower() not in {n.lower() for n, _ in msg.headers}]
    return out + list(msg.headers)


def _made_headers(msg: Message) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if msg.author:
        out.append(("From", f"{msg.author.name} <{msg.author.email}>" if msg.author.name else msg.author.email))
    if msg.to:
        out.append(("To", ", ".join(a.email for a in msg.to)))
    if msg.cc:
        out.append(("Cc", ", ".join(a.email for a in msg.cc)))
    out.append(("Subject", msg.subject))
    if msg.sent:
        out.append(("Date", format_datetime(msg.sent)))
    if msg.message_id:
        out.append(("Message-ID", msg.message_id))
    if msg.in_reply_to:
        out.append(("In-Reply-To", msg.in_reply_to))
    if msg.references:
        out.append(("References", " ".join(msg.references)))
    out.append(("MIME-Version", "1.0"))
    out.append(("Content-Type", "text/html; charset=\"utf-8\"" if msg.body_type == "HTML"
                else "text/plain; charset=\"utf-8\""))
    return out


def _is_from_me(msg: Message) -> bool:
    return bool(msg.author and msg.author.email.lower() == msg.mailbox.lower())


# (FieldURI, renderer). Order = EWS schema order (ItemType, then MessageType).
Renderer = Callable[[etree._Element, Message, Shape], None]


def _r_mime(p: etree._Element, m: Message, s: Shape) -> None:
    if m.mime is not None or m.embedded:
        sub_t(p, "MimeContent", base64.b64encode(m.mime_content()).decode("ascii"), CharacterSet="UTF-8")


def _r_parent(p: etree._Element, m: Message, s: Shape) -> None:
    if not m.embedded:  # an attached item is in no folder
        sub_t(p, "ParentFolderId", Id=m.folder.folder_id, ChangeKey=m.folder.change_key)


def transport_header_list(m: Message) -> list[tuple[str, str]] | None:
    """The headers an item arrived with (PR_TRANSPORT_MESSAGE_HEADERS, which Exchange parses into
    InternetMessageHeaders); None for what the mailbox owner sent (it never crossed a transport
    into this mailbox) and for items that are no message (an appointment)."""
    if _is_from_me(m) or m.element not in MESSAGE_ELEMENTS:
        return None
    return _headers(m)


def transport_headers(m: Message) -> str | None:
    """PR_TRANSPORT_MESSAGE_HEADERS (0x007D) as Exchange stores it: one CRLF-separated block."""
    headers = transport_header_list(m)
    if headers is None:
        return None
    return "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"


# Extended properties the sandbox knows (by PropertyTag); any other requested one has no value.
EXTENDED_BY_TAG: dict[int, Callable[[Message], str | None]] = {0x007D: transport_headers}


def _property_tag(attrs: dict[str, str]) -> int | None:
    tag = (attrs.get("PropertyTag") or "").strip()
    try:
        return int(tag, 16) if tag.lower().startswith("0x") else int(tag)
    except ValueError:
        return None


def _r_extended(p: etree._Element, m: Message, s: Shape) -> None:
    for attrs in s.extended:
        getter = EXTENDED_BY_TAG.get(_property_tag(attrs) or -1)
        value = getter(m) if getter is not None else None
        if value is None:
            continue  # like Exchange: a property without a value is left out
        prop = sub_t(p, "ExtendedProperty")
        sub_t(prop, "ExtendedFieldURI", **attrs)  # echoed as asked, which is how clients match it
        sub_t(prop, "Value", value)


def _r_attachments(p: etree._Element, m: Message, s: Shape) -> None:
    if m.attachments:
        atts = sub_t(p, "Attachments")
        for att in m.attachments:
            attachment_element(atts, att, with_content=False)


def _r_conversation(p: etree._Element, m: Message, s: Shape) -> None:
    if not m.embedded:
        _r_conversation_id(p, m, s)


def _r_categories(p: etree._Element, m: Message, s: Shape) -> None:
    if m.categories:
        cats = sub_t(p, "Categories")
        for c in m.categories:
            sub_t(cats, "String", c)


def _r_headers(p: etree._Element, m: Message, s: Shape) -> None:
    headers = transport_header_list(m)
    if not headers:  # like Exchange: nothing to parse them from
        return
    box = sub_t(p, "InternetMessageHeaders")
    for name, value in headers:
        sub_t(box, "InternetMessageHeader", value, HeaderName=name)


def _text(tag: str, getter: Callable[[Message], str | None]) -> Renderer:
    def render(p: etree._Element, m: Message, s: Shape) -> None:
        value = getter(m)
        if value is not None:
            sub_t(p, tag, value)
    return render


def _dt(tag: str, getter: Callable[[Message], object]) -> Renderer:
    def render(p: etree._Element, m: Message, s: Shape) -> None:
        value = getter(m)
        if value is not None:
            sub_t(p, tag, xml_datetime(value))  # type: ignore[arg-type]
    return render


def _r_conversation_id(p: etree._Element, m: Message, s: Shape) -> None:
    sub_t(p, "ConversationId", Id=m.conversation_id)


def _r_text_body(p: etree._Element, m: Message, s: Shape) -> None:
    sub_t(p, "TextBody", m.text_body, BodyType="Text")


def _conversation_index(m: Message) -> str:
    return base64.b64encode(b"\x01" + hashlib.sha1(m.conversation_id.encode()).digest()[:21]).decode()


EXTENDED = "(extended properties)"  # pseudo path: rendered when the shape asks for any

ITEM_RENDERERS: list[tuple[str, Renderer]] = [
    ("item:MimeContent", _r_mime),
    ("item:ParentFolderId", _r_parent),
    ("item:ItemClass", _text("ItemClass", lambda m: m.item_class)),
    ("item:Subject", _text("Subject", lambda m: m.subject)),
    ("item:Sensitivity", _text("Sensitivity", lambda m: m.sensitivity)),
    ("item:Body", lambda p, m, s: _body(p, "Body", m, s.body_type)),
    ("item:Attachments", _r_attachments),
    ("item:DateTimeReceived", _dt("DateTimeReceived", lambda m: m.received)),
    ("item:Size", _text("Size", lambda m: str(m.size))),
    ("item:Categories", _r_categories),
    ("item:Importance", _text("Importance", lambda m: m.importance)),
    ("item:InReplyTo", _text("InReplyTo", lambda m: m.in_reply_to)),
    ("item:IsSubmitted", _text("IsSubmitted", lambda m: "false")),
    ("item:IsDraft", _text("IsDraft", lambda m: "false")),
    ("item:IsFromMe", _text("IsFromMe", lambda m: xml_bool(_is_from_me(m)))),
    ("item:IsResend", _text("IsResend", lambda m: "false")),
    ("item:IsUnmodified", _text("IsUnmodified", lambda m: xml_bool(m.version == 1))),
    ("item:InternetMessageHeaders", _r_headers),
    ("item:DateTimeSent", _dt("DateTimeSent", lambda m: m.sent)),
    ("item:DateTimeCreated", _dt("DateTimeCreated", lambda m: m.created)),
    ("item:ReminderIsSet", _text("ReminderIsSet", lambda m: "false")),
    ("item:DisplayCc", _text("DisplayCc", lambda m: "; ".join(a.display for a in m.cc))),
    ("item:DisplayTo", _text("DisplayTo", lambda m: "; ".join(a.display for a in m.to))),
    ("item:HasAttachments", _text("HasAttachments", lambda m: xml_bool(m.has_attachments))),
    (EXTENDED, _r_extended),  # ItemType's ExtendedProperty elements sit here, before Culture
    ("item:Culture", _text("Culture", lambda m: "en-US")),
    ("item:LastModifiedName", _text("LastModifiedName", lambda m: m.folder.mailbox.split("@")[0])),
    ("item:LastModifiedTime", _dt("LastModifiedTime", lambda m: m.last_modified)),
    ("item:IsAssociated", _text("IsAssociated", lambda m: "false")),
    ("item:ConversationId", _r_conversation),
    ("item:UniqueBody", lambda p, m, s: _body(p, "UniqueBody", m, s.body_type)),
    ("item:TextBody", _r_text_body),
    ("message:Sender", lambda p, m, s: _mailbox(p, "Sender", m.sender) if m.sender else None),
    ("message:ToRecipients", lambda p, m, s: _mailboxes(p, "ToRecipients", m.to)),
    ("message:CcRecipients", lambda p, m, s: _mailboxes(p, "CcRecipients", m.cc)),
    ("message:BccRecipients", lambda p, m, s: _mailboxes(p, "BccRecipients", m.bcc)),
    ("message:IsReadReceiptRequested", _text("IsReadReceiptRequested", lambda m: "false")),
    ("message:IsDeliveryReceiptRequested", _text("IsDeliveryReceiptRequested", lambda m: "false")),
    ("message:ConversationIndex", _text("ConversationIndex", _conversation_index)),
    ("message:ConversationTopic", _text("ConversationTopic", lambda m: m.conversation_topic)),
    ("message:From", lambda p, m, s: _mailbox(p, "From", m.author) if m.author else None),
    ("message:InternetMessageId", _text("InternetMessageId", lambda m: m.message_id)),
    ("message:IsRead", _text("IsRead", lambda m: xml_bool(m.is_read))),
    ("message:IsResponseRequested", _text("IsResponseRequested", lambda m: "false")),
    ("message:References", _text("References", lambda m: " ".join(m.references) or None)),
    ("message:ReplyTo", lambda p, m, s: _mailboxes(p, "ReplyTo", m.reply_to)),
    ("message:ReceivedBy", lambda p, m, s: None if _is_from_me(m) else
     _mailbox(p, "ReceivedBy", Addr(m.mailbox, mailbox_type="Mailbox"))),
    ("message:ReceivedRepresenting", lambda p, m, s: None if _is_from_me(m) else
     _mailbox(p, "ReceivedRepresenting", Addr(m.mailbox, mailbox_type="Mailbox"))),
]
ALL_ITEM_FIELDS = {uri for uri, _ in ITEM_RENDERERS}
DEFAULT_ITEM_FIELDS = {
    "item:ParentFolderId", "item:ItemClass", "item:Subject", "item:Sensitivity", "item:Body", "item:Attachments",
    "item:DateTimeReceived", "item:Size", "item:Importance", "item:IsSubmitted", "item:IsDraft", "item:IsFromMe",
    "item:IsResend", "item:IsUnmodified", "item:DateTimeSent", "item:DateTimeCreated", "item:DisplayCc",
    "item:DisplayTo", "item:HasAttachments", "item:Culture", "message:Sender", "message:ToRecipients",
    "message:CcRecipients", "message:IsReadReceiptRequested", "message:IsDeliveryReceiptRequested",
    "message:ConversationIndex", "message:ConversationTopic", "message:From", "message:InternetMessageId",
    "message:IsRead", "message:IsResponseRequested", "message:References",
}


# Like Exchange, FindItem and SyncFolderItems silently leave these out even when asked for them:
# bodies, attachment lists and MIME content only come from GetItem.
GET_ITEM_ONLY_FIELDS = {"item:Body", "item:TextBody", "item:UniqueBody", "item:Attachments", "item:MimeContent"}


def wanted_item_fields(shape: Shape, *, find: bool = False) -> set[str]:
    """The property paths to render. ``find=True`` for FindItem / SyncFolderItems summaries."""
    if shape.base == "AllProperties":
        fields = set(ALL_ITEM_FIELDS) - {"item:MimeContent"}
    elif shape.base == "Default":
        fields = set(DEFAULT_ITEM_FIELDS)
    else:
        fields = set()
    fields |= shape.fields
    if find:
        fields -= GET_ITEM_ONLY_FIELDS
    return fields


def item_element(parent: etree._Element, msg: Message, shape: Shape, fields: set[str]) -> etree._Element:
    """The item as Exchange serves it: ``t:Message``, ``t:MeetingRequest``, ``t:MeetingResponse``,
    ``t:MeetingCancellation``, ``t:MeetingMessage`` (ItemType's then MessageType's properties),
    ``t:CalendarItem``, ``t:Contact``, ``t:Task``, ``t:PostItem`` or ``t:Item`` (ItemType's
    properties only: they have no MessageType ones), chosen by its ItemClass."""
    element = msg.element
    el = sub_t(parent, element)
    if "item:MimeContent" in fields:
        _r_mime(el, msg, shape)
    if not msg.embedded:  # an attached item has no id of its own
        sub_t(el, "ItemId", Id=msg.item_id, ChangeKey=msg.change_key)
    with_message_fields = element in MESSAGE_ELEMENTS
    for uri, render in ITEM_RENDERERS:
        if uri == EXTENDED:
            if shape.extended:
                render(el, msg, shape)
        elif uri in fields and uri != "item:MimeContent" and (with_message_fields or uri.startswith("item:")):
            render(el, msg, shape)
    return el


# -- folders --------------------------------------------------------------------------------
ALL_FOLDER_FIELDS = {"folder:ParentFolderId", "folder:FolderClass", "folder:DisplayName", "folder:TotalCount",
                     "folder:ChildFolderCount", "folder:UnreadCount"}
DEFAULT_FOLDER_FIELDS = {"folder:DisplayName", "folder:TotalCount", "folder:ChildFolderCount",
                         "folder:UnreadCount"}


def wanted_folder_fields(shape: Shape) -> set[str]:
    if shape.base == "AllProperties":
        return set(ALL_FOLDER_FIELDS) | shape.fields
    if shape.base == "Default":
        return set(DEFAULT_FOLDER_FIELDS) | shape.fields
    return set(shape.fields)


def folder_element(parent: etree._Element, folder: Folder, fields: set[str]) -> etree._Element:
    el = sub_t(parent, folder.element)
    sub_t(el, "FolderId", Id=folder.folder_id, ChangeKey=folder.change_key)
    if "folder:ParentFolderId" in fields and folder.parent is not None:
        sub_t(el, "ParentFolderId", Id=folder.parent.folder_id, ChangeKey=folder.parent.change_key)
    if "folder:FolderClass" in fields and folder.folder_class:
        sub_t(el, "FolderClass", folder.folder_class)
    if "folder:DisplayName" in fields:
        sub_t(el, "DisplayName", folder.name)
    if "folder:TotalCount" in fields:
        sub_t(el, "TotalCount", str(len(folder.items)))
    if "folder:ChildFolderCount" in fields:
        sub_t(el, "ChildFolderCount", str(len(folder.children)))
    if "folder:UnreadCount" in fields and folder.element != "CalendarFolder":
        sub_t(el, "UnreadCount", str(folder.unread_count))
    return el
