"""Pure sync rules: settings, policy, config, classification, matching, SOQL, Task building.

No network, no database, no Airflow: nothing here imports requests, httpx, exchangelib, msal,
simple_salesforce, SQLAlchemy, pyarrow or Airflow (tests/test_layers.py checks it).
"""
