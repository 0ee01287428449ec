"""The ``edgeota sim`` run: a fleet, a staged rollout of a good or broken release, the outcome.

1. start a server on loopback (or use ``--server``), on the run's simulated clock;
2. publish v1 and v2 of a small model component, deploy v1 to the fleet's group;
3. enroll the simulated devices (each a real agent) and let them install v1;
4. give every device its maintenance windows, arm the crash faults;
5. create a rollout of v2 (field test, then 1/10/50/100 %, switch in windows) and step the
   fleet until the rollout completes or halts and the devices it reached have settled;
6. report what the server and the devices say happened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from edgeota.adminclient import AdminClient
from edgeota.procs import ProcessGroup, start_server
from edgeota.releasefolder import LocalFile, LocalRelease, sha256_file
from edgeota.sim.clock import FleetClock
from edgeota.sim.device import SimDevice, SimEnv
from edgeota.sim.engine import FleetEngine
from edgeota.sim.faults import FaultPlan, crash_points
from edgeota.sim.network import NetworkStats, shared_transport
from edgeota.sim.outcome import DeviceReport, SimResult, device_report, plan_of
from edgeota.sim.population import BROKEN_CLASS, DeviceSpec, draw_fleet, pick_field_test

log = logging.getLogger(__name__)

DEFAULT_START = datetime(2027, 3, 26, tzinfo=UTC)  # runs through Europe's spring DST change
COMPONENT = "sim-model"
OLD, NEW = "1.0.0", "2.0.0"
ENDED = frozenset({"completed", "halted", "aborted"})
CLOCK_FILE = "clock"  # in the work folder: the simulated time, for the server started here


def auto_time_scale(devices: int) -> float:
    """A ceiling the machine can mostly keep up with: a larger fleet has more steps per
    simulated hour, and simulated time waits for steps that fall behind (FleetClock)."""
    return max(1000.0, min(10000.0, 3_000_000 / devices))


class SimError(Exception):
    """The simulation itself failed (not the rollout it simulates)."""


@dataclass(frozen=True)
class SimOptions:
    devices: int
    server: str | None = None  # None: start one on loopback
    token: str | None = None  # admin token for --server
    ca: Path | None = None
    release: str = "good"  # "good" | "broken"
    broken_share: float = 0.3  # share of the fleet in the class a broken release fails on
    seed: int = 0
    time_scale: float = 3600.0  # simulated seconds per wall-clock second
    drop_share: float = 0.02  # requests lost by the network
    crash_share: float = 0.02  # devices that crash mid-update
    field_test_share: float = 0.05
    soak_s: float = 1800.0  # simulated seconds each phase soaks
    settle_s: float = 2 * 86400.0  # simulated seconds devices get to settle after the end
    poll_interval_s: float | None = None  # wall-clock; default from the fleet size
    workers: int = 8
    model_kib: int = 64
    gate_devices: int = 0  # the rollout's simulated-environment gate
    timeout_s: float = 900.0  # wall-clock budget of the whole run
    start: datetime = DEFAULT_START
    work_dir: Path | None = None
    keep: bool = False  # keep the work folder (server data, device folders, logs)
    report: Path | None = None  # write per-device details here

    def __post_init__(self) -> None:
        if self.release not in ("good", "broken"):
            raise ValueError(f"release must be 'good' or 'broken', not {self.release!r}")
        if self.devices < 1:
            raise ValueError("--devices must be at least 1")
        if self.time_scale <= 0:
            raise ValueError("--time-scale must be > 0")
        if self.server is not None and not self.token:
            raise ValueError("--server needs an admin token (--token or EDGEOTA_ADMIN_TOKEN)")

    @property
    def poll_s(self) -> float:
        if self.poll_interval_s is not None:
            return self.poll_interval_s
        # About 200 check-ins a second at most, whatever the fleet size.
        return max(1.0, self.devices / 200)


@dataclass
class _Server:
    url: str
    admin: AdminClient
    root: bytes
    own: bool  # started here, on the run's clock
    log: Path | None = None


def run_sim(opts: SimOptions, say: Callable[[str], None] = lambda _m: None) -> SimResult:
    started = time.monotonic()
    work = _work_dir(opts)
    say(f"work folder {work}")
    # The server started here reads the run's simulated time from this file.
    publish = None if opts.server is not None else work / CLOCK_FILE
    clock = FleetClock(opts.start, opts.time_scale, publish_to=publish)
    try:
        with ProcessGroup() as procs, _server(opts, procs, work) as server:
            return _run(opts, server, work, clock, say, started)
    finally:
        clock.close()
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


def _work_dir(opts: SimOptions) -> Path:
    if opts.work_dir is not None:
        opts.work_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="run-", dir=opts.work_dir))
    # tmpfs where there is one: a thousand journals fsync'd on every step stay cheap.
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp folder below it
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="edgeota-sim-", dir=base))


@contextlib.contextmanager
def _server(opts: SimOptions, procs: ProcessGroup, work: Path) -> Iterator[_Server]:
    if opts.server is not None:
        assert opts.token is not None
        url = opts.server.rstrip("/")
        verify = True if opts.ca is None else str(opts.ca)
        root = httpx.get(f"{url}/tuf/metadata/1.root.json", verify=verify, timeout=30).content
        with AdminClient(url, opts.token, opts.ca) as admin:
            yield _Server(url, admin, root, own=False)
        return
    secret = secrets.token_urlsafe(32)
    try:
        started = start_server(
            procs,
            work / "server",
            work / "server.log",
            env={
                # Its own database in the work folder, whatever the caller's environment says.
                "EDGEOTA_DATABASE_URL": "",
                "EDGEOTA_ENVIRONMENT": "development",
                "EDGEOTA_BOOTSTRAP_ADMIN_TOKEN": secret,
                "EDGEOTA_CLOCK_FILE": str(work / CLOCK_FILE),
                "EDGEOTA_ROLLOUT_INTERVAL_S": "0.2",
                "EDGEOTA_POLL_INTERVAL_S": str(max(1, round(opts.poll_s))),
            },
        )
    except RuntimeError as e:
        raise SimError(str(e)) from e
    root = (work / "server" / "tuf" / "metadata" / "1.root.json").read_bytes()
    with AdminClient(started.url, f"eoa_{secret}") as admin:
        yield _Server(started.url, admin, root, own=True, log=started.log)


def _publish(server: _Server, work: Path, opts: SimOptions, component: str) -> tuple[str, str]:
    """Publish v1 and v2 of ``component`` (small random model files); their release ids."""
    rng = random.Random(opts.seed)
    ids = []
    for version in (OLD, NEW):
        folder = work / "releases" / version
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.bin"
        path.write_bytes(rng.randbytes(opts.model_kib * 1024))
        sha, length = sha256_file(path)
        release = LocalRelease(files=(LocalFile(path, "model.bin", "model", sha, length),))
        ids.append(str(server.admin.publish(release, component, version)["id"]))
    return ids[0], ids[1]


def _parallel(work: Callable[[Any], Any], items: list[Any], threads: int = 8) -> list[Any]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(work, items))


def _run(
    opts: SimOptions,
    server: _Server,
    work: Path,
    clock: FleetClock,
    say: Callable[[str], None],
    started: float,
) -> SimResult:
    run_id = "fleet" if server.own else secrets.token_hex(3)
    group, component = f"simulated-{run_id}", COMPONENT if server.own else f"{COMPONENT}-{run_id}"
    admin = server.admin
    old_id, new_id = _publish(server, work, opts, component)
    admin.deploy(old_id, group)
    say(f"published {component} {OLD} and {NEW}; {OLD} deployed to group {group}")

    specs = draw_fleet(
        opts.devices,
        seed=opts.seed,
        broken_share=opts.broken_share,
        crash_share=opts.crash_share,
        crash_points=crash_points(),
    )
    broken = {new_id: frozenset({BROKEN_CLASS})} if opts.release == "broken" else {}
    stats = NetworkStats()
    transport = shared_transport(stats, connections=opts.workers * 2)
    env = SimEnv(
        server_url=server.url,
        root=server.root,
        transport=transport,
        stats=stats,
        faults=FaultPlan(broken, opts.drop_share),
        work_dir=work / "devices",
        poll_interval_s=opts.poll_s * opts.time_scale,
        time_scale=opts.time_scale,
        # Half an hour of the window left for a switch: its restart and health check.
        switch_margin_s=1800.0,
        seed=opts.seed,
    )
    tokens = _parallel(lambda _s: admin.enrollment_token([group], 7 * 86400), list(specs))
    devices = [SimDevice(spec, env, token) for spec, token in zip(specs, tokens, strict=True)]
    engine = FleetEngine(devices, clock, workers=opts.workers, seed=opts.seed)
    deadline = time.monotonic() + opts.timeout_s
    try:
        engine.start(spread_s=min(5.0, opts.poll_s) * opts.time_scale)
        setup_s = min(_left(deadline), 60 + 0.5 * len(devices))
        if not engine.run_until(lambda: all(d.committed() == old_id for d in devices), setup_s):
            missing = [d.spec.name for d in devices if d.committed() != old_id]
            raise SimError(
                f"{len(missing)} of {len(devices)} devices did not enroll and install {OLD} "
                f"within {setup_s:.0f} s ({', '.join(missing[:5])}); see {work / 'devices'} "
                "with --keep"
            )
        say(f"{len(devices)} devices enrolled and running {OLD}")

        _parallel(lambda d: _set_windows(admin, d), devices)
        for d in devices:
            d.arm_crash()
        at_start = clock()
        open_now = sum(_window_open(d.spec, at_start) for d in devices)
        ids = {d.spec.index: d.device_id for d in devices}
        field_test = [
            ids[s.index] for s in pick_field_test(specs, opts.field_test_share, opts.seed)
        ]
        body: dict[str, Any] = {
            "release": new_id,
            "group": group,
            "field_test_devices": field_test,
            "percentages": [1, 10, 50, 100],
            "soak_s": opts.soak_s if server.own else 0,
            "switch_policy": "window",
            "seed": f"sim-{opts.seed}",
            "sim_gate_devices": opts.gate_devices,
        }
        rollout = admin.create_rollout(body)
        say(
            f"rollout {rollout['id']} of {NEW} created ({len(field_test)} field-test devices; "
            f"{open_now} of {len(devices)} devices inside a window now)"
        )
        engine.wake_all(within_s=0.5 * opts.time_scale)
        engine.reset_stats()  # from here on, the figures are the rollout's
        watch = _Watch(admin, int(rollout["id"]), devices, new_id, clock, opts.settle_s, say)
        if not engine.run_until(watch.done, _left(deadline)):
            raise SimError(
                f"timed out after {opts.timeout_s:.0f} s with the rollout "
                f"{watch.rollout.get('status')}: raise --timeout or --time-scale"
            )
    finally:
        engine.close()
        transport.close()
    final = watch.rollout
    installed = _installed(admin, group, component)
    if not server.own:
        # Someone else's server: its operators should not find a simulated fleet left behind.
        _parallel(lambda d: admin.revoke(d.device_id), [d for d in devices if d.device_id])
    versions = Counter(v or "none" for v in installed.values())
    plan = plan_of(final)
    reports = [device_report(d, new_id, plan, installed) for d in devices]
    result = SimResult.build(
        opts=_options_json(opts),
        rollout=final,
        reports=reports,
        final_versions=dict(sorted(versions.items())),
        stats=stats,
        engine=engine.stats,
        clock=clock,
        windows_open_at_start=open_now,
        sim_hours=(clock() - at_start).total_seconds() / 3600,
        settled=watch.settled,
    )
    result.seconds = time.monotonic() - started
    if opts.report is not None:
        result.write_report(opts.report, reports)
    return result


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _set_windows(admin: AdminClient, device: SimDevice) -> None:
    assert device.device_id is not None
    windows = [w.to_api() for w in device.spec.windows]
    admin.set_windows(device.device_id, windows, time_zone=device.spec.time_zone)


def _window_open(spec: DeviceSpec, now: datetime) -> bool:
    from edgeota.rollout.windows import MaintenanceWindow, in_window

    windows = [MaintenanceWindow(w.cron, w.duration_s, w.time_zone) for w in spec.windows]
    return in_window(windows, now)


def _installed(admin: AdminClient, group: str, component: str) -> dict[str, str | None]:
    """Device id -> the version of ``component`` the server says it runs."""
    return {
        str(device["id"]): next(
            (c["version"] for c in device["components"] if c["component"] == component), None
        )
        for device in admin.devices(group)
    }


def _options_json(opts: SimOptions) -> dict[str, Any]:
    return {
        "release": opts.release,
        "broken_share": opts.broken_share,
        "seed": opts.seed,
        "time_scale": opts.time_scale,
        "drop_share": opts.drop_share,
        "crash_share": opts.crash_share,
        "gate_devices": opts.gate_devices,
    }


@dataclass
class _Watch:
    """Follows the rollout; done once it ended and the devices it reached have settled."""

    admin: AdminClient
    rollout_id: int
    devices: list[SimDevice]
    release_id: str
    clock: Callable[[], datetime]
    settle_s: float
    say: Callable[[str], None]
    rollout: dict[str, Any] = field(default_factory=dict)
    ended_at: datetime | None = None
    settled: bool = False
    _last: str = ""

    def done(self) -> bool:
        self.rollout = self.admin.rollout(self.rollout_id)
        status = str(self.rollout["status"])
        phase = self.rollout.get("current_phase") or "-"
        line = f"rollout {status}, phase {phase}"
        if line != self._last:
            self._last = line
            self.say(f"{line} (simulated {self.clock():%Y-%m-%d %H:%M} UTC)")
        if status not in ENDED:
            return False
        if self.ended_at is None:
            self.ended_at = self.clock()
            if self.rollout.get("halt_reason") and status == "halted":
                self.say(f"halted: {self.rollout['halt_reason']}")
        self.settled = self._settled(status)
        waited = (self.clock() - self.ended_at).total_seconds()
        return self.settled or waited > self.settle_s

    def _settled(self, status: str) -> bool:
        if status == "completed":
            return all(d.committed() == self.release_id for d in self.devices)
        told = sum(p["told"] for p in self.rollout["phases"])
        reached = [d for d in self.devices if d.events(self.release_id)]
        return len(reached) >= told and all(d.outcome(self.release_id) for d in reached)


__all__ = ["DeviceReport", "SimError", "SimOptions", "SimResult", "run_sim"]
