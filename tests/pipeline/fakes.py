"""In-memory fakes of the two interfaces the run steps are written against.

- :class:`FakeMailbox` is a mailbox's contents (folders of :class:`MailItem`/:class:`Unreadable`,
  attachment contents) and the log of every call any source over it received;
  :class:`FakeMailSource` is one connection to it (a :class:`MailSource`, ``kind = "ews"``)
  with its own by-operation request counts, as each step opens its own source.
- :class:`FakeOrg` is a Salesforce org (Contacts, Leads, Tasks by external key, TaskRelations,
  Files, refusals and injected failures) and the log of every call; :class:`FakeCrm` is one
  client over it (the :class:`Crm` protocol) with its own ``calls``.
- :class:`Factory` is what the steps receive (``source`` / ``crm`` callables): it counts how
  often a step opened one and keeps every instance it made.

Nothing here talks to a network; behaviour follows the real adapters' documented contracts
(``email_sync/sources/ews.py``, ``email_sync/crm/salesforce.py``) where the steps rely on it.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from email_sync.crm.base import FileUpload, RecordResult
from email_sync.errors import BudgetExhausted, SetupProblem
from email_sync.rules.classify import is_outbound_folder
from email_sync.rules.keys import IDEMPOTENCY_FIELD
from email_sync.rules.models import MailItem, Unreadable
from email_sync.sources.base import CategoryTarget, Folder, FolderRead, MailSource, ReadResult

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One call a fake received: the method's name and its arguments (iterables as lists)."""

    name: str
    args: tuple[Any, ...]


class Factory(Generic[T]):
    """A step's ``source``/``crm`` argument: makes a fresh instance per call and remembers it."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self.made: list[T] = []

    def __call__(self) -> T:
        instance = self._make()
        self.made.append(instance)
        return instance

    @property
    def opened(self) -> int:
        return len(self.made)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# -- the mail source ------------------------------------------------------------------------------
class FakeMailbox:
    """A mailbox: folder path → its items, attachment id → content (or the exception serving it raises).

    Items are given as the mailbox holds them; a read returns them with ``folder`` and
    ``in_sent_folder`` set from the folder they were read from, as a real source does.
    ``refuse_category`` holds item ids whose category write the server refuses.
    """

    def __init__(self, folders: Mapping[str, Sequence[ReadResult]] | None = None,
                 attachments: Mapping[str, bytes | Exception] | None = None) -> None:
        self.folders: dict[str, list[ReadResult]] = {k: list(v) for k, v in (folders or {}).items()}
        self.attachments: dict[str, bytes | Exception] = dict(attachments or {})
        self.refuse_category: set[str] = set()
        self.calls: list[Call] = []

    def connect(self) -> FakeMailSource:
        return FakeMailSource(self)

    def add(self, folder: str, *items: ReadResult) -> None:
        self.folders.setdefault(folder, []).extend(items)

    def calls_to(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def item(self, item_id: str) -> MailItem | None:
        for items in self.folders.values():
            for item in items:
                if isinstance(item, MailItem) and item.item_id == item_id:
                    return item
        return None

    def _replace_item(self, item_id: str, new: MailItem) -> None:
        for items in self.folders.values():
            for index, item in enumerate(items):
                if isinstance(item, MailItem) and item.item_id == item_id:
                    items[index] = new


class FakeMailSource(MailSource):
    """One connection to a :class:`FakeMailbox`; requests are counted per connection."""

    kind: ClassVar[str] = "ews"

    def __init__(self, mailbox: FakeMailbox) -> None:
        self.mailbox = mailbox
        self._requests: Counter[str] = Counter()

    def _log(self, name: str, *args: Any) -> None:
        self.mailbox.calls.append(Call(name, args))

    @property
    def requests(self) -> Mapping[str, int]:
        return dict(sorted(self._requests.items()))

    def resolve_folders(self, paths: Sequence[str], sent_folders: Sequence[str] = ()) -> list[Folder]:
        self._log("resolve_folders", list(paths), list(sent_folders))
        self._requests["GetFolder"] += 1
        resolved = []
        for path in paths:
            if path not in self.mailbox.folders:
                raise SetupProblem(f"folder {path!r} not found in the mailbox: fix the job's folders")
            resolved.append(Folder(path, f"folder-id:{path}", is_outbound_folder(path, ("Sent Items", *sent_folders))))
        return resolved

    def read_folder(self, folder: Folder, start: datetime, end: datetime, cursor: str | None) -> FolderRead:
        """Items with ``start < time <= end`` (sent time in sent folders, else received), like EWS:
        a cursor (the time the folder is synced through) can only widen the start; the new
        cursor is ``end`` as ISO text. Unreadable entries are returned on every read."""
        self._log("read_folder", folder, start, end, cursor)
        self._requests["FindItem"] += 1
        if cursor is not None:
            start = min(start, datetime.fromisoformat(cursor))
        snapshot = list(self.mailbox.folders.get(folder.path, ()))

        def items() -> Iterator[ReadResult]:
            for entry in snapshot:
                if isinstance(entry, Unreadable):
                    yield entry
                    continue
                when = (entry.sent_at if folder.is_sent else entry.received_at) or entry.sent_at or entry.received_at
                if when is not None and start < when <= end:
                    yield replace(entry, folder=folder.path, in_sent_folder=folder.is_sent)

        return FolderRead(items(), cursor=end.astimezone(UTC).isoformat())

    def fetch(self, refs: Iterable[tuple[str, Folder]]) -> Iterator[ReadResult]:
        refs = list(refs)
        self._log("fetch", refs)
        if refs:
            self._requests["GetItem"] += 1
        results: list[ReadResult] = []
        for item_id, folder in refs:
            item = self.mailbox.item(item_id)
            results.append(item if item is not None else Unreadable(item_id, folder.path, "ews_error:ErrorItemNotFound"))
        return iter(results)

    def attachment_contents(self, attachment_ids: Sequence[str]) -> list[bytes | Exception]:
        ids = list(attachment_ids)
        self._log("attachment_contents", ids)
        if not ids:
            return []
        self._requests["GetAttachment"] += 1
        return [self.mailbox.attachments.get(i, KeyError(f"no attachment {i}")) for i in ids]

    def find_by_message_id(self, folders: Sequence[Folder], message_ids: Sequence[str]) -> dict[str, list[CategoryTarget]]:
        self._log("find_by_message_id", [f.path for f in folders], list(message_ids))
        wanted, paths = set(message_ids), {f.path for f in folders}
        found: dict[str, list[CategoryTarget]] = {}
        for path, items in self.mailbox.folders.items():
            for item in items:
                if path in paths and isinstance(item, MailItem) and item.message_id in wanted:
                    found.setdefault(item.message_id, []).append(
                        CategoryTarget(item.item_id, item.change_key, item.categories))
        return found

    def add_category(self, items: Iterable[CategoryTarget], category: str) -> list[str]:
        targets = list(items)
        self._log("add_category", targets, category)
        done = []
        if targets:
            self._requests["UpdateItem"] += 1
        for target in targets:
            item = self.mailbox.item(target.item_id)
            if item is None or target.item_id in self.mailbox.refuse_category:
                continue
            if not any(c.lower() == category.lower() for c in item.categories):
                self.mailbox._replace_item(target.item_id, replace(item, categories=(*item.categories, category)))
            done.append(target.item_id)
        return done


# -- the CRM -------------------------------------------------------------------------------------
TASK_DESCRIBE: list[dict[str, Any]] = [
    {"name": "Id", "length": 18, "byteLength": 18, "externalId": False, "type": "id"},
    {"name": "Subject", "length": 255, "byteLength": 765, "externalId": False, "type": "combobox"},
    {"name": "Description", "length": 32000, "byteLength": 96000, "externalId": False, "type": "textarea"},
    {"name": "Status", "length": 40, "byteLength": 120, "externalId": False, "type": "picklist"},
    {"name": IDEMPOTENCY_FIELD, "length": 40, "byteLength": 120, "externalId": True, "type": "string"},
]

_FROM = re.compile(r"\bFROM\s+(\w+)", re.IGNORECASE)
_SELECT = re.compile(r"^\s*SELECT\s+(.*?)\s+FROM\b", re.IGNORECASE | re.DOTALL)
_IN_LIST = re.compile(r"\b(\w+)\s+IN\s+\(((?:'(?:[^'\\]|\\.)*'(?:,\s*)?)*)\)", re.IGNORECASE)
_LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'")
_OWNER = re.compile(r"\bOwnerId\s*=\s*'((?:[^'\\]|\\.)*)'", re.IGNORECASE)


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t", "f": "\f"}.get(m.group(1), m.group(1)), literal)


@dataclass
class FakeOrg:
    """A Salesforce org in memory, shared by every :class:`FakeCrm` client over it.

    ``contacts``/``leads`` are records as SOQL would return them (``Id``, ``CreatedDate``,
    email fields, optionally ``OwnerId``/``IsConverted``). ``tasks`` are kept by external key
    (``Email_Sync_Key__c``); ``relations`` by (task id, contact id); ``files`` as
    ContentVersion rows (plus ``key`` and ``content``).
    """

    contacts: list[dict[str, Any]] = field(default_factory=list)
    leads: list[dict[str, Any]] = field(default_factory=list)
    describe: list[dict[str, Any]] = field(default_factory=lambda: [dict(f) for f in TASK_DESCRIBE])
    users: dict[str, str] = field(default_factory=dict)  # username → User Id
    usage: tuple[int, int] | None = (1_000, 100_000)  # (used, max) of the daily API allowance
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    relations: dict[tuple[str, str], str] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    refused_tasks: dict[str, tuple[str, str]] = field(default_factory=dict)  # key → (code, message)
    refused_files: dict[str, tuple[str, str]] = field(default_factory=dict)  # attachment key → (code, message)
    refused_relations: dict[str, tuple[str, str]] = field(default_factory=dict)  # contact id → (code, message)
    failures: dict[str, list[tuple[BaseException, bool]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def connect(self) -> FakeCrm:
        return FakeCrm(self)

    def calls_to(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def refuse_task(self, key: str, code: str, message: str) -> None:
        """Answer the Task with this external key with a per-record error."""
        self.refused_tasks[key] = (code, message)

    def refuse_file(self, attachment_key: str, code: str, message: str) -> None:
        self.refused_files[attachment_key] = (code, message)

    def refuse_relation(self, contact_id: str, code: str, message: str) -> None:
        """Answer every TaskRelation to this Contact with a per-record error."""
        self.refused_relations[contact_id] = (code, message)

    def fail_next(self, method: str, error: BaseException, *, applied: bool = False) -> None:
        """Make the next call of ``method`` raise ``error``; ``applied``: after doing its work
        (Salesforce did it, the answer was lost)."""
        self.failures.setdefault(method, []).append((error, applied))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):012d}AAA"

    def task_by_id(self, task_id: str) -> dict[str, Any] | None:
        return next((t for t in self.tasks.values() if t["Id"] == task_id), None)


class FakeCrm:
    """One client over a :class:`FakeOrg`: the ``Crm`` protocol, ``calls`` counting its API calls."""

    def __init__(self, org: FakeOrg) -> None:
        self.org = org
        self.calls = 0

    def _log(self, name: str, *args: Any) -> tuple[BaseException, bool] | None:
        self.org.calls.append(Call(name, args))
        pending = self.org.failures.get(name)
        failure = pending.pop(0) if pending else None
        if failure is not None and not failure[1]:
            raise failure[0]
        return failure

    @staticmethod
    def _after(failure: tuple[BaseException, bool] | None) -> None:
        if failure is not None:
            raise failure[0]

    # -- reading --------------------------------------------------------------------------------
    def query_each(self, statements: Sequence[str]) -> list[list[dict[str, Any]]]:
        """Answers the match lookups: records of the queried object whose queried email
        fields hold one of the statement's quoted addresses, with the selected columns."""
        statements = list(statements)
        failure = self._log("query_each", statements)
        self.calls += _ceil_div(len(statements), 5)  # Composite: five query subrequests per call
        answers = [self._answer(s) for s in statements]
        self._after(failure)
        return answers

    def _answer(self, statement: str) -> list[dict[str, Any]]:
        sobject = _FROM.search(statement).group(1)  # type: ignore[union-attr]
        columns = [c.strip() for c in _SELECT.search(statement).group(1).split(",")]  # type: ignore[union-attr]
        records = {"Contact": self.org.contacts, "Lead": self.org.leads}.get(sobject)
        if records is None:
            raise AssertionError(f"the fake org cannot answer {statement!r}")
        wanted: dict[str, set[str]] = {}
        for fname, in_list in _IN_LIST.findall(statement):
            wanted.setdefault(fname, set()).update(_unquote(v).lower() for v in _LITERAL.findall(in_list))
        owner = _OWNER.search(statement)
        rows = []
        for record in records:
            if owner and record.get("OwnerId") != _unquote(owner.group(1)):
                continue
            if sobject == "Lead" and "IsConverted = false" in statement and record.get("IsConverted"):
                continue
            if any(str(record.get(f) or "").lower() in values for f, values in wanted.items()):
                rows.append({c: record.get(c) for c in columns})
        return rows

    def describe_fields(self, sobject: str) -> list[dict[str, Any]]:
        failure = self._log("describe_fields", sobject)
        self.calls += 1
        if sobject != "Task":
            raise AssertionError(f"the fake org describes Task only, not {sobject}")
        self._after(failure)
        return [dict(f) for f in self.org.describe]

    def user_id(self, user: str) -> str:
        failure = self._log("user_id", user)
        self.calls += 1
        self._after(failure)
        if user not in self.org.users:
            raise SetupProblem(f"Salesforce user {user!r} not found: fix the job's salesforce_user")
        return self.org.users[user]

    # -- API allowance --------------------------------------------------------------------------
    def check_budget(self, needed_calls: int, reserve: int, known: tuple[int, int] | None = None) -> None:
        failure = self._log("check_budget", needed_calls, reserve, known)
        self._after(failure)
        usage = self.org.usage or (tuple(known) if known else None)
        if needed_calls > 0 and usage is not None and usage[1] - usage[0] - needed_calls < reserve:
            raise BudgetExhausted(f"{usage[1] - usage[0]} calls left, {needed_calls} needed, {reserve} reserved")

    def api_usage(self) -> tuple[int, int] | None:
        return self.org.usage

    # -- Tasks ----------------------------------------------------------------------------------
    def upsert_tasks(self, records: Iterable[tuple[str, Mapping[str, Any]]]) -> list[RecordResult]:
        rows = [(key, dict(fields)) for key, fields in records]  # one pass: records may be a stream
        failure = self._log("upsert_tasks", rows)
        self.calls += _ceil_div(len(rows), 200)
        results = []
        for key, fields in rows:
            if fields.get(IDEMPOTENCY_FIELD) != key:
                raise AssertionError(f"Task {key} does not carry its key in {IDEMPOTENCY_FIELD}")
            if key in self.org.refused_tasks:
                code, message = self.org.refused_tasks[key]
                results.append(RecordResult(key, None, False, code, message))
                continue
            existing = self.org.tasks.get(key)
            if existing is None:
                self.org.tasks[key] = {**fields, "Id": self.org.new_id("00T")}
                results.append(RecordResult(key, self.org.tasks[key]["Id"], True))
            else:
                existing.update(fields)
                results.append(RecordResult(key, existing["Id"], False))
        self._after(failure)
        return results

    def ensure_task_relations(self, pairs: Mapping[str, Sequence[str]], *,
                              check_existing: bool) -> list[RecordResult]:
        wanted = list(dict.fromkeys((t, c) for t, cs in pairs.items() for c in cs))
        failure = self._log("ensure_task_relations", {t: list(cs) for t, cs in pairs.items()}, check_existing)
        if not wanted:
            return []
        self.calls += (1 if check_existing else 0) + _ceil_div(len(wanted), 200)
        results = []
        for task_id, contact_id in wanted:
            found = self.org.relations.get((task_id, contact_id))
            if found is not None:
                results.append(RecordResult(f"{task_id}:{contact_id}", found, False))
                continue
            if contact_id in self.org.refused_relations:
                code, message = self.org.refused_relations[contact_id]
                results.append(RecordResult(f"{task_id}:{contact_id}", None, False, code, message))
                continue
            self.org.relations[(task_id, contact_id)] = self.org.new_id("0RT")
            results.append(RecordResult(f"{task_id}:{contact_id}", self.org.relations[(task_id, contact_id)], True))
        self._after(failure)
        return results

    def find_tasks(self, keys: Sequence[str]) -> dict[str, str]:
        wanted = list(keys)
        failure = self._log("find_tasks", wanted)
        self.calls += 1 if wanted else 0
        self._after(failure)
        return {k: self.org.tasks[k]["Id"] for k in wanted if k in self.org.tasks}

    # -- Files ----------------------------------------------------------------------------------
    def find_files(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        ids = list(task_ids)
        failure = self._log("find_files", ids)
        self.calls += 1 if ids else 0
        self._after(failure)
        return [{k: f[k] for k in ("Id", "ContentDocumentId", "PathOnClient", "ContentSize", "FirstPublishLocationId")}
                for f in self.org.files if f["FirstPublishLocationId"] in ids]

    def upload_files(self, files: Sequence[FileUpload]) -> list[RecordResult]:
        uploads = list(files)
        failure = self._log("upload_files", uploads)
        self.calls += _ceil_div(len(uploads), 200)
        results = []
        for upload in uploads:
            if upload.key in self.org.refused_files:
                code, message = self.org.refused_files[upload.key]
                results.append(RecordResult(upload.key, None, False, code, message))
                continue
            version = {"Id": self.org.new_id("068"), "ContentDocumentId": self.org.new_id("069"),
                       "PathOnClient": upload.filename, "ContentSize": len(upload.content),
                       "FirstPublishLocationId": upload.task_id, "key": upload.key, "content": upload.content,
                       "content_type": upload.content_type}
            self.org.files.append(version)
            results.append(RecordResult(upload.key, version["Id"], True))
        self._after(failure)
        return results
