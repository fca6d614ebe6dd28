"""The private Airflow the benchmarks run (SQLite under ``bench/out/``) and measured child processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.stack import local_airflow_env

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"  # gitignored
POLICY = ROOT / "include" / "email_sync" / "policy.yaml"


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
    peak_rss_mb: float  # ru_maxrss of exactly this child (wait4), not of every child so far


def run_measured(cmd: list[str], env: dict[str, str], log_path: Path, timeout: float = 3600) -> Measured:
    """Run ``cmd``, output to ``log_path``; its wall time and peak RSS through ``os.wait4``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    return Measured(proc.returncode, wall, usage.ru_maxrss / 1024)


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
