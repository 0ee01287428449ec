"""The fleet's simulated time: fast, but never ahead of the devices it simulates.

Simulated time runs ``scale`` times faster than the wall clock, except that it never runs
more than ``max_lead_s`` past the earliest device step not yet finished (waiting for a
worker or running). A busy machine therefore slows simulated time down instead of making
devices late: a device woken when its maintenance window opens does its step inside that
window however long the machine takes to get to it. Each step happens at one simulated
instant, its due time (``FleetEngine``), so a slow step cannot carry a device past its
window either.

Stalled time is not caught up afterwards; ``held_wall_s`` says how much wall-clock time the
clock stood still, and ``effective_scale`` how fast the run really went.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from edgeota.timeutil import ClockFile, as_utc


class FleetClock:
    def __init__(
        self,
        start: datetime,
        scale: float,
        *,
        max_lead_s: float = 300.0,
        publish_to: Path | None = None,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        if not scale > 0:
            raise ValueError(f"time scale must be > 0, got {scale}")
        if not max_lead_s > 0:
            raise ValueError(f"max_lead_s must be > 0, got {max_lead_s}")
        self.start = as_utc(start)
        self.scale = scale
        self.max_lead_s = max_lead_s
        self._wall = wall
        self._wall_started = self._last_wall = wall()
        self._seconds = 0.0  # simulated seconds since start
        self.held_wall_s = 0.0
        self._lock = threading.Lock()
        self._file = None if publish_to is None else ClockFile.create(publish_to, self.start)

    @property
    def seconds(self) -> float:
        """Simulated seconds since ``start``."""
        return self._seconds

    def __call__(self) -> datetime:
        return self.at(self._seconds)

    def at(self, seconds: float) -> datetime:
        """The simulated instant ``seconds`` after ``start``."""
        return self.start + timedelta(seconds=seconds)

    def wall_seconds(self, simulated_s: float) -> float:
        """Wall-clock seconds ``simulated_s`` simulated seconds take at full speed."""
        return simulated_s / self.scale

    def advance(self, earliest_unfinished_s: float | None) -> float:
        """Move time on by the wall-clock time since the last call (times ``scale``), but
        not past ``earliest_unfinished_s + max_lead_s``; the new simulated seconds."""
        with self._lock:
            wall = self._wall()
            elapsed, self._last_wall = wall - self._last_wall, wall
            target = self._seconds + elapsed * self.scale
            if earliest_unfinished_s is not None:
                limit = earliest_unfinished_s + self.max_lead_s
                if target > limit:
                    moved = max(0.0, limit - self._seconds)
                    self.held_wall_s += elapsed - moved / self.scale
                    target = limit
            if target > self._seconds:
                self._seconds = target
                if self._file is not None:
                    self._file.set(self.at(target))
            return self._seconds

    def effective_scale(self) -> float:
        """Simulated seconds per wall-clock second since the clock was made."""
        wall = self._last_wall - self._wall_started
        return self._seconds / wall if wall > 0 else self.scale

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
