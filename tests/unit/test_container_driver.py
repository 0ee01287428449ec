"""ContainerDriver against FakeEngine: run arguments, adoption, failed candidates, crash loops."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeota.agent.container_driver import ContainerDriver, Slot, run_request
from edgeota.agent.engine import CliEngine, ContainerEngineError, FakeContainer, FakeEngine
from edgeota.slotinfo import SlotInfo

EXEC_HEALTH = {"exec": ["/bin/check", "--port", "{port}"], "timeout_s": 5}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


def make_slot(root: Path, name: str, version: str, **spec: Any) -> Path:
    """A slot folder with a (fake) image whose config differs per version."""
    slot = root / "components" / "app" / "slots" / name
    image = slot / "image"
    image.mkdir(parents=True)
    config = json.dumps({"version": version}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    (image / config_name).write_bytes(config)
    (image / "layer.tar").write_bytes(b"layer")
    (image / "manifest.json").write_text(
        json.dumps([{"Config": config_name, "RepoTags": [], "Layers": ["layer.tar"]}])
    )
    body = {"schema": 1, "port": 8080, "staging_port": 18080, "health": EXEC_HEALTH, **spec}
    (slot / "container.json").write_text(json.dumps(body))
    SlotInfo("app", version, f"rel-{version}", ()).write(slot)
    return slot


@pytest.fixture
def clock() -> Clock:
    return Clock()


def driver_for(engine: FakeEngine, tmp_path: Path, clock: Clock, **kw: Any) -> ContainerDriver:
    return ContainerDriver(
        "app",
        engine,
        tmp_path / "components",
        prefix="t-",
        clock=clock,
        sleep=clock.sleep,
        **kw,
    )


def test_run_arguments(tmp_path: Path) -> None:
    slot = make_slot(
        tmp_path,
        "b",
        "2.0.0",
        command=["/app/serve", "--listen", "0.0.0.0:{port}"],
        env={"LISTEN": "127.0.0.1:{port}", "MODE": "fast"},
        network="edgenet",
        container_port=9000,
        mounts=[
            {"source": "/var/lib/cam", "target": "/data", "read_only": False},
            {"source": "/etc/app", "target": "/config"},
        ],
        model_mounts=[{"component": "model", "target": "/models"}],
        health={"http": "/healthz"},
        stop_timeout_s=2.5,
    )
    req = run_request(
        Slot.read(slot),
        name="edgeota-app-candidate",
        role="candidate",
        port=18080,
        image_id="f00d",
        components_root=Path("/data/components"),
    )
    assert req.argv() == [
        "--name", "edgeota-app-candidate",
        "--label", "edgeota.component=app",
        "--label", "edgeota.release_id=rel-2.0.0",
        "--label", "edgeota.role=candidate",
        "--label", f"edgeota.slot={slot}",
        "--label", "edgeota.version=2.0.0",
        "--network", "edgenet",
        "-e", "LISTEN=127.0.0.1:18080",
        "-e", "MODE=fast",
        "-v", "/var/lib/cam:/data",
        "-v", "/etc/app:/config:ro",
        "-v", "/data/components/model:/models:ro",
        "-p", "127.0.0.1:18080:9000",
        "--stop-timeout", "3",
        "f00d",
        "/app/serve", "--listen", "0.0.0.0:18080",
    ]  # fmt: skip


def test_host_network_publishes_no_port_and_keeps_image_command(tmp_path: Path) -> None:
    slot = make_slot(tmp_path, "a", "1.0.0", network="host")
    req = run_request(
        Slot.read(slot),
        name="x",
        role="serving",
        port=8080,
        image_id="f00d",
        components_root=tmp_path,
    )
    assert "-p" not in req.argv()
    assert req.argv()[-1] == "f00d"  # no command: the image's own


def test_first_start_checks_a_candidate_then_serves(tmp_path: Path, clock: Clock) -> None:
    engine = FakeEngine()
    a = make_slot(tmp_path, "a", "1.0.0")
    driver = driver_for(engine, tmp_path, clock)
    driver.start(a)
    assert driver.wait_ready(5)
    image_id = next(iter(engine.images))
    assert engine.calls == [
        ("load", image_id),
        ("run", "t-app-candidate"),
        ("remove", "t-app-candidate"),
        ("run", "t-app"),
    ]
    serving = engine.containers["t-app"]
    assert serving.request.labels["edgeota.role"] == "serving"
    assert driver.slot_dir == a
    assert driver.base_url == "http://127.0.0.1:8080"


def test_restarted_agent_adopts_the_running_container(tmp_path: Path, clock: Clock) -> None:
    engine = FakeEngine()
    a = make_slot(tmp_path, "a", "1.0.0")
    driver_for(engine, tmp_path, clock).start(a)
    before = engine.containers["t-app"]
    engine.calls.clear()

    again = driver_for(engine, tmp_path, clock)
    again.restart(a)
    assert again.wait_ready(5)
    assert engine.calls == []  # image present, container adopted: nothing restarted
    assert engine.containers["t-app"] is before
    assert again.slot_dir == a


def test_exited_container_of_the_same_release_is_not_adopted(tmp_path: Path, clock: Clock) -> None:
    engine = FakeEngine()
    a = make_slot(tmp_path, "a", "1.0.0")
    driver_for(engine, tmp_path, clock).start(a)
    engine.exit("t-app", 137)  # e.g. the device rebooted
    engine.calls.clear()
    driver = driver_for(engine, tmp_path, clock)
    driver.start(a)
    assert driver.wait_ready(5)
    assert ("run", "t-app-candidate") in engine.calls
    assert engine.containers["t-app"].running


def test_update_replaces_serving_only_after_the_candidate_passed(
    tmp_path: Path, clock: Clock
) -> None:
    engine = FakeEngine()
    a, b = make_slot(tmp_path, "a", "1.0.0"), make_slot(tmp_path, "b", "2.0.0")
    driver = driver_for(engine, tmp_path, clock)
    driver.start(a)
    engine.calls.clear()
    driver.restart(b)
    assert driver.wait_ready(5)
    assert [c for c in engine.calls if c[0] != "load"] == [
        ("run", "t-app-candidate"),
        ("remove", "t-app"),
        ("remove", "t-app-candidate"),
        ("run", "t-app"),
    ]
    assert engine.containers["t-app"].request.labels["edgeota.release_id"] == "rel-2.0.0"
    assert driver.slot_dir == b


def test_failed_candidate_keeps_the_old_container(tmp_path: Path, clock: Clock) -> None:
    def exec_exit(c: FakeContainer, argv: Any) -> int:
        return 1 if c.request.labels["edgeota.version"] == "3.0.0" else 0

    def on_run(c: FakeContainer) -> None:
        c.logs += ["starting", "cannot open /models/current/model.onnx"]

    engine = FakeEngine(exec_exit=exec_exit, on_run=on_run)
    a, c = make_slot(tmp_path, "a", "1.0.0"), make_slot(tmp_path, "b", "3.0.0")
    driver = driver_for(engine, tmp_path, clock)
    driver.start(a)
    old = engine.containers["t-app"]
    engine.calls.clear()

    driver.restart(c)
    assert not driver.wait_ready(5)
    said = driver.last_output(1000)
    assert "failed its health check" in said
    assert "exec /bin/check exited with 1" in said
    assert "was not healthy within 5 s" in said
    assert "cannot open /models/current/model.onnx" in said
    assert [x for x in engine.calls if x[0] != "load"] == [
        ("run", "t-app-candidate"),
        ("remove", "t-app-candidate"),
    ]
    assert engine.containers == {"t-app": old}
    assert old.running
    assert driver.slot_dir == a
    assert clock.now >= 5  # it kept probing until the health timeout

    driver.restart(a)  # the agent's rollback: adopt, nothing restarted
    assert driver.wait_ready(5)
    assert engine.containers["t-app"] is old


def test_rollback_after_the_new_container_crash_loops_checks_the_old_release_again(
    tmp_path: Path, clock: Clock
) -> None:
    engine = FakeEngine()
    a, b = make_slot(tmp_path, "a", "1.0.0"), make_slot(tmp_path, "b", "2.0.0")
    driver = driver_for(engine, tmp_path, clock, restart_budget=0)
    driver.start(a)
    driver.restart(b)  # passes as a candidate, then exits once it serves
    engine.exit("t-app", 2)
    assert not driver.wait_ready(5)
    assert driver.crashed()
    engine.calls.clear()

    driver.restart(a)
    assert driver.wait_ready(5)
    assert [c for c in engine.calls if c[0] != "load"] == [
        ("run", "t-app-candidate"),
        ("remove", "t-app"),
        ("remove", "t-app-candidate"),
        ("run", "t-app"),
    ]
    assert engine.containers["t-app"].request.labels["edgeota.release_id"] == "rel-1.0.0"
    assert ("load", engine.containers["t-app"].request.image_id) not in engine.calls
    assert not driver.crashed()


def test_candidate_that_exits_fails_without_waiting(tmp_path: Path, clock: Clock) -> None:
    def on_run(c: FakeContainer) -> None:
        if c.request.name.endswith("candidate"):
            c.running, c.exit_code = False, 3

    engine = FakeEngine(exec_exit=lambda _c, _a: 1, on_run=on_run)
    driver = driver_for(engine, tmp_path, clock)
    driver.start(make_slot(tmp_path, "a", "1.0.0"))
    assert not driver.wait_ready(5)
    assert "t-app-candidate exited with code 3" in driver.last_output()
    assert clock.sleeps == 0
    assert engine.containers == {}
    assert driver.slot_dir is None


def test_port_placeholder_in_exec_health_is_the_staging_port(tmp_path: Path, clock: Clock) -> None:
    seen: list[tuple[str, list[str]]] = []

    def exec_exit(c: FakeContainer, argv: Any) -> int:
        seen.append((c.request.name, list(argv)))
        return 0

    engine = FakeEngine(exec_exit=exec_exit)
    driver = driver_for(engine, tmp_path, clock)
    driver.start(make_slot(tmp_path, "a", "1.0.0"))
    assert driver.wait_ready(5)
    assert seen == [
        ("t-app-candidate", ["/bin/check", "--port", "18080"]),
        ("t-app", ["/bin/check", "--port", "8080"]),
    ]


def test_http_health_probes_staging_then_serving_port(tmp_path: Path, clock: Clock) -> None:
    engine = FakeEngine()
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        listening = [
            c
            for c in engine.containers.values()
            if f":{request.url.port}" in " ".join(c.request.command)
        ]
        if not listening:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200 if len(asked) > 1 else 503)

    driver = driver_for(
        engine, tmp_path, clock, client=httpx.Client(transport=httpx.MockTransport(answer))
    )
    slot = make_slot(
        tmp_path,
        "a",
        "1.0.0",
        command=["/bin/httpd", "-p", "127.0.0.1:{port}"],
        network="host",
        health={"http": "/health", "timeout_s": 5},
    )
    driver.start(slot)
    assert driver.wait_ready(5)
    assert asked == [
        "http://127.0.0.1:18080/health",
        "http://127.0.0.1:18080/health",
        "http://127.0.0.1:8080/health",
    ]
    assert driver.health(driver.base_url, slot, 5).ok


def test_crash_loop_after_the_restart_budget(tmp_path: Path, clock: Clock) -> None:
    engine = FakeEngine()
    driver = driver_for(engine, tmp_path, clock, restart_budget=2, restart_window_s=60)
    driver.start(make_slot(tmp_path, "a", "1.0.0"))
    serving = engine.containers["t-app"]
    for restarts in (1, 2):
        engine.exit("t-app", 1)
        assert not driver.crashed()
        assert serving.running
        assert driver.restart_count == restarts
        clock.now += 10
    engine.exit("t-app", 1)
    assert driver.crashed()
    assert not serving.running  # not started a third time
    assert not driver.wait_ready(5)
    assert "exited with code 1, 3 times within 60 s: crash loop" in driver.last_output()


def test_exits_spread_beyond_the_window_are_no_crash_loop(tmp_path: Path, clock: Clock) -> None:
    engine = FakeEngine()
    driver = driver_for(engine, tmp_path, clock, restart_budget=1, restart_window_s=60)
    driver.start(make_slot(tmp_path, "a", "1.0.0"))
    for _ in range(4):
        engine.exit("t-app", 1)
        assert not driver.crashed()
        clock.now += 61
    assert driver.restart_count == 4


def test_removed_serving_container_is_run_again(tmp_path: Path, clock: Clock) -> None:
    engine = FakeEngine()
    driver = driver_for(engine, tmp_path, clock)
    driver.start(make_slot(tmp_path, "a", "1.0.0"))
    old = engine.containers.pop("t-app")
    driver.supervise()
    assert engine.containers["t-app"] is not old
    assert driver.restart_count == 1
    assert driver.wait_ready(5)


def test_engine_failure_is_recorded_not_raised(tmp_path: Path, clock: Clock) -> None:
    missing = CliEngine(str(tmp_path / "no-podman"))  # the engine cannot run at all
    driver = ContainerDriver("app", missing, tmp_path / "components", clock=clock)
    driver.start(make_slot(tmp_path, "a", "1.0.0"))
    assert not driver.wait_ready(5)
    assert "is not installed" in driver.last_output()
    assert driver.slot_dir is None


def test_bad_container_json_is_recorded(tmp_path: Path, clock: Clock) -> None:
    slot = make_slot(tmp_path, "a", "1.0.0")
    (slot / "container.json").write_text('{"schema": 1}')
    driver = driver_for(FakeEngine(), tmp_path, clock)
    driver.start(slot)
    assert not driver.wait_ready(5)
    assert '"health" is required' in driver.last_output()


def test_stop_removes_the_containers(tmp_path: Path, clock: Clock) -> None:
    engine = FakeEngine()
    driver = driver_for(engine, tmp_path, clock)
    driver.start(make_slot(tmp_path, "a", "1.0.0"))
    driver.stop()
    assert engine.containers == {}
    assert driver.slot_dir is None
    assert not driver.wait_ready(1)


def test_missing_engine_error_names_the_fix(tmp_path: Path) -> None:
    engine = CliEngine(str(tmp_path / "no-podman"))
    with pytest.raises(ContainerEngineError, match="install podman or docker"):
        engine.inspect("x")


def test_forget_removes_an_image_only_when_no_container_of_ours_uses_it(
    tmp_path: Path, clock: Clock
) -> None:
    engine = FakeEngine()
    driver = driver_for(engine, tmp_path, clock)
    v1, v2 = make_slot(tmp_path, "a", "1.0.0"), make_slot(tmp_path, "b", "2.0.0")
    driver.start(v1)
    driver.restart(v2)
    assert driver.wait_ready(5) and len(engine.images) == 2
    serving = engine.containers["t-app"].request.image_id
    driver.forget(v2)  # the serving container's image stays
    assert serving in engine.images
    driver.forget(v1)  # the old one goes
    assert engine.images == {serving}
    driver.forget(tmp_path / "no-such-slot")  # nothing there: nothing to do, no error
