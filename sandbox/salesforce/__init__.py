"""A stateful loopback Salesforce org (REST, sObject Collections, Bulk API 2.0) over HTTPS.

Unmodified ``simple_salesforce`` and the Airflow provider's ``SalesforceHook`` work against
it. See ``docs/sandbox_salesforce.md``.

    with SalesforceSandbox({"users": [...], "contacts": [...]}) as sandbox:
        sf = sandbox.client()            # simple_salesforce.Salesforce trusting the test CA
        sf.query_all("SELECT Id, Email FROM Contact")
        sandbox.org.records("Task")      # inspect the org directly
"""

from sandbox.salesforce.org import Org, OrgSettings, RecordError, RecordFaultRule, RequestError
from sandbox.salesforce.seed import SeedError, build_org, load_seed
from sandbox.salesforce.server import SalesforceSandbox

__all__ = [
    "Org",
    "OrgSettings",
    "RecordError",
    "RecordFaultRule",
    "RequestError",
    "SalesforceSandbox",
    "SeedError",
    "build_org",
    "load_seed",
]
