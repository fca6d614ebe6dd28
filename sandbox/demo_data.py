"""A realistic, deterministic demo org and three mailboxes that exercise every sync rule.

Used by the quick start (``scripts/demo.py``) and the end-to-end tests. Times are relative
to ``now`` so the mail always falls inside the jobs' first sync window (now − 1 day).
Each email's subject starts with a tag saying which rule it exercises, so the demo summary
and the tests can tell what should have happened without reading bodies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ORG_DOMAIN = "example.com"
SERVICE_ACCOUNT = ("svc-sync@example.com", "sandbox-password")
SESSION_ID = "00Dsandbox!demo-session"
# mailbox → (Salesforce username, fixed User Id or None). Matches include/email_sync/jobs/*.yaml:
# alice and bob name their Salesforce user by username, carol by Id.
USERS = {
    "alice@example.com": ("alice@example.com", None),
    "bob@example.com": ("bob@example.com", None),
    "carol@example.com": ("carol@example.com", "005000000000001AAA"),
}
INTEGRATION_USER = "svc-sync@example.com"  # the API user the session id belongs to
# The smart addresses and categories of include/email_sync/policy.yaml.
RECORD_ADDRESS = "record@example.com"
DO_NOT_RECORD_ADDRESS = "donotrecord@example.com"
RECORD_ATTACHMENTS_ADDRESS = "attachments@example.com"
RECORD_ATTACHMENTS_CATEGORY = "RecordAttachments"
COMPANIES = ["acme.com", "globex.com", "initech.com", "umbrella.org", "hooli.io", "stark.co.uk"]
FIRST = ["Ana", "Ben", "Chloé", "Dmitri", "Eve", "Farah", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lena"]
LAST = ["Ng", "O'Brien", "Silva", "Müller", "Kowalski", "Rossi", "Haddad", "Tanaka", "Dubois", "Okafor"]
MB = 1024 * 1024


@dataclass
class Demo:
    ews: dict[str, Any]
    salesforce: dict[str, Any]
    expectations: dict[str, dict[str, int]] = field(default_factory=dict)  # mailbox → tag → count


def _person(rng: random.Random, index: int) -> tuple[str, str, str]:
    first, last = FIRST[index % len(FIRST)], LAST[(index // len(FIRST)) % len(LAST)]
    domain = COMPANIES[index % len(COMPANIES)]
    local = f"{first}.{last}{index}".lower().replace("'", "").replace("é", "e").replace("ü", "u")
    return first, last, f"{local}@{domain}"


def build_demo(now: datetime | None = None, emails_per_mailbox: int = 120, seed: int = 7) -> Demo:
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    rng = random.Random(seed)
    users: list[dict[str, Any]] = [
        {"Username": INTEGRATION_USER, "Email": INTEGRATION_USER, "FirstName": "Sync", "LastName": "Integration",
         "TimeZoneSidKey": "UTC"}
    ]
    for (mailbox, (username, user_id)), tz in zip(USERS.items(), ["Europe/Berlin", "America/New_York",
                                                                  "Europe/London"]):
        user = {"Username": username, "Email": mailbox, "FirstName": mailbox.split("@")[0].title(),
                "LastName": "Demo", "TimeZoneSidKey": tz}
        if user_id:
            user["Id"] = user_id
        users.append(user)
    owners = [username for username, _ in USERS.values()]
    contacts, leads = [], []
    for i in range(60):
        first, last, email = _person(rng, i)
        contact: dict[str, Any] = {"FirstName": first, "LastName": last, "Email": email,
                                   "OwnerUsername": owners[i % 3]}
        if i % 5 == 0:  # reachable through the alternate email field only
            contact["Secondary_Email__c"] = email.replace("@", ".alt@")
        contacts.append(contact)
    for i in range(60, 90):
        first, last, email = _person(rng, i)
        leads.append({"FirstName": first, "LastName": last, "Email": email, "Company": email.split("@")[1],
                      "IsConverted": i % 10 == 0, "OwnerUsername": owners[i % 3]})
    salesforce = {
        "org": {"shared_activities": True, "has_external_id_field": True, "daily_api_max": 15000,
                "session_id": SESSION_ID},
        "users": users,
        "contacts": contacts,
        "leads": leads,
    }

    mailboxes: dict[str, Any] = {}
    expectations: dict[str, dict[str, int]] = {}
    for mailbox in USERS:
        messages, tags = _mailbox_messages(rng, mailbox, contacts, leads, now, emails_per_mailbox)
        mailboxes[mailbox] = {"folders": messages}
        expectations[mailbox] = tags
    ews = {
        "accounts": [{"username": SERVICE_ACCOUNT[0], "password": SERVICE_ACCOUNT[1],
                      "smtp_address": SERVICE_ACCOUNT[0], "impersonation": True}]
        + [{"username": m, "password": "user-password", "smtp_address": m} for m in USERS],
        "mailboxes": mailboxes,
    }
    return Demo(ews=ews, salesforce=salesforce, expectations=expectations)


def _mailbox_messages(rng: random.Random, mailbox: str, contacts: list[dict[str, Any]], leads: list[dict[str, Any]],
                      now: datetime, count: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Inbox and Sent Items for one user; every rule appears at least once."""
    name = mailbox.split("@")[0]
    colleague = f"colleague.{name}@{ORG_DOMAIN}"
    inbox: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []
    tags: dict[str, int] = {}
    open_leads = [l for l in leads if not l["IsConverted"]]

    def at(minutes_ago: int) -> str:
        return (now - timedelta(minutes=minutes_ago)).isoformat()

    def add(folder: list[dict[str, Any]], tag: str, minutes_ago: int, **fields: Any) -> dict[str, Any]:
        index = sum(tags.values())
        tags[tag] = tags.get(tag, 0) + 1
        message = {
            "subject": f"[{tag}] {fields.pop('topic', 'Follow-up')} #{index}",
            "body": fields.pop("body", f"Hello,\n\nnotes for meeting {index}.\n\nRegards"),
            "body_type": fields.pop("body_type", "Text"),
            "sent": at(minutes_ago + 1), "received": at(minutes_ago),
            "message_id": f"<{name}.{index}.{tag}@demo.{ORG_DOMAIN}>",
            **fields,
        }
        folder.append(message)
        return message

    slot = iter(range(20, 60 * 22, 9))  # spread over the last 22 hours, oldest last
    base = [
        ("inbound_contact", 30), ("outbound_contact", 20), ("inbound_unknown", 10), ("internal_only", 8),
        ("do_not_sync_category", 4), ("do_not_record_bcc", 4), ("designated_category", 6),
        ("designated_smart_address", 6), ("reply", 5), ("attachment_small", 4), ("attachment_large", 3),
        ("inline_image", 2), ("long_subject", 2), ("long_body", 2), ("several_contacts", 6),
        ("alternate_email", 4), ("lead", 4), ("converted_lead", 2), ("private", 2), ("html_body", 4),
    ]
    scale = max(1, count // sum(n for _, n in base))
    for tag, n in base:
        for _ in range(n * scale if tag in ("inbound_contact", "outbound_contact") else n):
            contact = rng.choice(contacts)
            when = next(slot)
            me = {"email": mailbox, "name": name.title()}
            them = {"email": contact["Email"], "name": f"{contact['FirstName']} {contact['LastName']}"}
            if tag == "inbound_contact":
                add(inbox, tag, when, **{"from": them, "to": [me]})
            elif tag == "outbound_contact":
                add(sent, tag, when, **{"from": me, "to": [them]})
            elif tag == "inbound_unknown":
                add(inbox, tag, when, **{"from": {"email": f"stranger{when}@nowhere.net"}, "to": [me]})
            elif tag == "internal_only":
                add(inbox, tag, when, **{"from": {"email": colleague}, "to": [me]})
            elif tag == "do_not_sync_category":
                add(inbox, tag, when, **{"from": them, "to": [me], "categories": ["DoNotSync"]})
            elif tag == "do_not_record_bcc":
                add(sent, tag, when, **{"from": me, "to": [them], "bcc": [{"email": DO_NOT_RECORD_ADDRESS}]})
            elif tag == "designated_category":
                add(inbox, tag, when, **{"from": them, "to": [me], "categories": ["CRM"]})
            elif tag == "designated_smart_address":
                add(sent, tag, when, **{"from": me, "to": [them], "bcc": [{"email": RECORD_ADDRESS}]})
            elif tag == "reply":
                original = add(sent, "reply_original", when + 120, **{
                    "from": me, "to": [them], "bcc": [{"email": RECORD_ADDRESS}], "topic": "Proposal"})
                add(inbox, tag, when, **{"from": them, "to": [me], "topic": "RE: Proposal",
                                         "in_reply_to": original["message_id"],
                                         "references": original["message_id"]})
            elif tag == "attachment_small":
                add(sent, tag, when, **{"from": me, "to": [them], "bcc": [{"email": RECORD_ATTACHMENTS_ADDRESS}],
                                        "attachments": [{"name": f"quote-{when}.pdf", "size": 60_000 + when,
                                                         "content_type": "application/pdf"}]})
            elif tag == "attachment_large":
                add(inbox, tag, when, **{"from": them, "to": [me], "categories": [RECORD_ATTACHMENTS_CATEGORY],
                                         "attachments": [
                                             {"name": "specs.zip", "size": 6 * MB, "content_type": "application/zip"},
                                             {"name": "summary.txt", "size": 2_000, "content_type": "text/plain"}]})
            elif tag == "inline_image":
                add(inbox, tag, when, **{"from": them, "to": [me], "body_type": "HTML",
                                         "body": '<p>See logo</p><img src="cid:logo1">',
                                         "attachments": [{"name": "logo.png", "size": 4_000, "is_inline": True,
                                                          "content_type": "image/png"}]})
            elif tag == "long_subject":
                add(inbox, tag, when, **{"from": them, "to": [me], "topic": "Very long subject " * 20})
            elif tag == "long_body":
                paragraph = "This paragraph repeats to make a very long thread history. " * 40 + "\n\n"
                add(inbox, tag, when, **{"from": them, "to": [me], "body": paragraph * 30})
            elif tag == "several_contacts":
                others = rng.sample(contacts, 3)
                add(sent, tag, when, **{"from": me, "to": [{"email": c["Email"]} for c in others],
                                        "cc": [{"email": colleague}]})
            elif tag == "alternate_email":
                alt = next(c for c in rng.sample(contacts, len(contacts)) if c.get("Secondary_Email__c"))
                add(inbox, tag, when, **{"from": {"email": alt["Secondary_Email__c"]}, "to": [me]})
            elif tag == "lead":
                add(inbox, tag, when, **{"from": {"email": rng.choice(open_leads)["Email"]}, "to": [me]})
            elif tag == "converted_lead":
                converted = next(l for l in leads if l["IsConverted"])
                add(inbox, tag, when, **{"from": {"email": converted["Email"]}, "to": [me]})
            elif tag == "private":
                add(inbox, tag, when, **{"from": them, "to": [me], "sensitivity": "Private"})
            elif tag == "html_body":
                add(inbox, tag, when, **{"from": them, "to": [me], "body_type": "HTML",
                                         "body": "<html><body><p>Hi&nbsp;there,</p><ul><li>one</li><li>two</li>"
                                                 "</ul><p>See <a href='https://acme.com'>site</a></p></body></html>"})
    return {"Inbox": inbox, "Sent Items": sent}, tags
