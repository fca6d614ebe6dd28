"""The user's mailbox is left as it was (issue 14): categories merged, moved mail found, every copy marked.

Steps run in-process, one after the other as the DAG runs them, against the real sandboxes
(the user changes the mailbox between them, as in Outlook while a run is under way).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(600)
JOB = "alice"
MAILBOX = "alice@example.com"
ALICE = {"mode": "all", "mailbox": MAILBOX, "salesforce_user": MAILBOX}


class Steps:
    """One run of the job's six steps, with a hook between them."""

    def __init__(self, world: Any, run_id: str) -> None:
        from email_sync.crm.salesforce import SalesforceCrm
        from email_sync.pipeline.context import RunContext
        from email_sync.rules.config import load_jobs
        from hooks.exchange import ExchangeHook
        from hooks.state import StateStoreHook

        loaded = load_jobs(world.config_dir, only=JOB)
        (job,) = loaded.jobs
        self.ctx = RunContext(JOB, job.settings, loaded.org, run_id, world.staging)
        self.store = StateStoreHook().get_store()
        self.mail = lambda: ExchangeHook().get_mail_source(MAILBOX)
        self.crm = lambda: SalesforceCrm(world.stack.salesforce.client())

    def run(self, between=lambda step: None) -> dict[str, Any]:
        from email_sync.pipeline import extract, filter as filter_step, finish, insert, match, upload

        now = datetime.now(UTC)
        counts: dict[str, Any] = {}
        counts["extract"] = extract.extract(self.ctx, self.mail, self.store, None, now)
        between("extract")
        counts["filter"] = filter_step.filter_mail(self.ctx, self.store)
        between("filter")
        counts["match"] = match.match(self.ctx, self.crm, self.store)
        between("match")
        counts["insert"] = insert.insert_tasks(self.ctx, self.crm, self.store)
        between("insert")
        counts["upload"] = upload.upload_attachments(self.ctx, self.mail, self.crm, self.store)
        between("upload")
        return finish.finish(self.ctx, self.mail, self.crm, self.store, counts)


def _contact(world) -> str:
    return world.stack.salesforce.org.records("Contact")[0]["Email"]


def _add(world, folder: str, n: str, **fields: Any) -> str:
    received = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    return world.stack.ews.store.add_message(
        MAILBOX, folder, subject=f"[mailbox] {n}", body="hello", message_id=f"<{n}@client.example>",
        received=received, sent=received, to=[{"email": MAILBOX}],
        **{"from": {"email": _contact(world)}, **fields})


def _categories(world, item_id: str) -> list[str]:
    return sorted(world.stack.ews.store.message(item_id).categories)


def test_the_users_category_changes_during_a_run_survive_the_write_back(sync_world):
    """Defect: the write-back set the whole list read at extract, deleting a category the user
    added meanwhile and putting back one the user removed."""
    sync_world.write_config({JOB: ALICE})
    kept = _add(sync_world, "Inbox", "kept", categories=["Customer"])
    pruned = _add(sync_world, "Inbox", "pruned", categories=["Customer", "Blue"])
    store = sync_world.stack.ews.store
    changes = {  # what the user does in Outlook after each step
        "extract": lambda: store.set_categories(kept, [*store.message(kept).categories, "Urgent"]),
        "filter": lambda: store.set_categories(pruned, ["Customer"]),
        "match": lambda: store.set_categories(kept, [*store.message(kept).categories, "Later"]),
        "insert": lambda: store.set_categories(pruned, []),
        "upload": lambda: store.set_categories(kept, [c for c in store.message(kept).categories if c != "Urgent"]),
    }

    Steps(sync_world, "manual__categories").run(lambda step: changes[step]())

    assert _categories(sync_world, kept) == ["CRM", "Customer", "Later"]
    assert _categories(sync_world, pruned) == ["CRM"]


def test_a_category_write_that_meets_a_concurrent_change_is_merged_again(sync_world, monkeypatch):
    """The user changes the item between our read and our write: Exchange refuses the stale
    ChangeKey, the source reads and merges again instead of overwriting."""
    from email_sync.sources import ews

    sync_world.write_config({JOB: ALICE})
    item = _add(sync_world, "Inbox", "racing", categories=["Customer"])
    store = sync_world.stack.ews.store
    original, raced = ews.EwsMailSource._merge_write, []

    def racing(self, item_ids, category):
        if not raced:  # the user adds a category after our read, before our write
            raced.append(1)
            fetch = self.account.fetch

            def fetch_then_change(*args, **kwargs):
                items = list(fetch(*args, **kwargs))
                store.set_categories(item, [*store.message(item).categories, "Urgent"])
                return items

            monkeypatch.setattr(self.account, "fetch", fetch_then_change)
            try:
                return original(self, item_ids, category)
            finally:
                monkeypatch.setattr(self.account, "fetch", fetch)
        return original(self, item_ids, category)

    monkeypatch.setattr(ews.EwsMailSource, "_merge_write", racing)
    Steps(sync_world, "manual__race").run()
    assert _categories(sync_world, item) == ["CRM", "Customer", "Urgent"]


def test_a_moved_email_gets_its_category_where_it_is_now(sync_world):
    """Defect: an email moved after extract never got the CRM category, and every later run
    retried the stale item id forever."""
    from email_sync.rules.keys import message_key

    sync_world.write_config({JOB: ALICE})
    store = sync_world.stack.ews.store
    first = _add(sync_world, "Inbox", "moved")
    moved: list[str] = []

    def move_after_upload(step: str) -> None:
        if step == "upload":  # the user files it into Sent Items/Clients... any synced folder
            store.delete_message(first)
            moved.append(_add(sync_world, "Sent Items", "moved"))

    summary = Steps(sync_world, "manual__move").run(move_after_upload)

    assert _categories(sync_world, moved[0]) == ["CRM"]
    assert summary["categories_given_up"] == 0
    (row,) = {r.message_key: r for r in Steps(sync_world, "x").store.ledger(JOB, [message_key("<moved@client.example>")])}.values()
    assert row.category_marked


def test_an_email_that_is_gone_is_given_up_after_five_runs_with_a_reason(sync_world):
    from email_sync.rules.keys import message_key

    sync_world.write_config({JOB: ALICE})
    store = sync_world.stack.ews.store
    gone = _add(sync_world, "Inbox", "gone")
    summaries = [Steps(sync_world, "manual__gone0").run(lambda step: step == "upload" and store.delete_message(gone))]
    summaries += [Steps(sync_world, f"manual__gone{i}").run() for i in range(1, 5)]
    assert [s["categories_given_up"] for s in summaries] == [0, 0, 0, 0, 1]
    steps = Steps(sync_world, "x")
    (row,) = steps.store.ledger(JOB, [message_key("<gone@client.example>")])
    assert not row.category_marked or row.category_marked  # reported, never retried again:
    assert steps.store.unmarked(JOB) == []
    outcome = {o.message_key: o for o in steps.store.outcomes(JOB, "manual__gone4")}[message_key("<gone@client.example>")]
    assert (outcome.outcome, outcome.reason) == ("failed", "category_not_written")


def test_mail_sent_to_oneself_is_marked_in_every_synced_folder(sync_world):
    """Defect: one Task (right) but only one of the two copies got the category."""
    sync_world.write_config({JOB: ALICE})
    sent = _add(sync_world, "Sent Items", "self", cc=[{"email": _contact(sync_world)}], **{"from": {"email": MAILBOX}})
    received = _add(sync_world, "Inbox", "self", cc=[{"email": _contact(sync_world)}], **{"from": {"email": MAILBOX}})

    Steps(sync_world, "manual__self").run()

    assert _categories(sync_world, sent) == ["CRM"] and _categories(sync_world, received) == ["CRM"]
    assert sum(1 for t in sync_world.tasks() if t["Subject"] == "[mailbox] self") == 1
