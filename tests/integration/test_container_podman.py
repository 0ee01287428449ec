"""ContainerDriver with real podman: images loaded from slot folders, containers on loopback.

Each test has its own container name prefix and ports; the session's images come from
tests/podman_images.py (busybox httpd serving /www/version and /www/health).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeota.agent.container_driver import ContainerDriver
from edgeota.agent.engine import CliEngine, ContainerInfo, RunRequest
from edgeota.procs import free_port
from podman_images import ContainerImages, container_images, httpd_command, make_slot

__all__ = ["container_images"]

pytestmark = pytest.mark.integration


class SpyEngine(CliEngine):
    """The real engine, recording the calls that change something."""

    def __init__(self, real: CliEngine) -> None:
        super().__init__(real.executable, real.global_args, env=real.env)
        self.calls: list[tuple[str, str]] = []
        self.before_remove: Callable[[str], None] = lambda _name: None

    def load(self, image_dir: Path) -> str:
        image_id = super().load(image_dir)
        self.calls.append(("load", image_id))
        return image_id

    def run(self, request: RunRequest) -> str:
        self.calls.append(("run", request.name))
        return super().run(request)

    def remove(self, name: str, grace_s: float | None = None) -> None:
        if self.inspect(name) is not None:
            self.before_remove(name)
            self.calls.append(("remove", name))
        super().remove(name, grace_s)

    def start(self, name: str) -> None:
        self.calls.append(("start", name))
        super().start(name)


class Device:
    """One agent's view: a data folder, ports, and drivers sharing a name prefix."""

    def __init__(self, images: ContainerImages, root: Path) -> None:
        self.images = images
        self.components = root / "components"
        self.prefix = f"{images.prefix}{secrets.token_hex(3)}-"
        self.port, self.staging = free_port(), free_port()
        self.engine = SpyEngine(images.engine)

    def http_spec(self, **extra: Any) -> dict[str, Any]:
        return {
            "schema": 1,
            "command": httpd_command(),
            "network": "host",
            "port": self.port,
            "staging_port": self.staging,
            "health": {"http": "/health", "timeout_s": 3},
            "stop_timeout_s": 5,
            **extra,
        }

    def slot(self, name: str, image: str, spec: dict[str, Any] | None = None) -> Path:
        version = {"v1": "1.0.0", "v2": "2.0.0", "v3": "3.0.0"}[image]
        return make_slot(
            self.components / "app" / "slots" / name,
            self.images.archives[image],
            spec or self.http_spec(),
            version=version,
        )

    def driver(self) -> ContainerDriver:
        return ContainerDriver(
            "app", self.engine, self.components, prefix=self.prefix, poll_interval_s=0.05
        )

    def serving(self) -> ContainerInfo | None:
        return self.engine.inspect(f"{self.prefix}app")

    def names(self) -> list[str]:
        return sorted(n for n in self.images.container_names() if n.startswith(self.prefix))


def get(port: int, path: str = "/version") -> str:
    resp = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2.0)
    return f"{resp.status_code} {resp.text.strip()}"


@pytest.fixture
def device(container_images: ContainerImages, tmp_path: Path) -> Iterator[Device]:
    dev = Device(container_images, tmp_path)
    try:
        yield dev
    finally:
        for name in dev.names():
            container_images.podman("rm", "--force", "--time", "0", name)


def test_update_runs_candidate_on_staging_port_then_serves(device: Device) -> None:
    a, b = device.slot("a", "v1"), device.slot("b", "v2")
    driver = device.driver()
    driver.start(a)
    assert driver.wait_ready(10), driver.last_output()
    assert get(device.port) == "200 1"
    assert driver.base_url == f"http://127.0.0.1:{device.port}"
    v1 = device.serving()
    assert v1 is not None
    assert v1.labels["edgeota.slot"] == str(a)
    assert v1.labels["edgeota.role"] == "serving"
    assert v1.labels["edgeota.version"] == "1.0.0"

    serving, candidate = f"{device.prefix}app", f"{device.prefix}app-candidate"
    seen: list[tuple[str, str]] = []

    def before_remove(name: str) -> None:
        if name == serving:
            seen.append((get(device.port), get(device.staging)))

    device.engine.before_remove = before_remove
    device.engine.calls.clear()
    driver.restart(b)
    assert driver.wait_ready(10), driver.last_output()

    # The old container served "1" until the candidate had answered "2" on the staging port.
    assert seen == [("200 1", "200 2")]
    assert [c for c in device.engine.calls if c[0] != "load"] == [
        ("run", candidate),
        ("remove", serving),
        ("remove", candidate),
        ("run", serving),
    ]
    assert get(device.port) == "200 2"
    with pytest.raises(httpx.ConnectError):
        get(device.staging)
    assert device.names() == [serving]
    assert driver.slot_dir == b
    assert driver.health(driver.base_url, b, 5).ok


def test_broken_candidate_leaves_the_serving_container_untouched(device: Device) -> None:
    a, c = device.slot("a", "v2"), device.slot("b", "v3")
    driver = device.driver()
    driver.start(a)
    assert driver.wait_ready(10), driver.last_output()
    before = device.serving()
    assert before is not None

    driver.restart(c)
    assert not driver.wait_ready(10)
    said = driver.last_output(1000)
    assert "failed its health check" in said
    assert "answered 404 (expected 200)" in said
    after = device.serving()
    assert after is not None
    assert (after.id, after.running) == (before.id, True)
    assert get(device.port) == "200 2"
    assert device.names() == [f"{device.prefix}app"]  # the candidate is gone
    assert driver.slot_dir == a

    # The agent rolls back by starting the old slot: the container is adopted as it is.
    device.engine.calls.clear()
    driver.restart(a)
    assert driver.wait_ready(10), driver.last_output()
    assert device.engine.calls == []
    adopted = device.serving()
    assert adopted is not None
    assert adopted.id == before.id


def test_agent_restart_adopts_the_running_container(device: Device) -> None:
    a = device.slot("a", "v1")
    first = device.driver()
    first.start(a)
    assert first.wait_ready(10), first.last_output()
    before = device.serving()
    assert before is not None

    device.engine.calls.clear()
    again = device.driver()  # a new agent process after kill -9: nothing in memory
    again.restart(a)
    assert again.wait_ready(10), again.last_output()
    assert device.engine.calls == []
    after = device.serving()
    assert after is not None
    assert after.id == before.id
    assert again.slot_dir == a
    assert get(device.port) == "200 1"


def test_exec_health_check_without_ports(device: Device) -> None:
    spec = {
        "schema": 1,
        "command": httpd_command("8080"),
        "network": "none",
        "health": {
            "exec": ["/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/health"],
            "timeout_s": 3,
        },
        "stop_timeout_s": 5,
    }
    a, c = device.slot("a", "v1", spec), device.slot("b", "v3", spec)
    driver = device.driver()
    driver.start(a)
    assert driver.wait_ready(10), driver.last_output()
    assert driver.base_url == ""
    before = device.serving()
    assert before is not None

    driver.restart(c)
    assert not driver.wait_ready(10)
    assert "exec /bin/busybox exited with 1" in driver.last_output(1000)
    after = device.serving()
    assert after is not None
    assert after.id == before.id
    cat = device.engine.exec(f"{device.prefix}app", ["/bin/busybox", "cat", "/www/version"], 5)
    assert (cat.exit_code, cat.output) == (0, "1")


def test_image_is_loaded_from_the_slot_once(device: Device) -> None:
    image_id = device.images.image_ids["v1"]
    device.images.forget(image_id)
    assert not device.engine.image_exists(image_id)
    a = device.slot("a", "v1")
    driver = device.driver()
    driver.start(a)
    assert driver.wait_ready(10), driver.last_output()
    assert device.engine.image_exists(image_id)
    serving = device.serving()
    assert serving is not None
    assert serving.image_id == image_id

    driver.stop()
    assert device.names() == []
    driver.start(a)
    assert driver.wait_ready(10), driver.last_output()
    assert [c for c in device.engine.calls if c[0] == "load"] == [("load", image_id)]


def test_exited_container_is_started_again(device: Device) -> None:
    a = device.slot("a", "v1")
    driver = device.driver()
    driver.start(a)
    assert driver.wait_ready(10), driver.last_output()
    before = device.serving()
    assert before is not None
    device.images.podman("kill", f"{device.prefix}app")
    driver.supervise()
    assert driver.restart_count == 1
    assert driver.wait_ready(10), driver.last_output()
    after = device.serving()
    assert after is not None
    assert (after.id, after.running) == (before.id, True)
    assert get(device.port) == "200 1"


def test_model_component_is_mounted_read_only(device: Device) -> None:
    """The app sees the model component's installed release at <target>/current, and a
    switch of the model's slot, without a restart; it cannot write there."""
    model = device.components / "model"
    for slot, content in (("a", "model 1"), ("b", "model 2")):
        (model / "slots" / slot).mkdir(parents=True)
        (model / "slots" / slot / "model.txt").write_text(content)
    (model / "current").symlink_to("slots/a")
    serve_models = [
        "/bin/busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; /bin/busybox httpd -f -p 127.0.0.1:{port} -h /models & wait",
    ]
    spec = device.http_spec(
        command=serve_models,
        model_mounts=[{"component": "model", "target": "/models"}],
        health={"http": "/current/model.txt", "timeout_s": 5},
    )
    driver = device.driver()
    driver.start(device.slot("a", "v1", spec))
    assert driver.wait_ready(10), driver.last_output()
    assert get(device.port, "/current/model.txt") == "200 model 1"
    (model / "current").unlink()
    (model / "current").symlink_to("slots/b")  # the model component switched
    assert get(device.port, "/current/model.txt") == "200 model 2"
    wrote = device.images.podman(
        "exec", f"{device.prefix}app", "/bin/busybox", "touch", "/models/slots/b/x"
    )
    assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr + wrote.stdout
    assert not (model / "slots" / "b" / "x").exists()
