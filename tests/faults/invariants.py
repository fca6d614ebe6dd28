"""The fault suite's one invariant: the org and the mailbox as after an undisturbed run, and a true summary.

The representative sync is carol's job on the demo data: shared activities (TaskRelations),
every attachment recorded (Files), the CRM category written back. :func:`reference_state`
records what an undisturbed run leaves (the same for every world of a module: one demo, one
fixed "now"); every faulted scenario ends with :func:`assert_invariant`:

- :func:`assert_same`: the same Tasks by idempotency key (each exactly once), the same
  relations and files per Task (each file exactly once), the same categories per message;
- :func:`assert_summary_true`: the last run's summary says what is really there — what the
  job still owes by kind (``incomplete``, counted from the org and the mailbox, not from the
  state store), what Salesforce refused during the run (``refused``), and what the run
  created (Tasks, relations, files: counted as the change of the org during the run).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from tests.sync_world import SyncWorld

JOB = "carol"
MAILBOX = "carol@example.com"
KINDS = ("tasks", "relations", "files")
NO_REFUSALS = {kind: 0 for kind in KINDS}


def snapshot(world: SyncWorld) -> dict[str, Any]:
    """What the user sees: Tasks by key, their relations and files, and the Exchange categories."""
    org = world.stack.salesforce.org
    tasks = world.tasks()
    keys = Counter(t["Email_Sync_Key__c"] for t in tasks)
    return {
        "duplicate_keys": sorted(k for k, n in keys.items() if n > 1),
        "tasks": sorted((t["Email_Sync_Key__c"], t["Subject"], t["WhoId"]) for t in tasks),
        "relations": sorted((t["Email_Sync_Key__c"],
                             tuple(sorted(r["RelationId"] for r in org.task_relations(t["Id"])))) for t in tasks),
        "files": sorted((t["Email_Sync_Key__c"], tuple(sorted((f["PathOnClient"], f["ContentSize"])
                                                              for f in org.files_for(t["Id"]))))
                        for t in tasks),
        "categories": sorted((m.message_id, tuple(m.categories)) for m in world.messages(MAILBOX)),
    }


def assert_same(world: SyncWorld, reference: dict[str, Any], label: str) -> None:
    state = snapshot(world)
    differences = []
    for part in ("duplicate_keys", "tasks", "relations", "files", "categories"):
        if state[part] != reference[part]:
            have, want = Counter(state[part]), Counter(reference[part])
            unexpected, missing = sorted((have - want).elements()), sorted((want - have).elements())
            differences.append(f"{part} differ ({len(unexpected)} unexpected, {len(missing)} missing): "
                               f"unexpected {unexpected[:3]}, missing {missing[:3]}")
    assert not differences, f"{label}: " + "; ".join(differences)


def reference_state(world: SyncWorld) -> dict[str, Any]:
    """Everything the invariant compares with, from a world after an undisturbed run."""
    from email_sync.rules.keys import idempotency_key

    state = snapshot(world)
    org = world.stack.salesforce.org
    state["calls"] = {"ews": world.stack.ews.calls.total, "salesforce": world.stack.salesforce.calls.total}
    summary = world.store().latest_runs()[0]["counts"]
    state["summary"] = summary
    state["recorded"] = summary["recorded"]
    tasks = {t["Email_Sync_Key__c"]: t for t in world.tasks()}
    # Which keys belong to which email (the demo's emails all have a Message-ID).
    emails: dict[str, list[str]] = {}
    for message in world.messages(MAILBOX):
        if message.message_id:
            keys = [k for k in (idempotency_key(JOB, message.message_id, p) for p in range(1, 11)) if k in tasks]
            if keys:
                emails[message.message_id] = keys
    assert sorted(k for ks in emails.values() for k in ks) == sorted(tasks), "a Task of no demo email"
    state["emails"] = emails
    # Record identities, for refusing a chosen share of each kind (scenario b).
    state["identities"] = {
        "tasks": sorted(tasks),
        "relations": sorted((k, r["RelationId"]) for k, t in tasks.items() for r in org.task_relations(t["Id"])
                            if r["RelationId"] != t["WhoId"]),
        "files": sorted((k, f["PathOnClient"]) for k, t in tasks.items() for f in org.files_for(t["Id"])),
    }
    assert len(state["identities"]["relations"]) == summary["relations_created"]
    assert len(state["identities"]["files"]) == summary["attachments_uploaded"]
    return state


@dataclass(frozen=True)
class OrgCounts:
    """What a run can add to the org: Tasks, relations it inserts (not the Task's own WhoId), files."""

    tasks: int
    relations: int
    files: int


def org_counts(world: SyncWorld) -> OrgCounts:
    org = world.stack.salesforce.org
    tasks = world.tasks()
    relations = sum(1 for t in tasks for r in org.task_relations(t["Id"]) if r["RelationId"] != t["WhoId"])
    return OrgCounts(len(tasks), relations, len(org.records("ContentVersion")))


def owed(world: SyncWorld, reference: dict[str, Any]) -> dict[str, int]:
    """Emails that still owe an object, by kind, as the org and the mailbox show it.

    The summary's ``incomplete`` counts the same (docs: within the 30-day reach; the demo's
    mail is all recent): ``tasks`` an email with a Task missing; among emails with at least
    one Task: ``relations`` a Task without all its relations, ``files`` its first Task (which
    carries the files) without all of them, ``categories`` the message without the category.
    """
    org = world.stack.salesforce.org
    present = {t["Email_Sync_Key__c"]: t for t in world.tasks()}
    relations = dict(reference["relations"])
    files = dict(reference["files"])
    categories = {m.message_id: tuple(m.categories) for m in world.messages(MAILBOX)}
    want_categories = dict(reference["categories"])
    result = {"tasks": 0, "relations": 0, "files": 0, "categories": 0}
    for message_id, keys in reference["emails"].items():
        here = [k for k in keys if k in present]
        if len(here) < len(keys):
            result["tasks"] += 1
        if not here:
            continue
        if any(tuple(sorted(r["RelationId"] for r in org.task_relations(present[k]["Id"]))) != relations[k]
               for k in here):
            result["relations"] += 1
        first = keys[0]
        if first in present and tuple(sorted((f["PathOnClient"], f["ContentSize"])
                                             for f in org.files_for(present[first]["Id"]))) != files[first]:
            result["files"] += 1
        if categories.get(message_id) != want_categories.get(message_id):
            result["categories"] += 1
    return result


def assert_summary_true(world: SyncWorld, reference: dict[str, Any], label: str, summary: dict[str, Any],
                        before: OrgCounts, *, refused: dict[str, int] | None = None,
                        failed: int | None = None, recorded: int | None = None) -> None:
    """The run summary's counts against the org and the mailbox (``before``: org counts before the run).

    ``refused``: what the sandbox refused during the run (default nothing); ``failed``: the
    emails the run must report failed (default: none once the sync is complete);
    ``recorded``: the emails the run must report recorded (default: not checked). Always:
    every email the run read has exactly one outcome (recorded, failed or skipped).
    """
    after = org_counts(world)
    truth = owed(world, reference)
    problems: dict[str, tuple[Any, Any]] = {}

    def check(name: str, claimed: Any, true: Any) -> None:
        if claimed != true:
            problems[name] = (claimed, true)

    check("incomplete", summary.get("incomplete"), truth)
    check("refused", summary.get("refused"), refused or NO_REFUSALS)
    if failed is None and not any(truth[k] for k in KINDS):
        failed = 0
    if failed is not None:
        check("failed", summary.get("failed"), failed)
    if recorded is not None:
        check("recorded", summary.get("recorded"), recorded)
    check("recorded + failed + skipped", summary.get("recorded", 0) + summary.get("failed", 0)
          + sum(summary.get("skipped", {}).values()), summary.get("extracted"))
    check("tasks_created", summary.get("tasks_created"), after.tasks - before.tasks)
    check("relations_created", summary.get("relations_created"), after.relations - before.relations)
    check("attachments_uploaded", summary.get("attachments_uploaded"), after.files - before.files)
    assert not problems, f"{label}: summary counts not true (field: (summary, truth)): {problems}"


def last_summary(world: SyncWorld) -> dict[str, Any]:
    runs = [r for r in world.store().latest_runs() if r["job_id"] == JOB]
    assert runs and runs[0]["status"] == "success", f"no finished run of {JOB}: {runs}"
    return runs[0]["counts"]


def assert_invariant(world: SyncWorld, reference: dict[str, Any], label: str, before: OrgCounts,
                     summary: dict[str, Any] | None = None, **expected: Any) -> None:
    """THE check every scenario ends with: org and mailbox as after the reference run, summary true.

    ``before``: :func:`org_counts` taken just before the run whose ``summary`` is checked
    (default: the job's latest run in the state store).
    """
    assert_same(world, reference, label)
    assert_summary_true(world, reference, label, summary if summary is not None else last_summary(world), before,
                        **expected)
