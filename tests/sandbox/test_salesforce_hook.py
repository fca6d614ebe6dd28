"""SalesforceSessionHook built from an Airflow Connection (env var, no metadata DB) against the sandbox."""

from __future__ import annotations

import json
import logging

import pytest

from sandbox.salesforce import SalesforceSandbox

SEED = {
    "users": [{"Username": "integration@acme.example", "Email": "integration@acme.example", "LastName": "Bot",
               "password": "pw", "security_token": "tok"}],
    "contacts": [{"LastName": f"Person{i}", "Email": f"p{i}@customer.example"} for i in range(2100)],
}


@pytest.fixture(scope="module")
def sandbox():
    with SalesforceSandbox(SEED) as sb:
        yield sb


@pytest.fixture
def airflow_env(monkeypatch, tmp_path):
    # tests/conftest.py already points AIRFLOW_HOME at a temp dir and disables examples; keep it explicit.
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    return monkeypatch


def _hook(monkeypatch, connection: dict):
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_SANDBOX", json.dumps(connection))
    from hooks.salesforce import SalesforceSessionHook

    return SalesforceSessionHook(salesforce_conn_id="salesforce_sandbox")


def test_session_id_connection_queries_the_sandbox(sandbox, airflow_env, caplog):
    hook = _hook(airflow_env, {
        "conn_type": "salesforce",
        "password": sandbox.session_id,
        "extra": {"instance_url": sandbox.instance_url, "ca_bundle": str(sandbox.ca_bundle), "version": "59.0"},
    })
    with caplog.at_level(logging.DEBUG):
        result = hook.make_query("SELECT Id, Email FROM Contact")
    assert result["totalSize"] == 2100 and len(result["records"]) == 2100
    assert sandbox.calls.get("queryMore") >= 1
    assert sandbox.session_id not in caplog.text

    fields = {f["name"]: f for f in hook.describe_object("Task")["fields"]}
    assert fields["Subject"]["length"] == 255
    assert hook.test_connection() == (True, "Connection successfully tested")  # describes Account



def test_extra_session_id_and_bad_token(sandbox, airflow_env):
    hook = _hook(airflow_env, {"conn_type": "salesforce",
                               "extra": {"session_id": "not-a-session", "instance_url": sandbox.instance_url,
                                         "ca_bundle": str(sandbox.ca_bundle)}})
    from simple_salesforce.exceptions import SalesforceExpiredSession

    with pytest.raises(SalesforceExpiredSession):
        hook.make_query("SELECT Id FROM Contact")


def test_username_password_connection_uses_the_provider_login(sandbox, airflow_env):
    logins = sandbox.calls.get("soap.login")
    hook = _hook(airflow_env, {
        "conn_type": "salesforce",
        "login": "integration@acme.example",
        "password": "pw",
        # simple-salesforce logs in at https://{domain}.salesforce.com/services/Soap/u/<v>; the sandbox
        # answers that path under any prefix, so the domain can point at it.
        "extra": {"security_token": "tok", "domain": f"127.0.0.1:{sandbox.port}/login",
                  "ca_bundle": str(sandbox.ca_bundle)},
    })
    assert hook.make_query("SELECT Id FROM Contact LIMIT 5")["totalSize"] == 5  # query_all recounts rows
    assert sandbox.calls.get("soap.login") == logins + 1
