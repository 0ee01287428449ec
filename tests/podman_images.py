"""Real container images for the container driver's tests, built with podman once a session.

The base image is ``podman import`` of a rootfs holding only Debian's static busybox; three
app images are built on it with ``podman build --isolation chroot`` (no process runs: only
COPY) and saved as docker-archives:

- v1: ``/www/health`` ("ok") and ``/www/version`` ("1"), one layer each;
- v2: the same health layer (shared with v1) and ``/www/version`` "2";
- v3 (broken): no ``/www/health``, so the health path answers 404.

The built images are removed from podman's storage again, so a test sees a load from a slot
folder. Everything a session creates carries its unique prefix (container names, image
tags) and is removed at the end: containers by name prefix, images by ID.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeota.agent.engine import CliEngine, image_id_of, read_manifest
from edgeota.agent.slots import file_sha256
from edgeota.containerspec import SPEC_FILE
from edgeota.slotinfo import SlotFile, SlotInfo
from support import skip_or_fail

BUSYBOX = Path("/usr/bin/busybox")
PODMAN_ARGS = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"
VERSIONS = {"v1": "1", "v2": "2", "v3": "3"}


def httpd_command(port: str = "{port}") -> list[str]:
    """busybox httpd on 127.0.0.1:<port> serving /www; a shell as PID 1 so SIGTERM stops it
    at once (a bare httpd as PID 1 ignores SIGTERM and waits out the stop timeout)."""
    return [
        "/bin/busybox",
        "sh",
        "-c",
        f"trap 'exit 0' TERM; /bin/busybox httpd -f -p 127.0.0.1:{port} -h /www & wait",
    ]


@dataclass(frozen=True)
class ContainerImages:
    engine: CliEngine
    prefix: str  # unique to this session: container names and image tags start with it
    archives: Mapping[str, Path]  # "v1" -> docker-archive file
    image_ids: Mapping[str, str]

    def podman(self, *args: str) -> subprocess.CompletedProcess[str]:
        return podman(self.engine, *args)

    def forget(self, image_id: str) -> None:
        """Remove an image from podman's storage (and the session's containers using it)."""
        for name in self.container_names():
            if (
                self.podman("container", "inspect", "--format", "{{.Image}}", name).stdout.strip()
                == image_id
            ):
                self.podman("rm", "--force", "--time", "0", name)
        self.podman("rmi", "--force", image_id)

    def container_names(self) -> list[str]:
        names = self.podman("ps", "--all", "--format", "{{.Names}}").stdout.split()
        return [n for n in names if n.startswith(self.prefix)]


def podman(engine: CliEngine, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        engine.argv(args),
        env=engine.process_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _must(proc: subprocess.CompletedProcess[str]) -> str:
    if proc.returncode != 0:
        skip_or_fail(f"`{' '.join(proc.args)}` failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


@pytest.fixture(scope="session")
def container_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerImages]:
    if shutil.which("podman") is None:
        skip_or_fail("podman is not installed (apt-get install podman)")
    if not BUSYBOX.exists():
        skip_or_fail(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    work = tmp_path_factory.mktemp("podman-images")
    conf = work / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    engine = CliEngine("podman", PODMAN_ARGS, env={"CONTAINERS_CONF": str(conf)})
    archives: dict[str, Path] = {}
    ids: dict[str, str] = {}
    images = ContainerImages(engine, f"et{secrets.token_hex(4)}-", archives, ids)
    tags: list[str] = []
    try:
        _must(podman(engine, "info", "--format", "{{.Host.OCIRuntime.Name}}"))
        _build(images, work, tags, archives, ids)
        yield images
    finally:
        for name in images.container_names():
            images.podman("rm", "--force", "--time", "0", name)
        for ref in [*reversed(tags), *ids.values()]:
            images.podman("rmi", "--force", ref)


def _build(
    images: ContainerImages,
    work: Path,
    tags: list[str],
    archives: dict[str, Path],
    ids: dict[str, str],
) -> None:
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    base_tar = work / "base.tar"
    with tarfile.open(base_tar, "w") as tar:
        tar.add(rootfs, arcname=".")
    base = f"localhost/{images.prefix}base:1"
    tags.append(base)
    _must(images.podman("import", str(base_tar), base))
    for name, version in VERSIONS.items():
        ctx = work / name
        ctx.mkdir()
        (ctx / "health").write_text("ok\n")
        (ctx / "version").write_text(f"{version}\n")
        steps = [] if name == "v3" else ["COPY health /www/health"]
        (ctx / "Containerfile").write_text(
            "\n".join(
                [
                    f"FROM {base}",
                    *steps,
                    "COPY version /www/version",
                    f"CMD {json.dumps(httpd_command('8080'))}",
                ]
            )
            + "\n"
        )
        tag = f"localhost/{images.prefix}app:{name}"
        tags.append(tag)
        _must(images.podman("build", "--isolation", "chroot", "--quiet", "-t", tag, str(ctx)))
        archive = work / f"{name}.tar"
        _must(images.podman("save", "--format", "docker-archive", "-o", str(archive), tag))
        archives[name] = archive
        ids[name] = _must(images.podman("image", "inspect", "--format", "{{.Id}}", tag)).strip()
    for tag in reversed(tags):  # tests load the images from slot folders
        images.podman("rmi", "--force", tag)


def extract_image(archive: Path, image_dir: Path) -> list[str]:
    """Extract a docker-archive's manifest, config and layers (only those) into ``image_dir``;
    returns the file names, manifest first."""
    image_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extract("manifest.json", image_dir, filter="data")
        config, layers = read_manifest(image_dir)
        for name in (config, *layers):
            tar.extract(name, image_dir, filter="data")
    return ["manifest.json", config, *layers]


def make_slot(
    slot_dir: Path,
    archive: Path,
    spec: Mapping[str, Any],
    *,
    component: str = "app",
    version: str = "1.0.0",
    release_id: str | None = None,
) -> Path:
    """A container component's slot folder as the agent writes it (see docs/containers.md)."""
    names = extract_image(archive, slot_dir / "image")
    (slot_dir / SPEC_FILE).write_text(json.dumps(spec))
    roles = {names[0]: "image", names[1]: "file"}
    files = [(SPEC_FILE, "container")] + [(f"image/{n}", roles.get(n, "layer")) for n in names]
    info = SlotInfo(
        component=component,
        version=version,
        release_id=release_id or f"rel-{image_id_of(slot_dir / 'image')[:12]}-{version}",
        files=tuple(
            SlotFile(f, role, file_sha256(slot_dir / f), (slot_dir / f).stat().st_size)
            for f, role in files
        ),
    )
    info.write(slot_dir)
    return slot_dir
