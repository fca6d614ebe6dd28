"""Airflow hooks of the email sync (imported as ``hooks.*``; plugins/ is on sys.path)."""
