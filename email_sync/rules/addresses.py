"""Parsing of the address-like tokens on an email: mailbox addresses, domains, Message-IDs.

Matching, exclusion and designation all compare addresses, so they must all see the same
canonical form. The normalisation is deliberately conservative (see docs/RULES.md):
case-folding and unwrapping only, never dot or ``+tag`` stripping, because those rules are
provider-specific and a wrong guess would attach mail to the wrong person.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# RFC 5321: a forward-path holds at most 256 octets including the angle brackets.
MAX_ADDRESS_LENGTH = 254

_WHITESPACE = re.compile(r"\s")
_ANGLE = re.compile(r"<([^<>]*)>")
_MSG_ID = re.compile(r"<([^<>\s]+)>")
# RFC 5322 §3.2.4 quoted-string as a whole local part: qtext, quoted-pairs and spaces/tabs.
_QUOTED_LOCAL = re.compile(r'"(?:[^"\\\r\n]|\\[^\r\n])*"')


def normalize_address(raw: str | None) -> str | None:
    """The canonical form of one address, or None when it is not a usable address.

    Accepts what mail headers and people write: surrounding whitespace, a ``mailto:``
    prefix, display-name forms (``"Record" <record@example.com>``) and bare angle
    brackets; those are all that is removed. The result is lower-case (Salesforce and
    Exchange compare addresses case-insensitively) with any trailing dot of the domain
    removed. The local part is otherwise kept exactly: an apostrophe is an ordinary
    character (``o'brien@x.com``, ``'em@x.com``), and a quoted local part
    (``"john doe"@x.com``) keeps its quotes, so it never equals ``johndoe@x.com``. A
    quote anywhere else (an unbalanced one, one in the domain) makes it unusable.
    """
    if not raw:
        return None
    text = raw.strip()
    bracketed = _ANGLE.findall(text)
    if bracketed:
        text = bracketed[-1].strip()
    if text[:7].lower() == "mailto:":
        text = text[7:].strip()
    text = text.lower()
    quoted = _QUOTED_LOCAL.match(text) if text.startswith('"') else None
    if quoted:  # white space and "@" are legal inside the quotes
        local, at, domain = quoted.group(), text[quoted.end() : quoted.end() + 1], text[quoted.end() + 1 :]
        if local == '""':
            return None
    else:
        local, at, domain = text.rpartition("@")
        if '"' in local or _WHITESPACE.search(local):
            return None
    domain = domain.rstrip(".")
    if at != "@" or not local or not domain or '"' in domain or "@" in domain or _WHITESPACE.search(domain):
        return None
    address = f"{local}@{domain}"
    if len(address) > MAX_ADDRESS_LENGTH or "<" in address or ">" in address:
        return None
    return address


def domain_of(address: str) -> str:
    """The domain part of a normalised address."""
    return address.rpartition("@")[2]


def normalize_domain(raw: str | None) -> str | None:
    """A domain as written in config (``example.com``, ``@example.com``), lower-case; None if unusable."""
    if not raw:
        return None
    text = raw.strip().lower().lstrip("@").strip(".")
    if not text or "@" in text or _WHITESPACE.search(text) or ".." in text:
        return None
    return text


class DomainSet:
    """A set of domains where a listed domain also covers its subdomains.

    ``sales.example.com`` is inside ``example.com``: an org's own subdomains are internal,
    and excluding ``gmail.com`` should not be defeated by ``x.gmail.com``. Lookup walks
    the labels of the domain, so it costs O(labels), not O(listed domains).
    """

    __slots__ = ("_domains",)

    def __init__(self, domains: Iterable[str]) -> None:
        self._domains = frozenset(d for d in (normalize_domain(x) for x in domains) if d)

    def __contains__(self, domain: object) -> bool:
        if not isinstance(domain, str) or not self._domains:
            return False
        labels = domain.lower().strip(".").split(".")
        return any(".".join(labels[i:]) in self._domains for i in range(len(labels)))

    def contains_address(self, address: str) -> bool:
        """Whether a normalised address's domain is (under) a listed domain."""
        return domain_of(address) in self

    def __bool__(self) -> bool:
        return bool(self._domains)

    def __repr__(self) -> str:
        return f"DomainSet({sorted(self._domains)!r})"


def normalize_message_id(raw: str | None) -> str | None:
    """An RFC 5322 msg-id without angle brackets and surrounding space; None if empty.

    Case is kept here; :func:`email_sync.rules.keys.message_key` folds it for comparison.
    """
    if not raw:
        return None
    text = raw.strip()
    found = _MSG_ID.search(text)
    if found:
        text = found.group(1)
    text = text.strip("<> \t\r\n")
    return text or None


def message_ids_in(header_values: Iterable[str | None]) -> list[str]:
    """Every msg-id in In-Reply-To/References values, in order, normalised.

    A References value may hold several ``<id>`` tokens separated by white space; a
    value without brackets is split on white space.
    """
    found: list[str] = []
    for value in header_values:
        if not value:
            continue
        tokens = _MSG_ID.findall(value) or value.split()
        found.extend(t for t in (normalize_message_id(x) for x in tokens) if t)
    return found
