"""The mail-source interface: what the run steps need from a mailbox, whatever serves it.

A source (EWS today, Microsoft Graph next) turns a mailbox's folders into
:class:`~email_sync.rules.models.MailItem` values (or
:class:`~email_sync.rules.models.Unreadable` for an item it could not read), serves
attachment contents, writes the CRM category back, and counts its requests by operation.
The steps never see the library behind it; errors leave a source already translated into
:mod:`email_sync.errors`. ``tests/sources/`` is the contract every source must pass.

Incremental state is per (job, folder): :meth:`MailSource.read_folder` takes the folder's
cursor from the last finished run and hands back the cursor to store when this run
finishes; what a cursor means is the source's own business (EWS: the time the folder is
synced through; Graph: a deltaLink). The caller stores it only when the run ends well, so
a failed run re-reads from the old cursor and loses nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from email_sync.rules.models import MailItem, Unreadable

ReadResult = MailItem | Unreadable


@dataclass(frozen=True, slots=True)
class Folder:
    """A configured folder path as the source resolved it.

    ``is_sent`` is decided here, once, by the source from the folder's identity (the
    mailbox's own Sent Items, whatever its localised name, and every folder below it) or
    because the admin declared the path outbound (``org.sent_folders``). Classification
    reads it from each item (``MailItem.in_sent_folder``) and extraction picks the time
    that orders the folder (sent time in a sent folder, received time elsewhere) from it.
    """

    path: str
    folder_id: str
    is_sent: bool


@dataclass(frozen=True, slots=True)
class CategoryTarget:
    """An item to mark with the CRM category: its id and the version the caller last saw."""

    item_id: str
    change_key: str | None
    categories: tuple[str, ...]


class FolderRead:
    """One folder's mail for one run: iterate it, then read :attr:`cursor`.

    The cursor is known only once the iteration is complete (a delta round ends with its
    deltaLink); reading it earlier is a programming error.
    """

    def __init__(self, items: Iterator[ReadResult], cursor: str | None = None) -> None:
        self._items = items
        self._cursor = cursor
        self._done = False

    def __iter__(self) -> Iterator[ReadResult]:
        yield from self._items
        self._done = True

    @property
    def cursor(self) -> str | None:
        if not self._done:
            raise RuntimeError("a folder's cursor is known only after all its items were read")
        return self._cursor


class RequestCounter:
    """Requests one source instance sent, by operation (retries included)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def add(self, operation: str) -> None:
        self._counts[operation] += 1

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))


class MailSource(ABC):
    """A mailbox the sync reads from and writes its category to."""

    kind: ClassVar[str]  # the job setting ``source`` that selects it

    @abstractmethod
    def resolve_folders(self, paths: Sequence[str], sent_folders: Sequence[str] = ()) -> list[Folder]:
        """Each configured path as a :class:`Folder`, in order.

        ``sent_folders`` are paths the admin declares outbound besides Sent Items. A path
        that does not exist raises :class:`~email_sync.errors.SetupProblem` naming it.
        """

    @abstractmethod
    def read_folder(self, folder: Folder, start: datetime, end: datetime, cursor: str | None) -> FolderRead:
        """The folder's mail with ``start < time <= end`` (sent time in sent folders, else received).

        With a ``cursor`` from an earlier run the source may read only what changed since;
        it never returns less than ``(start, end]`` asks for, and a caller that passes no
        cursor (a backfill) gets exactly that interval.
        """

    @abstractmethod
    def fetch(self, refs: Iterable[tuple[str, Folder]]) -> Iterator[ReadResult]:
        """Re-read items by id (earlier runs' failures): one result per ``(item_id, folder)``."""

    @abstractmethod
    def attachment_contents(self, attachment_ids: Sequence[str]) -> list[bytes | Exception]:
        """Contents of these attachments, in order; one that cannot be served is its exception.

        The caller bounds the bytes asked for at once (one batch in memory).
        """

    @abstractmethod
    def add_category(self, items: Iterable[CategoryTarget], category: str) -> list[str]:
        """Add ``category`` to each item, keeping every other category it has.

        Returns the ids that now carry it (also those that already did); an item the
        server refused is left out, so the caller tries it again in a later run.
        """

    @abstractmethod
    def find_by_message_id(self, folders: Sequence[Folder], message_ids: Sequence[str]) -> dict[str, list[CategoryTarget]]:
        """Every copy of these emails in these folders, by Message-ID (an email moved since it
        was read: its old item id no longer finds it). Message-IDs not found are left out."""

    @property
    @abstractmethod
    def requests(self) -> Mapping[str, int]:
        """Requests this source instance sent so far, by operation."""
