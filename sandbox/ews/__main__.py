"""Run the EWS sandbox as a process.

    python -m sandbox.ews --seed seed.yaml [--eml-dir DIR --eml-mailbox ADDR --eml-folder Inbox]
                          [--host 127.0.0.1] [--port N] [--info-file F]

Prints one JSON line: {"endpoint": ..., "port": ..., "accounts": [usernames], "mailboxes": [...]}.
Passwords are never printed.
"""

from __future__ import annotations

import argparse
import logging

from sandbox.ews.seed import load_eml_dir, load_file
from sandbox.ews.server import EwsSandbox
from sandbox.server import run_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.ews", description="Loopback EWS sandbox")
    parser.add_argument("--seed", action="append", default=[], help="YAML/JSON seed file (repeatable)")
    parser.add_argument("--eml-dir", help="directory of .eml files to load")
    parser.add_argument("--eml-mailbox", help="mailbox the .eml files go to")
    parser.add_argument("--eml-folder", default="Inbox", help="folder the .eml files go to (default Inbox)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault-seed", type=int, default=0, help="seed for probabilistic fault injection")
    parser.add_argument("--info-file", help="also write the JSON info line to this file")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())

    server = EwsSandbox(host=args.host, port=args.port, seed=args.fault_seed)
    for path in args.seed:
        load_file(server.store, path)
    if args.eml_dir:
        if not args.eml_mailbox:
            parser.error("--eml-dir needs --eml-mailbox")
        load_eml_dir(server.store, args.eml_dir, args.eml_mailbox, args.eml_folder)
    server.start()
    info = {
        "sandbox": "ews",
        "endpoint": server.endpoint,
        "host": server.host,
        "port": server.port,
        "accounts": [a.username for a in server.store.accounts.values()],
        "mailboxes": [m.address for m in server.store.mailboxes.values()],
        "control": server.base_url + "/_sandbox/",
    }
    run_cli(server, info, args.info_file)


if __name__ == "__main__":
    main()
