"""A tiny launcher: runs one command and reports that command's own peak RSS.

``python -I -S bench/launch.py <report_fd> <timeout_seconds> -- <cmd...>`` spawns ``cmd``
(same stdout, stderr, environment and working directory), reaps it with ``os.wait4`` and
writes one JSON line to ``report_fd``: ``returncode``, ``wall_seconds``, ``maxrss_kb``. After
``timeout_seconds`` the command is SIGKILLed (``returncode`` -9).

Why a launcher: on Linux, ``execve`` stores the replaced address space's RSS high-water mark
in the new program's ``ru_maxrss``. A child the benchmark process forks or vforks therefore
reports at least the benchmark's own peak (hundreds of MB of seeded sandbox data), whatever
the child really used. This launcher is started fresh (isolated, no ``site``, standard
library only, about 10 MB), so the command it spawns inherits only that small floor.
``maxrss_kb`` is ``wait4``'s: the largest of the command and the children it waited for.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def _spawn(cmd: list[str]) -> int:
    return os.posix_spawnp(cmd[0], cmd, dict(os.environ))


def _forward_signals(pid: int) -> None:
    """Ctrl-C / kill of the launcher reaches the command instead of orphaning it."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda sig, _frame: os.kill(pid, sig))


def main(argv: list[str]) -> int:
    report_fd, timeout, sep, *cmd = argv
    if sep != "--" or not cmd:
        raise SystemExit("usage: launch.py <report_fd> <timeout_seconds> -- <cmd...>")
    report_fd_int = int(report_fd)
    os.set_inheritable(report_fd_int, False)  # the command must not hold the report pipe open
    started = time.perf_counter()
    pid = _spawn(cmd)
    _forward_signals(pid)
    signal.signal(signal.SIGALRM, lambda _sig, _frame: os.kill(pid, signal.SIGKILL))
    signal.setitimer(signal.ITIMER_REAL, float(timeout))
    _, status, usage = os.wait4(pid, 0)  # retried after a signal handler (PEP 475)
    signal.setitimer(signal.ITIMER_REAL, 0)
    report = {"returncode": os.waitstatus_to_exitcode(status), "wall_seconds": time.perf_counter() - started,
              "maxrss_kb": usage.ru_maxrss}
    with os.fdopen(report_fd_int, "w") as out:
        out.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
