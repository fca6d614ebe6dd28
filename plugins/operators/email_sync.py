"""Operators of a sync DAG: each builds its hooks and calls one step of ``email_sync.steps``.

Only ids and paths are operator arguments (nothing secret or personal lands in rendered
fields); the job's settings are reloaded from the config directory at execute time, so the
DAG file stays cheap to parse and a task always runs with the job's current config. Heavy
imports (exchangelib, simple-salesforce, pyarrow, SQLAlchemy) happen inside ``execute``.
XCom carries counts only.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from email_sync.steps import RunContext

EXCHANGE_POOL = "exchange_api"
SALESFORCE_POOL = "salesforce_api"
STAGING_VARIABLE = "email_sync_staging_dir"


class EmailSyncOperator(BaseOperator):
    """Shared plumbing: job settings, run context, state store, Exchange and Salesforce clients."""

    ui_color = "#e8f4fd"
    step = ""

    def __init__(
        self,
        *,
        job_id: str,
        config_dir: str,
        exchange_conn_id: str = "exchange_default",
        salesforce_conn_id: str = "salesforce_default",
        state_conn_id: str = "email_sync_state",
        staging_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.config_dir = config_dir
        self.exchange_conn_id = exchange_conn_id
        self.salesforce_conn_id = salesforce_conn_id
        self.state_conn_id = state_conn_id
        self.staging_dir = staging_dir

    # -- building blocks ------------------------------------------------------------
    def run_context(self, context: Any) -> RunContext:
        from email_sync.config import load_jobs
        from email_sync.steps import RunContext

        loaded = load_jobs(self.config_dir, only=self.job_id)
        job = next((j for j in loaded.jobs if j.job_id == self.job_id), None)
        if job is None:
            problems = "; ".join(str(e) for e in loaded.errors if e.job_id in (self.job_id, None))
            raise AirflowFailException(f"sync job {self.job_id!r} is not valid any more: {problems or 'not found'}")
        return RunContext(self.job_id, job.settings, loaded.org, context["run_id"], self._staging_root())

    def _staging_root(self) -> Path:
        if self.staging_dir:
            return Path(self.staging_dir)
        from airflow.sdk import Variable

        configured = os.environ.get("EMAIL_SYNC_STAGING_DIR") or Variable.get(STAGING_VARIABLE, default=None)
        return Path(configured or Path(tempfile.gettempdir()) / "email_sync_staging")

    def state_store(self) -> Any:
        from hooks.state import StateStoreHook

        return StateStoreHook(self.state_conn_id).get_store()

    def mail_source(self, ctx: RunContext) -> Any:
        """A factory, so a step that has nothing to read never opens the mailbox."""

        def build() -> Any:
            from email_sync.sources.ews import EwsMailSource
            from hooks.exchange import ExchangeHook

            return EwsMailSource(ExchangeHook(self.exchange_conn_id).get_account(ctx.settings.mailbox))

        return build

    def crm(self, ctx: RunContext) -> Any:
        """A factory, so a step with nothing to send makes no Salesforce call (not even a login)."""

        def build() -> Any:
            from email_sync.crm.salesforce import SalesforceCrm
            from hooks.salesforce import SalesforceSessionHook

            sf = SalesforceSessionHook(salesforce_conn_id=self.salesforce_conn_id).get_conn()
            return SalesforceCrm(sf, bulk_threshold=ctx.org.bulk_threshold)

        return build

    def execute(self, context: Any) -> dict[str, Any]:
        ctx = self.run_context(context)
        try:
            counts = self.run_step(ctx, context)
        except Exception as exc:
            reason = _permanent_failure(exc)
            if reason is None:
                raise  # transient: Airflow retries the task with exponential backoff
            raise AirflowFailException(f"email sync {self.job_id}, step {self.step}: {reason}") from exc
        self.log.info("%s: %s", self.step, counts)
        return counts

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        raise NotImplementedError


def _permanent_failure(exc: Exception) -> str | None:
    """A message when retrying cannot help (credentials, org setup, API budget); else None.

    Such failures fail the run at once with nothing marked done: the ledger only holds
    claims, the watermark does not move, and the next run starts from the same place.
    """
    from exchangelib.errors import UnauthorizedError

    from email_sync.crm.salesforce import AuthenticationFailed, BudgetExhausted, MissingExternalIdField
    from email_sync.steps import ConfigurationProblem

    if isinstance(exc, AuthenticationFailed | UnauthorizedError):
        return f"authentication failed ({exc}); fix the Connection's credentials"
    if isinstance(exc, BudgetExhausted):
        return f"Salesforce API budget: {exc}"
    if isinstance(exc, MissingExternalIdField | ConfigurationProblem):
        return str(exc)
    return None


def _interval(context: Any) -> tuple[datetime, datetime] | None:
    """The run's data interval; None for a run triggered without a logical date (Sync Now)."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        return None
    return start, end


class ExtractFolderMailOperator(EmailSyncOperator):
    """Stage the window's mail from the job's Exchange folders (metadata of attachments only)."""

    step = "extract"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.steps import extract

        return extract(ctx, self.mail_source(ctx), self.state_store(), _interval(context), datetime.now(UTC))


class FilterByModeOperator(EmailSyncOperator):
    """Mode, designation, exclusions, internal-only and replies: every rule without Salesforce."""

    step = "filter"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.steps import filter_mail

        return filter_mail(ctx, self.state_store(), datetime.now(UTC))


class MatchRecipientsOperator(EmailSyncOperator):
    """Batched SOQL lookups of the candidates' participants; builds the Tasks."""

    step = "match"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.steps import match

        return match(ctx, self.crm(ctx), self.state_store())


class BulkInsertTasksOperator(EmailSyncOperator):
    """Upsert Tasks (sObject Collections, or Bulk API 2.0 above the threshold) and TaskRelations."""

    step = "insert"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.steps import insert_tasks

        return insert_tasks(ctx, self.crm(ctx), self.state_store())


class UploadAttachmentsOperator(EmailSyncOperator):
    """Attachments of 5 MB or less as Salesforce Files on the Task, one in memory at a time."""

    step = "upload"

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.steps import upload_attachments

        return upload_attachments(ctx, self.mail_source(ctx), self.crm(ctx), self.state_store())


class FinishSyncOperator(EmailSyncOperator):
    """CRM category back to Exchange, run summary, watermark, staged mail deleted."""

    step = "finish"

    def __init__(self, *, upstream_steps: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.upstream_steps = upstream_steps  # step name → task id whose XCom holds its counts

    def run_step(self, ctx: RunContext, context: Any) -> dict[str, Any]:
        from email_sync.steps import finish, format_summary

        ti = context["ti"]
        counts = {step: ti.xcom_pull(task_ids=task_id) or {} for step, task_id in self.upstream_steps.items()}
        summary = finish(ctx, self.mail_source(ctx), self.state_store(), counts)
        self.log.info("\n%s", format_summary(ctx.job_id, summary))
        return summary
