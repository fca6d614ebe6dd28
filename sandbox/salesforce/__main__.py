"""Run the Salesforce sandbox as a process.

    python -m sandbox.salesforce --seed FILE [--port N] [--info-file F]

Prints one JSON line: instance_url, ca_bundle (PEM to trust), session_id (a sandbox-only
bearer token - printing it is deliberate; it grants access to nothing but this process),
api_version and the seed's usernames. Stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging

from sandbox.salesforce.org import DEFAULT_API_VERSION
from sandbox.salesforce.server import SalesforceSandbox
from sandbox.server import run_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.salesforce", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", help="seed file (.json, .yaml or a contacts .csv)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--info-file", help="also write the JSON info line to this file")
    parser.add_argument("--random-seed", type=int, default=0, help="seed for Ids and probabilistic faults")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.seed:
        sandbox = SalesforceSandbox.from_file(args.seed, host=args.host, port=args.port, seed=args.random_seed)
    else:
        sandbox = SalesforceSandbox(host=args.host, port=args.port, seed=args.random_seed)
    sandbox.start()
    info = {
        "name": "salesforce",
        "instance_url": sandbox.instance_url,
        "ca_bundle": str(sandbox.ca_bundle),
        "session_id": sandbox.session_id,
        "api_version": DEFAULT_API_VERSION,
        "org_id": sandbox.org.org_id,
        "users": [u["Username"] for u in sandbox.org.records("User")],
        "control": f"{sandbox.instance_url}/_sandbox/",
    }
    run_cli(sandbox, info, args.info_file)


if __name__ == "__main__":
    main()
