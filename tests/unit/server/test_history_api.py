"""The fleet's history through the API: the audit trail, event search, uploaded device logs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from apitools import ApiDevice, get_json, hand_ticked_settings, make_client, publish, tick
from edgeota.timeutil import utcnow

LOG_CAP = 4096


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    settings = hand_ticked_settings(tmp_path, database_url, device_log_max_bytes=LOG_CAP)
    yield from make_client(settings)


def _actions(client: TestClient, **params: str) -> list[str]:
    return [e["action"] for e in get_json(client, "/api/v1/audit", **params)]


def test_operator_actions_are_audited_with_who_what_and_target(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    release = publish(client, "1.0.0", b"v1")
    assert client.post("/api/v1/deployments", json={"release": release["id"], "group": "lab"})
    r = client.put(f"/api/v1/devices/{device.id}/tags", json={"tags": ["region=eu"]})
    assert r.status_code == 200
    r = client.post("/api/v1/groups", json={"name": "eu", "filter": {"region": "eu"}})
    assert r.status_code == 201
    assert client.post(f"/api/v1/devices/{device.id}/revoke").status_code == 200

    entries = get_json(client, "/api/v1/audit")
    assert [e["action"] for e in entries] == [
        "device.revoke",
        "group.create",
        "device.tags",
        "deployment.create",
        "release.publish",
        "enrollment_token.create",
    ]
    assert {e["actor"] for e in entries} == {"admin:first"}
    publish_entry = entries[-2]
    assert publish_entry["target_type"] == "release"
    assert publish_entry["target_id"] == release["id"]
    assert publish_entry["details"] == {"component": "denoiser", "version": "1.0.0"}
    # Filters: by target, by action prefix, by text in the details.
    assert _actions(client, target_type="device", target=device.id) == [
        "device.revoke",
        "device.tags",
    ]
    assert _actions(client, action="device.") == ["device.revoke", "device.tags"]
    assert _actions(client, q="region=EU") == ["device.tags"]


def test_rollout_commands_and_the_loops_decisions_are_audited(client: TestClient) -> None:
    devices = [ApiDevice(client, ["fleet"]) for _ in range(2)]
    release = publish(client, "2.0.0", b"v2")
    rollout = client.post(
        "/api/v1/rollouts",
        json={"release": release["id"], "group": "fleet", "percentages": [100], "max_failed": 0},
    ).json()
    now = utcnow()
    tick(client, now)
    devices[0].report("rolled_back", release, reason="probe error 0.4 > 0.05")
    tick(client, now + timedelta(seconds=1))
    assert client.post(f"/api/v1/rollouts/{rollout['id']}/abort").status_code == 200

    entries = get_json(client, "/api/v1/audit", target_type="rollout", target=str(rollout["id"]))
    assert [(e["actor"], e["action"]) for e in entries] == [
        ("admin:first", "rollout.abort"),
        ("rollout-loop", "rollout.halted"),
        ("rollout-loop", "rollout.phase_started"),
        ("admin:first", "rollout.create"),
    ]
    assert "failed" in entries[1]["details"]["reason"]
    assert entries[3]["details"]["percentages"] == [100]


def test_events_are_searchable_across_devices(client: TestClient) -> None:
    a, b = ApiDevice(client, ["lab"]), ApiDevice(client, ["lab"])
    v1, v2 = publish(client, "1.0.0", b"v1"), publish(client, "2.0.0", b"v2")
    before = utcnow()
    a.report("committed", v1)
    a.report("download_failed", v2, reason="connection reset by peer")
    b.report("rolled_back", v2, reason="probe: max_abs_error 0.7 above 0.05")
    b.report("committed", v1)

    def found(**params: str) -> list[tuple[str, str]]:
        return [(e["device_id"], e["event"]) for e in get_json(client, "/api/v1/events", **params)]

    assert found(release=v2["id"]) == [(b.id, "rolled_back"), (a.id, "download_failed")]
    assert found(release="denoiser@1.0.0") == [(b.id, "committed"), (a.id, "committed")]
    assert found(device=a.id, event="committed") == [(a.id, "committed")]
    assert found(q="MAX_ABS") == [(b.id, "rolled_back")]
    assert len(found(since=before.isoformat())) == 4
    assert found(since=(utcnow() + timedelta(minutes=1)).isoformat()) == []
    r = client.get("/api/v1/events", params={"release": "denoiser@9.9.9"})
    assert r.status_code == 404


def test_a_device_uploads_its_log_and_operators_find_it(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    release = publish(client, "2.0.0", b"v2")
    text = "agent: health check failed\nprobe: max_abs_error 0.7 above 0.05\n"
    r = client.post(
        f"/api/v1/devices/{device.id}/logs",
        params={"component": "denoiser", "release_id": release["id"], "event": "rolled_back"},
        content=text.encode(),
        headers={**device.headers, "Content-Type": "text/plain"},
    )
    assert r.status_code == 201, r.text
    log = r.json()
    assert log["size"] == len(text) and log["event"] == "rolled_back"

    listed = get_json(client, f"/api/v1/devices/{device.id}/logs")
    assert [entry["id"] for entry in listed] == [log["id"]]
    assert [entry["id"] for entry in get_json(client, "/api/v1/logs", q="MAX_ABS_error")] == [
        log["id"]
    ]
    assert get_json(client, "/api/v1/logs", q="nothing like this") == []
    r = client.get(f"/api/v1/logs/{log['id']}")
    assert r.status_code == 200 and r.text == text
    # The device may list its own logs too.
    r = client.get(f"/api/v1/devices/{device.id}/logs", headers=device.headers)
    assert r.status_code == 200 and len(r.json()) == 1


def test_log_upload_is_size_capped(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    url = f"/api/v1/devices/{device.id}/logs"
    r = client.post(url, content=b"x" * (LOG_CAP + 1), headers=device.headers)
    assert r.status_code == 413
    assert "at most" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while streaming
        for _ in range(LOG_CAP // 1024 + 2):
            yield b"y" * 1024

    r = client.post(url, content=chunks(), headers=device.headers)
    assert r.status_code == 413
    assert client.post(url, content=b"z" * LOG_CAP, headers=device.headers).status_code == 201
    assert get_json(client, "/api/v1/logs", device=device.id)[0]["size"] == LOG_CAP


def test_a_device_may_upload_and_read_only_its_own_logs(client: TestClient) -> None:
    a, b = ApiDevice(client, ["lab"]), ApiDevice(client, ["lab"])
    r = client.post(f"/api/v1/devices/{b.id}/logs", content=b"not mine", headers=a.headers)
    assert r.status_code == 403
    assert client.get(f"/api/v1/devices/{b.id}/logs", headers=a.headers).status_code == 403
    assert client.get("/api/v1/logs", headers=a.headers).status_code == 403
    r = client.post(f"/api/v1/devices/{a.id}/logs", content=b"admin has no device")
    assert r.status_code == 403
    r = client.post(
        f"/api/v1/devices/{a.id}/logs",
        content=b"log",
        headers={"Authorization": "Bearer dev-unknown.secret"},
    )
    assert r.status_code == 401
    assert get_json(client, "/api/v1/logs") == []


def test_device_credentials_cannot_search_the_fleet(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    for url in ("/api/v1/events", "/api/v1/audit"):
        assert client.get(url, headers=device.headers).status_code == 403
