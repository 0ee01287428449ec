"""The device side of the device protocol (docs/protocol.md), over one httpx.Client.

Nothing in a check-in answer is trusted beyond "which target paths to look up": the agent
decides on the signed TUF data of those targets. Errors: TransportError for the network,
HTTPStatusError for unexpected answers, CredentialError for 401/403, FormatError for bodies
that do not parse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from edgeota.agent.journal import ComponentRecord
from edgeota.agent.schedule import NO_SCHEDULE, POLICIES, SWITCH_NOW, Schedule, parse_schedule
from edgeota.errors import FormatError, HTTPStatusError, TransportError

_MB = 1024 * 1024
log = logging.getLogger(__name__)


class DeviceApi(Protocol):
    """What the agent needs from the server (ApiClient; a fake in tests)."""

    def set_identity(self, device_id: str, credential: str) -> None: ...
    def enroll(self, token: str, name: str, hardware_class: str) -> tuple[str, str]: ...
    def desired_state(self, etag: str | None) -> DesiredState | None: ...
    def put_inventory(self, inventory: Mapping[str, Any]) -> None: ...
    def post_events(self, events: Sequence[Mapping[str, Any]]) -> int: ...


class CredentialError(HTTPStatusError):
    """The server refused the device's credential or enrollment token (401/403)."""


@dataclass(frozen=True)
class DesiredComponent:
    release_id: str
    version: str
    targets: tuple[str, ...]
    deltas: tuple[str, ...] = ()  # patch targets the agent may use instead of full files
    switch_policy: str = SWITCH_NOW  # "window": switch only inside a maintenance window
    size_bytes: int = 0  # the full files' bytes as the server says: shown to users, not trusted
    # Set by the server's model variant choice: which one, or (targets empty) why none can be
    # installed here ("no_variant_fits", "awaiting_inventory"). Reported, never trusted.
    variant: str | None = None
    status: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DesiredState:
    revision: int
    poll_interval_s: float | None
    components: dict[str, DesiredComponent]
    etag: str | None
    schedule: Schedule = NO_SCHEDULE  # the device's maintenance windows and deferrals


def make_http_client(
    server_url: str, ca_file: Path | None, timeout_s: float = 30.0
) -> httpx.Client:
    """An httpx.Client that verifies the server against ``ca_file`` (system CAs if None)."""
    verify: ssl.SSLContext | bool = True
    if server_url.startswith("https://") and ca_file is not None:
        verify = ssl.create_default_context(cafile=str(ca_file))
    return httpx.Client(verify=verify, timeout=httpx.Timeout(timeout_s))


class ApiClient:
    def __init__(
        self,
        server_url: str,
        client: httpx.Client,
        *,
        device_id: str | None = None,
        credential: str | None = None,
    ) -> None:
        self.base = server_url.rstrip("/")
        self.client = client
        self.device_id = device_id
        self._credential = credential

    def set_identity(self, device_id: str, credential: str) -> None:
        self.device_id, self._credential = device_id, credential

    # -- calls -------------------------------------------------------------------------
    def enroll(self, token: str, name: str, hardware_class: str) -> tuple[str, str]:
        """Exchange a one-time enrollment token for ``(device_id, credential)``."""
        body = {"enrollment_token": token, "name": name, "hardware_class": hardware_class}
        resp = self._request("POST", "/api/v1/enroll", json=body, auth=False, ok=(200, 201))
        data = _json_object(resp)
        try:
            device_id, credential = str(data["device_id"]), str(data["credential"])
        except KeyError as e:
            raise FormatError(f"enrollment answer lacks {e.args[0]!r}") from e
        self.set_identity(device_id, credential)
        return device_id, credential

    def desired_state(self, etag: str | None) -> DesiredState | None:
        """The desired state, or None when it did not change since ``etag`` (304)."""
        headers = {"If-None-Match": etag} if etag else {}
        resp = self._request(
            "GET", f"{self._device_path()}/desired-state", headers=headers, ok=(200, 304)
        )
        if resp.status_code == 304:
            return None
        return parse_desired_state(_json_object(resp), resp.headers.get("etag"))

    def put_inventory(self, inventory: Mapping[str, Any]) -> None:
        path = f"{self._device_path()}/inventory"
        try:
            self._request("PUT", path, json=dict(inventory), ok=(200, 204))
        except HTTPStatusError as e:
            # A server older than the time zone field, or whose zone database lacks this
            # zone, refuses the whole document: the rest of it still counts.
            if e.status_code != 422 or "timezone" not in inventory:
                raise
            log.warning("the server refused the inventory with its time zone (%s); sent without", e)
            rest = {k: v for k, v in inventory.items() if k != "timezone"}
            self._request("PUT", path, json=rest, ok=(200, 204))

    def post_events(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Send events; return the highest seq the server has accepted."""
        resp = self._request(
            "POST", f"{self._device_path()}/events", json={"events": [dict(e) for e in events]}
        )
        through = _json_object(resp).get("accepted_through")
        if not isinstance(through, int):
            raise FormatError(f"events answer has no integer accepted_through: {through!r}")
        return through

    # -- plumbing ----------------------------------------------------------------------
    def _device_path(self) -> str:
        if self.device_id is None:
            raise RuntimeError("the device is not enrolled: call enroll() or set_identity()")
        return f"/api/v1/devices/{self.device_id}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        ok: tuple[int, ...] = (200,),
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if auth:
            if self._credential is None:
                raise RuntimeError("no device credential: enroll the device first")
            all_headers["Authorization"] = f"Bearer {self._credential}"
        url = f"{self.base}{path}"
        try:
            resp = self.client.request(
                method,
                url,
                json=json,
                headers=all_headers,
                content=content,
                params=params,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s,
            )
        except httpx.HTTPError as e:
            raise TransportError(f"{method} {url} failed: {e}; retrying later") from e
        if resp.status_code in (401, 403):
            what = (
                "the enrollment token was refused: it is wrong or was already used; "
                "ask for a new token"
                if not auth
                else "the device credential was refused: it was revoked or is wrong; "
                "re-enroll the device with a new token"
            )
            raise CredentialError(
                f"{method} {url}: HTTP {resp.status_code}, {what}", resp.status_code
            )
        if resp.status_code not in ok:
            raise HTTPStatusError(
                f"{method} {url} answered HTTP {resp.status_code}: {resp.text[:200]!r}",
                resp.status_code,
            )
        return resp


def _json_object(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError as e:
        raise FormatError(f"{resp.request.url} did not answer JSON: {e}") from e
    if not isinstance(body, dict):
        raise FormatError(f"{resp.request.url} answered {type(body).__name__}, not an object")
    return body


def parse_desired_state(body: Mapping[str, Any], etag: str | None) -> DesiredState:
    """Check the shape of a desired-state answer; names are checked later, before use."""
    raw_components = body.get("components", {})
    if not isinstance(raw_components, dict):
        raise FormatError("desired state 'components' must be an object")
    components: dict[str, DesiredComponent] = {}
    for name, raw in raw_components.items():
        if not isinstance(raw, dict):
            raise FormatError(f"desired state for {name!r} must be an object")
        targets = raw.get("targets")
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise FormatError(f"desired state for {name!r}: 'targets' must be a list of paths")
        release_id, version = raw.get("release_id"), raw.get("version")
        if not isinstance(release_id, str) or not isinstance(version, str):
            raise FormatError(f"desired state for {name!r} needs string release_id and version")
        deltas = raw.get("deltas", [])  # absent from servers that build no deltas
        if not isinstance(deltas, list) or not all(isinstance(d, str) for d in deltas):
            raise FormatError(f"desired state for {name!r}: 'deltas' must be a list of paths")
        policy = raw.get("switch_policy", SWITCH_NOW)  # absent from servers without schedules
        if policy not in POLICIES:
            raise FormatError(f"desired state for {name!r}: unknown switch_policy {policy!r}")
        size = raw.get("size_bytes", 0)
        components[str(name)] = DesiredComponent(
            release_id,
            version,
            tuple(targets),
            tuple(deltas),
            switch_policy=policy,
            size_bytes=size if isinstance(size, int) and size >= 0 else 0,
            **_variant_fields(name, raw),
        )
    revision = body.get("revision", 0)
    interval = body.get("poll_interval_s")
    if not isinstance(revision, int) or not (interval is None or isinstance(interval, int | float)):
        raise FormatError("desired state 'revision' must be an integer, 'poll_interval_s' a number")
    return DesiredState(
        revision=revision,
        poll_interval_s=None if interval is None else float(interval),
        components=components,
        etag=etag,
        schedule=parse_schedule(body.get("schedule")),
    )


def _variant_fields(name: str, raw: Mapping[str, Any]) -> dict[str, str | None]:
    """The variant choice of a desired component (absent from servers without variants)."""
    fields = {key: raw.get(key) for key in ("variant", "status", "reason")}
    for key, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise FormatError(f"desired state for {name!r}: {key!r} must be a string")
    return fields


def build_inventory(
    *,
    hardware_class: str,
    model_ram_budget_mb: int,
    agent_version: str,
    disk_free_bytes: int,
    components: Mapping[str, ComponentRecord],
    accelerators: Sequence[str] = (),
    timezone: str | None = None,
) -> dict[str, Any]:
    """The inventory document of ``PUT .../inventory``; ``timezone`` is the device's IANA
    zone (the server reads windows given without a zone in it)."""
    body: dict[str, Any] = {
        "hardware_class": hardware_class,
        "arch": platform.machine()[:32],
        "ram_total_mb": _ram_total_mb(),
        "model_ram_budget_mb": model_ram_budget_mb,
        "disk_free_mb": disk_free_bytes // _MB,
        "agent_version": agent_version[:32],
        "components": {
            name: {
                "version": rec.committed.version if rec.committed else None,
                "release_id": rec.committed.release_id if rec.committed else None,
                "state": rec.state.value,
                "slot": rec.committed_slot,
            }
            for name, rec in sorted(components.items())
        },
    }
    if accelerators:  # only when there are any: older servers refuse unknown keys
        body["accelerators"] = sorted(set(accelerators))
    if timezone is not None:  # likewise
        body["timezone"] = timezone
    return body


def inventory_digest(inventory: Mapping[str, Any]) -> str:
    """A digest that changes when the inventory changes in a way worth sending.

    Free disk moves all the time; only a change of a quarter GB counts, so a steady device
    does not send its inventory on every check-in.
    """
    coarse = dict(inventory, disk_free_mb=int(inventory.get("disk_free_mb", 0)) // 256)
    return hashlib.sha256(json.dumps(coarse, sort_keys=True).encode()).hexdigest()


def _ram_total_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // _MB
    except (ValueError, OSError):
        return 0
