"""SOQL text for the record lookups, built so that no input can change a query's meaning.

Values are only ever placed inside single-quoted literals escaped per Salesforce's
"Quoted String Escape Sequences"; field and object names are checked against the API
name pattern. IN lists are split into batches so that every statement stays within the
limits of :class:`SoqlLimits` (docs/RULES.md, "SOQL batching").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from email_sync.rules.settings import is_salesforce_user_id

_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")  # a 15- or 18-character record Id

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
    """Size limits every generated statement respects (Salesforce's *SOQL and SOSL Limits*).

    - ``max_statement_chars``: the maximum SOQL statement length (100,000 characters).
    - ``max_string_chars``: the maximum length of each string in a WHERE clause (4,000);
      we count the quoted, escaped literal.

    Batched statements travel in the JSON body of a Composite request
    (``SalesforceCrm.query_each``), not in a ``GET /query?q=`` URL, so the REST limit of
    16,384 bytes for URI plus headers does not bound them (Salesforce's own advice for long
    queries).
    """

    max_statement_chars: int = 100_000
    max_string_chars: int = 4_000


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

    def statement(literals: Sequence[str]) -> str:
        in_list = ", ".join(literals)
        return head + "(" + " OR ".join(f"{f} IN ({in_list})" for f in fields) + ")" + filters

    literals = [quote(value) for value in values]
    return [SoqlQuery(statement(literals[run]), tuple(values[run]))
            for run in _runs(literals, len(statement([])), len(fields), limits)]


def build_id_queries(select: str, field: str, ids: Iterable[str], *, prefix: str = "", suffix: str = "",
                     limits: SoqlLimits = DEFAULT_LIMITS, valid: re.Pattern[str] | None = None) -> list[str]:
    """``{select} WHERE {prefix}{field} IN (...){suffix}`` statements for a set of record Ids.

    Ids are checked against ``valid`` (Salesforce Ids unless told otherwise, e.g. our external
    keys) and never spliced in unchecked, de-duplicated and sorted; every Id lands in exactly
    one statement within ``limits``. No Ids, no statement.
    """
    values = sorted(set(ids))
    for value in values:
        if not (valid or ID_RE).match(value):
            raise ValueError("not a Salesforce Id" if valid is None else "not a valid key")
    api_name(field)

    def statement(literals: Sequence[str]) -> str:
        return f"{select} WHERE {prefix}{field} IN ({', '.join(literals)}){suffix}"

    literals = [quote(value) for value in values]
    return [statement(literals[run]) for run in _runs(literals, len(statement([])), 1, limits)]


def owner_lookup_query(salesforce_user: str) -> str:
    """The User lookup that resolves a job's ``salesforce_user`` (Id or username) to an Id.

    Selecting IsActive lets the caller refuse an inactive owner before writing Tasks.
    """
    field = "Id" if is_salesforce_user_id(salesforce_user) else "Username"
    return f"SELECT Id, IsActive FROM User WHERE {field} = {quote(salesforce_user)} LIMIT 1"


def _runs(literals: Sequence[str], empty_chars: int, copies: int, limits: SoqlLimits) -> Iterator[slice]:
    """Greedy consecutive runs of ``literals`` whose statements fit ``limits``.

    A statement is its empty skeleton (``empty_chars``) plus, per value, its literal once per
    IN list (``copies``) and a ", " separator per list for every value after the first: sizes
    are additive, so packing is exact and linear.
    """
    start, size = 0, empty_chars
    for index, literal in enumerate(literals):
        if len(literal) > limits.max_string_chars:
            raise ValueError(f"a {len(literal)}-character literal exceeds the SOQL string limit")
        add = copies * (len(literal) + (2 if index > start else 0))
        if index > start and size + add > limits.max_statement_chars:
            yield slice(start, index)
            start, size, add = index, empty_chars, copies * len(literal)
        if size + add > limits.max_statement_chars:
            raise ValueError("one value alone does not fit the SOQL statement limit")
        size += add
    if literals:
        yield slice(start, len(literals))
