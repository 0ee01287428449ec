"""UTC time helpers: one injectable clock, and naive database values read as UTC."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything edgeota stores is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class ScaledClock:
    """Simulated time: ``start`` at the wall-clock instant ``anchor_unix_s``, running ``scale``
    times faster than the wall clock from there.

    It is a function of the wall clock only, so separate processes given the same three
    values (a simulator and the server it drives) read the same simulated time without
    talking to each other.
    """

    start: datetime
    anchor_unix_s: float
    scale: float = 1.0
    wall: Callable[[], float] = field(default=time.time, compare=False)

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"clock scale must be > 0, got {self.scale}")
        object.__setattr__(self, "start", as_utc(self.start))

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(self.wall() - self.anchor_unix_s) * self.scale)

    def real_seconds(self, simulated_s: float) -> float:
        """Wall-clock seconds that ``simulated_s`` simulated seconds take."""
        return simulated_s / self.scale
