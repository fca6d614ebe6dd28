"""Worlds for the mail-source contract: a sandboxed mailbox, a fresh source over it, and the user's hands.

``test_contract.py`` runs every case once per entry of :data:`WORLDS`. A world is what a
source needs to be tested as the sync uses it, without knowing which server is behind it:

- ``mailbox``: the mailbox owner's SMTP address.
- ``source``: a :class:`~email_sync.sources.base.MailSource` over that mailbox, made on
  first use; ``new_source()`` makes another, separate instance.
- ``seed(folders) -> {folder path: [item id, ...]}``: adds mail given as the ``folders``
  section of one mailbox in the sandbox seed format (``sandbox/ews/seed.py``,
  docs/sandbox_ews.md): ``{"Inbox": [{"subject": ..., "from": ..., "received": ...}, ...],
  "Inbox/Clients": []}``. Folders are created on demand; ids come back per folder in the
  order the entries were given. ``add_message(folder_path, **entry)`` is one entry.
- ``delete_message(item_id)``: the user deletes the item (its id stops existing).
- ``categories_of(item_id)`` / ``set_categories(item_id, [...])``: the item's categories
  read or changed in the server's store, as the user would in Outlook.
- ``server_requests() -> {operation: count}``: what the server counted since it started
  (API requests only; take deltas).
- ``break_attachment(attachment_id)``: the server can no longer serve this attachment's
  content (metadata still listed); a world whose server cannot do that calls
  ``pytest.skip`` with the reason.
- ``localise_sent_items(display_name)``: the mailbox's own Sent Items now shows under a
  localised display name (e.g. a German mailbox).

A Graph source is added by writing a ``graph_world`` fixture that yields such an object
and adding ``"graph"`` to :data:`WORLDS`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any, Protocol

import pytest

from email_sync.sources.base import MailSource

# source kind -> the fixture that yields its world. One entry per source under contract.
WORLDS = {"ews": "ews_world"}


class SourceWorld(Protocol):
    """What a contract case may use (see the module docstring)."""

    mailbox: str

    @property
    def source(self) -> MailSource: ...

    def new_source(self) -> MailSource: ...

    def seed(self, folders: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[str]]: ...

    def add_message(self, folder_path: str, **fields: Any) -> str: ...

    def delete_message(self, item_id: str) -> None: ...

    def categories_of(self, item_id: str) -> list[str]: ...

    def set_categories(self, item_id: str, categories: list[str]) -> None: ...

    def server_requests(self) -> dict[str, int]: ...

    def break_attachment(self, attachment_id: str) -> None: ...

    def localise_sent_items(self, display_name: str) -> None: ...


@pytest.fixture(params=sorted(WORLDS))
def source_world(request: pytest.FixtureRequest) -> SourceWorld:
    """The world of each source kind under contract (one fresh mailbox per test)."""
    return request.getfixturevalue(WORLDS[request.param])


# -- EWS: EwsMailSource over real exchangelib against the EWS sandbox ---------------------------

_PASSWORD = "contract-pw"
_mailbox_numbers = itertools.count(1)


class EwsWorld:
    """A fresh mailbox (its own account) in a shared EWS sandbox, read by EwsMailSource."""

    def __init__(self, sandbox: Any) -> None:
        from exchangelib import BASIC, Build, Configuration, Credentials, Version
        from exchangelib.protocol import Protocol

        from email_sync.sources.ews import instrument
        from sandbox.ews.seed import load_seed

        n = next(_mailbox_numbers)
        self.sandbox = sandbox
        self.username = f"contract{n}"
        self.mailbox = f"contract{n}@example.com"
        load_seed(sandbox.store, {"accounts": [{"username": self.username, "password": _PASSWORD,
                                                "email": self.mailbox, "name": f"Contract Owner {n}"}]})
        credentials = Credentials(self.username, _PASSWORD)
        self._credentials = credentials
        self._configuration = Configuration(service_endpoint=sandbox.endpoint, credentials=credentials,
                                            auth_type=BASIC, version=Version(build=Build(15, 1, 2507, 0)))
        # As the Airflow hook does: the shared protocol is instrumented before any Account
        # opens, so what the Account sends while it is set up is counted too.
        instrument(Protocol(config=self._configuration))

    # -- the source ----------------------------------------------------------------------
    def _account(self) -> Any:
        from exchangelib import DELEGATE, UTC, Account

        return Account(self.mailbox, credentials=self._credentials, config=self._configuration,
                       autodiscover=False, access_type=DELEGATE, default_timezone=UTC)

    def new_source(self) -> MailSource:
        from email_sync.sources.ews import EwsMailSource

        return EwsMailSource(self._account)  # opens the account inside the source (counted)

    @cached_property
    def source(self) -> MailSource:
        return self.new_source()

    # -- the mailbox, as the user and the server see it --------------------------------------
    def seed(self, folders: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
        from sandbox.ews.seed import load_seed

        store = self.sandbox.store
        with store.lock:
            before = {path: self._ids(path) for path in folders}
            load_seed(store, {"mailboxes": {self.mailbox: {"folders": dict(folders)}}})
            return {path: self._ids(path)[len(before[path]):] for path in folders}

    def _ids(self, path: str) -> list[str]:
        try:
            return [m.item_id for m in self.sandbox.store.messages(self.mailbox, path)]
        except KeyError:  # the folder does not exist yet
            return []

    def add_message(self, folder_path: str, **fields: Any) -> str:
        (item_id,) = self.seed({folder_path: [fields]})[folder_path]
        return item_id

    def delete_message(self, item_id: str) -> None:
        self.sandbox.store.delete_message(item_id)

    def categories_of(self, item_id: str) -> list[str]:
        return list(self.sandbox.store.message(item_id).categories)

    def set_categories(self, item_id: str, categories: list[str]) -> None:
        self.sandbox.store.set_categories(item_id, categories)

    def server_requests(self) -> dict[str, int]:
        return self.sandbox.calls.snapshot()

    def break_attachment(self, attachment_id: str) -> None:
        # The item still lists the attachment (GetItem), but GetAttachment no longer finds
        # it: ErrorInvalidAttachmentId for that id only, as for an attachment removed server-side.
        store = self.sandbox.store
        with store.lock:
            del store.attachments[attachment_id]

    def localise_sent_items(self, display_name: str) -> None:
        store = self.sandbox.store
        with store.lock:
            store.mailbox(self.mailbox).distinguished["sentitems"].name = display_name


@pytest.fixture(scope="module")
def ews_sandbox() -> Iterator[Any]:
    """One EWS sandbox per module; every test gets its own account and mailbox in it."""
    from exchangelib.protocol import close_connections

    from sandbox.ews import EwsSandbox

    with EwsSandbox() as server:
        yield server
    close_connections()


@pytest.fixture
def ews_world(ews_sandbox: Any) -> Iterator[EwsWorld]:
    from exchangelib.protocol import close_connections

    yield EwsWorld(ews_sandbox)
    close_connections()  # exchangelib caches a protocol per endpoint + credentials
