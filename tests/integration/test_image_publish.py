"""Publishing container images: real podman archives, a real server, the real CLI.

The module builds, once, a busybox base image and two app images on it that differ in one
layer (``/www/version``), saves each as docker-archive and oci-archive, and removes the images
from podman's storage again. Every tag carries a prefix unique to the run; every image made
or loaded here is removed by ID at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from typer.testing import CliRunner

from edgeota.adminclient import AdminClient
from edgeota.cli.main import app
from edgeota.imagearchive import convert_image_archive
from harness import ServerHandle
from support import skip_or_fail

pytestmark = pytest.mark.integration

BUSYBOX = Path("/usr/bin/busybox")
SETTINGS = {
    "schema": 1,
    "command": ["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "/www"],
    "port": 8080,
    "staging_port": 18080,
    "health": {"http": "/version", "expect_status": 200, "timeout_s": 10},
}


@dataclass
class Podman:
    conf: Path
    prefix: str
    made: list[str] = field(default_factory=list)  # tags and IDs to remove at the end

    @property
    def argv(self) -> list[str]:
        return ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]

    @property
    def env(self) -> dict[str, str]:
        return {"CONTAINERS_CONF": str(self.conf), "PATH": os.environ.get("PATH", "/usr/bin")}

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            [*self.argv, *args],
            env=self.env,
            capture_output=True,
            check=False,
            timeout=300,
        )
        if proc.returncode != 0:
            skip_or_fail(f"podman {' '.join(args)} failed: {proc.stderr.decode()[-400:]}")
        return proc.stdout.decode()

    def image_id(self, ref: str) -> str:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref).strip()

    def load_folder(self, folder: Path) -> str:
        """Stream a tar of ``folder`` into ``podman load``; the loaded image's ID."""
        errors = folder.parent / "podman-load.err"
        with (
            errors.open("wb") as err,
            subprocess.Popen(
                [*self.argv, "load"],
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            ) as proc,
        ):
            assert proc.stdin is not None and proc.stdout is not None
            writer = threading.Thread(target=_write_tar, args=(folder, proc.stdin))
            writer.start()
            out = proc.stdout.read().decode()
            writer.join()
        assert proc.returncode == 0, errors.read_text()
        loaded = out.strip().rsplit("Loaded image", 1)[-1].split(":", 1)[-1].strip()
        self.made.append(loaded)
        return self.image_id(loaded)


def _write_tar(folder: Path, stream: IO[bytes]) -> None:
    with stream, tarfile.open(fileobj=stream, mode="w|") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)


@dataclass(frozen=True)
class Archives:
    podman: Podman
    paths: dict[tuple[str, str], Path]  # (version, format) -> archive
    ids: dict[str, str]  # version -> image ID
    tags: dict[str, str]


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archives]:
    if shutil.which("podman") is None:
        skip_or_fail("podman is not installed (apt-get install podman)")
    if not BUSYBOX.exists():
        skip_or_fail(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    work = tmp_path_factory.mktemp("image-publish")
    conf = work / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    podman = Podman(conf, f"eoimgpub{secrets.token_hex(4)}")
    try:
        yield _build(podman, work)
    finally:
        for ref in reversed(podman.made):
            subprocess.run(
                [*podman.argv, "rmi", "-f", ref],
                env=podman.env,
                capture_output=True,
                check=False,
                timeout=300,
            )


def _build(podman: Podman, work: Path) -> Archives:
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    with tarfile.open(work / "rootfs.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    base = f"localhost/{podman.prefix}-base:1"
    podman.made.append(base)
    podman.run("import", str(work / "rootfs.tar"), base)
    paths, ids, tags = {}, {}, {}
    for version in ("1", "2"):
        context = work / f"v{version}"
        context.mkdir()
        (context / "version").write_text(f"{version}\n")
        (context / "Containerfile").write_text(f"FROM {base}\nCOPY version /www/version\n")
        tag = f"localhost/{podman.prefix}-app:{version}"
        podman.made.append(tag)
        podman.run("build", "--isolation", "chroot", "--quiet", "-t", tag, str(context))
        ids[version], tags[version] = podman.image_id(tag), tag
        podman.made.append(ids[version])
        for fmt in ("docker-archive", "oci-archive"):
            paths[version, fmt] = work / f"v{version}.{fmt}.tar"
            podman.run("save", "--format", fmt, "-o", str(paths[version, fmt]), tag)
    for tag in [tags["1"], tags["2"], base]:  # the loads below start from an empty store
        podman.run("rmi", tag)
    return Archives(podman, paths, ids, tags)


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    path = tmp_path / "container.json"
    path.write_text(json.dumps(SETTINGS, indent=2))
    return path


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_converted_image_folder_loads_as_the_original_image(
    archives: Archives, settings: Path, tmp_path: Path, fmt: str
) -> None:
    result = convert_image_archive(archives.paths["1", fmt], settings, tmp_path / "release")
    assert result.archive_format == fmt
    assert result.repo_tags == (archives.tags["1"],)
    assert result.config_sha256 == archives.ids["1"]
    assert len(result.layers) == 2

    loaded = archives.podman.load_folder(tmp_path / "release" / "image")

    assert loaded == archives.ids["1"]
    listing = archives.podman.run(
        "run", "--rm", "--network", "none", loaded, "/bin/busybox", "cat", "/www/version"
    )
    assert listing == "1\n"
    archives.podman.run("rmi", "-f", loaded)


def publish(server: ServerHandle, archive: Path, version: str, *extra: str) -> str:
    result = CliRunner().invoke(
        app,
        [
            "release",
            "publish",
            str(archive),
            "--component",
            "app",
            "--version",
            version,
            *extra,
            "--server",
            server.url,
            "--token",
            server.admin_token,
            "--ca",
            str(server.ca),
        ],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_publishing_v2_uploads_only_the_layer_that_changed(
    archives: Archives,
    server: ServerHandle,
    settings: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    uploads: list[tuple[str, int]] = []
    real_upload = AdminClient.upload_artifact

    def recording_upload(self: AdminClient, path: Path, sha256: str) -> None:
        uploads.append((sha256, path.stat().st_size))
        real_upload(self, path, sha256)

    monkeypatch.setattr(AdminClient, "upload_artifact", recording_upload)

    first = publish(server, archives.paths["1", fmt], "1.0.0", "--settings", str(settings))
    v1 = server.admin.release("app@1.0.0")
    v1_layers = [f["sha256"] for f in v1["files"] if f["role"] == "layer"]
    assert len(v1_layers) == 2
    assert len(uploads) == 5  # container.json, manifest, config, two layers
    assert "2 layers" in first and "uploaded 5 of 5 files" in first

    uploads.clear()
    second = publish(
        server,
        archives.paths["2", fmt],
        "2.0.0",
        "--settings",
        str(settings),
        "--need",
        "model>=1.3.0",
    )
    v2 = server.admin.release("app@2.0.0")
    files = {f["file"]: f for f in v2["files"]}
    v2_layers = [f["sha256"] for f in v2["files"] if f["role"] == "layer"]
    (base,) = set(v1_layers) & set(v2_layers)  # busybox, shared; /www/version changed
    (changed,) = set(v2_layers) - {base}
    assert v2["needs"] == {"model": ">=1.3.0"}

    sent = dict(uploads)
    assert base not in sent  # the shared base layer (~2 MB of busybox) stayed on the server
    assert files["container.json"]["sha256"] not in sent  # same settings as 1.0.0
    assert changed in sent
    assert set(sent) == {changed, files["image/manifest.json"]["sha256"]} | {
        f["sha256"] for f in v2["files"] if f["role"] == "file"
    }
    base_length = files[f"image/{base}.tar"]["length"]
    assert sum(sent.values()) < base_length / 100
    assert f"image/{base}.tar  layer  {base_length} bytes  already on the server" in second
    assert f"uploaded 3 of 5 files, {sum(sent.values())} bytes" in second

    # what a device fetches: the layer targets are the blobs, named and hashed by content
    for sha256 in v2_layers:
        data = (server.data_dir / "artifacts" / "sha256" / sha256[:2] / sha256).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256
