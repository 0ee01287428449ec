"""A real server seeded through the API the way a fleet would fill it, for browser and CLI tests.

Four devices run denoiser 1.0.0; 2.0.0 (two model variants) goes out in a rollout whose
field-test device rolls back, so the rollout halts; that device uploads its log; two devices
give feedback.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgeota.procs import wait_until
from edgeota.releasefolder import load_release
from harness import ServerHandle


@dataclass
class Device:
    """A device as seen from its side of the API."""

    server: ServerHandle
    id: str
    credential: str
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.credential}", **kwargs.pop("headers", {})}
        r = httpx.request(
            method,
            f"{self.server.url}/api/v1/devices/{self.id}{path}",
            headers=headers,
            verify=self.server.ssl_context(),
            **kwargs,
        )
        assert r.status_code < 300, r.text
        return r

    def report(self, event: str, release: dict[str, Any], reason: str | None = None) -> None:
        body = {
            "seq": next(self.seq),
            "time": "2026-05-04T10:00:00Z",
            "event": event,
            "component": release["component"],
            "state": "idle",
            "release_id": release["id"],
            "version": release["version"],
            "reason": reason,
        }
        self.call("POST", "/events", json={"events": [body]})

    def rate(self, release: dict[str, Any], rating: int, comment: str = "") -> None:
        body = {
            "client_id": f"fb-{self.id}-{next(self.seq)}",
            "release_id": release["id"],
            "rating": rating,
            "comment": comment,
        }
        self.call("POST", "/feedback", json=body)


def enroll(server: ServerHandle, name: str, group: str = "fleet") -> Device:
    r = httpx.post(
        f"{server.url}/api/v1/enroll",
        json={
            "enrollment_token": server.admin.enrollment_token([group]),
            "name": name,
            "hardware_class": "x86-64-test",
        },
        verify=server.ssl_context(),
    )
    assert r.status_code == 201, r.text
    return Device(server, r.json()["device_id"], r.json()["credential"])


def publish_variants(server: ServerHandle, work: Path, version: str) -> dict[str, Any]:
    folder = work / f"release-{version}"
    folder.mkdir()
    files = []
    for variant in ("fp32", "int8"):
        (folder / f"model-{variant}.onnx").write_bytes(f"{variant} {version}".encode() * 64)
        files.append({"path": f"model-{variant}.onnx", "role": "model", "variant": variant})
    (folder / "release.json").write_text(json.dumps({"schema": 1, "files": files}))
    return server.admin.publish(load_release(folder), "denoiser", version)


@dataclass
class Seeded:
    server: ServerHandle
    devices: list[Device]
    v1: dict[str, Any]
    v2: dict[str, Any]
    rollout: dict[str, Any]
    token: str


def seed(server: ServerHandle, work: Path) -> Seeded:
    devices = [enroll(server, f"camera-{n}") for n in range(1, 5)]
    v1 = publish_variants(server, work, "1.0.0")
    for device in devices:
        device.report("committed", v1)
    v2 = publish_variants(server, work, "2.0.0")
    rollout = server.admin.create_rollout(
        {
            "release": v2["id"],
            "group": "fleet",
            "field_test_devices": [devices[0].id],
            "percentages": [100],
            "max_failed": 0,
            "max_negative_feedback_share": 0.5,
            "feedback_min_count": 3,
        }
    )
    wait_until(
        lambda: server.admin.rollout(rollout["id"])["phases"][0]["told"] == 1,
        30,
        what="the field test told its device",
    )
    canary = devices[0]
    canary.report("update_found", v2)
    canary.report("rolled_back", v2, reason="health check: max_abs_error 0.71 above 0.25")
    canary.call(
        "POST",
        "/logs",
        params={"component": "denoiser", "release_id": v2["id"], "event": "rolled_back"},
        content=b"agent: switched to slot b\nprobe: max_abs_error 0.71 above 0.25\nrolling back\n",
    )
    wait_until(lambda: server.admin.rollout(rollout["id"])["status"] == "halted", 30, what="a halt")
    devices[1].rate(v1, 5, "sharp and fast")
    canary.rate(v2, 1, "choppy output after the update")
    rollout = server.admin.rollout(rollout["id"])
    return Seeded(server, devices, v1, v2, rollout, server.admin_token)
