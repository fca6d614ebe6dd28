"""The Salesforce sandbox against the real clients: unmodified simple-salesforce and requests."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from sandbox.salesforce import SalesforceSandbox, load_seed
from sandbox.salesforce.org import is_id, to18

DATA = Path(__file__).parent / "data"
N_CONTACTS = 2_600
N_LEADS = 40


def _seed() -> dict:
    users = [
        {"Username": "integration@acme.example", "Email": "integration@acme.example", "LastName": "Integration",
         "password": "pw", "security_token": "tok"},
        {"Username": "anna@acme.example", "Email": "anna@acme.example", "FirstName": "Anna", "LastName": "Schmidt"},
        {"Username": "former@acme.example", "Email": "former@acme.example", "LastName": "Former", "IsActive": False},
    ]
    contacts = [
        {"FirstName": f"C{i}", "LastName": "Customer", "Email": f"c{i}@customer.example",
         "Secondary_Email__c": f"c{i}.alt@home.example" if i % 10 == 0 else None,
         "OwnerUsername": "anna@acme.example" if i % 4 == 0 else "integration@acme.example"}
        for i in range(N_CONTACTS - 2)
    ]
    contacts += [
        {"FirstName": "Seán", "LastName": "O'Brien", "Email": "Sean.OBrien@Dublin.example"},
        {"FirstName": "Back", "LastName": "Slash\\Name", "Email": "under_score@x.example"},
    ]
    leads = [{"LastName": f"Lead{i}", "Company": "Initech", "Email": f"lead{i}@initech.example",
              "IsConverted": i < 10} for i in range(N_LEADS)]
    return {"users": users, "contacts": [{k: v for k, v in c.items() if v is not None} for c in contacts],
            "leads": leads}


@pytest.fixture(scope="module")
def sandbox():
    with SalesforceSandbox(_seed()) as sb:
        yield sb


@pytest.fixture
def sf(sandbox):
    sandbox.faults.clear()
    sandbox.clear_record_faults()
    return sandbox.client()


@pytest.fixture(scope="module")
def contact_ids(sandbox):
    return [r["Id"] for r in sandbox.org.records("Contact")]


def small(**org) -> SalesforceSandbox:
    return SalesforceSandbox({"org": org, "contacts": [{"LastName": f"P{i}", "Email": f"p{i}@x.example"}
                                                       for i in range(60)]})


def error_code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.content[0]["errorCode"]


# -- basics ------------------------------------------------------------------------------------
def test_versions_ids_and_auth(sandbox, sf):
    session = sandbox.http_session()
    versions = session.get(sandbox.instance_url + "/services/data/").json()
    assert {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"} in versions
    used = sandbox.api_usage
    session.get(sandbox.instance_url + "/services/data/")
    assert sandbox.api_usage == used  # the versions resource does not count

    assert sf.sf_instance == f"127.0.0.1:{sandbox.port}"  # simple-salesforce keeps host:port
    record_id = sandbox.org.records("Contact")[0]["Id"]
    assert is_id(record_id) and len(record_id) == 18 and record_id.startswith("003")
    assert to18("001A0000006Vm9r") == "001A0000006Vm9rIAC"  # Salesforce's documented checksum

    bad = Salesforce(session_id="wrong", instance_url=sandbox.instance_url, session=sandbox.http_session())
    with pytest.raises(SalesforceExpiredSession) as exc:
        bad.query("SELECT Id FROM Contact")
    assert exc.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


# -- queries -----------------------------------------------------------------------------------
def test_query_all_pages_with_exact_query_more_calls(sandbox, sf):
    before = sandbox.calls.snapshot()
    result = sf.query_all("SELECT Id, Email FROM Contact")
    assert result["totalSize"] == N_CONTACTS
    assert len({r["Id"] for r in result["records"]}) == N_CONTACTS
    after = sandbox.calls.snapshot()
    assert after["query"] - before.get("query", 0) == 1
    assert after["queryMore"] - before.get("queryMore", 0) == math.ceil(N_CONTACTS / 2000) - 1

    first = sf.query("SELECT Id FROM Contact")
    assert first["done"] is False and first["totalSize"] == N_CONTACTS and len(first["records"]) == 2000
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")

    # Sforce-Query-Options: batchSize=N (Salesforce clamps to 200..2000)
    before = sandbox.calls.get("queryMore")
    records = list(sf.query_all_iter("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=500"}))
    assert len(records) == N_CONTACTS
    assert sandbox.calls.get("queryMore") - before == math.ceil(N_CONTACTS / 500) - 1
    page = sf.query("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=10"})
    assert len(page["records"]) == 200

    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query_more("01gNOPE-2000", identifier_is_url=False)
    assert error_code(exc) == "INVALID_QUERY_LOCATOR"


def test_soql_escaping(sf):
    found = sf.query("SELECT Id, LastName FROM Contact WHERE LastName = 'O\\'Brien'")
    assert [r["LastName"] for r in found["records"]] == ["O'Brien"]
    found = sf.query("SELECT Id FROM Contact WHERE LastName = 'Slash\\\\Name'")
    assert found["totalSize"] == 1
    like = sf.query("SELECT Email FROM Contact WHERE Email LIKE 'under\\_score%'")
    assert [r["Email"] for r in like["records"]] == ["under_score@x.example"]
    assert sf.query("SELECT Id FROM Contact WHERE Email LIKE 'under\\_scoreX%'")["totalSize"] == 0
    unicode = sf.query("SELECT FirstName FROM Contact WHERE FirstName = 'Se\\u00e1n'")
    assert unicode["records"][0]["FirstName"] == "Seán"

    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM Contact WHERE LastName = 'O'Brien'")
    assert error_code(exc) == "MALFORMED_QUERY"
    assert "unexpected token: 'Brien'" in exc.value.content[0]["message"]
    assert "ERROR at Row:1:Column:" in exc.value.content[0]["message"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM Contact WHERE LastName = 'bad \\x escape'")
    assert error_code(exc) == "MALFORMED_QUERY"


def test_soql_filters(sandbox, sf):
    org = sandbox.org
    anna = org.query_records("User", lambda r: r["Username"] == "anna@acme.example")[0]["Id"]
    emails = ["C1@CUSTOMER.EXAMPLE", "c2@customer.example", "sean.obrien@dublin.example", "nobody@x.example"]
    listed = ", ".join(f"'{e}'" for e in emails)
    rows = sf.query(f"SELECT Id, Email FROM Contact WHERE Email IN ({listed})")["records"]
    assert sorted(r["Email"] for r in rows) == ["Sean.OBrien@Dublin.example", "c1@customer.example",
                                                "c2@customer.example"]
    alt = sf.query("SELECT Email FROM Contact WHERE Email = 'c10.alt@home.example' "
                   "OR Secondary_Email__c = 'C10.ALT@home.example'")["records"]
    assert [r["Email"] for r in alt] == ["c10@customer.example"]

    owned = sf.query(f"SELECT COUNT() FROM Contact WHERE OwnerId = '{anna}'")
    assert owned["totalSize"] == len(range(0, N_CONTACTS - 2, 4)) and owned["records"] == []
    assert sf.query(f"SELECT COUNT() FROM Contact WHERE OwnerId = '{anna[:15]}'")["totalSize"] == owned["totalSize"]
    assert sf.query("SELECT COUNT() FROM Lead WHERE IsConverted = false")["totalSize"] == N_LEADS - 10
    mixed = sf.query(f"SELECT Id FROM Contact WHERE (Email IN ({listed}) OR Email LIKE 'c3%') AND NOT OwnerId = "
                     f"'{anna}' ORDER BY Email DESC LIMIT 5")
    assert len(mixed["records"]) == 5
    rel = sf.query("SELECT Email, Owner.Username FROM Contact WHERE Email = 'c4@customer.example'")["records"][0]
    assert rel["Owner"]["Username"] == "anna@acme.example"
    assert sf.query("SELECT COUNT() FROM Contact WHERE CreatedDate >= 2020-01-01T00:00:00Z")["totalSize"] == \
        N_CONTACTS
    assert sf.query("SELECT COUNT() FROM Contact WHERE CreatedDate < 2020-01-01T00:00:00.000+01:00")["totalSize"] == 0
    assert sf.query("SELECT COUNT() FROM Contact WHERE CreatedDate = LAST_N_DAYS:1")["totalSize"] == N_CONTACTS
    assert sf.query("SELECT COUNT() FROM Contact WHERE Secondary_Email__c != null")["totalSize"] == \
        len(range(0, N_CONTACTS - 2, 10))

    cases = {
        "SELECT Nope FROM Contact": "INVALID_FIELD",
        "SELECT Id FROM Nope": "INVALID_TYPE",
        "SELECT Id FROM Contact WHERE CreatedDate > '2026-01-01'": "INVALID_FIELD",
        "SELECT Id FROM Contact WHERE Email = 'a' AND Email = 'b' OR Email = 'c'": "MALFORMED_QUERY",
        "SELECT Id FROM Contact WHERE OwnerId = 'not-an-id'": "INVALID_QUERY_FILTER_OPERATOR",
        "SELECT Id FROM Task WHERE Description = 'x'": "INVALID_FIELD",
        "SELECT Id FROM ContentDocumentLink": "MALFORMED_QUERY",
        "SELECT Id FROM Contact WHERE Email = '" + "x" * 4001 + "'": "MALFORMED_QUERY",
    }
    for text, code in cases.items():
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.query(text)
        assert error_code(exc) == code, text


def test_uri_and_statement_limits(sf):
    emails = ", ".join(f"'someone{i}@customer.example'" for i in range(700))  # > 16,384 bytes of URI
    with pytest.raises(SalesforceGeneralError) as exc:
        sf.query(f"SELECT Id FROM Contact WHERE Email IN ({emails})")
    assert exc.value.status in (414, 431)
    long_query = "SELECT Id FROM Contact WHERE " + " OR ".join(["Email = 'x@y.example'"] * 5000)
    with pytest.raises(SalesforceMalformedRequest) as exc:  # > 100,000 characters (sent via a Bulk query job)
        sf.bulk2.Contact.query(long_query, wait=0).__next__()
    assert "100,000" in str(exc.value.content)


def test_composite_queries_are_one_call_and_carry_long_statements(sandbox, sf):
    from urllib.parse import quote

    path = "/services/data/v" + sf.sf_version + "/query/?q="
    emails = ", ".join(f"'c{i}@customer.example'" for i in range(2200))  # far beyond a URL, within SOQL
    long_query = f"SELECT Id, Email FROM Contact WHERE Email IN ({emails})"
    subrequests = [
        {"method": "GET", "url": path + quote(long_query, safe=""), "referenceId": "long"},
        {"method": "GET", "url": path + quote("SELECT Id FROM Contact WHERE Email = 'oops", safe=""),
         "referenceId": "bad"},
        {"method": "GET", "url": path + quote("SELECT COUNT() FROM Lead", safe=""), "referenceId": "count"},
    ]
    before = sandbox.api_usage
    answer = sf.restful("composite", method="POST", json={"allOrNone": False, "compositeRequest": subrequests})
    assert sandbox.api_usage == before + 1  # the whole composite request is one call
    long, bad, count = answer["compositeResponse"]
    assert (long["referenceId"], long["httpStatusCode"]) == ("long", 200)
    assert long["body"]["totalSize"] == 2200 and not long["body"]["done"]  # pages of 2,000 rows
    assert bad["httpStatusCode"] == 400 and bad["body"][0]["errorCode"] == "MALFORMED_QUERY"
    assert count["body"] == {"totalSize": N_LEADS, "done": True, "records": []}

    more = sf.restful("composite", method="POST", json={"compositeRequest": [
        {"method": "GET", "url": long["body"]["nextRecordsUrl"], "referenceId": "more"}]})
    assert more["compositeResponse"][0]["httpStatusCode"] == 200

    halted = sf.restful("composite", method="POST", json={"allOrNone": True, "compositeRequest": subrequests})
    assert [r["httpStatusCode"] for r in halted["compositeResponse"]] == [200, 400, 400]
    assert halted["compositeResponse"][2]["body"][0]["errorCode"] == "PROCESSING_HALTED"

    six = [{"method": "GET", "url": path + "SELECT+Id+FROM+Lead+LIMIT+1", "referenceId": f"q{i}"} for i in range(6)]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite", method="POST", json={"compositeRequest": six})
    assert error_code(exc) == "LIMIT_EXCEEDED"


def test_describe(sandbox, sf):
    task = {f["name"]: f for f in sf.Task.describe()["fields"]}
    assert (task["Subject"]["length"], task["Subject"]["byteLength"]) == (255, 765)
    assert task["Description"]["type"] == "textarea" and task["Description"]["length"] == 32000
    assert task["ActivityDate"]["type"] == "date"
    assert [v["value"] for v in task["Type"]["picklistValues"]] == ["Call", "Email", "Meeting", "Other"]
    assert "Completed" in [v["value"] for v in task["Status"]["picklistValues"]]
    assert "Email" in [v["value"] for v in task["TaskSubtype"]["picklistValues"]]
    assert task["WhoId"]["referenceTo"] == ["Contact", "Lead"]
    key = task["Email_Sync_Key__c"]
    assert (key["externalId"], key["unique"], key["length"], key["custom"]) == (True, True, 255, True)
    contact = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert contact["Email"]["type"] == "email" and contact["Email"]["length"] == 80
    assert "Secondary_Email__c" in contact and contact["OwnerId"]["referenceTo"] == ["User"]
    lead = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert lead["IsConverted"]["type"] == "boolean" and lead["Company"]["nillable"] is False
    user = {f["name"]: f for f in sf.User.describe()["fields"]}
    assert {"Username", "Email", "TimeZoneSidKey", "IsActive"} <= set(user)
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Task", "Contact", "Lead", "User", "ContentVersion", "ContentDocumentLink", "TaskRelation",
            "TaskWhoRelation"} <= names
    assert sf.Task.metadata()["objectDescribe"]["keyPrefix"] == "00T"
    with pytest.raises(SalesforceResourceNotFound):
        sf.Nope__c.describe()
    with small(has_external_id_field=False) as other:
        fields = {f["name"] for f in other.client().Task.describe()["fields"]}
        assert "Email_Sync_Key__c" not in fields


# -- writes ------------------------------------------------------------------------------------
def test_sobject_create_get_update_delete(sandbox, sf, contact_ids):
    created = sf.Task.create({"Subject": "Hello", "WhoId": contact_ids[0], "Status": "Completed",
                              "TaskSubtype": "Email", "Type": "Email", "ActivityDate": "2026-03-01",
                              "Description": "Body"})
    assert created["success"] is True and created["id"].startswith("00T")
    task = sf.Task.get(created["id"])
    assert (task["Subject"], task["WhoId"], task["IsClosed"], task["ActivityDate"]) == \
        ("Hello", contact_ids[0], True, "2026-03-01")
    assert task["OwnerId"] == sandbox.org.default_user_id
    assert task["CreatedDate"].endswith("+0000") and task["SystemModstamp"] == task["CreatedDate"]
    assert sf.Task.update(created["id"], {"Subject": "Changed"}) == 204
    assert sf.Task.get(created["id"], )["Subject"] == "Changed"
    assert sf.Task.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Task.get(created["id"])
    deleted = sf.query_all(f"SELECT Id, IsDeleted FROM Task WHERE Id = '{created['id']}'", include_deleted=True)
    assert deleted["records"][0]["IsDeleted"] is True

    errors = {
        "STRING_TOO_LONG": {"Subject": "x" * 256},
        "INVALID_CROSS_REFERENCE_KEY": {"Subject": "s", "WhoId": "003" + "0" * 12},
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": {"Subject": "s", "Type": "Carrier Pigeon"},
        "INACTIVE_OWNER_OR_USER": {"Subject": "s", "OwnerId": sandbox.org.query_records(
            "User", lambda r: not r["IsActive"])[0]["Id"]},
        "MALFORMED_ID": {"Subject": "s", "WhoId": "nope"},
    }
    for code, data in errors.items():
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.Task.create(data)
        assert error_code(exc) == code, data
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Task.create({"Subject": "x" * 256})
    assert exc.value.content[0]["message"].startswith("Subject: data value too large: ")
    assert exc.value.content[0]["message"].endswith("(max length=255)")
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"FirstName": "No"})
    assert exc.value.content[0] == {"message": "Required fields are missing: [LastName]",
                                    "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName"]}
    # Salesforce measures length in UTF-16 code units: 128 emoji = 256 units > 255
    with pytest.raises(SalesforceMalformedRequest):
        sf.Task.create({"Subject": "\N{GRINNING FACE}" * 128})


def test_upsert_by_external_id_twice_creates_once(sandbox, sf):
    assert sf.Task.upsert("Email_Sync_Key__c/msg-1@example", {"Subject": "first"}) == 201
    assert sf.Task.upsert("Email_Sync_Key__c/msg-1@example", {"Subject": "second"}) == 200
    rows = sandbox.org.query_records("Task", lambda r: r.get("Email_Sync_Key__c") == "msg-1@example")
    assert len(rows) == 1 and rows[0]["Subject"] == "second"
    assert sf.Task.get_by_custom_id("Email_Sync_Key__c", "MSG-1@example")["Id"] == rows[0]["Id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Task.create({"Subject": "dup", "Email_Sync_Key__c": "msg-1@example"})
    assert error_code(exc) == "DUPLICATE_VALUE"


def test_composite_create_200_with_two_failures(sandbox, sf, contact_ids):
    before = sandbox.org.count("Task")
    records = [{"attributes": {"type": "Task"}, "Subject": f"Composite {i}", "WhoId": contact_ids[i],
                "Status": "Completed"} for i in range(200)]
    records[17]["Subject"] = "s" * 300
    records[42]["WhoId"] = "003" + "0" * 12 + "AAA"
    results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
    assert len(results) == 200 and sum(r["success"] for r in results) == 198
    assert results[17] == {"success": False, "errors": [results[17]["errors"][0]]}
    assert results[17]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert results[17]["errors"][0]["fields"] == ["Subject"]
    assert results[42]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert all(r["id"].startswith("00T") for i, r in enumerate(results) if i not in (17, 42))
    assert sandbox.org.count("Task") == before + 198

    rolled = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": records})
    assert sandbox.org.count("Task") == before + 198
    assert rolled[17]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"

    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects", method="POST", json={"records": records + records[:1]})
    assert error_code(exc) == "EXCEEDED_ID_LIMIT"
    assert sandbox.org.count("Task") == before + 198


def test_composite_upsert(sandbox, sf, contact_ids):
    records = [{"attributes": {"type": "Task"}, "Email_Sync_Key__c": f"coll-{i}", "Subject": f"v1 {i}",
                "WhoId": contact_ids[i]} for i in range(5)]
    first = sf.restful("composite/sobjects/Task/Email_Sync_Key__c", method="PATCH",
                       json={"allOrNone": False, "records": records})
    assert [r["created"] for r in first] == [True] * 5
    second = sf.restful("composite/sobjects/Task/Email_Sync_Key__c", method="PATCH",
                        json={"allOrNone": False, "records": records})
    assert [r["created"] for r in second] == [False] * 5
    assert [r["id"] for r in first] == [r["id"] for r in second]
    dup = sf.restful("composite/sobjects/Task/Email_Sync_Key__c", method="PATCH",
                     json={"records": [records[0], records[0]]})
    assert [r["errors"][0]["statusCode"] for r in dup] == ["DUPLICATE_EXTERNAL_ID"] * 2
    got = sf.restful("composite/sobjects/Task", params={"ids": ",".join(r["id"] for r in first),
                                                        "fields": "Id,Subject"})
    assert [g["Subject"] for g in got] == [f"v1 {i}" for i in range(5)]


def test_bulk2_insert_1000_with_failures(sandbox, sf, contact_ids):
    before_tasks = sandbox.org.count("Task")
    before_calls = sandbox.api_usage
    rows = [{"Subject": f"Bulk {i}", "WhoId": contact_ids[i % 500], "Status": "Completed", "TaskSubtype": "Email",
             "Email_Sync_Key__c": f"bulk-{i}", "ActivityDate": "2026-02-01"} for i in range(1000)]
    rows[3]["Subject"] = "y" * 256
    rows[500]["Status"] = "Sleeping"
    rows[999]["WhoId"] = "003000000000000AAA"
    result = sf.bulk2.Task.insert(records=rows, wait=0)
    assert result[0]["numberRecordsProcessed"] == 1000 and result[0]["numberRecordsFailed"] == 3
    job_id = result[0]["job_id"]
    failed = list(csv.DictReader(io.StringIO(sf.bulk2.Task.get_failed_records(job_id))))
    assert [f["Email_Sync_Key__c"] for f in failed] == ["bulk-3", "bulk-500", "bulk-999"]
    assert failed[0]["sf__Id"] == "" and failed[0]["sf__Error"].startswith("STRING_TOO_LONG:Subject: data value")
    assert failed[0]["sf__Error"].endswith(":Subject --")
    assert failed[1]["sf__Error"].startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:")
    assert failed[2]["sf__Error"].startswith("INVALID_CROSS_REFERENCE_KEY:")
    ok = list(csv.DictReader(io.StringIO(sf.bulk2.Task.get_successful_records(job_id))))
    assert len(ok) == 997 and all(r["sf__Created"] == "true" and r["sf__Id"].startswith("00T") for r in ok)
    assert ok[0]["Subject"] == "Bulk 0"
    assert sf.bulk2.Task.get_unprocessed_records(job_id).strip().split(",")[0] in ('"Subject"', '"WhoId"',
                                                                                     '"Status"', '"TaskSubtype"',
                                                                                     '"Email_Sync_Key__c"',
                                                                                     '"ActivityDate"')
    assert sandbox.org.count("Task") == before_tasks + 997
    # createJob, upload, uploadComplete, getJob x2 (poll + final), 3 result files
    assert sandbox.api_usage - before_calls == 8
    info = sf.bulk2.Task._client.get_job(job_id, False)
    assert (info["state"], info["jobType"], info["numberRecordsFailed"]) == ("JobComplete", "V2Ingest", 3)


def test_bulk2_upsert_twice_creates_once(sandbox, sf):
    rows = [{"Email_Sync_Key__c": f"bulk-up-{i}", "Subject": f"v1 {i}"} for i in range(30)]
    first = sf.bulk2.Task.upsert(records=rows, external_id_field="Email_Sync_Key__c", wait=0)
    second = sf.bulk2.Task.upsert(records=[{**r, "Subject": "v2"} for r in rows],
                                  external_id_field="Email_Sync_Key__c", wait=0)
    assert first[0]["numberRecordsFailed"] == second[0]["numberRecordsFailed"] == 0
    created = [r["sf__Created"] for r in csv.DictReader(io.StringIO(
        sf.bulk2.Task.get_successful_records(second[0]["job_id"])))]
    assert created == ["false"] * 30
    rows_now = sandbox.org.query_records("Task", lambda r: (r.get("Email_Sync_Key__c") or "").startswith("bulk-up-"))
    assert len(rows_now) == 30 and {r["Subject"] for r in rows_now} == {"v2"}


def test_bulk2_polling_and_failed_jobs():
    with small(bulk_in_progress_polls=2) as sb:
        sf = sb.client()
        result = sf.bulk2.Task.insert(records=[{"Subject": "a"}, {"Subject": "b"}], wait=0)
        assert result[0]["numberRecordsProcessed"] == 2
        assert sb.calls.get("bulk2.getJob") == 4  # two InProgress polls, JobComplete, final read
        with pytest.raises(SalesforceOperationError, match="Field name not found : Bogus__c"):
            sf.bulk2.Task.insert(records=[{"Subject": "a", "Bogus__c": "x"}], wait=0)
        lines = list(sf.bulk2.Contact.query("SELECT Id, Email FROM Contact ORDER BY Email", max_records=25,
                                            wait=0))
        assert len(lines) == 3 and lines[0].splitlines()[0] == '"Id","Email"'


def test_content_version_and_links(sandbox, sf, contact_ids):
    task_id = sf.Task.create({"Subject": "With file", "WhoId": contact_ids[1]})["id"]
    payload = b"%PDF-1.4 fake pdf bytes" * 10
    version = sf.ContentVersion.create({"Title": "quote", "PathOnClient": "quote.pdf",
                                        "VersionData": base64.b64encode(payload).decode()})
    row = sf.query(f"SELECT ContentDocumentId, ContentSize, FileExtension, IsLatest FROM ContentVersion "
                   f"WHERE Id = '{version['id']}'")["records"][0]
    assert (row["ContentSize"], row["FileExtension"], row["IsLatest"]) == (len(payload), "pdf", True)
    assert row["ContentDocumentId"].startswith("069") and version["id"].startswith("068")
    link = sf.ContentDocumentLink.create({"ContentDocumentId": row["ContentDocumentId"], "LinkedEntityId": task_id,
                                          "ShareType": "V"})
    assert link["id"].startswith("06A")
    links = sf.query(f"SELECT Id, ContentDocumentId FROM ContentDocumentLink WHERE LinkedEntityId = '{task_id}'")
    assert links["totalSize"] == 1
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.ContentDocumentLink.create({"ContentDocumentId": row["ContentDocumentId"], "LinkedEntityId": task_id})
    assert error_code(exc) == "DUPLICATE_VALUE"
    assert sf.session.get(f"{sf.base_url}sobjects/ContentVersion/{version['id']}/VersionData",
                          headers=sf.headers).content == payload

    # multipart upload, linked on creation through FirstPublishLocationId
    response = sf.session.post(
        f"{sf.base_url}sobjects/ContentVersion", headers={"Authorization": f"Bearer {sf.session_id}"},
        files={"entity_content": (None, json.dumps({"PathOnClient": "scan.png", "FirstPublishLocationId": task_id}),
                                  "application/json"),
               "VersionData": ("scan.png", b"\x89PNG\x00\x01" * 50, "application/octet-stream")})
    assert response.status_code == 201 and response.json()["success"] is True
    files = [t for t in sandbox.state()["tasks"] if t["Id"] == task_id][0]["Files"]
    assert sorted(f["ContentSize"] for f in files) == sorted([len(payload), 300])
    assert {f["PathOnClient"] for f in sandbox.org.files_for(task_id)} == {"quote.pdf", "scan.png"}

    with small(max_file_bytes=1024) as tiny:
        client = tiny.client()
        client.ContentVersion.create({"PathOnClient": "ok.txt", "VersionData": base64.b64encode(b"x" * 1024).decode()})
        with pytest.raises(SalesforceMalformedRequest) as exc:
            client.ContentVersion.create({"PathOnClient": "big.bin",
                                          "VersionData": base64.b64encode(b"x" * 1025).decode()})
        assert error_code(exc) == "FILE_SIZE_LIMIT_EXCEEDED"
        assert tiny.org.count("ContentVersion") == 1


def test_task_relations_with_shared_activities(sandbox, sf, contact_ids):
    task_id = sf.Task.create({"Subject": "Meeting notes", "WhoId": contact_ids[100]})["id"]
    records = [{"attributes": {"type": "TaskRelation"}, "TaskId": task_id, "RelationId": contact_ids[101 + i],
                "IsWhat": False} for i in range(50)]
    results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
    assert sum(r["success"] for r in results) == 49  # WhoId is the 1st of the 50 contacts
    assert results[49]["errors"][0]["statusCode"] == "LIMIT_EXCEEDED"
    whos = sf.query_all(f"SELECT RelationId, Type FROM TaskWhoRelation WHERE TaskId = '{task_id}'")
    assert whos["totalSize"] == 50 and {r["Type"] for r in whos["records"]} == {"Contact"}
    assert sf.Task.get(task_id)["WhoCount"] == 50
    assert len(sandbox.org.task_relations(task_id)) == 50
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.TaskRelation.create({"TaskId": task_id, "RelationId": contact_ids[101]})
    assert error_code(exc) == "DUPLICATE_VALUE"
    lead_id = sandbox.org.records("Lead")[0]["Id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.TaskRelation.create({"TaskId": task_id, "RelationId": lead_id})
    assert error_code(exc) == "FIELD_INTEGRITY_EXCEPTION"


def test_task_relations_without_shared_activities():
    with small(shared_activities=False) as sb:
        sf = sb.client()
        contacts = [r["Id"] for r in sb.org.records("Contact")]
        task_id = sf.Task.create({"Subject": "One who", "WhoId": contacts[0]})["id"]
        with pytest.raises(SalesforceResourceNotFound):
            sf.TaskRelation.create({"TaskId": task_id, "RelationId": contacts[1]})
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.restful("composite/sobjects", method="POST", json={"records": [
                {"attributes": {"type": "TaskRelation"}, "TaskId": task_id, "RelationId": contacts[1]}]})
        assert error_code(exc) == "INVALID_TYPE"
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.query("SELECT Id FROM TaskRelation")
        assert error_code(exc) == "INVALID_TYPE"
        assert sf.Task.get(task_id)["WhoCount"] == 1


# -- API allowance -------------------------------------------------------------------------------
def test_limits_and_limit_info_count_exact_calls():
    with small(daily_api_max=15000) as sb:
        sf = sb.client()
        sf.Contact.describe()
        sf.Task.create({"Subject": "x"})
        sf.query("SELECT Id FROM Contact")  # simple-salesforce records Sforce-Limit-Info on query calls
        assert sf.api_usage["api-usage"].used == 3 and sf.api_usage["api-usage"].total == 15000
        limits = sf.limits()
        assert limits["DailyApiRequests"] == {"Max": 15000, "Remaining": 15000 - 4}
        assert sb.api_usage == 4 == sb.calls.total
        response = sf.session.get(f"{sf.base_url}limits", headers=sf.headers)
        assert response.headers["Sforce-Limit-Info"] == "api-usage=5/15000"


def test_allowance_exhaustion_answers_request_limit_exceeded():
    with small(daily_api_max=3) as sb:
        sf = sb.client()
        for _ in range(3):
            sf.query("SELECT COUNT() FROM Contact")
        with pytest.raises(SalesforceRefusedRequest) as exc:
            sf.query("SELECT COUNT() FROM Contact")
        assert exc.value.content == [{"message": "TotalRequests Limit exceeded.",
                                      "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
        with pytest.raises(SalesforceRefusedRequest):
            sf.bulk2.Task.insert(records=[{"Subject": "a"}], wait=0)
        assert sb.api_usage == 3
        # the control API raises the allowance (as a new day would)
        session = sb.http_session()
        changed = session.patch(f"{sb.instance_url}/_sandbox/org", json={"daily_api_max": 10}).json()
        assert changed["daily_api_max"] == 10
        assert sf.limits()["DailyApiRequests"] == {"Max": 10, "Remaining": 6}


# -- faults ----------------------------------------------------------------------------------------
def test_injected_faults_surface_as_client_errors(sandbox, sf):
    used = sandbox.api_usage
    sandbox.faults.inject("query", "http", nth=sandbox.calls.get("query") + 1, status=503)
    with pytest.raises(SalesforceGeneralError) as exc:
        sf.query("SELECT Id FROM Contact LIMIT 1")
    assert exc.value.status == 503 and exc.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    sf.query("SELECT Id FROM Contact LIMIT 1")  # the next call succeeds

    sandbox.faults.inject("composite.sobjects.create", "http", status=429, rate=1.0, times=1, retry_after=2)
    with pytest.raises(SalesforceGeneralError) as exc:
        sf.restful("composite/sobjects", method="POST",
                   json={"records": [{"attributes": {"type": "Task"}, "Subject": "t"}]})
    assert exc.value.status == 429

    sandbox.faults.inject("limits", "throttle", rate=1.0, times=1, retry_after=0.5)
    response = sf.session.get(f"{sf.base_url}limits", headers=sf.headers)
    assert response.status_code == 403 and response.headers["Retry-After"] == "0.5"
    assert response.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"

    sandbox.faults.inject("describe", "http", status=401, rate=1.0, times=1)
    with pytest.raises(SalesforceExpiredSession):
        sf.Task.describe()

    sandbox.faults.inject("sobject.get", "drop", rate=1.0, times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.User.get(sandbox.org.default_user_id)
    assert sandbox.api_usage == used + 1  # injected faults never reached the org


def test_record_fault_rules(sandbox, sf):
    sandbox.fail_records("Task", when=lambda r: "REJECT" in (r.get("Subject") or ""),
                         message="Subject rejected by validation rule", fields=["Subject"])
    records = [{"attributes": {"type": "Task"}, "Subject": s} for s in ("ok 1", "REJECT me", "ok 2")]
    results = sf.restful("composite/sobjects", method="POST", json={"records": records})
    assert [r["success"] for r in results] == [True, False, True]
    assert results[1]["errors"][0] == {"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                       "message": "Subject rejected by validation rule", "fields": ["Subject"]}
    bulk = sf.bulk2.Task.insert(records=[{"Subject": "REJECT bulk"}, {"Subject": "fine"}], wait=0)
    assert bulk[0]["numberRecordsFailed"] == 1
    failed = sf.bulk2.Task.get_failed_records(bulk[0]["job_id"])
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION:Subject rejected by validation rule:Subject --" in failed

    sandbox.clear_record_faults()
    session = sandbox.http_session()
    rule = session.post(f"{sandbox.instance_url}/_sandbox/record_faults",
                        json={"object": "Task", "field": "Subject", "contains": "FAIL",
                              "status_code": "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "message": "trigger said no",
                              "times": 1})
    assert rule.status_code == 201
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Task.create({"Subject": "please FAIL"})
    assert exc.value.content[0]["errorCode"] == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"
    assert sf.Task.create({"Subject": "please FAIL"})["success"] is True  # times=1
    assert session.get(f"{sandbox.instance_url}/_sandbox/record_faults").json()[0]["fired"] == 1


# -- logins, state, seeds, CLI ---------------------------------------------------------------------
def test_soap_and_oauth_logins_and_session_refresh(sandbox):
    domain = f"127.0.0.1:{sandbox.port}/login"  # simple-salesforce builds https://{domain}.salesforce.com/...
    sf = Salesforce(username="integration@acme.example", password="pw", security_token="tok", domain=domain,
                    session=sandbox.http_session())
    assert sf.sf_instance == f"127.0.0.1:{sandbox.port}"
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == N_LEADS
    logins = sandbox.calls.get("soap.login")
    sandbox.org.expire_sessions()
    try:
        assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == N_LEADS  # 401 -> re-login -> retry
        assert sandbox.calls.get("soap.login") == logins + 1
    finally:
        sandbox.org.add_session(sandbox.org.default_user_id, token=sandbox.session_id)
    oauth = Salesforce(username="integration@acme.example", password="pwtok", consumer_key="sandbox-client-id",
                       consumer_secret="sandbox-client-secret", domain=domain, session=sandbox.http_session())
    assert oauth.query("SELECT COUNT() FROM Lead")["totalSize"] == N_LEADS
    from simple_salesforce.exceptions import SalesforceAuthenticationFailed

    with pytest.raises(SalesforceAuthenticationFailed):
        Salesforce(username="integration@acme.example", password="wrong", security_token="tok", domain=domain,
                   session=sandbox.http_session())
    token = sandbox.http_session().post(f"{sandbox.instance_url}/services/oauth2/token", data={
        "grant_type": "password", "client_id": "sandbox-client-id", "client_secret": "sandbox-client-secret",
        "username": "integration@acme.example", "password": "pwtok"}).json()
    assert token["instance_url"] == sandbox.instance_url and token["token_type"] == "Bearer"


def test_state_endpoint(sandbox, sf, contact_ids):
    sf.Task.create({"Subject": "State me", "WhoId": contact_ids[7], "Description": "secret body text",
                    "Email_Sync_Key__c": "state-1"})
    state = sandbox.http_session().get(f"{sandbox.instance_url}/_sandbox/state").json()
    assert state["counts"]["Contact"] == N_CONTACTS and state["api_usage"]["used"] == sandbox.api_usage
    task = [t for t in state["tasks"] if t["Email_Sync_Key__c"] == "state-1"][0]
    assert task["Relations"] == [contact_ids[7]] and task["DescriptionLength"] == len("secret body text")
    assert "secret body text" not in json.dumps(state)
    assert "session_id" not in state["settings"]


def test_seed_files():
    seed = load_seed(DATA / "sf_seed.json")
    with SalesforceSandbox(seed) as sb:
        org = sb.org
        assert org.settings.time_zone == "Europe/Berlin" and org.settings.max_file_bytes == 5242880
        anna = org.query_records("User", lambda r: r["Username"] == "anna@acme.example")[0]["Id"]
        ada = org.query_records("Contact", lambda r: r["Email"] == "ada@analytical.example")[0]
        assert ada["OwnerId"] == anna and ada["Secondary_Email__c"] == "ada.private@home.example"
        grace = org.query_records("Contact", lambda r: r["LastName"] == "Hopper")[0]
        assert grace["CreatedDate"] == "2026-01-05T09:00:00.000+0000"
        sf = sb.client()
        rows = sf.query("SELECT Email, Account.Name FROM Contact WHERE Secondary_Email__c = 'sean@personal.example'")
        assert rows["records"][0]["Email"] == "sean.obrien@dublin.example" and rows["records"][0]["Account"] is None
        assert sf.query("SELECT TimeZoneSidKey FROM Organization")["records"][0]["TimeZoneSidKey"] == "Europe/Berlin"
    with SalesforceSandbox.from_file(DATA / "sf_seed.yaml") as sb:
        assert sb.org.settings.shared_activities is False and sb.org.object("TaskRelation") is None
        assert sb.client().limits()["DailyApiRequests"]["Max"] == 100


def test_cli_runs_the_sandbox_as_a_process(tmp_path):
    info_file = tmp_path / "sf.json"
    process = subprocess.Popen([sys.executable, "-m", "sandbox.salesforce", "--seed", str(DATA / "sf_seed.json"),
                                "--info-file", str(info_file)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not info_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        info = json.loads(info_file.read_text())
        session = requests.Session()
        session.verify = info["ca_bundle"]
        response = session.get(f"{info['instance_url']}/services/data/v59.0/query",
                               params={"q": "SELECT COUNT() FROM Contact"},
                               headers={"Authorization": f"Bearer {info['session_id']}"}, verify=info["ca_bundle"])
        assert response.json()["totalSize"] == 4
    finally:
        process.terminate()
        process.wait(timeout=10)
