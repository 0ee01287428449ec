"""Model variants on a real server and real agent processes: the server's choice, and the
device's quality gate rolling back a variant that is genuinely worse than its release says."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import numpy_helper

from edgeota.modelops.bundle import BuildOptions, build_bundle
from edgeota.procs import wait_until
from edgeota.releasefolder import load_release
from edgeota.slotinfo import SlotInfo
from harness import Fleet, ServerHandle

COMPONENT = "denoiser"
STEP_TIMEOUT_S = 90


def bundle(examples: Path, folder: str, out: Path, variants: list[str]) -> Path:
    """A bundle of the example model in ``folder``, probed with its own probe set."""
    build_bundle(
        examples / folder / "model.onnx",
        out,
        BuildOptions(variants=variants, probe=examples / folder / "probe.npz", repeat=2),
    )
    return out


def degrade_int8_weights(model_path: Path) -> float:
    """Negate the first int8 weight matrix: the file still loads and runs, and its outputs
    stay finite, but they are far from the original's. Returns how many values changed."""
    model = onnx.load(str(model_path))
    int8 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    weights = max(int8, key=lambda i: int(np.prod(i.dims)))  # not a zero point
    values = numpy_helper.to_array(weights)
    flipped = np.clip(-values.astype(np.int16), -127, 127).astype(np.int8)
    weights.CopyFrom(numpy_helper.from_array(flipped, weights.name))
    onnx.save(model, str(model_path))
    return float(np.count_nonzero(flipped != values))


def device_named(server: ServerHandle, name: str) -> dict[str, Any] | None:
    return next((d for d in server.admin.devices() if d["name"] == name), None)


def events(server: ServerHandle, name: str) -> list[dict[str, Any]]:
    device = device_named(server, name)
    return [] if device is None else server.admin.events(device["id"], 200)


def installed(server: ServerHandle, name: str) -> str | None:
    device = device_named(server, name)
    if device is None:
        return None
    return next((c["version"] for c in device["components"] if c["component"] == COMPONENT), None)


def wait_event(server: ServerHandle, name: str, event: str, release_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def done() -> bool:
        found[:] = [
            e for e in events(server, name) if e["event"] == event and e["release_id"] == release_id
        ]
        return bool(found)

    wait_until(done, STEP_TIMEOUT_S, interval_s=0.3, what=f"{name}: {event} of {release_id}")
    return found[0]


def start(fleet: Fleet, data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = fleet.agent_argv(data_dir, *extra)
    port = argv[argv.index("--runtime-port") + 1]
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "test-runtime-port.json").write_text(json.dumps({"port": int(port)}))
    proc = fleet.procs.start(argv, fleet.work / f"{data_dir.name}.log")
    fleet.started.append(proc)
    return proc


def serving(data_dir: Path) -> str:
    port = json.loads((data_dir / "test-runtime-port.json").read_text())["port"]
    try:
        return str(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["release_id"])
    except httpx.HTTPError:
        return "(not serving)"


def publish(server: ServerHandle, folder: Path, version: str) -> dict[str, Any]:
    release = server.admin.publish(load_release(folder), COMPONENT, version)
    server.admin.deploy(release["id"], "lab")
    return release


def test_degraded_quantized_variant_fails_the_quality_gate_and_rolls_back(
    fleet: Fleet, examples: Path, tmp_path: Path
) -> None:
    server, data_dir = fleet.server, fleet.work / "dev-q"
    v1 = publish(server, bundle(examples, "v1", tmp_path / "v1", ["fp32"]), "1.0.0")
    proc = start(fleet, data_dir)
    wait_until(lambda: installed(server, "dev-q") == "1.0.0", STEP_TIMEOUT_S, what="v1")
    # The device reported no budget on its first check-in: it waited for its inventory.
    assert wait_event(server, "dev-q", "awaiting_inventory", v1["id"])
    assert SlotInfo.read(data_dir / "components" / COMPONENT / "current").files[0].variant == (
        "fp32"
    )

    v2_dir = bundle(examples, "v2", tmp_path / "v2", ["int8"])
    assert degrade_int8_weights(v2_dir / "model-int8.onnx") > 0
    v2 = publish(server, v2_dir, "2.0.0")
    chosen = wait_event(server, "dev-q", "variant_chosen", v2["id"])
    assert chosen["detail"]["variant"] == "int8"

    rolled = wait_event(server, "dev-q", "rolled_back", v2["id"])
    failed = wait_event(server, "dev-q", "health_failed", v2["id"])
    reason = failed["reason"] or ""
    tolerance = json.loads((v2_dir / "release.json").read_text())["files"][1]["tolerance"]
    assert f"exceeds the tolerance {tolerance['max_abs_error']:.6g}" in reason, reason
    figures = failed["detail"]["figures"]
    assert figures["max_abs_error"] > tolerance["max_abs_error"]
    assert figures["peak_rss_mb"] < tolerance["max_peak_rss_mb"]  # memory was fine
    assert rolled["reason"] == reason
    assert installed(server, "dev-q") == "1.0.0"
    current = SlotInfo.read(data_dir / "components" / COMPONENT / "current")
    assert current.release_id == v1["id"]
    wait_until(lambda: serving(data_dir) == v1["id"], 30, what="runtime back on v1")
    assert proc.poll() is None


def test_device_that_fits_no_variant_installs_nothing_and_says_so(
    fleet: Fleet, examples: Path, tmp_path: Path
) -> None:
    server, data_dir = fleet.server, fleet.work / "dev-small"
    v1 = publish(server, bundle(examples, "v1", tmp_path / "v1", ["fp32", "int8"]), "1.0.0")
    proc = start(fleet, data_dir, "--model-ram-budget-mb", "16")
    told = wait_event(server, "dev-small", "no_variant_fits", v1["id"])
    assert "16 MB model RAM budget" in (told["reason"] or "")
    device = device_named(server, "dev-small")
    assert device is not None
    assert device["variant_choice"][COMPONENT]["status"] == "no_variant_fits"
    names = [e["event"] for e in events(server, "dev-small")]
    assert "update_found" not in names and "update_refused" not in names
    assert installed(server, "dev-small") is None
    assert proc.poll() is None
