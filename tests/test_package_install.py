"""The built wheel carries the state store's SQL (package data) and works without the checkout.

The wheel is built from a copy of the working tree (so the build's ``build/`` and ``*.egg-info``
land in a temp dir, not in the project), installed with ``pip install --target`` into a temp
folder, and used from a fresh interpreter whose working directory is not the project root and
whose ``sys.path`` puts that folder first, with the editable install's finder removed: the test
asserts ``email_sync`` really came from the installed wheel before it touches the store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_FILES = ("email_sync/store/sql/schema.sql", "email_sync/store/sql/queries.sql")
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".pytest_cache",
    ".hypothesis",
)

_USE_INSTALLED = r"""
import json, sys
from pathlib import Path

site = sys.argv[1]
# The editable install's finder (a .pth in the venv) maps email_sync to the checkout: drop it.
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path.insert(0, site)

import email_sync
import email_sync.store.state_store as state_store

assert Path(email_sync.__file__).resolve().is_relative_to(Path(site).resolve()), email_sync.__file__
assert Path(state_store.__file__).resolve().is_relative_to(Path(site).resolve()), state_store.__file__

store = state_store.StateStore.from_url("sqlite:///" + sys.argv[2])
store.create_schema()
print(json.dumps({"file": email_sync.__file__, "watermark": repr(store.watermark("job"))}))
"""


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=240, **kwargs)


def _build_wheel(source: Path, out: Path) -> Path:
    """``pip wheel`` without build isolation when the venv can build (setuptools and wheel),
    else with it (pip fetches the build requirements from the index)."""
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(out)]
    attempts = [base + ["--no-build-isolation", str(source)], base + [str(source)]]
    errors = []
    for args in attempts:
        result = _run(args)
        wheels = sorted(out.glob("email_sync-*.whl"))
        if result.returncode == 0 and wheels:
            return wheels[-1]
        errors.append(f"$ {' '.join(args)}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    pytest.fail("could not build the wheel:\n" + "\n\n".join(errors))


@pytest.mark.timeout(300)
def test_wheel_ships_sql_and_store_works_when_installed(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(PROJECT_ROOT, source, ignore=_NOT_SOURCES)
    wheel = _build_wheel(source, tmp_path / "dist")

    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in SQL_FILES if name not in names]
    assert not missing, f"{wheel.name} lacks {missing}; it holds {sorted(n for n in names if 'store' in n)}"

    site = tmp_path / "site"
    installed = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                      "--disable-pip-version-check", "--target", str(site), str(wheel)])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert all((site / name).is_file() for name in SQL_FILES)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    used = _run([sys.executable, "-c", _USE_INSTALLED, str(site), str(tmp_path / "s.db")], cwd=elsewhere)
    assert used.returncode == 0, used.stdout + used.stderr
    report = json.loads(used.stdout.strip().splitlines()[-1])
    assert report["watermark"] == "None", report
    assert Path(report["file"]).resolve().is_relative_to(site.resolve()), report
