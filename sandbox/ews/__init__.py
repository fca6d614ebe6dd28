"""A loopback Exchange Web Services (EWS) sandbox that unmodified exchangelib talks to.

    from sandbox.ews import EwsSandbox

    with EwsSandbox({"accounts": [...], "mailboxes": {...}}) as ews:
        ews.endpoint          # http://127.0.0.1:PORT/EWS/Exchange.asmx
        ews.store             # live mailbox state (add_message, messages, update_message, ...)
        ews.calls             # per-operation request counts (GetFolder, FindItem, ...)
        ews.faults.inject("FindItem", "throttle", nth=1, retry_after=0.05)

See docs/sandbox_ews.md for the seed format and what is supported.
"""

from sandbox.ews.seed import load_eml_dir, load_file, load_seed, parse_eml
from sandbox.ews.server import SERVICE_PATH, EwsSandbox
from sandbox.ews.store import Addr, Attachment, Folder, Message, Store

__all__ = [
    "SERVICE_PATH",
    "Addr",
    "Attachment",
    "EwsSandbox",
    "Folder",
    "Message",
    "Store",
    "load_eml_dir",
    "load_file",
    "load_seed",
    "parse_eml",
]
