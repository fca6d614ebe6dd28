"""The run steps (extract → filter → match → insert → upload → finish) over in-memory fakes.

The mailbox and Salesforce are the fakes of ``tests/pipeline/fakes.py``; the state store
(SQLite) and the staging directory are the real ones, in a temp dir. Each case asserts what
a user of the sync would notice: which mail is staged or skipped and why, how many Tasks,
relations and Files reach Salesforce (and that a re-run adds none), how many calls were made,
what the run summary says, and where the job's cursors and watermark stand afterwards.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import email_sync.pipeline.upload as upload_module
from email_sync.errors import SetupProblem, TransientError
from email_sync.pipeline.context import RunContext
from email_sync.pipeline.extract import EXTRACT_OVERLAP, extract
from email_sync.pipeline.filter import filter_mail
from email_sync.pipeline.finish import finish
from email_sync.pipeline.insert import insert_tasks
from email_sync.pipeline.match import match
from email_sync.pipeline.staging import read_json, read_jsonl, read_mail
from email_sync.pipeline.upload import upload_attachments
from email_sync.rules.keys import IDEMPOTENCY_FIELD, attachment_key, idempotency_key, message_key
from email_sync.rules.models import Address, AttachmentRef, MailItem, Unreadable
from email_sync.rules.settings import JobSettings, Mode, OrgSettings
from email_sync.sources.base import CategoryTarget
from email_sync.store.state_store import Outcome, StateStore
from tests.pipeline.fakes import Factory, FakeCrm, FakeMailbox, FakeMailSource, FakeOrg

JOB = "alice"
ALICE = "alice@example.com"
OWNER = "005000000000001AAA"  # a literal User Id: no lookup
BOB, CAROL, DAVE_LEAD = "003000000000001AAA", "003000000000002AAA", "00Q000000000001AAA"
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday
INTERVAL = (NOW - timedelta(hours=2), NOW)
RUN1 = "scheduled__2026-03-04T12:00:00+00:00"
RUN2 = "scheduled__2026-03-04T14:00:00+00:00"
STEPS = ("extract", "filter", "match", "insert", "upload", "finish")


# -- mail -----------------------------------------------------------------------------------------
def inbound(n: int, sender: str = "bob@client.com", *, at: datetime = NOW - timedelta(hours=1),
            **fields: Any) -> MailItem:
    """Mail received in the Inbox at ``at``."""
    return MailItem(item_id=f"in-{n}", message_id=f"<m{n}@client.com>", folder="Inbox", subject=f"Hello {n}",
                    body=f"Body of email {n}", sender=Address(sender, "Sender"), to=(Address(ALICE, "Alice"),),
                    sent_at=at - timedelta(minutes=1), received_at=at, change_key=f"ck-in-{n}", **fields)


def outbound(n: int, *to: str, at: datetime = NOW - timedelta(hours=1), **fields: Any) -> MailItem:
    """Mail Alice sent at ``at`` (in Sent Items)."""
    return MailItem(item_id=f"out-{n}", message_id=f"<m{n}@example.com>", folder="Sent Items",
                    subject=f"Offer {n}", body=f"Body of offer {n}", sender=Address(ALICE, "Alice"),
                    to=tuple(Address(t) for t in to), sent_at=at, received_at=at, change_key=f"ck-out-{n}",
                    **fields)


def attachment(attachment_id: str, size: int, *, name: str | None = None, inline: bool = False) -> AttachmentRef:
    return AttachmentRef(attachment_id, name or f"{attachment_id}.pdf", size, "application/pdf", inline)


def content(size: int, fill: bytes = b"x") -> bytes:
    return fill * size


# -- the world a run happens in -------------------------------------------------------------------
def job_settings(**overrides: Any) -> JobSettings:
    return JobSettings(mailbox=ALICE, mode=overrides.pop("mode", Mode.ALL), salesforce_user=OWNER, **overrides)


def org_settings(**overrides: Any) -> OrgSettings:
    return OrgSettings(internal_domains=("example.com",), **overrides)


class World:
    """A fake mailbox and org, the real state store and staging, and the steps run over them."""

    def __init__(self, tmp_path: Path, *, settings: JobSettings | None = None, org: OrgSettings | None = None,
                 folders: dict[str, list[Any]] | None = None, attachments: dict[str, Any] | None = None) -> None:
        self.settings = settings or job_settings()
        self.org_settings = org or org_settings()
        self.mailbox = FakeMailbox({"Inbox": [], "Sent Items": [], **(folders or {})}, attachments)
        self.org = FakeOrg(
            contacts=[
                {"Id": BOB, "CreatedDate": "2024-01-02T09:00:00.000+0000", "Email": "bob@client.com", "OwnerId": OWNER},
                {"Id": CAROL, "CreatedDate": "2024-02-02T09:00:00.000+0000", "Email": "Carol@Client.com",
                 "OwnerId": OWNER},
            ],
            leads=[{"Id": DAVE_LEAD, "CreatedDate": "2024-03-02T09:00:00.000+0000", "Email": "dave@lead.org",
                    "OwnerId": OWNER, "IsConverted": False}],
        )
        self.sources: Factory[FakeMailSource] = Factory(self.mailbox.connect)
        self.crms: Factory[FakeCrm] = Factory(self.org.connect)
        self.store = StateStore.from_url(f"sqlite:///{tmp_path / 'state.db'}")
        self.staging_root = tmp_path / "staging"

    def ctx(self, run_id: str) -> RunContext:
        return RunContext(JOB, self.settings, self.org_settings, run_id, self.staging_root)

    def run(self, run_id: str, interval: tuple[datetime, datetime] | None, now: datetime,
            steps: tuple[str, ...] = STEPS) -> dict[str, dict[str, Any]]:
        """The steps in order, as the DAG runs them; each step's counts (and ``finish``: the summary)."""
        ctx = self.ctx(run_id)
        counts: dict[str, dict[str, Any]] = {}
        for step in steps:
            if step == "extract":
                counts[step] = extract(ctx, self.sources, self.store, interval, now)
            elif step == "filter":
                counts[step] = filter_mail(ctx, self.store)
            elif step == "match":
                counts[step] = match(ctx, self.crms, self.store)
            elif step == "insert":
                counts[step] = insert_tasks(ctx, self.crms, self.store)
            elif step == "upload":
                counts[step] = upload_attachments(ctx, self.sources, self.crms, self.store)
            elif step == "finish":
                counts[step] = finish(ctx, self.sources, self.crms, self.store, {k: v for k, v in counts.items()})
        return counts

    def outcomes(self, run_id: str) -> dict[str, Outcome]:
        return {o.message_key: o for o in self.store.outcomes(JOB, run_id)}

    def ledger(self, *message_ids: str) -> dict[str, str]:
        """message id → the ledger state of its part 1."""
        rows = {r.message_key: r for r in self.store.ledger(JOB, [message_key(m) for m in message_ids])}
        return {m: rows[message_key(m)].state for m in message_ids if message_key(m) in rows}


@pytest.fixture
def make_world(tmp_path):
    made: list[World] = []

    def make(**kwargs: Any) -> World:
        home = tmp_path / f"world{len(made)}"
        home.mkdir()
        world = World(home, **kwargs)
        made.append(world)
        return world

    yield make
    for world in made:
        world.store.engine.dispose()


def key_of(message_id: str, part: int = 1) -> str:
    return idempotency_key(JOB, message_id, part)


# == 1. extract ===================================================================================
def test_extract_stages_every_folder_within_the_window_once_per_message(make_world):
    cc_self = outbound(5, "carol@client.com", at=NOW - timedelta(minutes=30))
    world = make_world(folders={
        "Inbox": [
            inbound(1, at=NOW - timedelta(hours=1)),
            inbound(2, at=NOW),  # the window's end is inclusive
            inbound(3, at=NOW - timedelta(days=2)),  # before the window (and its overlap)
            inbound(4, at=NOW + timedelta(minutes=1)),  # after the window
            Unreadable("in-bad", "Inbox", "unconvertible:ValueError"),
            replace(cc_self, item_id="in-5-copy", folder="Inbox"),  # Alice copied herself: same Message-ID
        ],
        "Sent Items": [cc_self, outbound(6, "dave@lead.org", at=NOW - timedelta(days=1, hours=1))],
    })
    ctx = world.ctx(RUN1)

    counts = extract(ctx, world.sources, world.store, INTERVAL, NOW)

    start = NOW - timedelta(days=1)  # a first sync reaches lookback_days back
    assert (counts["window_start"], counts["window_end"]) == (start.isoformat(), NOW.isoformat())
    staged = list(read_mail(ctx.path("mail.parquet")))
    assert sorted(i.message_id for i in staged) == ["<m1@client.com>", "<m2@client.com>", "<m5@example.com>"]
    assert Counter(i.message_id for i in staged)["<m5@example.com>"] == 1
    assert {i.item_id: i.folder for i in staged}["in-1"] == "Inbox"
    assert counts["extracted"] == 3 and counts["duplicates"] == 1 and counts["unreadable"] == 1
    assert counts["source"] == "ews"
    assert counts["source_requests"] == {"FindItem": 2, "GetFolder": 1}

    reads = world.mailbox.calls_to("read_folder")
    assert [c.args[0].path for c in reads] == ["Inbox", "Sent Items"]
    assert [c.args[0].is_sent for c in reads] == [False, True]
    for call in reads:
        _, read_start, read_end, cursor = call.args
        assert (read_start, read_end, cursor) == (start - EXTRACT_OVERLAP, NOW, None)

    assert world.store.outcomes(JOB, RUN1) == [
        Outcome(message_key("in-bad"), "skipped", "malformed", "unconvertible:ValueError")]
    assert world.sources.opened == 1


def test_extract_of_a_job_that_is_off_opens_no_mailbox(make_world):
    world = make_world(settings=job_settings(mode=Mode.OFF), folders={"Inbox": [inbound(1)]})
    ctx = world.ctx(RUN1)

    counts = extract(ctx, world.sources, world.store, INTERVAL, NOW)

    assert counts["extracted"] == 0
    assert world.sources.opened == 0
    assert world.mailbox.calls == []
    assert list(read_mail(ctx.path("mail.parquet"))) == []
    assert read_json(ctx.path("window.json"))["cursors"] == {}


def test_extract_stages_cursors_that_finish_saves_with_the_watermark(make_world):
    world = make_world(folders={"Inbox": [inbound(1)], "Sent Items": [outbound(2, "carol@client.com")]})
    ctx = world.ctx(RUN1)

    counts = {"extract": extract(ctx, world.sources, world.store, INTERVAL, NOW)}

    end_cursor = NOW.astimezone(UTC).isoformat()
    assert read_json(ctx.path("window.json"))["cursors"] == {"Inbox": end_cursor, "Sent Items": end_cursor}
    assert world.store.cursors(JOB, "ews") == {}  # until the run ends well
    assert world.store.watermark(JOB) is None

    finish(ctx, world.sources, world.crms, world.store, counts)

    assert world.store.cursors(JOB, "ews") == {"Inbox": end_cursor, "Sent Items": end_cursor}
    assert world.store.watermark(JOB) == NOW

    # The next scheduled run reads each folder from its cursor and moves both on.
    later = NOW + timedelta(hours=2)
    ctx2 = world.ctx(RUN2)
    counts2 = {"extract": extract(ctx2, world.sources, world.store, (NOW, later), later)}
    assert counts2["extract"]["window_start"] == NOW.isoformat()
    assert [c.args[3] for c in world.mailbox.calls_to("read_folder")[2:]] == [end_cursor, end_cursor]
    finish(ctx2, world.sources, world.crms, world.store, counts2)
    assert world.store.cursors(JOB, "ews") == {"Inbox": later.isoformat(), "Sent Items": later.isoformat()}
    assert world.store.watermark(JOB) == later


def test_a_backfill_reads_its_interval_without_cursors_and_moves_nothing(make_world):
    world = make_world(folders={"Inbox": [inbound(1, at=NOW - timedelta(days=2, hours=12))]})
    saved = {"Inbox": (NOW - timedelta(minutes=1)).isoformat(), "Sent Items": (NOW - timedelta(minutes=1)).isoformat()}
    world.store.create_schema()
    world.store.save_cursors(JOB, "ews", saved, "earlier")
    world.store.advance_watermark(JOB, NOW, "earlier")
    backfill = (NOW - timedelta(days=3), NOW - timedelta(days=2))
    ctx = world.ctx("backfill__2026-03-01T12:00:00+00:00")

    counts = {"extract": extract(ctx, world.sources, world.store, backfill, NOW)}

    reads = world.mailbox.calls_to("read_folder")
    assert len(reads) == 2
    assert all(c.args[1:] == (backfill[0] - EXTRACT_OVERLAP, backfill[1], None) for c in reads)
    assert [i.item_id for i in read_mail(ctx.path("mail.parquet"))] == ["in-1"]
    assert read_json(ctx.path("window.json"))["cursors"] == {}

    finish(ctx, world.sources, world.crms, world.store, counts)

    assert world.store.cursors(JOB, "ews") == saved
    assert world.store.watermark(JOB) == NOW


# == 2. filter ====================================================================================
def test_filter_in_designated_mode_keeps_designated_mail_only(make_world):
    world = make_world(settings=job_settings(mode=Mode.DESIGNATED), folders={"Inbox": [
        inbound(1),  # not designated
        inbound(2, categories=("CRM",)),  # designated by the category
        inbound(3, categories=("CRM", "DoNotSync")),  # DoNotSync wins
    ]})
    counts = world.run(RUN1, INTERVAL, NOW, ("extract", "filter"))["filter"]

    assert counts["candidates"] == 1
    assert counts["skipped_not_designated"] == 1
    assert counts["skipped_excluded_category"] == 1
    candidates = list(read_jsonl(world.ctx(RUN1).path("candidates.jsonl")))
    assert [c["item_id"] for c in candidates] == ["in-2"]
    assert candidates[0]["designated"] is True
    outcomes = world.outcomes(RUN1)
    assert outcomes[message_key("<m1@client.com>")].reason == "not_designated"
    assert outcomes[message_key("<m3@client.com>")].reason == "excluded_category"
    assert message_key("<m2@client.com>") not in outcomes


def test_filter_excludes_the_do_not_sync_category(make_world):
    world = make_world(folders={"Inbox": [inbound(1), inbound(2, categories=("donotsync",))]})
    counts = world.run(RUN1, INTERVAL, NOW, ("extract", "filter"))["filter"]

    assert counts["candidates"] == 1
    assert counts["skipped_excluded_category"] == 1
    assert world.outcomes(RUN1)[message_key("<m2@client.com>")] == Outcome(
        message_key("<m2@client.com>"), "skipped", "excluded_category", None)


def test_filter_skips_mail_already_recorded_by_an_earlier_run(make_world):
    world = make_world(folders={"Inbox": [inbound(1)], "Sent Items": [outbound(2, "carol@client.com")]})
    world.run(RUN1, INTERVAL, NOW, ("extract", "filter", "match", "insert"))
    assert world.ledger("<m1@client.com>", "<m2@example.com>") == {
        "<m1@client.com>": "created", "<m2@example.com>": "created"}

    # The run is cleared and re-run in Airflow: same interval, same mail.
    counts = world.run("scheduled__rerun", INTERVAL, NOW, ("extract", "filter"))["filter"]

    assert counts["candidates"] == 0
    assert counts["skipped_already_recorded"] == 2
    assert {o.reason for o in world.outcomes("scheduled__rerun").values()} == {"already_recorded"}
    assert list(read_jsonl(world.ctx("scheduled__rerun").path("candidates.jsonl"))) == []


# == 3. match =====================================================================================
def test_match_without_candidates_never_builds_a_salesforce_client(make_world):
    world = make_world(settings=job_settings(mode=Mode.DESIGNATED), folders={"Inbox": [inbound(1), inbound(2)]})
    counts = world.run(RUN1, INTERVAL, NOW, ("extract", "filter", "match"))

    assert counts["filter"]["candidates"] == 0
    assert counts["match"] == {"matched": 0, "salesforce_calls": 0}
    assert world.crms.opened == 0
    assert world.org.calls == []


def test_match_looks_every_candidate_up_in_one_query_round(make_world):
    world = make_world(folders={
        "Inbox": [inbound(1, "bob@client.com"), inbound(2, "eve@nowhere.net")],
        "Sent Items": [outbound(3, "dave@lead.org")],
    })
    counts = world.run(RUN1, INTERVAL, NOW, ("extract", "filter", "match"))["match"]

    queries = world.org.calls_to("query_each")
    assert len(queries) == 1
    statements = queries[0].args[0]
    assert sorted(s.split(" FROM ")[1].split()[0] for s in statements) == ["Contact", "Lead"]
    for statement in statements:
        for address in ("bob@client.com", "eve@nowhere.net", "dave@lead.org"):
            assert f"'{address}'" in statement
    assert world.org.calls_to("user_id") == []  # a literal User Id needs no lookup
    assert len(world.org.calls_to("describe_fields")) == 1

    assert counts["matched"] == 2 and counts["tasks"] == 2
    assert counts["skipped_not_matched"] == 1
    assert counts["salesforce_calls"] == world.crms.made[0].calls == 2  # describe + one Composite query
    assert world.outcomes(RUN1)[message_key("<m2@client.com>")].reason == "not_matched"

    rows = {r["item_id"]: r for r in read_jsonl(world.ctx(RUN1).path("tasks.jsonl"))}
    assert set(rows) == {"in-1", "out-3"}
    who = {item: [t["fields"]["WhoId"] for t in r["tasks"]] for item, r in rows.items()}
    assert who == {"in-1": [BOB], "out-3": [DAVE_LEAD]}
    assert all(t["fields"]["OwnerId"] == OWNER for r in rows.values() for t in r["tasks"])
    assert rows["in-1"]["tasks"][0]["key"] == key_of("<m1@client.com>")


def test_match_refuses_an_org_without_the_key_field(make_world):
    world = make_world(folders={"Inbox": [inbound(1)]})
    world.org.describe = [f for f in world.org.describe if f["name"] != IDEMPOTENCY_FIELD]
    world.run(RUN1, INTERVAL, NOW, ("extract", "filter"))

    with pytest.raises(SetupProblem, match=IDEMPOTENCY_FIELD):
        match(world.ctx(RUN1), world.crms, world.store)
    assert world.org.calls_to("query_each") == []


# == 4. insert ====================================================================================
def test_insert_upserts_each_task_once_and_a_second_insert_sends_nothing(make_world):
    world = make_world(folders={"Inbox": [inbound(1)], "Sent Items": [outbound(2, "carol@client.com")]})
    counts = world.run(RUN1, INTERVAL, NOW, ("extract", "filter", "match", "insert"))["insert"]

    assert counts["tasks_created"] == 2 and counts["tasks_failed"] == 0 and counts["tasks_existing"] == 0
    assert set(world.org.tasks) == {key_of("<m1@client.com>"), key_of("<m2@example.com>")}
    assert world.org.tasks[key_of("<m2@example.com>")]["WhoId"] == CAROL
    upserts = world.org.calls_to("upsert_tasks")
    assert len(upserts) == 1 and len(upserts[0].args[0]) == 2
    assert {o.outcome for o in world.outcomes(RUN1).values()} == {"recorded"}
    assert world.ledger("<m1@client.com>", "<m2@example.com>") == {
        "<m1@client.com>": "created", "<m2@example.com>": "created"}
    clients = world.crms.opened

    again = insert_tasks(world.ctx(RUN1), world.crms, world.store)  # an Airflow retry of the task

    assert again == {"tasks_created": 0, "tasks_existing": 2, "salesforce_calls": 0}
    assert world.crms.opened == clients
    assert len(world.org.calls_to("upsert_tasks")) == 1
    assert len(world.org.tasks) == 2


def test_insert_stores_a_refused_record_as_failed_and_records_the_rest(make_world):
    world = make_world(folders={"Inbox": [inbound(1), inbound(2), inbound(3)]})
    world.org.refuse_task(key_of("<m2@client.com>"), "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                          "Subject: bad value for restricted field: Hello 2")
    counts = world.run(RUN1, INTERVAL, NOW, ("extract", "filter", "match", "insert"))["insert"]

    assert counts["tasks_created"] == 2
    assert counts["tasks_failed"] == 1
    assert set(world.org.tasks) == {key_of("<m1@client.com>"), key_of("<m3@client.com>")}
    outcomes = world.outcomes(RUN1)
    failed = outcomes[message_key("<m2@client.com>")]
    assert (failed.outcome, failed.reason) == ("failed", "FIELD_CUSTOM_VALIDATION_EXCEPTION")
    assert "Hello 2" not in (failed.detail or "")  # Salesforce's message without the value it quotes
    assert outcomes[message_key("<m1@client.com>")].outcome == "recorded"
    assert outcomes[message_key("<m3@client.com>")].outcome == "recorded"
    assert world.ledger("<m1@client.com>", "<m2@client.com>", "<m3@client.com>") == {
        "<m1@client.com>": "created", "<m2@client.com>": "failed", "<m3@client.com>": "created"}


def test_insert_after_a_lost_answer_creates_no_second_task(make_world):
    world = make_world(folders={"Inbox": [inbound(1), inbound(2)]})
    world.run(RUN1, INTERVAL, NOW, ("extract", "filter", "match"))
    world.org.fail_next("upsert_tasks", TransientError("connection reset"), applied=True)

    with pytest.raises(TransientError):
        insert_tasks(world.ctx(RUN1), world.crms, world.store)
    assert len(world.org.tasks) == 2  # Salesforce did create them
    assert set(world.ledger("<m1@client.com>", "<m2@client.com>").values()) == {"claimed"}

    counts = insert_tasks(world.ctx(RUN1), world.crms, world.store)  # the retry

    assert counts["tasks_created"] == 0 and counts["tasks_updated"] == 2
    assert len(world.org.tasks) == 2
    assert set(world.ledger("<m1@client.com>", "<m2@client.com>").values()) == {"created"}
    assert {o.outcome for o in world.outcomes(RUN1).values()} == {"recorded"}


# == 5. upload ====================================================================================
def test_upload_sends_each_file_within_the_limit_once_linked_to_its_task(make_world):
    refs = (attachment("att-small", 10), attachment("att-limit", 1000), attachment("att-big", 1001),
            attachment("att-inline", 50, inline=True))
    world = make_world(settings=job_settings(record_all_attachments=True),
                       org=org_settings(attachment_max_bytes=1000),
                       folders={"Inbox": [inbound(1, attachments=refs)]},
                       attachments={r.attachment_id: content(r.size, r.attachment_id[4:5].encode()) for r in refs})
    counts = world.run(RUN1, INTERVAL, NOW, ("extract", "filter", "match", "insert", "upload"))

    assert counts["match"]["attachments_attachment_too_large"] == 1
    assert counts["upload"]["files_uploaded"] == 2
    assert counts["upload"].get("files_failed", 0) == 0
    task_id = world.org.tasks[key_of("<m1@client.com>")]["Id"]
    files = {f["PathOnClient"]: f for f in world.org.files}
    assert set(files) == {"att-small.pdf", "att-limit.pdf"}
    assert {f["FirstPublishLocationId"] for f in files.values()} == {task_id}
    assert files["att-limit.pdf"]["content"] == content(1000, b"l")
    assert files["att-small.pdf"]["key"] == attachment_key("<m1@client.com>", "att-small.pdf", 10)
    assert [c.args[0] for c in world.mailbox.calls_to("attachment_contents")] == [["att-small", "att-limit"]]
    stored = world.store.files(JOB, [message_key("<m1@client.com>")])
    assert {f.state for f in stored} == {"uploaded"} and len(stored) == 2
    clients = world.crms.opened

    again = upload_attachments(world.ctx(RUN1), world.sources, world.crms, world.store)

    assert again["files_uploaded"] == 0 and again["files_existing"] == 2
    assert len(world.org.files) == 2
    assert len(world.mailbox.calls_to("attachment_contents")) == 1
    assert world.crms.opened == clients


def _batch_world(make_world, sizes: list[int], *, max_bytes: int) -> World:
    refs = [attachment(f"att-{i}", size) for i, size in enumerate(sizes)]
    half = len(refs) // 2
    return make_world(
        settings=job_settings(record_all_attachments=True), org=org_settings(attachment_max_bytes=max_bytes),
        folders={"Inbox": [inbound(1, attachments=tuple(refs[:half])), inbound(2, attachments=tuple(refs[half:]))]},
        attachments={r.attachment_id: b"x" * min(r.size, 64) for r in refs})


def _batches(world: World) -> list[list[str]]:
    return [c.args[0] for c in world.mailbox.calls_to("attachment_contents")]


def test_upload_batches_respect_the_byte_bound(make_world, monkeypatch):
    monkeypatch.setattr(upload_module, "UPLOAD_BATCH_BYTES", 250)
    world = _batch_world(make_world, [100, 100, 100, 100], max_bytes=1000)
    counts = world.run(RUN1, INTERVAL, NOW, ("extract", "filter", "match", "insert", "upload"))["upload"]

    batches = _batches(world)
    assert counts["files_uploaded"] == 4
    assert len(batches) >= 2, f"all {sum(map(len, batches))} files read in one batch: {batches}"
    assert all(len(b) * 100 <= 250 for b in batches)
    assert len(world.org.calls_to("upload_files")) == len(batches)  # one Salesforce call per batch


def test_upload_batches_respect_the_default_byte_bound(make_world):
    mib = 1024 * 1024
    world = _batch_world(make_world, [4 * mib] * 7, max_bytes=5 * mib)  # 28 MiB against a 25 MiB bound
    counts = world.run(RUN1, INTERVAL, NOW, ("extract", "filter", "match", "insert", "upload"))["upload"]

    batches = _batches(world)
    assert counts["files_uploaded"] == 7
    assert [len(b) for b in batches] == [6, 1]
    assert all(len(b) * 4 * mib <= upload_module.UPLOAD_BATCH_BYTES for b in batches)
    assert len(world.org.calls_to("upload_files")) == 2


def test_an_attachment_the_source_cannot_serve_fails_alone_and_goes_up_later(make_world):
    refs = (attachment("att-1", 10), attachment("att-2", 20), attachment("att-3", 30))
    world = make_world(settings=job_settings(record_all_attachments=True),
                       folders={"Inbox": [inbound(1, attachments=refs)]},
                       attachments={"att-1": content(10), "att-2": OSError("attachment gone"), "att-3": content(30)})
    counts = world.run(RUN1, INTERVAL, NOW, ("extract", "filter", "match", "insert", "upload"))["upload"]

    assert counts["files_uploaded"] == 2
    assert counts["files_failed"] == 1
    assert sorted(f["PathOnClient"] for f in world.org.files) == ["att-1.pdf", "att-3.pdf"]
    states = {f.attachment_key: (f.state, f.error_code)
              for f in world.store.files(JOB, [message_key("<m1@client.com>")])}
    assert states[attachment_key("<m1@client.com>", "att-2.pdf", 20)] == ("failed", "attachment_unavailable:OSError")
    failed = [o for o in world.store.outcomes(JOB, RUN1) if o.outcome == "failed"]
    assert [(o.message_key, o.reason) for o in failed] == [(message_key("<m1@client.com>"), "attachment_unavailable:OSError")]
    (row,) = world.store.ledger(JOB, [message_key("<m1@client.com>")])
    assert not row.files_ok  # the email is owed a file: later runs re-read it
    assert [key for key, _, _ in world.store.retryable(JOB, 5)] == [message_key("<m1@client.com>")]

    world.mailbox.attachments["att-2"] = content(20)  # the server serves it again
    again = upload_attachments(world.ctx(RUN1), world.sources, world.crms, world.store)

    assert again["files_uploaded"] == 1 and again.get("files_failed", 0) == 0
    assert sorted(f["PathOnClient"] for f in world.org.files) == ["att-1.pdf", "att-2.pdf", "att-3.pdf"]
    assert len(world.org.calls_to("find_files")) == 1  # the failed file was looked for before re-sending
    (row,) = world.store.ledger(JOB, [message_key("<m1@client.com>")])
    assert row.files_ok and world.store.retryable(JOB, 5) == []


# == 6. finish ====================================================================================
def test_finish_writes_the_category_back_and_summarises_the_run(make_world):
    world = make_world(folders={
        "Inbox": [inbound(1, categories=("Blue",)), inbound(3, "eve@nowhere.net"), inbound(4, "zed@example.com")],
        "Sent Items": [outbound(2, "carol@client.com")],
    })
    counts = world.run(RUN1, INTERVAL, NOW)
    summary = counts["finish"]

    writes = world.mailbox.calls_to("add_category")
    assert len(writes) == 1
    targets, category = writes[0].args
    assert category == "CRM"
    assert sorted(targets, key=lambda t: t.item_id) == [
        CategoryTarget("in-1", "ck-in-1", ("Blue",)), CategoryTarget("out-2", "ck-out-2", ())]
    assert world.mailbox.item("in-1").categories == ("Blue", "CRM")
    marked = world.store.ledger(JOB, [message_key("<m1@client.com>"), message_key("<m2@example.com>")])
    assert len(marked) == 2 and all(r.category_marked for r in marked)
    assert world.store.unmarked(JOB) == []

    assert summary["extracted"] == 4
    assert summary["recorded"] == 2
    assert summary["failed"] == 0
    assert summary["skipped"] == {"internal_only": 1, "not_matched": 1}
    assert summary["tasks_created"] == 2
    assert summary["categories_written"] == 2
    assert summary["salesforce_calls"] == sum(c.calls for c in world.crms.made) == sum(
        c.get("salesforce_calls", 0) for step, c in counts.items() if step != "finish")
    requests: Counter[str] = Counter()
    for source in world.sources.made:  # one source per step that needed the mailbox
        requests.update(source.requests)
    assert summary["source"] == "ews"
    assert summary["source_requests_by_operation"] == dict(sorted(requests.items()))
    assert summary["source_requests"] == sum(requests.values()) == 4  # GetFolder, 2 FindItem, UpdateItem
    assert world.store.run(JOB, RUN1)["status"] == "success"
    assert world.store.run(JOB, RUN1)["counts"] == summary
    assert not world.ctx(RUN1).staging.exists()


# == 7. a whole run, twice ========================================================================
def test_two_runs_in_a_row_record_everything_once(make_world):
    world = make_world(
        settings=job_settings(shared_activities=True, record_all_attachments=True),
        folders={  # all within the last minutes of run 1: the next run's overlap reads them again
            "Inbox": [inbound(1, at=NOW - timedelta(minutes=2), attachments=(attachment("att-1", 10),))],
            "Sent Items": [outbound(2, "bob@client.com", "carol@client.com", at=NOW - timedelta(minutes=3)),
                           outbound(3, "dave@lead.org", at=NOW - timedelta(minutes=4))],
        },
        attachments={"att-1": content(10)})

    first = world.run(RUN1, INTERVAL, NOW)

    assert first["finish"]["recorded"] == 3 and first["finish"]["tasks_created"] == 3
    assert first["finish"]["relations_created"] == 1 and first["finish"]["attachments_uploaded"] == 1
    assert first["finish"]["categories_written"] == 3
    assert len(world.org.tasks) == 3
    task2 = world.org.tasks[key_of("<m2@example.com>")]["Id"]
    assert list(world.org.relations) == [(task2, CAROL)]  # Bob is the WhoId: the first relation already
    assert len(world.org.files) == 1
    clients, writes = world.crms.opened, len(world.mailbox.calls_to("add_category"))

    later = NOW + timedelta(minutes=30)
    second = world.run("manual__2026-03-04T12:30:00+00:00", None, later)  # Sync Now

    assert second["extract"]["extracted"] == 3  # seen again through the overlap
    assert second["filter"]["candidates"] == 0
    assert second["filter"]["skipped_already_recorded"] == 3
    summary = second["finish"]
    assert summary["window_start"] == NOW.isoformat() and summary["window_end"] == later.isoformat()
    assert (summary["recorded"], summary["tasks_created"], summary["attachments_uploaded"]) == (0, 0, 0)
    assert summary["skipped"] == {"already_recorded": 3}
    assert summary["categories_written"] == 0 and summary["salesforce_calls"] == 0
    assert len(world.org.tasks) == 3 and len(world.org.relations) == 1 and len(world.org.files) == 1
    assert world.crms.opened == clients  # no Salesforce client at all
    assert len(world.mailbox.calls_to("add_category")) == writes
    assert world.store.watermark(JOB) == later
    assert world.store.cursors(JOB, "ews") == {"Inbox": later.isoformat(), "Sent Items": later.isoformat()}
