"""Seeding the EWS sandbox: a compact YAML/JSON description and RFC 822 ``.eml`` files.

Seed description (YAML or JSON)::

    accounts:
      - username: alice              # Basic auth user (DOMAIN\\alice, the UPN or the address also work)
        password: secret
        email: alice@example.com     # primary SMTP address (alias: smtp_address); gets a mailbox
        name: Alice Example
      - username: svc-sync
        password: s3rvice
        email: svc-sync@example.com
        impersonation: true          # ApplicationImpersonation role: may impersonate any mailbox
        delegate_for: [shared@example.com]   # may open these mailboxes as a delegate
    mailboxes:
      alice@example.com:
        delegates: [bob]             # usernames/addresses that may open this mailbox
        folders:                     # paths below Top of Information Store
          Inbox:
            - subject: Quote
              from: Carol Client <carol@client.example>
              to: [alice@example.com]
              cc: []
              bcc: []
              sent: 2024-05-02T09:00:00Z
              received: 2024-05-02T09:00:05Z
              body: <p>Hello</p>
              body_type: HTML          # Text (default for plain bodies) or HTML
              message_id: <q1@client.example>
              in_reply_to: <q0@alice.example>
              references: [<q0@alice.example>]
              categories: [Salesforce]
              sensitivity: Normal
              attachments:
                - {name: quote.pdf, size: 8000000}             # synthetic bytes, made on fetch
                - {name: note.txt, content: "hello"}
                - {name: logo.png, content_b64: iVBORw0..., is_inline: true, content_id: logo@x}
            - eml: mails/reply.eml     # an RFC 822 file, relative to the seed file
          Inbox/Clients: []
          Sent Items:
            generate: {count: 500, start: 2024-05-01T00:00:00Z, step_seconds: 300, outbound: true}

``.eml`` parsing uses the standard library: the HTML part (else the text part) is the body;
other leaf parts are attachments, inline when they have a ``Content-ID`` or an ``inline``
disposition; an attached email (``message/rfc822``) becomes an item attachment, as Exchange
stores it; ``Keywords`` become categories; the ``Date`` header is the sent time and the
newest ``Received`` header (else ``Date``) the received time.

Other message keys: ``item_class`` (default ``IPM.Note``; ``IPM.Schedule.Meeting.Request``,
``REPORT.IPM.Note.NDR``, ``IPM.Appointment``, ... are served as Exchange serves them:
``t:MeetingRequest``, ``t:Message``, ``t:CalendarItem``), ``headers`` (``[[name, value], ...]``,
added to the made ones, e.g. ``[[Auto-Submitted, auto-replied]]``; they also make the item's
PR_TRANSPORT_MESSAGE_HEADERS). An item attachment is ``{item: {...message fields or eml:...},
name: ...}``.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
from datetime import datetime
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Any

from sandbox.ews.store import Addr, Store

_SENSITIVITY = {"personal": "Personal", "private": "Private", "company-confidential": "Confidential",
                "confidential": "Confidential"}
_IMPORTANCE = {"high": "High", "low": "Low", "normal": "Normal", "1": "High", "2": "High", "3": "Normal",
               "4": "Low", "5": "Low"}


def read_seed_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def load_file(store: Store, path: str | Path) -> None:
    load_seed(store, read_seed_file(path), base_dir=Path(path).parent)


def load_seed(store: Store, data: dict[str, Any], *, base_dir: str | Path | None = None) -> None:
    base = Path(base_dir) if base_dir else Path.cwd()
    unknown = set(data) - {"accounts", "mailboxes"}
    if unknown:
        raise ValueError(f"unknown seed section(s): {sorted(unknown)}")
    for spec in data.get("accounts") or []:
        spec = dict(spec)
        email_addr = None
        for key in ("email", "smtp_address", "primary_smtp_address", "smtp"):
            email_addr = spec.pop(key, None) or email_addr
        store.add_account(
            spec.pop("username"), str(spec.pop("password")), email_addr, name=spec.pop("name", ""),
            impersonation=bool(spec.pop("impersonation", spec.pop("can_impersonate", False))),
            delegate_for=spec.pop("delegate_for", None) or (),
        )
        if spec:
            raise ValueError(f"unknown account field(s): {sorted(spec)}")
    for address, spec in (data.get("mailboxes") or {}).items():
        spec = spec or {}
        store.add_mailbox(address, name=spec.get("name", ""), delegates=spec.get("delegates") or ())
        for path, content in (spec.get("folders") or {}).items():
            store.add_folder(address, path)
            if isinstance(content, dict):
                messages = content.get("messages") or []
                generate = content.get("generate")
            else:
                messages, generate = content or [], None
            for message in messages:
                store.add_message(address, path, **_resolved(message, base))
            if generate:
                generate = dict(generate)
                store.add_synthetic(address, path, int(generate.pop("count")), start=generate.pop("start"),
                                    **generate)


def _resolved(message: dict[str, Any], base: Path) -> dict[str, Any]:
    """Message fields with ``eml:`` files read (the message's own, and its attached items')."""
    message = dict(message)
    eml_path = message.pop("eml", None)
    if eml_path is not None:
        fields = parse_eml((base / eml_path).read_bytes())
        fields.update(message)  # explicit fields override what the file says
        message = fields
    if message.get("attachments"):
        message["attachments"] = [
            {**att, "item": _resolved(att["item"], base)} if isinstance(att, dict) and att.get("item") else att
            for att in message["attachments"]]
    return message


def load_eml_dir(store: Store, directory: str | Path, mailbox: str, folder: str = "Inbox") -> list[str]:
    """Add every ``*.eml`` in ``directory`` (sorted by name) to ``mailbox``/``folder``."""
    ids = []
    for path in sorted(Path(directory).glob("*.eml")):
        ids.append(store.add_message(mailbox, folder, **parse_eml(path.read_bytes())))
    return ids


def parse_eml(raw: bytes) -> dict[str, Any]:
    """Message fields (as :meth:`Store.add_message` takes them) from an RFC 822 message."""
    msg: EmailMessage = email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[assignment]
    html_part = msg.get_body(preferencelist=("html",))
    text_part = msg.get_body(preferencelist=("plain",))
    body_part = html_part or text_part
    fields: dict[str, Any] = {
        "subject": str(msg.get("Subject", "") or ""),
        "body": body_part.get_content() if body_part is not None else "",
        "body_type": "HTML" if body_part is not None and body_part is html_part else "Text",
        "mime": raw,
        "headers": [(k, str(v)) for k, v in msg.items()],
    }
    for header, name in (("From", "from"), ("Sender", "sender")):
        addrs = _addresses(msg, header)
        if addrs:
            fields[name] = addrs[0]
    for header, name in (("To", "to"), ("Cc", "cc"), ("Bcc", "bcc"), ("Reply-To", "reply_to")):
        addrs = _addresses(msg, header)
        if addrs:
            fields[name] = addrs
    sent = _date(msg.get("Date"))
    received = None
    for value in msg.get_all("Received") or []:
        when = _date(str(value).rsplit(";", 1)[-1]) if ";" in str(value) else None
        if when is not None:
            received = when
            break  # the topmost Received header is the last hop: delivery to this mailbox
    if sent is not None:
        fields["sent"] = sent
    fields["received"] = received or sent
    if fields["received"] is None:
        del fields["received"]
    for header, name in (("Message-ID", "message_id"), ("In-Reply-To", "in_reply_to")):
        value = msg.get(header)
        if value:
            fields[name] = str(value).strip()
    if msg.get("References"):
        fields["references"] = str(msg.get("References")).split()
    keywords = msg.get("Keywords")
    if keywords:
        fields["categories"] = [k.strip() for k in str(keywords).split(",") if k.strip()]
    sensitivity = _SENSITIVITY.get(str(msg.get("Sensitivity", "")).strip().lower())
    if sensitivity:
        fields["sensitivity"] = sensitivity
    if msg.get("Importance"):
        importance = _IMPORTANCE.get(str(msg.get("Importance")).strip().lower())
    else:  # X-Priority: 1 (Highest) ... 5 (Lowest)
        importance = _IMPORTANCE.get(str(msg.get("X-Priority", "")).strip()[:1])
    if importance:
        fields["importance"] = importance
    attachments: list[dict[str, Any]] = []
    for part in _leaf_parts(msg):
        if part is html_part or part is text_part:
            continue
        disposition = (part.get_content_disposition() or "").lower()
        content_id = str(part.get("Content-ID", "") or "").strip().strip("<>") or None
        if part.get_content_type() == "message/rfc822":  # an attached email: Exchange makes it an ItemAttachment
            inner = part.get_payload()[0]
            item = parse_eml(inner.as_bytes(policy=email.policy.default))
            attachments.append({"item": item, "name": part.get_filename() or item["subject"] or None,
                                "is_inline": disposition == "inline", "content_id": content_id})
            continue
        payload = part.get_payload(decode=True) or b""
        is_inline = disposition == "inline" or (content_id is not None and disposition != "attachment")
        name = part.get_filename() or (content_id or f"attachment{len(attachments) + 1}")
        attachments.append({"name": name, "content_b64": base64.b64encode(payload).decode("ascii"),
                            "content_type": part.get_content_type(), "is_inline": is_inline,
                            "content_id": content_id})
    if attachments:
        fields["attachments"] = attachments
    return fields


def _leaf_parts(part: Any) -> Any:
    """The leaf parts of a message, an attached message (``message/rfc822``) counting as one leaf."""
    if part.get_content_type() == "message/rfc822" and part.is_multipart():
        yield part
    elif part.is_multipart():
        for sub in part.get_payload():
            yield from _leaf_parts(sub)
    else:
        yield part


def _addresses(msg: EmailMessage, header: str) -> list[Addr]:
    values = msg.get_all(header) or []
    return [Addr(email=e, name=n) for n, e in getaddresses([str(v) for v in values]) if e]


def _date(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(str(value).strip())
    except (TypeError, ValueError):
        return None
