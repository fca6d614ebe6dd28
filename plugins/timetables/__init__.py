"""Airflow timetables of the email sync (imported as ``timetables.*``; ``plugins/`` is on sys.path).

Registered with Airflow by ``plugins/email_sync_plugin.py``. DAG files must import the class
as ``from timetables.sync_window import SyncWindowTimetable`` so that its qualified name
matches the registered one.
"""
