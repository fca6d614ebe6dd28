"""The private Airflow the benchmarks run (SQLite under ``bench/out/``) and measured child processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sandbox.stack import local_airflow_env

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"  # gitignored
POLICY = ROOT / "include" / "email_sync" / "policy.yaml"
LAUNCHER = ROOT / "bench" / "launch.py"  # measured commands are started through it (launch())


def airflow_env(airflow_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process running this project's DAGs on a private Airflow."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("_AIRFLOW_PARSING_CONTEXT", "AIRFLOW_CONN_", "AIRFLOW__", "EMAIL_SYNC_"))}
    env.update(local_airflow_env(airflow_home))
    env.update({
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
        **extra,
    })
    return env


def prepare_airflow(airflow_home: Path) -> dict[str, str]:
    """A fresh AIRFLOW_HOME with a migrated SQLite metadata DB; returns its environment."""
    shutil.rmtree(airflow_home, ignore_errors=True)
    airflow_home.mkdir(parents=True)
    env = airflow_env(airflow_home)
    result = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return env


def write_config(config_dir: Path, jobs: dict[str, dict]) -> Path:
    """policy.yaml (the shipped one) + one ``jobs/<id>.yaml`` per job."""
    import yaml

    shutil.rmtree(config_dir, ignore_errors=True)
    (config_dir / "jobs").mkdir(parents=True)
    shutil.copy(POLICY, config_dir / "policy.yaml")
    for job_id, settings in jobs.items():
        (config_dir / "jobs" / f"{job_id}.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return config_dir


@dataclass
class Measured:
    returncode: int
    wall_seconds: float
    peak_rss_mb: float  # ru_maxrss of exactly this command, taken by bench/launch.py (see launch())


def launch(cmd: list[str], env: dict[str, str], stdout: IO[bytes], stderr: IO[bytes] | int,
           timeout: float = 3600) -> Measured:
    """Run ``cmd`` through :mod:`bench.launch`; its exit code, wall time and its own peak RSS.

    Not ``wait4`` on a child of this process: Linux hands an exec'd child the RSS high-water
    mark of the process it was forked from, and this process holds the seeded sandboxes
    (hundreds of MB). The small, freshly started launcher spawns the command instead and
    reports the command's ``wait4`` rusage through a pipe.
    """
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(LAUNCHER), str(write_fd), str(timeout), "--", *cmd],
                                env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                pass_fds=(write_fd,))
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        raw = pipe.read()  # EOF once the launcher has reaped the command and exited
    launcher_exit = proc.wait()
    if not raw:
        raise RuntimeError(f"bench/launch.py exited {launcher_exit} without a report for {cmd}")
    report = json.loads(raw)
    return Measured(report["returncode"], report["wall_seconds"], report["maxrss_kb"] / 1024)


def run_measured(cmd: list[str], env: dict[str, str], log_path: Path, timeout: float = 3600) -> Measured:
    """Run ``cmd``, stdout and stderr to ``log_path``; its wall time and own peak RSS (:func:`launch`)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return launch(cmd, env, log, subprocess.STDOUT, timeout)


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
