"""Exchange → Salesforce email sync, in layers (docs/ARCHITECTURE.md).

``rules`` (pure decisions) ← ``sources`` / ``crm`` / ``store`` (adapters, each translating its
library's errors into :mod:`email_sync.errors`) ← ``pipeline`` (the run steps). Airflow lives
only in ``plugins/``.
"""
