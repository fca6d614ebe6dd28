"""The MailSource contract: what the run steps rely on, whichever mail source serves the mailbox.

Every case runs once per world in ``conftest.WORLDS`` (EWS today). Test mail is written in
the sandbox seed format, so the same cases seed a future Graph sandbox unchanged. The
cases only use the :class:`~email_sync.sources.base.MailSource` interface and the world's
hands on the server (seeding, the user's category edits, the server's request counter).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from email_sync.errors import SetupProblem
from email_sync.rules.models import Address, MailItem, Unreadable
from email_sync.sources.base import CategoryTarget, Folder, FolderRead

T0 = datetime(2024, 5, 1, tzinfo=UTC)
OWNER_NAME = "Contract Owner"


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mail(n: str, received: datetime, sent: datetime | None = None, **fields: object) -> dict[str, object]:
    """One message in the seed format; ``n`` makes its subject and Message-ID."""
    return {"subject": f"Mail {n}", "from": "Carol Client <carol@client.example>",
            "to": ["owner@example.invalid"], "sent": iso(sent or received), "received": iso(received),
            "message_id": f"<{n}@client.example>", "body": f"Body of {n}", **fields}


def read_all(source, folder: Folder, start: datetime, end: datetime, cursor: str | None = None):
    """(results, cursor) of one folder read, iterated to the end."""
    read = source.read_folder(folder, start, end, cursor)
    results = list(read)
    return results, read.cursor


def message_ids(results) -> set[str]:
    assert all(isinstance(r, MailItem) for r in results), [r for r in results if not isinstance(r, MailItem)]
    return {r.message_id for r in results}


def folder_of(world, path: str, sent_folders: tuple[str, ...] = ()) -> Folder:
    (folder,) = world.source.resolve_folders([path], sent_folders)
    return folder


# -- 1. folder resolution -------------------------------------------------------------------------

def test_resolve_folders_in_order_with_sent_decided_by_the_source(source_world):
    source_world.seed({"Inbox/Clients": [], "Sent Items/Clients": []})
    paths = ["Inbox", "Sent Items", "Inbox/Clients", "Sent Items/Clients"]
    folders = source_world.source.resolve_folders(paths)
    assert [f.path for f in folders] == paths
    assert [f.is_sent for f in folders] == [False, True, False, True]
    assert all(isinstance(f, Folder) and f.folder_id for f in folders)
    assert len({f.folder_id for f in folders}) == 4


def test_localised_sent_items_and_its_children_are_sent(source_world):
    source_world.seed({"Sent Items/Kunden": []})
    source_world.localise_sent_items("Gesendete Elemente")
    folders = source_world.source.resolve_folders(["Gesendete Elemente", "Gesendete Elemente/Kunden", "Inbox"])
    assert [(f.path, f.is_sent) for f in folders] == [
        ("Gesendete Elemente", True), ("Gesendete Elemente/Kunden", True), ("Inbox", False)]


def test_declared_sent_folders_are_outbound(source_world):
    source_world.seed({"Archive/Out/2024": [], "Archive/In": []})
    folders = source_world.source.resolve_folders(["Archive/Out", "Archive/Out/2024", "Archive/In", "Archive"],
                                                  sent_folders=["archive/out"])
    assert [f.is_sent for f in folders] == [True, True, False, False]
    without = source_world.source.resolve_folders(["Archive/Out"])
    assert [f.is_sent for f in without] == [False]


@pytest.mark.parametrize("missing", ["Inbox/Nope", "Nope", "Sent Items/Nope/Deeper"])
def test_unknown_folder_is_a_setup_problem_naming_it(source_world, missing):
    with pytest.raises(SetupProblem) as raised:
        source_world.source.resolve_folders(["Inbox", missing])
    assert missing in str(raised.value)


# -- 2. interval edges ------------------------------------------------------------------------------

def test_interval_excludes_start_and_includes_end_by_received_time_in_inbox(source_world):
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    second = timedelta(seconds=1)
    source_world.seed({"Inbox": [
        mail("at-end", end, sent=start - timedelta(hours=1)),  # sent before the interval: received counts
        mail("before", start - second),
        mail("at-start", start, sent=start - timedelta(minutes=5)),
        mail("after-start", start + second),
        mail("after-end", end + second, sent=end - timedelta(minutes=5)),  # sent inside, received after
    ]})
    results, _ = read_all(source_world.source, folder_of(source_world, "Inbox"), start, end)
    assert len(results) == 2
    assert message_ids(results) == {"<after-start@client.example>", "<at-end@client.example>"}


def test_interval_uses_sent_time_in_sent_items(source_world):
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    second = timedelta(seconds=1)
    outbound = {"from": "owner@example.invalid", "to": ["carol@client.example"]}
    source_world.seed({"Sent Items": [
        mail("s-at-start", start + timedelta(minutes=1), sent=start, **outbound),  # received inside: sent counts
        mail("s-at-end", end + timedelta(minutes=1), sent=end, **outbound),        # received after end
        mail("s-inside", start + timedelta(minutes=30), sent=start + second, **outbound),
        mail("s-after", end + second, sent=end + second, **outbound),
        mail("s-before", start, sent=start - second, **outbound),
    ]})
    folder = folder_of(source_world, "Sent Items")
    assert folder.is_sent
    results, _ = read_all(source_world.source, folder, start, end)
    assert len(results) == 2
    assert message_ids(results) == {"<s-inside@client.example>", "<s-at-end@client.example>"}
    assert all(r.in_sent_folder for r in results)


# -- 3. cursors ---------------------------------------------------------------------------------------

def test_cursor_is_known_only_after_iteration(source_world):
    source_world.seed({"Inbox": [mail("one", T0 + timedelta(minutes=1))]})
    read = source_world.source.read_folder(folder_of(source_world, "Inbox"), T0, T0 + timedelta(hours=1), None)
    assert isinstance(read, FolderRead)
    with pytest.raises(RuntimeError):
        _ = read.cursor
    assert message_ids(list(read)) == {"<one@client.example>"}
    assert read.cursor is not None


def test_incremental_reads_lose_nothing_and_repeat_nothing(source_world):
    t0, t1, t2 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    source_world.seed({"Inbox": [mail("a", t0 + timedelta(minutes=10)), mail("b", t1)]})
    inbox = folder_of(source_world, "Inbox")
    first, cursor = read_all(source_world.source, inbox, t0, t1)
    assert message_ids(first) == {"<a@client.example>", "<b@client.example>"}
    assert cursor is not None

    # New mail arrives after the first read; one of them exactly at t2.
    source_world.seed({"Inbox": [mail("c", t1 + timedelta(seconds=1)), mail("d", t2),
                                 mail("later", t2 + timedelta(minutes=1))]})
    second, cursor2 = read_all(source_world.source, inbox, t1, t2, cursor)
    assert len(second) == 2
    assert message_ids(second) == {"<c@client.example>", "<d@client.example>"}
    assert cursor2 is not None

    backfill, _ = read_all(source_world.new_source(), inbox, t0, t2, None)
    assert len(backfill) == 4
    assert message_ids(backfill) == {f"<{n}@client.example>" for n in "abcd"}


def test_cursor_of_the_last_good_run_covers_a_failed_run(source_world):
    """The caller keeps the old cursor when a run fails; the next run's interval starts later."""
    t0, t1, t2, t3 = (T0 + timedelta(hours=h) for h in range(4))
    source_world.seed({"Inbox": [mail("a", t0 + timedelta(minutes=5))]})
    inbox = folder_of(source_world, "Inbox")
    _, cursor = read_all(source_world.source, inbox, t0, t1)
    source_world.seed({"Inbox": [mail("in-failed-run", t1 + timedelta(minutes=5)),
                                 mail("in-this-run", t2 + timedelta(minutes=5))]})
    results, _ = read_all(source_world.source, inbox, t2, t3, cursor)
    assert message_ids(results) == {"<in-failed-run@client.example>", "<in-this-run@client.example>"}


# -- 4. Unreadable ----------------------------------------------------------------------------------

def test_fetch_of_missing_items_is_unreadable_never_an_error(source_world):
    ids = source_world.seed({"Inbox": [mail("good1", T0 + timedelta(minutes=1)),
                                       mail("gone", T0 + timedelta(minutes=2)),
                                       mail("good2", T0 + timedelta(minutes=3))]})["Inbox"]
    good1, gone, good2 = ids
    inbox = folder_of(source_world, "Inbox")
    read, _ = read_all(source_world.source, inbox, T0, T0 + timedelta(hours=1))
    by_id = {r.item_id: r for r in read}
    assert set(by_id) == set(ids)
    source_world.delete_message(gone)

    (only,) = list(source_world.source.fetch([(gone, inbox)]))
    assert isinstance(only, Unreadable)
    assert (only.item_id, only.folder) == (gone, "Inbox")
    assert only.reason

    garbage = "no-such-item-id"
    results = list(source_world.source.fetch([(good1, inbox), (gone, inbox), (garbage, inbox), (good2, inbox)]))
    assert len(results) == 4
    unreadable = [r for r in results if isinstance(r, Unreadable)]
    assert {r.item_id for r in unreadable} == {gone, garbage}
    assert all(r.reason and r.folder == "Inbox" for r in unreadable)
    fetched = {r.item_id: r for r in results if isinstance(r, MailItem)}
    assert set(fetched) == {good1, good2}
    for item_id, item in fetched.items():
        assert item.message_id == by_id[item_id].message_id
        assert item.folder == "Inbox"

    assert list(source_world.source.fetch([])) == []


# -- 5. attachments -----------------------------------------------------------------------------------

BINARY = bytes(range(256)) * 3 + b"\x00\r\n\x00"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def test_attachment_metadata_and_exact_contents(source_world):
    attachments = [
        {"name": "notes.txt", "content": "hello, attachment", "content_type": "text/plain"},
        {"name": "data.bin", "content_b64": base64.b64encode(BINARY).decode(), "content_type": "application/octet-stream"},
        {"name": "logo.png", "content_b64": base64.b64encode(PNG).decode(), "content_type": "image/png",
         "is_inline": True, "content_id": "logo@client.example"},
    ]
    source_world.seed({"Inbox": [mail("att", T0 + timedelta(minutes=1), attachments=attachments,
                                      body='<p>See <img src="cid:logo@client.example"></p>'),
                                 mail("plain", T0 + timedelta(minutes=2))]})
    results, _ = read_all(source_world.source, folder_of(source_world, "Inbox"), T0, T0 + timedelta(hours=1))
    by_mid = {r.message_id: r for r in results}
    assert by_mid["<plain@client.example>"].attachments == ()
    refs = by_mid["<att@client.example>"].attachments
    expected_bytes = {"notes.txt": b"hello, attachment", "data.bin": BINARY, "logo.png": PNG}
    assert sorted((a.name, a.size, a.content_type, a.is_inline) for a in refs) == sorted([
        ("notes.txt", 17, "text/plain", False),
        ("data.bin", len(BINARY), "application/octet-stream", False),
        ("logo.png", len(PNG), "image/png", True),
    ])
    assert len({a.attachment_id for a in refs}) == 3
    by_name = {a.name: a for a in refs}

    order = ["logo.png", "notes.txt", "data.bin"]  # not the item's order: answers follow the request
    contents = source_world.source.attachment_contents([by_name[n].attachment_id for n in order])
    assert contents == [expected_bytes[n] for n in order]
    assert source_world.source.attachment_contents([]) == []


@pytest.mark.parametrize("how", ["removed on the server", "unknown id"])
def test_unservable_attachment_is_an_exception_in_its_slot(source_world, how):
    attachments = [{"name": f"part{i}.txt", "content": f"content {i}"} for i in range(3)]
    source_world.seed({"Inbox": [mail("att", T0 + timedelta(minutes=1), attachments=attachments)]})
    (item,), _ = read_all(source_world.source, folder_of(source_world, "Inbox"), T0, T0 + timedelta(hours=1))
    ids = [a.attachment_id for a in sorted(item.attachments, key=lambda a: a.name)]
    if how == "unknown id":
        ids[1] = "no-such-attachment-id"
    else:
        source_world.break_attachment(ids[1])
    contents = source_world.source.attachment_contents(ids)
    assert len(contents) == 3
    assert contents[0] == b"content 0"
    assert isinstance(contents[1], Exception)
    assert contents[2] == b"content 2"


# -- 6. category write-back ---------------------------------------------------------------------------

def _read_targets(world, start: datetime = T0, end: datetime = T0 + timedelta(hours=1)) -> dict[str, MailItem]:
    results, _ = read_all(world.source, folder_of(world, "Inbox"), start, end)
    return {r.message_id: r for r in results}


def target(item: MailItem) -> CategoryTarget:
    return CategoryTarget(item.item_id, item.change_key, item.categories)


def test_add_category_keeps_the_users_categories(source_world):
    source_world.seed({"Inbox": [mail("tagged", T0 + timedelta(minutes=1), categories=["Customer", "Blue"]),
                                 mail("done", T0 + timedelta(minutes=2), categories=["Blue", "crm"]),
                                 mail("bare", T0 + timedelta(minutes=3))]})
    items = _read_targets(source_world)
    tagged, done, bare = (items[f"<{n}@client.example>"] for n in ("tagged", "done", "bare"))
    assert tagged.categories == ("Customer", "Blue")

    returned = source_world.source.add_category([target(tagged), target(done), target(bare)], "CRM")
    assert sorted(returned) == sorted([tagged.item_id, done.item_id, bare.item_id])
    assert sorted(source_world.categories_of(tagged.item_id)) == ["Blue", "CRM", "Customer"]
    assert source_world.categories_of(done.item_id) == ["Blue", "crm"]  # untouched: already carried it
    assert source_world.categories_of(bare.item_id) == ["CRM"]


def test_item_already_carrying_the_category_needs_no_request(source_world):
    source_world.seed({"Inbox": [mail("done", T0 + timedelta(minutes=1), categories=["crm"])]})
    (done,) = _read_targets(source_world).values()
    before = source_world.server_requests()
    assert source_world.source.add_category([target(done)], "CRM") == [done.item_id]
    assert source_world.server_requests() == before
    assert source_world.categories_of(done.item_id) == ["crm"]


def test_category_the_user_added_after_the_read_survives_the_write_back(source_world):
    source_world.seed({"Inbox": [mail("tagged", T0 + timedelta(minutes=1), categories=["Customer"])]})
    (item,) = _read_targets(source_world).values()
    source_world.set_categories(item.item_id, ["Customer", "Urgent"])  # in Outlook, between read and write
    assert source_world.source.add_category([target(item)], "CRM") == [item.item_id]
    assert sorted(source_world.categories_of(item.item_id)) == ["CRM", "Customer", "Urgent"]


def test_refused_item_is_left_out_of_the_returned_ids(source_world):
    ids = source_world.seed({"Inbox": [mail("kept", T0 + timedelta(minutes=1)),
                                       mail("gone", T0 + timedelta(minutes=2))]})["Inbox"]
    items = _read_targets(source_world)
    kept, gone = items["<kept@client.example>"], items["<gone@client.example>"]
    assert {kept.item_id, gone.item_id} == set(ids)
    source_world.delete_message(gone.item_id)
    assert source_world.source.add_category([target(kept), target(gone)], "CRM") == [kept.item_id]
    assert source_world.categories_of(kept.item_id) == ["CRM"]


# -- 7. request counters ------------------------------------------------------------------------------

def _delta(after: dict[str, int], before: dict[str, int]) -> int:
    return sum(after.values()) - sum(before.values())


def test_requests_are_counted_per_instance_and_match_the_server(source_world):
    source_world.seed({"Inbox": [mail(f"m{i}", T0 + timedelta(minutes=i)) for i in range(1, 6)],
                       "Sent Items": [mail("s1", T0 + timedelta(minutes=7), **{"from": "owner@example.invalid"})]})
    server_before = source_world.server_requests()
    first = source_world.new_source()
    assert isinstance(first.requests, Mapping)
    inbox, sent = first.resolve_folders(["Inbox", "Sent Items"])
    results, _ = read_all(first, inbox, T0, T0 + timedelta(hours=1))
    assert len(results) == 5
    read_all(first, sent, T0, T0 + timedelta(hours=1))
    counted = dict(first.requests)
    assert counted and all(isinstance(op, str) and isinstance(n, int) and n > 0 for op, n in counted.items())
    assert sum(counted.values()) == _delta(source_world.server_requests(), server_before)

    # A second instance counts only its own requests (from its creation on), and the first
    # does not see them: counting is per instance, not process-wide.
    server_before = source_world.server_requests()
    second = source_world.new_source()
    (inbox2,) = second.resolve_folders(["Inbox"])
    read_all(second, inbox2, T0, T0 + timedelta(hours=1))
    assert dict(first.requests) == counted
    assert sum(second.requests.values()) == _delta(source_world.server_requests(), server_before) > 0

    # Re-reads, attachments and the write-back are counted too.
    server_before = source_world.server_requests()
    before = sum(first.requests.values())
    list(first.fetch([(results[0].item_id, inbox)]))
    first.add_category([target(results[0])], "CRM")
    assert sum(first.requests.values()) - before == _delta(source_world.server_requests(), server_before) > 0


# -- 8. MailItem fields -------------------------------------------------------------------------------

def test_mail_item_fields(source_world):
    owner = source_world.mailbox
    received = T0 + timedelta(hours=9, minutes=0, seconds=5)
    sent = T0 + timedelta(hours=8, minutes=59)
    source_world.seed({
        "Inbox/Clients": [{
            "subject": "Quote request", "from": "Carol Client <carol@client.example>",
            "to": [owner, "Dave Client <dave@client.example>"], "cc": ["Erin <erin@client.example>"],
            "sent": iso(sent), "received": iso(received), "body": "<p>Please quote</p>",
            "message_id": "<q1@client.example>", "references": ["<q0@client.example>"],
            "in_reply_to": "<q0@client.example>", "categories": ["Customer"],
        }],
        "Sent Items": [{
            "subject": "RE: Quote request", "from": owner, "to": ["Carol Client <carol@client.example>"],
            "sent": iso(received + timedelta(hours=1)), "received": iso(received + timedelta(hours=1)),
            "body": "Here it is", "message_id": "<r1@example.com>", "in_reply_to": "<q1@client.example>",
            "references": ["<q0@client.example>", "<q1@client.example>"],
        }],
    })
    clients, sent_items = source_world.source.resolve_folders(["Inbox/Clients", "Sent Items"])
    (item,), _ = read_all(source_world.source, clients, T0, T0 + timedelta(days=1))
    (reply,), _ = read_all(source_world.source, sent_items, T0, T0 + timedelta(days=1))

    assert isinstance(item, MailItem)
    assert item.message_id == "<q1@client.example>"
    assert item.folder == "Inbox/Clients"
    assert item.in_sent_folder is False
    assert item.subject == "Quote request"
    assert item.sender == Address("carol@client.example", "Carol Client")
    assert [a.email for a in item.to] == [owner, "dave@client.example"]
    assert item.to[1] == Address("dave@client.example", "Dave Client")
    assert item.cc == (Address("erin@client.example", "Erin"),)
    assert item.bcc == ()
    for when, expected in ((item.sent_at, sent), (item.received_at, received)):
        assert when is not None and when.tzinfo is not None and when.utcoffset() == timedelta(0)
        assert when == expected
    assert item.categories == ("Customer",)
    assert item.in_reply_to == "<q0@client.example>"
    assert item.references == ("<q0@client.example>",)
    assert "Please quote" in item.body and item.body_is_html
    assert item.item_id and item.attachments == ()

    assert reply.folder == "Sent Items"
    assert reply.in_sent_folder is True
    assert reply.message_id == "<r1@example.com>"
    assert reply.sender is not None and reply.sender.email == owner
    assert reply.to == (Address("carol@client.example", "Carol Client"),)
    assert reply.cc == ()
    assert reply.in_reply_to == "<q1@client.example>"
    assert reply.references == ("<q0@client.example>", "<q1@client.example>")
    assert reply.categories == ()
    assert reply.sent_at == received + timedelta(hours=1) and reply.sent_at.utcoffset() == timedelta(0)
    assert "Here it is" in reply.body and not reply.body_is_html


def test_message_without_message_id_has_an_identity_that_survives_a_move(source_world):
    from email_sync.rules.keys import email_identity

    entry = mail("x", T0 + timedelta(minutes=1))
    del entry["message_id"]
    item_id = source_world.add_message("Inbox", **entry)
    copy_id = source_world.add_message("Inbox/Clients", **entry)  # the same email, filed elsewhere
    (item,), _ = read_all(source_world.source, folder_of(source_world, "Inbox"), T0, T0 + timedelta(hours=1))
    (moved,), _ = read_all(source_world.source, folder_of(source_world, "Inbox/Clients"), T0, T0 + timedelta(hours=1))
    assert (item.item_id, moved.item_id) == (item_id, copy_id) and item_id != copy_id
    assert item.message_id == moved.message_id == ""
    assert email_identity(item) == email_identity(moved)  # keys do not depend on where it is
    assert email_identity(item).endswith("@no-message-id.email-sync>")


# -- 9. item kinds: meetings, appointments, receipts, reports, automatic replies (issue 14.4) ---------

ITEM_CLASSES = [
    "IPM.Note", "IPM.Schedule.Meeting.Request", "IPM.Schedule.Meeting.Resp.Pos", "IPM.Schedule.Meeting.Resp.Neg",
    "IPM.Schedule.Meeting.Resp.Tent", "IPM.Schedule.Meeting.Canceled", "IPM.Appointment", "REPORT.IPM.Note.IPNRN",
    "REPORT.IPM.Note.IPNNRN", "REPORT.IPM.Note.DR", "REPORT.IPM.Note.NDR", "IPM.Note.Rules.OofTemplate.Microsoft",
    "IPM.Note.Rules.ReplyTemplate.Microsoft",
]


def test_item_class_and_auto_submitted_come_through(source_world):
    """Every kind of item a mail folder holds is read as a MailItem with its class (none is
    Unreadable, none is presented as a plain note), and the Auto-Submitted header of another
    server's automatic reply comes with it; the rules skip each with its own reason."""
    from email_sync.rules.classify import SkipReason, classify, compile_rules
    from email_sync.rules.settings import JobSettings, Mode, OrgSettings

    entries = [mail(f"kind{n}", T0 + timedelta(minutes=n + 1), item_class=item_class, to=[source_world.mailbox])
               for n, item_class in enumerate(ITEM_CLASSES)]
    entries.append(mail("away", T0 + timedelta(minutes=30), to=[source_world.mailbox],
                        headers=[["Auto-Submitted", "auto-replied"]]))
    entries.append(mail("robot", T0 + timedelta(minutes=31), to=[source_world.mailbox],
                        headers=[["Auto-Submitted", "auto-generated"]]))
    source_world.seed({"Inbox": entries})
    results, _ = read_all(source_world.source, folder_of(source_world, "Inbox"), T0, T0 + timedelta(hours=1))
    assert all(isinstance(r, MailItem) for r in results), [r for r in results if not isinstance(r, MailItem)]
    by_mid = {r.message_id or r.subject: r for r in results}
    assert len(results) == len(entries)
    for n, item_class in enumerate(ITEM_CLASSES):
        item = by_mid.get(f"<kind{n}@client.example>") or by_mid[f"Mail kind{n}"]  # an appointment has no Message-ID
        assert item.item_class == item_class
        assert item.subject == f"Mail kind{n}" and item.received_at == T0 + timedelta(minutes=n + 1)
        assert item.auto_submitted is None
    assert by_mid["<kind1@client.example>"].sender == Address("carol@client.example", "Carol Client")
    assert by_mid["<away@client.example>"].auto_submitted == "auto-replied"
    assert by_mid["<robot@client.example>"].auto_submitted == "auto-generated"
    assert by_mid["<away@client.example>"].item_class == "IPM.Note"

    rules = compile_rules(JobSettings(mailbox=source_world.mailbox, mode=Mode.ALL, salesforce_user="u"),
                          OrgSettings(internal_domains=("example.com",)))
    reasons = [classify(r, rules).reason for r in sorted(results, key=lambda r: r.received_at)]
    assert reasons == [None, *[SkipReason.MEETING_MESSAGE] * 5, SkipReason.CALENDAR_ITEM, *[SkipReason.RECEIPT] * 3,
                       SkipReason.NON_DELIVERY_REPORT, SkipReason.AUTOMATIC_REPLY, SkipReason.AUTOMATIC_REPLY,
                       SkipReason.AUTOMATIC_REPLY, SkipReason.AUTOMATIC_MESSAGE]


def test_fetch_returns_item_kinds_too(source_world):
    ids = source_world.seed({"Inbox": [mail("m", T0 + timedelta(minutes=1), item_class="IPM.Schedule.Meeting.Request"),
                                       mail("a", T0 + timedelta(minutes=2), item_class="IPM.Appointment")]})["Inbox"]
    inbox = folder_of(source_world, "Inbox")
    results = list(source_world.source.fetch([(i, inbox) for i in ids]))
    assert [(type(r).__name__, r.item_class) for r in results] == [
        ("MailItem", "IPM.Schedule.Meeting.Request"), ("MailItem", "IPM.Appointment")]


# -- 10. attachments as the sender named them; attached items listed (issue 14.10) --------------------

def test_attachment_names_as_given_and_item_attachments_listed(source_world):
    """The source reports names exactly as the server has them (the rules make the upload name)
    and lists an attached email as an attachment of kind "item"; file contents still come."""
    attachments = [
        {"name": "../../etc/passwd", "content": "root"},
        {"name": "C:\\x\\y.pdf", "content": "%PDF"},
        {"item": {"subject": "Original request", "from": "dave@client.example", "to": ["carol@client.example"],
                  "body": "the forwarded email"}},
        {"name": "smime.p7s", "content_b64": base64.b64encode(b"\x30\x82sig").decode(),
         "content_type": "application/pkcs7-signature"},
    ]
    source_world.seed({"Inbox": [mail("fwd", T0 + timedelta(minutes=1), attachments=attachments)]})
    (item,), _ = read_all(source_world.source, folder_of(source_world, "Inbox"), T0, T0 + timedelta(hours=1))
    by_name = {a.name: a for a in item.attachments}
    assert set(by_name) == {"../../etc/passwd", "C:\\x\\y.pdf", "Original request", "smime.p7s"}
    assert [(a.kind, a.is_inline) for a in (by_name["Original request"],)] == [("item", False)]
    assert by_name["Original request"].size > 0
    assert {a.kind for n, a in by_name.items() if n != "Original request"} == {"file"}
    assert by_name["smime.p7s"].content_type == "application/pkcs7-signature"
    contents = source_world.source.attachment_contents([by_name["../../etc/passwd"].attachment_id,
                                                        by_name["C:\\x\\y.pdf"].attachment_id])
    assert contents == [b"root", b"%PDF"]
