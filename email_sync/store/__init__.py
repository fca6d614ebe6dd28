"""The state store adapter: watermarks, folder cursors, the Task ledger, files, outcomes (SQLAlchemy)."""
