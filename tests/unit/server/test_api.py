"""The API as a client sees it: auth, enrollment, check-in, events, releases, deployments.

The TUF repository is replaced by a recording signer here; the integration tests use the
real one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgeota.server.app import create_app
from edgeota.server.bootstrap import prepare
from edgeota.server.settings import ServerSettings
from support import RecordingSigner


@pytest.fixture
def signer() -> RecordingSigner:
    return RecordingSigner()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ServerSettings:
    return ServerSettings(
        data_dir=tmp_path / "server", database_url=database_url, poll_interval_s=5
    )


@pytest.fixture
def admin_token(settings: ServerSettings) -> str:
    token = prepare(settings).first_admin_token
    assert token is not None
    return token


@pytest.fixture
def client(
    settings: ServerSettings, admin_token: str, signer: RecordingSigner
) -> Iterator[TestClient]:
    with TestClient(create_app(settings, signer=signer)) as c:
        c.headers["Authorization"] = f"Bearer {admin_token}"
        yield c


def _upload(client: TestClient, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    r = client.put(f"/api/v1/artifacts/{sha}", content=data)
    assert r.status_code == 200, r.text
    return {"sha256": sha, "length": len(data)}


def _publish(client: TestClient, version: str, data: bytes, component: str = "denoiser") -> Any:
    art = _upload(client, data)
    return client.post(
        "/api/v1/releases",
        json={
            "component": component,
            "version": version,
            "files": [{"file": "model.onnx", "role": "model", **art}],
        },
    )


def _enroll(client: TestClient, groups: list[str] | None = None) -> tuple[str, str]:
    token = client.post("/api/v1/enrollment-tokens", json={"groups": groups or ["lab"]}).json()
    r = client.post(
        "/api/v1/enroll",
        json={"enrollment_token": token["token"], "name": "cam", "hardware_class": "x86-64"},
        headers={"Authorization": ""},
    )
    assert r.status_code == 201, r.text
    return r.json()["device_id"], r.json()["credential"]


def _as(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"


def test_admin_api_without_token_is_401(client: TestClient) -> None:
    r = client.get("/api/v1/releases", headers={"Authorization": ""})
    assert r.status_code == 401
    assert "Authorization: Bearer" in r.json()["detail"]
    assert client.get("/api/v1/releases", headers=_as("eoa_nope")).status_code == 401


def test_enrollment_token_is_one_time(client: TestClient) -> None:
    token = client.post("/api/v1/enrollment-tokens", json={"groups": []}).json()["token"]
    body = {"enrollment_token": token, "name": "a", "hardware_class": "x86-64"}
    assert client.post("/api/v1/enroll", json=body).status_code == 201
    second = client.post("/api/v1/enroll", json=body)
    assert second.status_code == 401
    assert "already used" in second.json()["detail"]


def test_wrong_enrollment_token_is_401(client: TestClient) -> None:
    body = {"enrollment_token": "eoe_guess", "name": "a", "hardware_class": "x86-64"}
    assert client.post("/api/v1/enroll", json=body).status_code == 401


def test_device_cannot_read_another_devices_records(client: TestClient) -> None:
    a_id, a_cred = _enroll(client)
    b_id, _ = _enroll(client)
    for path in (f"/api/v1/devices/{b_id}/desired-state", f"/api/v1/devices/{b_id}"):
        r = client.get(path, headers=_as(a_cred))
        assert r.status_code == 403, path
        assert "own records" in r.json()["detail"]
    r = client.post(f"/api/v1/devices/{b_id}/events", json={"events": []}, headers=_as(a_cred))
    assert r.status_code == 403
    assert client.get(f"/api/v1/devices/{a_id}", headers=_as(a_cred)).status_code == 200


def test_device_cannot_call_admin_endpoints(client: TestClient) -> None:
    _, cred = _enroll(client)
    assert client.get("/api/v1/devices", headers=_as(cred)).status_code == 403


def test_revoked_device_is_refused(client: TestClient) -> None:
    device_id, cred = _enroll(client)
    assert client.post(f"/api/v1/devices/{device_id}/revoke").status_code == 200
    r = client.get(f"/api/v1/devices/{device_id}/desired-state", headers=_as(cred))
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]


def test_forged_credential_is_refused(client: TestClient) -> None:
    device_id, _ = _enroll(client)
    forged = f"{device_id}.not-the-secret"
    r = client.get(f"/api/v1/devices/{device_id}/desired-state", headers=_as(forged))
    assert r.status_code == 401


def test_malformed_release_is_422_and_names_the_field(client: TestClient) -> None:
    r = client.post(
        "/api/v1/releases",
        json={"component": "Bad Name", "version": "1.0", "files": []},
    )
    assert r.status_code == 422
    fields = {tuple(e["loc"]) for e in r.json()["detail"]}
    assert ("body", "component") in fields
    assert ("body", "version") in fields
    assert ("body", "files") in fields


def test_release_file_with_traversal_is_422(client: TestClient) -> None:
    art = _upload(client, b"x")
    r = client.post(
        "/api/v1/releases",
        json={
            "component": "denoiser",
            "version": "1.0.0",
            "files": [{"file": "../../etc/passwd", "role": "file", **art}],
        },
    )
    assert r.status_code == 422
    assert "'..'" in str(r.json()["detail"])


def test_release_needs_uploaded_artifacts(client: TestClient) -> None:
    r = client.post(
        "/api/v1/releases",
        json={
            "component": "denoiser",
            "version": "1.0.0",
            "files": [{"file": "m.onnx", "role": "model", "sha256": "0" * 64, "length": 3}],
        },
    )
    assert r.status_code == 422
    assert "was not uploaded" in r.json()["detail"]


def test_upload_with_wrong_hash_is_refused_and_not_stored(
    client: TestClient, settings: ServerSettings
) -> None:
    wrong = hashlib.sha256(b"other").hexdigest()
    r = client.put(f"/api/v1/artifacts/{wrong}", content=b"payload")
    assert r.status_code == 422
    assert not list((settings.artifacts_dir / "sha256").rglob(wrong))
    assert not list((settings.artifacts_dir / "incoming").iterdir())


def test_same_version_other_content_is_refused(client: TestClient, signer: RecordingSigner) -> None:
    first = _publish(client, "1.0.0", b"model one")
    assert first.status_code == 201
    again = _publish(client, "1.0.0", b"model one")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = _publish(client, "1.0.0", b"model two")
    assert other.status_code == 409
    assert "higher version" in other.json()["detail"]
    assert len(signer.signed) == 1


def test_published_targets_carry_the_signed_custom_schema(
    client: TestClient, signer: RecordingSigner
) -> None:
    release = _publish(client, "1.2.0", b"weights").json()
    path, length, sha, custom = signer.signed[0]
    assert path == "denoiser/1.2.0/model.onnx"
    assert length == 7
    assert sha == hashlib.sha256(b"weights").hexdigest()
    body = custom["edgeota"]
    assert isinstance(body, dict)
    assert body["component"] == "denoiser"
    assert body["version"] == "1.2.0"
    assert body["release_id"] == release["id"]
    assert body["role"] == "model"


def test_checkin_is_conditional_and_deploy_changes_it(client: TestClient) -> None:
    device_id, cred = _enroll(client, ["lab"])
    url = f"/api/v1/devices/{device_id}/desired-state"
    first = client.get(url, headers=_as(cred))
    assert first.status_code == 200
    assert first.json()["components"] == {}
    etag = first.headers["etag"]
    unchanged = client.get(url, headers={**_as(cred), "If-None-Match": etag})
    assert unchanged.status_code == 304

    release = _publish(client, "1.0.0", b"m1").json()
    dep = client.post("/api/v1/deployments", json={"release": "denoiser@1.0.0", "group": "lab"})
    assert dep.status_code == 201
    assert dep.json()["devices"] == 1
    changed = client.get(url, headers={**_as(cred), "If-None-Match": etag})
    assert changed.status_code == 200
    desired = changed.json()["components"]["denoiser"]
    assert desired == {
        "release_id": release["id"],
        "version": "1.0.0",
        "targets": ["denoiser/1.0.0/model.onnx"],
        "size_bytes": 2,
        "deltas": [],
        "switch_policy": "now",  # a plain deployment switches at once
        # One model file without requirements: no variant choice.
        "variant": None,
        "status": None,
        "reason": None,
    }


def test_device_enrolled_after_deploy_gets_the_groups_release(client: TestClient) -> None:
    _publish(client, "1.0.0", b"m1")
    client.post("/api/v1/deployments", json={"release": "denoiser@1.0.0", "group": "lab"})
    device_id, cred = _enroll(client, ["lab"])
    r = client.get(f"/api/v1/devices/{device_id}/desired-state", headers=_as(cred))
    assert r.json()["components"]["denoiser"]["version"] == "1.0.0"


def test_deploy_unknown_release_is_404(client: TestClient) -> None:
    r = client.post("/api/v1/deployments", json={"release": "denoiser@9.9.9", "group": "lab"})
    assert r.status_code == 404
    assert "edgeota release list" in r.json()["detail"]


def test_events_are_idempotent_and_update_the_device(client: TestClient) -> None:
    device_id, cred = _enroll(client)
    event = {
        "seq": 1,
        "time": "2026-01-01T00:00:00Z",
        "event": "committed",
        "component": "denoiser",
        "state": "idle",
        "release_id": "rel-x",
        "version": "1.0.0",
    }
    url = f"/api/v1/devices/{device_id}/events"
    for _ in range(2):
        r = client.post(url, json={"events": [event]}, headers=_as(cred))
        assert r.status_code == 200
        assert r.json() == {"accepted_through": 1}
    events = client.get(url).json()
    assert len(events) == 1
    device = client.get(f"/api/v1/devices/{device_id}").json()
    assert device["components"][0]["version"] == "1.0.0"
    assert device["components"][0]["last_event"] == "committed"


def test_malformed_event_is_422(client: TestClient) -> None:
    device_id, cred = _enroll(client)
    r = client.post(
        f"/api/v1/devices/{device_id}/events",
        json={"events": [{"seq": -1, "time": "yesterday", "event": ""}]},
        headers=_as(cred),
    )
    assert r.status_code == 422
    fields = {e["loc"][-1] for e in r.json()["detail"]}
    assert {"seq", "time", "event"} <= fields


def test_inventory_is_recorded(client: TestClient) -> None:
    device_id, cred = _enroll(client)
    inventory = {
        "hardware_class": "x86-64",
        "arch": "x86_64",
        "ram_total_mb": 4096,
        "model_ram_budget_mb": 1024,
        "disk_free_mb": 9000,
        "components": {"denoiser": {"version": "1.0.0", "release_id": "rel-a", "slot": "a"}},
    }
    r = client.put(f"/api/v1/devices/{device_id}/inventory", json=inventory, headers=_as(cred))
    assert r.status_code == 204
    device = client.get(f"/api/v1/devices/{device_id}").json()
    assert device["inventory"]["model_ram_budget_mb"] == 1024
    assert device["components"][0]["version"] == "1.0.0"


def test_tuf_metadata_names_are_validated(client: TestClient) -> None:
    assert client.get("/tuf/metadata/..%2Fedgeota.db").status_code == 404
    assert client.get("/tuf/metadata/secrets.json").status_code == 404


def test_targets_are_served_with_ranges(client: TestClient) -> None:
    data = bytes(range(256)) * 4
    sha = _upload(client, data)["sha256"]
    url = f"/tuf/targets/denoiser/1.0.0/{sha}.model.onnx"
    full = client.get(url)
    assert full.content == data
    assert full.headers["etag"] == f'"{sha}"'
    part = client.get(url, headers={"Range": "bytes=1000-", "If-Range": f'"{sha}"'})
    assert part.status_code == 206
    assert part.content == data[1000:]
    stale = client.get(url, headers={"Range": "bytes=1000-", "If-Range": '"other"'})
    assert stale.status_code == 200
    assert stale.content == data
