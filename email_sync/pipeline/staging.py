"""Staged batches: MailItems written to and read from Parquet files between pipeline steps.

Mail content must never travel through XCom or the metadata database, so each step writes
its batch to a staged file and passes only the path. Parquet keeps a 10,000-email batch
compact and is written in row groups, so neither side holds more than one group of
dict rows at a time on top of the items themselves.

Task processes are kept small: pyarrow is imported on first use, so the steps that only
read JSON lines never load it, and pandas (about 45 MB of resident memory) is never loaded.
pyarrow imports pandas whenever it converts Python objects (``pa.array``, ``from_pylist``)
or turns tz-aware timestamps into datetimes, so row groups are built by Arrow's JSON reader
from the rows' JSON, and timestamps are read back as integer microseconds.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from email_sync.rules.classify import Decision
from email_sync.rules.models import Address, AttachmentRef, Direction, MailItem

if TYPE_CHECKING:
    import pyarrow as pa

ROW_GROUP = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Schemas(NamedTuple):
    mail: pa.Schema  # the staged file's
    rows: pa.Schema  # what rows are parsed into: timestamps as int64, cast to ``mail`` by Arrow
    timestamps: tuple[str, ...]


@cache
def _schemas() -> _Schemas:
    """Built on first use: importing pyarrow costs a process about 30 MB of resident memory,
    and the steps that only read JSON lines (insert, upload) never need it."""
    import pyarrow as pa

    address = pa.struct([("email", pa.string()), ("name", pa.string())])
    attachment = pa.struct([
        ("attachment_id", pa.string()), ("name", pa.string()), ("size", pa.int64()),
        ("content_type", pa.string()), ("is_inline", pa.bool_()), ("kind", pa.string()),
    ])
    ts = pa.timestamp("us", tz="UTC")
    mail = pa.schema([
        ("item_id", pa.string()), ("message_id", pa.string()), ("folder", pa.string()),
        ("subject", pa.string()), ("body", pa.large_string()), ("body_is_html", pa.bool_()),
        ("sender", address), ("to", pa.list_(address)), ("cc", pa.list_(address)), ("bcc", pa.list_(address)),
        ("sent_at", ts), ("received_at", ts), ("in_reply_to", pa.string()),
        ("references", pa.list_(pa.string())), ("conversation_id", pa.string()),
        ("categories", pa.list_(pa.string())), ("sensitivity", pa.string()),
        ("attachments", pa.list_(attachment)), ("change_key", pa.string()), ("in_sent_folder", pa.bool_()),
        ("item_class", pa.string()), ("auto_submitted", pa.string()),
    ])
    assert [f.name for f in fields(MailItem)] == mail.names, "the mail schema must follow MailItem"
    assert [f.name for f in fields(AttachmentRef)] == [f.name for f in attachment], "... and AttachmentRef"
    timestamps = tuple(f.name for f in mail if f.type == ts)
    rows = pa.schema([pa.field(f.name, pa.int64()) if f.name in timestamps else f for f in mail])
    return _Schemas(mail, rows, timestamps)


def _row(item: MailItem) -> dict[str, Any]:
    row = asdict(item)
    for name in _schemas().timestamps:
        row[name] = _micros(row[name])
    return row


def _micros(value: datetime | None) -> int | None:
    """Microseconds since the epoch; a naive datetime counts as UTC (as Arrow reads one)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """A row group as an Arrow table, parsed by Arrow from JSON lines (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    schemas = _schemas()
    if not rows:
        return pa.Table.from_batches([], schema=schemas.mail)
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    table = pa_json.read_json(
        io.BytesIO(data),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data)),
        parse_options=pa_json.ParseOptions(explicit_schema=schemas.rows, unexpected_field_behavior="error"))
    return table.cast(schemas.mail)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    """A row group as dicts, timestamps as int64 microseconds (see the module docstring)."""
    import pyarrow as pa

    for name in _schemas().timestamps:
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(pa.int64()))
    return table.to_pylist()


def _item(row: dict[str, Any]) -> MailItem:
    def addresses(values: list[dict[str, str]] | None) -> tuple[Address, ...]:
        return tuple(Address(**v) for v in values or ())

    def aware(value: int | None) -> datetime | None:
        return _EPOCH + timedelta(microseconds=value) if value is not None else None

    return MailItem(
        item_id=row["item_id"], message_id=row["message_id"], folder=row["folder"],
        subject=row["subject"] or "", body=row["body"] or "", body_is_html=bool(row["body_is_html"]),
        sender=Address(**row["sender"]) if row["sender"] else None,
        to=addresses(row["to"]), cc=addresses(row["cc"]), bcc=addresses(row["bcc"]),
        sent_at=aware(row["sent_at"]), received_at=aware(row["received_at"]),
        in_reply_to=row["in_reply_to"], references=tuple(row["references"] or ()),
        conversation_id=row["conversation_id"], categories=tuple(row["categories"] or ()),
        sensitivity=row["sensitivity"] or "Normal",
        attachments=tuple(_attachment(a) for a in row["attachments"] or ()),
        change_key=row["change_key"], in_sent_folder=bool(row["in_sent_folder"]),
        item_class=row.get("item_class") or "IPM.Note", auto_submitted=row.get("auto_submitted"),
    )


def _attachment(row: dict[str, Any]) -> AttachmentRef:
    return AttachmentRef(attachment_id=row["attachment_id"], name=row["name"], size=row["size"],
                         content_type=row["content_type"], is_inline=bool(row["is_inline"]),
                         kind=row.get("kind") or "file")


def write_mail(path: Path, items: Iterable[MailItem]) -> int:
    """Write items to ``path`` (atomically: a crash never leaves a half file); return the count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    count = 0
    pool = pa.default_memory_pool()
    with pq.ParquetWriter(tmp, _schemas().mail) as writer:
        group: list[dict[str, Any]] = []
        for item in items:
            group.append(_row(item))
            count += 1
            if len(group) == ROW_GROUP:
                writer.write_table(_table(group))
                group = []
                pool.release_unused()
        if group or count == 0:
            writer.write_table(_table(group))
    tmp.replace(path)
    return count


def read_mail(path: Path) -> Iterator[MailItem]:
    """Stream items back, one row group at a time.

    Decoded on this thread (Arrow's decoding threads each keep allocator arenas), and the
    Arrow pool's freed memory is handed back after every group: its allocator otherwise
    keeps it, and resident memory would grow with the file, not with the group.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    pool = pa.default_memory_pool()
    for index in range(parquet.num_row_groups):
        rows = _rows(parquet.read_row_group(index, use_threads=False))
        pool.release_unused()
        for row in rows:
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


def without_fields(path: Path) -> Iterator[dict[str, Any]]:
    """Staged Task rows (``tasks.jsonl``) without the Tasks' Salesforce fields: what bookkeeping needs."""
    for row in read_jsonl(path):
        row["tasks"] = [{k: v for k, v in task.items() if k != "fields"} for task in row["tasks"]]
        yield row


def encode_candidate(key: str, item_id: str, decision: Decision, task_id: str | None = None) -> dict[str, Any]:
    """A filter decision as a ``candidates.jsonl`` row (no mail content: addresses and flags)."""
    return {"message_key": key, "item_id": item_id, "task_id": task_id,
            "direction": decision.direction.value if decision.direction else None,
            "participants": list(decision.participants), "designated": decision.designated,
            "is_reply": decision.is_reply, "record_attachments": decision.record_attachments,
            "email_at": decision.email_at.isoformat() if decision.email_at else None}


def decode_candidate(candidate: dict[str, Any]) -> Decision:
    """The decision a ``candidates.jsonl`` row carries (:func:`encode_candidate` reversed)."""
    return Decision(
        None,
        Direction(candidate["direction"]) if candidate["direction"] else None,
        tuple(candidate["participants"]),
        candidate["designated"],
        candidate["is_reply"],
        candidate["record_attachments"],
        datetime.fromisoformat(candidate["email_at"]) if candidate["email_at"] else None,
    )
