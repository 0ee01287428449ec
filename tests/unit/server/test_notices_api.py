"""Notices through the API: long-poll check-ins, the notice channel, the broker's auth files."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, update

from apitools import ApiDevice, app_context, hand_ticked_settings, make_client, publish
from edgeota.procs import wait_until
from edgeota.server.models import Device
from edgeota.server.mqtt_notices import device_password, notice_topic


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    yield from make_client(hand_ticked_settings(tmp_path, database_url, long_poll_max_s=30))


def _url(device: ApiDevice) -> str:
    return f"/api/v1/devices/{device.id}/desired-state"


def _long_poll(client: TestClient, device: ApiDevice, etag: str, wait: int) -> dict[str, Any]:
    """Start a long-poll in a thread; the dict gets the response and the seconds it took."""
    result: dict[str, Any] = {}

    def run() -> None:
        start = time.monotonic()
        result["response"] = client.get(
            _url(device), params={"wait": wait}, headers={**device.headers, "If-None-Match": etag}
        )
        result["seconds"] = time.monotonic() - start

    result["thread"] = threading.Thread(target=run)
    result["thread"].start()
    return result


def test_long_poll_answers_as_soon_as_the_desired_state_changes(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    etag = client.get(_url(device), headers=device.headers).headers["etag"]
    release = publish(client, "1.0.0", b"v1")
    waiters = app_context(client).waiters
    poll = _long_poll(client, device, etag, wait=25)
    wait_until(lambda: waiters.waiting == 1, 10, interval_s=0.05, what="the check-in waits")

    assert client.post("/api/v1/deployments", json={"release": release["id"], "group": "lab"})
    poll["thread"].join(15)
    response = poll["response"]
    assert response.status_code == 200
    assert poll["seconds"] < 10  # far below the 25 s it would wait for nothing
    assert response.headers["etag"] != etag
    assert response.json()["components"]["denoiser"]["version"] == "1.0.0"
    assert waiters.waiting == 0


def test_long_poll_without_a_change_ends_in_a_304(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    etag = client.get(_url(device), headers=device.headers).headers["etag"]
    poll = _long_poll(client, device, etag, wait=1)
    poll["thread"].join(15)
    assert poll["response"].status_code == 304
    assert poll["response"].headers["etag"] == etag
    assert 0.9 <= poll["seconds"] < 10


def test_a_change_by_another_server_process_is_found_when_the_wait_ends(
    client: TestClient,
) -> None:
    device = ApiDevice(client, ["lab"])
    etag = client.get(_url(device), headers=device.headers).headers["etag"]
    waiters = app_context(client).waiters
    poll = _long_poll(client, device, etag, wait=2)
    wait_until(lambda: waiters.waiting == 1, 10, interval_s=0.05, what="the check-in waits")
    # Another process shares the database but not this one's waiters: nobody is woken.
    other = create_engine(app_context(client).settings.resolved_database_url)
    with other.begin() as conn:
        conn.execute(
            update(Device)
            .where(Device.id == device.id)
            .values(desired_revision=Device.desired_revision + 1)
        )
    other.dispose()
    poll["thread"].join(15)
    assert poll["response"].status_code == 200
    assert poll["response"].headers["etag"] != etag


def test_plain_check_ins_never_wait(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    etag = client.get(_url(device), headers=device.headers).headers["etag"]
    start = time.monotonic()
    r = client.get(_url(device), headers={**device.headers, "If-None-Match": etag})
    assert r.status_code == 304
    r = client.get(
        _url(device), params={"wait": 0}, headers={**device.headers, "If-None-Match": etag}
    )
    assert r.status_code == 304
    assert time.monotonic() - start < 5
    assert client.get(_url(device), params={"wait": 301}, headers=device.headers).status_code == 422


def test_without_a_broker_the_notice_channel_is_long_poll(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    r = client.get(f"/api/v1/devices/{device.id}/notices", headers=device.headers)
    assert r.status_code == 200
    assert r.json() == {"mqtt": None, "long_poll_max_s": 30}


@pytest.fixture
def broker_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = hand_ticked_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'edgeota.db'}",
        mqtt_url="mqtts://127.0.0.1:9",  # nothing listens: the publisher only retries
        mqtt_password="server-secret-for-the-broker",
    )
    yield from make_client(settings)


def test_with_a_broker_each_device_gets_its_own_topic_and_password(
    broker_client: TestClient,
) -> None:
    a, b = ApiDevice(broker_client, ["lab"]), ApiDevice(broker_client, ["lab"])
    channels = [
        broker_client.get(f"/api/v1/devices/{d.id}/notices", headers=d.headers).json()["mqtt"]
        for d in (a, b)
    ]
    assert channels[0]["url"] == "mqtts://127.0.0.1:9"
    assert channels[0]["topic"] == notice_topic(a.id) == f"edgeota/devices/{a.id}/notice"
    assert [c["username"] for c in channels] == [a.id, b.id]
    assert channels[0]["password"] != channels[1]["password"]
    key = app_context(broker_client).mqtt_device_key
    assert channels[1]["password"] == device_password(key, b.id)
    r = broker_client.get(f"/api/v1/devices/{b.id}/notices", headers=a.headers)
    assert r.status_code == 403


def _verifies(line: str, password: str) -> bool:
    """Check a mosquitto ``$7$`` line the way mosquitto does."""
    _, _, iterations, salt, digest = line.split(":", 1)[1].split("$")
    computed = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations)
    )
    return base64.b64encode(computed).decode() == digest


def test_broker_auth_files_cover_unrevoked_devices_and_the_server(
    broker_client: TestClient,
) -> None:
    a, b = ApiDevice(broker_client, ["lab"]), ApiDevice(broker_client, ["lab"])
    assert broker_client.post(f"/api/v1/devices/{b.id}/revoke").status_code == 200
    files = broker_client.get("/api/v1/mqtt/auth-files").json()
    lines = dict(line.split(":", 1) for line in files["password_file"].splitlines())
    assert set(lines) == {"edgeota-server", a.id}
    key = app_context(broker_client).mqtt_device_key
    assert _verifies(f"{a.id}:{lines[a.id]}", device_password(key, a.id))
    assert _verifies(f"x:{lines['edgeota-server']}", "server-secret-for-the-broker")
    assert not _verifies(f"{a.id}:{lines[a.id]}", device_password(key, b.id))
    assert "pattern read edgeota/devices/%u/#" in files["acl_file"]
    assert "user edgeota-server\ntopic write edgeota/devices/+/notice" in files["acl_file"]
    assert broker_client.get("/api/v1/mqtt/auth-files", headers=a.headers).status_code == 403
