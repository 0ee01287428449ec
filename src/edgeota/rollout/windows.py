"""Maintenance windows: when a device may apply an update, and how long a user may put it off.

A window opens at the times a 5-field cron expression names (minute hour day-of-month month
day-of-week), read as wall-clock time in an IANA time zone, and stays open for
``duration_seconds`` of elapsed time. Open is half-open: ``[start, start + duration)``.

Across daylight-saving changes the start follows Debian cron, as the cronsim package does:

- A start at a fixed wall time that falls in the hour skipped in spring (02:30 in
  Europe/Berlin on the last Sunday of March) happens once, right after the jump (03:00).
- A start at a fixed wall time in the hour repeated in autumn happens once, at its first
  occurrence; expressions with a wildcard minute or hour start in both occurrences.
- The duration is elapsed time, not wall-clock time: a 4-hour window from 01:00 ends at
  06:00 on the spring night and at 04:00 on the autumn night. An operator who wants the
  window to close at a fixed wall time on those nights shortens it by an hour.

A window that starts before midnight and ends after it is found from both sides of midnight,
since openness is judged by looking back ``duration_seconds`` for a start.

No windows at all means every instant is allowed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from edgeota.timeutil import as_utc

_CRON_FIELDS = "minute hour day-of-month month day-of-week"
# Any fixed instant does to make cronsim parse an expression; reading the clock would make
# validation impure.
_PARSE_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MaintenanceWindow:
    """A recurring window: cron start, elapsed duration, IANA time zone."""

    cron: str
    duration_seconds: int
    time_zone: str

    def __post_init__(self) -> None:
        fields = self.cron.split()
        if len(fields) != 5:
            raise ValueError(
                f"maintenance window cron expression {self.cron!r} has {len(fields)} fields; "
                f"it needs 5: {_CRON_FIELDS}"
            )
        try:
            CronSim(self.cron, _PARSE_ANCHOR)
        except CronSimError as e:
            raise ValueError(
                f"maintenance window cron expression {self.cron!r} is invalid: {e} field "
                f"(fields are {_CRON_FIELDS})"
            ) from e
        if self.duration_seconds <= 0:
            raise ValueError(
                f"maintenance window duration must be > 0 seconds, got {self.duration_seconds}"
            )
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(
                f"maintenance window time zone {self.time_zone!r} is not an IANA time zone "
                "this machine knows; use a name such as 'Europe/Berlin' or 'UTC'"
            ) from e

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)  # ZoneInfo caches instances by key

    def _starts_after(self, after: datetime) -> Iterator[datetime]:
        """Start times (UTC) strictly after ``after``, in order."""
        for start in CronSim(self.cron, after.astimezone(self.zone)):
            start_utc = start.astimezone(UTC)
            # cronsim walks fixed-time expressions in naive wall time, so from inside the
            # repeated autumn hour it can hand back the first occurrence, which is earlier.
            if start_utc > after:
                yield start_utc

    def is_open(self, now_utc: datetime) -> bool:
        now = as_utc(now_utc)
        lower = now - timedelta(seconds=self.duration_seconds)
        # The window is open iff some start lies in (now - duration, now]; the first start
        # after the lower bound tells.
        first = next(self._starts_after(lower), None)
        return first is not None and first <= now

    def next_start(self, now_utc: datetime) -> datetime | None:
        """The first start strictly after ``now_utc``, or None if it never starts again."""
        return next(self._starts_after(as_utc(now_utc)), None)


def in_window(windows: Sequence[MaintenanceWindow], now_utc: datetime) -> bool:
    """Whether an update may be applied at ``now_utc``: any window open, or no windows."""
    return not windows or any(w.is_open(now_utc) for w in windows)


def next_window_start(windows: Sequence[MaintenanceWindow], now_utc: datetime) -> datetime:
    """The earliest start of any window strictly after ``now_utc``, in UTC.

    With no windows every instant is allowed, so the answer is ``now_utc`` itself.
    """
    now = as_utc(now_utc)
    if not windows:
        return now
    starts = [s for w in windows if (s := w.next_start(now)) is not None]
    if not starts:
        crons = ", ".join(repr(w.cron) for w in windows)
        raise ValueError(
            f"no maintenance window ({crons}) opens again after {now.isoformat()}; "
            "check the day-of-month and month fields"
        )
    return min(starts)


def next_allowed_time(windows: Sequence[MaintenanceWindow], now_utc: datetime) -> datetime:
    """When an update may be applied: ``now_utc`` if a window is open, else the next start."""
    now = as_utc(now_utc)
    return now if in_window(windows, now) else next_window_start(windows, now)


def can_defer(deferrals_used: int, max_deferrals: int) -> bool:
    """Whether the user may put the update off once more."""
    if deferrals_used < 0 or max_deferrals < 0:
        raise ValueError(
            f"deferral counts must be >= 0, got deferrals_used={deferrals_used}, "
            f"max_deferrals={max_deferrals}"
        )
    return deferrals_used < max_deferrals


def forced_apply_at(
    windows: Sequence[MaintenanceWindow],
    now_utc: datetime,
    deferrals_used: int,
    max_deferrals: int,
) -> datetime | None:
    """When an update is applied without asking the user again, or None if they may defer.

    Once the deferrals are used up the update is no longer offered: it is applied in the next
    maintenance window, which is now if one is open.
    """
    if can_defer(deferrals_used, max_deferrals):
        return None
    return next_allowed_time(windows, now_utc)
