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
import hashlib
from collections.abc import AsyncIterator, Iterator
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


SLOW_UPLOADS = 45  # more than the requests the server lets use its database at once


async def _check_in_during_slow_uploads(
    server: ServerHandle, device: tuple[str, str, str]
) -> tuple[int, list[int]]:
    """Start uploads that stall after their first chunk, check in, then let them finish."""
    go_on = asyncio.Event()
    started = 0
    all_started = asyncio.Event()
    chunk = b"m" * 65536

    async def body() -> AsyncIterator[bytes]:
        nonlocal started
        yield chunk
        started += 1
        if started == SLOW_UPLOADS:
            all_started.set()
        await go_on.wait()
        yield chunk

    digest = hashlib.sha256(chunk * 2).hexdigest()
    limits = httpx.Limits(max_connections=SLOW_UPLOADS + 1)
    async with httpx.AsyncClient(
        base_url=server.url, verify=server.ssl_context(), limits=limits, timeout=30.0
    ) as client:
        admin = {"Authorization": f"Bearer {server.admin_token}"}
        uploads = [
            asyncio.ensure_future(
                client.put(f"/api/v1/artifacts/{digest}", content=body(), headers=admin)
            )
            for _ in range(SLOW_UPLOADS)
        ]
        await asyncio.wait_for(all_started.wait(), 20)
        device_id, credential, _ = device
        try:
            r = await client.get(
                f"/api/v1/devices/{device_id}/desired-state",
                headers={"Authorization": f"Bearer {credential}"},
                timeout=10.0,
            )
            check_in = r.status_code
        except httpx.TimeoutException:
            check_in = 0
        go_on.set()
        answers = await asyncio.gather(*uploads)
        return check_in, [a.status_code for a in answers]


def test_uploads_in_progress_do_not_keep_devices_from_checking_in(server: ServerHandle) -> None:
    device = _enroll(server)[0]
    check_in, uploads = asyncio.run(_check_in_during_slow_uploads(server, device))
    assert check_in == 200, "the check-in waited for uploads that need no database"
    assert uploads == [200] * SLOW_UPLOADS
