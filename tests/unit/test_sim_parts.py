"""The simulator's parts on their own: the shared clock, the fleet draw, the network."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from edgeota.server.settings import ServerSettings
from edgeota.sim.network import CountingTransport, FlakyTransport, NetworkStats, SharedCache
from edgeota.sim.population import BROKEN_CLASS, draw_fleet, pick_field_test
from edgeota.timeutil import ScaledClock

START = datetime(2027, 3, 26, tzinfo=UTC)


def test_scaled_clock_is_the_same_in_every_process_given_the_same_values() -> None:
    wall = [1000.0]
    clock = ScaledClock(START, 1000.0, 3600.0, wall=lambda: wall[0])
    other = ScaledClock(START, 1000.0, 3600.0, wall=lambda: wall[0])
    assert clock() == START
    wall[0] += 2.5
    assert clock() == other() == START + timedelta(hours=2.5)
    assert clock.real_seconds(7200) == 2.0
    with pytest.raises(ValueError, match="scale"):
        ScaledClock(START, 0.0, 0.0)


def test_server_settings_read_the_simulated_clock() -> None:
    settings = ServerSettings(clock_start=START, clock_anchor_unix_s=0.0, clock_scale=2.0)
    clock = settings.clock()
    assert isinstance(clock, ScaledClock) and clock.start == START and clock.scale == 2.0
    assert ServerSettings().clock()().tzinfo is not None
    with pytest.raises(ValueError, match="development"):
        ServerSettings(environment="production", clock_scale=10.0)


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
