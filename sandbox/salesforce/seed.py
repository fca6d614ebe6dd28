"""Seeding the sandbox org from a dict, a JSON/YAML file, and CSV files.

Seed layout (every key optional)::

    org:        OrgSettings fields (shared_activities, has_external_id_field, daily_api_max,
                max_file_bytes, time_zone, alternate_email_fields, task_types, session_id, ...)
    users:      [{Username, Email, FirstName, LastName, TimeZoneSidKey, IsActive,
                  password, security_token, Id?}]      the first active user runs the API
    accounts:   [{Name, OwnerUsername?}]
    contacts:   [{FirstName, LastName, Email, Secondary_Email__c, OwnerUsername | OwnerId,
                  AccountName?, CreatedDate?}]
    leads:      [{FirstName, LastName, Company, Email, Secondary_Email__c, IsConverted, OwnerUsername}]
    tasks:      [{Subject, WhoEmail?, WhoId?, OwnerUsername, Email_Sync_Key__c, ...}]
    contacts_csv / leads_csv / users_csv / accounts_csv: path (relative to the seed file) of a CSV
                whose header row uses the same keys (``Owner.Username`` also accepted).

Records use Salesforce field names; the helper keys (``OwnerUsername``, ``AccountName``,
``WhoEmail``, ``password``, ``security_token``, ``Id``) are resolved here. Seeding uses the
org directly, so it never counts against the API allowance.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from sandbox.salesforce.org import Org, OrgSettings, RecordError, RequestError

_RECORD_KEYS = ("users", "accounts", "contacts", "leads", "tasks")
_OBJECTS = {"users": "User", "accounts": "Account", "contacts": "Contact", "leads": "Lead", "tasks": "Task"}


class SeedError(ValueError):
    pass


def load_seed(path: str | Path) -> dict[str, Any]:
    """Read a seed file (.json, .yaml/.yml or a .csv of contacts) into a seed dict."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    elif path.suffix.lower() == ".csv":
        data = {"contacts_csv": path.name}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise SeedError(f"{path}: a seed must be a mapping")
    data = dict(data)
    data.setdefault("_base_dir", str(path.parent))
    return data


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            clean: dict[str, Any] = {}
            for key, value in row.items():
                if key is None:
                    continue
                key = key.strip()
                if key.lower() == "owner.username":
                    key = "OwnerUsername"
                if value is None or value == "":
                    continue
                clean[key] = value
            rows.append(clean)
        return rows


def build_org(seed_data: dict[str, Any] | None, *, seed: int = 0) -> Org:
    """A new org populated from a seed dict (see module docstring)."""
    data = dict(seed_data or {})
    base = Path(data.pop("_base_dir", "."))
    unknown = set(data) - {"org", *_RECORD_KEYS, *(f"{k}_csv" for k in _RECORD_KEYS)}
    if unknown:
        raise SeedError(f"unknown seed keys: {sorted(unknown)}")
    settings = OrgSettings.from_dict(dict(data.get("org") or {}))
    org = Org(settings, seed=seed)
    groups: dict[str, list[dict[str, Any]]] = {key: list(data.get(key) or []) for key in _RECORD_KEYS}
    for key in _RECORD_KEYS:
        csv_path = data.get(f"{key}_csv")
        if csv_path:
            groups[key].extend(read_csv(base / csv_path))
    users = groups["users"] or [{"Username": "integration@sandbox.example", "Email": "integration@sandbox.example",
                                 "FirstName": "Integration", "LastName": "User", "TimeZoneSidKey": settings.time_zone,
                                 "password": "password", "security_token": "token"}]
    usernames: dict[str, str] = {}
    with org.lock:
        for row in users:
            row = dict(row)
            password = str(row.pop("password", "") or "")
            token = str(row.pop("security_token", "") or "")
            user_id = _insert(org, "User", row)
            username = org.get(user_id)[1]["Username"]  # type: ignore[index]
            usernames[username.lower()] = user_id
            org.credentials[username.lower()] = (password, token)
            if org.default_user_id is None and org.get(user_id)[1].get("IsActive", True):  # type: ignore[index]
                org.default_user_id = user_id
        if org.default_user_id is None:
            raise SeedError("the seed needs at least one active user")
        # Records created before the running user existed get it as creator.
        org.add_session(org.default_user_id, token=org.session_id)
        accounts: dict[str, str] = {}
        for key in ("accounts", "contacts", "leads", "tasks"):
            for row in groups[key]:
                row = _resolve(org, key, dict(row), usernames, accounts)
                record_id = _insert(org, _OBJECTS[key], row)
                if key == "accounts":
                    accounts[str(row["Name"]).lower()] = record_id
    return org


def _resolve(org: Org, key: str, row: dict[str, Any], usernames: dict[str, str],
             accounts: dict[str, str]) -> dict[str, Any]:
    owner = row.pop("OwnerUsername", None) or row.pop("Owner.Username", None)
    if owner:
        try:
            row["OwnerId"] = usernames[str(owner).lower()]
        except KeyError:
            raise SeedError(f"{key}: unknown owner username {owner!r}") from None
    account = row.pop("AccountName", None)
    if account:
        account_id = accounts.get(str(account).lower())
        if account_id is None:
            account_id = _insert(org, "Account", {"Name": account, "OwnerId": row.get("OwnerId")})
            accounts[str(account).lower()] = account_id
        row["AccountId"] = account_id
    who_email = row.pop("WhoEmail", None)
    if who_email:
        for object_name in ("Contact", "Lead"):
            match = org.query_records(object_name, lambda r, e=str(who_email).lower(): (r.get("Email") or "").lower() == e)
            if match:
                row["WhoId"] = match[0]["Id"]
                break
        else:
            raise SeedError(f"{key}: no Contact or Lead with email {who_email!r}")
    return {k: v for k, v in row.items() if v is not None and v != ""}


def _insert(org: Org, object_name: str, row: dict[str, Any]) -> str:
    fixed_id = row.pop("Id", None)
    try:
        return org.insert(object_name, row, allow_audit=True, fixed_id=str(fixed_id) if fixed_id else None)
    except (RecordError, RequestError, ValueError) as error:
        raise SeedError(f"cannot seed {object_name} {row}: {error}") from None
