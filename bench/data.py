"""Deterministic synthetic data for the benchmarks: an org, mailboxes, jobs (fixed seed).

Everything is derived from ``random.Random`` seeded with :data:`SEED` (and the mailbox
name), so the same call always yields the same people, emails, attachments and jobs. Only
the timestamps are relative to ``now`` (rounded to the minute), because a Sync Now run
covers ``(now - lookback_days, now]``; their offsets are deterministic too.

The full data set (``build_dataset(FULL_MAILBOXES)``) is the one the issue asks for:

- **10,000 emails** in four mailboxes, in ``Inbox``, ``Inbox/Clients`` and ``Sent Items``;
- **3,000 attachments** (0.3 per email, some emails carry several), sizes from 2 KB to
  8 MB with the distribution in :data:`ATTACHMENT_TIERS` (most small, a few large; the
  EWS sandbox makes the bytes when they are fetched, so seeding costs no memory);
- **5,000 people**: 3,500 Contacts (a quarter reachable through ``Secondary_Email__c``
  only, the org's alternate email field) and 1,500 Leads (10 % converted);
- a realistic **mix of rules** (:data:`TAGS`: contacts in and out, leads, alternate
  addresses, unknown senders, internal-only, exclusions, DoNotSync, DoNotRecord, designated
  by category and smart address, reply threads, private, long bodies, HTML, several
  contacts) and of **modes** (:data:`JOBS`: all with shared activities and every
  attachment, designated, all with owned records only, off).

Each email's subject starts with its tag (``[lead] ...``) like ``sandbox/demo_data.py``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.demo_data import (
    DO_NOT_RECORD_ADDRESS,
    INTEGRATION_USER,
    RECORD_ADDRESS,
    RECORD_ATTACHMENTS_ADDRESS,
    RECORD_ATTACHMENTS_CATEGORY,
    SERVICE_ACCOUNT,
    SESSION_ID,
)

SEED = 20_240_501
ORG_DOMAIN = "example.com"  # include/email_sync/policy.yaml: internal_domains
KB, MB = 1024, 1024 * 1024
CONTACTS, LEADS = 3_500, 1_500
ATTACHMENTS_PER_EMAIL = 0.3
LOOKBACK_DAYS = 7  # the jobs' first sync reaches this far; the mail spans the last 6 days
SPAN = timedelta(days=6)

# (share, smallest, largest): sizes are log-uniform inside a tier. Mean about 420 KB, so
# 3,000 attachments are about 1.2 GB, of which the 2 % above 5 MB are never uploaded
# (org attachment_max_bytes) and the inline images never either.
ATTACHMENT_TIERS: tuple[tuple[float, int, int], ...] = (
    (0.55, 2 * KB, 64 * KB),
    (0.30, 64 * KB, 512 * KB),
    (0.10, 512 * KB, 2 * MB),
    (0.03, 2 * MB, 5 * MB),
    (0.02, 5 * MB + 1, 8 * MB),
)
INLINE_SHARE = 0.08  # of attachments: inline images in HTML bodies (never uploaded)

# Rule tags and their weights (relative frequency among emails).
TAGS: dict[str, float] = {
    "inbound_contact": 22, "outbound_contact": 16, "lead": 6, "converted_lead": 1, "alternate_email": 4,
    "several_contacts": 5, "inbound_unknown": 10, "internal_only": 8, "excluded_address": 1,
    "excluded_domain": 1, "do_not_sync_category": 2, "do_not_record_bcc": 1, "designated_category": 5,
    "designated_smart_address": 4, "reply": 4, "private": 1, "long_body": 1, "long_subject": 0.5,
    "attachments_category": 2, "attachments_address": 1.5,
}
FOLDERS = ("Inbox", "Inbox/Clients", "Sent Items")

# The users (mailbox = Salesforce username) and their jobs, a mix of modes.
USERS = ("ana", "ben", "chloe", "dmitri")
JOBS: dict[str, dict[str, Any]] = {
    "ana": {"mode": "all", "shared_activities": True, "record_all_attachments": True, "timezone": "Europe/Berlin",
            "frequency_minutes": 30, "window": {"days": ["mon", "tue", "wed", "thu", "fri"],
                                                "start": "07:00", "end": "20:00"}},
    "ben": {"mode": "designated", "timezone": "America/New_York"},
    "chloe": {"mode": "all", "owned_records_only": True, "match_objects": ["contacts"], "activity_type": "Email",
              "timezone": "Europe/London", "frequency_minutes": 60},
    "dmitri": {"mode": "off"},
}
# The full data set: 10,000 emails in four mailboxes.
FULL_MAILBOXES: dict[str, int] = {"ana": 4_000, "ben": 2_500, "chloe": 2_500, "dmitri": 1_000}

COMPANY_WORDS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell", "cyberdyne",
                 "soylent", "wonka", "gringotts", "oscorp", "vandelay", "dunder", "pied", "piper", "massive",
                 "aperture", "black", "mesa", "monarch", "nakatomi", "sirius", "virtucon")
TLDS = ("com", "io", "co.uk", "de", "org", "net")
FIRST = ("Ana", "Ben", "Chloé", "Dmitri", "Eve", "Farah", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lena", "Mateo",
         "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zoe")
LAST = ("Ng", "O'Brien", "Silva", "Müller", "Kowalski", "Rossi", "Haddad", "Tanaka", "Dubois", "Okafor", "Novak",
        "Larsen", "Costa", "Ivanova", "Kim", "Nakamura", "Petrov", "Santos", "Weber", "Yilmaz")
WORDS = ("quote", "renewal", "contract", "meeting", "invoice", "proposal", "pricing", "roadmap", "support", "order",
         "delivery", "schedule", "demo", "onboarding", "review", "budget", "licence", "migration", "workshop", "plan")


@dataclass
class Dataset:
    """Seeds for both sandboxes, the job files, and what was generated (for the report)."""

    ews: dict[str, Any]
    salesforce: dict[str, Any]
    jobs: dict[str, dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)


def mailbox(user: str) -> str:
    return f"{user}@{ORG_DOMAIN}"


def build_dataset(emails_per_mailbox: dict[str, int], *, seed: int = SEED, now: datetime | None = None,
                  contacts: int = CONTACTS, leads: int = LEADS) -> Dataset:
    """The org (always the same people), and ``emails_per_mailbox[user]`` emails per mailbox.

    Users not in ``emails_per_mailbox`` get no mailbox and no job.
    """
    now = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    people = _people(random.Random(seed), contacts, leads)
    salesforce = {
        "org": {"shared_activities": True, "has_external_id_field": True, "daily_api_max": 100_000,
                "session_id": SESSION_ID},
        "users": [{"Username": INTEGRATION_USER, "Email": INTEGRATION_USER, "FirstName": "Sync",
                   "LastName": "Integration", "TimeZoneSidKey": "UTC"}]
        + [{"Username": mailbox(u), "Email": mailbox(u), "FirstName": u.title(), "LastName": "Bench",
            "TimeZoneSidKey": "UTC"} for u in USERS],
        "contacts": people["contacts"],
        "leads": people["leads"],
    }
    mailboxes: dict[str, Any] = {}
    stats: dict[str, Any] = {"seed": seed, "contacts": len(people["contacts"]), "leads": len(people["leads"]),
                             "contacts_with_alternate_email": sum(1 for c in people["contacts"]
                                                                  if c.get("Secondary_Email__c")),
                             "converted_leads": sum(1 for lead in people["leads"] if lead["IsConverted"]),
                             "mailboxes": {}}
    jobs: dict[str, dict[str, Any]] = {}
    for user, count in emails_per_mailbox.items():
        if user not in USERS:
            raise ValueError(f"unknown benchmark user {user!r} (one of {USERS})")
        rng = random.Random(f"{seed}:{user}")
        folders, box_stats = _mailbox(rng, user, count, people, now)
        mailboxes[mailbox(user)] = {"folders": folders}
        stats["mailboxes"][user] = box_stats
        jobs[user] = {"mailbox": mailbox(user), "salesforce_user": mailbox(user), "lookback_days": LOOKBACK_DAYS,
                      "folders": list(FOLDERS), **JOBS[user]}
    ews = {
        "accounts": [{"username": SERVICE_ACCOUNT[0], "password": SERVICE_ACCOUNT[1],
                      "smtp_address": SERVICE_ACCOUNT[0], "impersonation": True}]
        + [{"username": mailbox(u), "password": "user-password", "smtp_address": mailbox(u)} for u in USERS],
        "mailboxes": mailboxes,
    }
    stats["emails"] = sum(b["emails"] for b in stats["mailboxes"].values())
    stats["attachments"] = sum(b["attachments"] for b in stats["mailboxes"].values())
    stats["attachment_bytes"] = sum(b["attachment_bytes"] for b in stats["mailboxes"].values())
    return Dataset(ews=ews, salesforce=salesforce, jobs=jobs, stats=stats)


# --- the org -------------------------------------------------------------------------------------
def _companies(rng: random.Random, n: int = 180) -> list[str]:
    seen: dict[str, None] = {}
    while len(seen) < n:
        a, b = rng.sample(COMPANY_WORDS, 2)
        seen[f"{a}{b}.{rng.choice(TLDS)}"] = None
    return list(seen)


def _person_name(i: int) -> tuple[str, str]:
    return FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]


def _local(first: str, last: str, i: int) -> str:
    text = f"{first}.{last}.{i}".lower()
    for a, b in (("'", ""), ("é", "e"), ("ü", "u")):
        text = text.replace(a, b)
    return text


def _people(rng: random.Random, contacts: int, leads: int) -> dict[str, Any]:
    companies = _companies(rng)
    owners = [mailbox(u) for u in USERS] + [INTEGRATION_USER]
    contact_rows, lead_rows = [], []
    for i in range(contacts):
        first, last = _person_name(i)
        company = companies[i % len(companies)]
        row: dict[str, Any] = {"FirstName": first, "LastName": last, "Email": f"{_local(first, last, i)}@{company}",
                               "OwnerUsername": owners[i % len(owners)], "AccountName": company.split(".")[0].title()}
        if i % 4 == 0:  # a quarter also use a second address, found only through the alternate field
            row["Secondary_Email__c"] = f"{_local(first, last, i)}.alt@mail.{company}"
        contact_rows.append(row)
    for j in range(leads):
        i = contacts + j
        first, last = _person_name(i)
        company = companies[(i * 7) % len(companies)]
        lead_rows.append({"FirstName": first, "LastName": last, "Email": f"{_local(first, last, i)}@{company}",
                          "Company": company.split(".")[0].title(), "IsConverted": j % 10 == 0,
                          "OwnerUsername": owners[j % len(owners)]})
    return {"contacts": contact_rows, "leads": lead_rows}


# --- mailboxes -------------------------------------------------------------------------------------
def _tag_sequence(rng: random.Random, count: int) -> list[str]:
    """``count`` tags drawn by weight; a reply takes two emails (the original and the answer)."""
    names, weights = list(TAGS), list(TAGS.values())
    tags: list[str] = []
    while len(tags) < count:
        tag = rng.choices(names, weights)[0]
        if tag == "reply":
            if len(tags) + 2 > count:
                continue
            tags += ["reply_original", "reply"]
        else:
            tags.append(tag)
    return tags


def _attachment_size(rng: random.Random) -> int:
    roll, acc = rng.random(), 0.0
    for share, low, high in ATTACHMENT_TIERS:
        acc += share
        if roll < acc:
            return int(math.exp(rng.uniform(math.log(low), math.log(high))))
    return ATTACHMENT_TIERS[-1][1]


def _body(rng: random.Random, n: int, html: bool, long: bool = False) -> str:
    sentences = [f"We discussed the {rng.choice(WORDS)} and the {rng.choice(WORDS)} for next quarter."
                 for _ in range(rng.randint(2, 12))]
    if long:  # a long thread history (about 45,000 characters): split into Tasks of 32,000
        sentences = sentences * (700 // len(sentences) + 1)
    if html:
        return "<html><body>" + "".join(f"<p>{s}</p>" for s in sentences) + f"<p>Ref #{n}</p></body></html>"
    return "Hello,\n\n" + "\n".join(sentences) + f"\n\nRef #{n}\nRegards"


def _mailbox(rng: random.Random, user: str, count: int, people: dict[str, Any],
             now: datetime) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    me_addr = mailbox(user)
    me = {"email": me_addr, "name": f"{user.title()} Bench"}
    colleagues = [f"{name}.{user}@{ORG_DOMAIN}" for name in ("sam", "alex", "kim")]
    contacts = people["contacts"]
    alternates = [c for c in contacts if c.get("Secondary_Email__c")]
    open_leads = [lead for lead in people["leads"] if not lead["IsConverted"]]
    converted = [lead for lead in people["leads"] if lead["IsConverted"]]
    folders: dict[str, list[dict[str, Any]]] = {f: [] for f in FOLDERS}
    tags = _tag_sequence(rng, count)
    step = SPAN / max(count, 1)
    messages: list[dict[str, Any]] = []
    last_original: dict[str, Any] | None = None

    def person(row: dict[str, Any], address: str | None = None) -> dict[str, str]:
        return {"email": address or row["Email"], "name": f"{row['FirstName']} {row['LastName']}"}

    for n, tag in enumerate(tags):
        when = now - timedelta(minutes=2) - step * n  # newest first, all inside the window
        contact = rng.choice(contacts)
        them = person(contact)
        html = rng.random() < 0.3
        msg: dict[str, Any] = {
            "subject": f"[{tag}] {rng.choice(WORDS).title()} {rng.choice(WORDS)} #{n}",
            "body": _body(rng, n, html), "body_type": "HTML" if html else "Text",
            "sent": (when - timedelta(seconds=40)).isoformat(), "received": when.isoformat(),
            "message_id": f"<bench.{user}.{n}.{tag}@mail.{ORG_DOMAIN}>",
        }
        inbound = {"from": them, "to": [me]}
        outbound = {"from": me, "to": [them]}
        folder = "Inbox/Clients" if rng.random() < 0.3 else "Inbox"
        if tag == "inbound_contact":
            msg.update(inbound)
            if rng.random() < 0.2:
                msg["cc"] = [{"email": rng.choice(colleagues)}]
        elif tag == "outbound_contact":
            msg.update(outbound)
            folder = "Sent Items"
        elif tag == "lead":
            msg.update({"from": person(rng.choice(open_leads)), "to": [me]})
        elif tag == "converted_lead":
            msg.update({"from": person(rng.choice(converted)), "to": [me]})
        elif tag == "alternate_email":
            alt = rng.choice(alternates)
            msg.update({"from": person(alt, alt["Secondary_Email__c"]), "to": [me]})
        elif tag == "several_contacts":
            msg.update({"from": me, "to": [person(c) for c in rng.sample(contacts, rng.randint(2, 5))],
                        "cc": [{"email": rng.choice(colleagues)}]})
            folder = "Sent Items"
        elif tag == "inbound_unknown":
            msg.update({"from": {"email": f"someone{rng.randrange(10**6)}@unknown-{rng.randrange(500)}.net"},
                        "to": [me]})
        elif tag == "internal_only":
            msg.update({"from": {"email": rng.choice(colleagues)}, "to": [me]})
        elif tag == "excluded_address":
            msg.update({"from": {"email": "payroll@partner-bank.example"}, "to": [me]})
        elif tag == "excluded_domain":
            msg.update({"from": {"email": f"benefits{rng.randrange(50)}@hr-provider.example"}, "to": [me]})
        elif tag == "do_not_sync_category":
            msg.update(inbound, categories=["DoNotSync"])
        elif tag == "do_not_record_bcc":
            msg.update(outbound, bcc=[{"email": DO_NOT_RECORD_ADDRESS}])
            folder = "Sent Items"
        elif tag == "designated_category":
            msg.update(inbound, categories=["CRM"])
        elif tag == "designated_smart_address":
            msg.update(outbound, bcc=[{"email": RECORD_ADDRESS}])
            folder = "Sent Items"
        elif tag == "reply_original":
            msg.update(outbound, bcc=[{"email": RECORD_ADDRESS}])
            msg["subject"] = f"[{tag}] Proposal #{n}"
            folder = "Sent Items"
            last_original = msg
        elif tag == "reply":
            assert last_original is not None
            original = last_original
            msg.update({"from": original["to"][0], "to": [me], "in_reply_to": original["message_id"],
                        "references": original["message_id"]})
            msg["subject"] = f"[{tag}] RE: Proposal #{n - 1}"
            # the answer comes after the original
            msg["received"], original["received"] = original["received"], msg["received"]
            msg["sent"], original["sent"] = original["sent"], msg["sent"]
        elif tag == "private":
            msg.update(inbound, sensitivity="Private")
        elif tag == "long_body":
            msg.update(inbound, body=_body(rng, n, False, long=True), body_type="Text")
        elif tag == "long_subject":
            msg.update(inbound)
            msg["subject"] = f"[{tag}] " + "Very long subject " * 20
        elif tag == "attachments_category":
            msg.update(inbound, categories=[RECORD_ATTACHMENTS_CATEGORY])
        elif tag == "attachments_address":
            msg.update(outbound, bcc=[{"email": RECORD_ATTACHMENTS_ADDRESS}])
            folder = "Sent Items"
        msg["_folder"] = folder
        messages.append(msg)

    # Attachments: 0.3 per email, on random emails (some get several), inline ones in HTML bodies.
    attachment_count = round(count * ATTACHMENTS_PER_EMAIL)
    sizes: dict[str, int] = {}
    inline = 0
    for k in range(attachment_count):
        msg = messages[rng.randrange(len(messages))]
        size = _attachment_size(rng)
        if rng.random() < INLINE_SHARE:
            size = min(size, 40 * KB)
            spec = {"name": f"image{k}.png", "size": size, "content_type": "image/png", "is_inline": True,
                    "content_id": f"image{k}@bench"}
            if msg["body_type"] == "HTML":
                msg["body"] = msg["body"].replace("</body>", f'<img src="cid:image{k}@bench"></body>')
            inline += 1
        else:
            ext, kind = rng.choice((("pdf", "application/pdf"), ("docx", "application/vnd.openxmlformats-"
                                    "officedocument.wordprocessingml.document"), ("xlsx", "application/vnd."
                                    "openxmlformats-officedocument.spreadsheetml.sheet"), ("zip", "application/zip"),
                                    ("jpg", "image/jpeg")))
            spec = {"name": f"{rng.choice(WORDS)}-{k}.{ext}", "size": size, "content_type": kind}
        msg.setdefault("attachments", []).append(spec)
        tier = next(f"{low // KB}KB-{high // KB}KB" for share, low, high in ATTACHMENT_TIERS if size <= high)
        sizes[tier] = sizes.get(tier, 0) + 1

    for msg in messages:
        folders[msg.pop("_folder")].append(msg)
    tag_counts: dict[str, int] = {}
    for tag in tags:
        tag_counts[tag] = tag_counts.get(tag, 0) + 1
    stats = {
        "emails": count,
        "folders": {f: len(m) for f, m in folders.items()},
        "tags": dict(sorted(tag_counts.items())),
        "attachments": attachment_count,
        "inline_attachments": inline,
        "attachment_bytes": sum(a["size"] for m in messages for a in m.get("attachments", ())),
        "attachments_by_size": dict(sorted(sizes.items(), key=lambda kv: int(kv[0].split("KB")[0]))),
        "attachments_over_5mb": sum(1 for m in messages for a in m.get("attachments", ()) if a["size"] > 5 * MB),
    }
    return folders, stats
