"""The demo: a real server and three real agents on loopback, a signed update, a rollback.

1. trains the example digits denoiser (v1, a better v2, a broken v3 that outputs NaN);
2. starts the server over HTTPS with a throwaway CA, publishes v1 to group ``demo``;
3. starts three agents as separate processes, each with its own data dir;
4. deploys v2 and waits for every device to commit it;
5. deploys the broken v3 and waits for every device to roll itself back to v2.
"""

from __future__ import annotations

import secrets
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeota.adminclient import AdminClient
from edgeota.procs import ProcessGroup, free_port, wait_healthy, wait_until
from edgeota.releasefolder import load_release
from edgeota.server.devcerts import make_dev_certificates

COMPONENT = "denoiser"
GROUP = "demo"
ROLLED_BACK_EVENTS = frozenset({"rolled_back"})

Report = Callable[[str, list[dict[str, Any]]], None]


@dataclass
class DemoResult:
    devices: int
    updated: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    final_versions: dict[str, str | None] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            len(self.updated) == self.devices
            and len(self.rolled_back) == self.devices
            and all(v == "2.0.0" for v in self.final_versions.values())
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "updated": self.updated,
            "rolled_back": self.rolled_back,
            "final_versions": self.final_versions,
            "seconds": round(self.seconds, 1),
        }


def installed_version(device: dict[str, Any]) -> str | None:
    for c in device["components"]:
        if c["component"] == COMPONENT:
            version: str | None = c["version"]
            return version
    return None


def run_demo(
    work: Path, report: Report, devices: int = 3, step_timeout_s: float = 180.0
) -> DemoResult:
    from edgeota.modelops.digits import build_example_releases

    started = time.monotonic()
    result = DemoResult(devices=devices)
    report("training the example model (v1, v2, broken v3)", [])
    build_example_releases(work / "models")
    certs = make_dev_certificates(work / "certs")
    with ProcessGroup() as procs:
        port = free_port()
        secret = secrets.token_urlsafe(32)
        url = f"https://127.0.0.1:{port}"
        server = procs.start(
            [
                sys.executable,
                "-m",
                "edgeota",
                "server",
                "--data-dir",
                str(work / "server"),
                "--port",
                str(port),
                "--tls-cert",
                str(certs.server_cert),
                "--tls-key",
                str(certs.server_key),
            ],
            work / "logs" / "server.log",
            env={"EDGEOTA_BOOTSTRAP_ADMIN_TOKEN": secret, "EDGEOTA_POLL_INTERVAL_S": "2"},
        )
        ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
        wait_healthy(f"{url}/healthz", 60, verify=ctx, proc=server)
        report(f"server up at {url}", [])
        with AdminClient(url, f"eoa_{secret}", certs.ca_cert) as admin:

            def publish_and_deploy(folder: str, version: str) -> str:
                release = admin.publish(load_release(work / "models" / folder), COMPONENT, version)
                admin.deploy(release["id"], GROUP)
                report(f"published and deployed {COMPONENT} {version} ({release['id']})", [])
                return str(release["id"])

            def fleet() -> list[dict[str, Any]]:
                return admin.devices(GROUP)

            def wait_for(what: str, done: Callable[[list[dict[str, Any]]], bool]) -> None:
                last: list[Any] = []

                def check() -> bool:
                    current = fleet()
                    summary = [(d["id"], d["components"]) for d in current]
                    if summary != last:
                        last[:] = summary
                        report(what, current)
                    return len(current) == devices and done(current)

                wait_until(check, step_timeout_s, interval_s=0.5, what=what)

            publish_and_deploy("v1", "1.0.0")
            root = work / "server" / "tuf" / "metadata" / "1.root.json"
            for i in range(devices):
                data_dir = work / "devices" / f"device-{i + 1}"
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
                        "--enroll-token",
                        admin.enrollment_token([GROUP]),
                    ],
                    work / "logs" / f"agent-{i + 1}.log",
                )
            wait_for("devices install v1", lambda ds: _all_on(ds, "1.0.0"))

            publish_and_deploy("v2", "2.0.0")
            wait_for("devices update to v2", lambda ds: _all_on(ds, "2.0.0"))
            result.updated = [d["id"] for d in fleet() if installed_version(d) == "2.0.0"]

            broken = publish_and_deploy("v3-broken", "3.0.0")

            def rolled_back(ds: list[dict[str, Any]]) -> bool:
                return all(
                    installed_version(d) == "2.0.0"
                    and any(
                        e["event"] in ROLLED_BACK_EVENTS and e["release_id"] == broken
                        for e in admin.events(d["id"], 50)
                    )
                    for d in ds
                )

            wait_for("devices try v3, fail its health check, roll back to v2", rolled_back)
            final = fleet()
            result.rolled_back = [d["id"] for d in final]
            result.final_versions = {d["id"]: installed_version(d) for d in final}
            report("done", final)
    result.seconds = time.monotonic() - started
    return result


def _all_on(devices: list[dict[str, Any]], version: str) -> bool:
    return all(installed_version(d) == version for d in devices)
