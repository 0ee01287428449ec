"""``container.json``: how a container component's release runs on the device.

The operator writes it beside the image archive; ``edgeota release publish`` checks it with
:func:`parse_spec` and signs it as the release's ``container`` target, so the device runs only
settings the server signed. Version 1::

    {
      "schema": 1,
      "command": ["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "/www"],
      "env": {"MODEL_DIR": "/models/current", "LISTEN": "127.0.0.1:{port}"},
      "network": "host",
      "port": 8080,
      "staging_port": 18080,
      "container_port": null,
      "mounts": [{"source": "/var/lib/camera", "target": "/data", "read_only": false}],
      "model_mounts": [{"component": "model", "target": "/models"}],
      "health": {"http": "/healthz", "expect_status": 200, "timeout_s": 30},
      "stop_timeout_s": 10
    }

- ``command`` (optional) replaces the image's command; ``{port}`` in it and in ``env`` values
  becomes the port the container must listen on: ``staging_port`` while the new release is
  checked beside the old one, ``port`` once it serves.
- ``network``: ``host`` (default), ``none``, or a network the engine knows. On ``host`` the
  container listens on the port itself; on any other network but ``none``,
  ``container_port`` inside the container is published on ``127.0.0.1:<port>``.
- ``model_mounts``: the folder of another component (its two slots and ``current``) mounted
  read-only; the component's installed release is at ``<target>/current/``.
- ``health``: ``http`` (a path the engine's host reaches on ``127.0.0.1:<port>``, answered
  with ``expect_status``) or ``exec`` (a command run inside the container, exit 0 = healthy),
  given ``timeout_s`` to pass.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from edgeota.errors import FormatError
from edgeota.targets import check_component_name

SPEC_VERSION = 1
SPEC_FILE = "container.json"
# In a container component's slot: the image as an extracted docker-archive (its manifest,
# config and layers), which the device's engine loads; see docs/containers.md.
IMAGE_DIR = "image"
IMAGE_MANIFEST = "manifest.json"
PORT_PLACEHOLDER = "{port}"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NETWORK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEYS = frozenset(
    {
        "schema",
        "command",
        "env",
        "network",
        "port",
        "staging_port",
        "container_port",
        "mounts",
        "model_mounts",
        "health",
        "stop_timeout_s",
    }
)


@dataclass(frozen=True)
class Mount:
    source: str  # absolute path on the device
    target: str  # absolute path in the container
    read_only: bool = True


@dataclass(frozen=True)
class ModelMount:
    component: str
    target: str


@dataclass(frozen=True)
class HealthSpec:
    http: str | None = None
    exec: tuple[str, ...] | None = None
    expect_status: int = 200
    timeout_s: float = 30.0


@dataclass(frozen=True)
class ContainerSpec:
    health: HealthSpec
    command: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    network: str = "host"
    port: int | None = None
    staging_port: int | None = None
    container_port: int | None = None
    mounts: tuple[Mount, ...] = ()
    model_mounts: tuple[ModelMount, ...] = ()
    stop_timeout_s: float = 10.0

    def needs_components(self) -> tuple[str, ...]:
        """The components whose folders this container mounts."""
        return tuple(m.component for m in self.model_mounts)


def parse_spec(raw: bytes | str, *, where: str = SPEC_FILE) -> ContainerSpec:
    """Parse and check a ``container.json``; FormatError names the field and the fix."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{where} is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise FormatError(f"{where} must be a JSON object")
    if body.get("schema") != SPEC_VERSION:
        raise FormatError(f'{where}: expected "schema": {SPEC_VERSION}, got {body.get("schema")!r}')
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise FormatError(f"{where}: unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    f = _Fields(body, where)
    network = f.text("network", default="host")
    if not _NETWORK.match(network):
        raise FormatError(f"{where}: 'network' {network!r} is not a network name")
    port = f.port("port")
    staging = f.port("staging_port")
    container_port = f.port("container_port")
    health = _health(body.get("health"), where)
    spec = ContainerSpec(
        health=health,
        command=f.strings("command"),
        env=f.env(),
        network=network,
        port=port,
        staging_port=staging,
        container_port=container_port,
        mounts=f.mounts(),
        model_mounts=f.model_mounts(),
        stop_timeout_s=f.seconds("stop_timeout_s", default=10.0),
    )
    _check_ports(spec, where)
    return spec


def _check_ports(spec: ContainerSpec, where: str) -> None:
    if (spec.port is None) != (spec.staging_port is None):
        raise FormatError(
            f"{where}: give both 'port' and 'staging_port' (the new release is checked on "
            "the staging port while the old one still serves), or neither"
        )
    if spec.port is not None and spec.port == spec.staging_port:
        raise FormatError(f"{where}: 'staging_port' must differ from 'port' ({spec.port})")
    if spec.health.http is not None:
        if spec.port is None:
            raise FormatError(f"{where}: an http health check needs 'port' and 'staging_port'")
        if spec.network == "none":
            raise FormatError(
                f"{where}: an http health check cannot reach a container on network 'none'; "
                "use network 'host' or an 'exec' health check"
            )
    if spec.network not in ("host", "none") and spec.port is not None:
        if spec.container_port is None:
            raise FormatError(
                f"{where}: on network {spec.network!r} the port is published: give "
                "'container_port', the port the app listens on inside the container"
            )
    elif spec.container_port is not None:
        raise FormatError(
            f"{where}: 'container_port' applies only to published ports (a network other "
            f"than 'host' or 'none'); on {spec.network!r} leave it out"
        )


def _health(raw: Any, where: str) -> HealthSpec:
    if not isinstance(raw, dict):
        raise FormatError(
            f'{where}: "health" is required: {{"http": "/path"}} or {{"exec": ["cmd", ...]}}'
        )
    f = _Fields(raw, f"{where} health")
    allowed = {"http", "exec", "expect_status", "timeout_s"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise FormatError(f"{where}: unknown health keys {unknown}; allowed: {sorted(allowed)}")
    http = raw.get("http")
    command = f.strings("exec")
    if (http is None) == (command is None):
        raise FormatError(f'{where}: health needs exactly one of "http" or "exec"')
    if http is not None and (not isinstance(http, str) or not http.startswith("/")):
        raise FormatError(f'{where}: health "http" must be a path starting with "/"')
    status = raw.get("expect_status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise FormatError(f'{where}: health "expect_status" must be an HTTP status code')
    return HealthSpec(
        http=http,
        exec=command,
        expect_status=status,
        timeout_s=f.seconds("timeout_s", default=30.0),
    )


class _Fields:
    """Typed reads of one JSON object's fields, each error naming the field."""

    def __init__(self, body: dict[str, Any], where: str) -> None:
        self.body, self.where = body, where

    def fail(self, key: str, expected: str) -> FormatError:
        return FormatError(f"{self.where}: {key!r} must be {expected}, not {self.body[key]!r}")

    def text(self, key: str, *, default: str) -> str:
        value = self.body.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(key, "a non-empty string")
        return value

    def port(self, key: str) -> int | None:
        value = self.body.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.fail(key, "a port number (1-65535)")
        return value

    def seconds(self, key: str, *, default: float) -> float:
        value = self.body.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
            raise self.fail(key, "a number of seconds between 0 and 3600")
        return float(value)

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self.body.get(key)
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and "\x00" not in v for v in value)
        ):
            raise self.fail(key, "a non-empty list of strings")
        return tuple(value)

    def env(self) -> dict[str, str]:
        value = self.body.get("env", {})
        if not isinstance(value, dict):
            raise self.fail("env", "an object of NAME: value strings")
        for name, v in value.items():
            if not _ENV_NAME.match(name) or not isinstance(v, str) or "\x00" in v:
                raise FormatError(
                    f"{self.where}: env {name!r} must be a NAME ([A-Za-z_][A-Za-z0-9_]*) "
                    "with a string value"
                )
        return dict(value)

    def mounts(self) -> tuple[Mount, ...]:
        value = self.body.get("mounts", [])
        if not isinstance(value, list):
            raise self.fail("mounts", "a list of mounts")
        out = []
        for m in value:
            if not isinstance(m, dict) or set(m) - {"source", "target", "read_only"}:
                raise FormatError(
                    f'{self.where}: each mount is {{"source", "target", "read_only"}}, not {m!r}'
                )
            source, target = (
                _abs_path(m.get("source"), self.where),
                _abs_path(m.get("target"), self.where),
            )
            read_only = m.get("read_only", True)
            if not isinstance(read_only, bool):
                raise FormatError(f"{self.where}: mount 'read_only' must be true or false")
            out.append(Mount(source, target, read_only))
        return tuple(out)

    def model_mounts(self) -> tuple[ModelMount, ...]:
        value = self.body.get("model_mounts", [])
        if not isinstance(value, list):
            raise self.fail("model_mounts", "a list of component mounts")
        out = []
        for m in value:
            if not isinstance(m, dict) or set(m) != {"component", "target"}:
                raise FormatError(
                    f'{self.where}: each model mount is {{"component", "target"}}, not {m!r}'
                )
            try:
                component = check_component_name(str(m["component"]))
            except Exception as e:
                raise FormatError(f"{self.where}: model mount: {e}") from e
            out.append(ModelMount(component, _abs_path(m["target"], self.where)))
        return tuple(out)


def _abs_path(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
        raise FormatError(f"{where}: mount paths must be absolute, not {value!r}")
    if ".." in PurePosixPath(value).parts or "," in value or ":" in value:
        raise FormatError(f"{where}: mount path {value!r} must not contain '..', ',' or ':'")
    return value
