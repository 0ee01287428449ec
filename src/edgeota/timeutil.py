"""UTC time helpers: one injectable clock, and naive database values read as UTC."""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


_CHECK = 0x5EC0_7A11_C10C_F11E  # the second word is the first XOR this: a torn read shows
_MASK = (1 << 64) - 1


class ClockFile:
    """Simulated time that one process sets and others read: a 16-byte file mapped into
    memory (on tmpfs it never touches a disk).

    The fleet simulator advances its clock as its devices' steps complete and publishes it
    here; the server it drives (``EDGEOTA_CLOCK_FILE``) reads it as its clock, so both see
    one simulated time however fast or slow the machine runs. A reader that catches a write
    half done sees the check word disagree and reads again.
    """

    SIZE = 16

    def __init__(self, path: Path, *, writable: bool = False) -> None:
        self.path = path
        try:
            with path.open("r+b" if writable else "rb") as f:
                if os.fstat(f.fileno()).st_size != self.SIZE:
                    raise ValueError(
                        f"{path} is not a clock file ({self.SIZE} bytes written by the simulator)"
                    )
                access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
                self._map = mmap.mmap(f.fileno(), self.SIZE, access=access)
        except FileNotFoundError as e:
            raise ValueError(f"clock file {path} does not exist; start the simulator first") from e

    @classmethod
    def create(cls, path: Path, now: datetime) -> ClockFile:
        path.write_bytes(bytes(cls.SIZE))
        clock = cls(path, writable=True)
        clock.set(now)
        return clock

    def set(self, now: datetime) -> None:
        micros = round(as_utc(now).timestamp() * 1_000_000)
        self._map[:] = struct.pack("<qQ", micros, (micros & _MASK) ^ _CHECK)

    def __call__(self) -> datetime:
        while True:
            micros, check = struct.unpack("<qQ", self._map[:])
            if (micros & _MASK) ^ _CHECK == check:
                return datetime.fromtimestamp(micros / 1_000_000, UTC)

    def close(self) -> None:
        self._map.close()
