"""A real server builds deltas; a real agent updates by delta, and by the full file when the
delta is bad. Every test ends by comparing the installed model with the release's own file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgeota.procs import wait_until
from edgeota.releasefolder import load_release
from edgeota.slotinfo import SlotInfo
from harness import Fleet, ServerHandle

COMPONENT = "denoiser"
STEP_TIMEOUT_S = 90


def publish(server: ServerHandle, examples: Path, folder: str, version: str) -> dict[str, Any]:
    return server.admin.publish(load_release(examples / folder), COMPONENT, version)


def wait_deltas_built(server: ServerHandle, release_id: str) -> list[dict[str, Any]]:
    """The release's deltas once none is pending or running (the server builds them)."""
    found: list[dict[str, Any]] = []

    def settled() -> bool:
        found[:] = server.admin.release(release_id)["deltas"]
        return bool(found) and all(d["status"] not in ("pending", "running") for d in found)

    wait_until(settled, STEP_TIMEOUT_S, interval_s=0.3, what=f"deltas of {release_id} built")
    return found


def device_events(server: ServerHandle, name: str) -> list[dict[str, Any]]:
    device = next((d for d in server.admin.devices() if d["name"] == name), None)
    return [] if device is None else server.admin.events(device["id"], 200)


def wait_committed(
    server: ServerHandle, name: str, release_id: str, proc: subprocess.Popen[bytes]
) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def done() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"agent exited with {proc.returncode} before {release_id}")
        found[:] = [
            e
            for e in device_events(server, name)
            if e["event"] == "committed" and e["release_id"] == release_id
        ]
        return bool(found)

    wait_until(done, STEP_TIMEOUT_S, interval_s=0.3, what=f"{name} commits {release_id}")
    return found[0]


def start(fleet: Fleet, data_dir: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return fleet.start_agent(data_dir)


def installed_model(data_dir: Path) -> bytes:
    current = data_dir / "components" / COMPONENT / "current"
    info = SlotInfo.read(current)
    model = info.file_with_role("model")
    assert model is not None
    return (current / model.file).read_bytes()


@pytest.fixture
def on_v1(fleet: Fleet, examples: Path) -> tuple[Path, dict[str, Any]]:
    """One agent that has installed and committed v1; the agent is stopped again."""
    v1 = publish(fleet.server, examples, "v1", "1.0.0")
    fleet.server.admin.deploy(v1["id"], fleet.group)
    data_dir = fleet.work / "dev-1"
    proc = start(fleet, data_dir)
    wait_committed(fleet.server, "dev-1", v1["id"], proc)
    fleet.procs.stop(proc)
    return data_dir, v1


def test_agent_updates_by_delta(
    fleet: Fleet, examples: Path, on_v1: tuple[Path, dict[str, Any]]
) -> None:
    data_dir, v1 = on_v1
    v2 = publish(fleet.server, examples, "v2", "2.0.0")
    deltas = wait_deltas_built(fleet.server, v2["id"])
    assert {d["file"] for d in deltas if d["status"] == "done"} >= {"model.onnx"}
    assert {d["base_release_id"] for d in deltas} == {v1["id"]}

    proc = start(fleet, data_dir)
    fleet.server.admin.deploy(v2["id"], fleet.group)
    committed = wait_committed(fleet.server, "dev-1", v2["id"], proc)

    detail = committed["detail"]
    assert detail["delta_files"] >= 1
    assert detail["bytes_downloaded"] < detail["bytes_full"]
    assert detail["bytes_full"] == sum(f["length"] for f in v2["files"])
    assert not [e for e in device_events(fleet.server, "dev-1") if e["event"] == "delta_failed"]
    assert installed_model(data_dir) == (examples / "v2" / "model.onnx").read_bytes()


def test_corrupt_patch_falls_back_to_the_full_file_once(
    fleet: Fleet, examples: Path, on_v1: tuple[Path, dict[str, Any]]
) -> None:
    data_dir, _ = on_v1
    v2 = publish(fleet.server, examples, "v2", "2.0.0")
    deltas = wait_deltas_built(fleet.server, v2["id"])
    model_patch = next(d for d in deltas if d["file"] == "model.onnx" and d["status"] == "done")
    sha = model_patch["sha256"]
    stored = fleet.server.data_dir / "artifacts" / "sha256" / sha[:2] / sha
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01  # the signed hash no longer matches what is served
    stored.write_bytes(bytes(data))

    proc = start(fleet, data_dir)
    fleet.server.admin.deploy(v2["id"], fleet.group)
    committed = wait_committed(fleet.server, "dev-1", v2["id"], proc)

    failed = [e for e in device_events(fleet.server, "dev-1") if e["event"] == "delta_failed"]
    assert len(failed) == 1, json.dumps(failed, indent=1)
    assert failed[0]["release_id"] == v2["id"]
    assert failed[0]["detail"]["file"] == "model.onnx"
    assert failed[0]["detail"]["patch"] == model_patch["target_path"]
    assert "sha256" in (failed[0]["reason"] or "")
    model_full = next(f["length"] for f in v2["files"] if f["file"] == "model.onnx")
    detail = committed["detail"]
    # The model came in full (after the failed patch); any other file may still be a delta.
    assert detail["bytes_downloaded"] >= model_full + model_patch["length"]
    assert detail["delta_files"] == sum(1 for d in deltas if d["status"] == "done") - 1
    assert installed_model(data_dir) == (examples / "v2" / "model.onnx").read_bytes()
    assert proc.poll() is None
