"""Retiring a release: out of the signed metadata, its unshared files deleted, refused while
anything still needs it. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_variants_api import Device, upload

from apitools import make_client, tick
from edgeota.procs import wait_until
from edgeota.server.settings import ServerSettings
from edgeota.timeutil import utcnow
from support import RecordingSigner


@pytest.fixture
def signer() -> RecordingSigner:
    return RecordingSigner()


@pytest.fixture
def client(tmp_path: Path, database_url: str, signer: RecordingSigner) -> Iterator[TestClient]:
    yield from make_client(
        ServerSettings(data_dir=tmp_path / "server", database_url=database_url), signer
    )


SHARED = b"labels shared by every version"


def publish(client: TestClient, version: str, component: str = "denoiser") -> dict[str, Any]:
    model = f"{component} model {version}" if component != "denoiser" else f"model {version}"
    files = [
        {"file": "model.onnx", "role": "model", **upload(client, model.encode())},
        {"file": "labels.txt", "role": "file", **upload(client, SHARED)},
    ]
    r = client.post(
        "/api/v1/releases", json={"component": component, "version": version, "files": files}
    )
    assert r.status_code == 201, r.text
    release: dict[str, Any] = r.json()
    return release


def stored(client: TestClient, data: bytes) -> bool:
    return client.get(f"/api/v1/artifacts/{hashlib.sha256(data).hexdigest()}").status_code == 200


def test_retire_unsigns_the_release_and_deletes_only_its_own_files(
    client: TestClient, signer: RecordingSigner
) -> None:
    device = Device(client, "cam")
    v1, v2, v3 = publish(client, "1.0.0"), publish(client, "2.0.0"), publish(client, "3.0.0")
    assert client.post("/api/v1/deployments", json={"release": v3["id"], "group": "lab"})
    # 2.0.0 is what a fleet rollback of 3.0.0 would publish again: it is kept.
    kept = client.post(f"/api/v1/releases/{v2['id']}/retire")
    assert kept.status_code == 409
    assert "fleet rollback of 3.0.0 goes back to" in kept.json()["detail"]

    r = client.post("/api/v1/releases/denoiser@1.0.0/retire")
    assert r.status_code == 200, r.text
    assert r.json()["retired_at"] is not None
    assert sorted(signer.removed) == sorted(f["target_path"] for f in v1["files"])
    assert not stored(client, b"model 1.0.0")
    assert stored(client, SHARED) and stored(client, b"model 2.0.0")  # v2 still lists them
    assert device.checkin()[1]["components"]["denoiser"]["version"] == "3.0.0"
    # Retiring again changes nothing; deploying, rolling out or re-publishing it is refused.
    assert client.post(f"/api/v1/releases/{v1['id']}/retire").status_code == 200
    assert len(signer.removed) == 2
    deploy = client.post("/api/v1/deployments", json={"release": v1["id"], "group": "lab"})
    assert deploy.status_code == 409 and "is retired" in deploy.json()["detail"]
    rollout = client.post("/api/v1/rollouts", json={"release": v1["id"], "group": "lab"})
    assert rollout.status_code == 409 and "is retired" in rollout.json()["detail"]
    again = client.post(
        "/api/v1/releases",
        json={
            "component": "denoiser",
            "version": "1.0.0",
            "files": [
                {"file": "model.onnx", "role": "model", **upload(client, b"model 1.0.0")},
                {"file": "labels.txt", "role": "file", **upload(client, SHARED)},
            ],
        },
    )
    assert again.status_code == 409 and "retired" in again.json()["detail"]
    audit = client.get("/api/v1/audit").json()
    assert any(a["action"] == "release.retire" and a["target_id"] == v1["id"] for a in audit)


def test_a_release_devices_still_desire_is_not_retired(
    client: TestClient, signer: RecordingSigner
) -> None:
    Device(client, "cam")
    v1 = publish(client, "1.0.0")
    assert client.post("/api/v1/deployments", json={"release": v1["id"], "group": "lab"})
    r = client.post(f"/api/v1/releases/{v1['id']}/retire")
    assert r.status_code == 409
    assert "1 device(s) still desire denoiser 1.0.0" in r.json()["detail"]
    assert signer.removed == [] and stored(client, b"model 1.0.0")
    assert client.get(f"/api/v1/releases/{v1['id']}").json()["retired_at"] is None


def test_a_rollback_goes_back_past_retired_releases(client: TestClient) -> None:
    """1.0.0 is desired; 2.0.0 was published and retired; 3.0.0 rolls out and back: the
    rollback republishes 1.0.0's content (2.0.0's files are gone)."""
    Device(client, "cam")
    v1 = publish(client, "1.0.0")
    assert client.post("/api/v1/deployments", json={"release": v1["id"], "group": "lab"})
    v2 = publish(client, "2.0.0")
    assert [d["status"] for d in v2["deltas"]] == ["pending"]  # model.onnx from 1.0.0
    retired = client.post(f"/api/v1/releases/{v2['id']}/retire")
    assert retired.status_code == 200
    # The delta still queued for it is not built (and signed) any more.
    assert [d["status"] for d in retired.json()["deltas"]] == ["failed"]
    v3 = publish(client, "3.0.0")
    refused = client.post(f"/api/v1/releases/{v1['id']}/retire")
    assert refused.status_code == 409  # desired, and 3.0.0's rollback source
    rollout = client.post("/api/v1/rollouts", json={"release": v3["id"], "group": "lab"})
    assert rollout.status_code == 201, rollout.text
    tick(client, utcnow() + timedelta(seconds=1))  # the rollout starts
    back = client.post(f"/api/v1/rollouts/{rollout.json()['id']}/rollback")
    assert back.status_code == 200, back.text
    again = client.get(f"/api/v1/rollouts/{back.json()['rolled_back_by']}").json()
    republished = client.get(f"/api/v1/releases/{again['release_id']}").json()
    assert republished["version"] == "3.0.1"
    assert sorted(f["sha256"] for f in republished["files"]) == sorted(
        f["sha256"] for f in v1["files"]
    )


def test_prune_retires_what_nothing_needs_beyond_the_newest_in_one_targets_version(
    client: TestClient, signer: RecordingSigner
) -> None:
    Device(client, "cam")
    v = {n: publish(client, f"{n}.0.0") for n in range(1, 7)}
    other = [publish(client, f"{n}.0.0", component="upscaler") for n in (1, 2)]
    # Devices desire 3.0.0: it stays, and so does 2.0.0, what its fleet rollback goes back to.
    assert client.post("/api/v1/deployments", json={"release": v[3]["id"], "group": "lab"})

    dry = client.post("/api/v1/releases/prune", json={"keep": 2, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert [r["version"] for r in dry.json()["retired"]] == ["4.0.0", "1.0.0"]
    assert signer.removed == [] and stored(client, b"model 1.0.0")  # a dry run changes nothing

    r = client.post("/api/v1/releases/prune", json={"keep": 2, "component": "denoiser"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dry_run"] is False
    assert [(x["component"], x["version"]) for x in body["retired"]] == [
        ("denoiser", "4.0.0"),
        ("denoiser", "1.0.0"),
    ]
    kept = {x["version"]: x["reason"] for x in body["kept"]}
    assert "1 device(s) still desire denoiser 3.0.0" in kept["3.0.0"]
    assert "fleet rollback of 3.0.0 goes back to" in kept["2.0.0"]
    assert signer.remove_calls == 1  # one new targets version for both
    assert sorted(signer.removed) == sorted(f["target_path"] for n in (1, 4) for f in v[n]["files"])
    assert body["files_deleted"] == 2  # their models; the shared labels stay
    assert not stored(client, b"model 1.0.0") and not stored(client, b"model 4.0.0")
    assert stored(client, SHARED) and stored(client, b"model 5.0.0")
    versions = {
        r["version"]: r["retired_at"] is not None
        for r in client.get("/api/v1/releases", params={"component": "denoiser"}).json()
    }
    assert versions == {
        "6.0.0": False,
        "5.0.0": False,
        "4.0.0": True,
        "3.0.0": False,
        "2.0.0": False,
        "1.0.0": True,
    }
    for o in other:
        assert client.get(f"/api/v1/releases/{o['id']}").json()["retired_at"] is None
    audit = client.get("/api/v1/audit", params={"action": "release.retire"}).json()
    assert sorted(e["details"]["version"] for e in audit) == ["1.0.0", "4.0.0"]
    # Again: nothing more to do.
    again = client.post("/api/v1/releases/prune", json={"keep": 2, "component": "denoiser"})
    assert again.json()["retired"] == [] and signer.remove_calls == 1


def test_prune_refuses_to_keep_nothing(client: TestClient) -> None:
    r = client.post("/api/v1/releases/prune", json={"keep": 0})
    assert r.status_code == 422 and "keep" in r.text
    r = client.post("/api/v1/releases/prune", json={"keep": 2, "component": "Bad Name"})
    assert r.status_code == 422 and "component" in r.text


def test_a_server_with_a_release_limit_prunes_on_its_own(
    tmp_path: Path, database_url: str, signer: RecordingSigner
) -> None:
    settings = ServerSettings(
        data_dir=tmp_path / "server",
        database_url=database_url,
        release_keep=1,
        release_prune_interval_s=0.05,
    )
    for client in make_client(settings, signer):
        v1, _v2, v3 = (publish(client, f"{n}.0.0") for n in (1, 2, 3))

        def state() -> dict[str, bool]:
            listed = client.get("/api/v1/releases").json()
            return {r["version"]: r["retired_at"] is not None for r in listed}

        wait_until(lambda: state()["1.0.0"], 30, 0.05, "the server to retire 1.0.0")
        # 2.0.0 is what a fleet rollback of 3.0.0 goes back to; 3.0.0 is the newest.
        assert state() == {"3.0.0": False, "2.0.0": False, "1.0.0": True}
        assert sorted(signer.removed) == sorted(f["target_path"] for f in v1["files"])
        audit = client.get("/api/v1/audit", params={"action": "release.retire"}).json()
        assert [(e["actor"], e["target_id"]) for e in audit] == [("retention", v1["id"])]
        assert v3["retired_at"] is None


def test_new_deltas_are_not_built_from_retired_releases(client: TestClient) -> None:
    """Their files may be gone from the store: the delta history counts live releases."""
    v1, v2, v3 = publish(client, "1.0.0"), publish(client, "2.0.0"), publish(client, "3.0.0")
    assert client.post(f"/api/v1/releases/{v1['id']}/retire").status_code == 200
    v4 = publish(client, "4.0.0")  # the default history is 3 releases
    bases = {d["base_release_id"] for d in v4["deltas"] if d["file"] == "model.onnx"}
    assert bases == {v2["id"], v3["id"]}
