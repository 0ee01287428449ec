"""Deltas on the server: queued with the release, built by the job processor (called directly
here, never by the background loop), signed as patch targets, listed in the desired state.

Runs on SQLite and PostgreSQL; the TUF repository is a recording signer.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgeota.delta import apply_patch
from edgeota.procs import wait_until
from edgeota.server import delta_builder
from edgeota.server.app import create_app
from edgeota.server.bootstrap import prepare
from edgeota.server.context import AppContext
from edgeota.server.settings import ServerSettings
from edgeota.targets import TargetCustom
from edgeota.timeutil import utcnow
from support import RecordingSigner

CONFIG = delta_builder.BuildConfig(claim_timeout_s=600)


@pytest.fixture
def signer() -> RecordingSigner:
    return RecordingSigner()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ServerSettings:
    return ServerSettings(
        data_dir=tmp_path / "server",
        database_url=database_url,
        poll_interval_s=5,
        delta_history=2,
        delta_interval_s=86400,  # the tests run the job processor by hand
    )


@pytest.fixture
def client(settings: ServerSettings, signer: RecordingSigner) -> Iterator[TestClient]:
    token = prepare(settings).first_admin_token
    with TestClient(create_app(settings, signer=signer)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def ctx_of(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.ctx  # type: ignore[attr-defined]
    return ctx


def process(client: TestClient, config: delta_builder.BuildConfig = CONFIG) -> int:
    ctx = ctx_of(client)
    return delta_builder.run_pending(ctx.sessions, ctx.artifacts, ctx.signer, config, utcnow)


BASE = random.Random(7).randbytes(96 * 1024)


def model(version: int) -> bytes:
    """A file that changes a little from one version to the next (a delta pays off)."""
    data = bytearray(BASE)
    for i in range(version):
        data[1000 + 20000 * i : 1000 + 20000 * i + 64] = bytes([version]) * 64
    return bytes(data)


def publish(client: TestClient, version: str, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    assert client.put(f"/api/v1/artifacts/{sha}", content=data).status_code == 200
    r = client.post(
        "/api/v1/releases",
        json={
            "component": "denoiser",
            "version": version,
            "hardware": ["x86-64"],
            "files": [
                {
                    "file": "model.onnx",
                    "role": "model",
                    "variant": "fp32",
                    "sha256": sha,
                    "length": len(data),
                },
            ],
        },
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def release(client: TestClient, release_id: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/releases/{release_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def enroll(client: TestClient) -> tuple[str, dict[str, str]]:
    token = client.post("/api/v1/enrollment-tokens", json={"groups": ["lab"]}).json()["token"]
    r = client.post(
        "/api/v1/enroll",
        json={"enrollment_token": token, "name": "cam", "hardware_class": "x86-64"},
        headers={"Authorization": ""},
    )
    assert r.status_code == 201, r.text
    return r.json()["device_id"], {"Authorization": f"Bearer {r.json()['credential']}"}


def test_published_release_gets_a_signed_delta_listed_in_the_desired_state(
    client: TestClient, signer: RecordingSigner
) -> None:
    device_id, auth = enroll(client)
    v1 = publish(client, "1.0.0", model(1))
    v2 = publish(client, "2.0.0", model(2))
    client.post("/api/v1/deployments", json={"release": v2["id"], "group": "lab"})
    url = f"/api/v1/devices/{device_id}/desired-state"
    before = client.get(url, headers=auth)
    assert before.json()["components"]["denoiser"]["deltas"] == []
    (queued,) = v2["deltas"]
    assert queued["status"] == "pending"
    assert queued["base_release_id"] == v1["id"]
    assert v1["deltas"] == []

    assert process(client) == 1

    v1_sha = v1["files"][0]["sha256"]
    path = f"denoiser/2.0.0/deltas/model.onnx.from-{v1_sha[:16]}.patch"
    (done,) = release(client, v2["id"])["deltas"]
    assert done["status"] == "done"
    assert done["target_path"] == path
    assert done["length"] < 0.9 * len(model(2))
    signed_path, length, sha, custom = signer.signed[-1]
    assert (signed_path, length, sha) == (path, done["length"], done["sha256"])
    signed = TargetCustom.from_custom(custom)
    assert signed == TargetCustom(
        component="denoiser",
        version="2.0.0",
        release_id=v2["id"],
        role="patch",
        file="model.onnx",
        variant="fp32",
        hardware=("x86-64",),
        needs={},
        delta_base=v1_sha,
    )
    # The stored patch turns v1 into v2, byte for byte.
    store = ctx_of(client).artifacts
    out = store.root / "v2.out"
    apply_patch(store.path_for(v1_sha), store.path_for(sha), out)
    assert out.read_bytes() == model(2)
    # The device's ETag changed, so its next conditional check-in sees the delta.
    after = client.get(url, headers={**auth, "If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    desired = after.json()["components"]["denoiser"]
    assert desired["deltas"] == [path]
    assert desired["targets"] == ["denoiser/2.0.0/model.onnx"]
    same = client.get(url, headers={**auth, "If-None-Match": after.headers["etag"]})
    assert same.status_code == 304


def test_base_no_longer_among_the_last_k_is_not_built(client: TestClient) -> None:
    """delta_history=2: the fourth release gets deltas from the third and second only."""
    releases = [publish(client, f"{n}.0.0", model(n)) for n in (1, 2, 3, 4)]
    process(client)
    v4 = release(client, releases[3]["id"])
    bases = {d["base_release_id"] for d in v4["deltas"]}
    assert bases == {releases[2]["id"], releases[1]["id"]}
    assert all(d["status"] == "done" for d in v4["deltas"])
    assert releases[0]["files"][0]["sha256"] not in {d["base_sha256"] for d in v4["deltas"]}


def test_two_processors_racing_claim_a_job_once(client: TestClient) -> None:
    publish(client, "1.0.0", model(1))
    publish(client, "2.0.0", model(2))
    ctx = ctx_of(client)
    now = utcnow()
    a, b = ctx.sessions(), ctx.sessions()
    try:
        # Both see the job as claimable before either claims it.
        (job_a,) = delta_builder.candidates(a, now, CONFIG)
        (job_b,) = delta_builder.candidates(b, now, CONFIG)
        assert job_a == job_b
        first = delta_builder.try_claim(a, job_a, now, CONFIG)
        a.commit()
        second = delta_builder.try_claim(b, job_b, now, CONFIG)
        b.commit()
    finally:
        a.close()
        b.close()
    assert first is not None
    assert second is None
    assert delta_builder.claim_next(ctx.sessions, now, CONFIG) is None  # still held

    # A claim older than the timeout is taken over; the slow first holder cannot finish it.
    later = now + timedelta(seconds=CONFIG.claim_timeout_s + 1)
    takeover = delta_builder.claim_next(ctx.sessions, later, CONFIG)
    assert takeover is not None and takeover.job_id == first.job_id
    outcome = delta_builder.build(ctx.artifacts, first, CONFIG)
    assert not delta_builder.finish(ctx.sessions, ctx.signer, first, outcome, later)
    assert delta_builder.finish(ctx.sessions, ctx.signer, takeover, outcome, later)
    assert [d["status"] for d in release(client, first.release_id)["deltas"]] == ["done"]


def test_job_whose_claims_keep_going_stale_is_failed(client: TestClient) -> None:
    publish(client, "1.0.0", model(1))
    v2 = publish(client, "2.0.0", model(2))
    ctx = ctx_of(client)
    now = utcnow()
    for attempt in range(CONFIG.max_attempts):
        at = now + timedelta(seconds=attempt * (CONFIG.claim_timeout_s + 1))
        assert delta_builder.claim_next(ctx.sessions, at, CONFIG) is not None  # then "dies"
    at = now + timedelta(seconds=CONFIG.max_attempts * (CONFIG.claim_timeout_s + 1))
    assert delta_builder.claim_next(ctx.sessions, at, CONFIG) is None
    (job,) = release(client, v2["id"])["deltas"]
    assert job["status"] == "failed"
    assert "attempts" in job["error"]


def test_failed_job_is_recorded_with_its_error_and_does_not_block(client: TestClient) -> None:
    v1 = publish(client, "1.0.0", model(1))
    v2 = publish(client, "2.0.0", model(2))
    v3 = publish(client, "3.0.0", model(3))
    # v1's file vanished from the store: every delta from it fails, the others are built.
    ctx_of(client).artifacts.path_for(v1["files"][0]["sha256"]).unlink()
    assert process(client) == 3
    (from_v1,) = release(client, v2["id"])["deltas"]
    assert from_v1["status"] == "failed"
    assert "not in the artifact store" in from_v1["error"]
    by_base = {d["base_release_id"]: d for d in release(client, v3["id"])["deltas"]}
    assert by_base[v1["id"]]["status"] == "failed"
    assert by_base[v2["id"]]["status"] == "done"
    assert process(client) == 0  # failed jobs are not retried in a loop


def test_delta_not_smaller_than_the_file_is_skipped_and_not_listed(client: TestClient) -> None:
    device_id, auth = enroll(client)
    publish(client, "1.0.0", model(1))
    v2 = publish(client, "2.0.0", random.Random(8).randbytes(96 * 1024))  # nothing in common
    client.post("/api/v1/deployments", json={"release": v2["id"], "group": "lab"})
    assert process(client) == 1
    (job,) = release(client, v2["id"])["deltas"]
    assert job["status"] == "skipped"
    assert job["target_path"] is None
    desired = client.get(f"/api/v1/devices/{device_id}/desired-state", headers=auth).json()
    assert desired["components"]["denoiser"]["deltas"] == []


def test_stored_file_that_no_longer_matches_its_hash_gets_no_delta(
    client: TestClient, signer: RecordingSigner
) -> None:
    publish(client, "1.0.0", model(1))
    v2 = publish(client, "2.0.0", model(2))
    stored = ctx_of(client).artifacts.path_for(v2["files"][0]["sha256"])
    data = bytearray(stored.read_bytes())
    data[10] ^= 0x01
    stored.write_bytes(bytes(data))
    signed_before = len(signer.signed)
    assert process(client) == 1
    (job,) = release(client, v2["id"])["deltas"]
    assert job["status"] == "failed"
    assert "corrupted" in job["error"]
    assert len(signer.signed) == signed_before  # nothing signed for bytes that are wrong


def test_a_built_delta_wakes_a_device_waiting_on_a_long_poll(client: TestClient) -> None:
    """A new delta changes the desired state: a device listening is told at once."""
    device_id, auth = enroll(client)
    publish(client, "1.0.0", model(1))
    v2 = publish(client, "2.0.0", model(2))
    client.post("/api/v1/deployments", json={"release": v2["id"], "group": "lab"})
    url = f"/api/v1/devices/{device_id}/desired-state"
    etag = client.get(url, headers=auth).headers["etag"]
    answer: dict[str, Any] = {}

    def long_poll() -> None:
        answer["response"] = client.get(
            url, params={"wait": 25}, headers={**auth, "If-None-Match": etag}
        )

    waiter = threading.Thread(target=long_poll)
    waiter.start()
    waiters = ctx_of(client).waiters
    wait_until(lambda: waiters.waiting == 1, 10, interval_s=0.05, what="the check-in waits")
    assert process(client) == 1
    waiter.join(10)
    assert not waiter.is_alive(), "the long-poll was not woken by the new delta"
    response = answer["response"]
    assert response.status_code == 200
    assert response.json()["components"]["denoiser"]["deltas"]
