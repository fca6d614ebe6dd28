"""Command line: ``python -m email_sync validate [CONFIG_DIR]``.

Prints every job's effective settings with where each came from, the policy's notices,
and every error; exits 1 when there is any error so CI and deploy scripts can gate on it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from email_sync.rules.config import Job, JobLoadResult, load_jobs
from email_sync.rules.settings import JOB_FIELDS, format_setting

DEFAULT_CONFIG_DIR = "include/email_sync"


def print_job(job: Job, out: TextIO) -> None:
    """One job: each effective setting with its source, then its notes."""
    print(f"job {job.job_id}  ({job.path})", file=out)
    width = max(len(name) for name in JOB_FIELDS)
    for name in JOB_FIELDS:
        value = format_setting(getattr(job.settings, name))
        print(f"  {name:<{width}}  {value}  [{job.provenance[name]}]", file=out)
    for note in job.notes:
        print(f"  note: {note}", file=out)


def print_report(result: JobLoadResult, out: TextIO) -> None:
    """The whole validation report."""
    for job in result.jobs:
        print_job(job, out)
        print(file=out)
    if result.errors:
        print(f"errors ({len(result.errors)}):", file=out)
        for error in result.errors:
            print(f"  {error}", file=out)
        print(file=out)
    if result.blocked_by_policy:
        print(f"not loaded because the policy is invalid: {', '.join(result.blocked_by_policy)}", file=out)
        print(file=out)
    print(f"{len(result.jobs)} job(s) valid, {len(result.errors)} error(s)", file=out)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m email_sync", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="validate the policy and every job file")
    validate.add_argument("config_dir", nargs="?", default=DEFAULT_CONFIG_DIR)
    args = parser.parse_args(argv)

    result = load_jobs(args.config_dir)
    print_report(result, out)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
