"""Address, domain and Message-ID normalisation (email_sync.rules.addresses)."""

from __future__ import annotations

import pytest

from email_sync.rules.addresses import (
    DomainSet,
    message_ids_in,
    normalize_address,
    normalize_domain,
    normalize_message_id,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("bob@example.com", "bob@example.com"),
        ("  Bob@Example.COM \n", "bob@example.com"),
        ("<bob@example.com>", "bob@example.com"),
        ('"Record" <record@example.com>', "record@example.com"),
        ('"Smith, Bob <work>" <bob@example.com>', "bob@example.com"),
        ("mailto:bob@example.com", "bob@example.com"),
        ("MAILTO:Bob@example.com", "bob@example.com"),
        ("<mailto:bob@example.com>", "bob@example.com"),
        # issue 14.7: quotes are characters of the address, never stripped (this row used to
        # expect "bob@example.com", the defect); an apostrophe is legal atext (RFC 5322 §3.2.3)
        ("'bob@example.com'", "'bob@example.com'"),
        ("'em@initech.com", "'em@initech.com"),
        ("O'Brien@X.com", "o'brien@x.com"),
        ("Em <'em@initech.com>", "'em@initech.com"),
        ("mailto:'em@initech.com", "'em@initech.com"),
        # a quoted local part keeps its quotes (and may hold spaces and "@")
        ('"john doe"@x.com', '"john doe"@x.com'),
        ('"John Doe"@X.com.', '"john doe"@x.com'),
        ('"johndoe"@x.com', '"johndoe"@x.com'),
        ('"a@b"@x.com', '"a@b"@x.com'),
        ('"a\\"b"@x.com', '"a\\"b"@x.com'),
        ('Doe <"john doe"@x.com>', '"john doe"@x.com'),
        # a quote outside a whole quoted local part is no address
        ('"em@initech.com', None),
        ('em@initech.com"', None),
        ('"bob@example.com"', None),
        ('a"b@x.com', None),
        ('""@x.com', None),
        ('"john doe" @x.com', None),
        ("bob@example.com.", "bob@example.com"),
        # conservative: no dot or plus-tag stripping
        ("first.last+tag@gmail.com", "first.last+tag@gmail.com"),
        ("jürgen@bücher.example", "jürgen@bücher.example"),
        ("", None),
        (None, None),
        ("not an address", None),
        ("bob@", None),
        ("@example.com", None),
        ("bob smith@example.com", None),
        ("a" * 250 + "@example.com", None),
    ],
)
def test_normalize_address(raw: str | None, expected: str | None) -> None:
    assert normalize_address(raw) == expected


def test_quote_characters_keep_addresses_apart() -> None:
    """Defect (issue 14.7): a leading quote was stripped, so 'em@initech.com matched em@initech.com."""
    assert normalize_address("'em@initech.com") != normalize_address("em@initech.com")
    assert normalize_address('"john doe"@x.com') != normalize_address("johndoe@x.com")
    assert normalize_address('"johndoe"@x.com') != normalize_address("johndoe@x.com")
    assert normalize_address("o'brien@x.com") == "o'brien@x.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Example.COM", "example.com"), ("@example.com", "example.com"), (".example.com.", "example.com"),
     ("", None), ("a@b.com", None), ("two words.com", None), ("a..b", None)],
)  # fmt: skip
def test_normalize_domain(raw: str, expected: str | None) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize(
    ("domain", "inside"),
    [("example.com", True), ("sales.example.com", True), ("a.b.example.com", True),
     ("EXAMPLE.com", True), ("badexample.com", False), ("example.com.evil", False), ("com", False)],
)  # fmt: skip
def test_domain_set_covers_subdomains_only(domain: str, inside: bool) -> None:
    assert (domain in DomainSet(["example.com"])) is inside
    assert DomainSet(["example.com"]).contains_address(f"x@{domain.lower()}") is inside


def test_empty_domain_set() -> None:
    assert not DomainSet([])
    assert "example.com" not in DomainSet([])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("<abc@host>", "abc@host"), ("  abc@host ", "abc@host"), ("<AbC@host>", "AbC@host"), ("", None), ("<>", None)],
)
def test_normalize_message_id_keeps_case(raw: str, expected: str | None) -> None:
    assert normalize_message_id(raw) == expected


def test_message_ids_in_headers() -> None:
    assert message_ids_in(["<a@x>", None, "<b@x> <c@x>\r\n <d@x>", "e@x f@x"]) == [
        "a@x", "b@x", "c@x", "d@x", "e@x", "f@x",
    ]  # fmt: skip
