"""The demo: a real server and three real agents on loopback, a signed update, a rollback.

1. trains the example digits denoiser (v1, a better v2, a broken v3 that outputs NaN);
2. starts the server over HTTPS with a throwaway CA, publishes v1 to group ``demo``;
3. starts three agents as separate processes, each with its own data dir;
4. publishes v2, waits until the server has built its deltas from v1, deploys it and waits
   for every device to commit it, then reports the bytes sent with deltas and without;
5. deploys the broken v3 and waits for every device to roll itself back to v2.

With containers (``containers``: ``auto`` when podman works here and busybox-static is
installed; see :mod:`edgeota.demo_app`), device 1 also runs an app container. After the
training the demo builds the app images v1, v2 (one layer changed) and a broken v3 (its
health path answers 404) with podman, and device 1 also enrolls into ``demo-app`` and runs
containers with podman, named with a prefix unique to this run. After step 5 it:

6. publishes app 1.0.0 (needing ``denoiser >=1.0.0``) to ``demo-app`` and waits until it
   serves on its port;
7. publishes 2.0.0 and reports the bytes device 1 downloaded against the full image (only
   the changed layer travels);
8. publishes the broken 3.0.0, which device 1 checks beside 2.0.0 on the staging port and
   refuses, while 2.0.0 keeps serving.

At the end, and when the demo fails or is interrupted, the agents are stopped and the run's
containers and images removed.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgeota.adminclient import AdminClient
from edgeota.agent.engine import CliEngine, ContainerEngineError
from edgeota.demo_app import (
    HEALTH_PATH,
    VERSION_PATH,
    AppImages,
    Containers,
    build_app_images,
    httpd_command,
    podman_engine,
    podman_problem,
    remove_app,
)
from edgeota.imagearchive import convert_image_archive
from edgeota.procs import ProcessGroup, free_port, start_server, wait_until
from edgeota.releasefolder import LocalRelease, load_release
from edgeota.server.devcerts import make_dev_certificates

COMPONENT = "denoiser"
GROUP = "demo"
APP = "app"
APP_GROUP = "demo-app"
APP_NEEDS = {COMPONENT: ">=1.0.0"}
APP_HEALTH_TIMEOUT_S = 10.0  # how long broken 3.0.0 gets to pass before it is refused
ROLLED_BACK_EVENTS = frozenset({"rolled_back"})
_EVENTS = 200  # recent events searched for one release's outcome

Report = Callable[[str, list[dict[str, Any]]], None]


@dataclass
class DemoResult:
    devices: int
    updated: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    final_versions: dict[str, str | None] = field(default_factory=dict)
    seconds: float = 0.0
    bytes_sent: int = 0  # v1 -> v2, all devices: what the agents downloaded
    bytes_full: int = 0  # the same update in full files
    containers: bool = False  # whether the app container part ran
    container_prefix: str | None = None  # names of its containers and image tags start so
    app_bytes_sent: int = 0  # app 1.0.0 -> 2.0.0 on device 1: what its agent downloaded
    app_bytes_full: int = 0  # the full 2.0.0 image and settings
    app_rolled_back: bool = False  # device 1 refused the broken app 3.0.0
    app_final_version: str | None = None  # the app release device 1 reports at the end
    app_serving: str | None = None  # what GET /version answered at the end

    @property
    def ok(self) -> bool:
        model_ok = (
            len(self.updated) == self.devices
            and len(self.rolled_back) == self.devices
            and all(v == "2.0.0" for v in self.final_versions.values())
        )
        app_ok = not self.containers or (
            self.app_rolled_back
            and self.app_final_version == "2.0.0"
            and self.app_serving == "2"
            and 0 < self.app_bytes_sent < self.app_bytes_full
        )
        return model_ok and app_ok

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "updated": self.updated,
            "rolled_back": self.rolled_back,
            "final_versions": self.final_versions,
            "seconds": round(self.seconds, 1),
            "bytes_sent": self.bytes_sent,
            "bytes_full": self.bytes_full,
            "containers": self.containers,
            "container_prefix": self.container_prefix,
            "app_bytes_sent": self.app_bytes_sent,
            "app_bytes_full": self.app_bytes_full,
            "app_rolled_back": self.app_rolled_back,
            "app_final_version": self.app_final_version,
            "app_serving": self.app_serving,
        }


@dataclass
class _AppRun:
    """The container part of one run: its engine, its names, its images once built."""

    engine: CliEngine
    prefix: str
    images: AppImages | None = None

    def agent_args(self) -> list[str]:
        engine_args = [f"--container-engine-arg={a}" for a in self.engine.global_args]
        return [
            "--container-engine",
            self.engine.executable,
            *engine_args,
            "--container-prefix",
            self.prefix,
        ]


def installed_version(device: dict[str, Any], component: str = COMPONENT) -> str | None:
    for c in device["components"]:
        if c["component"] == component:
            version: str | None = c["version"]
            return version
    return None


def run_demo(
    work: Path,
    report: Report,
    devices: int = 3,
    step_timeout_s: float = 180.0,
    containers: Containers = Containers.AUTO,
) -> DemoResult:
    """Run the demo in ``work``; ContainerEngineError when ``containers`` is ON and podman
    does not work here, TimeoutError when a step does not happen in time."""
    started = time.monotonic()
    result = DemoResult(devices=devices)
    app = _app_run(work, containers, report)
    try:
        _train(work, report)
        if app is not None:
            report(f"building the app images v1, v2, broken v3 with podman ({app.prefix}*)", [])
            app.images = build_app_images(app.engine, work / "app" / "images", app.prefix)
            result.containers, result.container_prefix = True, app.prefix
        with ProcessGroup() as procs:
            _run_fleet(work, procs, report, result, app, step_timeout_s)
    finally:
        if app is not None:  # the agents are stopped by now: nothing starts them again
            built = app.images.image_ids.values() if app.images is not None else ()
            remove_app(app.engine, app.prefix, built)
    result.seconds = time.monotonic() - started
    return result


def _app_run(work: Path, containers: Containers, report: Report) -> _AppRun | None:
    if containers == Containers.OFF:
        return None
    engine = podman_engine(work / "app")
    problem = podman_problem(engine)
    if problem is None:
        return _AppRun(engine, f"edgeota-demo-{secrets.token_hex(4)}-")
    if containers == Containers.ON:
        raise ContainerEngineError(
            f"--containers on, but podman cannot run the demo's app container here: {problem}; "
            "fix that, or run with --containers off"
        )
    report(f"no container app in this run: {problem} (--containers on makes this an error)", [])
    return None


def _train(work: Path, report: Report) -> None:
    from edgeota.modelops.digits import build_example_releases

    report("training the example model (v1, v2, broken v3)", [])
    build_example_releases(work / "models")


def _run_fleet(
    work: Path,
    procs: ProcessGroup,
    report: Report,
    result: DemoResult,
    app: _AppRun | None,
    step_timeout_s: float,
) -> None:
    certs = make_dev_certificates(work / "certs")
    secret = secrets.token_urlsafe(32)
    url = start_server(
        procs,
        work / "server",
        work / "logs" / "server.log",
        env={"EDGEOTA_BOOTSTRAP_ADMIN_TOKEN": secret, "EDGEOTA_POLL_INTERVAL_S": "2"},
        certs=certs,
    ).url
    report(f"server up at {url}", [])
    with AdminClient(url, f"eoa_{secret}", certs.ca_cert) as admin:
        steps = _Steps(admin, report, step_timeout_s)
        steps.publish_and_deploy(load_release(work / "models" / "v1"), COMPONENT, "1.0.0", GROUP)
        root = work / "server" / "tuf" / "metadata" / "1.root.json"
        for i in range(result.devices):
            data_dir = work / "devices" / f"device-{i + 1}"
            runs_app = app if i == 0 else None  # device 1 runs the app container
            procs.start(
                [
                    sys.executable,
                    "-m",
                    "edgeota",
                    "agent",
                    "--server",
                    url,
                    "--data-dir",
                    str(data_dir),
                    "--root",
                    str(root),
                    "--ca",
                    str(certs.ca_cert),
                    "--name",
                    f"demo-{i + 1}",
                    "--runtime-port",
                    str(free_port()),
                    "--local-api-port",  # each device its own (the default port is shared)
                    str(free_port()),
                    "--enroll-token",
                    admin.enrollment_token([GROUP, APP_GROUP] if runs_app else [GROUP]),
                    *(runs_app.agent_args() if runs_app else ()),
                ],
                work / "logs" / f"agent-{i + 1}.log",
                # CONTAINERS_CONF for the agent's podman commands
                env=runs_app.engine.env if runs_app else None,
            )
        _update_models(work, steps, result, last=app is None)
        if app is not None:
            _update_app(work, steps, result, app)


def _update_models(work: Path, steps: _Steps, result: DemoResult, *, last: bool) -> None:
    admin, n = steps.admin, result.devices
    steps.wait_for("devices install v1", GROUP, n, COMPONENT, lambda ds: _all_on(ds, "1.0.0"))
    v2 = steps.publish_and_deploy(
        load_release(work / "models" / "v2"), COMPONENT, "2.0.0", GROUP, deltas=True
    )
    steps.wait_for("devices update to v2", GROUP, n, COMPONENT, lambda ds: _all_on(ds, "2.0.0"))
    fleet = admin.devices(GROUP)
    result.updated = [d["id"] for d in fleet if installed_version(d) == "2.0.0"]
    for d in fleet:
        detail = _committed_detail(admin, d["id"], v2)
        result.bytes_sent += int(detail.get("bytes_downloaded", 0))
        result.bytes_full += int(detail.get("bytes_full", 0))
    share = result.bytes_sent / result.bytes_full if result.bytes_full else 1.0
    steps.report(
        f"v1 -> v2 sent {result.bytes_sent:,} bytes with deltas, "
        f"{result.bytes_full:,} without ({share:.0%})",
        [],
    )
    broken = steps.publish_and_deploy(
        load_release(work / "models" / "v3-broken"), COMPONENT, "3.0.0", GROUP
    )

    def rolled_back(ds: list[dict[str, Any]]) -> bool:
        return all(
            installed_version(d) == "2.0.0" and _has_event(admin, d["id"], broken) for d in ds
        )

    steps.wait_for(
        "devices try v3, fail its health check, roll back to v2", GROUP, n, COMPONENT, rolled_back
    )
    final = admin.devices(GROUP)
    result.rolled_back = [d["id"] for d in final]
    result.final_versions = {d["id"]: installed_version(d) for d in final}
    steps.show("done" if last else "done with the model", final, COMPONENT)


def _update_app(work: Path, steps: _Steps, result: DemoResult, app: _AppRun) -> None:
    port, staging_port = free_port(), free_port()
    settings = work / "app" / "container.json"
    settings.write_text(
        json.dumps(
            {
                "schema": 1,
                "command": httpd_command(),
                "network": "host",
                "port": port,
                "staging_port": staging_port,
                "health": {"http": HEALTH_PATH, "timeout_s": APP_HEALTH_TIMEOUT_S},
                "stop_timeout_s": 2,
            },
            indent=2,
        )
    )
    version_url = f"http://127.0.0.1:{port}{VERSION_PATH}"

    def serving() -> str | None:
        try:
            return httpx.get(version_url, timeout=2).text.strip()
        except httpx.HTTPError:
            return None

    def publish(image: str, version: str) -> str:
        folder = work / "app" / f"release-{version}"
        assert app.images is not None
        convert_image_archive(app.images.archives[image], settings, folder, needs=APP_NEEDS)
        needs = ", ".join(f"{c} {spec}" for c, spec in APP_NEEDS.items())
        return steps.publish_and_deploy(
            load_release(folder), APP, version, APP_GROUP, note=f"needs {needs}"
        )

    def serves(version: str, answer: str) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda ds: _all_on(ds, version, APP) and serving() == answer

    publish("v1", "1.0.0")
    steps.wait_for(
        f"device 1 runs app 1.0.0 in a container, serving {version_url}",
        APP_GROUP,
        1,
        APP,
        serves("1.0.0", "1"),
    )
    v2 = publish("v2", "2.0.0")
    steps.wait_for(
        f"device 1 checks app 2.0.0 on port {staging_port}, then serves it on {port}",
        APP_GROUP,
        1,
        APP,
        serves("2.0.0", "2"),
    )
    (device,) = steps.admin.devices(APP_GROUP)
    detail = _committed_detail(steps.admin, device["id"], v2)
    result.app_bytes_sent = int(detail.get("bytes_downloaded", 0))
    result.app_bytes_full = int(detail.get("bytes_full", 0))
    share = result.app_bytes_sent / result.app_bytes_full if result.app_bytes_full else 1.0
    steps.report(
        f"app 1.0.0 -> 2.0.0 downloaded {result.app_bytes_sent:,} bytes of "
        f"{result.app_bytes_full:,} ({share:.1%}): the image layers it had stayed home",
        [],
    )
    broken = publish("v3", "3.0.0")

    def refused(ds: list[dict[str, Any]]) -> bool:
        return serves("2.0.0", "2")(ds) and _has_event(steps.admin, device["id"], broken)

    steps.wait_for(
        f"device 1 checks app 3.0.0 on port {staging_port}: it fails, 2.0.0 keeps serving",
        APP_GROUP,
        1,
        APP,
        refused,
    )
    failed = _event(steps.admin, device["id"], broken, frozenset({"health_failed"}))
    if failed is not None:  # the reason in full: the table cuts it short
        steps.report(f"device 1 said why: {failed['reason']}", [])
    (device,) = steps.admin.devices(APP_GROUP)
    result.app_rolled_back = True
    result.app_final_version = installed_version(device, APP)
    result.app_serving = serving()
    steps.show("done", [device], APP)


class _Steps:
    """Publishing, deploying and waiting, each reported as it happens."""

    def __init__(self, admin: AdminClient, report: Report, step_timeout_s: float) -> None:
        self.admin, self.report, self.step_timeout_s = admin, report, step_timeout_s

    def publish_and_deploy(
        self,
        release_folder: LocalRelease,
        component: str,
        version: str,
        group: str,
        *,
        deltas: bool = False,
        note: str = "",
    ) -> str:
        release = self.admin.publish(release_folder, component, version)
        if deltas:
            # Deltas are built in the background; deploying before they are would
            # send full files, so the demo waits and shows them being used.
            built = _wait_deltas(self.admin, str(release["id"]), self.step_timeout_s)
            self.report(f"server built deltas of {version}: {built}", [])
        self.admin.deploy(release["id"], group)
        extra = f", {note}" if note else ""
        self.report(
            f"published and deployed {component} {version} to {group} ({release['id']}{extra})",
            [],
        )
        return str(release["id"])

    def show(self, what: str, devices: list[dict[str, Any]], component: str) -> None:
        """Report ``what`` with the devices' state of ``component`` (only)."""
        self.report(what, [_only(d, component) for d in devices])

    def wait_for(
        self,
        what: str,
        group: str,
        count: int,
        component: str,
        done: Callable[[list[dict[str, Any]]], bool],
    ) -> None:
        """Wait until the ``count`` devices of ``group`` are ``done``, reporting each change
        of their ``component``."""
        last: list[Any] = []

        def check() -> bool:
            current = self.admin.devices(group)
            summary = [_only(d, component) for d in current]
            if summary != last:
                last[:] = summary
                self.report(what, summary)
            return len(current) == count and done(current)

        wait_until(check, self.step_timeout_s, interval_s=0.5, what=what)


def _wait_deltas(admin: AdminClient, release_id: str, timeout_s: float) -> str:
    """Wait until no delta of the release is pending or running; summarize them."""
    deltas: list[dict[str, Any]] = []

    def settled() -> bool:
        deltas[:] = admin.release(release_id)["deltas"]
        return all(d["status"] not in ("pending", "running") for d in deltas)

    wait_until(settled, timeout_s, interval_s=0.5, what=f"deltas of {release_id}")
    return ", ".join(f"{d['file']} {d['status']} ({d['length']} bytes)" for d in deltas) or "none"


def _event(
    admin: AdminClient, device_id: str, release_id: str, names: frozenset[str]
) -> dict[str, Any] | None:
    """The device's latest event of ``release_id`` named one of ``names``."""
    for e in admin.events(device_id, _EVENTS):
        if e["event"] in names and e["release_id"] == release_id:
            return e
    return None


def _committed_detail(admin: AdminClient, device_id: str, release_id: str) -> dict[str, Any]:
    event = _event(admin, device_id, release_id, frozenset({"committed"}))
    detail: dict[str, Any] = event["detail"] if event is not None else {}
    return detail


def _has_event(admin: AdminClient, device_id: str, release_id: str) -> bool:
    return _event(admin, device_id, release_id, ROLLED_BACK_EVENTS) is not None


def _only(device: dict[str, Any], component: str) -> dict[str, Any]:
    """The device with only ``component`` in its components."""
    return {
        **device,
        "components": [c for c in device["components"] if c["component"] == component],
    }


def _all_on(devices: list[dict[str, Any]], version: str, component: str = COMPONENT) -> bool:
    return all(installed_version(d, component) == version for d in devices)
