"""The device's reported time zone through the API, on SQLite and PostgreSQL, and the
migration that stores it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from apitools import ApiDevice, hand_ticked_settings, make_client
from edgeota.server import db
from support import alembic_config

INVENTORY: dict[str, Any] = {
    "hardware_class": "x86-64",
    "ram_total_mb": 4096,
    "model_ram_budget_mb": 1024,
    "disk_free_mb": 10000,
}


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    yield from make_client(hand_ticked_settings(tmp_path, database_url))


def _report(device: ApiDevice, **extra: Any) -> Any:
    return device.client.put(
        f"/api/v1/devices/{device.id}/inventory",
        json={**INVENTORY, **extra},
        headers=device.headers,
    )


def test_reported_zone_is_stored_and_shown(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    assert client.get(f"/api/v1/devices/{device.id}").json()["reported_time_zone"] is None
    assert _report(device, timezone="Asia/Kolkata").status_code == 204
    shown = client.get(f"/api/v1/devices/{device.id}").json()
    assert shown["reported_time_zone"] == "Asia/Kolkata"
    assert shown["time_zone"] is None  # the operator's zone is another thing
    listed = client.get("/api/v1/devices").json()
    assert [d["reported_time_zone"] for d in listed] == ["Asia/Kolkata"]


def test_unknown_zone_is_refused_naming_the_field(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    _report(device, timezone="Europe/Berlin")
    for bad in ("Europe/Atlantis", "../../etc/passwd", "x" * 65):
        r = _report(device, timezone=bad)
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"] == ["body", "timezone"]
    assert client.get(f"/api/v1/devices/{device.id}").json()["reported_time_zone"] == (
        "Europe/Berlin"
    )


def test_windows_without_a_zone_use_the_reported_one(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    url = f"/api/v1/devices/{device.id}/windows"
    window = {"cron": "0 2 * * *", "duration_s": 3600}
    # Nothing reported yet: UTC, as before.
    assert client.put(url, json={"windows": [window]}).json()["windows"][0]["time_zone"] == "UTC"
    _report(device, timezone="America/Sao_Paulo")
    both = [window, {**window, "time_zone": "Asia/Tokyo"}]
    zones = [w["time_zone"] for w in client.put(url, json={"windows": both}).json()["windows"]]
    assert zones == ["America/Sao_Paulo", "Asia/Tokyo"]
    # A zone the operator gives for the device wins over the reported one.
    body = {"windows": [window], "time_zone": "Europe/Lisbon"}
    assert client.put(url, json=body).json()["windows"][0]["time_zone"] == "Europe/Lisbon"


def _device_columns(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns("devices")}
    finally:
        engine.dispose()


def test_migration_0007_adds_and_removes_the_column(database_url: str) -> None:
    db.run_migrations(database_url)
    assert "reported_time_zone" in _device_columns(database_url)
    command.downgrade(alembic_config(database_url), "0006")
    assert "reported_time_zone" not in _device_columns(database_url)
    assert "time_zone" in _device_columns(database_url)  # 0004's column stays
    command.upgrade(alembic_config(database_url), "head")
    assert "reported_time_zone" in _device_columns(database_url)
