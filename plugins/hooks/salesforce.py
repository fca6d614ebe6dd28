"""Airflow hook for Salesforce: session-id / access-token Connections and custom CA bundles.

A thin subclass of the provider's ``SalesforceHook`` (apache-airflow-providers-salesforce),
so everything the provider offers (``make_query``, ``describe_object``, ``get_conn`` ...) works
unchanged. It adds:

- **Direct session**: a Connection without a login whose *password* (or extra
  ``session_id``) holds an access token / session id, plus extra ``instance_url`` (or
  ``instance``). simple-salesforce accepts ``https://host:port`` instance URLs.
- **CA bundle**: extra ``ca_bundle`` (a PEM path) is what the HTTPS session trusts, even when
  ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` are set (requests would otherwise let them win).
  Without it the system CA store is used (the production default).
- Anything else (``login`` + ``password`` + extra ``security_token``, OAuth consumer key/secret,
  JWT) goes through the provider's normal login, using the same CA-aware session.

Connection format (conn type ``salesforce``), JSON form for ``AIRFLOW_CONN_<ID>``::

    {"conn_type": "salesforce",
     "password": "<session id / access token>",
     "extra": {"instance_url": "https://yourorg.my.salesforce.com",
               "version": "59.0",
               "ca_bundle": "/path/to/ca.pem"}}

    {"conn_type": "salesforce", "login": "user@example.com", "password": "<password>",
     "extra": {"security_token": "<token>", "domain": "login"}}

Secrets never reach logs: the token is registered with Airflow's secrets masker and nothing
here logs connection fields.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import requests
from airflow.providers.salesforce.hooks.salesforce import SalesforceHook
from simple_salesforce import Salesforce, api

from email_sync.crm.http import PinnedCASession


class SalesforceSessionHook(SalesforceHook):
    """``SalesforceHook`` that also accepts a session id / access token and a CA bundle."""

    hook_name = "Salesforce (session id / access token)"

    def _session(self, extras: dict[str, Any]) -> requests.Session:
        session = self.session if self.session is not None else PinnedCASession()
        ca_bundle = self._get_field(extras, "ca_bundle")
        if ca_bundle:
            session.verify = str(ca_bundle)
        self.session = session
        return session

    @cached_property
    def conn(self) -> api.Salesforce:
        """The simple_salesforce client (cached)."""
        connection = self.get_connection(self.conn_id)
        extras = connection.extra_dejson
        session = self._session(extras)
        token = self.session_id or self._get_field(extras, "session_id")
        if not token and not connection.login and connection.password:
            token = connection.password
        instance_url = self._get_field(extras, "instance_url")
        instance = self._get_field(extras, "instance")
        if token and (instance_url or instance):
            _mask(token)
            return Salesforce(
                session_id=token,
                instance_url=instance_url,
                instance=None if instance_url else instance,
                version=self._get_field(extras, "version") or api.DEFAULT_API_VERSION,
                proxies=self._get_field(extras, "proxies") or None,
                session=session,
            )
        # username/password/security token, OAuth or JWT: the provider's own login (CA-aware session).
        return SalesforceHook.conn.func(self)  # type: ignore[attr-defined]


def _mask(secret: str) -> None:
    try:
        from airflow.providers.common.compat.sdk import mask_secret
    except ImportError:  # pragma: no cover - older Airflow
        return
    mask_secret(secret)
