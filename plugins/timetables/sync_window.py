"""``SyncWindowTimetable``: a sync job's schedule (frequency + window + zone) as an Airflow timetable.

A thin shell: all schedule math lives in :mod:`email_sync.rules.schedule` (pure Python, no Airflow);
the rules are in ``docs/SCHEDULE.md``. Registered by ``plugins/email_sync_plugin.py``; DAG files
import it as ``from timetables.sync_window import SyncWindowTimetable`` (the registered name).

The DAG generator passes::

    DAG(
        dag_id=...,
        schedule=SyncWindowTimetable(
            frequency_minutes=job.frequency, days=job.days, start="08:00", end="18:00",
            timezone=job.timezone, lookback_days=job.lookback_days,
        ),
        start_date=...,              # the first run reaches back from here
        catchup=False,               # Airflow 3's default; backfills go through `airflow backfill create`
    )
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime, timezone as dt_timezone
from typing import TYPE_CHECKING, Any

import pendulum

from airflow.exceptions import AirflowTimetableInvalid
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable
from email_sync.rules.schedule import (
    DEFAULT_DAYS,
    DEFAULT_END,
    DEFAULT_FREQUENCY_MINUTES,
    DEFAULT_START,
    InvalidSyncWindow,
    SyncWindow,
    format_days,
    format_frequency,
    format_time_of_day,
    manual_interval,
    parse_day,
    parse_time_of_day,
    plan_next_run,
    window_problems,
)

if TYPE_CHECKING:
    from airflow.timetables.base import TimeRestriction


def _utcnow() -> datetime:
    """The current time (tests replace this to pin the clock)."""
    return datetime.now(dt_timezone.utc)


def _to_pendulum(moment: datetime) -> pendulum.DateTime:
    """Airflow wants pendulum ``DateTime`` values in UTC."""
    return pendulum.instance(moment.astimezone(dt_timezone.utc))


class SyncWindowTimetable(Timetable):
    """Runs every ``frequency_minutes`` from ``start`` to ``end`` (inclusive) on ``days`` in
    ``timezone``; each run's data interval is ``(previous run, this run]``.

    :param frequency_minutes: 30–1440.
    :param days: days of week the runs happen, 0=Mon … 6=Sun (names like ``"Mon"`` accepted).
    :param start: window start, ``"HH:MM"`` (or ``datetime.time``).
    :param end: window end, ``"HH:MM"`` or ``"24:00"``; must be after ``start``.
    :param timezone: IANA zone of the window (the user's zone).
    :param lookback_days: 1–30: how far before the DAG's ``start_date`` (enabling) the first
        sync reaches, and how far back a backfill may reach.

    The constructor accepts anything; :meth:`validate` (called by Airflow when the DAG is
    bagged) raises ``AirflowTimetableInvalid`` naming every invalid setting.
    """

    def __init__(
        self,
        *,
        frequency_minutes: int = DEFAULT_FREQUENCY_MINUTES,
        days: Iterable[int | str] = DEFAULT_DAYS,
        start: str | Any = DEFAULT_START,
        end: str | Any = DEFAULT_END,
        timezone: str = "UTC",
        lookback_days: int = 1,
    ) -> None:
        self.frequency_minutes = frequency_minutes
        self.days = days if isinstance(days, str) else tuple(days)
        self.start = start
        self.end = end
        self.timezone = timezone
        self.lookback_days = lookback_days

    # -- validation -------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every invalid setting, as messages naming the field ([] = valid)."""
        return list(self._problems)

    @functools.cached_property
    def _problems(self) -> tuple[str, ...]:
        # Computed once: Airflow validates the timetable when the DAG is built and again when
        # it is bagged, and the factory shares one timetable between DAGs of equal schedule.
        return tuple(window_problems(
            frequency_minutes=self.frequency_minutes,
            days=self.days,
            start=self.start,
            end=self.end,
            timezone=self.timezone,
            lookback_days=self.lookback_days,
        ))

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise AirflowTimetableInvalid("invalid sync schedule: " + "; ".join(problems))

    @functools.cached_property
    def window(self) -> SyncWindow:
        """The schedule; raises :class:`email_sync.rules.schedule.InvalidSyncWindow` when invalid."""
        problems = self.problems()
        if problems:
            raise InvalidSyncWindow(problems)
        return SyncWindow(
            frequency_minutes=self.frequency_minutes,
            days=frozenset(parse_day(d) for d in self.days),
            start=self.start,
            end=self.end,
            timezone=self.timezone,
        )

    # -- what the UI shows ----------------------------------------------------------------
    @property
    def type_name(self) -> str:
        # Airflow's default derives it with qualname() on every access (≈0.3 ms), and reads
        # it for each DAG while parsing; the answer never changes.
        return _TYPE_NAME

    @functools.cached_property
    def summary(self) -> str:
        # Formatted from the settings without building the SyncWindow: Airflow reads this
        # (isinstance against its Timetable protocol) for every DAG of a large DAG file.
        try:
            days = sorted({parse_day(d) for d in self.days})
            start, end = parse_time_of_day(self.start), parse_time_of_day(self.end)
            if not days or not isinstance(self.frequency_minutes, int) or start >= end:
                raise ValueError
            return (f"every {format_frequency(self.frequency_minutes)}, {format_days(days)} "
                    f"{format_time_of_day(start)}–{format_time_of_day(end)} {self.timezone}")
        except (TypeError, ValueError):
            return f"invalid sync schedule: {'; '.join(self.problems())}"

    @functools.cached_property
    def description(self) -> str:  # type: ignore[override]
        try:
            window = self.window
        except InvalidSyncWindow as exc:
            return f"Invalid sync schedule: {exc}"
        return (
            f"{window.description} The first sync after enabling reaches back "
            f"{self.lookback_days} day(s); backfills reach at most {self.lookback_days} day(s) back."
        )

    # -- serialization ----------------------------------------------------------------
    def serialize(self) -> dict[str, Any]:
        def _time(value: Any) -> Any:
            try:
                return format_time_of_day(parse_time_of_day(value))
            except ValueError:
                return value

        def _days(value: Any) -> Any:
            try:
                return sorted({parse_day(d) for d in value})
            except (TypeError, ValueError):
                return value

        return {
            "frequency_minutes": self.frequency_minutes,
            "days": _days(self.days),
            "start": _time(self.start),
            "end": _time(self.end),
            "timezone": self.timezone,
            "lookback_days": self.lookback_days,
        }

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> SyncWindowTimetable:
        return cls(
            frequency_minutes=data["frequency_minutes"],
            days=data["days"],
            start=data["start"],
            end=data["end"],
            timezone=data["timezone"],
            lookback_days=data["lookback_days"],
        )

    @functools.cached_property
    def _identity(self) -> str:
        """The serialized form as one string, computed once: Airflow hashes a DAG (and so its
        timetable) many times while building it, and a thousand DAGs share one parse."""
        return repr(sorted(self.serialize().items()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SyncWindowTimetable):
            return NotImplemented
        return self._identity == other._identity

    def __hash__(self) -> int:
        return hash(self._identity)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.serialize().items())
        return f"{type(self).__name__}({args})"

    # -- scheduling -------------------------------------------------------------------
    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        plan = plan_next_run(
            self.window,
            last_end=last_automated_data_interval.end if last_automated_data_interval else None,
            earliest=restriction.earliest,
            latest=restriction.latest,
            catchup=restriction.catchup,
            now=_utcnow(),
            lookback_days=self.lookback_days,
        )
        if plan is None:
            return None
        return DagRunInfo.interval(start=_to_pendulum(plan.start), end=_to_pendulum(plan.end))

    def infer_manual_data_interval(self, *, run_after: pendulum.DateTime) -> DataInterval:
        """A manual run *with* a logical date covers the mail since the last run time before it.

        A run triggered *without* a logical date (Sync Now) gets no data interval from
        Airflow 3; task code then uses :func:`email_sync.rules.schedule.manual_window`.
        """
        start, end = manual_interval(self.window, run_after)
        return DataInterval(start=_to_pendulum(start), end=_to_pendulum(end))


_TYPE_NAME = f"{SyncWindowTimetable.__module__}.{SyncWindowTimetable.__qualname__}"
