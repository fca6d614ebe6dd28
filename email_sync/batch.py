"""Staged batches: MailItems written to and read from Parquet files between pipeline steps.

Mail content must never travel through XCom or the metadata database, so each step writes
its batch to a staged file and passes only the path. Parquet keeps a 10,000-email batch
compact and is written in row groups, so neither side holds more than one group of
dict rows at a time on top of the items themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, fields
from datetime import UTC
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from email_sync.models import Address, AttachmentRef, MailItem

ROW_GROUP = 500

_ADDRESS = pa.struct([("email", pa.string()), ("name", pa.string())])
_ATTACHMENT = pa.struct([
    ("attachment_id", pa.string()), ("name", pa.string()), ("size", pa.int64()),
    ("content_type", pa.string()), ("is_inline", pa.bool_()),
])
_TS = pa.timestamp("us", tz="UTC")
MAIL_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("message_id", pa.string()), ("folder", pa.string()),
    ("subject", pa.string()), ("body", pa.large_string()), ("body_is_html", pa.bool_()),
    ("sender", _ADDRESS), ("to", pa.list_(_ADDRESS)), ("cc", pa.list_(_ADDRESS)), ("bcc", pa.list_(_ADDRESS)),
    ("sent_at", _TS), ("received_at", _TS), ("in_reply_to", pa.string()),
    ("references", pa.list_(pa.string())), ("conversation_id", pa.string()),
    ("categories", pa.list_(pa.string())), ("sensitivity", pa.string()),
    ("attachments", pa.list_(_ATTACHMENT)), ("change_key", pa.string()),
])
assert [f.name for f in fields(MailItem)] == MAIL_SCHEMA.names, "MAIL_SCHEMA must follow MailItem"


def _row(item: MailItem) -> dict[str, Any]:
    return asdict(item)


def _item(row: dict[str, Any]) -> MailItem:
    def addresses(values: list[dict[str, str]] | None) -> tuple[Address, ...]:
        return tuple(Address(**v) for v in values or ())

    def aware(value: Any) -> Any:
        return value.astimezone(UTC) if value is not None else None

    return MailItem(
        item_id=row["item_id"], message_id=row["message_id"], folder=row["folder"],
        subject=row["subject"] or "", body=row["body"] or "", body_is_html=bool(row["body_is_html"]),
        sender=Address(**row["sender"]) if row["sender"] else None,
        to=addresses(row["to"]), cc=addresses(row["cc"]), bcc=addresses(row["bcc"]),
        sent_at=aware(row["sent_at"]), received_at=aware(row["received_at"]),
        in_reply_to=row["in_reply_to"], references=tuple(row["references"] or ()),
        conversation_id=row["conversation_id"], categories=tuple(row["categories"] or ()),
        sensitivity=row["sensitivity"] or "Normal",
        attachments=tuple(AttachmentRef(**a) for a in row["attachments"] or ()),
        change_key=row["change_key"],
    )


def write_mail(path: Path, items: Iterable[MailItem]) -> int:
    """Write items to ``path`` (atomically: a crash never leaves a half file); return the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    count = 0
    with pq.ParquetWriter(tmp, MAIL_SCHEMA) as writer:
        group: list[dict[str, Any]] = []
        for item in items:
            group.append(_row(item))
            count += 1
            if len(group) == ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(group, schema=MAIL_SCHEMA))
                group = []
        if group or count == 0:
            writer.write_table(pa.Table.from_pylist(group, schema=MAIL_SCHEMA))
    tmp.replace(path)
    return count


def read_mail(path: Path) -> Iterator[MailItem]:
    """Stream items back, one row group at a time."""
    parquet = pq.ParquetFile(path)
    for index in range(parquet.num_row_groups):
        for row in parquet.read_row_group(index).to_pylist():
            yield _item(row)


def write_json(path: Path, payload: Any) -> None:
    """Small staged documents (matches, decisions): ids and reasons, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(payload, sort_keys=True))
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    """Staged rows one JSON document per line, written atomically; returns the count.

    Lines keep memory flat: readers stream one email's row at a time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True, ensure_ascii=False))
            handle.write("\n")
            count += 1
    tmp.replace(path)
    return count


def read_jsonl(path: Path) -> Iterator[Any]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
