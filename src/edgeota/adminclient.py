"""The operator's side of the API, for the CLI, the demo and tests."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from edgeota.errors import HTTPStatusError, TransportError
from edgeota.releasefolder import LocalFile, LocalRelease


class AdminClient:
    def __init__(
        self, server_url: str, token: str, ca_file: Path | None = None, timeout_s: float = 60.0
    ) -> None:
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        )
        self.server_url = server_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server_url,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as e:
            raise TransportError(f"{method} {self.server_url}{url} failed: {e}") from e
        if response.status_code >= 400:
            try:
                detail = _detail_text(response.json().get("detail", response.text))
            except (ValueError, AttributeError):
                detail = response.text
            raise HTTPStatusError(
                f"{method} {url}: {response.status_code} {detail}", response.status_code
            )
        return None if response.status_code == 204 else response.json()

    def upload_artifact(self, path: Path, sha256: str) -> None:
        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        self._call("PUT", f"/api/v1/artifacts/{sha256}", content=chunks())

    def has_artifact(self, sha256: str, length: int) -> bool:
        """Whether the server stores these bytes already (so they need no upload)."""
        url = f"/api/v1/artifacts/{sha256}"
        try:
            response = self._http.get(url)
        except httpx.HTTPError as e:
            raise TransportError(f"GET {self.server_url}{url} failed: {e}") from e
        if response.status_code != 200:
            return False  # 404, or anything unclear: upload it
        stored = response.json().get("length")
        return isinstance(stored, int) and stored == length

    def publish(
        self,
        release: LocalRelease,
        component: str,
        version: str,
        *,
        on_file: Callable[[LocalFile, bool], None] | None = None,
    ) -> dict[str, Any]:
        """Upload the files the server lacks, then record the release.

        ``on_file(file, uploaded)`` is told, per file, whether its bytes were sent.
        """
        sent: set[str] = set()
        for f in release.files:
            upload = f.sha256 not in sent and not self.has_artifact(f.sha256, f.length)
            if upload:
                self.upload_artifact(f.source, f.sha256)
                sent.add(f.sha256)
            if on_file is not None:
                on_file(f, upload)
        body = {
            "component": component,
            "version": version,
            "files": [f.to_api() for f in release.files],
            "hardware": list(release.hardware),
            "needs": release.needs,
        }
        result: dict[str, Any] = self._call("POST", "/api/v1/releases", json=body)
        return result

    def releases(self, component: str | None = None) -> list[dict[str, Any]]:
        params = {"component": component} if component else None
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/releases", params=params)
        return result

    def release(self, ref: str) -> dict[str, Any]:
        """One release (by ID or ``component@version``), with its deltas and their status."""
        result: dict[str, Any] = self._call("GET", f"/api/v1/releases/{ref}")
        return result

    def retire(self, ref: str) -> dict[str, Any]:
        """Take a release out of the signed metadata (see services.retire)."""
        result: dict[str, Any] = self._call("POST", f"/api/v1/releases/{ref}/retire")
        return result

    def prune(
        self, keep: int, component: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Retire releases older than the newest ``keep`` that nothing needs (services.retire)."""
        body = {"keep": keep, "component": component, "dry_run": dry_run}
        result: dict[str, Any] = self._call("POST", "/api/v1/releases/prune", json=body)
        return result

    def deploy(self, release: str, group: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/api/v1/deployments", json={"release": release, "group": group}
        )
        return result

    def enrollment_token(self, groups: list[str], expires_in_s: int = 86400) -> str:
        result = self._call(
            "POST",
            "/api/v1/enrollment-tokens",
            json={"groups": groups, "expires_in_s": expires_in_s},
        )
        return str(result["token"])

    def devices(self, group: str | None = None) -> list[dict[str, Any]]:
        params = {"group": group} if group else None
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/devices", params=params)
        return result

    def device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/devices/{device_id}")
        return result

    def events(self, device_id: str, limit: int = 100) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "GET", f"/api/v1/devices/{device_id}/events", params={"limit": limit}
        )
        return result

    def set_windows(
        self,
        device_id: str,
        windows: list[dict[str, Any]],
        time_zone: str | None = None,
        max_deferrals: int = 0,
    ) -> dict[str, Any]:
        """Set a device's maintenance windows ({cron, duration_s, time_zone}) and deferrals."""
        body = {"windows": windows, "time_zone": time_zone, "max_deferrals": max_deferrals}
        url = f"/api/v1/devices/{device_id}/windows"
        result: dict[str, Any] = self._call("PUT", url, json=body)
        return result

    def revoke(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/api/v1/devices/{device_id}/revoke")
        return result

    def create_rollout(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/api/v1/rollouts", json=body)
        return result

    def rollouts(
        self, status: str | None = None, component: str | None = None
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("status", status), ("component", component)) if v}
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/rollouts", params=params)
        return result

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/rollouts/{rollout_id}")
        return result

    def rollout_command(self, rollout_id: int, command: str) -> dict[str, Any]:
        """pause, resume, abort or rollback."""
        result: dict[str, Any] = self._call("POST", f"/api/v1/rollouts/{rollout_id}/{command}")
        return result

    # -- history, feedback, notices ------------------------------------------------------
    def search_events(self, **params: Any) -> list[dict[str, Any]]:
        """Device events across the fleet: device, release, component, event, since, q."""
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/events", params=_given(params))
        return result

    def audit(self, **params: Any) -> list[dict[str, Any]]:
        """The audit trail: actor, action, target_type, target, since, q."""
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/audit", params=_given(params))
        return result

    def logs(self, **params: Any) -> list[dict[str, Any]]:
        """Uploaded device logs (without their text): device, release, q."""
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/logs", params=_given(params))
        return result

    def log_text(self, log_id: int) -> str:
        try:
            response = self._http.get(f"/api/v1/logs/{log_id}")
        except httpx.HTTPError as e:
            raise TransportError(f"GET {self.server_url}/api/v1/logs/{log_id} failed: {e}") from e
        if response.status_code >= 400:
            raise HTTPStatusError(
                f"GET /api/v1/logs/{log_id}: {response.status_code} {response.text[:200]}",
                response.status_code,
            )
        return response.text

    def release_feedback(self, release: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/releases/{release}/feedback")
        return result

    def mqtt_auth_files(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/api/v1/mqtt/auth-files")
        return result


def _detail_text(detail: object) -> str:
    """An error's ``detail``; request validation errors as ``field: message``, joined."""
    if not isinstance(detail, list):
        return str(detail)
    parts = []
    for error in detail:
        if isinstance(error, dict) and "msg" in error:
            field = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            parts.append(f"{field}: {error['msg']}" if field else str(error["msg"]))
        else:
            parts.append(str(error))
    return "; ".join(parts)


def _given(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None and v != []}
