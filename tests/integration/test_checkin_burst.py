"""A burst of concurrent check-ins against a real server, on SQLite and on PostgreSQL.

The server runs each request's session dependency and its endpoint in separate worker
threads (40 of them), and a request keeps its database connection in between. With a
bounded connection pool, a burst larger than the pool and the threads together left every
thread waiting for a connection held by requests that were waiting for a thread, until the
pool's 30-second timeout: a fleet reconnecting at once after an outage saw its check-ins
hang. Every check-in of the burst must be answered, well inside that timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgeota.procs import ProcessGroup
from edgeota.server.devcerts import DevCertificates
from harness import ServerHandle, start_server

pytestmark = pytest.mark.integration

DEVICES = 10
BURST = 150  # concurrent check-ins: more than the 40 worker threads plus the pool's 15


def _enroll(server: ServerHandle) -> list[tuple[str, str, str]]:
    """(device id, credential, current ETag) of each enrolled device."""
    devices = []
    with httpx.Client(base_url=server.url, verify=server.ssl_context()) as http:
        for i in range(DEVICES):
            token = server.admin.enrollment_token(["burst"])
            r = http.post(
                "/api/v1/enroll",
                json={"enrollment_token": token, "name": f"b{i}", "hardware_class": "x86-64"},
            )
            assert r.status_code == 201, r.text
            device_id, credential = r.json()["device_id"], r.json()["credential"]
            state = http.get(
                f"/api/v1/devices/{device_id}/desired-state",
                headers={"Authorization": f"Bearer {credential}"},
            )
            assert state.status_code == 200, state.text
            devices.append((device_id, credential, state.headers["etag"]))
    return devices


async def _burst(server: ServerHandle, devices: list[tuple[str, str, str]]) -> list[int]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(
        base_url=server.url, verify=server.ssl_context(), limits=limits, timeout=15.0
    ) as client:

        async def check_in(n: int) -> int:
            device_id, credential, etag = devices[n % len(devices)]
            headers = {"Authorization": f"Bearer {credential}"}
            if n % 2:  # half of them as after a restart: no ETag, the full answer
                headers["If-None-Match"] = etag
            try:
                r = await client.get(f"/api/v1/devices/{device_id}/desired-state", headers=headers)
            except httpx.TimeoutException:
                return 0
            return r.status_code

        return await asyncio.gather(*(check_in(n) for n in range(BURST)))


@pytest.fixture
def server(tmp_path: Path, certs: DevCertificates, database_url: str) -> Iterator[ServerHandle]:
    with ProcessGroup() as procs:
        handle = start_server(procs, tmp_path, certs, {"EDGEOTA_DATABASE_URL": database_url})
        try:
            yield handle
        finally:
            handle.admin.close()


def test_a_burst_of_check_ins_beyond_the_worker_threads_is_answered(server: ServerHandle) -> None:
    devices = _enroll(server)
    codes = asyncio.run(_burst(server, devices))
    assert sorted(set(codes)) == [200, 304], f"{codes.count(0)} of {BURST} timed out"
    assert codes.count(304) == BURST // 2
