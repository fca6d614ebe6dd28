"""The EWS sandbox against real, unpatched exchangelib 5.6.

Every test talks SOAP over loopback HTTP exactly as the sync's extractor will: Basic auth,
delegate or impersonation access, FindItem paging, GetItem, GetAttachment, UpdateItem,
SyncFolderItems, and the fault shapes exchangelib's retry logic reacts to.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import time
from datetime import timedelta
from xml.etree import ElementTree
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    UTC,
    Account,
    Build,
    Configuration,
    Credentials,
    EWSDateTime,
    FaultTolerance,
    HTMLBody,
    Q,
    Version,
)
from exchangelib.errors import (
    ErrorAccessDenied,
    ErrorImpersonateUserDenied,
    ErrorIrresolvableConflict,
    ErrorNonExistentMailbox,
    ErrorServerBusy,
    ErrorTimeoutExpired,
    UnauthorizedError,
)
from exchangelib.items import NEVER_OVERWRITE
from exchangelib.properties import Mailbox
from exchangelib.protocol import close_connections

from sandbox.ews import EwsSandbox
from sandbox.ews.seed import read_seed_file

DATA = Path(__file__).parent / "data"
SEED = DATA / "seed.yaml"
ALICE = "alice@example.com"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_exchangelib_protocols():
    """exchangelib caches one Protocol (with its retry policy) per endpoint + credentials."""
    close_connections()
    yield
    close_connections()


@pytest.fixture
def ews():
    with EwsSandbox.from_files(SEED) as server:
        yield server


def connect(ews: EwsSandbox, username: str = "alice", password: str = "alice-pw", address: str = ALICE, *,
            access_type: str = DELEGATE, **config: object) -> Account:
    config.setdefault("auth_type", BASIC)
    credentials = Credentials(username, password)
    configuration = Configuration(service_endpoint=ews.endpoint, credentials=credentials, **config)
    return Account(address, credentials=credentials, config=configuration, autodiscover=False,
                   access_type=access_type, default_timezone=UTC)


def utc(*args: int) -> EWSDateTime:
    return EWSDateTime(*args, tzinfo=UTC)


# -- connecting -----------------------------------------------------------------------------------

def test_connect_without_version_or_auth_type_detects_both(ews):
    account = connect(ews, auth_type=None)
    version = account.version
    assert account.protocol.auth_type == BASIC  # from the unauthenticated probe's 401 WWW-Authenticate
    assert version.build == Build(15, 1, 2507, 6)
    assert version.api_version == "Exchange2016"
    # the probe is not counted (it never reaches EWS); version guessing costs one ConvertId
    assert ews.calls.snapshot() == {"ConvertId": 1}
    assert ews.auth_failures == 1
    assert account.inbox.total_count == 2


def test_connect_with_explicit_version_skips_guessing(ews):
    account = connect(ews, version=Version(build=Build(15, 1, 2507, 0)))
    assert account.inbox.name == "Inbox"
    assert ews.calls.snapshot() == {"GetFolder": 2}  # root, then the distinguished inbox


def test_wrong_password_is_rejected(ews):
    account = connect(ews, password="wrong")
    with pytest.raises(UnauthorizedError):
        _ = account.inbox
    assert ews.calls.total == 0
    response = requests.post(ews.endpoint, data=b"<x/>", timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


@pytest.mark.parametrize(
    ("username", "password", "address", "access_type", "error"),
    [
        ("svc-sync", "svc-pw", ALICE, IMPERSONATION, None),  # impersonation role
        ("alice", "alice-pw", ALICE, IMPERSONATION, None),  # acting as oneself
        ("bob", "bob-pw", ALICE, DELEGATE, None),  # delegate rights
        ("eve", "eve-pw", ALICE, IMPERSONATION, ErrorImpersonateUserDenied),
        ("eve", "eve-pw", ALICE, DELEGATE, ErrorAccessDenied),
        ("svc-sync", "svc-pw", "nobody@example.com", IMPERSONATION, ErrorNonExistentMailbox),
        ("bob", "bob-pw", "nobody@example.com", DELEGATE, ErrorNonExistentMailbox),
    ],
)
def test_mailbox_access(ews, username, password, address, access_type, error):
    account = connect(ews, username, password, address, access_type=access_type)
    if error is None:
        assert account.inbox.total_count == 2
    else:
        with pytest.raises(error):
            _ = account.inbox


# -- folders --------------------------------------------------------------------------------------

def test_folder_paths_resolve(ews):
    account = connect(ews)
    clients = account.root / "Top of Information Store" / "Inbox" / "Clients"
    assert clients.name == "Clients"
    assert clients.total_count == 1
    assert (account.inbox / "Clients").id == clients.id
    assert clients.absolute == "/root/Top of Information Store/Inbox/Clients"
    assert account.sent.name == "Sent Items"
    assert {f.name for f in account.root.tois.children} >= {"Inbox", "Sent Items", "Deleted Items", "Drafts"}
    assert [f.name for f in account.root.glob("**/Clients")] == ["Clients"]
    assert (account.inbox // "Clients").id == clients.id  # FindFolder with a DisplayName restriction
    assert [m.subject for m in clients.all().only("subject")] == ["Filed client mail"]


# -- FindItem: restrictions, sorting, paging ------------------------------------------------------

@pytest.fixture
def big_inbox():
    seed = {"accounts": [{"username": "alice", "password": "alice-pw", "email": ALICE}],
            "mailboxes": {ALICE: {"folders": {
                "Inbox": {"generate": {"count": 1200, "start": "2024-05-01T00:00:00Z", "step_seconds": 600}},
                "Sent Items": [
                    {"subject": f"Sent {n}", "from": ALICE, "to": ["carol@client.example"],
                     "sent": f"2024-05-0{n}T12:00:00Z", "received": f"2024-05-0{n}T14:00:00Z"}
                    for n in range(1, 6)
                ],
            }}}}
    with EwsSandbox(seed) as server:
        yield server


def test_filter_by_received_range_pages_exactly(big_inbox):
    ews = big_inbox
    account = connect(ews)
    _ = account.inbox
    start = utc(2024, 5, 1) + timedelta(minutes=10 * 50)  # skip the first 50 messages
    end = utc(2024, 5, 1) + timedelta(minutes=10 * 1169)  # ... and the last 30 (range is inclusive)
    expected = [m.item_id for m in ews.store.messages(ALICE, "Inbox") if start <= m.received <= end]
    assert len(expected) == 1120

    ews.calls.reset()
    qs = account.inbox.filter(datetime_received__range=(start, end)).only("subject", "datetime_received")
    qs = qs.order_by("datetime_received")
    qs.page_size = 100
    found = list(qs)
    assert [m.id for m in found] == expected
    assert [m.datetime_received for m in found] == sorted(m.datetime_received for m in found)
    assert found[0].subject == "Message 50"
    assert ews.calls.snapshot() == {"FindItem": math.ceil(1120 / 100)}

    ews.calls.reset()
    newest_first = account.inbox.filter(datetime_received__range=(start, end)).order_by("-datetime_received")
    newest_first.page_size = 5000  # Exchange caps a page at 1,000 items (EWSFindCountLimit)
    assert [m.id for m in newest_first.only("subject")] == expected[::-1]
    assert ews.calls.snapshot() == {"FindItem": 2}

    ews.calls.reset()
    assert account.inbox.filter(datetime_received__range=(start, end)).count() == 1120
    assert ews.calls.snapshot() == {"FindItem": 2}  # count() pages 1,000 ids at a time


@pytest.fixture(scope="module")
def small_inbox():
    seed = {"accounts": [{"username": "alice", "password": "alice-pw", "email": ALICE}],
            "mailboxes": {ALICE: {"folders": {
                "Inbox": {"generate": {"count": 300, "start": "2024-05-01T00:00:00Z", "step_seconds": 420}}}}}}
    with EwsSandbox(seed) as server:
        yield server


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.integers(0, 310), length=st.integers(0, 320), nudge=st.sampled_from([-1, 0, 1]),
       page_size=st.integers(25, 400), descending=st.booleans())
def test_range_paging_property(small_inbox, first, length, nudge, page_size, descending):
    """Any inclusive window, nudged a second across item boundaries, at any page size."""
    ews = small_inbox
    close_connections()
    account = connect(ews, version=Version(build=Build(15, 1, 2507, 6)))
    base = utc(2024, 5, 1)
    start = base + timedelta(seconds=420 * first + nudge)
    end = start + timedelta(seconds=420 * length)
    expected = [m.item_id for m in ews.store.messages(ALICE, "Inbox") if start <= m.received <= end]
    if descending:
        expected.reverse()
    qs = account.inbox.filter(datetime_received__range=(start, end)).only("subject")
    qs = qs.order_by("-datetime_received" if descending else "datetime_received")
    qs.page_size = page_size
    _ = account.inbox
    ews.calls.reset()
    assert [m.id for m in qs] == expected
    assert ews.calls.snapshot() == {"FindItem": max(1, math.ceil(len(expected) / page_size))}


def test_filter_boolean_connectives(big_inbox):
    account = connect(big_inbox)
    day = (utc(2024, 5, 2), utc(2024, 5, 3) - timedelta(seconds=1))
    in_day = account.inbox.filter(datetime_received__range=day)
    assert in_day.count() == 144
    either = account.inbox.filter(Q(subject="Message 1") | Q(subject="message 2"))  # case-insensitive
    assert sorted(m.subject for m in either.only("subject")) == ["Message 1", "Message 2"]
    not_first_day = account.inbox.filter(~Q(datetime_received__lt=utc(2024, 5, 2)))
    assert not_first_day.count() == 1200 - 144
    assert account.inbox.filter(subject__startswith="Message 119").count() == 11
    assert account.inbox.filter(datetime_received__gt=utc(2024, 5, 9, 7, 20)).count() == 3  # 07:30, 07:40, 07:50


def test_sent_items_filtered_by_datetime_sent(big_inbox):
    account = connect(big_inbox)
    window = account.sent.filter(datetime_sent__range=(utc(2024, 5, 2, 11), utc(2024, 5, 4, 13)))
    assert [m.subject for m in window.only("subject").order_by("datetime_sent")] == ["Sent 2", "Sent 3", "Sent 4"]
    # the same window on received time (two hours later) excludes Sent 4
    by_received = account.sent.filter(datetime_received__range=(utc(2024, 5, 2, 11), utc(2024, 5, 4, 13)))
    assert sorted(m.subject for m in by_received.only("subject")) == ["Sent 2", "Sent 3"]


# -- GetItem / GetAttachment ---------------------------------------------------------------------

def test_get_item_fields_round_trip(ews):
    account = connect(ews)
    [item] = account.inbox.filter(subject="Quote request")  # all fields: FindItem ids + GetItem
    assert isinstance(item.body, HTMLBody)
    assert "<b>quote</b>" in item.body
    assert item.text_body == "Could you send a quote?"
    assert item.author == Mailbox(name="Carol Client", email_address="carol@client.example",
                                  routing_type="SMTP", mailbox_type="OneOff")
    assert item.sender.email_address == "carol@client.example"
    assert [(r.name, r.email_address, r.mailbox_type) for r in item.to_recipients] == [
        ("Alice Example", ALICE, "Mailbox")]
    assert [r.email_address for r in item.cc_recipients] == ["dave@client.example"]
    assert [r.email_address for r in item.bcc_recipients] == ["record@crm.example"]
    assert item.datetime_sent == utc(2024, 5, 2, 8, 59)
    assert item.datetime_received == utc(2024, 5, 2, 9, 0, 5)
    assert item.message_id == "<q-req-1@client.example>"
    assert item.in_reply_to == "<thread-0@example.com>"
    assert item.references == "<thread-0@example.com>"
    assert item.categories == ["Customer"]
    assert (item.sensitivity, item.importance, item.item_class) == ("Private", "High", "IPM.Note")
    assert item.has_attachments is True
    assert [(a.name, a.size, a.content_type, a.is_inline, a.content_id) for a in item.attachments] == [
        ("requirements.pdf", 8_000_000, "application/pdf", False, None),
        ("notes.txt", 21, "text/plain", False, None),
        ("sig.png", 70, "image/png", True, "sig@client.example"),
    ]
    stored = ews.store.message(item.id)
    assert item.changekey == stored.change_key
    # one thread: the reply (.eml) and the sent quote share the conversation
    reply = account.inbox.get(message_id="<reply-1@client.example>")
    sent = account.sent.get(message_id="<quote-1@example.com>")
    assert item.conversation_id.id == reply.conversation_id.id == sent.conversation_id.id


def test_only_fields_use_find_then_get(ews):
    account = connect(ews)
    _ = account.inbox
    ews.calls.reset()
    items = list(account.inbox.all().only("subject", "to_recipients", "attachments").order_by("datetime_received"))
    assert [i.subject for i in items] == ["Quote request", "RE: Quote for 2024"]
    assert items[0].body is None  # not requested
    assert ews.calls.snapshot() == {"FindItem": 1, "GetItem": 1}


def test_missing_and_malformed_ids(ews):
    account = connect(ews)
    gone = ews.store.messages(ALICE, "Inbox/Clients")[0].item_id
    ews.store.delete_message(gone)
    results = list(account.fetch(ids=[(gone, None), ("not-an-exchange-id", None)]))
    assert [type(r).__name__ for r in results] == ["ErrorItemNotFound", "ErrorInvalidIdMalformed"]


def test_attachment_content_matches_bytes(ews):
    account = connect(ews)
    item = account.inbox.get(subject="Quote request")
    ews.calls.reset()
    big, text, image = item.attachments
    assert text.content == b"Bring the price list."
    big_bytes = big.content
    assert len(big_bytes) == 8_000_000
    assert big_bytes == ews.store.message(item.id).attachments[0].content()
    assert image.content == base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    assert ews.calls.snapshot() == {"GetAttachment": 3}


def test_eml_seed_round_trips(ews):
    account = connect(ews)
    reply = account.inbox.get(message_id="<reply-1@client.example>")
    assert reply.subject == "RE: Quote for 2024"
    assert isinstance(reply.body, HTMLBody) and "<b>looks good</b>" in reply.body
    assert reply.categories == ["Customer", "Follow up"]  # from the Keywords header
    assert reply.importance == "High"
    assert reply.datetime_sent == utc(2024, 5, 7, 10, 15)
    assert reply.datetime_received == utc(2024, 5, 7, 10, 15, 30)  # newest Received header
    assert reply.references == "<thread-0@example.com> <quote-1@example.com>"
    assert [(a.name, a.is_inline, a.content_id) for a in reply.attachments] == [
        ("logo.png", True, "logo@client.example"), ("signed-quote.pdf", False, None)]
    assert reply.attachments[1].content.startswith(b"%PDF-1.4")
    assert reply.mime_content.startswith(b"Received: from mx.client.example")
    sent = account.sent.get(message_id="<quote-1@example.com>")
    assert [r.email_address for r in sent.bcc_recipients] == ["record@crm.example"]
    assert sent.sensitivity == "Confidential"
    assert sent.text_body.startswith("Hi Carol,")


# -- UpdateItem ---------------------------------------------------------------------------------

def test_bulk_update_categories_visible_in_store(ews):
    account = connect(ews)
    items = list(account.inbox.all().only("subject", "categories"))
    old_keys = {i.id: i.changekey for i in items}
    for item in items:
        item.categories = [*(item.categories or []), "Salesforce"]
    ews.calls.reset()
    results = account.bulk_update([(i, ["categories"]) for i in items])
    assert ews.calls.snapshot() == {"UpdateItem": 1}
    for (item_id, change_key), item in zip(results, items, strict=True):
        assert item_id == item.id and change_key != old_keys[item.id]
        assert ews.store.message(item_id).change_key == change_key
    by_subject = {m.subject: m.categories for m in ews.store.messages(ALICE, "Inbox")}
    assert by_subject == {"Quote request": ("Customer", "Salesforce"),
                          "RE: Quote for 2024": ("Customer", "Follow up", "Salesforce")}


def test_save_categories_with_stale_change_key(ews):
    account = connect(ews)
    item = account.inbox.get(subject="Quote request")
    stale = item.changekey
    ews.store.update_message(item.id, is_read=True)  # someone else touched it: our change key is stale
    item.categories = ["Customer", "Salesforce"]
    item.save(update_fields=["categories"])  # ConflictResolution=AutoResolve: fine
    assert item.changekey != stale
    assert ews.store.message(item.id).categories == ("Customer", "Salesforce")
    item.changekey = stale
    item.categories = []
    with pytest.raises(ErrorIrresolvableConflict):
        item.save(update_fields=["categories"], conflict_resolution=NEVER_OVERWRITE)
    item.refresh()
    item.categories = []  # deleting the field clears it
    item.save(update_fields=["categories"])
    assert ews.store.message(item.id).categories == ()


SOAP_ENVELOPE = """<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
    xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
  <s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header>
  <s:Body>{body}</s:Body>
</s:Envelope>"""


def raw_soap(ews: EwsSandbox, body: str) -> ElementTree.Element:
    response = requests.post(ews.endpoint, data=SOAP_ENVELOPE.format(body=body).encode(),
                             auth=("alice", "alice-pw"), headers={"Content-Type": "text/xml"}, timeout=5)
    assert response.status_code == 200
    return ElementTree.fromstring(response.content)


def test_raw_update_append_and_delete_categories(ews):
    item_id = ews.store.messages(ALICE, "Inbox")[0].item_id
    append = f"""<m:UpdateItem ConflictResolution="AlwaysOverwrite" MessageDisposition="SaveOnly">
      <m:ItemChanges><t:ItemChange><t:ItemId Id="{item_id}"/><t:Updates>
        <t:AppendToItemField><t:FieldURI FieldURI="item:Categories"/>
          <t:Message><t:Categories><t:String>Salesforce</t:String><t:String>Customer</t:String></t:Categories>
          </t:Message></t:AppendToItemField>
        <t:SetItemField><t:FieldURI FieldURI="message:IsRead"/><t:Message><t:IsRead>true</t:IsRead></t:Message>
        </t:SetItemField>
      </t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"""
    tree = raw_soap(ews, append)
    assert tree.find(".//{*}UpdateItemResponseMessage").get("ResponseClass") == "Success"
    assert tree.find(".//{*}ConflictResults/{*}Count").text == "0"
    assert ews.store.message(item_id).categories == ("Customer", "Salesforce")
    assert ews.store.message(item_id).is_read is True
    delete = f"""<m:UpdateItem ConflictResolution="AutoResolve" MessageDisposition="SaveOnly">
      <m:ItemChanges><t:ItemChange><t:ItemId Id="{item_id}"/><t:Updates>
        <t:DeleteItemField><t:FieldURI FieldURI="item:Categories"/></t:DeleteItemField>
      </t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"""
    raw_soap(ews, delete)
    assert ews.store.message(item_id).categories == ()
    text_only = f"""<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:BodyType>Text</t:BodyType>
      <t:AdditionalProperties><t:FieldURI FieldURI="item:Body"/></t:AdditionalProperties></m:ItemShape>
      <m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>"""
    body = raw_soap(ews, text_only).find(".//{*}Message/{*}Body")
    assert (body.get("BodyType"), body.text) == ("Text", "Could you send a quote?")


# -- SyncFolderItems ----------------------------------------------------------------------------

def test_sync_items_reports_creates_updates_deletes(ews):
    account = connect(ews)
    inbox = account.inbox
    ews.calls.reset()
    first = list(inbox.sync_items(only_fields=["subject", "categories"], max_changes_returned=1))
    assert [(kind, item.subject) for kind, item in first] == [
        ("create", "Quote request"), ("create", "RE: Quote for 2024")]
    assert ews.calls.snapshot() == {"SyncFolderItems": 2}  # one change per page; the 2nd says it is the last
    state = inbox.item_sync_state

    quote, reply = (m.item_id for m in ews.store.messages(ALICE, "Inbox"))
    ews.store.update_message(quote, categories=["Customer", "Salesforce"])
    new_id = ews.store.add_message(ALICE, "Inbox", subject="Brand new", received="2024-05-08T08:00:00Z")
    ews.store.delete_message(reply)
    changes = list(inbox.sync_items(sync_state=state, only_fields=["subject", "categories"]))
    summary = [(kind, getattr(item, "subject", None) or item.id) for kind, item in changes]
    assert summary == [("update", "Quote request"), ("create", "Brand new"), ("delete", reply)]
    assert changes[0][1].categories == ["Customer", "Salesforce"]
    assert list(inbox.sync_items()) == []  # nothing new since
    assert new_id in ews.store.items

    # like Exchange: change summaries carry no body or attachment list, even when asked for everything
    inbox.item_sync_state = None  # a full resync
    everything = list(inbox.sync_items())
    quote_item = next(item for _, item in everything if item.subject == "Quote request")
    assert quote_item.has_attachments is True
    assert (quote_item.body, quote_item.attachments, quote_item.mime_content) == (None, [], None)


# -- faults ---------------------------------------------------------------------------------------

def test_server_busy_is_retried_with_fault_tolerance(ews):
    account = connect(ews, retry_policy=FaultTolerance(max_wait=5))
    _ = account.inbox
    ews.calls.reset()
    ews.faults.inject("FindItem", "throttle", nth=1, retry_after=0.2)
    started = time.monotonic()
    assert len(list(account.inbox.all().only("subject"))) == 2
    assert time.monotonic() - started >= 0.2  # honoured BackOffMilliseconds
    assert ews.calls.snapshot() == {"FindItem": 2}


def test_server_busy_fails_fast_without_retry_policy(ews):
    account = connect(ews)
    _ = account.inbox
    ews.faults.inject("FindItem", "throttle", nth=1, retry_after=0.25)
    with pytest.raises(ErrorServerBusy) as excinfo:
        list(account.inbox.all().only("subject"))
    assert excinfo.value.back_off == 0.25
    ews.faults.inject("GetItem", "throttle", nth=1)  # default BackOffMilliseconds: 100
    with pytest.raises(ErrorServerBusy) as excinfo:
        list(account.inbox.all())
    assert excinfo.value.back_off == 0.1


def test_http_503_surfaces(ews):
    account = connect(ews)
    _ = account.inbox
    ews.faults.inject("FindItem", "http", nth=1, status=503)
    with pytest.raises(ErrorServerBusy, match="503"):
        list(account.inbox.all().only("subject"))
    ews.faults.inject("GetItem", "http", nth=1, status=500)
    with pytest.raises(ErrorServerBusy, match="Server Error in 'EWS' Application"):
        list(account.inbox.all())
    assert ews.calls.snapshot() == {"ConvertId": 1, "GetFolder": 2, "FindItem": 2, "GetItem": 1}


def test_dropped_connection_surfaces_as_connection_error(ews):
    account = connect(ews)
    _ = account.inbox
    ews.faults.inject("FindItem", "drop", nth=1)
    with pytest.raises(ErrorTimeoutExpired, match="ConnectionError"):
        list(account.inbox.all().only("subject"))
    assert len(list(account.inbox.all().only("subject"))) == 2  # the next request works again


def test_control_api(ews):
    account = connect(ews)
    rule = requests.post(f"{ews.base_url}/_sandbox/faults", timeout=5,
                         json={"operation": "GetFolder", "kind": "throttle", "nth": 1, "retry_after": 0.5}).json()
    assert rule["kind"] == "throttle"
    with pytest.raises(ErrorServerBusy):
        _ = account.inbox
    assert requests.get(f"{ews.base_url}/_sandbox/calls", timeout=5).json() == {
        "total": 2, "by_operation": {"ConvertId": 1, "GetFolder": 1}}
    state = requests.get(f"{ews.base_url}/_sandbox/state", timeout=5).json()
    inbox = state["mailboxes"][ALICE]["folders"]["Inbox"]
    assert inbox["count"] == 2
    assert inbox["messages"][0]["categories"] == ["Customer"]
    assert "password" not in json.dumps(state)


def test_resolve_names(ews):
    account = connect(ews)
    _ = account.protocol.version  # exchangelib needs the version before protocol-level services
    resolved = account.protocol.resolve_names(["alice", "nobody-at-all"])
    assert [m.email_address for m in resolved if isinstance(m, Mailbox)] == [ALICE]


def test_seed_file_parses_and_starts():
    with EwsSandbox.from_files(SEED) as server:
        assert requests.get(server.endpoint, timeout=5).status_code == 401
    assert read_seed_file(SEED)["accounts"][0]["username"] == "alice"


def test_cli_prints_endpoint_without_passwords(tmp_path):
    info_file = tmp_path / "ews.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.ews", "--seed", str(SEED), "--eml-dir", str(DATA / "eml"),
         "--eml-mailbox", "bob@example.com", "--info-file", str(info_file)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        assert info["endpoint"].endswith("/EWS/Exchange.asmx")
        assert "alice" in info["accounts"] and "alice-pw" not in line
        assert json.loads(info_file.read_text()) == info
        state = requests.get(info["control"] + "state", timeout=5).json()
        assert state["mailboxes"]["bob@example.com"]["folders"]["Inbox"]["count"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


# -- item classes: what Exchange serves for meetings, appointments, reports (issue 14.4) -------------

KINDS = [  # (item class, the element Exchange serves, exchangelib's class for it)
    ("IPM.Note", "Message", "Message"),
    ("IPM.Schedule.Meeting.Request", "MeetingRequest", "MeetingRequest"),
    ("IPM.Schedule.Meeting.Resp.Pos", "MeetingResponse", "MeetingResponse"),
    ("IPM.Schedule.Meeting.Resp.Neg", "MeetingResponse", "MeetingResponse"),
    ("IPM.Schedule.Meeting.Resp.Tent", "MeetingResponse", "MeetingResponse"),
    ("IPM.Schedule.Meeting.Canceled", "MeetingCancellation", "MeetingCancellation"),
    ("IPM.Appointment", "CalendarItem", "CalendarItem"),
    ("REPORT.IPM.Note.IPNRN", "Message", "Message"),
    ("REPORT.IPM.Note.IPNNRN", "Message", "Message"),
    ("REPORT.IPM.Note.DR", "Message", "Message"),
    ("REPORT.IPM.Note.NDR", "Message", "Message"),
    ("IPM.Note.Rules.OofTemplate.Microsoft", "Message", "Message"),
    ("IPM.Note.Rules.ReplyTemplate.Microsoft", "Message", "Message"),
]


@pytest.fixture
def kinds_inbox():
    seed = {"accounts": [{"username": "alice", "password": "alice-pw", "email": ALICE}],
            "mailboxes": {ALICE: {"folders": {"Inbox": [
                {"subject": f"Kind {n}", "item_class": item_class, "from": "Carol <carol@client.example>",
                 "to": [ALICE], "received": f"2024-05-01T10:{n:02d}:00Z", "message_id": f"<kind-{n}@client.example>",
                 "body": f"body {n}"}
                for n, (item_class, _, _) in enumerate(KINDS)]}}}}
    with EwsSandbox(seed) as server:
        yield server


def test_item_classes_are_served_as_exchange_elements(kinds_inbox):
    ews = kinds_inbox
    inbox_id = ews.store.folder(ALICE, "Inbox").folder_id
    find = raw_soap(ews, f"""<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>
      <t:AdditionalProperties><t:FieldURI FieldURI="item:ItemClass"/><t:FieldURI FieldURI="item:Subject"/>
      </t:AdditionalProperties></m:ItemShape><m:ParentFolderIds><t:FolderId Id="{inbox_id}"/></m:ParentFolderIds>
      </m:FindItem>""")
    served = {el.find("{*}Subject").text: (el.tag.rsplit("}", 1)[1], el.find("{*}ItemClass").text)
              for el in find.find(".//{*}RootFolder/{*}Items")}
    assert served == {f"Kind {n}": (element, item_class) for n, (item_class, element, _) in enumerate(KINDS)}

    account = connect(ews)
    items = list(account.inbox.all().order_by("datetime_received"))  # FindItem + GetItem, every property
    assert [(type(i).__name__, i.item_class) for i in items] == [(cls, c) for c, _, cls in KINDS]
    by_class = {i.item_class: i for i in items}
    request = by_class["IPM.Schedule.Meeting.Request"]  # MessageType's properties come with a meeting message
    assert (request.subject, request.author.email_address, request.message_id) == (
        "Kind 1", "carol@client.example", "<kind-1@client.example>")
    assert [r.email_address for r in request.to_recipients] == [ALICE]
    appointment = by_class["IPM.Appointment"]  # an appointment has ItemType's properties only
    assert appointment.subject == "Kind 6" and str(appointment.body) == "body 6"
    assert not hasattr(appointment, "to_recipients")
    # SyncFolderItems and UpdateItem answer with the same elements
    kinds = {item.item_class: type(item).__name__ for _, item in account.inbox.sync_items(only_fields=["item_class"])}
    assert kinds == {c: cls for c, _, cls in KINDS}
    appointment.categories = ["Salesforce"]
    appointment.save(update_fields=["categories"])
    assert ews.store.message(appointment.id).categories == ("Salesforce",)


def test_item_class_restriction_on_find_item(kinds_inbox):
    account = connect(kinds_inbox)
    meetings = account.inbox.filter(item_class__startswith="IPM.Schedule.Meeting").only("item_class")
    assert sorted(m.item_class for m in meetings) == sorted(c for c, _, _ in KINDS if c.startswith("IPM.Schedule"))
    reports = account.inbox.filter(item_class__istartswith="report.").only("subject")
    assert reports.count() == 4


def test_headers_as_they_arrived():
    """InternetMessageHeaders (exchangelib ``headers``) and PR_TRANSPORT_MESSAGE_HEADERS (0x007D),
    one header block: seeded ``headers`` added to the made ones; none for what the owner sent."""
    seed = {"accounts": [{"username": "alice", "password": "alice-pw", "email": ALICE}],
            "mailboxes": {ALICE: {"folders": {
                "Inbox": [{"subject": "Away", "from": "carol@client.example", "to": [ALICE],
                           "message_id": "<oof@client.example>", "received": "2024-05-01T10:00:00Z",
                           "headers": [["Auto-Submitted", "auto-replied"]]},
                          {"subject": "Hello", "from": "carol@client.example", "to": [ALICE],
                           "received": "2024-05-01T11:00:00Z"}],
                "Sent Items": [{"subject": "Mine", "from": ALICE, "to": ["carol@client.example"],
                                "sent": "2024-05-01T12:00:00Z"}]}}}}
    with EwsSandbox(seed) as ews:
        account = connect(ews)
        away, hello = account.inbox.all().only("subject", "headers").order_by("datetime_received")
        away_headers = {h.name: h.value for h in away.headers}
        assert away_headers["Auto-Submitted"] == "auto-replied"
        assert (away_headers["From"], away_headers["Subject"], away_headers["Message-ID"]) == (
            "carol@client.example", "Away", "<oof@client.example>")
        assert "Auto-Submitted" not in {h.name for h in hello.headers}
        [mine] = account.sent.all().only("subject", "headers")
        assert mine.headers is None  # never crossed a transport into this mailbox

        ids = "".join(f'<t:ItemId Id="{m.item_id}"/>' for m in ews.store.messages(ALICE))
        raw = raw_soap(ews, f"""<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>
          <t:ExtendedFieldURI PropertyTag="0x7d" PropertyType="String"/>
          <t:ExtendedFieldURI PropertyTag="0x1000" PropertyType="String"/></t:AdditionalProperties></m:ItemShape>
          <m:ItemIds>{ids}</m:ItemIds></m:GetItem>""")
        answers = raw.findall(".//{*}Items/{*}Message")
        blocks = [[p.find("{*}Value").text for p in m.findall("{*}ExtendedProperty")] for m in answers]
        assert len(blocks) == 3 and blocks[2] == []  # the sent item has none; 0x1000 is not served
        assert [len(b) for b in blocks[:2]] == [1, 1]
        assert "\r\nAuto-Submitted: auto-replied\r\n" in blocks[0][0] and blocks[0][0].endswith("\r\n\r\n")
        uri = answers[0].find("{*}ExtendedProperty/{*}ExtendedFieldURI")
        assert (uri.get("PropertyTag"), uri.get("PropertyType")) == ("0x7d", "String")  # echoed as asked


# -- item attachments and control characters (issue 14.11) ------------------------------------------

def test_item_attachment_is_served_as_item_attachment(tmp_path):
    inner_eml = (DATA / "eml" / "plain_outbound.eml").read_bytes()
    outer = tmp_path / "forward.eml"
    outer.write_bytes(
        b"From: Carol <carol@client.example>\r\nTo: alice@example.com\r\nSubject: Fwd: the quote\r\n"
        b"Message-ID: <fwd-1@client.example>\r\nDate: Wed, 08 May 2024 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
        b"--b1\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n" + inner_eml +
        b"\r\n--b1--\r\n")
    seed = {"accounts": [{"username": "alice", "password": "alice-pw", "email": ALICE}],
            "mailboxes": {ALICE: {"folders": {"Inbox": [
                {"subject": "With an attached meeting", "from": "carol@client.example", "to": [ALICE],
                 "received": "2024-05-01T10:00:00Z",
                 "attachments": [{"name": "notes.txt", "content": "hello"},
                                 {"item": {"subject": "Kick-off", "item_class": "IPM.Schedule.Meeting.Request",
                                           "from": "dave@client.example", "to": [ALICE], "body": "Agenda"}}]},
                {"eml": str(outer)}]}}}}
    with EwsSandbox(seed) as ews:
        account = connect(ews)
        meeting_mail, forward = account.inbox.all().order_by("datetime_received")
        by_type = {type(a).__name__: a for a in meeting_mail.attachments}  # exchangelib lists items first
        notes, attached = by_type["FileAttachment"], by_type["ItemAttachment"]
        assert len(meeting_mail.attachments) == 2 and notes.content == b"hello"
        assert (attached.name, attached.is_inline) == ("Kick-off", False)
        stored = ews.store.message(meeting_mail.id).attachments[1]
        assert attached.size == stored.size == stored.item.size
        ews.calls.reset()
        item = attached.item  # GetAttachment: the attached item with its properties
        assert ews.calls.snapshot() == {"GetAttachment": 1}
        assert (type(item).__name__, item.item_class, item.subject, str(item.body)) == (
            "MeetingRequest", "IPM.Schedule.Meeting.Request", "Kick-off", "Agenda")
        assert item.author.email_address == "dave@client.example" and item.id is None  # no id of its own
        assert b"Subject: Kick-off" in item.mime_content

        [attached_email] = forward.attachments  # an .eml's message/rfc822 part: an item attachment too
        assert type(attached_email).__name__ == "ItemAttachment"
        assert attached_email.item.subject == "Quote for 2024"
        assert attached_email.item.mime_content == inner_eml

        item_id = meeting_mail.id
        raw = raw_soap(ews, f"""<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>
          <t:FieldURI FieldURI="item:Attachments"/></t:AdditionalProperties></m:ItemShape>
          <m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>""")
        listed = raw.find(".//{*}Attachments/{*}ItemAttachment")
        assert [c.tag.rsplit("}", 1)[1] for c in listed] == ["AttachmentId", "Name", "Size", "LastModifiedTime",
                                                             "IsInline"]  # metadata only, no item
        answer = raw_soap(ews, f"""<m:GetAttachment><m:AttachmentIds><t:AttachmentId Id="{stored.attachment_id}"/>
          </m:AttachmentIds></m:GetAttachment>""")
        served = answer.find(".//{*}Attachments/{*}ItemAttachment/{*}MeetingRequest")
        assert served.find("{*}Subject").text == "Kick-off" and served.find("{*}ItemId") is None


def test_control_characters_are_sent_as_character_references(ews):
    """One control character in a subject used to make the sandbox answer the whole FindItem page
    with a 500; Exchange sends it as a character reference (``&#x7;``) and exchangelib reads it."""
    ews.store.add_message(ALICE, "Inbox", subject="Bell \x07 rings", body="esc \x1b[0m end", received="2024-05-08T08:00:00Z",
                          attachments=[{"name": "odd\x01name.txt", "content": "x"}], **{"from": "carol@client.example"})
    inbox_id = ews.store.folder(ALICE, "Inbox").folder_id
    response = requests.post(ews.endpoint, auth=("alice", "alice-pw"), headers={"Content-Type": "text/xml"},
                             timeout=5, data=SOAP_ENVELOPE.format(body=f"""<m:FindItem Traversal="Shallow">
      <m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape>
      <m:ParentFolderIds><t:FolderId Id="{inbox_id}"/></m:ParentFolderIds></m:FindItem>""").encode())
    assert response.status_code == 200
    assert b"<t:Subject>Bell &#x7; rings</t:Subject>" in response.content
    account = connect(ews)
    subjects = [m.subject for m in account.inbox.all().only("subject").order_by("datetime_received")]
    assert subjects == ["Quote request", "RE: Quote for 2024", "Bell \x07 rings"]
    bell = next(m for m in ews.store.messages(ALICE, "Inbox") if m.subject.startswith("Bell"))
    item = account.inbox.get(id=bell.item_id)  # GetItem: body and attachment names too
    assert str(item.body) == "esc \x1b[0m end"
    assert [a.name for a in item.attachments] == ["odd\x01name.txt"]
    assert item.attachments[0].content == b"x"
