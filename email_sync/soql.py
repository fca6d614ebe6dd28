"""SOQL text for the record lookups, built so that no input can change a query's meaning.

Values are only ever placed inside single-quoted literals escaped per Salesforce's
"Quoted String Escape Sequences"; field and object names are checked against the API
name pattern. IN lists are split into batches so that every statement stays within the
limits of :class:`SoqlLimits` (docs/RULES.md, "SOQL batching").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote_plus

from email_sync.settings import is_salesforce_user_id

_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# Salesforce documents \n \r \t \b \f \" \' \\ and \uXXXX. \b is described as "bell" but
# is backspace in most languages, so both of those, and every other control character,
# line/paragraph separator and lone surrogate, are written as \uXXXX: unambiguous, and
# the statement stays one printable line that always encodes to UTF-8.
_ESCAPE_TABLE: dict[int, str] = {
    ord("\\"): "\\\\",
    ord("'"): "\\'",
    ord('"'): '\\"',
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord("\f"): "\\f",
}
for _code in (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000)):
    _ESCAPE_TABLE.setdefault(_code, f"\\u{_code:04x}")


@dataclass(frozen=True, slots=True)
class SoqlLimits:
    """Size limits every generated statement respects.

    - ``max_statement_chars``: Salesforce's maximum SOQL statement length (100,000).
    - ``max_string_chars``: Salesforce's maximum length of each string in a WHERE clause
      (4,000); we count the quoted, escaped literal.
    - ``max_where_chars``: our own, stricter rule: the whole WHERE clause stays within
      4,000 characters, so a batch never comes near any documented limit.
    - ``max_encoded_chars``: the statement URL-encoded as REST ``GET /query?q=`` sends
      it. Salesforce caps URI plus headers at 16,384 bytes; 12,000 leaves room for the
      host, path and headers even when addresses are non-ASCII (up to 12 characters
      each once encoded).
    """

    max_statement_chars: int = 100_000
    max_string_chars: int = 4_000
    max_where_chars: int = 4_000
    max_encoded_chars: int = 12_000


DEFAULT_LIMITS = SoqlLimits()


@dataclass(frozen=True, slots=True)
class SoqlQuery:
    """One statement and exactly the values its IN lists hold."""

    statement: str
    values: tuple[str, ...]


def quote(value: str) -> str:
    """``value`` as a SOQL string literal, quotes included."""
    return "'" + value.translate(_ESCAPE_TABLE) + "'"


def api_name(name: str) -> str:
    """Check an object or field API name (``Secondary_Email__c``); raises ValueError."""
    if not _API_NAME.match(name):
        raise ValueError(f"not a Salesforce API name: {name!r}")
    return name


def build_match_queries(
    sobject: str,
    email_fields: Sequence[str],
    addresses: Iterable[str],
    *,
    owner_id: str | None = None,
    limits: SoqlLimits = DEFAULT_LIMITS,
) -> list[SoqlQuery]:
    """Queries that find every ``sobject`` record whose email fields hold one of ``addresses``.

    Shape: ``SELECT Id, CreatedDate, <fields> FROM <sobject> WHERE (F1 IN (...) OR F2 IN
    (...)) [AND OwnerId = '...'] [AND IsConverted = false]`` (the last for Lead only).
    Addresses are de-duplicated and sorted, so the same input gives the same queries;
    each lands in exactly one query. No addresses, no query.
    """
    fields = tuple(dict.fromkeys(api_name(f) for f in email_fields))
    if not fields:
        raise ValueError("at least one email field is needed")
    values = sorted(set(addresses))
    if not values:
        return []
    filters = ""
    if owner_id is not None:
        filters += f" AND OwnerId = {quote(owner_id)}"
    if api_name(sobject) == "Lead":
        filters += " AND IsConverted = false"
    head = f"SELECT {', '.join(dict.fromkeys(('Id', 'CreatedDate', *fields)))} FROM {sobject} WHERE "

    def statement(literals: Sequence[str]) -> tuple[str, str]:
        in_list = ", ".join(literals)
        where = "(" + " OR ".join(f"{f} IN ({in_list})" for f in fields) + ")" + filters
        return head + where, where

    # Every size is the empty skeleton plus, per value, its literal once per field and a
    # ", " separator per field for every value after the first: additive, so a batch can
    # grow one value at a time without rebuilding the text.
    empty_statement, empty_where = statement([])
    k = len(fields)
    separator_encoded = _encoded_len(", ")
    queries: list[SoqlQuery] = []
    batch: list[str] = []
    literals: list[str] = []
    where_len = len(empty_where)
    statement_len = len(empty_statement)
    encoded_len = _encoded_len(empty_statement)

    for value in values:
        literal = quote(value)
        if len(literal) > limits.max_string_chars:
            raise ValueError(f"a {len(literal)}-character literal exceeds the SOQL string limit")
        sep = 2 if batch else 0
        add = k * (len(literal) + sep)
        add_encoded = k * (_encoded_len(literal) + (separator_encoded if batch else 0))
        if batch and not _fits(where_len + add, statement_len + add, encoded_len + add_encoded, limits):
            queries.append(SoqlQuery(statement(literals)[0], tuple(batch)))
            batch, literals = [], []
            where_len, statement_len = len(empty_where), len(empty_statement)
            encoded_len = _encoded_len(empty_statement)
            add = k * len(literal)
            add_encoded = k * _encoded_len(literal)
        if not _fits(where_len + add, statement_len + add, encoded_len + add_encoded, limits):
            raise ValueError("one address alone does not fit the SOQL limits")
        batch.append(value)
        literals.append(literal)
        where_len += add
        statement_len += add
        encoded_len += add_encoded
    queries.append(SoqlQuery(statement(literals)[0], tuple(batch)))
    return queries


def owner_lookup_query(salesforce_user: str) -> str:
    """The User lookup that resolves a job's ``salesforce_user`` (Id or username) to an Id.

    Selecting IsActive lets the caller refuse an inactive owner before writing Tasks.
    """
    field = "Id" if is_salesforce_user_id(salesforce_user) else "Username"
    return f"SELECT Id, IsActive FROM User WHERE {field} = {quote(salesforce_user)} LIMIT 1"


def _fits(where_len: int, statement_len: int, encoded_len: int, limits: SoqlLimits) -> bool:
    return (
        where_len <= limits.max_where_chars
        and statement_len <= limits.max_statement_chars
        and encoded_len <= limits.max_encoded_chars
    )


def _encoded_len(text: str) -> int:
    """Length once form-encoded the way ``requests`` encodes a ``?q=`` parameter."""
    return len(quote_plus(text, safe=""))
