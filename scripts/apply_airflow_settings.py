"""Apply airflow_settings.yaml (astro-CLI format) to the local Airflow metadata database.

The astro CLI does this for `astro dev start`; we do not use the astro CLI, so the quick start
calls this instead. Values may use ${NAME} / ${NAME:-default} from the environment. Existing
objects with the same id are replaced, so running it twice is harmless.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand(value: Any) -> Any:
    if isinstance(value, str):
        return _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


def apply(path: Path) -> None:
    from airflow.models import Connection, Pool, Variable
    from airflow.utils.session import create_session

    settings = expand(yaml.safe_load(path.read_text()))["airflow"]
    with create_session() as session:
        for spec in settings.get("connections") or []:
            session.query(Connection).filter(Connection.conn_id == spec["conn_id"]).delete()
            extra = spec.get("conn_extra")
            session.add(Connection(
                conn_id=spec["conn_id"], conn_type=spec["conn_type"], host=spec.get("conn_host") or None,
                schema=spec.get("conn_schema") or None, login=spec.get("conn_login") or None,
                password=spec.get("conn_password") or None, port=spec.get("conn_port") or None,
                extra=json.dumps({k: v for k, v in extra.items() if v not in ("", None)}) if extra else None,
            ))
        session.flush()
    for spec in settings.get("pools") or []:
        Pool.create_or_update_pool(spec["pool_name"], int(spec["pool_slot"]), spec.get("pool_description", ""),
                                   include_deferred=False)
    for spec in settings.get("variables") or []:
        Variable.set(spec["variable_name"], spec["variable_value"])
    print(f"applied {path}: {len(settings.get('connections') or [])} connections, "
          f"{len(settings.get('pools') or [])} pools, {len(settings.get('variables') or [])} variables")


if __name__ == "__main__":
    apply(Path(sys.argv[1] if len(sys.argv) > 1 else "airflow_settings.yaml"))
