"""Airflow hook for Exchange Web Services: an Airflow Connection → an exchangelib ``Account``.

Connection format (conn_type ``generic``; see docs/CONNECTIONS.md):

- ``host``: the EWS endpoint URL, e.g. ``https://mail.example.com/EWS/Exchange.asmx``
  (or extra ``service_endpoint``).
- ``login`` / ``password``: the service account (``DOMAIN\\user`` for NTLM); for OAuth 2.0
  the app's client id / client secret.
- ``extra``: ``auth_type`` (``basic`` | ``ntlm`` | ``oauth2``, default ``ntlm``),
  ``access_type`` (``delegate`` | ``impersonation``, default ``impersonation``),
  ``tenant_id`` (oauth2), ``version`` (e.g. ``"15.1.2507.0"``; omitted = ask the server),
  ``max_wait`` (seconds exchangelib keeps retrying ErrorServerBusy / connection errors,
  honouring BackOffMilliseconds; default 120).

Credentials never leave this hook: nothing here logs or returns them.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    OAUTH2,
    Account,
    Build,
    Configuration,
    Credentials,
    FaultTolerance,
    OAuth2Credentials,
    Version,
)
from exchangelib.errors import UnauthorizedError
from exchangelib.protocol import Protocol

from email_sync.sources.ews import EwsMailSource, instrument

_AUTH_TYPES = {"basic": BASIC, "ntlm": NTLM, "oauth2": OAUTH2}


class AuthFailFastTolerance(FaultTolerance):
    """exchangelib's FaultTolerance, except that HTTP 401 is not retried.

    FaultTolerance treats a 401 as throttling and waits (60 s, then up to ``max_wait``); a
    wrong password or an expired token would stall every task. Real throttling arrives as
    ErrorServerBusy with BackOffMilliseconds, which is still retried.
    """

    def raise_response_errors(self, response: Any) -> Any:
        if response.status_code == 401:
            raise UnauthorizedError(f"Exchange refused the credentials (HTTP 401) for {response.url}")
        return super().raise_response_errors(response)
_ACCESS_TYPES = {"delegate": DELEGATE, "impersonation": IMPERSONATION}


class ExchangeHook(BaseHook):
    """Opens mailboxes through EWS with one shared exchangelib configuration per connection."""

    conn_name_attr = "exchange_conn_id"
    default_conn_name = "exchange_default"
    conn_type = "generic"
    hook_name = "Exchange (EWS)"

    def __init__(self, exchange_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.exchange_conn_id = exchange_conn_id

    @cached_property
    def _settings(self) -> dict[str, Any]:
        conn = self.get_connection(self.exchange_conn_id)
        extra = conn.extra_dejson
        endpoint = extra.get("service_endpoint") or conn.host
        if not endpoint:
            raise ValueError(f"Connection {self.exchange_conn_id!r}: set host to the EWS endpoint URL")
        if "://" not in endpoint:
            endpoint = f"https://{endpoint}/EWS/Exchange.asmx"
        auth_type = str(extra.get("auth_type", "ntlm")).lower()
        access_type = str(extra.get("access_type", "impersonation")).lower()
        if auth_type not in _AUTH_TYPES:
            raise ValueError(f"Connection {self.exchange_conn_id!r}: auth_type must be one of {sorted(_AUTH_TYPES)}")
        if access_type not in _ACCESS_TYPES:
            raise ValueError(f"Connection {self.exchange_conn_id!r}: access_type must be one of {sorted(_ACCESS_TYPES)}")
        return {
            "endpoint": endpoint,
            "auth_type": auth_type,
            "access_type": access_type,
            "login": conn.login,
            "password": conn.password,
            "tenant_id": extra.get("tenant_id"),
            "version": extra.get("version"),
            "max_wait": float(extra.get("max_wait", 120)),
        }

    @cached_property
    def configuration(self) -> Configuration:
        s = self._settings
        if s["auth_type"] == "oauth2":
            credentials: Credentials | OAuth2Credentials = OAuth2Credentials(
                client_id=s["login"], client_secret=s["password"], tenant_id=s["tenant_id"]
            )
        else:
            credentials = Credentials(username=s["login"], password=s["password"])
        version = None
        if s["version"]:
            version = Version(build=Build(*(int(p) for p in str(s["version"]).split("."))))
        configuration = Configuration(
            service_endpoint=s["endpoint"],
            credentials=credentials,
            auth_type=_AUTH_TYPES[s["auth_type"]],
            version=version,
            retry_policy=AuthFailFastTolerance(max_wait=s["max_wait"]),
        )
        # Accounts of this configuration share exchangelib's cached protocol: instrumented
        # first, so the requests an Account makes while it is set up are counted too.
        instrument(Protocol(config=configuration))
        return configuration

    def get_account(self, mailbox: str) -> Account:
        """The mailbox as an exchangelib Account (no autodiscover: the endpoint is configured)."""
        return Account(
            primary_smtp_address=mailbox,
            config=self.configuration,
            autodiscover=False,
            access_type=_ACCESS_TYPES[self._settings["access_type"]],
        )

    def get_mail_source(self, mailbox: str) -> EwsMailSource:
        """The job's mailbox as the sync's mail source (the account opens inside it: counted, translated)."""
        return EwsMailSource(lambda: self.get_account(mailbox))

    def test_connection(self) -> tuple[bool, str]:
        try:
            account = self.get_account(self._settings["login"])
            account.inbox.total_count  # noqa: B018 - one GetFolder call proves auth + endpoint
        except Exception as exc:  # the UI shows the message; never the credentials
            return False, f"{type(exc).__name__}: {exc}"
        return True, "Connection to EWS works"
