"""SalesforceCrm against the Salesforce sandbox with unmodified simple-salesforce.

Every test asserts the exact requests made, from both sides: ``crm.calls`` (what the client
counted) and ``sandbox.calls`` (what the server saw, per operation).
"""

from __future__ import annotations

import hashlib
import random
import socket
import time
from collections.abc import Iterator

import pytest
from simple_salesforce import Salesforce

from email_sync.crm.salesforce import (
    AuthenticationFailed,
    FileUpload,
    BudgetExhausted,
    SetupProblem,
    RecordResult,
    SalesforceCrm,
    SalesforceError,
)
from email_sync.rules.keys import IDEMPOTENCY_FIELD
from sandbox.salesforce import SalesforceSandbox

N_CONTACTS = 60
SEED = {
    "users": [
        {"Username": "sync@acme.example", "Email": "sync@acme.example", "LastName": "Sync"},
        {"Username": "gone@acme.example", "Email": "gone@acme.example", "LastName": "Gone", "IsActive": False},
    ],
    "contacts": [{"FirstName": f"C{i}", "LastName": "Customer", "Email": f"c{i}@customer.example"}
                 for i in range(N_CONTACTS)],
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox(SEED) as sb:
        yield sb


@pytest.fixture(autouse=True)
def clean(request):
    yield
    if "sandbox" in request.fixturenames:
        sb = request.getfixturevalue("sandbox")
        sb.faults.clear()
        sb.clear_record_faults()


@pytest.fixture(scope="module")
def contacts(sandbox) -> list[str]:
    return [r["Id"] for r in sandbox.org.records("Contact")]


class Clock:
    """Records the sleeps SalesforceCrm asks for instead of sleeping."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def make_crm(sb: SalesforceSandbox, **kwargs) -> tuple[SalesforceCrm, Clock]:
    clock = Clock()
    kwargs.setdefault("rng", random.Random(7))
    return SalesforceCrm(sb.client(), sleep=clock, **kwargs), clock


def key(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:40]


def task(k: str, subject: str = "Re: quote", **extra) -> tuple[str, dict]:
    return k, {"Subject": subject, "Status": "Completed", "TaskSubtype": "Email", "ActivityDate": "2026-03-02",
               IDEMPOTENCY_FIELD: k, **extra}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}


def tasks_with_key(sb: SalesforceSandbox, keys: list[str]) -> list[dict]:
    wanted = set(keys)
    return [t for t in sb.org.records("Task") if t.get(IDEMPOTENCY_FIELD) in wanted]


# -- nothing to do, nothing sent ------------------------------------------------------------------
def test_empty_inputs_make_no_calls(sandbox):
    crm, clock = make_crm(sandbox)
    before = sandbox.calls.snapshot()
    assert crm.upsert_tasks([]) == []
    assert crm.ensure_task_relations({}, check_existing=True) == []
    assert crm.ensure_task_relations({"00T000000000001AAA": []}, check_existing=True) == []
    assert crm.find_files([]) == []
    assert crm.query_many([]) == []
    crm.check_budget(0, reserve=10_000_000)
    assert crm.user_id("005000000000001AAA") == "005000000000001AAA"
    assert crm.api_usage() is None
    assert crm.calls == 0 and sandbox.calls.snapshot() == before and clock.sleeps == []


# -- reading --------------------------------------------------------------------------------------
def test_describe_query_and_user_lookup(sandbox):
    crm, _ = make_crm(sandbox)
    fields = {f["name"]: f for f in crm.describe_fields("Task")}
    assert fields[IDEMPOTENCY_FIELD]["externalId"] is True
    assert fields["Subject"]["length"] == 255 and fields["Description"]["length"] == 32000
    assert set(fields["Description"]) == {"name", "length", "byteLength", "externalId", "type"}
    assert crm.calls == 1

    owner = crm.user_id("Sync@Acme.example")
    assert owner == sandbox.org.default_user_id and crm.calls == 2
    with pytest.raises(SalesforceError, match="gone@acme.example.*inactive"):
        crm.user_id("gone@acme.example")
    with pytest.raises(SalesforceError, match="'nobody@acme.example' not found"):
        crm.user_id("nobody@acme.example")
    assert crm.calls == 4
    assert crm.api_usage() == (sandbox.api_usage, 15000)

    rows = crm.query("SELECT Id, Email, Owner.Username FROM Contact WHERE Email = 'c3@customer.example'")
    assert rows == [{"Id": rows[0]["Id"], "Email": "c3@customer.example", "Owner": {"Username": "sync@acme.example"}}]

    with pytest.raises(SalesforceError) as exc:
        crm.query("SELECT Id FROM Contact WHERE Email = 'unterminated")
    assert exc.value.error_code == "MALFORMED_QUERY" and exc.value.status == 400
    assert sandbox.session_id not in str(exc.value)
    assert crm.calls == 6  # a 400 is not retried


def test_query_follows_pages():
    seed = {"org": {"query_batch_size": 200},
            "contacts": [{"LastName": f"P{i}", "Email": f"p{i}@x.example"} for i in range(450)]}
    with SalesforceSandbox(seed) as sb:
        crm, _ = make_crm(sb)
        rows = crm.query_many(["SELECT Id, Email FROM Contact", "SELECT Id FROM Contact WHERE Email = 'p1@x.example'"])
        assert len(rows) == 451 and all("attributes" not in r for r in rows)
        # Query subrequests of Composite calls: the first carries both statements, then each
        # "query more" page follows the one before it (pages of 200, 200 and 50 rows).
        assert sb.calls.snapshot() == {"composite": 3} and crm.calls == 3


# -- Tasks ----------------------------------------------------------------------------------------
def test_upsert_450_tasks_in_three_calls_and_twice_creates_once(sandbox, contacts):
    crm, _ = make_crm(sandbox)
    keys = [key("upsert450", i) for i in range(450)]
    records = [task(k, f"Quote {i}", WhoId=contacts[i % N_CONTACTS]) for i, k in enumerate(keys)]
    before = sandbox.calls.snapshot()
    first = crm.upsert_tasks(records)
    assert delta(before, sandbox.calls.snapshot()) == {"composite.sobjects.upsert": 3} and crm.calls == 3
    assert [r.key for r in first] == keys and all(r.ok and r.created and r.id.startswith("00T") for r in first)
    assert len(tasks_with_key(sandbox, keys)) == 450

    # A re-send matches by key. TaskSubtype is create-only, so Salesforce refuses it on the update
    # path; those records go again without it: 3 + 3 calls, and still no duplicate.
    before = sandbox.calls.snapshot()
    second = crm.upsert_tasks([(k, {**f, "Subject": f["Subject"] + " (edited)"}) for k, f in records])
    assert delta(before, sandbox.calls.snapshot()) == {"composite.sobjects.upsert": 6} and crm.calls == 9
    assert [r.id for r in second] == [r.id for r in first] and all(r.ok and not r.created for r in second)
    stored = tasks_with_key(sandbox, keys)
    assert len(stored) == 450 and all(t["Subject"].endswith("(edited)") for t in stored)
    assert {t["TaskSubtype"] for t in stored} == {"Email"}


def test_resend_without_create_only_fields_costs_nothing_extra(sandbox):
    crm, _ = make_crm(sandbox)
    k = key("plain-resend")
    fields = {"Subject": "No subtype", "Status": "Completed", IDEMPOTENCY_FIELD: k}
    first = crm.upsert_tasks([(k, fields)])[0]
    second = crm.upsert_tasks([(k, {**fields, "Subject": "Changed"})])[0]
    assert crm.calls == 2 and second.id == first.id and (first.created, second.created) == (True, False)
    # A refusal naming another field is reported, not retried.
    sandbox.fail_records("Task", field="Subject", contains="bad", status_code="INVALID_FIELD_FOR_INSERT_UPDATE",
                         message="Unable to create/update fields: Subject. Please check ...", fields=["Subject"])
    refused = crm.upsert_tasks([(k, {**fields, "Subject": "bad"})])[0]
    assert refused.error_code == "INVALID_FIELD_FOR_INSERT_UPDATE" and crm.calls == 3
    # TaskSubtype refused first, then (second pass, without it) the Subject rule: reported.
    refused = crm.upsert_tasks([(k, {**fields, "Subject": "bad", "TaskSubtype": "Email"})])[0]
    assert refused.error_code == "INVALID_FIELD_FOR_INSERT_UPDATE" and "Subject" in refused.error_message
    assert crm.calls == 5


def test_per_record_errors_do_not_fail_the_rest(sandbox):
    crm, _ = make_crm(sandbox)
    keys = [key("errors", i) for i in range(5)]
    records = [task(k, f"Ok {i}") for i, k in enumerate(keys)]
    records[1] = task(keys[1], "s" * 256)  # Subject holds 255
    records[3] = task(keys[3], "REJECT me")
    sandbox.fail_records("Task", field="Subject", contains="REJECT", message="Blocked by a validation rule")
    results = crm.upsert_tasks(records)
    assert crm.calls == 1
    assert [r.ok for r in results] == [True, False, True, False, True]
    assert results[1].error_code == "STRING_TOO_LONG" and "max length=255" in results[1].error_message
    assert "sss" not in results[1].error_message  # the quoted value (mail content) is never kept
    assert (results[3].error_code, results[3].error_message) == ("FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                                                 "Blocked by a validation rule")
    assert results[1] == RecordResult(keys[1], None, False, "STRING_TOO_LONG", results[1].error_message)
    assert len(tasks_with_key(sandbox, keys)) == 3


def test_above_the_threshold_a_bulk_job_upserts_with_per_record_failures(sandbox, contacts):
    crm, clock = make_crm(sandbox, bulk_threshold=50, bulk_poll_seconds=0.25)
    keys = [key("bulk", i) for i in range(120)]
    tricky = 'Line one, with a comma\nLine "two" — ünïcødé 😀\r\nthird,,"" line\n'
    records = [task(k, f'Bulk "{i}", café', WhoId=contacts[i % N_CONTACTS], Description=tricky + str(i))
               for i, k in enumerate(keys)]
    records[7] = task(keys[7], "x" * 300)
    records[64] = task(keys[64], "REJECT in bulk")
    sandbox.fail_records("Task", field="Subject", contains="REJECT", status_code="CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
                         message="Trigger says: no")
    before = sandbox.calls.snapshot()
    results = crm.upsert_tasks(records)
    assert delta(before, sandbox.calls.snapshot()) == {
        "bulk2.createJob": 1, "bulk2.upload": 1, "bulk2.uploadComplete": 1, "bulk2.getJob": 1,
        "bulk2.successfulResults": 1, "bulk2.failedResults": 1}
    assert crm.calls == 6 and clock.sleeps == [0.25]  # one wait before the (only) poll

    assert [r.key for r in results] == keys
    assert [i for i, r in enumerate(results) if not r.ok] == [7, 64]
    assert results[7].error_code == "STRING_TOO_LONG" and "max length=255" in results[7].error_message
    assert (results[64].error_code, results[64].error_message) == ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
                                                                   "Trigger says: no")
    assert all(r.created and r.id.startswith("00T") for i, r in enumerate(results) if i not in (7, 64))
    stored = {t[IDEMPOTENCY_FIELD]: t for t in tasks_with_key(sandbox, keys)}
    assert len(stored) == 118
    assert stored[keys[3]]["Subject"] == 'Bulk "3", café' and stored[keys[3]]["Description"] == tricky + "3"
    assert stored[keys[3]]["Id"] == results[3].id and stored[keys[3]]["WhoId"] == contacts[3]

    # The same keys again, fixed: no duplicates. The 118 existing Tasks are refused TaskSubtype
    # (create-only) and go again without it in a second job, which has no failures.
    sandbox.clear_record_faults()
    records[7] = task(keys[7], "fixed")
    records[64] = task(keys[64], "fixed too")
    before = sandbox.calls.snapshot()
    again = crm.upsert_tasks(records)
    assert delta(before, sandbox.calls.snapshot()) == {
        "bulk2.createJob": 2, "bulk2.upload": 2, "bulk2.uploadComplete": 2, "bulk2.getJob": 2,
        "bulk2.successfulResults": 2, "bulk2.failedResults": 1}
    assert all(r.ok for r in again) and [r.created for r in again].count(True) == 2
    assert [r.id for i, r in enumerate(again) if i not in (7, 64)] == [
        r.id for i, r in enumerate(results) if i not in (7, 64)]
    assert len(tasks_with_key(sandbox, keys)) == 120


def test_bulk_polls_with_growing_waits():
    with SalesforceSandbox({"org": {"bulk_in_progress_polls": 3}}) as sb:
        crm, clock = make_crm(sb, bulk_threshold=1, bulk_poll_seconds=0.5, bulk_poll_max_seconds=1.5)
        results = crm.upsert_tasks([task(key("poll", i)) for i in range(3)])
        assert all(r.ok and r.created for r in results)
        assert sb.calls.get("bulk2.getJob") == 4 and clock.sleeps == [0.5, 1.0, 1.5, 1.5]
        assert crm.calls == sb.calls.total == 8


def test_missing_external_id_field():
    with SalesforceSandbox({"org": {"has_external_id_field": False}}) as sb:
        for threshold in (2000, 0):  # sObject Collections, then Bulk API
            crm, _ = make_crm(sb, bulk_threshold=threshold)
            with pytest.raises(SetupProblem, match=r"Task\.Email_Sync_Key__c as Text\(40\), External ID, "
                                                               r"Unique"):
                crm.upsert_tasks([task(key("nokey"))])
            assert crm.calls == 1
        assert sb.org.count("Task") == 0
        assert sb.calls.snapshot() == {"composite.sobjects.upsert": 1, "bulk2.createJob": 1}


# -- TaskRelations -------------------------------------------------------------------------------
def test_relations_with_check_existing_do_not_duplicate(sandbox, contacts):
    crm, _ = make_crm(sandbox)
    keys = [key("rel", i) for i in range(2)]
    t1, t2 = (r.id for r in crm.upsert_tasks([task(keys[0], WhoId=contacts[0]), task(keys[1], WhoId=contacts[0])]))
    crm.calls = 0

    first = crm.ensure_task_relations({t1: contacts[1:4], t2: [contacts[1]]}, check_existing=False)
    assert crm.calls == 1 and all(r.ok and r.created for r in first)
    assert [r.key for r in first] == [f"{t1}:{c}" for c in contacts[1:4]] + [f"{t2}:{contacts[1]}"]

    before = sandbox.calls.snapshot()
    second = crm.ensure_task_relations({t1: contacts[0:5]}, check_existing=True)
    assert delta(before, sandbox.calls.snapshot()) == {"composite": 1, "composite.sobjects.create": 1}
    assert [(r.ok, r.created) for r in second] == [(True, False)] * 4 + [(True, True)]
    assert second[1].id == first[0].id  # the existing relation's Id
    assert sorted(r["RelationId"] for r in sandbox.org.task_relations(t1)) == sorted(contacts[0:5])

    # Everything exists: one query, no insert.
    crm.calls = 0
    assert all(not r.created for r in crm.ensure_task_relations({t1: contacts[0:5]}, check_existing=True))
    assert crm.calls == 1

    # Without the check, Salesforce's DUPLICATE_VALUE also means "exists": reported as such.
    again = crm.ensure_task_relations({t2: [contacts[1], contacts[5]]}, check_existing=False)
    assert [(r.ok, r.created) for r in again] == [(True, False), (True, True)]
    assert again[0].id == first[3].id
    assert len(sandbox.org.task_relations(t2)) == 3


def test_relations_are_batched(sandbox, contacts):
    crm, _ = make_crm(sandbox)
    ids = [r.id for r in crm.upsert_tasks([task(key("many", i)) for i in range(300)])]
    assert crm.calls == 2
    pairs = {t: contacts[:2] for t in ids}  # 600 relations, 300 Tasks to check
    before = sandbox.calls.snapshot()
    results = crm.ensure_task_relations(pairs, check_existing=True)
    assert delta(before, sandbox.calls.snapshot()) == {"composite": 1, "composite.sobjects.create": 3}
    assert len(results) == 600 and all(r.ok and r.created for r in results)
    assert crm.calls == 2 + 4


def test_relation_errors_are_per_record(sandbox, contacts):
    crm, _ = make_crm(sandbox)
    t1 = crm.upsert_tasks([task(key("relerr"))])[0].id
    results = crm.ensure_task_relations({t1: [contacts[0], "003000000000000AAA"]}, check_existing=False)
    assert results[0].ok and results[1].error_code == "INVALID_CROSS_REFERENCE_KEY"
    assert crm.calls == 2 and [r["RelationId"] for r in sandbox.org.task_relations(t1)] == [contacts[0]]


# -- Files ---------------------------------------------------------------------------------------
class Spy:
    """Wraps a requests.Session's send() to see the Content-Type of each request."""

    def __init__(self, session) -> None:
        self.content_types: list[str] = []
        self._send = session.send
        session.send = self

    def __call__(self, request, **kwargs):
        self.content_types.append(request.headers.get("Content-Type", ""))
        return self._send(request, **kwargs)


def test_upload_files_links_them_to_their_tasks_in_one_call(sandbox):
    crm, _ = make_crm(sandbox)
    task_id = crm.upsert_tasks([task(key("files"))])[0].id
    spy = Spy(crm._sf.session)
    crm.calls = 0
    before = sandbox.calls.snapshot()
    small = b"%PDF-1.4 small quote" * 10
    big = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MB, sent as raw bytes (no base64)
    first, second = crm.upload_files([
        FileUpload("att-1", task_id, "Quote 2026.pdf", small, "application/pdf"),
        FileUpload("att-2", task_id, "scan.tiff", big, "image/tiff", owner_id=sandbox.org.default_user_id),
    ])
    assert crm.calls == 1 and delta(before, sandbox.calls.snapshot()) == {"composite.sobjects.create": 1}
    assert spy.content_types[0].startswith("multipart/form-data")
    assert first.ok and first.created and first.key == "att-1" and first.id.startswith("068")
    assert second.ok and second.id.startswith("068")
    assert sandbox.org.file_bytes(first.id) == small and sandbox.org.file_bytes(second.id) == big
    files = {f["PathOnClient"]: f for f in sandbox.org.files_for(task_id)}
    assert files["Quote 2026.pdf"]["Title"] == "Quote 2026" and files["scan.tiff"]["ContentSize"] == len(big)

    crm.calls = 0
    assert crm.upload_files([]) == [] and crm.calls == 0
    many = crm.upload_files([FileUpload(f"n{i}", task_id, f"n{i}.txt", b"n", "text/plain") for i in range(201)])
    assert crm.calls == 2 and all(r.ok for r in many)  # 200 per call

    crm.calls = 0
    found = [f for f in crm.find_files([task_id, task_id]) if not f["PathOnClient"].startswith("n")]
    assert crm.calls == 1
    assert sorted((f["Id"], f["PathOnClient"], f["ContentSize"], f["FirstPublishLocationId"]) for f in found) == \
        sorted([(first.id, "Quote 2026.pdf", len(small), task_id), (second.id, "scan.tiff", len(big), task_id)])
    assert all(f["ContentDocumentId"].startswith("069") for f in found)


def test_upload_refused_by_salesforce_is_a_failed_result(sandbox):
    crm, _ = make_crm(sandbox)
    task_id = crm.upsert_tasks([task(key("toolarge"))])[0].id
    limit = sandbox.org.settings.max_file_bytes
    sandbox.org.settings.max_file_bytes = 100
    try:
        result, fine = crm.upload_files([FileUpload("att-x", task_id, "big.bin", b"x" * 101),
                                         FileUpload("att-y", task_id, "ok.bin", b"x" * 10)])
    finally:
        sandbox.org.settings.max_file_bytes = limit
    assert result == RecordResult("att-x", None, False, "FILE_SIZE_LIMIT_EXCEEDED", result.error_message)
    assert "101 bytes" in result.error_message and crm.calls == 2
    assert fine.ok  # the rest of the batch goes up
    assert [f["PathOnClient"] for f in sandbox.org.files_for(task_id)] == ["ok.bin"]


# -- resilience ------------------------------------------------------------------------------------
def test_transient_faults_are_retried_with_backoff_and_counted(sandbox):
    crm, clock = make_crm(sandbox, backoff_base=0.5, backoff_max=3.0)
    sandbox.faults.inject("describe", "http", status=503, rate=1.0, times=1)
    sandbox.faults.inject("describe", "http", status=502, rate=1.0, times=1)
    sandbox.faults.inject("describe", "drop", rate=1.0, times=1)
    sandbox.faults.inject("describe", "http", status=500, rate=1.0, times=1)
    before = sandbox.calls.snapshot()
    assert crm.describe_fields("Contact")
    assert delta(before, sandbox.calls.snapshot()) == {"describe": 5} and crm.calls == 5
    assert len(clock.sleeps) == 4
    assert all(0 <= s <= min(3.0, 0.5 * 2 ** n) for n, s in enumerate(clock.sleeps))  # full jitter, capped

    # Retry-After is used as given (seconds, also as a decimal)
    clock.sleeps.clear()
    sandbox.faults.inject("composite.sobjects.upsert", "throttle", rate=1.0, times=1, retry_after=2)
    sandbox.faults.inject("composite.sobjects.upsert", "http", status=429, rate=1.0, times=1, retry_after=0.5)
    results = crm.upsert_tasks([task(key("retry-after"))])
    assert results[0].ok and clock.sleeps == [2.0, 0.5] and crm.calls == 8

    # ... but never beyond backoff_max
    fresh, clock = make_crm(sandbox, backoff_max=3.0)
    sandbox.faults.inject("limits", "http", status=503, rate=1.0, times=1, retry_after=120)
    fresh.check_budget(1, reserve=0)  # no usage known yet: reads limits
    assert clock.sleeps == [3.0] and fresh.calls == 2


def test_retries_stop_after_max_attempts(sandbox):
    crm, clock = make_crm(sandbox, max_attempts=3)
    sandbox.faults.inject("composite", "http", status=500, rate=1.0, times=10)
    with pytest.raises(SalesforceError, match="gave up after 3 attempts") as exc:
        crm.query("SELECT Id FROM Contact LIMIT 1")
    assert exc.value.status == 500 and exc.value.error_code == "UNKNOWN_EXCEPTION"
    assert crm.calls == 3 and len(clock.sleeps) == 2


def test_posts_are_repeated_only_when_salesforce_did_not_act(sandbox, contacts):
    crm, clock = make_crm(sandbox)
    t1 = crm.upsert_tasks([task(key("post-retry"))])[0].id
    crm.calls = 0

    # 503 SERVER_UNAVAILABLE and the concurrency throttle refuse before processing: repeated.
    sandbox.faults.inject("composite.sobjects.create", "http", status=503, rate=1.0, times=1)
    sandbox.faults.inject("composite.sobjects.create", "throttle", rate=1.0, times=1)
    assert crm.ensure_task_relations({t1: [contacts[0]]}, check_existing=False)[0].created
    assert crm.calls == 3 and len(clock.sleeps) == 2

    # A dropped connection or a 500 may have been applied: not repeated.
    for kind, params in (("drop", {}), ("http", {"status": 500}), ("http", {"status": 504})):
        sandbox.faults.inject("composite.sobjects.create", kind, rate=1.0, times=1, **params)
        crm.calls = 0
        with pytest.raises(SalesforceError, match="not retried") as exc:
            crm.ensure_task_relations({t1: [contacts[1]]}, check_existing=False)
        assert exc.value.may_have_been_applied and crm.calls == 1
    sandbox.faults.inject("composite.sobjects.create", "drop", rate=1.0, times=1)
    crm.calls = 0
    with pytest.raises(SalesforceError) as exc:
        crm.upload_files([FileUpload("a", t1, "a.txt", b"a", "text/plain")])
    assert exc.value.may_have_been_applied and crm.calls == 1
    assert [r["RelationId"] for r in sandbox.org.task_relations(t1)] == [contacts[0]]
    assert sandbox.org.files_for(t1) == []

    # An idempotent upsert is repeated after a drop (then once more without the create-only TaskSubtype).
    sandbox.faults.inject("composite.sobjects.upsert", "drop", rate=1.0, times=1)
    crm.calls = 0
    assert crm.upsert_tasks([task(key("post-retry"), "after a drop")])[0].id == t1
    assert crm.calls == 3


def test_read_timeouts_are_retried_for_reads_only(sandbox, contacts):
    crm, clock = make_crm(sandbox, timeout=(5.0, 0.2))
    sandbox.faults.inject("describe", "latency", delay=0.5, rate=1.0, times=1)
    assert crm.describe_fields("Lead") and crm.calls == 2 and len(clock.sleeps) == 1
    t1 = crm.upsert_tasks([("k-timeout", {"Subject": "timeout", IDEMPOTENCY_FIELD: "k-timeout"})])[0].id
    sandbox.faults.inject("composite.sobjects.create", "latency", delay=0.5, rate=1.0, times=1)
    crm.calls = 0
    with pytest.raises(SalesforceError, match="ReadTimeout.*not retried") as exc:
        crm.ensure_task_relations({t1: [contacts[0]]}, check_existing=False)
    assert exc.value.may_have_been_applied and crm.calls == 1
    # ... and it was: the server finishes the insert after the client gave up.
    deadline = time.monotonic() + 5
    while not sandbox.org.task_relations(t1) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # let the server fail to write its late answer within this test
    assert [r["RelationId"] for r in sandbox.org.task_relations(t1)] == [contacts[0]]
    assert crm.ensure_task_relations({t1: [contacts[0]]}, check_existing=True)[0].created is False


def test_connection_refused_is_retried_even_for_posts():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sf = Salesforce(session_id="00D!x", instance_url=f"https://127.0.0.1:{port}")
    clock = Clock()
    crm = SalesforceCrm(sf, max_attempts=3, sleep=clock, rng=random.Random(1))
    with pytest.raises(SalesforceError, match="could not connect.*gave up after 3 attempts") as exc:
        crm.ensure_task_relations({"00T000000000001AAA": ["003000000000001AAA"]}, check_existing=False)
    assert not exc.value.may_have_been_applied and crm.calls == 3 and len(clock.sleeps) == 2
    assert "00D!x" not in str(exc.value)


def test_bulk_upload_dropped_starts_a_new_job(sandbox):
    crm, _ = make_crm(sandbox, bulk_threshold=1, bulk_poll_seconds=0)
    sandbox.faults.inject("bulk2.upload", "drop", rate=1.0, times=1)
    keys = [key("bulk-drop", i) for i in range(3)]
    before = sandbox.calls.snapshot()
    results = crm.upsert_tasks([task(k) for k in keys])
    assert all(r.ok and r.created for r in results)
    assert delta(before, sandbox.calls.snapshot()) == {
        "bulk2.createJob": 2, "bulk2.upload": 2, "bulk2.abortJob": 1, "bulk2.uploadComplete": 1,
        "bulk2.getJob": 1, "bulk2.successfulResults": 1}
    assert crm.calls == 8 and len(tasks_with_key(sandbox, keys)) == 3


def test_401_fails_fast(sandbox):
    bad = Salesforce(session_id="not-a-session", instance_url=sandbox.instance_url, session=sandbox.http_session())
    crm = SalesforceCrm(bad, sleep=Clock())
    with pytest.raises(AuthenticationFailed, match="INVALID_SESSION_ID") as exc:
        crm.upsert_tasks([task(key("401"))])
    assert crm.calls == 1 and exc.value.status == 401 and "not-a-session" not in str(exc.value)

    crm, clock = make_crm(sandbox)
    sandbox.faults.inject("composite", "http", status=401, rate=1.0, times=3)
    with pytest.raises(AuthenticationFailed) as exc:
        crm.query("SELECT Id FROM Contact")
    assert crm.calls == 1 and clock.sleeps == []
    assert sandbox.session_id not in str(exc.value)


# -- API allowance ---------------------------------------------------------------------------------
def test_budget_guard():
    with SalesforceSandbox({"org": {"daily_api_max": 100}}) as sb:
        sb.reset_api_usage(90)
        crm, _ = make_crm(sb)
        with pytest.raises(BudgetExhausted, match="9 of 100 calls left.*needs about 5 and 10 are kept in reserve"):
            crm.check_budget(5, reserve=10)  # no usage known yet: reads limits once
        assert sb.calls.snapshot() == {"limits": 1} and crm.api_usage() == (91, 100)
        crm.check_budget(4, reserve=5)  # known from the last header: no call
        assert crm.calls == 1

        sb.daily_api_max = 91
        with pytest.raises(BudgetExhausted, match="TotalRequests Limit exceeded"):
            crm.query("SELECT Id FROM Contact")  # the hard stop is not retried
        assert crm.calls == 2
        with pytest.raises(BudgetExhausted):
            crm.check_budget(1, reserve=0)
        assert crm.calls == 2


def test_no_request_spends_into_the_reserve_by_the_latest_usage_seen():
    """Defect: the reserve was checked once per step against usage cached up to 15 minutes old,
    so a step (or other integrations meanwhile) spent into it. Every request now checks the
    Sforce-Limit-Info of the last answer."""
    with SalesforceSandbox({"org": {"daily_api_max": 100}}) as sb:
        sb.reset_api_usage(88)
        crm, _ = make_crm(sb, reserve=10)
        crm.check_budget(1, reserve=10, known=(50, 100))  # a stale cached view lets the step start
        crm.query("SELECT Id FROM Contact")  # 11 left after this answer
        crm.query("SELECT Id FROM Contact")  # 10 left: the reserve is reached
        with pytest.raises(BudgetExhausted, match="10 of 100 calls left, and 10 are kept in reserve"):
            crm.upsert_tasks([task(key("reserve"))])
        assert crm.calls == 2 and sb.api_usage == 90  # refused before anything was sent
