"""SOQL building (email_sync.rules.soql): escaping that no input escapes from, and batching."""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_sync.rules.soql import (
    DEFAULT_LIMITS,
    SoqlLimits,
    api_name,
    build_id_queries,
    build_match_queries,
    owner_lookup_query,
    quote,
)

_SIMPLE_ESCAPES = {"n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t",
                   "b": "\b", "B": "\b", "f": "\f", "F": "\f", "'": "'", '"': '"', "\\": "\\"}  # fmt: skip


def tokenize(statement: str) -> tuple[str, list[str]]:
    """Split SOQL into a skeleton (each string literal replaced by ``?``) and the literal values.

    Implements Salesforce's quoted-string escapes; anything else after a backslash, a
    backslash or double quote outside a literal, or an unterminated literal fails.
    """
    skeleton: list[str] = []
    literals: list[str] = []
    i = 0
    while i < len(statement):
        ch = statement[i]
        if ch != "'":
            assert ch not in '\\"', f"stray {ch!r} outside a literal at {i}"
            skeleton.append(ch)
            i += 1
            continue
        i += 1
        value: list[str] = []
        while True:
            assert i < len(statement), "unterminated literal"
            ch = statement[i]
            if ch == "'":
                i += 1
                break
            if ch == "\\":
                nxt = statement[i + 1]
                if nxt == "u":
                    value.append(chr(int(statement[i + 2 : i + 6], 16)))
                    i += 6
                else:
                    assert nxt in _SIMPLE_ESCAPES, f"invalid escape \\{nxt}"
                    value.append(_SIMPLE_ESCAPES[nxt])
                    i += 2
                continue
            value.append(ch)
            i += 1
        literals.append("".join(value))
        skeleton.append("?")
    return "".join(skeleton), literals


def expected_skeleton(sobject: str, fields: list[str], n: int, owner: bool) -> str:
    in_list = ", ".join(["?"] * n)
    where = "(" + " OR ".join(f"{f} IN ({in_list})" for f in fields) + ")"
    if owner:
        where += " AND OwnerId = ?"
    if sobject == "Lead":
        where += " AND IsConverted = false"
    return f"SELECT Id, CreatedDate, {', '.join(fields)} FROM {sobject} WHERE {where}"


def check_queries(queries, addresses, sobject, fields, owner_id, limits) -> None:  # noqa: ANN001
    seen: list[str] = []
    for query in queries:
        skeleton, literals = tokenize(query.statement)
        assert skeleton == expected_skeleton(sobject, fields, len(query.values), owner_id is not None)
        n = len(query.values)
        for k in range(len(fields)):  # every field's IN list holds exactly this batch
            assert literals[k * n : (k + 1) * n] == list(query.values)
        if owner_id is not None:
            assert literals[-1] == owner_id
        assert len(query.statement) <= limits.max_statement_chars
        assert all(len(quote(v)) <= limits.max_string_chars for v in query.values)
        seen.extend(query.values)
    assert sorted(seen) == sorted(set(addresses)), "every address in exactly one batch"


# Arbitrary unicode mixed with the pieces an injection would use.
evil_text = st.lists(
    st.one_of(
        st.characters(),
        st.sampled_from(["'", '"', "\\", "\n", "\r", "\\'", "\\\\'", "') OR (Id != '", "\u2028", "\x00", "%", "_"]),
    ),
    max_size=30,
).map("".join)


@given(st.lists(evil_text, min_size=1, max_size=40), st.sampled_from(["Contact", "Lead"]),
       st.booleans(), st.one_of(st.none(), evil_text))  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_no_value_breaks_out_of_its_literal(values: list[str], sobject: str, two_fields: bool, owner: str | None) -> None:
    fields = ["Email", "Secondary_Email__c"] if two_fields else ["Email"]
    queries = build_match_queries(sobject, fields, values, owner_id=owner)
    check_queries(queries, values, sobject, fields, owner, DEFAULT_LIMITS)


@given(st.text(max_size=200))
def test_quote_roundtrips(value: str) -> None:
    skeleton, literals = tokenize(quote(value))
    assert (skeleton, literals) == ("?", [value])


address = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FFF), min_size=1, max_size=64),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40),
)


@given(
    st.lists(address, min_size=0, max_size=250),
    st.sampled_from([DEFAULT_LIMITS, SoqlLimits(max_statement_chars=800), SoqlLimits(max_statement_chars=2000)]),
    st.booleans(),
)  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_batches_partition_the_input_within_limits(addresses: list[str], limits: SoqlLimits, owner: bool) -> None:
    fields = ["Email", "Secondary_Email__c", "Work_Email__c"]
    owner_id = "005000000000001AAA" if owner else None
    queries = build_match_queries("Contact", fields, addresses, owner_id=owner_id, limits=limits)
    if not addresses:
        assert queries == []
    check_queries(queries, addresses, "Contact", fields, owner_id, limits)


def test_statement_limit_with_many_addresses() -> None:
    addresses = [f"person.number{i:05d}@some-company-{i % 97}.example" for i in range(6000)]
    queries = build_match_queries("Lead", ["Email"], addresses)
    assert len(queries) == 3  # 6,000 addresses of ~45 characters: 275,000 characters of IN list
    assert all(len(q.statement) > 99_000 for q in queries[:-1]), "batches are filled, not tiny"
    check_queries(queries, addresses, "Lead", ["Email"], None, DEFAULT_LIMITS)


def test_every_email_field_repeats_the_batch() -> None:
    addresses = [f"user{i}@client{i}.example" for i in range(3000)]
    two = build_match_queries("Contact", ["Email", "Secondary_Email__c"], addresses)
    one = build_match_queries("Contact", ["Email"], addresses)
    assert (len(one), len(two)) == (1, 2)  # each field repeats the whole IN list: twice the text
    check_queries(two, addresses, "Contact", ["Email", "Secondary_Email__c"], None, DEFAULT_LIMITS)


def test_id_queries_partition_checked_ids() -> None:
    ids = [f"00T{i:012d}AAA" for i in range(6000)]
    statements = build_id_queries("SELECT Id FROM TaskRelation", "TaskId", [*ids, ids[0]], prefix="IsWhat = false AND ")
    assert len(statements) == 2 and all(len(s) <= DEFAULT_LIMITS.max_statement_chars for s in statements)
    listed = [v for s in statements for v in s.split(" IN (", 1)[1].rstrip(")").split(", ")]
    assert listed == [f"'{i}'" for i in ids], "every Id once, sorted"
    assert statements[0].startswith("SELECT Id FROM TaskRelation WHERE IsWhat = false AND TaskId IN ('00T")
    assert build_id_queries("SELECT Id FROM Task", "Id", []) == []
    with pytest.raises(ValueError):
        build_id_queries("SELECT Id FROM Task", "Id", ["00T' OR Id != '"])


def test_query_shape() -> None:
    [query] = build_match_queries("Lead", ["Email"], ["b@x.example", "a@x.example", "a@x.example"],
                                  owner_id="005000000000001AAA")  # fmt: skip
    assert query.statement == (
        "SELECT Id, CreatedDate, Email FROM Lead WHERE (Email IN ('a@x.example', 'b@x.example'))"
        " AND OwnerId = '005000000000001AAA' AND IsConverted = false"
    )
    assert query.values == ("a@x.example", "b@x.example")


def test_no_addresses_no_query() -> None:
    assert build_match_queries("Contact", ["Email"], []) == []


@pytest.mark.parametrize(
    ("raw", "literal"),
    [("o'brien@x", r"'o\'brien@x'"), ('a"b', r"'a\"b'"), ("a\\b", r"'a\\b'"), ("a\nb", r"'a\nb'"),
     ("a\x00b", r"'a\u0000b'"), ("a\bb", r"'a\u0008b'"), ("a\u2028b", r"'a\u2028b'"), ("50%_off", "'50%_off'")],
)  # fmt: skip
def test_quote_examples(raw: str, literal: str) -> None:
    assert quote(raw) == literal


@pytest.mark.parametrize("bad", ["Email) OR (Id", "Email__c;", "1Email", "", "Email Name"])
def test_field_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        api_name(bad)
    with pytest.raises(ValueError):
        build_match_queries("Contact", [bad], ["a@b.c"])


def test_oversized_value_is_refused() -> None:
    with pytest.raises(ValueError):
        build_match_queries("Contact", ["Email"], ["x" * 5000])


def test_owner_lookup() -> None:
    assert owner_lookup_query("005000000000001AAA") == (
        "SELECT Id, IsActive FROM User WHERE Id = '005000000000001AAA' LIMIT 1"
    )
    assert owner_lookup_query("o'neil@example.com") == (
        r"SELECT Id, IsActive FROM User WHERE Username = 'o\'neil@example.com' LIMIT 1"
    )
