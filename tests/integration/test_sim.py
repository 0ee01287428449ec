"""The fleet simulator end to end: ``edgeota sim`` as a user runs it, and the rollout's
simulated-environment gate on a real server.

Each ``edgeota sim`` run starts its own server and 200 real agents (simulated runtimes),
with a lossy network and crashes mid-update, and runs a staged rollout in simulated time.
The checks read the per-device report and recompute what matters from the raw data: the
phase of each device, and whether each switch time lies inside one of its windows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeota.procs import wait_until
from edgeota.releasefolder import load_release
from edgeota.rollout.windows import MaintenanceWindow
from edgeota.sim.population import BROKEN_CLASS
from harness import ServerHandle

# A busy machine slows simulated time down (it waits for the devices' steps) rather than
# making devices late: give a slow machine the wall-clock time that takes.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(660)]

DEVICES = 200
TIME_SCALE = "10000"  # five simulated days of windows in under a minute


def run_sim(tmp_path: Path, *args: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeota",
            "sim",
            "--devices",
            str(DEVICES),
            "--time-scale",
            TIME_SCALE,
            "--report",
            str(report),
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    devices: list[dict[str, Any]] = json.loads(report.read_text())["devices"]
    assert result["devices"] == len(devices) == DEVICES
    for key in ("final_versions", "failed", "rolled_back", "phases_reached", "halted"):
        assert key in result
    assert result["bytes_sent"] > 0 and result["seconds"] > 0
    # Simulated time never ran more than its lead (5 simulated minutes) past a step that
    # was waiting for a worker, however busy the machine.
    assert result["step_late_p95_sim_s"] <= 300
    assert 0 < result["effective_time_scale"] <= float(TIME_SCALE) * 1.01
    return result, devices


def test_broken_release_halts_in_the_field_test_and_rolls_itself_back(tmp_path: Path) -> None:
    result, devices = run_sim(tmp_path, "--release", "broken", "--broken-share", "0.3")
    assert result["halted"] is True
    started = len(result["phases_reached"])
    assert result["phases_reached"] in (["field-test"], ["field-test", "1%"])
    assert "crossed its failure threshold" in result["halt_reason"]

    got = [d for d in devices if d["received"]]
    assert got, "the field test received the release"
    # No device outside the phases already started received it.
    assert all(d["phase"] is not None and d["phase"] < started for d in got)
    assert result["outside_started_phases"] == 0
    # Every device it broke on rolled back by itself, and runs the old version again.
    broke = [d for d in got if d["hardware_class"] == BROKEN_CLASS and d["switched_at"]]
    assert broke
    assert all(d["outcome"] == "rolled_back" for d in broke)
    assert all(d["final_version"] == "1.0.0" for d in broke)
    assert result["rolled_back"] == len(broke)
    # Elsewhere the release works; nobody who did not get it moved.
    assert all(d["final_version"] == "2.0.0" for d in got if d["hardware_class"] != BROKEN_CLASS)
    assert all(d["final_version"] == "1.0.0" for d in devices if not d["received"])


def test_good_release_reaches_every_device_each_inside_its_own_window(tmp_path: Path) -> None:
    result, devices = run_sim(tmp_path, "--release", "good")
    assert result["halted"] is False and result["rollout_status"] == "completed"
    assert result["phases_reached"] == ["field-test", "1%", "10%", "50%", "100%"]
    assert result["final_versions"] == {"2.0.0": DEVICES}

    # Windows were not all open: most devices had to wait for theirs.
    assert result["windows_open_at_start"] < DEVICES / 4
    assert sum(d["waited_for_window"] for d in devices) > DEVICES / 2
    for d in devices:
        windows = [
            MaintenanceWindow(w["cron"], w["duration_s"], w["time_zone"]) for w in d["windows"]
        ]
        assert d["switched_at"], d["name"]
        for t in d["switched_at"]:
            when = datetime.fromisoformat(t)
            assert any(w.is_open(when) for w in windows), (d["name"], t, d["windows"])
    assert result["switched_outside_window"] == 0


def _enroll_placeholder(server: ServerHandle, group: str) -> None:
    """A device record in the target group (the gate needs a group to target)."""
    token = server.admin.enrollment_token([group])
    r = httpx.post(
        f"{server.url}/api/v1/enroll",
        json={"enrollment_token": token, "name": "placeholder", "hardware_class": "x86-64-test"},
        verify=server.ssl_context(),
    )
    assert r.status_code == 201, r.text


def test_simulated_environment_gate_stops_a_broken_model_before_real_devices(
    server: ServerHandle, examples: Path
) -> None:
    _enroll_placeholder(server, "lab")
    broken = server.admin.publish(load_release(examples / "v3-broken"), "denoiser", "3.0.0")
    rollout = server.admin.create_rollout(
        {"release": broken["id"], "group": "lab", "percentages": [100], "sim_gate_devices": 2}
    )
    assert rollout["gate"] == "waiting"

    def ended() -> bool:
        return server.admin.rollout(rollout["id"])["status"] != "scheduled"

    wait_until(ended, 120, interval_s=0.5, what="the gate of the broken release")
    body = server.admin.rollout(rollout["id"])
    assert body["status"] == "halted" and body["gate"] == "failed"
    assert body["halt_reason"].startswith("simulated environment: 2 of 2 simulated devices")
    assert "NaN" in body["halt_reason"] or "non-finite" in body["halt_reason"]
    assert all(p["told"] == 0 for p in body["phases"])
    # The gate's devices are simulated: no real group holds them, and they were revoked.
    gate_devices = server.admin.devices(f"simulated-gate-{rollout['id']}")
    assert len(gate_devices) == 2 and all(d["revoked"] for d in gate_devices)
    assert [d["name"] for d in server.admin.devices("lab")] == ["placeholder"]
