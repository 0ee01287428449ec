"""Devices and releases through the API, for tests that run the app in-process (TestClient)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from edgeota.server import rollout_loop
from edgeota.server.app import create_app
from edgeota.server.bootstrap import prepare
from edgeota.server.context import AppContext
from edgeota.server.db import session_scope
from edgeota.server.settings import ServerSettings
from support import RecordingSigner


def make_client(
    settings: ServerSettings, signer: RecordingSigner | None = None
) -> Iterator[TestClient]:
    """An app on ``settings`` with an admin token in its default headers."""
    token = prepare(settings).first_admin_token
    with TestClient(create_app(settings, signer=signer or RecordingSigner())) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def hand_ticked_settings(tmp_path: Path, database_url: str, **extra: Any) -> ServerSettings:
    """Settings whose background loops never run within a test: the test drives them."""
    return ServerSettings(
        data_dir=tmp_path / "server",
        database_url=database_url,
        poll_interval_s=5,
        rollout_interval_s=86400,
        **extra,
    )


class ApiDevice:
    """One enrolled device, seen from its side of the API."""

    def __init__(self, client: TestClient, groups: list[str], name: str = "cam") -> None:
        self.client = client
        token = client.post("/api/v1/enrollment-tokens", json={"groups": groups}).json()
        r = client.post(
            "/api/v1/enroll",
            json={"enrollment_token": token["token"], "name": name, "hardware_class": "x86-64"},
            headers={"Authorization": ""},
        )
        assert r.status_code == 201, r.text
        self.id: str = r.json()["device_id"]
        self.credential: str = r.json()["credential"]
        self.headers = {"Authorization": f"Bearer {self.credential}"}
        self.seq = itertools.count(1)

    def desired(self) -> dict[str, Any]:
        r = self.client.get(f"/api/v1/devices/{self.id}/desired-state", headers=self.headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def report(
        self,
        event: str,
        release: dict[str, Any],
        state: str = "idle",
        reason: str | None = None,
        time: str = "2026-01-01T00:00:00Z",
    ) -> None:
        body = {
            "events": [
                {
                    "seq": next(self.seq),
                    "time": time,
                    "event": event,
                    "component": release["component"],
                    "state": state,
                    "release_id": release["id"],
                    "version": release["version"],
                    "reason": reason,
                }
            ]
        }
        r = self.client.post(f"/api/v1/devices/{self.id}/events", json=body, headers=self.headers)
        assert r.status_code == 200, r.text

    def feedback(self, release: dict[str, Any], rating: int, comment: str = "") -> Any:
        body = {
            "client_id": f"fb-{next(self.seq):06d}",
            "release_id": release["id"],
            "rating": rating,
            "comment": comment,
        }
        return self.client.post(
            f"/api/v1/devices/{self.id}/feedback", json=body, headers=self.headers
        )


def publish(
    client: TestClient, version: str, data: bytes, component: str = "denoiser"
) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    assert client.put(f"/api/v1/artifacts/{sha}", content=data).status_code == 200
    r = client.post(
        "/api/v1/releases",
        json={
            "component": component,
            "version": version,
            "files": [{"file": "model.onnx", "role": "model", "sha256": sha, "length": len(data)}],
        },
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def app_context(client: TestClient) -> AppContext:
    ctx: AppContext = client.app.state.ctx  # type: ignore[attr-defined]
    return ctx


def tick(client: TestClient, now: datetime) -> list[rollout_loop.Evaluation]:
    with session_scope(app_context(client).sessions) as session:
        return rollout_loop.tick(session, now)


def get_json(client: TestClient, url: str, **params: Any) -> Any:
    r = client.get(url, params=params)
    assert r.status_code == 200, r.text
    return r.json()
