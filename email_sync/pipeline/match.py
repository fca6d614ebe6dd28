"""Step 3, match: look the candidates' participants up in Salesforce; build the Tasks to write."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from email_sync.crm.base import Crm
from email_sync.errors import SetupProblem
from email_sync.pipeline.context import METADATA_TTL, RunContext, item_key, ints, remember_usage
from email_sync.pipeline.staging import decode_candidate, read_jsonl, read_mail, write_jsonl
from email_sync.rules.attachments import select_attachments
from email_sync.rules.keys import IDEMPOTENCY_FIELD, email_identity, missing_key_field_message
from email_sync.rules.matching import (
    RecordIndex,
    email_fields_for,
    finalize,
    lookup_addresses,
    match_decision,
    objects_to_match,
    records_from_rows,
)
from email_sync.rules.settings import is_salesforce_user_id
from email_sync.rules.soql import build_match_queries
from email_sync.rules.tasks import build_tasks, field_limits_from_describe
from email_sync.rules.text import FieldLimit
from email_sync.store.state_store import Outcome, StateStore

DESCRIBE_CACHE = "describe:Task:v2"  # v2: with the Type picklist


def match(ctx: RunContext, crm: Callable[[], Crm], store: StateStore) -> dict[str, Any]:
    """Look up every candidate's participants in batched SOQL; build the Tasks to write.

    No candidate → no Salesforce call at all (the client is not even built). Owner id and
    Task field sizes come from the state store's cache when fresh.
    """
    candidates = {c["message_key"]: c for c in read_jsonl(ctx.path("candidates.jsonl"))}
    to_match = {k: decode_candidate(c) for k, c in candidates.items() if c["task_id"] is None}
    if not candidates:
        write_jsonl(ctx.path("tasks.jsonl"), [])
        return {"matched": 0, "salesforce_calls": 0}
    client = crm()
    owner_id = _owner_id(ctx, client, store) if to_match else ""
    limits = _task_limits(ctx, client, store) if to_match else {}

    index = RecordIndex(())
    addresses = lookup_addresses(to_match.values())
    if addresses:
        owner_filter = owner_id if ctx.settings.owned_records_only else None
        lookups = []  # (object, its email fields, statement): every object's statements in one go
        for sobject in objects_to_match(ctx.settings):
            fields = email_fields_for(sobject, ctx.settings, ctx.org)
            lookups.extend((sobject, fields, q.statement)
                           for q in build_match_queries(sobject, fields, addresses, owner_id=owner_filter))
        answers = client.query_each([statement for _, _, statement in lookups])
        index = RecordIndex([record for (sobject, fields, _), found in zip(lookups, answers, strict=True)
                             for record in records_from_rows(sobject, found, fields)])

    counts: Counter[str] = Counter()
    outcomes: list[Outcome] = []

    def planned() -> Iterator[dict[str, Any]]:
        for item in read_mail(ctx.path("mail.parquet")):
            key = item_key(item)
            candidate = candidates.get(key)
            if candidate is None:
                continue
            decision = decode_candidate(candidate)
            plan = select_attachments(item, decision, ctx.org)
            files = [{"key": a.key, "attachment_id": a.ref.attachment_id, "name": a.ref.name,
                      "size": a.ref.size, "content_type": a.ref.content_type} for a in plan.upload]
            skipped_files = Counter(reason.value for _, reason in plan.skipped)
            row = {"message_key": key, "message_id": email_identity(item), "item_id": item.item_id,
                   "folder": item.folder,
                   "email_at": candidate["email_at"], "task_id": candidate["task_id"], "tasks": [],
                   "files": files, "files_skipped": dict(skipped_files)}
            if candidate["task_id"] is not None:  # files-only: the Tasks exist
                counts["files_only"] += 1
                yield row
                continue
            found = match_decision(decision, index, ctx.settings, ctx.org)
            build = build_tasks(ctx.job_id, item, finalize(decision, found), found, ctx.settings, owner_id, limits)
            if build.skip_reason is not None:
                counts[f"skipped_{build.skip_reason.value}"] += 1
                outcomes.append(Outcome(key, "skipped", build.skip_reason.value, build.detail))
                continue
            counts["matched"] += 1
            counts["tasks"] += build.parts
            if build.parts > 1:
                counts["split_emails"] += 1
            counts.update({f"attachments_{r}": n for r, n in skipped_files.items()})
            row["tasks"] = [{"key": t.idempotency_key, "part": t.part, "parts": t.parts,
                             "fields": t.sobject(), "related": list(t.related_contact_ids)}
                            for t in build.tasks]
            yield row

    write_jsonl(ctx.path("tasks.jsonl"), planned())
    store.record_outcomes(ctx.job_id, ctx.run_id, outcomes)
    remember_usage(client, store)
    return {**ints(counts), "salesforce_calls": client.calls}


def _owner_id(ctx: RunContext, client: Crm, store: StateStore) -> str:
    user = ctx.settings.salesforce_user
    if not user:
        raise SetupProblem(f"job {ctx.job_id!r}: field 'salesforce_user' is required to record Tasks")
    if is_salesforce_user_id(user):
        return user
    cache_key = f"owner:{user.lower()}"
    cached = store.cache_get(cache_key)
    if cached:
        return str(cached)
    owner = client.user_id(user)
    store.cache_put(cache_key, owner, METADATA_TTL)
    return owner


def _task_limits(ctx: RunContext, client: Crm, store: StateStore) -> dict[str, FieldLimit]:
    """Task field sizes from describe (cached); refuses what would fail every record later.

    An org without the external-id field, or a job whose ``activity_type`` is not a value of
    the Task ``Type`` picklist, is a setup problem: found before anything is sent, instead of
    every email failing per record.
    """
    fields = store.cache_get(DESCRIBE_CACHE)
    if fields is None:
        fields = [{k: f[k] for k in ("name", "length", "byteLength", "externalId", "picklist") if k in f}
                  for f in client.describe_fields("Task")]
        store.cache_put(DESCRIBE_CACHE, fields, METADATA_TTL)
    if not any(f["name"] == IDEMPOTENCY_FIELD and f.get("externalId") for f in fields):
        raise SetupProblem(missing_key_field_message("describe lists no such external-id field"))
    activity_type = ctx.settings.activity_type
    values = next((f.get("picklist") for f in fields if f["name"] == "Type"), None)
    if activity_type is not None and values and activity_type not in values:
        raise SetupProblem(f"job {ctx.job_id!r}: field 'activity_type': value {activity_type!r} is not a value of the "
                           f"Task Type picklist ({', '.join(map(repr, values))}); use one of them or leave it unset")
    return field_limits_from_describe({"fields": fields})
