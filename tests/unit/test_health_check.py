"""The device health check against a real runtime server on loopback."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgeota.agent.health import HealthReport, check_runtime_health
from edgeota.errors import HealthCheckError
from edgeota.modelops.digits import ExampleReleases, build_example_releases
from edgeota.runtime.model import LoadedModel
from edgeota.runtime.probe import ProbeSet, load_probe, save_probe
from edgeota.runtime.server import build_runtime_server
from edgeota.slotinfo import SlotFile, SlotInfo


def install_release(release_dir: Path, slot_dir: Path, version: str) -> SlotInfo:
    """Copy a release folder into a slot and describe it, as the agent does after verifying."""
    manifest = json.loads((release_dir / "release.json").read_text())
    slot_dir.mkdir(parents=True)
    files, tolerance, digest = [], {}, hashlib.sha256()
    for entry in manifest["files"]:
        data = (release_dir / entry["path"]).read_bytes()
        (slot_dir / entry["path"]).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        digest.update(sha.encode())
        files.append(SlotFile(entry["path"], entry["role"], sha, len(data), entry.get("variant")))
        tolerance.update(entry.get("tolerance", {}))
    info = SlotInfo("denoiser", version, f"rel-{digest.hexdigest()[:16]}", tuple(files), tolerance)
    info.write(slot_dir)
    return info


@contextmanager
def running(slot_dir: Path) -> Iterator[str]:
    server = build_runtime_server(LoadedModel.load(slot_dir), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> ExampleReleases:
    return build_example_releases(tmp_path_factory.getbasetemp() / "digits-releases", seed=0)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as c:
        yield c


def check(url: str, slot: Path, client: httpx.Client, timeout_s: float = 30.0) -> HealthReport:
    return check_runtime_health(url, slot, client, timeout_s)


def test_good_release_passes_with_figures(
    built: ExampleReleases, tmp_path: Path, client: httpx.Client
) -> None:
    slot = tmp_path / "b"
    install_release(built.v2.path, slot, "2.0.0")
    with running(slot) as url:
        report = check(url, slot, client)
    assert report.ok, report.reason
    assert report.reason is None
    assert report.figures["max_abs_error"] <= built.v2.tolerance["max_abs_error"]
    assert report.figures["psnr_db"] > 60
    assert report.figures["probe_examples"] == 16
    assert report.figures["latency_ms"] > 0
    report.raise_if_failed()


def test_release_with_nan_outputs_fails(
    built: ExampleReleases, tmp_path: Path, client: httpx.Client
) -> None:
    slot = tmp_path / "b"
    install_release(built.v3_broken.path, slot, "3.0.0")
    with running(slot) as url:
        report = check(url, slot, client)
    assert not report.ok
    assert report.reason is not None
    assert "NaN" in report.reason
    assert report.figures["non_finite_values"] == 16 * 64
    with pytest.raises(HealthCheckError, match="NaN"):
        report.raise_if_failed()


def test_outputs_beyond_tolerance_fail(
    built: ExampleReleases, tmp_path: Path, client: httpx.Client
) -> None:
    slot = tmp_path / "b"
    install_release(built.v2.path, slot, "2.0.0")
    probe = load_probe(slot / "probe.npz")
    shifted = {k: v + np.float32(0.05) for k, v in probe.references.items()}
    save_probe(slot / "probe.npz", ProbeSet(probe.inputs, shifted))
    with running(slot) as url:
        report = check(url, slot, client)
    assert not report.ok
    assert report.reason is not None
    assert "exceeds the tolerance" in report.reason


def test_old_runtime_still_serving_fails(
    built: ExampleReleases, tmp_path: Path, client: httpx.Client
) -> None:
    old, new = tmp_path / "a", tmp_path / "b"
    old_info = install_release(built.v1.path, old, "1.0.0")
    new_info = install_release(built.v2.path, new, "2.0.0")
    with running(old) as url:
        report = check(url, new, client)
    assert not report.ok
    assert report.reason is not None
    assert f"serves release {old_info.release_id!r}" in report.reason
    assert new_info.release_id in report.reason


def test_release_without_probe_set_passes_on_healthz_and_says_so(
    built: ExampleReleases, tmp_path: Path, client: httpx.Client
) -> None:
    slot = tmp_path / "b"
    info = install_release(built.v2.path, slot, "2.0.0")
    (slot / "probe.npz").unlink()
    model_only = tuple(f for f in info.files if f.role == "model")
    SlotInfo(info.component, info.version, info.release_id, model_only).write(slot)
    with running(slot) as url:
        report = check(url, slot, client)
    assert report.ok
    assert report.reason is not None
    assert "ships no probe set" in report.reason
    assert "healthz_ms" in report.figures


def test_closed_port_fails_with_the_reason(
    built: ExampleReleases, tmp_path: Path, client: httpx.Client
) -> None:
    slot = tmp_path / "b"
    install_release(built.v2.path, slot, "2.0.0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = check(f"http://127.0.0.1:{port}", slot, client)
    assert not report.ok
    assert report.reason is not None
    assert "runtime unreachable" in report.reason
    assert "/healthz" in report.reason


def test_silent_runtime_times_out_within_the_budget(
    built: ExampleReleases, tmp_path: Path, client: httpx.Client
) -> None:
    slot = tmp_path / "b"
    install_release(built.v2.path, slot, "2.0.0")
    # A socket that accepts connections (backlog) but never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        report = check(url, slot, client, timeout_s=0.3)
    assert not report.ok
    assert report.reason is not None
    assert "timed out" in report.reason


def test_unreadable_slot_fails(tmp_path: Path, client: httpx.Client) -> None:
    report = check("http://127.0.0.1:9", tmp_path, client)
    assert not report.ok
    assert report.reason is not None
    assert "cannot read the slot description" in report.reason


# --- runtime budgets (latency, peak RSS) -------------------------------------------------------


def with_tolerance(slot: Path, **extra: float) -> None:
    import dataclasses

    info = SlotInfo.read(slot)
    dataclasses.replace(info, tolerance={**info.tolerance, **extra}).write(slot)


def test_generous_budgets_pass_and_the_runtime_reports_its_peak_rss(
    built: ExampleReleases, tmp_path: Path, client: httpx.Client
) -> None:
    slot = tmp_path / "b"
    install_release(built.v2.path, slot, "2.0.0")
    with_tolerance(slot, max_latency_ms=60_000.0, max_peak_rss_mb=16_384.0)
    with running(slot) as url:
        report = check(url, slot, client)
    assert report.ok, report.reason
    assert report.figures["peak_rss_mb"] > 20  # this test process, with onnxruntime loaded


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"max_peak_rss_mb": 1.0}, r"peak RSS \d+\.\d MB exceeds the budget 1 MB"),
        ({"max_latency_ms": 1e-6}, r"latency \d+\.\d ms exceeds the budget 1e-06 ms"),
    ],
)
def test_runtime_over_its_budget_fails_naming_the_check_and_figure(
    built: ExampleReleases,
    tmp_path: Path,
    client: httpx.Client,
    budget: dict[str, float],
    message: str,
) -> None:
    slot = tmp_path / "b"
    install_release(built.v2.path, slot, "2.0.0")
    with_tolerance(slot, **budget)
    with running(slot) as url:
        report = check(url, slot, client)
    assert not report.ok
    assert report.reason is not None
    assert re.search(message, report.reason), report.reason
    assert report.figures["max_abs_error"] <= built.v2.tolerance["max_abs_error"]  # outputs ok


def test_every_failed_check_is_named() -> None:
    from edgeota.agent.health import _over_budget

    figures = {"latency_ms": 50.0}
    failures = _over_budget(figures, {"max_latency_ms": 10.0, "max_peak_rss_mb": 100.0})
    assert failures == [
        "latency 50.0 ms exceeds the budget 10 ms",
        "the runtime reported no peak RSS, but the release bounds it",
    ]
