"""A real server process over HTTPS: published releases become signed TUF targets that a
device-side client verifies; tampering on the server's disk is caught on the device."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from edgeota.errors import PolicyError, VerificationError
from edgeota.procs import ProcessGroup, free_port, wait_until
from edgeota.releasefolder import load_release
from edgeota.server.devcerts import DevCertificates
from edgeota.trust.client import TrustClient
from edgeota.trust.verify import verify_file
from harness import ServerHandle


def _trust_client(server: ServerHandle, tmp_path: Path) -> tuple[TrustClient, httpx.Client]:
    http = httpx.Client(verify=server.ssl_context(), timeout=10)
    trust = TrustClient(
        tmp_path / "device-metadata",
        f"{server.url}/tuf/metadata/",
        f"{server.url}/tuf/targets/",
        http,
        bootstrap_root=server.root.read_bytes(),
    )
    return trust, http


def _release_folder(tmp_path: Path, payload: bytes) -> Path:
    folder = tmp_path / "release"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(payload)
    (folder / "probe.npz").write_bytes(b"probe")
    files = [
        {"path": "model.onnx", "role": "model"},
        {"path": "probe.npz", "role": "probe", "tolerance": {"max_abs_error": 0.001}},
    ]
    (folder / "release.json").write_text(json.dumps({"schema": 1, "files": files}))
    return folder


def test_published_release_verifies_on_the_device(server: ServerHandle, tmp_path: Path) -> None:
    release = server.admin.publish(
        load_release(_release_folder(tmp_path, b"weights" * 1000)), "denoiser", "1.0.0"
    )
    trust, http = _trust_client(server, tmp_path)
    with http:
        trust.refresh()
        target = trust.get_target("denoiser/1.0.0/model.onnx")
        assert target.custom.release_id == release["id"]
        assert target.custom.role == "model"
        probe = trust.get_target("denoiser/1.0.0/probe.npz")
        assert probe.custom.tolerance == {"max_abs_error": 0.001}
        downloaded = tmp_path / "model.onnx"
        downloaded.write_bytes(http.get(target.url).content)
        verify_file(downloaded, target)


def test_tampered_artifact_on_server_is_refused_on_device(
    server: ServerHandle, tmp_path: Path
) -> None:
    release = server.admin.publish(
        load_release(_release_folder(tmp_path, b"weights" * 1000)), "denoiser", "1.0.0"
    )
    sha = release["files"][0]["sha256"]
    stored = server.data_dir / "artifacts" / "sha256" / sha[:2] / sha
    data = bytearray(stored.read_bytes())
    data[10] ^= 0xFF
    stored.write_bytes(bytes(data))
    trust, http = _trust_client(server, tmp_path)
    with http:
        trust.refresh()
        target = trust.get_target("denoiser/1.0.0/model.onnx")
        downloaded = tmp_path / "model.onnx"
        downloaded.write_bytes(http.get(target.url).content)
        with pytest.raises(VerificationError, match=r"sha256|hash"):
            verify_file(downloaded, target)


def test_server_resigns_timestamp_before_it_expires(tmp_path: Path, certs: DevCertificates) -> None:
    port = free_port()
    with ProcessGroup() as procs:
        proc = procs.start(
            [
                sys.executable,
                "-m",
                "edgeota",
                "server",
                "--data-dir",
                str(tmp_path / "d"),
                "--port",
                str(port),
            ],
            tmp_path / "server.log",
            env={
                "EDGEOTA_TIMESTAMP_EXPIRY_S": "120",
                "EDGEOTA_TIMESTAMP_REFRESH_MARGIN_S": "119",
                "EDGEOTA_TUF_REFRESH_INTERVAL_S": "0.2",
            },
        )

        def timestamp_version() -> int:
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "server.log").read_text())
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/tuf/metadata/timestamp.json", timeout=2)
            except httpx.HTTPError:
                return 0
            return int(r.json()["signed"]["version"]) if r.status_code == 200 else 0

        wait_until(lambda: timestamp_version() >= 3, timeout_s=30, what="timestamp re-signed")


def test_production_server_refuses_to_start_without_offline_root_keys(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgeota", "server", "--data-dir", str(tmp_path / "d")],
        env={"EDGEOTA_ENVIRONMENT": "production", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "edgeota keys init" in result.stderr


def test_keys_init_keeps_root_key_apart(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    root_dir = tmp_path / "offline-root"
    cmd = [
        sys.executable,
        "-m",
        "edgeota",
        "keys",
        "init",
        "--data-dir",
        str(data_dir),
        "--root-key-dir",
        str(root_dir),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert list(root_dir.glob("root.*.pem"))
    assert not list((data_dir / "keys").rglob("root.*.pem"))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 1
    assert "already holds a TUF repository" in again.stderr


def test_plain_http_client_cannot_talk_to_https_server(server: ServerHandle) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/healthz", verify=ssl.create_default_context(), timeout=5)


def test_retired_release_is_no_longer_signed_or_served(
    server: ServerHandle, tmp_path: Path
) -> None:
    """`edgeota release retire` takes the release out of the signed metadata (a device can no
    longer look its files up) and deletes the files no other release uses."""
    v1 = server.admin.publish(
        load_release(_release_folder(tmp_path / "v1", b"weights one" * 500)), "denoiser", "1.0.0"
    )
    for n, version in ((2, "2.0.0"), (3, "3.0.0")):  # 2.0.0: kept for 3.0.0's fleet rollback
        folder = _release_folder(tmp_path / f"v{n}", f"weights {n}".encode() * 500)
        server.admin.publish(load_release(folder), "denoiser", version)
    env = {"EDGEOTA_SERVER": server.url, "EDGEOTA_ADMIN_TOKEN": server.admin_token}
    retired = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeota",
            "release",
            "retire",
            "denoiser@1.0.0",
            "--ca",
            str(server.ca),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    assert retired.returncode == 0, retired.stderr
    assert f"retired denoiser 1.0.0 ({v1['id']})" in retired.stdout
    assert server.admin.release(v1["id"])["retired_at"] is not None
    model_sha = next(f["sha256"] for f in v1["files"] if f["file"] == "model.onnx")
    assert not server.admin.has_artifact(model_sha, len(b"weights one" * 500))
    trust, http = _trust_client(server, tmp_path)
    with http:
        trust.refresh()
        assert trust.get_target("denoiser/2.0.0/model.onnx").custom.version == "2.0.0"
        with pytest.raises(PolicyError, match="not listed in the signed targets metadata"):
            trust.get_target("denoiser/1.0.0/model.onnx")


def test_prune_takes_old_releases_out_of_the_signed_metadata(
    server: ServerHandle, tmp_path: Path
) -> None:
    """`edgeota release prune --keep 1`: of four releases, the newest and the one its fleet
    rollback would go back to stay; the two older ones leave the signed metadata."""
    for n in range(1, 5):
        folder = _release_folder(tmp_path / f"v{n}", f"upscaler {n}".encode() * 500)
        server.admin.publish(load_release(folder), "upscaler", f"{n}.0.0")
    env = {**os.environ, "EDGEOTA_SERVER": server.url, "EDGEOTA_ADMIN_TOKEN": server.admin_token}
    prune = [sys.executable, "-m", "edgeota", "release", "prune", "--keep", "1"]
    prune += ["--component", "upscaler", "--ca", str(server.ca)]

    dry_run = [*prune, "--dry-run"]
    dry = subprocess.run(dry_run, capture_output=True, text=True, env=env, check=False)
    assert dry.returncode == 0, dry.stderr
    assert "would retire upscaler 2.0.0" in dry.stdout
    assert "would retire upscaler 1.0.0" in dry.stdout
    assert "kept upscaler 3.0.0: upscaler 3.0.0 is what a fleet rollback of 4.0.0" in dry.stdout
    assert server.admin.release("upscaler@1.0.0")["retired_at"] is None

    done = subprocess.run(prune, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "retired upscaler 2.0.0" in done.stdout and "2 stored files deleted" in done.stdout
    listing = [sys.executable, "-m", "edgeota", "release", "list", "--component", "upscaler"]
    listed = subprocess.run(
        [*listing, "--ca", str(server.ca)],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},  # one line per release
        check=False,
    )
    rows = {line.split("│")[3].strip(): line for line in listed.stdout.splitlines() if "│" in line}
    assert sorted(v for v, line in rows.items() if line.split("│")[6].strip()) == [
        "1.0.0",
        "2.0.0",
    ]
    trust, http = _trust_client(server, tmp_path)
    with http:
        trust.refresh()
        assert trust.get_target("upscaler/3.0.0/model.onnx").custom.version == "3.0.0"
        for gone in ("1.0.0", "2.0.0"):
            with pytest.raises(PolicyError, match="not listed in the signed targets metadata"):
                trust.get_target(f"upscaler/{gone}/model.onnx")

    zero = [sys.executable, "-m", "edgeota", "release", "prune", "--keep", "0"]
    bad = subprocess.run(zero, capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 2 and "--keep" in bad.stderr
