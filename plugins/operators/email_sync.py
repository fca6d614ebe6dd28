"""Operators of a sync DAG: each builds its hooks and calls one step of ``email_sync.pipeline``.

The operators take no arguments of their own. A sync DAG *is* its job (its id is
``email_sync__<job_id>``); the job's settings are reloaded from the deployment's config
directory (:func:`email_sync.rules.config.deployment_config_dir`) at execute time, so a task
always runs with the job's current config; Connections have fixed ids (production points
the Connections at the real systems, not the operators at other Connections). So nothing
secret or personal can land in rendered fields, and the DAG file stays cheap: Airflow wraps
every operator class's own ``__init__`` in its argument handling, and a constructor of ours
on top of BaseOperator's costs about 0.2 s per 1,000 DAGs (docs/BENCHMARKS.md).

Client libraries are the hooks' and adapters' business, imported inside ``execute``; the
operators only ask whether an error is permanent (:mod:`email_sync.errors`). XCom carries
counts only.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from email_sync.errors import PermanentError

if TYPE_CHECKING:
    from email_sync.crm.base import Crm
    from email_sync.pipeline.context import RunContext
    from email_sync.sources.base import MailSource

DAG_PREFIX = "email_sync__"  # a sync DAG's id: DAG_PREFIX + its job id
EXCHANGE_POOL = "exchange_api"
SALESFORCE_POOL = "salesforce_api"
STAGING_VARIABLE = "email_sync_staging_dir"
# The task id of each step in a sync DAG (the last step reads the others' counts by them).
STEP_TASK_IDS = {
    "extract": "extract_folder_mail",
    "filter": "filter_by_mode",
    "match": "match_recipients",
    "insert": "bulk_insert_tasks",
    "upload": "upload_attachments",
    "finish": "mark_synced_and_summarize",
}


class EmailSyncOperator(BaseOperator):
    """Shared plumbing: job settings, run context, state store, mail source and CRM clients."""

    ui_color = "#e8f4fd"
    step = ""
    salesforce_conn_id = "salesforce_default"
    state_conn_id = "email_sync_state"

    @property
    def job_id(self) -> str:
        """The sync job this task belongs to: its DAG's id without :data:`DAG_PREFIX`."""
        return self.dag_id.removeprefix(DAG_PREFIX)

    # -- building blocks ------------------------------------------------------------
    def run_context(self, context: Any) -> RunContext:
        from email_sync.pipeline.context import RunContext
        from email_sync.rules.config import deployment_config_dir, load_jobs

        loaded = load_jobs(deployment_config_dir(), only=self.job_id)
        job = next((j for j in loaded.jobs if j.job_id == self.job_id), None)
        if job is None:
            problems = "; ".join(str(e) for e in loaded.errors if e.job_id in (self.job_id, None))
            raise AirflowFailException(f"sync job {self.job_id!r} is not valid any more: {problems or 'not found'}")
        return RunContext(self.job_id, job.settings, loaded.org, context["run_id"], self._staging_root())

    def _staging_root(self) -> Path:
        from airflow.sdk import Variable

        configured = os.environ.get("EMAIL_SYNC_STAGING_DIR") or Variable.get(STAGING_VARIABLE, default=None)
        return Path(configured or Path(tempfile.gettempdir()) / "email_sync_staging")

    def state_store(self) -> Any:
        from hooks.state import StateStoreHook

        return StateStoreHook(self.state_conn_id).get_store()

    def mail_source(self, ctx: RunContext) -> Callable[[], MailSource]:
        """A factory, so a step that has nothing to read never opens the mailbox."""

        def build() -> MailSource:
            from hooks.mail import mail_source

            return mail_source(ctx.settings.source.value, ctx.settings.mailbox)

        return build

    def crm(self, ctx: RunContext) -> Callable[[], Crm]:
        """A factory, so a step with nothing to send makes no Salesforce call (not even a login)."""

        def build() -> Crm:
            from email_sync.crm.salesforce import SalesforceCrm
            from hooks.salesforce import SalesforceSessionHook

            sf = SalesforceSessionHook(salesforce_conn_id=self.salesforce_conn_id).get_conn()
            return SalesforceCrm(sf, bulk_threshold=ctx.org.bulk_threshold, reserve=ctx.org.api_reserve)

        return build

    def execute(self, context: Any) -> dict[str, Any]:
        ctx = self.run_context(context)
        try:
            counts = self.run_step(ctx, context)
        except PermanentError as exc:
            # Retrying cannot help: fail the run at once with nothing marked done (the ledger
            # holds only what is owed, the watermark does not move; the next run starts there).
            ctx.discard_staging()
            raise AirflowFailException(f"email sync {self.job_id}, step {self.step}: {exc}") from exc
        except Exception:
            if context["ti"].try_number > self.retries:  # the last try: no retry will read the staged mail
                ctx.discard_staging()
            raise
        self.log.info("%s: %s", self.step, counts)
        return counts

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        raise NotImplementedError


def _interval(context: Any) -> tuple[datetime, datetime] | None:
    """The run's data interval; None for a run triggered without a logical date (Sync Now)."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        return None
    return start, end


class ExtractFolderMailOperator(EmailSyncOperator):
    """Stage the window's mail from the job's folders (metadata of attachments only)."""

    step = "extract"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.pipeline.extract import extract

        return extract(ctx, self.mail_source(ctx), self.state_store(), _interval(context), datetime.now(UTC))


class FilterByModeOperator(EmailSyncOperator):
    """Mode, designation, exclusions, internal-only and replies: every rule without Salesforce."""

    step = "filter"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.pipeline.filter import filter_mail

        return filter_mail(ctx, self.state_store())


class MatchRecipientsOperator(EmailSyncOperator):
    """Batched SOQL lookups of the candidates' participants; builds the Tasks."""

    step = "match"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.pipeline.match import match

        return match(ctx, self.crm(ctx), self.state_store())


class BulkInsertTasksOperator(EmailSyncOperator):
    """Upsert Tasks (sObject Collections, or Bulk API 2.0 above the threshold) and TaskRelations."""

    step = "insert"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.pipeline.insert import insert_tasks

        return insert_tasks(ctx, self.crm(ctx), self.state_store())


class UploadAttachmentsOperator(EmailSyncOperator):
    """Attachments of 5 MB or less as Salesforce Files on the Task, one bounded batch in memory at a time."""

    step = "upload"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.pipeline.upload import upload_attachments

        return upload_attachments(ctx, self.mail_source(ctx), self.crm(ctx), self.state_store())


class FinishSyncOperator(EmailSyncOperator):
    """CRM category back to the mailbox, run summary, cursors and watermark, staged mail deleted."""

    step = "finish"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.pipeline.finish import finish, format_summary

        ti = context["ti"]
        counts = {step: ti.xcom_pull(task_ids=task_id) or {} for step, task_id in STEP_TASK_IDS.items()
                  if step != self.step}
        summary = finish(ctx, self.mail_source(ctx), self.crm(ctx), self.state_store(), counts)
        self.log.info("\n%s", format_summary(ctx.job_id, summary))
        return summary
