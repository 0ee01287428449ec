"""The on-device inference service: a real HTTP server on loopback serving a real slot."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgeota.errors import FormatError
from edgeota.modelops.digits import ExampleReleases, build_example_releases, run_onnx
from edgeota.runtime.model import LoadedModel
from edgeota.runtime.server import MAX_BODY_BYTES, build_runtime_server
from edgeota.slotinfo import SlotFile, SlotInfo
from harness import wait_until_healthy

pytestmark = pytest.mark.integration


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
def running(model: LoadedModel) -> Iterator[str]:
    server = build_runtime_server(model, "127.0.0.1", 0)
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


@pytest.fixture(scope="module")
def v1_slot(built: ExampleReleases, tmp_path_factory: pytest.TempPathFactory) -> Path:
    slot = tmp_path_factory.mktemp("slots") / "a"
    install_release(built.v1.path, slot, "1.0.0")
    return slot


@pytest.fixture(scope="module")
def v1_url(v1_slot: Path) -> Iterator[str]:
    with running(LoadedModel.load(v1_slot)) as url:
        yield url


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def test_healthz_names_the_release(v1_url: str, v1_slot: Path, client: httpx.Client) -> None:
    slot = SlotInfo.read(v1_slot)
    response = client.get(f"{v1_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "component": "denoiser",
        "version": "1.0.0",
        "release_id": slot.release_id,
    }


def test_model_metadata(v1_url: str, client: httpx.Client) -> None:
    body = client.get(f"{v1_url}/v1/model").json()
    assert body["inputs"] == [
        {"name": "noisy", "shape": [None, 64], "type": "tensor(float)", "dtype": "float32"}
    ]
    assert body["outputs"] == [
        {"name": "denoised", "shape": [None, 64], "type": "tensor(float)", "dtype": "float32"}
    ]


def test_infer_round_trip_equals_onnxruntime(
    v1_url: str, built: ExampleReleases, client: httpx.Client
) -> None:
    noisy = np.random.default_rng(3).random((5, 64)).astype(np.float32)
    response = client.post(f"{v1_url}/v1/infer", json={"inputs": {"noisy": noisy.tolist()}})
    assert response.status_code == 200, response.text
    body = response.json()
    served = np.asarray(body["outputs"]["denoised"], dtype=np.float32)
    expected = run_onnx((built.v1.path / "model.onnx").read_bytes(), noisy)
    np.testing.assert_array_equal(served, expected)
    assert body["latency_ms"] > 0


def test_generate_is_refused_for_an_onnx_model(v1_url: str, client: httpx.Client) -> None:
    assert client.get(f"{v1_url}/v1/model").json()["kind"] == "onnx"
    response = client.post(f"{v1_url}/v1/generate", json={"prompt": "hello"})
    assert response.status_code == 404
    assert "serves an onnx model; /v1/generate needs an LLM" in response.json()["error"]


def test_non_finite_outputs_travel_as_null(built: ExampleReleases, tmp_path: Path) -> None:
    install_release(built.v3_broken.path, tmp_path / "slot", "3.0.0")
    with running(LoadedModel.load(tmp_path / "slot")) as url:
        response = httpx.post(f"{url}/v1/infer", json={"inputs": {"noisy": [[0.5] * 64]}})
    assert response.status_code == 200
    assert "NaN" not in response.text
    assert response.json()["outputs"]["denoised"] == [[None] * 64]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"inputs": ', 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 400, '{"inputs"'),
        (b'{"inputs": [1]}', 400, '{"inputs"'),
        (
            b'{"inputs": {"image": [[0.0]]}}',
            422,
            "unknown input(s) ['image']; this model takes noisy",
        ),
        (b'{"inputs": {}}', 422, "missing input(s): noisy (float32 [N, 64])"),
        (b'{"inputs": {"noisy": [[0.0, 1.0]]}}', 422, "has shape [1, 2], expected noisy"),
        (b'{"inputs": {"noisy": [0.0]}}', 422, "has shape [1]"),
        (b'{"inputs": {"noisy": [[0.0], [1.0, 2.0]]}}', 422, "not a rectangular array"),
        (b'{"inputs": {"noisy": [["a"]]}}', 422, "must hold float32 values"),
    ],
)
def test_bad_requests_get_clear_errors(
    v1_url: str, client: httpx.Client, body: bytes, status: int, message: str
) -> None:
    response = client.post(
        f"{v1_url}/v1/infer", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert message in response.json()["error"]
    # The connection stays usable after an error.
    assert client.get(f"{v1_url}/healthz").status_code == 200


def test_oversized_body_is_refused(v1_url: str, client: httpx.Client) -> None:
    response = client.post(f"{v1_url}/v1/infer", content=b" " * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["error"]


def raw_request(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_huge_declared_length_is_refused_without_reading_it(v1_url: str) -> None:
    answer = raw_request(
        v1_url, b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n{"
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer


def test_missing_length_and_unknown_paths(v1_url: str, client: httpx.Client) -> None:
    answer = raw_request(v1_url, b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411 ")
    assert client.get(f"{v1_url}/nope").status_code == 404
    assert client.get(f"{v1_url}/v1/infer").status_code == 405
    assert client.post(f"{v1_url}/healthz", content=b"{}").status_code == 404


def test_garbage_model_file_fails_to_load_with_a_clear_error(
    built: ExampleReleases, tmp_path: Path
) -> None:
    slot = tmp_path / "slot"
    install_release(built.v1.path, slot, "1.0.0")
    garbage = b"\x00garbage" * 100
    (slot / "model.onnx").write_bytes(garbage)
    info = SlotInfo.read(slot)
    files = tuple(
        SlotFile(f.file, f.role, hashlib.sha256(garbage).hexdigest(), len(garbage), f.variant)
        if f.role == "model"
        else f
        for f in info.files
    )
    SlotInfo(info.component, info.version, info.release_id, files, info.tolerance).write(slot)
    with pytest.raises(FormatError, match=r"onnxruntime cannot load model file .*model\.onnx"):
        LoadedModel.load(slot)


def test_damaged_or_empty_slots_fail_to_load(built: ExampleReleases, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="the slot is empty or was not fully installed"):
        LoadedModel.load(tmp_path)
    slot = tmp_path / "slot"
    install_release(built.v1.path, slot, "1.0.0")
    with (slot / "model.onnx").open("r+b") as f:
        f.truncate(100)
    with pytest.raises(FormatError, match="is 100 bytes, but the slot description says"):
        LoadedModel.load(slot)


def start_runtime(slot: Path, ready_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeota.runtime.server",
            "--slot-dir",
            str(slot),
            "--port",
            "0",
            "--ready-file",
            str(ready_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_runtime_process_serves_and_stops_cleanly_on_sigterm(v1_slot: Path, tmp_path: Path) -> None:
    ready_file = tmp_path / "ready.json"
    proc = start_runtime(v1_slot, ready_file)
    try:
        url = wait_until_healthy(proc, ready_file, timeout_s=60)
        assert httpx.get(f"{url}/healthz").json()["release_id"] == SlotInfo.read(v1_slot).release_id
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert not ready_file.exists()
    assert b"received SIGTERM" in stderr


def test_runtime_process_exits_non_zero_when_the_model_cannot_load(
    built: ExampleReleases, tmp_path: Path
) -> None:
    slot = tmp_path / "slot"
    install_release(built.v1.path, slot, "1.0.0")
    (slot / "model.onnx").unlink()
    proc = start_runtime(slot, tmp_path / "ready.json")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert b"cannot serve slot" in stderr
    assert b"model.onnx is missing" in stderr
    assert not (tmp_path / "ready.json").exists()
