"""The contract every :class:`~email_sync.sources.base.MailSource` must pass (see conftest.py)."""
