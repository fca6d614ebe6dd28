"""FindItem / FindFolder restrictions and sort orders, evaluated against the store.

A ``<m:Restriction>`` compiles to a Python predicate once per request. Range comparisons on
``item:DateTimeReceived`` / ``item:DateTimeSent`` at the top level (alone or inside the top
``And``) also narrow the candidates through the folder's sorted time index, so a one-day
window over a 10,000-message folder never looks at the other days.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import datetime
from typing import Any

from lxml import etree

from sandbox.ews.soap import TNS, EwsError, local, parse_datetime
from sandbox.ews.store import Folder, Message

Getter = Callable[[Any], Any]


def _emails(addrs: Any) -> list[str]:
    return [a.email for a in addrs]


# FieldURI -> (getter, value type). Lists match when any element matches (EWS multi-value semantics).
ITEM_FIELDS: dict[str, tuple[Getter, type]] = {
    "item:Subject": (lambda m: m.subject, str),
    "item:DateTimeReceived": (lambda m: m.received, datetime),
    "item:DateTimeSent": (lambda m: m.sent, datetime),
    "item:DateTimeCreated": (lambda m: m.created, datetime),
    "item:LastModifiedTime": (lambda m: m.last_modified, datetime),
    "item:Categories": (lambda m: list(m.categories), str),
    "item:ItemClass": (lambda m: m.item_class, str),
    "item:Importance": (lambda m: m.importance, str),
    "item:Sensitivity": (lambda m: m.sensitivity, str),
    "item:HasAttachments": (lambda m: m.has_attachments, bool),
    "item:Size": (lambda m: m.size, int),
    "item:InReplyTo": (lambda m: m.in_reply_to, str),
    "item:Body": (lambda m: m.body, str),
    "item:TextBody": (lambda m: m.text_body, str),
    "item:ConversationId": (lambda m: m.conversation_id, str),
    "item:DisplayTo": (lambda m: "; ".join(a.display for a in m.to), str),
    "item:DisplayCc": (lambda m: "; ".join(a.display for a in m.cc), str),
    "item:IsDraft": (lambda m: False, bool),
    "item:IsAssociated": (lambda m: False, bool),
    "message:InternetMessageId": (lambda m: m.message_id, str),
    "message:IsRead": (lambda m: m.is_read, bool),
    "message:References": (lambda m: " ".join(m.references) or None, str),
    "message:ConversationTopic": (lambda m: m.conversation_topic, str),
    "message:From": (lambda m: m.author.email if m.author else None, str),
    "message:Sender": (lambda m: m.sender.email if m.sender else None, str),
    "message:ToRecipients": (lambda m: _emails(m.to), str),
    "message:CcRecipients": (lambda m: _emails(m.cc), str),
    "message:BccRecipients": (lambda m: _emails(m.bcc), str),
}

FOLDER_FIELDS: dict[str, tuple[Getter, type]] = {
    "folder:DisplayName": (lambda f: f.name, str),
    "folder:FolderClass": (lambda f: f.folder_class, str),
    "folder:TotalCount": (lambda f: len(f.items), int),
    "folder:ChildFolderCount": (lambda f: len(f.children), int),
    "folder:UnreadCount": (lambda f: f.unread_count, int),
}

_COMPARISONS = {
    "IsEqualTo": lambda a, b: a == b,
    "IsNotEqualTo": lambda a, b: a != b,
    "IsGreaterThan": lambda a, b: a > b,
    "IsGreaterThanOrEqualTo": lambda a, b: a >= b,
    "IsLessThan": lambda a, b: a < b,
    "IsLessThanOrEqualTo": lambda a, b: a <= b,
}


def _field_uri(elem: etree._Element) -> str:
    uri = elem.find(f"{{{TNS}}}FieldURI")
    if uri is None:
        raise EwsError("ErrorUnsupportedPathForQuery",
                       "Only FieldURI property paths are supported in sandbox restrictions and sort orders.")
    return uri.get("FieldURI", "")


def _convert(text: str, kind: type) -> Any:
    if kind is datetime:
        return parse_datetime(text)
    if kind is bool:
        return text.strip().lower() in ("true", "1")
    if kind is int:
        return int(text)
    return text.lower()


def _norm(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class Compiled:
    """A compiled restriction: ``predicate(obj) -> bool`` plus optional time bounds."""

    def __init__(self, predicate: Callable[[Any], bool], bounds: dict[str, list[tuple[str, datetime]]]) -> None:
        self.predicate = predicate
        self.bounds = bounds


def compile_restriction(restriction: etree._Element | None, fields: dict[str, tuple[Getter, type]]) -> Compiled:
    if restriction is None or len(restriction) == 0:
        return Compiled(lambda obj: True, {})
    root = restriction[0]
    predicate = _compile(root, fields)
    bounds: dict[str, list[tuple[str, datetime]]] = {}
    top = [root] if local(root.tag) != "And" else list(root)
    for node in top:
        op = local(node.tag)
        if op in ("IsGreaterThan", "IsGreaterThanOrEqualTo", "IsLessThan", "IsLessThanOrEqualTo", "IsEqualTo"):
            uri = node.find(f"{{{TNS}}}FieldURI")
            const = node.find(f"{{{TNS}}}FieldURIOrConstant/{{{TNS}}}Constant")
            if uri is not None and const is not None and uri.get("FieldURI") in (
                    "item:DateTimeReceived", "item:DateTimeSent"):
                bounds.setdefault(uri.get("FieldURI"), []).append((op, parse_datetime(const.get("Value", ""))))
    return Compiled(predicate, bounds)


def _compile(node: etree._Element, fields: dict[str, tuple[Getter, type]]) -> Callable[[Any], bool]:
    op = local(node.tag)
    if op == "And":
        parts = [_compile(c, fields) for c in node]
        return lambda obj: all(p(obj) for p in parts)
    if op == "Or":
        parts = [_compile(c, fields) for c in node]
        return lambda obj: any(p(obj) for p in parts)
    if op == "Not":
        if len(node) != 1:
            raise EwsError("ErrorInvalidRestriction")
        inner = _compile(node[0], fields)
        return lambda obj: not inner(obj)
    uri = _field_uri(node)
    if uri not in fields:
        raise EwsError("ErrorUnsupportedPathForQuery",
                       f"The property path {uri} is not supported for restrictions in the EWS sandbox.")
    getter, kind = fields[uri]
    if op == "Exists":
        return lambda obj: _exists(getter(obj))
    if op in _COMPARISONS:
        const = node.find(f"{{{TNS}}}FieldURIOrConstant/{{{TNS}}}Constant")
        if const is None:
            raise EwsError("ErrorUnsupportedQueryFilter", "Only constant comparisons are supported in the sandbox.")
        wanted = _convert(const.get("Value", ""), kind)
        compare = _COMPARISONS[op]

        def comparison(obj: Any) -> bool:
            value = getter(obj)
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v is None:
                    continue
                if compare(_norm(v), wanted):
                    return True
            return False

        return comparison
    if op == "Contains":
        const = node.find(f"{{{TNS}}}Constant")
        if const is None:
            raise EwsError("ErrorInvalidRestriction")
        mode = node.get("ContainmentMode", "FullString")
        ignore_case = "IgnoreCase" in node.get("ContainmentComparison", "Exact")
        needle = const.get("Value", "")
        if ignore_case:
            needle = needle.lower()

        def contains(obj: Any) -> bool:
            value = getter(obj)
            for v in value if isinstance(value, list) else [value]:
                if v is None:
                    continue
                v = str(v).lower() if ignore_case else str(v)
                if mode == "FullString" and v == needle:
                    return True
                if mode == "Prefixed" and v.startswith(needle):
                    return True
                if mode in ("Substring", "ExactPhrase") and needle in v:
                    return True
                if mode == "PrefixOnWords" and any(w.startswith(needle) for w in v.split()):
                    return True
            return False

        return contains
    raise EwsError("ErrorUnsupportedQueryFilter", f"The restriction element {op} is not supported by the sandbox.")


def _exists(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value)
    return value is not None and value != ""


def candidate_messages(folder: Folder, compiled: Compiled) -> list[Message]:
    """Messages of ``folder`` that may match: narrowed by the time index when bounds allow."""
    best: list[str] | None = None
    for uri, index in (("item:DateTimeReceived", folder.by_received), ("item:DateTimeSent", folder.by_sent)):
        bounds = compiled.bounds.get(uri)
        if not bounds:
            continue
        lo, hi = 0, len(index)
        for op, value in bounds:
            if op == "IsGreaterThan":
                lo = max(lo, bisect.bisect_right(index, (value, float("inf"))))
            elif op == "IsGreaterThanOrEqualTo":
                lo = max(lo, bisect.bisect_left(index, (value, -1)))
            elif op == "IsLessThan":
                hi = min(hi, bisect.bisect_left(index, (value, -1)))
            elif op == "IsLessThanOrEqualTo":
                hi = min(hi, bisect.bisect_right(index, (value, float("inf"))))
            elif op == "IsEqualTo":
                lo = max(lo, bisect.bisect_left(index, (value, -1)))
                hi = min(hi, bisect.bisect_right(index, (value, float("inf"))))
        ids = [entry[2] for entry in index[lo:hi]] if lo < hi else []
        if best is None or len(ids) < len(best):
            best = ids
    if best is None:
        return [m for m in folder.items.values() if compiled.predicate(m)]
    items = folder.items
    return [items[i] for i in best if compiled.predicate(items[i])]


def sort_items(items: list[Message], sort_order: etree._Element | None) -> list[Message]:
    """Apply ``<m:SortOrder>``; without one, newest received first (Exchange's mail view order)."""
    items = sorted(items, key=lambda m: m.seq)  # stable base order
    if sort_order is None or len(sort_order) == 0:
        return sorted(items, key=lambda m: m.received, reverse=True)
    for order in reversed(list(sort_order)):
        uri = _field_uri(order)
        if uri not in ITEM_FIELDS:
            raise EwsError("ErrorUnsupportedPathForQuery",
                           f"The property path {uri} is not supported for sort orders in the EWS sandbox.")
        getter, _ = ITEM_FIELDS[uri]
        descending = order.get("Order", "Ascending") == "Descending"

        def key(m: Message, getter: Getter = getter) -> tuple[int, Any]:
            value = getter(m)
            if isinstance(value, list):
                value = value[0] if value else None
            if value is None:
                return (0, 0)
            return (1, _norm(value))

        items.sort(key=key, reverse=descending)
    return items
