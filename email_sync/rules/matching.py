"""Which Salesforce records an email is recorded to: a pure function of addresses and records.

Tie-breaks (docs/RULES.md, "Matching"):

1. Contacts beat Leads: a Lead is used only when no participant matches any Contact.
2. Participants are considered in header order (inbound: sender; outbound: To, Cc, Bcc);
   records of one address are ordered oldest first (CreatedDate, then Id).
3. Shared activities on: every matching Contact, in that order, at most
   ``max_shared_relations``; the first is the WhoId. Off: only that first one.
4. Leads: the first participant that matches a Lead, its oldest Lead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from email_sync.rules.addresses import normalize_address
from email_sync.rules.classify import Decision, SkipReason
from email_sync.rules.settings import JobSettings, MatchObject, OrgSettings

_NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class MatchRecord:
    """One Contact or Lead as returned by a lookup query: id, age and its email values."""

    sobject: str  # "Contact" | "Lead"
    id: str
    created_date: datetime | None
    emails: tuple[str, ...]  # normalised values of the queried email fields

    @property
    def age_key(self) -> tuple[datetime, str]:
        """Oldest first; records without a CreatedDate sort last; Id breaks ties."""
        return (self.created_date or _NEVER, self.id)


@dataclass(frozen=True, slots=True)
class Match:
    """Where one email is recorded.

    ``related_contact_ids`` is every Contact the Task relates to, WhoId first; empty
    unless shared activities are on and the WhoId is a Contact. The Task's WhoId already
    creates the first relation, so only ``related_contact_ids[1:]`` need TaskRelations.
    """

    who_id: str
    sobject: str
    related_contact_ids: tuple[str, ...] = ()
    matched_addresses: tuple[str, ...] = ()


def email_fields_for(sobject: str, settings: JobSettings, org: OrgSettings) -> tuple[str, ...]:
    """The fields an object is matched on: the org's list, or only Email when alternates are off."""
    if not settings.alternate_email_fields:
        return ("Email",)
    return tuple(org.email_fields.get(sobject, ("Email",)))


def objects_to_match(settings: JobSettings) -> tuple[str, ...]:
    """Salesforce objects to look up for this job, Contacts first."""
    return tuple(m.sobject for m in MatchObject if m in settings.match_objects)


def records_from_rows(
    sobject: str, rows: Iterable[Mapping[str, object]], email_fields: Sequence[str]
) -> list[MatchRecord]:
    """Turn SOQL result rows (``{"Id": …, "CreatedDate": …, "Email": …}``) into records."""
    records = []
    for row in rows:
        emails = tuple(
            dict.fromkeys(
                a for a in (normalize_address(_text(row.get(f))) for f in email_fields) if a
            )
        )
        records.append(MatchRecord(sobject, str(row["Id"]), _parse_datetime(row.get("CreatedDate")), emails))
    return records


class RecordIndex:
    """Records by normalised address, each list oldest first, built once per run."""

    def __init__(self, records: Iterable[MatchRecord]) -> None:
        by_address: dict[tuple[str, str], dict[str, MatchRecord]] = defaultdict(dict)
        for record in records:
            for address in record.emails:
                by_address[(record.sobject, address)][record.id] = record
        self._by_address = {
            key: tuple(sorted(found.values(), key=lambda r: r.age_key)) for key, found in by_address.items()
        }

    def lookup(self, sobject: str, address: str) -> tuple[MatchRecord, ...]:
        return self._by_address.get((sobject, address), ())


def match_participants(
    participants: Sequence[str],
    index: RecordIndex,
    *,
    shared_activities: bool,
    max_relations: int,
) -> Match | None:
    """The records one email is recorded to, by the tie-breaks above; None when nothing matches."""
    contacts: dict[str, MatchRecord] = {}
    contact_addresses: list[str] = []
    for address in participants:
        found = index.lookup("Contact", address)
        if found:
            contact_addresses.append(address)
        for record in found:
            contacts.setdefault(record.id, record)
    if contacts:
        ordered = list(contacts)
        if not shared_activities:
            return Match(ordered[0], "Contact", (), (contact_addresses[0],))
        related = tuple(ordered[:max_relations])
        return Match(related[0], "Contact", related, tuple(contact_addresses))
    for address in participants:
        leads = index.lookup("Lead", address)
        if leads:
            return Match(leads[0].id, "Lead", (), (address,))
    return None


def lookup_addresses(decisions: Iterable[Decision]) -> list[str]:
    """Every participant of the still-recordable decisions, unique and sorted: the SOQL input."""
    return sorted({a for d in decisions if d.record for a in d.participants})


def match_decision(
    decision: Decision, index: RecordIndex, settings: JobSettings, org: OrgSettings
) -> Match | None:
    """:func:`match_participants` with the job's and org's settings; None for skipped emails."""
    if not decision.record:
        return None
    return match_participants(
        decision.participants,
        index,
        shared_activities=settings.shared_activities,
        max_relations=org.max_shared_relations,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _parse_datetime(value: object) -> datetime | None:
    """Salesforce ``2024-01-31T09:00:00.000+0000`` (or ISO) to an aware datetime; None if absent."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def finalize(decision: Decision, match: Match | None) -> Decision:
    """Apply the matching outcome: a candidate with no matching record is ``not_matched``."""
    if decision.reason is not None or match is not None:
        return decision
    return replace(decision, reason=SkipReason.NOT_MATCHED)
