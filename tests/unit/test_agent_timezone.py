"""The device's time zone: found on the system, checked in the config, sent in the inventory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edgeota.agent.api_client import ApiClient, build_inventory
from edgeota.agent.config import AgentConfig, system_time_zone
from edgeota.cli.main import app
from edgeota.errors import HTTPStatusError

INVENTORY: dict[str, Any] = {
    "hardware_class": "x86-64-cpu",
    "model_ram_budget_mb": 512,
    "agent_version": "0.1.0",
    "disk_free_bytes": 1 << 30,
    "components": {},
}


def test_inventory_carries_the_zone_only_when_known() -> None:
    assert build_inventory(**INVENTORY, timezone="Europe/Berlin")["timezone"] == "Europe/Berlin"
    # An older server refuses unknown inventory keys: no zone, no key.
    assert "timezone" not in build_inventory(**INVENTORY)


def _localtime_link(tmp_path: Path, target: str) -> Path:
    link = tmp_path / "localtime"
    link.symlink_to(target)
    return link


def test_system_zone_comes_from_tz_first(tmp_path: Path) -> None:
    link = _localtime_link(tmp_path, "/usr/share/zoneinfo/Asia/Tokyo")
    assert system_time_zone({"TZ": "America/Chicago"}, link) == "America/Chicago"
    assert system_time_zone({"TZ": ":Europe/Paris"}, link) == "Europe/Paris"
    assert system_time_zone({"TZ": "/usr/share/zoneinfo/Europe/Oslo"}, link) == "Europe/Oslo"


def test_system_zone_falls_back_to_the_localtime_link_then_utc(tmp_path: Path) -> None:
    link = _localtime_link(tmp_path, "../usr/share/zoneinfo/posix/Asia/Tokyo")
    assert system_time_zone({}, link) == "Asia/Tokyo"
    # A POSIX TZ string is no IANA name: the link decides.
    assert system_time_zone({"TZ": "CET-1CEST"}, link) == "Asia/Tokyo"
    assert system_time_zone({}, tmp_path / "missing") == "UTC"
    plain = tmp_path / "copied-localtime"
    plain.write_bytes(b"TZif")  # a copy, not a link: nothing names the zone
    assert system_time_zone({"TZ": "Nowhere/Atlantis"}, plain) == "UTC"


def test_config_refuses_a_zone_that_does_not_exist(tmp_path: Path) -> None:
    config = AgentConfig("https://ota.example", tmp_path, "x86-64-cpu", timezone="Europe/Berlin")
    assert config.timezone == "Europe/Berlin"
    for bad in ("Europe/Atlantis", "../../etc/passwd", ""):
        with pytest.raises(ValueError, match="is not an IANA time zone"):
            AgentConfig("https://ota.example", tmp_path, "x86-64-cpu", timezone=bad)


def test_agent_command_refuses_an_unknown_timezone_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "agent",
            "--server",
            "https://ota.example",
            "--data-dir",
            str(tmp_path),
            "--timezone",
            "Mars/Olympus_Mons",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1
    assert "'Mars/Olympus_Mons' is not an IANA time zone" in result.output
    assert not (tmp_path / "identity.json").exists()


def _inventory_server(refuse_zone: bool) -> tuple[ApiClient, list[dict[str, Any]]]:
    """An ApiClient against a server that, like one older than the field, may refuse it."""
    received: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        received.append(body)
        if refuse_zone and "timezone" in body:
            return httpx.Response(422, json={"detail": [{"loc": ["body", "timezone"]}]})
        return httpx.Response(204)

    api = ApiClient("https://ota.example", httpx.Client(transport=httpx.MockTransport(handle)))
    api.set_identity("dev-1", "secret")
    return api, received


def test_a_server_that_refuses_the_zone_still_gets_the_rest_of_the_inventory() -> None:
    inventory = build_inventory(**INVENTORY, timezone="Europe/Berlin")
    api, received = _inventory_server(refuse_zone=True)
    api.put_inventory(inventory)
    assert [("timezone" in body) for body in received] == [True, False]
    assert received[1] == {k: v for k, v in inventory.items() if k != "timezone"}

    api, received = _inventory_server(refuse_zone=False)
    api.put_inventory(inventory)
    assert [body.get("timezone") for body in received] == ["Europe/Berlin"]


def test_other_refusals_of_the_inventory_are_not_hidden() -> None:
    sent: list[dict[str, Any]] = []

    def always_422(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(422, json={"detail": [{"loc": ["body", "disk_free_mb"]}]})

    api = ApiClient("https://ota.example", httpx.Client(transport=httpx.MockTransport(always_422)))
    api.set_identity("dev-1", "secret")
    with pytest.raises(HTTPStatusError) as info:
        api.put_inventory(build_inventory(**INVENTORY, timezone="Europe/Berlin"))
    assert info.value.status_code == 422
    assert [("timezone" in body) for body in sent] == [True, False]  # one retry, not more
    sent.clear()
    with pytest.raises(HTTPStatusError):
        api.put_inventory(build_inventory(**INVENTORY))  # no zone in it: nothing to drop
    assert len(sent) == 1
