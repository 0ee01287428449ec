"""The demo: a real server and three real agents on loopback, a signed update, a rollback.

1. trains the example digits denoiser (v1, a better v2, a broken v3 that outputs NaN);
2. starts the server over HTTPS with a throwaway CA, publishes v1 to group ``demo``;
3. starts three agents as separate processes, each with its own data dir;
4. publishes v2, waits until the server has built its deltas from v1, deploys it and waits
   for every device to commit it, then reports the bytes sent with deltas and without;
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
    bytes_sent: int = 0  # v1 -> v2, all devices: what the agents downloaded
    bytes_full: int = 0  # the same update in full files

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
            "bytes_sent": self.bytes_sent,
            "bytes_full": self.bytes_full,
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

            def publish_and_deploy(folder: str, version: str, *, deltas: bool = False) -> str:
                release = admin.publish(load_release(work / "models" / folder), COMPONENT, version)
                if deltas:
                    # Deltas are built in the background; deploying before they are would
                    # send full files, so the demo waits and shows them being used.
                    built = _wait_deltas(admin, str(release["id"]), step_timeout_s)
                    report(f"server built deltas of {version}: {built}", [])
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

            v2 = publish_and_deploy("v2", "2.0.0", deltas=True)
            wait_for("devices update to v2", lambda ds: _all_on(ds, "2.0.0"))
            result.updated = [d["id"] for d in fleet() if installed_version(d) == "2.0.0"]
            for d in fleet():
                detail = _committed_detail(admin, d["id"], v2)
                result.bytes_sent += int(detail.get("bytes_downloaded", 0))
                result.bytes_full += int(detail.get("bytes_full", 0))
            share = result.bytes_sent / result.bytes_full if result.bytes_full else 1.0
            report(
                f"v1 -> v2 sent {result.bytes_sent:,} bytes with deltas, "
                f"{result.bytes_full:,} without ({share:.0%})",
                [],
            )

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


def _wait_deltas(admin: AdminClient, release_id: str, timeout_s: float) -> str:
    """Wait until no delta of the release is pending or running; summarize them."""
    deltas: list[dict[str, Any]] = []

    def settled() -> bool:
        deltas[:] = admin.release(release_id)["deltas"]
        return all(d["status"] not in ("pending", "running") for d in deltas)

    wait_until(settled, timeout_s, interval_s=0.5, what=f"deltas of {release_id}")
    return ", ".join(f"{d['file']} {d['status']} ({d['length']} bytes)" for d in deltas) or "none"


def _committed_detail(admin: AdminClient, device_id: str, release_id: str) -> dict[str, Any]:
    for e in admin.events(device_id, 50):
        if e["event"] == "committed" and e["release_id"] == release_id:
            detail: dict[str, Any] = e["detail"]
            return detail
    return {}


def _all_on(devices: list[dict[str, Any]], version: str) -> bool:
    return all(installed_version(d) == version for d in devices)
