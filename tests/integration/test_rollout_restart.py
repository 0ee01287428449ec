"""Operator commands on a rollout hold across a restart of the real server process.

A server process on a SQLite data dir, a small fleet of real agents (the simulator's
in-process agents: the real agent, API, TUF and download clients over HTTPS; only the
runtime is simulated), and a command through the CLI or the admin client. Then the server
is stopped (SIGTERM, or SIGKILL) and a new process started on the same data dir, port and
simulated clock, and the checks read what the restarted server and the devices say.

A paused or aborted rollout is watched next to a control rollout of another component with
the same plan over the same devices: once the control has soaked and finished, the loop of
the new process has run and the soak time has passed for both, so "nothing moved" is seen
on an event, not after a sleep.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edgeota.adminclient import AdminClient
from edgeota.cli.main import app
from edgeota.errors import HTTPStatusError
from edgeota.procs import ProcessGroup
from edgeota.releasefolder import LocalFile, LocalRelease, sha256_file
from edgeota.server.devcerts import DevCertificates
from edgeota.sim.clock import FleetClock
from edgeota.sim.device import SimDevice, SimEnv
from edgeota.sim.engine import FleetEngine
from edgeota.sim.faults import FaultPlan
from edgeota.sim.network import NetworkStats
from edgeota.sim.population import DeviceSpec
from edgeota.slotinfo import SlotInfo
from edgeota.timeutil import ScaledClock
from edgeota.trust.client import TrustClient
from harness import ServerHandle, start_server

pytestmark = pytest.mark.integration

GROUP = "lab"
DEVICES = 6
FIELD_TEST = 2  # the first devices form the field-test phase; the others the 100 % phase
CLOCK_SCALE = 60.0  # simulated seconds per wall-clock second
SOAK_S = 60.0  # simulated: a second of wall clock per phase
POLL_S = 0.3  # wall-clock seconds between a device's check-ins
STEP_TIMEOUT_S = 30.0


@dataclass
class Lab:
    procs: ProcessGroup
    work: Path
    certs: DevCertificates
    env: dict[str, str]
    server: ServerHandle
    devices: list[SimDevice]
    engine: FleetEngine
    transport: httpx.HTTPTransport  # the devices' connections to the server

    @property
    def admin(self) -> AdminClient:
        return self.server.admin

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server process with ``sig``; start a new one on the same data dir."""
        old = self.server
        # Idle keep-alive TLS connections hold a SIGTERM'd server in its graceful shutdown
        # for its whole 5 s timeout: drop them first (the transport reconnects on next use).
        old.admin.close()
        self.transport.close()
        self.procs.stop(old.process, sig)
        assert old.process.returncode is not None
        self.server = start_server(
            self.procs, self.work, self.certs, self.env, port=old.port, token=old.admin_token
        )
        assert self.server.process.pid != old.process.pid

    def run_until(self, done: Callable[[], bool], what: str) -> None:
        """Step the devices until ``done()``; TimeoutError naming ``what`` otherwise."""
        if not self.engine.run_until(done, STEP_TIMEOUT_S, check_every_s=0.2):
            raise TimeoutError(f"timed out after {STEP_TIMEOUT_S:.0f} s waiting for {what}")

    def cli(self, *args: str) -> str:
        server = self.server
        connect = ["--server", server.url, "--token", server.admin_token, "--ca", str(server.ca)]
        result = CliRunner().invoke(app, [*args, *connect], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.output

    def publish(self, component: str, version: str) -> dict[str, Any]:
        folder = self.work / "releases" / component / version
        folder.mkdir(parents=True)
        path = folder / "model.bin"
        path.write_bytes(f"{component} {version}\n".encode() * 4096)
        sha, length = sha256_file(path)
        local = LocalRelease(files=(LocalFile(path, "model.bin", "model", sha, length),))
        release: dict[str, Any] = self.admin.publish(local, component, version)
        return release

    def device_ids(self) -> list[str]:
        ids = [d.device_id for d in self.devices]
        assert all(ids)
        return [str(i) for i in ids]

    def create_rollout(self, release: dict[str, Any]) -> int:
        body = {
            "release": release["id"],
            "group": GROUP,
            "field_test_devices": self.device_ids()[:FIELD_TEST],
            "percentages": [100],
            "soak_s": SOAK_S,
            "switch_policy": "now",
            "seed": "restart",
        }
        return int(self.admin.create_rollout(body)["id"])

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        body: dict[str, Any] = self.admin.rollout(rollout_id)
        return body

    def wait_for(self, done: Callable[[], bool], what: str) -> None:
        """Poll the server (devices not stepping) until ``done()``."""
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def fleet(self) -> dict[str, dict[str, Any]]:
        return {str(d["id"]): d for d in self.admin.devices(GROUP)}

    def installed(self, component: str) -> dict[str, str | None]:
        """Device id -> the version of ``component`` the server says the device runs."""
        return {
            device_id: next(
                (c["version"] for c in d["components"] if c["component"] == component), None
            )
            for device_id, d in self.fleet().items()
        }

    def desired(self, component: str) -> dict[str, str | None]:
        return {device_id: d["desired"].get(component) for device_id, d in self.fleet().items()}

    def everywhere(self, component: str, version: str) -> bool:
        return set(self.installed(component).values()) == {version}


@pytest.fixture
def lab(tmp_path: Path, certs: DevCertificates) -> Iterator[Lab]:
    clock = ScaledClock(datetime.now(UTC), time.time(), CLOCK_SCALE)
    env = {
        "EDGEOTA_DATABASE_URL": "",  # SQLite in the data dir, whatever the caller's setting
        "EDGEOTA_CLOCK_START": clock.start.isoformat(),
        "EDGEOTA_CLOCK_ANCHOR_UNIX_S": repr(clock.anchor_unix_s),
        "EDGEOTA_CLOCK_SCALE": repr(clock.scale),
        "EDGEOTA_ROLLOUT_INTERVAL_S": "0.2",
    }
    with ProcessGroup() as procs:
        server = start_server(procs, tmp_path, certs, env)
        transport = httpx.HTTPTransport(verify=server.ssl_context())
        sim_env = SimEnv(
            server_url=server.url,
            root=server.root.read_bytes(),
            transport=transport,
            stats=NetworkStats(),
            faults=FaultPlan(),
            work_dir=tmp_path / "devices",
            poll_interval_s=POLL_S * CLOCK_SCALE,
            time_scale=CLOCK_SCALE,
        )
        specs = [DeviceSpec(i, f"dev-{i}", "x86-64-test", "UTC", ()) for i in range(DEVICES)]
        devices = [
            SimDevice(spec, sim_env, server.admin.enrollment_token([GROUP])) for spec in specs
        ]
        # The devices' clock follows the server's (same start and scale, never ahead of it).
        engine = FleetEngine(devices, FleetClock(clock(), CLOCK_SCALE), workers=DEVICES)
        lab = Lab(procs, tmp_path, certs, env, server, devices, engine, transport)
        try:
            engine.start(spread_s=0.3 * CLOCK_SCALE)
            lab.run_until(lambda: all(d.device_id for d in devices), "the devices to enroll")
            yield lab
        finally:
            engine.close()
            transport.close()
            lab.server.admin.close()


def _started_field_test(lab: Lab, rollout_id: int) -> Callable[[], bool]:
    def started() -> bool:
        body = lab.rollout(rollout_id)
        return bool(
            body["current_phase"] == "field-test" and body["phases"][0]["told"] == FIELD_TEST
        )

    return started


def _held(lab: Lab, rollout_id: int, before: dict[str, Any], component: str) -> None:
    """The rollout is as ``before``: same status and state, no new phase, no device told
    beyond the field test, and no device outside it told or running the release."""
    after = lab.rollout(rollout_id)
    assert after["status"] == before["status"]
    assert after["state_version"] == before["state_version"]
    assert after["current_phase"] == "field-test"
    assert after["phases"][1]["started_at"] is None
    assert [p["told"] for p in after["phases"]] == [FIELD_TEST, 0]
    field_test = set(lab.device_ids()[:FIELD_TEST])
    desired, installed = lab.desired(component), lab.installed(component)
    assert {d for d, v in desired.items() if v is not None} == field_test
    assert {d for d, v in installed.items() if v is not None} == field_test


def _complete_control(lab: Lab, control: int, held: int) -> None:
    """Step the devices until the control rollout (of beta) has completed everywhere and
    the held rollout's field test has updated."""
    lab.run_until(
        lambda: (
            lab.rollout(control)["status"] == "completed"
            and lab.everywhere("beta", "2.0.0")
            and lab.rollout(held)["phases"][0]["updated"] == FIELD_TEST
        ),
        "the control rollout to complete after the restart",
    )


def test_pause_then_resume_each_hold_across_a_restart(lab: Lab) -> None:
    alpha, beta = lab.publish("alpha", "2.0.0"), lab.publish("beta", "2.0.0")
    paused_id = lab.create_rollout(alpha)
    lab.wait_for(_started_field_test(lab, paused_id), "the field test of alpha to start")
    assert "paused" in lab.cli("rollout", "pause", str(paused_id))
    before = lab.rollout(paused_id)
    control = lab.create_rollout(beta)

    lab.restart()
    _complete_control(lab, control, paused_id)
    # The control soaked its field test and its 100 % phase: the paused one had the time
    # to advance twice, and did not.
    _held(lab, paused_id, before, "alpha")

    assert "running" in lab.cli("rollout", "resume", str(paused_id))
    lab.restart()
    assert lab.rollout(paused_id)["status"] == "running"
    lab.run_until(
        lambda: (
            lab.rollout(paused_id)["status"] == "completed" and lab.everywhere("alpha", "2.0.0")
        ),
        "the resumed rollout to complete after the second restart",
    )
    body = lab.rollout(paused_id)
    assert [p["updated"] for p in body["phases"]] == [FIELD_TEST, DEVICES - FIELD_TEST]
    assert all(p["started_at"] is not None for p in body["phases"])


def test_aborted_rollout_stays_aborted_and_tells_no_one_after_a_restart(lab: Lab) -> None:
    alpha, beta = lab.publish("alpha", "2.0.0"), lab.publish("beta", "2.0.0")
    aborted_id = lab.create_rollout(alpha)
    lab.wait_for(_started_field_test(lab, aborted_id), "the field test of alpha to start")
    assert lab.admin.rollout_command(aborted_id, "abort")["status"] == "aborted"
    before = lab.rollout(aborted_id)
    control = lab.create_rollout(beta)

    lab.restart()
    _complete_control(lab, control, aborted_id)
    # Devices told before the abort keep the release; nobody else was told.
    _held(lab, aborted_id, before, "alpha")
    # And an aborted rollout cannot be resumed by anyone, restart or not.
    with pytest.raises(
        HTTPStatusError, match=r"409 rollout \d+: cannot resume a rollout that is aborted"
    ):
        lab.admin.rollout_command(aborted_id, "resume")


def _file_sha(release: dict[str, Any]) -> str:
    return str(release["files"][0]["sha256"])


def test_fleet_rollback_survives_kill_9_and_devices_install_the_signed_republish(
    lab: Lab,
) -> None:
    v1, v2 = lab.publish("alpha", "1.0.0"), lab.publish("alpha", "2.0.0")
    lab.admin.deploy(v1["id"], GROUP)
    lab.run_until(lambda: lab.everywhere("alpha", "1.0.0"), "every device on 1.0.0")
    rollout_id = lab.create_rollout(v2)
    lab.run_until(
        lambda: (
            lab.rollout(rollout_id)["status"] == "completed" and lab.everywhere("alpha", "2.0.0")
        ),
        "the rollout of 2.0.0 to complete",
    )

    said = lab.cli("rollout", "rollback", str(rollout_id))
    assert "re-published the previous release as alpha 2.0.1" in said
    back_id = lab.rollout(rollout_id)["rolled_back_by"]
    republished = lab.admin.release("alpha@2.0.1")
    assert _file_sha(republished) == _file_sha(v1) != _file_sha(v2)
    assert set(lab.desired("alpha").values()) == {"2.0.1"}

    lab.restart(signal.SIGKILL)
    assert lab.rollout(rollout_id)["status"] == "rolling_back"
    # A client trusting only the pinned root verifies the re-published target as the new
    # process serves it: signed, with 1.0.0's bytes, under the new release id.
    server = lab.server
    with httpx.Client(verify=server.ssl_context()) as http:
        trust = TrustClient(
            lab.work / "fresh-tuf",
            f"{server.url}/tuf/metadata/",
            f"{server.url}/tuf/targets/",
            http,
            server.root.read_bytes(),
        )
        target = trust.get_target(republished["files"][0]["target_path"])
    assert target.sha256 == _file_sha(v1)
    assert target.custom.release_id == republished["id"]
    lab.run_until(
        lambda: lab.rollout(back_id)["status"] == "completed" and lab.everywhere("alpha", "2.0.1"),
        "every device on the re-published 2.0.1 after the restart",
    )
    assert lab.rollout(rollout_id)["status"] == "rolling_back"
    assert set(lab.desired("alpha").values()) == {"2.0.1"}
    # Each device installed it (its agent installs only targets it verified) and runs
    # 1.0.0's bytes under the new release id.
    for device in lab.devices:
        assert device.committed() == republished["id"]
        current = device.data_dir / "components" / "alpha" / "current"
        assert SlotInfo.read(current).release_id == republished["id"]
        model = hashlib.sha256((current / "model.bin").read_bytes()).hexdigest()
        assert model == _file_sha(v1)
