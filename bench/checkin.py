"""Check-in load: how close the conditional check-in gets to what the web stack alone serves.

    python bench/checkin.py [--devices 500] [--seconds 10] [--concurrency 64]
                            [--postgres [ADMIN_URL]]

Starts a real server (SQLite, or with --postgres a throwaway database on that PostgreSQL
server; loopback), enrolls DEVICES devices, then measures in one run:
  1. baseline   GET /healthz                          (the web stack alone: no auth, no DB)
  2. steady     GET desired-state + If-None-Match      (the hot path: 304, no write)
  3. reconnect  GET desired-state without an ETag      (every device after an outage: 200)
and prints requests/s, p50/p95 latency, errors, the server process's CPU time per request
(independent of how busy the load generator on the same cores keeps it), and each rate's
ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from edgeota.adminclient import AdminClient
from edgeota.procs import ProcessGroup, start_server

Request = Callable[[httpx.AsyncClient], "asyncio.Future[httpx.Response]"]


async def _load(
    url: str, make: Callable[[int], tuple[str, dict[str, str]]], seconds: float, concurrency: int
) -> tuple[int, int, list[float]]:
    latencies: list[float] = []
    errors = 0
    kinds: collections.Counter[str] = collections.Counter()
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                path, headers = make(rng.randrange(1 << 30))
                start = time.perf_counter()
                try:
                    r = await client.get(path, headers=headers)
                    if r.status_code not in (200, 304):
                        errors += 1
                        kinds[f"HTTP {r.status_code}"] += 1
                except httpx.HTTPError as e:
                    errors += 1
                    kinds[type(e).__name__] += 1
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    if kinds:
        print("  errors: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    return len(latencies), errors, latencies


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _phase(
    name: str,
    url: str,
    server_pid: int,
    make: Callable[[int], tuple[str, dict[str, str]]],
    args: argparse.Namespace,
    base: float,
) -> float:
    cpu_before = _cpu_seconds(server_pid)
    count, errors, lat = asyncio.run(_load(url, make, args.seconds, args.concurrency))
    cpu_ms = (_cpu_seconds(server_pid) - cpu_before) * 1000 / max(count, 1)
    rate = count / float(args.seconds)
    lat_ms = sorted(x * 1000 for x in lat) or [0.0]
    p95 = lat_ms[int(0.95 * (len(lat_ms) - 1))]
    ratio = rate / base if base else 1.0
    print(
        f"{name:<10} {rate:9.0f} req/s  p50 {statistics.median(lat_ms):6.1f} ms  "
        f"p95 {p95:6.1f} ms  errors {errors:5d}  server CPU {cpu_ms:5.2f} ms/req  "
        f"{ratio:5.2f}x baseline"
    )
    return rate


@contextmanager
def _database(postgres_admin_url: str | None, work: Path) -> Iterator[tuple[str, str]]:
    """(database URL, label): SQLite in ``work``, or a new PostgreSQL database dropped after."""
    if postgres_admin_url is None:
        yield f"sqlite:///{work / 'bench.db'}", "SQLite"
        return
    import psycopg

    name = f"edgeota_bench_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = postgres_admin_url.rsplit("/", 1)[0]
            yield f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}", "PostgreSQL"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="postgresql://postgres@127.0.0.1:5432/postgres",
        metavar="ADMIN_URL",
        help="run the server on a throwaway database of this PostgreSQL server",
    )
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        _database(args.postgres, Path(tmp)) as (database_url, database),
        ProcessGroup() as procs,
    ):
        work = Path(tmp)
        secret = secrets.token_urlsafe(32)
        server = start_server(
            procs,
            work / "srv",
            work / "server.log",
            env={"EDGEOTA_BOOTSTRAP_ADMIN_TOKEN": secret, "EDGEOTA_DATABASE_URL": database_url},
        )
        url, pid = server.url, server.process.pid
        creds: list[tuple[str, str]] = []
        with AdminClient(url, f"eoa_{secret}") as admin, httpx.Client(base_url=url) as http:
            for i in range(args.devices):
                token = admin.enrollment_token(["bench"])
                r = http.post(
                    "/api/v1/enroll",
                    json={"enrollment_token": token, "name": f"b{i}", "hardware_class": "x"},
                )
                r.raise_for_status()
                body = r.json()
                creds.append((body["device_id"], body["credential"]))
            etags = {}
            for device_id, cred in creds:
                r = http.get(
                    f"/api/v1/devices/{device_id}/desired-state",
                    headers={"Authorization": f"Bearer {cred}"},
                )
                etags[device_id] = r.headers["etag"]

        def healthz(_: int) -> tuple[str, dict[str, str]]:
            return "/healthz", {}

        def steady(n: int) -> tuple[str, dict[str, str]]:
            device_id, cred = creds[n % len(creds)]
            return f"/api/v1/devices/{device_id}/desired-state", {
                "Authorization": f"Bearer {cred}",
                "If-None-Match": etags[device_id],
            }

        def reconnect(n: int) -> tuple[str, dict[str, str]]:
            device_id, cred = creds[n % len(creds)]
            return f"/api/v1/devices/{device_id}/desired-state", {"Authorization": f"Bearer {cred}"}

        print(
            f"{args.devices} devices, {args.concurrency} concurrent clients, "
            f"{args.seconds:.0f} s per phase, one server process ({database})"
        )
        base = _phase("baseline", url, pid, healthz, args, 0)
        for name, make in (("steady", steady), ("reconnect", reconnect)):
            _phase(name, url, pid, make, args, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
