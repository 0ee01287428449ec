"""A simulated fleet, drawn from a seed: hardware classes, time zones, maintenance windows.

Every device gets a nightly window (a start between 00:00 and 05:45 local time, one to three
hours long), and about half also a midday window of an hour, so only a small share of the
fleet is inside a window at any moment. The share of the class that a broken release fails
on is set exactly, so a run's fault is as large as asked for.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

BROKEN_CLASS = "arm64-npu"
# The other classes, with their relative weights in the rest of the fleet.
OTHER_CLASSES: tuple[tuple[str, float], ...] = (
    ("x86-64-cpu", 0.4),
    ("arm64-cpu", 0.35),
    ("x86-64-gpu", 0.25),
)
TIME_ZONES = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
)


@dataclass(frozen=True)
class WindowSpec:
    cron: str
    duration_s: int
    time_zone: str

    def to_api(self) -> dict[str, object]:
        return {"cron": self.cron, "duration_s": self.duration_s, "time_zone": self.time_zone}


@dataclass(frozen=True)
class DeviceSpec:
    index: int
    name: str
    hardware_class: str
    time_zone: str
    windows: tuple[WindowSpec, ...]
    crash_at: str | None = None  # crash point of the first update, if this device crashes


def _classes(devices: int, broken_share: float) -> list[str]:
    broken = round(devices * broken_share)
    rest = devices - broken
    counts = [math.floor(rest * w) for _, w in OTHER_CLASSES]
    for i in range(rest - sum(counts)):
        counts[i % len(counts)] += 1
    out = [BROKEN_CLASS] * broken
    for (name, _), n in zip(OTHER_CLASSES, counts, strict=True):
        out.extend([name] * n)
    return out


def _windows(rng: random.Random, zone: str) -> tuple[WindowSpec, ...]:
    night = WindowSpec(
        f"{rng.choice((0, 15, 30, 45))} {rng.randrange(0, 6)} * * *",
        rng.choice((1, 2, 3)) * 3600,
        zone,
    )
    if rng.random() < 0.5:
        return (night,)
    return (night, WindowSpec(f"0 {rng.randrange(11, 15)} * * *", 3600, zone))


def draw_fleet(
    devices: int,
    *,
    seed: int,
    broken_share: float,
    crash_share: float = 0.0,
    crash_points: Sequence[str] = (),
    prefix: str = "sim",
) -> list[DeviceSpec]:
    """``devices`` device specs, the same for the same arguments."""
    if devices < 1:
        raise ValueError(f"a fleet needs at least one device, got {devices}")
    if not 0 <= broken_share <= 1 or not 0 <= crash_share <= 1:
        raise ValueError("broken_share and crash_share must be in [0, 1]")
    rng = random.Random(seed)
    classes = _classes(devices, broken_share)
    rng.shuffle(classes)
    crashing = set(rng.sample(range(devices), round(devices * crash_share)))
    specs = []
    for i, hardware in enumerate(classes):
        zone = rng.choice(TIME_ZONES)
        specs.append(
            DeviceSpec(
                index=i,
                name=f"{prefix}-{i:05d}",
                hardware_class=hardware,
                time_zone=zone,
                windows=_windows(rng, zone),
                crash_at=rng.choice(list(crash_points)) if i in crashing and crash_points else None,
            )
        )
    return specs


def pick_field_test(specs: Sequence[DeviceSpec], share: float, seed: int) -> list[DeviceSpec]:
    """A field-test group of about ``share`` of the fleet (at least 4 devices), with every
    hardware class in it, in proportion: a canary that misses a class tests nothing there."""
    rng = random.Random(f"field-test-{seed}")
    wanted = min(len(specs), max(4, math.ceil(share * len(specs))))
    by_class: dict[str, list[DeviceSpec]] = {}
    for s in specs:
        by_class.setdefault(s.hardware_class, []).append(s)
    sizes = Counter(
        {c: max(1, round(wanted * len(members) / len(specs))) for c, members in by_class.items()}
    )
    chosen = []
    for c, members in sorted(by_class.items()):
        chosen.extend(rng.sample(members, min(len(members), sizes[c])))
    return sorted(chosen, key=lambda s: s.index)
