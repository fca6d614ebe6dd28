"""The sync's one error catalogue: what went wrong, and whether trying again can help.

Every adapter (mail sources, the CRM, the state store) translates its own library's errors
into these at its edge, so the pipeline and the Airflow operators never import a client
library to decide what to do: a :class:`PermanentError` fails the run at once, without
Airflow retries and with nothing marked done; anything else is retried (the task's retries,
with backoff). Messages name the job's system and what to fix, never a secret or mail content.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base of every error the sync raises on purpose."""


class TransientError(SyncError):
    """Trying again later may succeed (throttling, a server or network failure)."""


class PermanentError(SyncError):
    """Trying again cannot help until a person changes something; the message says what."""


class AuthenticationFailed(PermanentError):
    """A system refused the credentials of its Connection (wrong, expired or revoked)."""


class SetupProblem(PermanentError):
    """The org or the job is not set up for the sync: a missing external-id field, an unknown
    Salesforce user or folder, a value Salesforce's picklist does not have."""


class BudgetExhausted(PermanentError):
    """Salesforce's daily API allowance, less the policy's reserve, does not cover the work."""


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying ``exc`` cannot help (the one question the operators ask)."""
    return isinstance(exc, PermanentError)
