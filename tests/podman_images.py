"""Real container images for the container driver's tests, built with podman once a session.

The images are the demo's app (``edgeota.demo_app``): a busybox base and v1, v2 (sharing
v1's health layer) and a broken v3 (no ``/www/health``), saved as docker-archives and removed
from podman's storage again, so a test sees a load from a slot folder. Everything a session
creates carries its unique prefix (container names, image tags) and is removed at the end:
containers by name prefix, images by tag and ID.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeota.agent.engine import CliEngine, ContainerEngineError, image_id_of, read_manifest
from edgeota.agent.slots import file_sha256
from edgeota.containerspec import SPEC_FILE
from edgeota.demo_app import (
    PODMAN_ARGS,
    app_container_names,
    build_app_images,
    httpd_command,
    podman_engine,
    podman_problem,
    remove_app,
)
from edgeota.slotinfo import SlotFile, SlotInfo
from support import skip_or_fail

__all__ = [  # PODMAN_ARGS and httpd_command: what the tests use of the demo app
    "PODMAN_ARGS",
    "ContainerImages",
    "container_images",
    "extract_image",
    "httpd_command",
    "make_slot",
    "podman",
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
        return app_container_names(self.engine, self.prefix)


def podman(engine: CliEngine, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        engine.argv(args),
        env=engine.process_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture(scope="session")
def container_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerImages]:
    work = tmp_path_factory.mktemp("podman-images")
    engine = podman_engine(work)
    problem = podman_problem(engine)
    if problem is not None:
        skip_or_fail(problem)
    prefix = f"et{secrets.token_hex(4)}-"
    ids: list[str] = []
    try:
        try:
            built = build_app_images(engine, work / "build", prefix)
        except ContainerEngineError as e:
            skip_or_fail(f"podman cannot build the test images: {e}")
        ids.extend(built.image_ids.values())
        yield ContainerImages(engine, prefix, built.archives, built.image_ids)
    finally:
        remove_app(engine, prefix, ids)


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
