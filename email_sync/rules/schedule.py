"""Sync schedule math: when a job's runs happen and which mail each run covers.

Pure Python (stdlib ``zoneinfo``), no Airflow import. The Airflow timetable
(``plugins/timetables/sync_window.py``) is a thin shell over this module; the rules are
documented in ``docs/SCHEDULE.md``. In short:

* **Run times** are ``window start + k × frequency`` in the wall-clock time of the user's
  zone, for every k with ``start + k × frequency <= end`` (the window end is *inclusive*:
  08:00–18:00 every 30 min runs at 08:00, 08:30, …, 18:00), on the window's days of week. A
  window may end at ``24:00``; that run happens at 00:00 of the next day and belongs to the
  day before (a 24:00 run and the next day's 00:00 run are one run).
* **Data intervals** are ``(previous run, this run]``: the first run of a day covers
  everything since the last run of the previous window day (nights, weekends and disabled
  days included), so consecutive intervals are contiguous, never overlap and leave no gap.
* **DST**: a wall time that does not exist (spring forward) runs at the first valid instant
  after the gap (the transition itself); several run times inside one gap become one run.
  An ambiguous wall time (fall back) runs once, at its first occurrence. Runs are therefore
  strictly increasing instants, and intervals stay contiguous across every transition.

All datetimes in and out are timezone-aware; results are in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt_timezone.utc

MIN_FREQUENCY_MINUTES = 30
"""The most frequent sync allowed (SPEC §1); admins may raise it in the job config."""
MAX_FREQUENCY_MINUTES = 1440
MIN_LOOKBACK_DAYS = 1
MAX_LOOKBACK_DAYS = 30
MAX_REACH_DAYS = 30
"""No run, first sync, backfill or Sync Now ever reaches further back than this (SPEC §1–§2)."""

DEFAULT_FREQUENCY_MINUTES = 120
DEFAULT_DAYS = frozenset({0, 1, 2, 3, 4})
DEFAULT_START = "00:00"
DEFAULT_END = "24:00"

END_OF_DAY = "24:00"
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_ALIASES = {
    **{name.lower(): i for i, name in enumerate(DAY_NAMES)},
    **{
        name: i
        for i, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}
_MINUTES_PER_DAY = 1440
_TIME_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


class InvalidSyncWindow(ValueError):
    """The schedule settings are invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# -- parsing helpers ------------------------------------------------------------------


def parse_time_of_day(value: time | str) -> int:
    """Minutes since local midnight for ``time`` or ``"HH:MM"``; ``"24:00"`` gives 1440."""
    if isinstance(value, time):
        if value.second or value.microsecond or value.tzinfo is not None:
            raise ValueError(f"time of day must be a whole minute without time zone, got {value!r}")
        return value.hour * 60 + value.minute
    if isinstance(value, str):
        match = _TIME_RE.match(value)
        if match:
            hours, minutes = int(match.group(1)), int(match.group(2))
            if (hours, minutes) == (24, 0):
                return _MINUTES_PER_DAY
            if hours < 24 and minutes < 60:
                return hours * 60 + minutes
    raise ValueError(f"time of day must be HH:MM between 00:00 and 24:00, got {value!r}")


def format_time_of_day(minutes: int) -> str:
    """``"HH:MM"`` for minutes since midnight (1440 gives ``"24:00"``)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_day(value: int | str) -> int:
    """Day of week as 0=Mon … 6=Sun from an int or a name (``"Mon"``, ``"monday"``)."""
    if isinstance(value, bool):
        raise ValueError(f"day of week must be 0 (Mon) to 6 (Sun) or a day name, got {value!r}")
    if isinstance(value, int) and 0 <= value <= 6:
        return value
    if isinstance(value, str) and value.strip().lower() in _DAY_ALIASES:
        return _DAY_ALIASES[value.strip().lower()]
    raise ValueError(f"day of week must be 0 (Mon) to 6 (Sun) or a day name, got {value!r}")


def format_days(days: Iterable[int]) -> str:
    """``"Mon–Fri"``, ``"Mon, Wed, Fri"``, ``"Mon–Wed, Sat, Sun"``, ``"daily"``."""
    ordered = sorted(set(days))
    if len(ordered) == 7:
        return "daily"
    groups: list[list[int]] = []
    for day in ordered:
        if groups and groups[-1][-1] == day - 1:
            groups[-1].append(day)
        else:
            groups.append([day])
    parts: list[str] = []
    for group in groups:
        if len(group) >= 3:
            parts.append(f"{DAY_NAMES[group[0]]}–{DAY_NAMES[group[-1]]}")
        else:
            parts.extend(DAY_NAMES[d] for d in group)
    return ", ".join(parts)


def format_frequency(minutes: int) -> str:
    """``"30 min"``, ``"90 min"``, ``"2 h"``."""
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raises ``ValueError`` with a clear message when unknown."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"time zone must be an IANA name such as 'Europe/Berlin', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name such as 'Europe/Berlin')") from exc


def window_problems(
    *,
    frequency_minutes: object,
    days: object,
    start: object,
    end: object,
    timezone: object,
    lookback_days: object = None,
) -> list[str]:
    """Every problem with these schedule settings, as messages naming the field ([] = valid).

    The job-config validator and the timetable's ``validate`` both use these messages.
    """
    problems: list[str] = []
    if isinstance(frequency_minutes, bool) or not isinstance(frequency_minutes, int):
        problems.append(f"frequency: must be a whole number of minutes, got {frequency_minutes!r}")
    elif frequency_minutes < MIN_FREQUENCY_MINUTES:
        problems.append(
            f"frequency: {frequency_minutes} min is more frequent than the minimum of "
            f"{MIN_FREQUENCY_MINUTES} min"
        )
    elif frequency_minutes > MAX_FREQUENCY_MINUTES:
        problems.append(
            f"frequency: {frequency_minutes} min is more than {MAX_FREQUENCY_MINUTES} min (once a day)"
        )

    if isinstance(days, (str, bytes)) or not isinstance(days, Iterable):
        problems.append(f"window days: must be a list of days of week, got {days!r}")
    else:
        parsed_days = []
        for day in days:
            try:
                parsed_days.append(parse_day(day))
            except ValueError as exc:
                problems.append(f"window days: {exc}")
        if not parsed_days and not any(p.startswith("window days") for p in problems):
            problems.append("window days: at least one day of week is required")

    start_min = end_min = None
    try:
        start_min = parse_time_of_day(start)  # type: ignore[arg-type]
        if start_min == _MINUTES_PER_DAY:
            problems.append("window start: 24:00 is only allowed as the window end")
            start_min = None
    except ValueError as exc:
        problems.append(f"window start: {exc}")
    try:
        end_min = parse_time_of_day(end)  # type: ignore[arg-type]
    except ValueError as exc:
        problems.append(f"window end: {exc}")
    if start_min is not None and end_min is not None and start_min >= end_min:
        problems.append(
            f"window: start {format_time_of_day(start_min)} must be before end "
            f"{format_time_of_day(end_min)}; windows across midnight are not supported "
            "(use an end of 24:00 and add the next day to the window days)"
        )

    try:
        load_zone(timezone)  # type: ignore[arg-type]
    except ValueError as exc:
        problems.append(f"time zone: {exc}")

    if lookback_days is not None:
        if (
            isinstance(lookback_days, bool)
            or not isinstance(lookback_days, int)
            or not MIN_LOOKBACK_DAYS <= lookback_days <= MAX_LOOKBACK_DAYS
        ):
            problems.append(
                f"lookback days: must be a whole number from {MIN_LOOKBACK_DAYS} to "
                f"{MAX_LOOKBACK_DAYS}, got {lookback_days!r}"
            )
    return problems


def as_utc(moment: datetime) -> datetime:
    """``moment`` as a plain stdlib ``datetime`` in UTC; rejects naive datetimes."""
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"an aware datetime is required, got {moment!r}")
    d = moment.astimezone(UTC)
    return datetime(d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond, tzinfo=UTC)


# -- the window -----------------------------------------------------------------------


@dataclass(frozen=True)
class SyncWindow:
    """When a job syncs: every ``frequency_minutes`` from ``start`` to ``end`` (inclusive) on
    ``days`` (0=Mon … 6=Sun), in the wall-clock time of ``timezone``.

    ``start``/``end`` take ``datetime.time`` or ``"HH:MM"``; ``end`` may be ``"24:00"``.
    Construction raises :class:`InvalidSyncWindow` (a ``ValueError``) listing every problem.
    """

    frequency_minutes: int = DEFAULT_FREQUENCY_MINUTES
    days: frozenset[int] = DEFAULT_DAYS
    start: time | str = DEFAULT_START
    end: time | str = DEFAULT_END
    timezone: str = "UTC"
    _start_min: int = field(init=False, repr=False, compare=False)
    _end_min: int = field(init=False, repr=False, compare=False)
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)
    _cache: dict[date, tuple[datetime, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = window_problems(
            frequency_minutes=self.frequency_minutes,
            days=self.days,
            start=self.start,
            end=self.end,
            timezone=self.timezone,
        )
        if problems:
            raise InvalidSyncWindow(problems)
        start_min, end_min = parse_time_of_day(self.start), parse_time_of_day(self.end)
        # Normalise: days as a frozenset of ints, start/end as time / "24:00".
        object.__setattr__(self, "days", frozenset(parse_day(d) for d in self.days))
        object.__setattr__(self, "start", time(start_min // 60, start_min % 60))
        object.__setattr__(
            self, "end", END_OF_DAY if end_min == _MINUTES_PER_DAY else time(end_min // 60, end_min % 60)
        )
        object.__setattr__(self, "_start_min", start_min)
        object.__setattr__(self, "_end_min", end_min)
        object.__setattr__(self, "_tz", load_zone(self.timezone))
        object.__setattr__(self, "_cache", {})

    # -- text -------------------------------------------------------------------------
    @property
    def start_text(self) -> str:
        return format_time_of_day(self._start_min)

    @property
    def end_text(self) -> str:
        return format_time_of_day(self._end_min)

    @property
    def summary(self) -> str:
        """E.g. ``"every 45 min, Mon–Fri 08:00–18:00 Europe/Berlin"``."""
        return (
            f"every {format_frequency(self.frequency_minutes)}, {format_days(self.days)} "
            f"{self.start_text}–{self.end_text} {self.timezone}"
        )

    @property
    def description(self) -> str:
        last = self._start_min + (self._end_min - self._start_min) // self.frequency_minutes * self.frequency_minutes
        days = "every day" if len(self.days) == 7 else f"on {format_days(self.days)}"
        return (
            f"Syncs every {self.frequency_minutes} minutes from {self.start_text} to {self.end_text} "
            f"(first run {self.start_text}, last run {format_time_of_day(last)}) {days}, "
            f"{self.timezone} wall-clock time. Each run covers the mail "
            "received since the previous run, so nights, weekends and DST changes are covered by "
            "the next run."
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready settings; ``SyncWindow(**to_dict())`` rebuilds an equal window."""
        return {
            "frequency_minutes": self.frequency_minutes,
            "days": sorted(self.days),
            "start": self.start_text,
            "end": self.end_text,
            "timezone": self.timezone,
        }

    # -- run times --------------------------------------------------------------------
    @property
    def zone(self) -> ZoneInfo:
        return self._tz

    def _wall_to_instant(self, naive: datetime) -> datetime:
        """The UTC instant of a local wall time: first occurrence when ambiguous, the end of
        the gap (the transition instant) when it does not exist."""
        tz = self._tz
        first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if first.astimezone(tz).replace(tzinfo=None) == naive:
            return first
        # Nonexistent (spring forward): fold=1 maps with the offset after the transition,
        # which lands before it; fold=0 with the offset before, which lands after it. The
        # transition instant lies in between: find it to the second.
        low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
        high = first
        if low > high:  # defensive: never seen for a gap, but keep the search well-formed
            low, high = high, low
        after_offset = high.astimezone(tz).utcoffset()
        while (high - low) > timedelta(seconds=1):
            mid = low + (high - low) / 2
            mid = mid.replace(microsecond=0)
            if mid <= low:
                break
            if mid.astimezone(tz).utcoffset() == after_offset:
                high = mid
            else:
                low = mid
        return high

    def _day_runs(self, day: date) -> tuple[datetime, ...]:
        """The run instants (UTC, strictly increasing) of window day ``day``; () off-days."""
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        runs: list[datetime] = []
        if day.weekday() in self.days:
            midnight = datetime(day.year, day.month, day.day)
            minute = self._start_min
            while minute <= self._end_min:
                instant = self._wall_to_instant(midnight + timedelta(minutes=minute))
                if not runs or instant > runs[-1]:
                    runs.append(instant)
                minute += self.frequency_minutes
        result = tuple(runs)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[day] = result
        return result

    def _local_date(self, moment: datetime) -> date:
        return moment.astimezone(self._tz).date()

    def iter_runs(self, after: datetime, until: datetime | None = None) -> Iterator[datetime]:
        """Run instants ``r`` with ``after < r`` (and ``r <= until``), strictly increasing."""
        after_utc = as_utc(after)
        until_utc = as_utc(until) if until is not None else None
        day = self._local_date(after_utc) - timedelta(days=1)
        last: datetime | None = None
        while True:
            for run in self._day_runs(day):
                if run <= after_utc or (last is not None and run <= last):
                    continue
                if until_utc is not None and run > until_utc:
                    return
                yield run
                last = run
            day += timedelta(days=1)

    def next_run_after(self, after: datetime) -> datetime:
        """The first run strictly after ``after``."""
        return next(self.iter_runs(after))

    def next_run_at_or_after(self, moment: datetime) -> datetime:
        """``moment`` itself when it is a run time, else the first run after it."""
        moment_utc = as_utc(moment)
        if self.is_run_time(moment_utc):
            return moment_utc
        return self.next_run_after(moment_utc)

    def _previous_run(self, moment: datetime, *, strict: bool) -> datetime:
        moment_utc = as_utc(moment)
        day = self._local_date(moment_utc) + timedelta(days=1)
        for _ in range(10):  # at most 7 days back to the previous window day, plus edges
            runs = self._day_runs(day)
            for run in reversed(runs):
                if run < moment_utc or (not strict and run == moment_utc):
                    return run
            day -= timedelta(days=1)
        raise AssertionError("no run within 10 days; the window has no day")  # pragma: no cover

    def previous_run_at_or_before(self, moment: datetime) -> datetime:
        """The last run at or before ``moment``."""
        return self._previous_run(moment, strict=False)

    def previous_run_before(self, moment: datetime) -> datetime:
        """The last run strictly before ``moment``."""
        return self._previous_run(moment, strict=True)

    def is_run_time(self, moment: datetime) -> bool:
        moment_utc = as_utc(moment)
        return self.previous_run_at_or_before(moment_utc) == moment_utc


# -- scheduling policy (what the timetable returns) ------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One run to create: it starts at ``end`` (``run_after``) and covers ``(start, end]``."""

    start: datetime
    end: datetime

    @property
    def run_after(self) -> datetime:
        return self.end


def plan_next_run(
    window: SyncWindow,
    *,
    last_end: datetime | None,
    earliest: datetime | None,
    latest: datetime | None,
    catchup: bool,
    now: datetime,
    lookback_days: int,
) -> PlannedRun | None:
    """The next run after an automated run that ended at ``last_end`` (None: no run yet).

    ``earliest``/``latest``/``catchup`` are Airflow's ``TimeRestriction`` (DAG start/end date,
    catchup). Rules (docs/SCHEDULE.md):

    * ``catchup=False`` (the scheduler for our DAGs):
        - *enable run*: when there is no run yet, or the job was (re-)enabled after the last
          run (``earliest``, the DAG's start date, is later than ``last_end``): one run right
          away (at ``max(earliest, now)``) covering ``(earliest − lookback, run]``, never
          reaching before the previous run's end nor more than 30 days back.
        - otherwise the next run time after ``last_end``; if that has already passed (the
          scheduler was down), the latest run time that has passed, covering the whole gap
          (never more than 30 days back) — one run, no pile of missed runs.
    * ``catchup=True`` (``airflow backfill create``, or a DAG with catchup): the regular
      intervals whose start is at or after ``max(earliest, now − lookback_days)``; nothing
      before that floor is ever returned (the backfill cap), so a range entirely before it
      yields no run at all.

    Returns None when the next interval starts after ``latest``.
    """
    now_utc = as_utc(now)
    lookback = timedelta(days=lookback_days)
    reach = timedelta(days=MAX_REACH_DAYS)
    last = as_utc(last_end) if last_end is not None else None
    earliest_utc = as_utc(earliest) if earliest is not None else None

    if catchup:
        cap_days = min(lookback_days, MAX_REACH_DAYS)
        floor = now_utc - timedelta(days=cap_days)
        low = floor if earliest_utc is None else max(earliest_utc, floor)
        start = window.next_run_at_or_after(low) if last is None or last < low else last
        end = window.next_run_after(start)
    else:
        anchor = earliest_utc
        if anchor is None and last is None:
            anchor = now_utc
        if anchor is not None and (last is None or anchor > last):
            end = max(anchor, now_utc.replace(microsecond=0))
            start = max(anchor - lookback, end - reach)
            if last is not None:
                start = max(start, last)
        else:
            assert last is not None
            following = window.next_run_after(last)
            end = window.previous_run_at_or_before(now_utc) if following <= now_utc else following
            start = max(last, end - reach)

    if latest is not None and start > as_utc(latest):
        return None
    return PlannedRun(start=start, end=end)


def manual_interval(window: SyncWindow, run_after: datetime) -> tuple[datetime, datetime]:
    """Data interval of a manual run that Airflow asks the timetable for (a trigger *with* a
    logical date): ``(last run time before run_after, run_after]`` — the mail since the last
    scheduled run."""
    end = as_utc(run_after)
    return window.previous_run_before(end), end


def manual_window(
    last_successful_end: datetime | None,
    now: datetime,
    lookback_days: int,
    max_days: int = MAX_REACH_DAYS,
) -> tuple[datetime, datetime]:
    """The window ``(start, now]`` of a run without a data interval (Sync Now).

    ``start`` is the end of the last successful sync (the state store's watermark), or
    ``now − lookback_days`` when the job never synced; never more than ``max_days`` back and
    never after ``now``.
    """
    now_utc = as_utc(now)
    if last_successful_end is not None:
        start = as_utc(last_successful_end)
    else:
        start = now_utc - timedelta(days=lookback_days)
    start = max(start, now_utc - timedelta(days=max_days))
    return min(start, now_utc), now_utc


def run_window(
    interval: tuple[datetime, datetime] | None,
    watermark: datetime | None,
    now: datetime,
    lookback_days: int,
    max_days: int = MAX_REACH_DAYS,
) -> tuple[datetime, datetime]:
    """The mail window ``(start, end]`` a run syncs, from its data interval and the watermark.

    * No data interval (Sync Now): :func:`manual_window` — since the last successful sync.
    * A job's first sync (no watermark) reaches ``lookback_days`` before the interval's end,
      whatever interval Airflow gave (SPEC §2: enabling syncs from now − lookback).
    * A scheduled run whose interval starts after the watermark (an earlier run failed or
      was skipped) starts at the watermark instead, so that mail is not lost.
    * A backfill interval older than the watermark is kept as is (the ledger dedupes).

    Never more than ``max_days`` before ``now`` (SPEC: backfill capped at 30 days).
    """
    now_utc = as_utc(now)
    if interval is None:
        return manual_window(watermark, now_utc, lookback_days, max_days)
    start, end = as_utc(interval[0]), as_utc(interval[1])
    if watermark is None:
        start = min(start, end - timedelta(days=lookback_days))
    else:
        start = min(start, as_utc(watermark))
    start = max(start, now_utc - timedelta(days=max_days))
    return min(start, end), end
