"""The quick start's demo: every job's DAG, run by Airflow against freshly seeded sandboxes.

1. starts the EWS and Salesforce sandboxes with the demo org and three mailboxes
   (``sandbox/demo_data.py``: hundreds of emails covering every rule);
2. prepares a local Airflow on SQLite under ``.airflow/`` and applies ``airflow_settings.yaml``
   with the sandboxes' addresses (the same file production fills with real endpoints);
3. runs ``airflow dags test email_sync__<job>`` for every job (a real DAG run: Airflow parses
   the DAG file, schedules the tasks and runs the operators);
4. prints a per-job summary read back from the state store and the sandbox org and mailboxes.

``--ui`` then keeps the sandboxes up and starts ``airflow standalone`` to browse the runs.
Run it through ``bash scripts/demo.sh`` (which creates the venv first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = ROOT / ".airflow"
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def airflow_env(extra: dict[str, str]) -> dict[str, str]:
    from sandbox.stack import local_airflow_env

    env = dict(os.environ)
    env.update({
        **local_airflow_env(AIRFLOW_HOME),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
        **extra,
    })
    return env


def run(cmd: list[str], env: dict[str, str], quiet: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, env=env, cwd=ROOT, text=True, capture_output=quiet)
    if result.returncode != 0:
        if quiet:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=120, help="base emails per mailbox (default 120)")
    parser.add_argument("--ui", action="store_true", help="afterwards start `airflow standalone` on :8080")
    args = parser.parse_args()

    from email_sync.rules.config import load_jobs
    from email_sync.store.state_store import StateStore
    from sandbox.demo_data import build_demo
    from sandbox.stack import EWS_VERSION, SandboxStack

    AIRFLOW_HOME.mkdir(exist_ok=True)
    state_db = AIRFLOW_HOME / "email_sync_state.db"
    staging = AIRFLOW_HOME / "staging"
    for stale in (state_db, staging):  # fresh sandboxes each demo, so fresh sync state too
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

    demo = build_demo(emails_per_mailbox=args.emails)
    jobs = load_jobs(ROOT / "include" / "email_sync").jobs
    print(f"==> starting sandboxes: {sum(len(m) for mb in demo.ews['mailboxes'].values() for m in mb['folders'].values())} "
          f"emails in {len(demo.ews['mailboxes'])} mailboxes, {len(demo.salesforce['contacts'])} contacts, "
          f"{len(demo.salesforce['leads'])} leads")
    with SandboxStack.start(demo.ews, demo.salesforce) as stack:
        env = airflow_env({
            "EWS_ENDPOINT": stack.ews.endpoint, "EWS_VERSION": EWS_VERSION,
            "SF_SESSION_ID": stack.salesforce.session_id, "SF_INSTANCE_URL": stack.salesforce.instance_url,
            "SF_CA_BUNDLE": str(stack.salesforce.ca_bundle), "EMAIL_SYNC_STATE_DB": str(state_db),
            "EMAIL_SYNC_STAGING_DIR": str(staging),
        })
        print(f"==> Airflow metadata DB (SQLite) in {AIRFLOW_HOME.relative_to(ROOT)}/, applying airflow_settings.yaml")
        run([sys.executable, "-m", "airflow", "db", "migrate"], env)
        run([sys.executable, "scripts/apply_airflow_settings.py", "airflow_settings.yaml"], env)
        for job in jobs:
            dag_id = f"email_sync__{job.job_id}"
            started = time.monotonic()
            print(f"==> airflow dags test {dag_id}  (mode {job.settings.mode.value})", flush=True)
            run([sys.executable, "-m", "airflow", "dags", "test", dag_id], env)
            print(f"    done in {time.monotonic() - started:.1f}s")
        print()
        print(summary_table(StateStore.from_url(f"sqlite:///{state_db}"), stack, jobs))
        print()
        print("The runs are in Airflow's metadata DB: `bash scripts/demo.sh --ui` serves the UI on "
              "http://localhost:8080 (login printed by `airflow standalone`). Each DAG's 'Docs' shows the job's "
              "effective settings; the last task's log shows the run summary.")
        if args.ui:
            print("==> airflow standalone (Ctrl-C stops it and the sandboxes)")
            subprocess.run([sys.executable, "-m", "airflow", "standalone"], env=env, cwd=ROOT)
    return 0


def summary_table(store: Any, stack: Any, jobs: list[Any]) -> str:
    """One row per job: what the run did, and what the sandboxes now hold."""
    runs = {r["job_id"]: r for r in store.latest_runs()}
    tasks = stack.salesforce.org.records("Task")
    users = {u["Id"]: u["Username"] for u in stack.salesforce.org.records("User")}
    header = (f"{'job':<8}{'mode':<12}{'status':<9}{'extracted':>10}{'recorded':>10}{'tasks':>7}{'parts':>7}"
              f"{'files':>7}{'>5MB':>6}{'tagged':>8}{'SF calls':>10}{'source':>8}{'requests':>9}  skipped by reason")
    lines = [header, "-" * len(header)]
    for job in jobs:
        run_row = runs.get(job.job_id) or {"status": "-", "counts": {}}
        c = run_row["counts"]
        owner_tasks = sum(1 for t in tasks if users.get(t.get("OwnerId"), "").lower() == (job.settings.salesforce_user or "").lower()
                          or t.get("OwnerId") == job.settings.salesforce_user)
        skipped = ", ".join(f"{k} {v}" for k, v in c.get("skipped", {}).items())
        lines.append(f"{job.job_id:<8}{job.settings.mode.value:<12}{run_row['status']:<9}{c.get('extracted', 0):>10}"
                     f"{c.get('recorded', 0):>10}{owner_tasks:>7}{c.get('parts_split', 0):>7}"
                     f"{c.get('attachments_uploaded', 0):>7}{c.get('attachments_too_large', 0):>6}"
                     f"{c.get('categories_written', 0):>8}{c.get('salesforce_calls', 0):>10}"
                     f"{c.get('source', job.settings.source.value):>8}{c.get('source_requests', 0):>9}  {skipped}")
    lines.append("")
    lines.append("tasks = Tasks now in the sandbox org owned by the job's user; parts = emails split into several "
                 "Tasks; files = attachments uploaded as Salesforce Files; >5MB = attachments skipped as too large; "
                 "tagged = emails given the CRM category in Exchange; SF calls = Salesforce API calls; source / requests = the mail source and the requests the run sent it.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
