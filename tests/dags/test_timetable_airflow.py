"""SyncWindowTimetable through Airflow itself: plugin registration, DAG serialization, the
scheduler's next-run code, manual triggers, and ``airflow backfill create`` on the metadata DB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pendulum
import pytest
from hypothesis import given, settings, strategies as st

from email_sync.rules.schedule import SyncWindow

pytestmark = [
    pytest.mark.airflow,
    # Airflow's own .airflowignore matching uses a pathspec API that warns; not ours to fix.
    pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"),
]

UTC = timezone.utc
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PLUGINS = PROJECT_ROOT / "plugins"
DAG_PREFIX = "test_sync_window_tt_"
ZONES = ["Europe/Berlin", "America/New_York", "America/Sao_Paulo", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"]


def make_timetable(**overrides):
    from timetables.sync_window import SyncWindowTimetable

    settings_ = {
        "frequency_minutes": 45,
        "days": [0, 1, 2, 3, 4],
        "start": "08:00",
        "end": "18:00",
        "timezone": "Europe/Berlin",
        "lookback_days": 3,
    }
    return SyncWindowTimetable(**{**settings_, **overrides})


def make_dag(dag_id: str, timetable, start_date: datetime | None = None):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=timetable, start_date=start_date, catchup=False) as dag:
        EmptyOperator(task_id="sync")
    return dag


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Pin the timetable's idea of "now"."""
    import timetables.sync_window as module

    def set_now(moment: datetime) -> None:
        monkeypatch.setattr(module, "_utcnow", lambda: moment)

    return set_now


# -- no database -------------------------------------------------------------------------


def test_validate_raises_airflow_timetable_invalid() -> None:
    from airflow.exceptions import AirflowTimetableInvalid

    timetable = make_timetable(start="18:00", end="08:00")  # the constructor accepts it ...
    with pytest.raises(AirflowTimetableInvalid, match="start 18:00 must be before end 08:00"):
        timetable.validate()  # ... validation (when the DAG is bagged) names the problem
    with pytest.raises(AirflowTimetableInvalid, match="across midnight"):
        make_dag(DAG_PREFIX + "invalid", timetable).validate()
    with pytest.raises(AirflowTimetableInvalid) as err:
        make_timetable(frequency_minutes=10, timezone="Nowhere/City", lookback_days=45).validate()
    for field in ("frequency", "time zone", "lookback days"):
        assert field in str(err.value)
    assert "invalid sync schedule" in make_timetable(start="18:00", end="08:00").summary
    make_timetable().validate()


def test_summary_and_description_for_the_ui() -> None:
    timetable = make_timetable()
    assert timetable.summary == "every 45 min, Mon–Fri 08:00–18:00 Europe/Berlin"
    assert "reaches back 3 day(s)" in timetable.description
    assert timetable.type_name == "timetables.sync_window.SyncWindowTimetable"


def test_the_plugin_registers_the_class_dags_use() -> None:
    from airflow import plugins_manager
    from airflow._shared.module_loading import find_path_from_directory
    from timetables.sync_window import SyncWindowTimetable

    registered = plugins_manager.get_timetables_plugins()
    assert registered["timetables.sync_window.SyncWindowTimetable"] is SyncWindowTimetable
    assert [p.name for p in plugins_manager._get_plugins()[0] if p.name == "email_sync"] == ["email_sync"]

    # .airflowignore keeps the loader away from the packages, so no second copy of any class
    # exists under a bare module name such as "sync_window".
    loaded = {Path(p).relative_to(PLUGINS).as_posix() for p in find_path_from_directory(PLUGINS, ".airflowignore", "glob")}
    assert "email_sync_plugin.py" in loaded
    assert not [p for p in loaded if p.split("/")[0] in {"timetables", "operators", "hooks"}], loaded
    assert "sync_window" not in sys.modules


def test_dag_serialization_round_trip() -> None:
    from airflow.serialization.serialized_objects import DagSerialization
    from timetables.sync_window import SyncWindowTimetable

    timetable = make_timetable(lookback_days=10)
    dag = make_dag(DAG_PREFIX + "serialize", timetable, start_date=pendulum.datetime(2026, 3, 2, 9, 30))
    data = json.loads(json.dumps(DagSerialization.to_dict(dag)))
    encoded = data["dag"]["timetable"]
    assert encoded["__type"] == "timetables.sync_window.SyncWindowTimetable"
    assert encoded["__var"]["days"] == [0, 1, 2, 3, 4] and encoded["__var"]["end"] == "18:00"

    restored = DagSerialization.from_dict(data)
    assert type(restored.timetable) is SyncWindowTimetable
    assert restored.timetable == timetable
    assert restored.timetable.lookback_days == 10
    assert restored.timetable.summary == timetable.summary


@settings(max_examples=25, deadline=None)
@given(
    frequency=st.integers(30, 1440),
    days=st.frozensets(st.integers(0, 6), min_size=1),
    start=st.integers(0, 1439),
    length=st.integers(1, 1440),
    zone=st.sampled_from(ZONES),
    lookback=st.integers(1, 30),
)
def test_timetable_serialize_round_trip_property(frequency, days, start, length, zone, lookback) -> None:
    from timetables.sync_window import SyncWindowTimetable

    end = min(start + length, 1440)
    timetable = make_timetable(
        frequency_minutes=frequency, days=sorted(days), start=f"{start // 60:02d}:{start % 60:02d}",
        end=f"{end // 60:02d}:{end % 60:02d}", timezone=zone, lookback_days=lookback,
    )
    timetable.validate()
    again = SyncWindowTimetable.deserialize(json.loads(json.dumps(timetable.serialize())))
    assert again == timetable and again.summary == timetable.summary
    assert again.window == timetable.window and again.lookback_days == lookback


def test_infer_manual_data_interval() -> None:
    timetable = make_timetable()
    interval = timetable.infer_manual_data_interval(run_after=pendulum.datetime(2026, 3, 30, 9, 10))
    assert (interval.start, interval.end) == (pendulum.datetime(2026, 3, 30, 9, 0), pendulum.datetime(2026, 3, 30, 9, 10))
    assert isinstance(interval.start, pendulum.DateTime)


def test_backfill_iteration_over_a_year(clock) -> None:
    """SerializedDAG.iter_dagrun_infos_between — the code `airflow backfill create` uses, which
    swallows timetable exceptions — yields every interval of a year; none is lost."""
    from airflow.serialization.serialized_objects import DagSerialization

    start_date = pendulum.datetime(2026, 1, 1)
    latest = start_date + timedelta(days=365)
    clock(start_date + timedelta(days=1))  # the backfill cap (now − 3 days) is before start_date
    timetable = make_timetable(
        frequency_minutes=90, days=[0, 2, 4, 6], start="00:30", end="21:00", timezone="Australia/Lord_Howe"
    )
    dag = DagSerialization.from_dict(DagSerialization.to_dict(make_dag(DAG_PREFIX + "year", timetable, start_date)))
    infos = list(dag.iter_dagrun_infos_between(start_date, latest))

    window: SyncWindow = timetable.window
    starts = list(window.iter_runs(start_date - timedelta(microseconds=1), latest))
    assert len(starts) > 1500
    assert [i.data_interval.start for i in infos] == starts
    assert [i.data_interval.end for i in infos] == [window.next_run_after(s) for s in starts]
    assert all(i.run_after == i.data_interval.end and i.logical_date == i.data_interval.start for i in infos)
    assert all(isinstance(i.run_after, pendulum.DateTime) for i in infos)


@settings(max_examples=8, deadline=None)
@given(
    frequency=st.integers(30, 1440),
    days=st.frozensets(st.integers(0, 6), min_size=1),
    start=st.integers(0, 1439),
    length=st.integers(1, 1440),
    zone=st.sampled_from(ZONES),
    year=st.integers(2018, 2030),
)
def test_timetable_catchup_over_a_year_property(frequency, days, start, length, zone, year) -> None:
    """The timetable's next_dagrun_info with catchup=True, chained like a backfill over a year:
    every interval, contiguous, strictly increasing, each ending at a window run time."""
    import timetables.sync_window as module
    from airflow.timetables.base import TimeRestriction

    end = min(start + length, 1440)
    timetable = make_timetable(
        frequency_minutes=frequency, days=sorted(days), start=f"{start // 60:02d}:{start % 60:02d}",
        end=f"{end // 60:02d}:{end % 60:02d}", timezone=zone, lookback_days=30,
    )
    earliest, latest = pendulum.datetime(year, 1, 1), pendulum.datetime(year, 12, 31)
    original = module._utcnow
    module._utcnow = lambda: earliest + timedelta(days=1)
    try:
        restriction = TimeRestriction(earliest, latest, True)
        infos = []
        info = None
        while (info := timetable.next_dagrun_info_v2(last_dagrun_info=info, restriction=restriction)) is not None:
            infos.append(info)
    finally:
        module._utcnow = original
    window = timetable.window
    starts = list(window.iter_runs(earliest - timedelta(microseconds=1), latest))
    assert [i.data_interval.start for i in infos] == starts
    for before, after in zip(infos, infos[1:]):
        assert before.data_interval.end == after.data_interval.start
        assert before.run_after < after.run_after
    assert all(window.is_run_time(i.data_interval.end) for i in infos)


# -- with the metadata database -------------------------------------------------------------


@pytest.fixture(scope="module")
def register(airflow_db: Path) -> Iterator[Callable]:
    """Write DAGs to the metadata DB the way the DAG processor does; delete them afterwards."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    dag_ids: list[str] = []

    def _register(dag) -> None:
        with create_session() as session:
            update_dag_parsing_results_in_db(
                "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
            )
        dag_ids.append(dag.dag_id)

    yield _register

    from airflow.api.common.delete_dag import delete_dag

    for dag_id in dag_ids:
        delete_dag(dag_id, keep_records_in_log=False)


def dag_runs(dag_id: str) -> list:
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after)).all()
        session.expunge_all()
    return list(runs)


def test_scheduler_code_creates_contiguous_runs(register, clock) -> None:
    """The scheduler's own path: DagModel.next_dagrun* after parsing, create the run, then
    DagModel.calculate_dagrun_date_fields(reference_run=run) for the next one."""
    from sqlalchemy import select

    from airflow.models.dag import DagModel, get_run_data_interval
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    dag_id = DAG_PREFIX + "scheduler"
    enabled_at = pendulum.datetime(2026, 3, 27, 15, 20)  # Friday 16:20 CET
    now = enabled_at + timedelta(seconds=30)
    clock(now)
    timetable = make_timetable(lookback_days=3)
    register(make_dag(dag_id, timetable, start_date=enabled_at))
    window = timetable.window

    created = []
    with create_session() as session:
        dag_model = session.scalar(select(DagModel).where(DagModel.dag_id == dag_id))
        serdag = SerializedDagModel.get_dag(dag_id, session=session)
        assert dag_model.timetable_summary == "every 45 min, Mon–Fri 08:00–18:00 Europe/Berlin"
        for _ in range(6):
            info = serdag.timetable.next_run_info_from_dag_model(dag_model=dag_model)
            assert info is not None and info.run_after >= now
            now = info.run_after + timedelta(seconds=5)
            clock(now)
            run = serdag.create_dagrun(
                run_id=serdag.timetable.generate_run_id(
                    run_type=DagRunType.SCHEDULED, run_after=info.run_after, data_interval=info.data_interval
                ),
                logical_date=info.logical_date,
                data_interval=info.data_interval,
                run_after=info.run_after,
                run_type=DagRunType.SCHEDULED,
                triggered_by=DagRunTriggeredByType.TIMETABLE,
                state=DagRunState.QUEUED,
                session=session,
            )
            session.flush()
            created.append(get_run_data_interval(serdag.timetable, run))
            dag_model.calculate_dagrun_date_fields(serdag, reference_run=run)

    # The enable run reaches back the lookback from the enable time, then the window's runs:
    # Fri 16:50, 17:35, (18:00 is not on the 45-min grid) Mon 08:00 (covering the weekend), …
    assert (created[0].start, created[0].end) == (enabled_at - timedelta(days=3), enabled_at + timedelta(seconds=30))
    expected_ends = list(window.iter_runs(created[0].end, created[-1].end))
    assert [i.end for i in created[1:]] == expected_ends
    assert expected_ends[2] == pendulum.datetime(2026, 3, 30, 6, 0)  # Monday 08:00 CEST
    for before, after in zip(created, created[1:]):
        assert before.end == after.start


def test_manual_runs(register) -> None:
    """Sync Now without a logical date gets no data interval (task code uses manual_window);
    with a logical date, Airflow asks infer_manual_data_interval."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    dag_id = DAG_PREFIX + "manual"
    enabled_at = pendulum.now("UTC").subtract(days=2)
    timetable = make_timetable()
    register(make_dag(dag_id, timetable, start_date=enabled_at))

    run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.TEST, run_id="sync_now")
    assert run is not None and run.logical_date is None
    assert run.data_interval_start is None and run.data_interval_end is None

    run_after = pendulum.now("UTC").replace(microsecond=0)
    run = trigger_dag(
        dag_id, triggered_by=DagRunTriggeredByType.TEST, run_id="with_date",
        logical_date=run_after, run_after=run_after,
    )
    assert run is not None
    assert run.data_interval_end == run_after
    assert run.data_interval_start == timetable.window.previous_run_before(run_after)


def _backfill_window(days: frozenset[int] = frozenset({0, 1, 2, 3, 4})) -> SyncWindow:
    """A window whose run times stay ≥ 15 minutes away from the current minute, so the
    expected runs cannot change while the backfill runs."""
    minute = (datetime.now(UTC).minute + 15) % 30
    return SyncWindow(90, days, f"06:{minute:02d}", f"20:{minute:02d}", "Europe/Berlin")


def test_backfill_create_over_3_days(register) -> None:
    """`airflow backfill create` (the CLI, in a fresh process) creates exactly the window's
    intervals of the last 3 days; a second backfill over the same range duplicates nothing."""
    from sqlalchemy import update

    from airflow.models.backfill import Backfill
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType

    dag_id = DAG_PREFIX + "backfill"
    window = _backfill_window()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    enabled_at = now - timedelta(days=10)
    timetable = make_timetable(**window.to_dict(), lookback_days=5)
    register(make_dag(dag_id, timetable, start_date=enabled_at))
    from_date, to_date = now - timedelta(days=3), now

    def backfill() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "airflow", "backfill", "create", "--dag-id", dag_id,
             "--from-date", from_date.isoformat(), "--to-date", to_date.isoformat()],
            env=os.environ.copy(), capture_output=True, text=True, timeout=300,
        )

    result = backfill()
    assert result.returncode == 0, result.stdout + result.stderr
    done = datetime.now(UTC)

    runs = [r for r in dag_runs(dag_id) if r.run_type == DagRunType.BACKFILL_JOB]
    starts = list(window.iter_runs(from_date - timedelta(microseconds=1), to_date))
    expected = [(s, window.next_run_after(s)) for s in starts if window.next_run_after(s) < done]
    assert len(expected) >= 5
    assert [(r.data_interval_start, r.data_interval_end) for r in runs] == expected
    assert [r.logical_date for r in runs] == [s for s, _ in expected]
    assert [r.run_after for r in runs] == [e for _, e in expected]

    # The first backfill is still "running" (no scheduler here); finish it, then backfill again.
    with create_session() as session:
        session.execute(update(Backfill).where(Backfill.dag_id == dag_id).values(completed_at=done))
    result = backfill()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len([r for r in dag_runs(dag_id) if r.run_type == DagRunType.BACKFILL_JOB]) == len(expected)


def test_backfill_is_capped_at_the_lookback(register) -> None:
    """Backfills never reach before now − lookback_days."""
    from airflow.models.backfill import NoBackfillRunsToCreate, ReprocessBehavior, _create_backfill

    dag_id = DAG_PREFIX + "capped"
    window = _backfill_window(frozenset(range(7)))
    now = datetime.now(UTC)
    timetable = make_timetable(**window.to_dict(), lookback_days=2)
    register(make_dag(dag_id, timetable, start_date=now - timedelta(days=40)))

    def create(from_date: datetime, to_date: datetime):
        return _create_backfill(
            dag_id=dag_id, from_date=from_date, to_date=to_date, max_active_runs=4, reverse=False,
            dag_run_conf=None, triggering_user_name="test", reprocess_behavior=ReprocessBehavior.NONE,
        )

    with pytest.raises(NoBackfillRunsToCreate):
        create(now - timedelta(days=20), now - timedelta(days=10))  # entirely before the cap
    create(now - timedelta(days=20), now)
    runs = dag_runs(dag_id)
    assert runs
    assert runs[0].data_interval_start == window.next_run_at_or_after(now - timedelta(days=2))
    assert all(r.data_interval_start >= now - timedelta(days=2) for r in runs)
    for before, after in zip(runs, runs[1:]):
        assert before.data_interval_end == after.data_interval_start
