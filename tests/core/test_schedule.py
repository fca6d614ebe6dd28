"""Schedule math (email_sync.rules.schedule): property tests over a year of runs, and worked examples."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from itertools import islice
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from email_sync.rules.schedule import (
    MAX_REACH_DAYS,
    InvalidSyncWindow,
    SyncWindow,
    as_utc,
    format_days,
    manual_interval,
    manual_window,
    plan_next_run,
    window_problems,
)

UTC = timezone.utc
ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",  # DST at midnight until 2019 (00:00 did not exist on spring-forward days)
    "Asia/Kolkata",  # no DST, +05:30
    "Australia/Lord_Howe",  # 30-minute DST shift
    "Pacific/Chatham",  # +12:45 / +13:45, transitions at 02:45 / 03:45
]
MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _in_window(window: SyncWindow, day: date, minute_of_day: int) -> bool:
    """Oracle: whether a local wall time is inside the window (start and end inclusive)."""
    return day.weekday() in window.days and window._start_min <= minute_of_day <= window._end_min


def _interval_for_run(window: SyncWindow, run_at: datetime) -> tuple[datetime, datetime]:
    """The data interval ``(previous run, run_at]`` of a run time (rejects any other instant)."""
    if not window.is_run_time(run_at):
        raise ValueError(f"{run_at.isoformat()} is not a run time of {window.summary}")
    return window.previous_run_before(run_at), as_utc(run_at)


def local(window: SyncWindow, moment: datetime) -> datetime:
    return moment.astimezone(window.zone)


# -- strategies -------------------------------------------------------------------------


@st.composite
def windows(draw: st.DrawFn) -> SyncWindow:
    frequency = draw(st.integers(30, 1440))
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    start = draw(st.integers(0, 1439))
    end = draw(st.integers(start + 1, 1440))
    zone = draw(st.sampled_from(ZONES))
    return SyncWindow(
        frequency_minutes=frequency,
        days=days,
        start=f"{start // 60:02d}:{start % 60:02d}",
        end=f"{end // 60:02d}:{end % 60:02d}",
        timezone=zone,
    )


year_starts = st.builds(
    lambda year, day_of_year, minute: utc(year, 1, 1) + timedelta(days=day_of_year, minutes=minute),
    st.integers(2018, 2030),
    st.integers(0, 364),
    st.integers(0, 1439),
)

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers for the properties ---------------------------------------------------------


def is_transition(window: SyncWindow, moment: datetime) -> bool:
    """Whether the zone's UTC offset changes exactly at ``moment``."""
    return (moment - SECOND).astimezone(window.zone).utcoffset() != moment.astimezone(window.zone).utcoffset()


def grid_positions(window: SyncWindow, run: datetime) -> list[tuple[date, int]]:
    """(window day, grid index) pairs whose nominal wall time is this run's wall time."""
    loc = local(window, run)
    if loc.second or loc.microsecond:
        return []
    start, end = window._start_min, window._end_min
    minute = loc.hour * 60 + loc.minute
    candidates = [(loc.date(), minute)]
    if minute == 0:
        candidates.append((loc.date() - timedelta(days=1), 1440))  # a 24:00 run
    return [
        (day, (m - start) // window.frequency_minutes)
        for day, m in candidates
        if day.weekday() in window.days and start <= m <= end and (m - start) % window.frequency_minutes == 0
    ]


def in_gap_of_window(window: SyncWindow, run: datetime) -> bool:
    """A run at a spring-forward transition stands for window wall times inside the gap."""
    if not is_transition(window, run):
        return False
    before = (run - SECOND).astimezone(window.zone).utcoffset()
    after = run.astimezone(window.zone).utcoffset()
    if after <= before:
        return False
    gap_start = (run + before).replace(tzinfo=None)  # wall clock just before the jump
    gap_end = local(window, run).replace(tzinfo=None)  # wall clock just after it
    wall = gap_start
    while wall < gap_end:
        minute = wall.hour * 60 + wall.minute
        for day, m in ((wall.date(), minute), (wall.date() - timedelta(days=1), minute + 1440)):
            if _in_window(window, day, m) and (m - window._start_min) % window.frequency_minutes == 0:
                return True
        wall += MINUTE
    return False


# -- properties over a full year --------------------------------------------------------


@PROPERTY
@given(window=windows(), begin=year_starts)
def test_a_year_of_runs(window: SyncWindow, begin: datetime) -> None:
    until = begin + timedelta(days=366)
    runs = list(window.iter_runs(begin, until))
    assert runs, "a window with at least one day runs at least once a week"
    assert runs[0] == window.next_run_after(begin)
    assert runs[0] > begin and runs[-1] <= until

    f = timedelta(minutes=window.frequency_minutes)
    previous = window.previous_run_before(runs[0])
    for run in runs:
        # Strictly increasing, and each interval starts where the previous one ended.
        assert run > previous
        assert _interval_for_run(window, run) == (previous, run)
        assert window.next_run_after(previous) == run
        assert window.previous_run_at_or_before(run) == run
        assert window.is_run_time(run)

        # Every run is inside the window (or stands for window times skipped by spring-forward).
        positions = grid_positions(window, run)
        assert positions or in_gap_of_window(window, run), (
            f"{run} ({local(window, run)}) is outside {window.summary}"
        )

        # Within one window day, consecutive runs are consecutive grid points, one frequency
        # apart, unless a DST transition lies between them.
        prev_positions = grid_positions(window, previous)
        same_day = [
            (pk, k) for pd, pk in prev_positions for d, k in positions if d == pd
        ]
        if same_day and not any(
            is_transition(window, previous + timedelta(minutes=m))
            for m in range(1, int((run - previous) / MINUTE) + 1)
        ):
            assert any(k == pk + 1 for pk, k in same_day), (previous, run)
            assert run - previous == f
        previous = run


@PROPERTY
@given(
    window=windows(),
    begin=year_starts,
    offsets=st.lists(st.integers(0, 366 * 1440 * 60), min_size=20, max_size=20),
)
def test_every_instant_belongs_to_exactly_one_interval(
    window: SyncWindow, begin: datetime, offsets: list[int]
) -> None:
    """No received mail falls between two runs, and none falls into two intervals."""
    for offset in offsets:
        received = begin + timedelta(seconds=offset)
        run = window.next_run_at_or_after(received)
        start, end = _interval_for_run(window, run)
        assert start < received <= end
        # the neighbouring intervals do not contain it
        assert not (window.previous_run_before(start) < received <= start)
        following = window.next_run_after(end)
        assert not (end < received <= following)


@PROPERTY
@given(window=windows())
def test_serialization_round_trip(window: SyncWindow) -> None:
    data = json.loads(json.dumps(window.to_dict()))
    again = SyncWindow(**data)
    assert again == window
    assert hash(again) == hash(window)
    assert again.summary == window.summary
    probe = utc(2026, 3, 1)
    assert list(islice(again.iter_runs(probe), 50)) == list(islice(window.iter_runs(probe), 50))


@PROPERTY
@given(window=windows(), begin=year_starts, lookback=st.integers(1, 30), delay_seconds=st.integers(0, 120))
def test_scheduler_chain_catchup_false_is_contiguous_and_never_in_the_past(
    window: SyncWindow, begin: datetime, lookback: int, delay_seconds: int
) -> None:
    """Simulate the scheduler over ~60 days: it asks for the next run whenever one was created."""
    delay = timedelta(seconds=delay_seconds)
    now = begin
    plan = plan_next_run(
        window, last_end=None, earliest=begin, latest=None, catchup=False, now=now,
        lookback_days=lookback,
    )
    assert plan is not None
    assert plan.start == begin - timedelta(days=lookback) and plan.end == begin  # the enable run
    end_of_test = begin + timedelta(days=60)
    while plan.end < end_of_test:
        now = plan.run_after + delay  # the scheduler creates the run a little late
        following = plan_next_run(
            window, last_end=plan.end, earliest=begin, latest=None, catchup=False, now=now,
            lookback_days=lookback,
        )
        assert following is not None
        assert following.start == plan.end, "intervals are contiguous"
        assert following.end > following.start
        assert following.run_after >= now, "catchup=False never schedules in the past"
        assert following.end == window.next_run_after(plan.end)
        plan = following


@PROPERTY
@given(window=windows(), begin=year_starts)
def test_catchup_true_returns_every_interval_of_a_year(window: SyncWindow, begin: datetime) -> None:
    """What a backfill gets (catchup=True, iterating like Airflow's iter_dagrun_infos_between)."""
    latest = begin + timedelta(days=366)
    now = begin + timedelta(days=1)  # the backfill floor (now − 30 days) is before ``begin``
    expected = list(window.iter_runs(begin - timedelta(days=8), latest + timedelta(days=8)))
    plans = []
    last_end = None
    while True:
        plan = plan_next_run(
            window, last_end=last_end, earliest=begin, latest=latest, catchup=True, now=now,
            lookback_days=30,
        )
        if plan is None:
            break
        plans.append(plan)
        last_end = plan.end
    assert plans
    assert plans[0].start == window.next_run_at_or_after(begin)
    assert plans[-1].start <= latest < window.next_run_after(plans[-1].start)
    for before, after in zip(plans, plans[1:]):
        assert before.end == after.start
    starts = [p.start for p in plans]
    first = expected.index(starts[0])
    assert starts == expected[first : first + len(starts)], "no interval skipped"


# -- worked examples --------------------------------------------------------------------

BERLIN_WORKDAYS = SyncWindow(45, frozenset({0, 1, 2, 3, 4}), "08:00", "18:00", "Europe/Berlin")


def test_summary_and_description() -> None:
    assert BERLIN_WORKDAYS.summary == "every 45 min, Mon–Fri 08:00–18:00 Europe/Berlin"
    assert "last run 17:45" in BERLIN_WORKDAYS.description
    assert SyncWindow(30, frozenset({0, 1, 2, 3, 4}), "08:00", "18:00", "Europe/Berlin").summary == (
        "every 30 min, Mon–Fri 08:00–18:00 Europe/Berlin"
    )
    assert SyncWindow().summary == "every 2 h, Mon–Fri 00:00–24:00 UTC"
    assert format_days({0, 2, 4}) == "Mon, Wed, Fri"
    assert format_days({0, 1, 2, 5, 6}) == "Mon–Wed, Sat, Sun"
    assert format_days(range(7)) == "daily"


def test_first_run_of_monday_covers_the_weekend() -> None:
    friday_last = utc(2026, 3, 27, 16, 45)  # 17:45 CET
    monday_first = utc(2026, 3, 30, 6, 0)  # 08:00 CEST (DST started on Sunday)
    assert BERLIN_WORKDAYS.next_run_after(friday_last) == monday_first
    assert _interval_for_run(BERLIN_WORKDAYS, monday_first) == (friday_last, monday_first)


def test_the_window_end_is_inclusive() -> None:
    window = SyncWindow(30, frozenset({0}), "08:00", "18:00", "UTC")
    runs = list(window.iter_runs(utc(2026, 1, 5), utc(2026, 1, 6)))
    assert runs[0] == utc(2026, 1, 5, 8) and runs[-1] == utc(2026, 1, 5, 18)
    assert len(runs) == 21


def test_an_end_of_24_00_runs_at_midnight_once() -> None:
    window = SyncWindow(120, frozenset({0, 1}), "00:00", "24:00", "UTC")
    runs = list(window.iter_runs(utc(2026, 1, 4, 23), utc(2026, 1, 8)))
    # Mon 00:00 … Tue 24:00 (= Wed 00:00, Tuesday's last run); Mon 24:00 = Tue 00:00 is one run.
    assert runs[0] == utc(2026, 1, 5, 0) and runs[-1] == utc(2026, 1, 7, 0)
    assert len(runs) == len(set(runs)) == 25


def test_spring_forward_moves_missing_times_to_the_transition() -> None:
    window = SyncWindow(30, frozenset(range(7)), "00:00", "24:00", "Europe/Berlin")
    runs = list(window.iter_runs(utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0)))
    # 01:30 CET, then 02:00 / 02:30 (missing) and 03:00 CEST are the same instant: 01:00 UTC.
    assert runs == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 0)]
    only_in_gap = SyncWindow(30, frozenset({6}), "02:15", "02:45", "Europe/Berlin")
    assert list(only_in_gap.iter_runs(utc(2026, 3, 28), utc(2026, 3, 30))) == [utc(2026, 3, 29, 1, 0)]


def test_fall_back_runs_ambiguous_times_once() -> None:
    window = SyncWindow(30, frozenset(range(7)), "00:00", "24:00", "Europe/Berlin")
    runs = list(window.iter_runs(utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 3, 0)))
    walls = [local(window, r).strftime("%H:%M%z") for r in runs]
    assert walls == ["01:30+0200", "02:00+0200", "02:30+0200", "03:00+0100", "03:30+0100", "04:00+0100"]
    assert _interval_for_run(window, utc(2026, 10, 25, 2, 0)) == (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 0))


def test_lord_howe_half_hour_shift_and_chatham() -> None:
    lord_howe = SyncWindow(30, frozenset(range(7)), "00:00", "24:00", "Australia/Lord_Howe")
    # 2026-10-04: 02:00 (+10:30) jumps to 02:30 (+11:00) = 15:30 UTC.
    runs = list(lord_howe.iter_runs(utc(2026, 10, 3, 14, 0), utc(2026, 10, 3, 16, 0)))
    assert [local(lord_howe, r).strftime("%H:%M") for r in runs] == ["01:00", "01:30", "02:30", "03:00"]
    chatham = SyncWindow(60, frozenset(range(7)), "00:45", "05:45", "Pacific/Chatham")
    # 2026-09-27: 02:45 (+12:45) jumps to 03:45 (+13:45); the 02:45 run moves to 03:45.
    runs = list(chatham.iter_runs(utc(2026, 9, 26, 11, 0), utc(2026, 9, 26, 17, 0)))
    assert [local(chatham, r).strftime("%H:%M") for r in runs] == ["00:45", "01:45", "03:45", "04:45", "05:45"]


def test_sao_paulo_midnight_that_did_not_exist() -> None:
    window = SyncWindow(60, frozenset(range(7)), "00:00", "03:00", "America/Sao_Paulo")
    # 2018-11-04: 00:00 (-03:00) jumped to 01:00 (-02:00).
    runs = list(window.iter_runs(utc(2018, 11, 4, 0), utc(2018, 11, 4, 6)))
    assert [local(window, r).strftime("%H:%M") for r in runs] == ["01:00", "02:00", "03:00"]


def test_interval_for_run_rejects_non_run_times() -> None:
    with pytest.raises(ValueError, match="not a run time"):
        _interval_for_run(BERLIN_WORKDAYS, utc(2026, 3, 30, 6, 1))


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        BERLIN_WORKDAYS.next_run_after(datetime(2026, 3, 30, 6, 0))


# -- validation -------------------------------------------------------------------------


def test_start_at_or_after_end_is_rejected_with_a_clear_error() -> None:
    with pytest.raises(InvalidSyncWindow) as err:
        SyncWindow(60, frozenset({0}), "18:00", "08:00", "Europe/Berlin")
    assert "window: start 18:00 must be before end 08:00" in str(err.value)
    assert "across midnight" in str(err.value)
    with pytest.raises(InvalidSyncWindow, match="must be before end"):
        SyncWindow(60, frozenset({0}), time(8), time(8), "Europe/Berlin")


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"frequency_minutes": 29}, "frequency: 29 min is more frequent than the minimum of 30 min"),
        ({"frequency_minutes": 1441}, "frequency"),
        ({"frequency_minutes": "60"}, "frequency"),
        ({"days": []}, "window days: at least one day"),
        ({"days": [7]}, "window days"),
        ({"start": "25:00"}, "window start"),
        ({"start": "24:00"}, "window start: 24:00 is only allowed as the window end"),
        ({"end": "8am"}, "window end"),
        ({"timezone": "Europe/Atlantis"}, "time zone: unknown time zone 'Europe/Atlantis'"),
        ({"lookback_days": 31}, "lookback days"),
        ({"lookback_days": 0}, "lookback days"),
    ],
)
def test_window_problems_name_the_field(settings_: dict, message: str) -> None:
    base = {"frequency_minutes": 60, "days": [0], "start": "08:00", "end": "18:00", "timezone": "UTC", "lookback_days": 1}
    problems = window_problems(**{**base, **settings_})
    assert any(message in p for p in problems), problems
    assert window_problems(**base) == []


def test_days_accept_names() -> None:
    assert SyncWindow(60, ["Mon", "tuesday"], "08:00", "18:00", "UTC").days == frozenset({0, 1})


# -- scheduling policy ------------------------------------------------------------------


def test_enable_run_starts_at_enable_time_minus_lookback() -> None:
    enabled = utc(2026, 3, 4, 10, 7)
    plan = plan_next_run(
        BERLIN_WORKDAYS, last_end=None, earliest=enabled, latest=None, catchup=False,
        now=enabled + timedelta(seconds=20), lookback_days=7,
    )
    assert plan is not None
    assert plan.start == enabled - timedelta(days=7)
    assert plan.end == plan.run_after == enabled + timedelta(seconds=20)
    # enabling in the future: the run waits for it
    plan = plan_next_run(
        BERLIN_WORKDAYS, last_end=None, earliest=enabled, latest=None, catchup=False,
        now=enabled - timedelta(hours=1), lookback_days=1,
    )
    assert plan == type(plan)(start=enabled - timedelta(days=1), end=enabled)
    # without a start_date, the job runs now with the lookback
    now = utc(2026, 3, 4, 10, 7, 30)
    plan = plan_next_run(
        BERLIN_WORKDAYS, last_end=None, earliest=None, latest=None, catchup=False, now=now, lookback_days=2,
    )
    assert plan is not None and (plan.start, plan.end) == (now - timedelta(days=2), now)


def test_enable_run_never_reaches_more_than_30_days_back() -> None:
    enabled = utc(2025, 1, 1)
    now = utc(2026, 3, 4, 10, 0)
    plan = plan_next_run(
        BERLIN_WORKDAYS, last_end=None, earliest=enabled, latest=None, catchup=False, now=now,
        lookback_days=30,
    )
    assert plan is not None and plan.start == now - timedelta(days=MAX_REACH_DAYS)


def test_re_enabling_runs_once_and_continues_from_the_last_run() -> None:
    last_end = utc(2026, 3, 2, 9, 0)
    enabled = utc(2026, 3, 2, 12, 0)  # switched off and on again after the last run
    plan = plan_next_run(
        BERLIN_WORKDAYS, last_end=last_end, earliest=enabled, latest=None, catchup=False,
        now=enabled, lookback_days=3,
    )
    assert plan is not None and (plan.start, plan.end) == (last_end, enabled)
    following = plan_next_run(
        BERLIN_WORKDAYS, last_end=plan.end, earliest=enabled, latest=None, catchup=False,
        now=enabled, lookback_days=3,
    )
    assert following is not None
    assert (following.start, following.end) == (enabled, BERLIN_WORKDAYS.next_run_after(enabled))


def test_after_an_outage_one_run_covers_the_gap() -> None:
    last_end = utc(2026, 3, 2, 7, 0)  # Mon 08:00 CET
    now = utc(2026, 3, 4, 10, 10)  # Wed 11:10 CET: the scheduler was down for two days
    plan = plan_next_run(
        BERLIN_WORKDAYS, last_end=last_end, earliest=utc(2026, 1, 1), latest=None, catchup=False,
        now=now, lookback_days=1,
    )
    assert plan is not None
    assert plan.start == last_end
    assert plan.end == utc(2026, 3, 4, 10, 0)  # Wed 11:00 CET, the latest run time that passed
    # an outage of more than 30 days is capped
    plan = plan_next_run(
        BERLIN_WORKDAYS, last_end=utc(2025, 1, 6, 7), earliest=None, latest=None, catchup=False,
        now=now, lookback_days=1,
    )
    assert plan is not None and plan.start == plan.end - timedelta(days=MAX_REACH_DAYS)


def test_backfill_is_capped() -> None:
    now = utc(2026, 3, 20, 12, 0)
    kwargs = dict(latest=now, catchup=True, now=now, lookback_days=3)
    # a range before the cap yields nothing at all
    before_cap = {**kwargs, "latest": utc(2026, 3, 10)}
    assert plan_next_run(BERLIN_WORKDAYS, last_end=None, earliest=utc(2026, 3, 1), **before_cap) is None
    # a range straddling it starts at the first run time after now − lookback
    plan = plan_next_run(BERLIN_WORKDAYS, last_end=None, earliest=utc(2026, 3, 1), **kwargs)
    assert plan is not None
    assert plan.start == BERLIN_WORKDAYS.next_run_at_or_after(now - timedelta(days=3))
    # a lookback above 30 days is capped at 30 (validation refuses one, the cap holds anyway)
    plan = plan_next_run(BERLIN_WORKDAYS, last_end=None, earliest=utc(2025, 3, 1), **{**kwargs, "lookback_days": 99})
    assert plan is not None and plan.start == BERLIN_WORKDAYS.next_run_at_or_after(now - timedelta(days=30))


def test_manual_interval_covers_since_the_last_run_time() -> None:
    run_after = utc(2026, 3, 30, 9, 10)  # Mon 11:10 CEST
    assert manual_interval(BERLIN_WORKDAYS, run_after) == (utc(2026, 3, 30, 9, 0), run_after)  # 11:00 CEST
    # triggered exactly at a run time: the interval before it
    assert manual_interval(BERLIN_WORKDAYS, utc(2026, 3, 30, 6, 0)) == (utc(2026, 3, 27, 16, 45), utc(2026, 3, 30, 6, 0))


def test_manual_window() -> None:
    now = utc(2026, 3, 30, 9, 10, 5)
    watermark = utc(2026, 3, 30, 8, 15)
    assert manual_window(watermark, now, lookback_days=1) == (watermark, now)
    assert manual_window(None, now, lookback_days=3) == (now - timedelta(days=3), now)
    assert manual_window(utc(2025, 1, 1), now, lookback_days=1) == (now - timedelta(days=30), now)
    assert manual_window(now + timedelta(minutes=5), now, lookback_days=1) == (now, now)
    berlin = ZoneInfo("Europe/Berlin")
    start, end = manual_window(watermark.astimezone(berlin), now.astimezone(berlin), lookback_days=1)
    assert (start, end) == (watermark, now) and start.tzinfo is UTC
