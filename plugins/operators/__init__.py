"""The email sync's operators: thin Airflow shells over the steps of ``email_sync.pipeline``."""
