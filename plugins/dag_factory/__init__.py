"""Builds the sync DAGs from job configs (used by ``dags/email_sync_dags.py``)."""
