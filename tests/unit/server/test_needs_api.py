"""The server refuses a deployment or rollout that would leave a component's need unmet.

A device runs a ``model`` and an ``app``; releases declare what they need of each other.
Runs on SQLite and PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_variants_api import Device, upload

from apitools import make_client
from edgeota.server.settings import ServerSettings


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    yield from make_client(ServerSettings(data_dir=tmp_path / "server", database_url=database_url))


def publish(
    client: TestClient, component: str, version: str, needs: dict[str, str] | None = None
) -> dict[str, Any]:
    art = upload(client, f"{component} {version}".encode())
    r = client.post(
        "/api/v1/releases",
        json={
            "component": component,
            "version": version,
            "files": [{"file": "payload.bin", "role": "file", **art}],
            "needs": needs or {},
        },
    )
    assert r.status_code == 201, r.text
    release: dict[str, Any] = r.json()
    return release


def deploy(client: TestClient, release: dict[str, Any]) -> Any:
    return client.post("/api/v1/deployments", json={"release": release["id"], "group": "lab"})


def report_running(device: Device, **versions: str) -> None:
    body = {
        "hardware_class": "x86-64",
        "ram_total_mb": 4096,
        "model_ram_budget_mb": 1024,
        "disk_free_mb": 9000,
        "components": {
            name: {"version": v, "release_id": None, "state": "idle", "slot": "a"}
            for name, v in versions.items()
        },
    }
    r = device.client.put(
        f"/api/v1/devices/{device.id}/inventory", json=body, headers=device.headers
    )
    assert r.status_code == 204, r.text


def test_an_app_whose_model_need_is_unmet_is_refused_with_the_devices(client: TestClient) -> None:
    devices = [Device(client, f"cam-{i}") for i in range(7)]
    for d in devices:
        report_running(d, model="1.2.0")
    app = publish(client, "app", "2.1.0", {"model": ">=1.3.0"})
    r = deploy(client, app)
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert "app 2.1.0 needs model >=1.3.0, found model 1.2.0 on 7 device(s)" in detail
    assert "and 2 more" in detail and "Deploy the needed versions" in detail
    r = client.post("/api/v1/rollouts", json={"release": app["id"], "group": "lab"})
    assert r.status_code == 409 and "needs model >=1.3.0" in r.json()["detail"]
    # Nothing was written: no device wants the app.
    assert "app" not in devices[0].checkin()[1]["components"]


def test_deploying_the_needed_model_first_lets_the_app_through(client: TestClient) -> None:
    device = Device(client, "cam")
    report_running(device, model="1.2.0")
    assert deploy(client, publish(client, "model", "1.3.0")).status_code == 201
    assert deploy(client, publish(client, "app", "2.1.0", {"model": ">=1.3.0"})).status_code == 201
    wanted = device.checkin()[1]["components"]
    assert (wanted["model"]["version"], wanted["app"]["version"]) == ("1.3.0", "2.1.0")


def test_a_model_that_breaks_the_desired_apps_need_is_refused(client: TestClient) -> None:
    device = Device(client, "cam")
    assert deploy(client, publish(client, "model", "1.3.0")).status_code == 201
    assert (
        deploy(client, publish(client, "app", "2.1.0", {"model": ">=1.3.0,<2.0.0"})).status_code
        == 201
    )
    r = deploy(client, publish(client, "model", "2.0.0"))
    assert r.status_code == 409
    assert "app 2.1.0 needs model >=1.3.0,<2.0.0, found model 2.0.0" in r.json()["detail"]
    assert device.checkin()[1]["components"]["model"]["version"] == "1.3.0"


def test_a_release_with_a_malformed_need_is_refused_at_publish(client: TestClient) -> None:
    art = upload(client, b"x")
    r = client.post(
        "/api/v1/releases",
        json={
            "component": "app",
            "version": "1.0.0",
            "files": [{"file": "x.bin", "role": "file", **art}],
            "needs": {"model": "~1.3"},
        },
    )
    assert r.status_code == 422
    assert "needs of 'model'" in r.text and "clauses such as '>=1.0.0,<2.0.0'" in r.text
