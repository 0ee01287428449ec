#!/usr/bin/env python3
"""Power cuts: kill -9 a real agent at random instants of real updates, many times over.

One server on loopback (HTTPS with generated certificates, SQLite) and one device. The
server always has a release newer than what the device has settled on: the example model's
v1 and v2 in turn, and every fourth release the broken v3 (NaN outputs), which the device
installs, health-checks and rolls back. Each cycle starts the ``edgeota agent`` process on
the same data folder and SIGKILLs it after a random delay drawn from the time a whole
update takes (measured first), so the kills land in every phase: check-in, download,
staging, switch, health check, commit, rollback.

After every kill, with the agent dead (what a device finds when power comes back):
  - the journal parses;
  - the committed slot verifies (every file against its signed hash) and holds the release
    the journal says it does;
  - ``current`` points at the committed slot or at the slot of the release under trial.
Every ``--check-every`` cycles and at the end the agent runs undisturbed until the device
settles; then the runtime must serve the committed release, the server must report the
same version, and no more than one runtime process may run for the device (none left
behind by the killed agents). The end prints where the kills landed (the journal state at
each kill) and how many cycles broke an invariant (the goal: 0).

Run: .venv/bin/python bench/power_cut.py [--cycles 200] [--seed 0] [--check-every 25] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from benchkit import https_server

from edgeota.adminclient import AdminClient
from edgeota.agent.driver import running_runtimes
from edgeota.agent.journal import ComponentRecord, Journal
from edgeota.agent.slots import ComponentSlots
from edgeota.errors import EdgeotaError
from edgeota.modelops.digits import ExampleReleases, build_example_releases
from edgeota.procs import ProcessGroup, free_port, wait_until
from edgeota.releasefolder import load_release

GROUP = "bench"
COMPONENT = "denoiser"
SETTLE_TIMEOUT_S = 300.0


@dataclass
class Device:
    data_dir: Path
    runtime_port: int
    argv: list[str]

    def journal(self) -> ComponentRecord | None:
        return Journal.load(self.data_dir / "journal.json").components.get(COMPONENT)

    def runtime_pids(self) -> list[int]:
        """Runtime processes serving a slot of this device, whoever started them."""
        return [pid for pid, slot in running_runtimes().items() if self.data_dir in slot.parents]

    def serving(self) -> str | None:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.runtime_port}/healthz", timeout=5)
            return str(r.json()["release_id"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None


@dataclass
class Releases:
    """Publishes the next release whenever the device has settled on the newest one."""

    admin: AdminClient
    examples: ExampleReleases
    published: list[dict[str, object]] = field(default_factory=list)

    @property
    def newest(self) -> str:
        return str(self.published[-1]["id"])

    def ensure_newer(self, rec: ComponentRecord | None) -> None:
        """Publish the next release if the device has settled on the newest one."""
        if rec is not None and (
            (rec.committed is not None and rec.committed.release_id == self.newest)
            or self.newest in rec.failed_release_ids
        ):
            self.publish_next()

    def publish_next(self) -> None:
        n = len(self.published) + 1
        e = self.examples
        folder = e.v3_broken if n % 4 == 0 else (e.v1 if n % 2 else e.v2)
        release = self.admin.publish(load_release(folder.path), COMPONENT, f"{n}.0.0")
        self.admin.deploy(str(release["id"]), GROUP)
        self.published.append(release)


def check_after_kill(device: Device) -> list[str]:
    """What a device with its power just back must find; the broken invariants, if any."""
    try:
        rec = device.journal()
    except (EdgeotaError, ValueError, OSError) as e:
        return [f"journal unreadable: {e}"]
    if rec is None or rec.committed_slot is None:
        return []  # nothing installed yet: nothing to keep working
    problems = []
    slots = ComponentSlots(device.data_dir, COMPONENT)
    try:
        info = slots.verify(rec.committed_slot)
        if rec.committed is not None and info.release_id != rec.committed.release_id:
            problems.append(f"committed slot holds {info.release_id}, journal says otherwise")
    except EdgeotaError as e:
        problems.append(f"committed slot {rec.committed_slot} does not verify: {e}")
    allowed = {rec.committed_slot} | ({rec.pending.slot} if rec.pending else set())
    if slots.active() not in allowed:
        problems.append(f"current points at {slots.active()}, not at {sorted(allowed)}")
    return problems


def settle(
    device: Device, procs: ProcessGroup, admin: AdminClient, newest: str, log: Path
) -> list[str]:
    """Run the agent undisturbed until the device settles on ``newest`` (committed, or
    rolled back from it); then check it serves its committed release and the server agrees."""
    agent = procs.start(device.argv, log)

    def settled() -> bool:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited with {agent.returncode}; see {log}")
        rec = device.journal()
        return (
            rec is not None
            and rec.state.value == "idle"
            and rec.committed is not None
            and (rec.committed.release_id == newest or newest in rec.failed_release_ids)
        )

    wait_until(settled, SETTLE_TIMEOUT_S, 0.3, "the device settled")
    rec = device.journal()
    assert rec is not None and rec.committed is not None
    committed = rec.committed
    problems = []
    try:
        wait_until(lambda: device.serving() == committed.release_id, 60, 0.3, "serving")
    except TimeoutError:
        problems.append(f"runtime serves {device.serving()}, not {committed.release_id}")
    try:
        wait_until(lambda: _server_version(admin) == committed.version, 30, 0.3, "the server")
    except TimeoutError:
        problems.append(f"server says {_server_version(admin)}, device {committed.version}")
    if len(device.runtime_pids()) > 1:
        problems.append(f"{len(device.runtime_pids())} runtime processes for one device")
    agent.send_signal(signal.SIGTERM)
    agent.wait(60)
    return problems


def _server_version(admin: AdminClient) -> str | None:
    device = admin.devices(GROUP)[0]
    state = admin.device(str(device["id"]))
    comp = next((c for c in state["components"] if c["component"] == COMPONENT), None)
    return None if comp is None else str(comp["version"])


def timed_update(
    device: Device, procs: ProcessGroup, admin: AdminClient, newest: str, log: Path
) -> float:
    """Seconds from the agent's start to a settled device: the span the kills are drawn from."""
    started = time.monotonic()
    problems = settle(device, procs, admin, newest, log)
    if problems:
        raise RuntimeError(f"the undisturbed first update went wrong: {problems}")
    return time.monotonic() - started


def run(work: Path, cycles: int, seed: int, check_every: int, say: Callable[[str], None]) -> int:
    rng = random.Random(seed)
    examples = build_example_releases(work / "models")
    with ProcessGroup() as procs, https_server(procs, work) as server:
        admin = server.admin
        releases = Releases(admin, examples)
        releases.publish_next()
        port = free_port()
        argv = server.agent_argv(
            work / "device", "power-cut", port, [GROUP], "--poll-interval", "1"
        )
        device = Device(work / "device", port, argv)
        log = work / "agent.log"
        releases.publish_next()
        span = timed_update(device, procs, admin, releases.newest, log)
        say(f"one undisturbed update takes {span:.1f} s; kills are drawn from [0, {span:.1f}]")

        landed: Counter[str] = Counter()
        broken: list[tuple[int, str]] = []
        started = time.monotonic()
        for cycle in range(1, cycles + 1):
            releases.ensure_newer(device.journal())
            agent = procs.start(device.argv, log)
            delay = rng.uniform(0, span)
            try:
                agent.wait(delay)
                broken.append((cycle, f"the agent exited by itself ({agent.returncode})"))
            except subprocess.TimeoutExpired:
                agent.send_signal(signal.SIGKILL)
                agent.wait(30)
            rec = device.journal()
            landed[rec.state.value if rec else "not enrolled"] += 1
            broken.extend((cycle, p) for p in check_after_kill(device))
            if cycle % check_every == 0 or cycle == cycles:
                found = settle(device, procs, admin, releases.newest, log)
                broken.extend((cycle, p) for p in found)
                took = time.monotonic() - started
                say(
                    f"cycle {cycle}/{cycles}: {len(releases.published)} releases, "
                    f"{len(broken)} broken invariants, {took:.0f} s"
                )
        left = device.runtime_pids()
        if left:
            broken.append((cycles, f"{len(left)} runtime processes left after a clean stop"))

    print(json.dumps({"cycles": cycles, "seed": seed, "kills_landed_in": dict(landed)}))
    print(f"{cycles} kill -9 cycles, {len(releases.published)} releases published")
    print("journal state at the kill: " + ", ".join(f"{k} {v}" for k, v in landed.most_common()))
    print(f"broken invariants: {len(broken)}")
    for cycle, problem in broken[:20]:
        print(f"  cycle {cycle}: {problem}")
    return 1 if broken else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-every", type=int, default=25)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeota-power-cut-"))
    try:
        return run(work, args.cycles, args.seed, args.check_every, lambda m: print(m, flush=True))
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
