"""The email sync's operators: thin Airflow shells over ``email_sync.steps``."""
