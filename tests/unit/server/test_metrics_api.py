"""The server's Prometheus exposition, parsed the way Prometheus parses it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from apitools import ApiDevice, hand_ticked_settings, make_client, publish


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    yield from make_client(hand_ticked_settings(tmp_path, database_url))


def _samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _event(
    device: ApiDevice, seq: int, event: str, release: dict[str, object], time: str, **extra: object
) -> dict[str, object]:
    return {
        "seq": seq,
        "time": time,
        "event": event,
        "component": "denoiser",
        "release_id": release["id"],
        "version": release["version"],
        **extra,
    }


def test_metrics_need_an_admin_token(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
    assert client.get("/metrics", headers=device.headers).status_code == 403


def test_fleet_figures_come_from_the_database(client: TestClient) -> None:
    a, b, c = (ApiDevice(client, ["lab"]) for _ in range(3))
    v1, v2 = publish(client, "1.0.0", b"v1"), publish(client, "2.0.0", b"v2")
    for device, events in (
        (a, [("update_found", "idle"), ("committed", "idle")]),
        (b, [("update_found", "downloading")]),
    ):
        body = [
            _event(device, i + 1, name, v1, "2026-01-01T00:00:00Z", state=state)
            for i, (name, state) in enumerate(events)
        ]
        r = client.post(
            f"/api/v1/devices/{device.id}/events", json={"events": body}, headers=device.headers
        )
        assert r.status_code == 200, r.text
    failed = [
        _event(c, 1, "rolled_back", v2, "2026-01-01T00:00:00Z", state="idle", reason="probe"),
        _event(c, 2, "download_failed", v2, "2026-01-01T00:00:00Z", state="idle", reason="net"),
    ]
    client.post(f"/api/v1/devices/{c.id}/events", json={"events": failed}, headers=c.headers)
    client.post(f"/api/v1/devices/{c.id}/events", json={"events": failed}, headers=c.headers)
    assert client.post(f"/api/v1/devices/{b.id}/revoke").status_code == 200
    c.feedback(v2, 1)

    s = _samples(client)
    assert _value(s, "edgeota_devices", status="active") == 2
    assert _value(s, "edgeota_devices", status="revoked") == 1
    assert (
        _value(s, "edgeota_device_components", component="denoiser", state="idle", version="1.0.0")
        == 1
    )
    assert (
        _value(
            s, "edgeota_device_components", component="denoiser", state="downloading", version=""
        )
        == 0
    )  # revoked
    labels = {"component": "denoiser", "version": "2.0.0", "release_id": v2["id"]}
    assert (
        _value(s, "edgeota_update_failures_total", reason="rolled_back", **labels) == 1
    )  # resent once
    assert _value(s, "edgeota_update_failures_total", reason="download_failed", **labels) == 1
    assert _value(s, "edgeota_feedback_total", release_id=v2["id"], rating="1") == 1
    assert _value(s, "edgeota_fleet_metrics_up") == 1


def test_update_durations_are_timed_once_from_the_devices_own_clock(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    v1 = publish(client, "1.0.0", b"v1")
    url = f"/api/v1/devices/{device.id}/events"
    found = [_event(device, 1, "update_found", v1, "2026-01-01T00:00:00Z", state="downloading")]
    done = [_event(device, 2, "committed", v1, "2026-01-01T00:00:42Z", state="idle")]
    client.post(url, json={"events": found}, headers=device.headers)
    client.post(url, json={"events": done}, headers=device.headers)
    client.post(url, json={"events": done}, headers=device.headers)  # a resend counts nothing
    s = _samples(client)
    labels = {"component": "denoiser", "outcome": "committed"}
    assert _value(s, "edgeota_update_duration_seconds_count", **labels) == 1
    assert _value(s, "edgeota_update_duration_seconds_sum", **labels) == 42
    assert _value(s, "edgeota_update_duration_seconds_bucket", le="60.0", **labels) == 1
    assert _value(s, "edgeota_update_duration_seconds_bucket", le="30.0", **labels) == 0


def test_check_ins_are_timed_by_answer(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    url = f"/api/v1/devices/{device.id}/desired-state"
    etag = client.get(url, headers=device.headers).headers["etag"]
    for _ in range(3):
        assert client.get(url, headers={**device.headers, "If-None-Match": etag}).status_code == 304
    s = _samples(client)
    assert _value(s, "edgeota_checkin_duration_seconds_count", status="200", mode="poll") == 1
    assert _value(s, "edgeota_checkin_duration_seconds_count", status="304", mode="poll") == 3
    assert (
        _value(s, "edgeota_checkin_duration_seconds_bucket", status="304", mode="poll", le="+Inf")
        == 3
    )


def test_target_bytes_are_counted_for_full_files_and_deltas(client: TestClient) -> None:
    full = b"f" * 1000
    release = publish(client, "1.0.0", full)
    patch = b"p" * 100
    sha = hashlib.sha256(patch).hexdigest()
    assert client.put(f"/api/v1/artifacts/{sha}", content=patch).status_code == 200
    target = release["files"][0]["target_path"].rsplit("/", 1)
    full_url = f"/tuf/targets/{target[0]}/{release['files'][0]['sha256']}.{target[1]}"
    delta_url = f"/tuf/targets/denoiser/1.0.0/deltas/{sha}.model.onnx.from-0123456789abcdef.patch"
    assert client.get(full_url).content == full
    assert client.get(full_url, headers={"Range": "bytes=0-99"}).status_code == 206
    assert client.get(delta_url).content == patch
    assert client.get("/tuf/targets/denoiser/1.0.0/" + "0" * 64 + ".x").status_code == 404
    s = _samples(client)
    assert _value(s, "edgeota_target_downloads_total", kind="full") == 2
    assert _value(s, "edgeota_target_bytes_served_total", kind="full") == 1100
    assert _value(s, "edgeota_target_downloads_total", kind="delta") == 1
    assert _value(s, "edgeota_target_bytes_served_total", kind="delta") == 100


def test_database_admission_is_shown(client: TestClient) -> None:
    s = _samples(client)
    # The scrape itself holds a place (its admin token is looked up); nothing waits.
    assert _value(s, "edgeota_db_requests_admitted") == 1
    assert ("edgeota_db_requests_queued", frozenset()) in s
    assert _value(s, "edgeota_db_requests_queued") == 0
