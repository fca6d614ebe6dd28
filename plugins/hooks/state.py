"""Airflow hook for the sync state store: an Airflow Connection → ``StateStore``.

Connection (see docs/CONNECTIONS.md):

- ``sqlite``: ``host`` is the database file path (the quick start's default).
- ``postgres``: host, port, login, password, ``schema`` = database (production).

Credentials stay inside the engine URL; nothing here logs them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseHook


class StateStoreHook(BaseHook):
    conn_name_attr = "state_conn_id"
    default_conn_name = "email_sync_state"
    conn_type = "generic"
    hook_name = "Email sync state store"

    def __init__(self, state_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.state_conn_id = state_conn_id

    def sqlalchemy_url(self) -> str:
        conn = self.get_connection(self.state_conn_id)
        return connection_url(conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.schema)

    def get_store(self) -> Any:
        from email_sync.store.state_store import StateStore

        return StateStore.from_url(self.sqlalchemy_url())


def connection_url(conn_type: str | None, host: str | None, port: int | None, login: str | None,
                   password: str | None, schema: str | None) -> str:
    """SQLAlchemy URL for a ``sqlite`` or ``postgres`` Connection's fields."""
    kind = (conn_type or "").lower()
    if kind == "sqlite":
        if not host:
            raise ValueError("the state store's sqlite Connection needs the database file path as host")
        return f"sqlite:///{host}"
    if kind in ("postgres", "postgresql"):
        auth = ""
        if login:
            auth = quote(login, safe="") + (f":{quote(password, safe='')}" if password else "") + "@"
        return f"postgresql+psycopg2://{auth}{host or 'localhost'}:{port or 5432}/{schema or 'postgres'}"
    raise ValueError(f"the state store supports sqlite and postgres Connections, not {conn_type!r}")
