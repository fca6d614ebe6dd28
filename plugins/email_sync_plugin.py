"""The email sync's Airflow plugin: registers the ``SyncWindowTimetable``.

This is the only module Airflow's plugin loader imports from ``plugins/`` (see
``plugins/.airflowignore``); the timetable is imported under its package name, which is the
name DAG files use, so serialization finds the same class that the DAG carries.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from timetables.sync_window import SyncWindowTimetable


class EmailSyncPlugin(AirflowPlugin):
    name = "email_sync"
    timetables = [SyncWindowTimetable]
