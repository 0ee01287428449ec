"""A real agent updates its app container with real podman: v1 -> v2 (one layer sent), a
broken v3 checked beside v2 and refused, v2 still serving in the same container; a release
whose need no device meets is refused by the server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeota.errors import HTTPStatusError
from edgeota.imagearchive import convert_image_archive
from edgeota.procs import free_port, wait_until
from edgeota.releasefolder import load_release
from harness import Fleet
from podman_images import PODMAN_ARGS, ContainerImages, container_images, httpd_command

__all__ = ["container_images"]  # the session fixture, imported for pytest


@pytest.fixture
def app_settings(tmp_path: Path) -> Path:
    path = tmp_path / "container.json"
    spec = {
        "schema": 1,
        "command": httpd_command(),
        "network": "host",
        "port": free_port(),
        "staging_port": free_port(),
        "health": {"http": "/health", "timeout_s": 15},
        "stop_timeout_s": 2,
    }
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def engine_env(
    container_images: ContainerImages, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ContainerImages]:
    # The agent process inherits the environment: podman there reads the same containers.conf.
    for key, value in container_images.engine.process_env().items():
        if key == "CONTAINERS_CONF":
            monkeypatch.setenv(key, value)
    yield container_images


def publish(
    fleet: Fleet, tmp_path: Path, archive: Path, settings: Path, version: str, **needs: str
) -> dict[str, Any]:
    folder = tmp_path / f"release-{version}"
    convert_image_archive(archive, settings, folder, needs=needs)
    release: dict[str, Any] = fleet.server.admin.publish(load_release(folder), "app", version)
    return release


def app_state(fleet: Fleet) -> dict[str, Any]:
    devices = fleet.server.admin.devices()
    if not devices:
        return {}  # not enrolled yet
    (device,) = devices
    for c in fleet.server.admin.device(device["id"])["components"]:
        if c["component"] == "app":
            return dict(c)
    return {}


def events(fleet: Fleet, name: str) -> list[dict[str, Any]]:
    (device,) = fleet.server.admin.devices()
    return [
        e
        for e in fleet.server.admin.events(device["id"], limit=200)
        if e["component"] == "app" and e["event"] == name
    ]


def serving(images: ContainerImages, prefix: str) -> tuple[str, str]:
    """The serving container's ID and the version its image says it is."""
    proc = images.podman("container", "inspect", "--format", "{{.Id}} {{.Image}}", f"{prefix}app")
    container_id, image_id = proc.stdout.split()
    version = next(k for k, v in images.image_ids.items() if v == image_id)
    return container_id, version


def start_agent(fleet: Fleet, data_dir: Path, prefix: str, *extra: str) -> Any:
    engine_args = [f"--container-engine-arg={a}" for a in PODMAN_ARGS]
    return fleet.start_agent(
        data_dir,
        "--container-engine",
        "podman",
        *engine_args,
        "--container-prefix",
        prefix,
        *extra,
    )


def committed(fleet: Fleet, version: str) -> bool:
    state = app_state(fleet)
    return state.get("version") == version and state.get("state") == "idle"


@pytest.mark.parametrize("point", ["switched", "health"])
def test_kill_9_mid_container_update_ends_on_the_new_container(
    fleet: Fleet, engine_env: ContainerImages, app_settings: Path, tmp_path: Path, point: str
) -> None:
    """The agent is killed right after the switch (before any container changed) or right
    after the new container took over the port; the restarted agent finishes the update and
    adopts what runs instead of starting it again."""
    images = engine_env
    prefix = f"{images.prefix}k{point[:2]}-"
    port = json.loads(app_settings.read_text())["port"]
    data_dir = tmp_path / "cam"
    agent = start_agent(fleet, data_dir, prefix)
    v1 = publish(fleet, tmp_path, images.archives["v1"], app_settings, "1.0.0")
    fleet.server.admin.deploy(v1["id"], "lab")
    wait_until(lambda: committed(fleet, "1.0.0"), 120, what="app 1.0.0 committed")
    fleet.procs.stop(agent)
    assert httpx.get(f"http://127.0.0.1:{port}/version", timeout=2).text.strip() == "1"

    crashing = start_agent(fleet, data_dir, prefix, "--crash-at", point)
    v2 = publish(fleet, tmp_path, images.archives["v2"], app_settings, "2.0.0")
    fleet.server.admin.deploy(v2["id"], "lab")
    assert crashing.wait(120) == -9  # SIGKILL at the crash point
    before = serving(images, prefix)
    assert before[1] == ("v1" if point == "switched" else "v2")

    start_agent(fleet, data_dir, prefix)
    wait_until(lambda: committed(fleet, "2.0.0"), 120, what="app 2.0.0 committed")
    assert httpx.get(f"http://127.0.0.1:{port}/version", timeout=2).text.strip() == "2"
    after = serving(images, prefix)
    assert after[1] == "v2"
    if point == "health":
        assert after == before  # the container that had taken over was adopted, not restarted


def test_app_container_update_and_rollback(
    fleet: Fleet, engine_env: ContainerImages, app_settings: Path, tmp_path: Path
) -> None:
    images = engine_env
    for image_id in images.image_ids.values():
        images.forget(image_id)  # another test may have loaded them: start from none
    prefix = f"{images.prefix}agent-"
    port = json.loads(app_settings.read_text())["port"]
    start_agent(fleet, tmp_path / "cam", prefix)

    def version_served() -> str:
        return httpx.get(f"http://127.0.0.1:{port}/version", timeout=2).text.strip()

    v1 = publish(fleet, tmp_path, images.archives["v1"], app_settings, "1.0.0")
    fleet.server.admin.deploy(v1["id"], "lab")
    wait_until(lambda: committed(fleet, "1.0.0"), 120, what="app 1.0.0 committed")
    assert version_served() == "1"
    first_id, running = serving(images, prefix)
    assert running == "v1"

    # v2 changes one layer: the agent links the others from the committed slot.
    v2 = publish(fleet, tmp_path, images.archives["v2"], app_settings, "2.0.0")
    fleet.server.admin.deploy(v2["id"], "lab")
    wait_until(lambda: committed(fleet, "2.0.0"), 120, what="app 2.0.0 committed")
    assert version_served() == "2"
    v2_id, running = serving(images, prefix)
    assert running == "v2" and v2_id != first_id
    (commit,) = [e for e in events(fleet, "committed") if e["version"] == "2.0.0"]
    layers = {f["file"]: f["length"] for f in v2["files"] if f["role"] == "layer"}
    changed = {f["file"] for f in v2["files"]} - {f["file"] for f in v1["files"]}
    assert len(layers) >= 3 and len(changed & set(layers)) == 1
    small = sum(f["length"] for f in v2["files"] if f["role"] != "layer")
    sent = commit["detail"]["bytes_downloaded"]
    assert sent <= small + sum(layers[f] for f in changed & set(layers))
    assert sent * 20 < commit["detail"]["bytes_full"]  # the busybox base layer stayed home

    # v3 fails its health check beside v2: v2 keeps serving, in the very same container.
    v3 = publish(fleet, tmp_path, images.archives["v3"], app_settings, "3.0.0")
    fleet.server.admin.deploy(v3["id"], "lab")
    wait_until(lambda: bool(events(fleet, "rolled_back")), 120, what="v3 rolled back")
    (failed,) = events(fleet, "health_failed")
    assert failed["version"] == "3.0.0" and "/health" in failed["reason"]
    assert committed(fleet, "2.0.0")
    assert version_served() == "2"
    assert serving(images, prefix) == (v2_id, "v2")
    assert not [n for n in images.container_names() if n.endswith("-candidate")]
    # Images do not pile up: v1's went when its slot took v3, v3's when v3 was rolled back.
    kept = {
        v: images.podman("image", "exists", i).returncode == 0 for v, i in images.image_ids.items()
    }
    assert kept == {"v1": False, "v2": True, "v3": False}

    # A release needing a model no device has is refused before any device sees it.
    v4 = publish(fleet, tmp_path, images.archives["v2"], app_settings, "4.0.0", model=">=1.0.0")
    with pytest.raises(HTTPStatusError) as refused:
        fleet.server.admin.deploy(v4["id"], "lab")
    assert "app 4.0.0 needs model >=1.0.0, found no model" in str(refused.value)
