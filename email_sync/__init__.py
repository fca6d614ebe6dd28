"""Pure sync rules: no Airflow, no network. See docs/ARCHITECTURE.md."""
