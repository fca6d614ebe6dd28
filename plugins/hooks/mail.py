"""The mail-source factory: a job's ``source`` setting → the hook that owns its Connection.

Each source kind has one hook class and one Connection id; the hook builds the source for
a mailbox (``get_mail_source``). Adding a source (Graph) is one entry here plus its hook.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from email_sync.sources.base import MailSource

# source kind → (hook module, hook class): imported only when a task opens a mailbox.
SOURCE_HOOKS = {"ews": ("hooks.exchange", "ExchangeHook")}


def mail_source(kind: str, mailbox: str) -> MailSource:
    """The job's mailbox through the hook of its source kind (the hook's default Connection)."""
    module, name = SOURCE_HOOKS[kind]
    hook = getattr(importlib.import_module(module), name)()
    return hook.get_mail_source(mailbox)
