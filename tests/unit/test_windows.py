"""Maintenance windows: cron starts in a time zone, across midnight and daylight-saving changes.

Europe/Berlin in 2024 sprang forward on 31 March at 01:00 UTC (02:00 CET became 03:00 CEST)
and fell back on 27 October at 01:00 UTC (03:00 CEST became 02:00 CET).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeota.rollout import (
    MaintenanceWindow,
    can_defer,
    forced_apply_at,
    in_window,
    next_allowed_time,
    next_window_start,
)

BERLIN = "Europe/Berlin"
HOUR = 3600


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_window_is_half_open() -> None:
    nightly = [MaintenanceWindow("0 2 * * *", 2 * HOUR, "UTC")]
    assert not in_window(nightly, utc(2025, 1, 10, 1, 59, 59))
    assert in_window(nightly, utc(2025, 1, 10, 2, 0))
    assert in_window(nightly, utc(2025, 1, 10, 3, 59, 59))
    assert not in_window(nightly, utc(2025, 1, 10, 4, 0))


def test_window_spanning_midnight_is_open_on_both_sides() -> None:
    late = [MaintenanceWindow("0 22 * * *", 4 * HOUR, BERLIN)]  # 22:00-02:00 CET
    assert in_window(late, utc(2025, 1, 10, 21, 0))  # 22:00 CET
    assert in_window(late, utc(2025, 1, 10, 23, 30))  # 00:30 CET, the next day
    assert in_window(late, utc(2025, 1, 11, 0, 59))  # 01:59 CET
    assert not in_window(late, utc(2025, 1, 11, 1, 0))  # 02:00 CET
    assert next_window_start(late, utc(2025, 1, 11, 2, 0)) == utc(2025, 1, 11, 21, 0)


def test_weekday_window_spanning_midnight_belongs_to_its_start_day() -> None:
    friday_night = [MaintenanceWindow("0 23 * * FRI", 3 * HOUR, "UTC")]
    assert in_window(friday_night, utc(2025, 1, 11, 1, 30))  # Saturday 01:30
    assert not in_window(friday_night, utc(2025, 1, 12, 1, 30))  # Sunday 01:30
    assert next_window_start(friday_night, utc(2025, 1, 11, 1, 30)) == utc(2025, 1, 17, 23, 0)


def test_spring_forward_start_in_the_skipped_hour_happens_right_after_the_jump() -> None:
    w = [MaintenanceWindow("30 2 * * *", HOUR, BERLIN)]
    assert next_window_start(w, utc(2024, 3, 29, 12, 0)) == utc(2024, 3, 30, 1, 30)  # 02:30 CET
    assert next_window_start(w, utc(2024, 3, 30, 12, 0)) == utc(2024, 3, 31, 1, 0)  # 03:00 CEST
    assert next_window_start(w, utc(2024, 3, 31, 1, 0)) == utc(2024, 4, 1, 0, 30)  # 02:30 CEST
    assert not in_window(w, utc(2024, 3, 31, 0, 59))
    assert in_window(w, utc(2024, 3, 31, 1, 0))
    assert in_window(w, utc(2024, 3, 31, 1, 59))
    assert not in_window(w, utc(2024, 3, 31, 2, 0))


def test_spring_forward_duration_is_elapsed_time() -> None:
    w = [MaintenanceWindow("0 1 * * *", 4 * HOUR, BERLIN)]  # from 01:00 CET, for 4 hours
    assert in_window(w, utc(2024, 3, 31, 3, 59))  # 05:59 CEST
    assert not in_window(w, utc(2024, 3, 31, 4, 0))  # 06:00 CEST


def test_fall_back_fixed_time_in_the_repeated_hour_starts_once() -> None:
    w = [MaintenanceWindow("30 2 * * *", HOUR, BERLIN)]
    assert next_window_start(w, utc(2024, 10, 26, 12, 0)) == utc(2024, 10, 27, 0, 30)  # CEST
    assert in_window(w, utc(2024, 10, 27, 0, 30))
    assert in_window(w, utc(2024, 10, 27, 1, 29))
    assert not in_window(w, utc(2024, 10, 27, 1, 45))  # 02:45 CET: no second start
    # From inside the repeated hour, the next start is the next day, not the one just past.
    assert next_window_start(w, utc(2024, 10, 27, 1, 10)) == utc(2024, 10, 28, 1, 30)


def test_fall_back_wildcard_hour_starts_in_both_occurrences() -> None:
    hourly = [MaintenanceWindow("0 * * * *", 600, BERLIN)]
    assert next_window_start(hourly, utc(2024, 10, 26, 23, 30)) == utc(2024, 10, 27, 0, 0)
    assert next_window_start(hourly, utc(2024, 10, 27, 0, 0)) == utc(2024, 10, 27, 1, 0)
    assert in_window(hourly, utc(2024, 10, 27, 0, 5))  # 02:05 CEST
    assert in_window(hourly, utc(2024, 10, 27, 1, 5))  # 02:05 CET
    assert not in_window(hourly, utc(2024, 10, 27, 1, 15))


def test_fall_back_duration_is_elapsed_time() -> None:
    w = [MaintenanceWindow("0 1 * * *", 4 * HOUR, BERLIN)]  # from 01:00 CEST, for 4 hours
    assert in_window(w, utc(2024, 10, 27, 2, 59))  # 03:59 CET
    assert not in_window(w, utc(2024, 10, 27, 3, 0))  # 04:00 CET


def test_several_windows() -> None:
    windows = [
        MaintenanceWindow("0 3 * * *", HOUR, "UTC"),
        MaintenanceWindow("0 12 * * SAT,SUN", 2 * HOUR, "UTC"),
    ]
    assert in_window(windows, utc(2025, 1, 11, 13, 0))  # Saturday noon
    assert not in_window(windows, utc(2025, 1, 10, 13, 0))  # Friday noon
    assert next_window_start(windows, utc(2025, 1, 11, 4, 0)) == utc(2025, 1, 11, 12, 0)
    assert next_window_start(windows, utc(2025, 1, 10, 4, 0)) == utc(2025, 1, 11, 3, 0)


def test_no_windows_means_always_allowed() -> None:
    now = utc(2025, 1, 10, 13, 37)
    assert in_window([], now)
    assert next_window_start([], now) == now
    assert next_allowed_time([], now) == now


def test_next_allowed_time_is_now_inside_a_window() -> None:
    w = [MaintenanceWindow("0 2 * * *", HOUR, "UTC")]
    assert next_allowed_time(w, utc(2025, 1, 10, 2, 30)) == utc(2025, 1, 10, 2, 30)
    assert next_allowed_time(w, utc(2025, 1, 10, 3, 0)) == utc(2025, 1, 11, 2, 0)


def test_naive_now_is_read_as_utc_and_other_zones_are_converted() -> None:
    w = [MaintenanceWindow("0 2 * * *", HOUR, "UTC")]
    assert in_window(w, datetime(2025, 1, 10, 2, 30))
    berlin = datetime(2025, 1, 10, 3, 30, tzinfo=ZoneInfo(BERLIN))
    assert in_window(w, berlin)  # 03:30 CET is 02:30 UTC


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "has 4 fields; it needs 5"),
        ("0 0 * * * *", "has 6 fields; it needs 5"),
        ("", "has 0 fields"),
        ("61 * * * *", "Bad minute"),
        ("0 24 * * *", "Bad hour"),
        ("0 0 31 2 *", "Bad day-of-month"),
        ("0 0 * 13 *", "Bad month"),
        ("0 0 * * MONDAY", "Bad day-of-week"),
        ("every night", "has 2 fields"),
    ],
)
def test_invalid_cron_is_refused_clearly(cron: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaintenanceWindow(cron, HOUR, "UTC")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "", "CEST+2"])
def test_invalid_zone_is_refused_clearly(zone: str) -> None:
    with pytest.raises(ValueError, match="is not an IANA time zone"):
        MaintenanceWindow("0 2 * * *", HOUR, zone)


@pytest.mark.parametrize("seconds", [0, -60])
def test_non_positive_duration_is_refused(seconds: int) -> None:
    with pytest.raises(ValueError, match="duration must be > 0"):
        MaintenanceWindow("0 2 * * *", seconds, "UTC")


def test_deferrals_run_out() -> None:
    assert can_defer(0, 3)
    assert can_defer(2, 3)
    assert not can_defer(3, 3)
    assert not can_defer(0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        can_defer(-1, 3)


def test_an_update_deferred_past_its_limit_is_applied_in_the_next_window() -> None:
    w = [MaintenanceWindow("0 2 * * *", HOUR, "UTC")]
    afternoon = utc(2025, 1, 10, 15, 0)
    assert forced_apply_at(w, afternoon, deferrals_used=1, max_deferrals=2) is None
    assert forced_apply_at(w, afternoon, deferrals_used=2, max_deferrals=2) == utc(
        2025, 1, 11, 2, 0
    )
    inside = utc(2025, 1, 11, 2, 10)
    assert forced_apply_at(w, inside, deferrals_used=2, max_deferrals=2) == inside
    assert forced_apply_at([], afternoon, deferrals_used=5, max_deferrals=2) == afternoon


CRONS = ["30 2 * * *", "0 * * * *", "*/20 1-3 * * *", "0 22 * * FRI", "15 0 1 * *", "0 2 * * 0"]
ZONES = ["UTC", BERLIN, "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
# Daylight-saving changes in 2024 (UTC), so that random instants often land near one;
# Lord Howe shifts by half an hour.
DST_CHANGES = [
    utc(2024, 3, 31, 1),  # Berlin, spring
    utc(2024, 10, 27, 1),  # Berlin, autumn
    utc(2024, 3, 10, 7),  # New York, spring
    utc(2024, 11, 3, 6),  # New York, autumn
    utc(2024, 4, 6, 15),  # Lord Howe, back to standard time
    utc(2024, 10, 5, 15, 30),  # Lord Howe, summer time
]
instants = st.one_of(
    st.builds(
        lambda base, minutes: base + timedelta(minutes=minutes, seconds=17),
        st.sampled_from(DST_CHANGES),
        st.integers(-36 * 60, 36 * 60),
    ),
    st.integers(0, 3 * 366 * 24 * 60).map(lambda m: utc(2023, 1, 1) + timedelta(minutes=m)),
)


@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(
        st.tuples(st.sampled_from(CRONS), st.integers(60, 6 * HOUR), st.sampled_from(ZONES)),
        min_size=1,
        max_size=3,
    ),
    now=instants,
)
def test_next_start_and_openness_agree(specs: list[tuple[str, int, str]], now: datetime) -> None:
    windows = [MaintenanceWindow(*spec) for spec in specs]
    start = next_window_start(windows, now)
    assert start > now
    assert in_window(windows, start)
    allowed = next_allowed_time(windows, now)
    assert in_window(windows, allowed)
    if not in_window(windows, now):
        # Nothing opens between now and the next start.
        assert allowed == start
        assert not in_window(windows, now + (start - now) / 2)
        assert not in_window(windows, start - timedelta(seconds=1))
