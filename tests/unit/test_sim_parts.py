"""The simulator's parts on their own: the shared clock, the fleet draw, the network."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from edgeota.server.settings import ServerSettings
from edgeota.sim.clock import FleetClock
from edgeota.sim.engine import FleetEngine
from edgeota.sim.network import CountingTransport, FlakyTransport, NetworkStats, SharedCache
from edgeota.sim.population import BROKEN_CLASS, DeviceSpec, draw_fleet, pick_field_test
from edgeota.timeutil import ClockFile, ScaledClock

START = datetime(2027, 3, 26, tzinfo=UTC)


def test_scaled_clock_is_the_same_in_every_process_given_the_same_values() -> None:
    wall = [1000.0]
    clock = ScaledClock(START, 1000.0, 3600.0, wall=lambda: wall[0])
    other = ScaledClock(START, 1000.0, 3600.0, wall=lambda: wall[0])
    assert clock() == START
    wall[0] += 2.5
    assert clock() == other() == START + timedelta(hours=2.5)
    with pytest.raises(ValueError, match="scale"):
        ScaledClock(START, 0.0, 0.0)


def test_server_settings_read_the_simulated_clock(tmp_path: Path) -> None:
    settings = ServerSettings(clock_start=START, clock_anchor_unix_s=0.0, clock_scale=2.0)
    clock = settings.clock()
    assert isinstance(clock, ScaledClock) and clock.start == START and clock.scale == 2.0
    assert ServerSettings().clock()().tzinfo is not None
    with pytest.raises(ValueError, match="development"):
        ServerSettings(environment="production", clock_scale=10.0)
    with pytest.raises(ValueError, match="development"):
        ServerSettings(environment="production", clock_file=tmp_path / "clock")
    with pytest.raises(ValueError, match="not both"):
        ServerSettings(clock_file=tmp_path / "clock", clock_scale=10.0)
    with pytest.raises(ValueError, match="start the simulator first"):
        ServerSettings(clock_file=tmp_path / "clock").clock()

    writer = ClockFile.create(tmp_path / "clock", START)
    reader = ServerSettings(clock_file=tmp_path / "clock").clock()
    assert reader() == START
    writer.set(START + timedelta(hours=5, microseconds=7))
    assert reader() == START + timedelta(hours=5, microseconds=7)


def test_another_process_reads_the_time_the_simulator_publishes(tmp_path: Path) -> None:
    clock = FleetClock(START, 3600.0, publish_to=tmp_path / "clock", wall=lambda: 0.0)
    read = [sys.executable, "-c", READ_CLOCK, str(tmp_path / "clock")]
    assert subprocess.run(read, capture_output=True, text=True, check=True).stdout.strip() == (
        START.isoformat()
    )
    clock.close()
    (tmp_path / "other").write_bytes(b"not a clock")
    with pytest.raises(ValueError, match="not a clock file"):
        ClockFile(tmp_path / "other")


READ_CLOCK = "import sys, pathlib; from edgeota.timeutil import ClockFile; "
READ_CLOCK += "print(ClockFile(pathlib.Path(sys.argv[1]))().isoformat())"


def test_fleet_clock_runs_scaled_but_never_past_the_earliest_unfinished_step() -> None:
    wall = [0.0]
    clock = FleetClock(START, 100.0, max_lead_s=60.0, wall=lambda: wall[0])
    wall[0] = 1.0
    assert clock.advance(None) == 100.0  # nothing pending: full speed
    wall[0] = 2.0
    assert clock.advance(150.0) == 200.0  # a step due at 150 s: 60 s of lead at most
    wall[0] = 10.0
    assert clock.advance(150.0) == 210.0  # still unfinished: time stands still
    assert clock.held_wall_s == pytest.approx(8.0 - 0.1)
    wall[0] = 11.0
    assert clock.advance(500.0) == 310.0  # stalled time is not caught up
    assert clock() == START + timedelta(seconds=310)
    assert clock.effective_scale() == pytest.approx(310 / 11)
    with pytest.raises(ValueError, match="scale"):
        FleetClock(START, 0.0)


class _Device:
    """Records the instant of each step; its first step blocks until ``release`` is set."""

    def __init__(self, index: int, poll_s: float, blocks: bool = False) -> None:
        self.spec = DeviceSpec(index, f"dev-{index}", "x86-64-test", "UTC", ())
        self.poll_s = poll_s
        self.times: list[datetime] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not blocks:
            self.release.set()

    def step(self, now: datetime) -> float:
        self.times.append(now)
        self.started.set()
        self.release.wait(30)
        return self.poll_s

    def close(self) -> None:
        self.release.set()


def test_engine_steps_each_device_at_its_own_instant_and_waits_for_a_slow_step() -> None:
    clock = FleetClock(START, 20000.0, max_lead_s=60.0)
    slow, fast = _Device(0, 3600.0, blocks=True), _Device(1, 30.0)
    engine = FleetEngine([slow, fast], clock, workers=2)
    engine.start(spread_s=0.001)
    checks = [0]

    def done() -> bool:
        if slow.started.is_set() and not slow.release.is_set():
            checks[0] += 1
            # The slow step is the earliest unfinished one: time waits for it.
            assert clock.seconds <= 0.001 + 60.0
            if checks[0] == 20:  # 0.2 s of wall clock: 4000 s of time at full speed
                slow.release.set()
        return clock.seconds > 3 * 3600

    try:
        assert engine.run_until(done, timeout_s=60, check_every_s=0.01)
    finally:
        engine.close()
    assert clock.held_wall_s > 0.1
    # Each step happened at the instant it was due: one poll interval after the last.
    for device in (slow, fast):
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(device.times)]
        assert gaps == pytest.approx([device.poll_s] * len(gaps), abs=1e-5), device.spec.name
    assert len(slow.times) >= 3 and len(fast.times) > 300
    assert engine.stats.late_p95_s() <= 60.0


def test_fleet_draw_is_reproducible_and_breaks_the_share_asked_for() -> None:
    a = draw_fleet(200, seed=3, broken_share=0.3, crash_share=0.05, crash_points=("staged",))
    assert a == draw_fleet(
        200, seed=3, broken_share=0.3, crash_share=0.05, crash_points=("staged",)
    )
    assert a != draw_fleet(200, seed=4, broken_share=0.3)
    assert Counter(s.hardware_class for s in a)[BROKEN_CLASS] == 60
    assert sum(s.crash_at == "staged" for s in a) == 10
    assert all(1 <= len(s.windows) <= 2 for s in a)
    assert len({s.time_zone for s in a}) > 5


def test_field_test_covers_every_hardware_class() -> None:
    fleet = draw_fleet(200, seed=0, broken_share=0.3)
    chosen = pick_field_test(fleet, 0.05, seed=0)
    assert 8 <= len(chosen) <= 12
    assert {s.hardware_class for s in chosen} == {s.hardware_class for s in fleet}


def _server(request: httpx.Request) -> httpx.Response:
    immutable = request.url.path.startswith("/tuf/targets/")
    headers = {"cache-control": "public, immutable"} if immutable else {}
    return httpx.Response(200, content=b"x" * 100, headers=headers)


def test_shared_cache_serves_immutable_files_once_and_counts_what_the_server_sent() -> None:
    stats = NetworkStats()
    transport = SharedCache(CountingTransport(httpx.MockTransport(_server), stats), stats)
    with httpx.Client(transport=transport, base_url="http://s") as client:
        for _ in range(3):
            assert client.get("/tuf/targets/a/123.model").content == b"x" * 100
            client.get("/api/v1/devices/dev-1/desired-state")
        ranged = client.get("/tuf/targets/a/123.model", headers={"range": "bytes=10-"})
        assert ranged.status_code == 200
    assert stats.requests == 5 and stats.cache_hits == 2 and stats.bytes_from_cache == 200
    assert len(stats.checkin_latencies_s) == 3 and stats.checkin_p95_ms() is not None


def test_flaky_network_drops_about_the_share_asked_for_and_never_enrollment() -> None:
    stats = NetworkStats()
    flaky = FlakyTransport(httpx.MockTransport(_server), 0.2, random.Random(1), stats)
    dropped = 0
    with httpx.Client(transport=flaky, base_url="http://s") as client:
        for _ in range(1000):
            try:
                client.get("/api/v1/devices/dev-1/desired-state")
            except (httpx.ConnectError, httpx.ReadError):
                dropped += 1
        for _ in range(50):
            assert client.post("/api/v1/enroll").status_code == 200
    assert 150 < dropped < 250 and stats.dropped == dropped
