"""``edgeota devices windows`` and the device's reported time zone, against a real server.

The device reports its zone in its inventory (as the agent does); windows set without a
zone follow it; the CLI, the device API and the dashboard show it; bad input is refused
with the server's message naming the field, and the command exits non-zero.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edgeota.cli.main import app
from harness import ServerHandle

pytestmark = pytest.mark.integration


def _cli(server: ServerHandle, *args: str) -> tuple[int, str]:
    connect = ["--server", server.url, "--token", server.admin_token, "--ca", str(server.ca)]
    result = CliRunner().invoke(app, [*args, *connect], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def _ok(server: ServerHandle, *args: str) -> str:
    code, output = _cli(server, *args)
    assert code == 0, output
    return output


def _enroll_in_berlin(server: ServerHandle) -> str:
    """A device that reports Europe/Berlin as its zone, as the agent's inventory does."""
    token = server.admin.enrollment_token(["lab"])
    verify = server.ssl_context()
    r = httpx.post(
        f"{server.url}/api/v1/enroll",
        json={"enrollment_token": token, "name": "cam-1", "hardware_class": "x86-64-test"},
        verify=verify,
    )
    assert r.status_code == 201, r.text
    device_id, credential = r.json()["device_id"], r.json()["credential"]
    inventory: dict[str, Any] = {
        "hardware_class": "x86-64-test",
        "ram_total_mb": 4096,
        "model_ram_budget_mb": 1024,
        "disk_free_mb": 10000,
        "timezone": "Mars/Olympus_Mons",
    }
    url = f"{server.url}/api/v1/devices/{device_id}/inventory"
    headers = {"Authorization": f"Bearer {credential}"}
    refused = httpx.put(url, json=inventory, headers=headers, verify=verify)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "timezone"]
    assert "Mars/Olympus_Mons" in refused.json()["detail"][0]["msg"]
    inventory["timezone"] = "Europe/Berlin"
    r = httpx.put(url, json=inventory, headers=headers, verify=verify)
    assert r.status_code == 204, r.text
    return str(device_id)


@pytest.fixture
def device_id(server: ServerHandle) -> str:
    return _enroll_in_berlin(server)


def test_windows_without_a_zone_follow_the_zone_the_device_reports(
    server: ServerHandle, device_id: str
) -> None:
    assert "no maintenance windows" in _ok(server, "devices", "windows", device_id)

    shown = json.loads(
        _ok(
            server,
            "devices",
            "windows",
            device_id,
            "--window",
            "30 2 * * *;90m",
            "--window",
            "0 22 * * 5;2h;America/New_York",
            "--max-deferrals",
            "2",
            "--json",
        )
    )
    assert shown["reported_time_zone"] == "Europe/Berlin"
    assert shown["max_deferrals"] == 2
    nightly, friday = shown["windows"]
    assert (nightly["cron"], nightly["duration_s"], nightly["time_zone"]) == (
        "30 2 * * *",
        5400,
        "Europe/Berlin",
    )
    assert friday["time_zone"] == "America/New_York"
    # The next opening is given in the window's zone, at the cron's wall time there.
    opens = datetime.fromisoformat(nightly["next_opening"])
    assert (opens.hour, opens.minute) == (2, 30)
    assert nightly["next_opening"].endswith(("+01:00", "+02:00"))
    assert datetime.fromisoformat(friday["next_opening"]).isoweekday() == 5
    assert friday["next_opening"].endswith(("-05:00", "-04:00"))

    # Stored on the server, sent to the device, and shown by the plain command.
    device = server.admin.device(device_id)
    assert [w["time_zone"] for w in device["windows"]] == ["Europe/Berlin", "America/New_York"]
    table = _ok(server, "devices", "windows", device_id)
    assert "30 2 * * *" in table and "90m" in table and "Europe/Berlin" in table
    assert "may defer an update 2 time(s)" in table

    # --max-deferrals alone keeps the windows; --clear removes them.
    _ok(server, "devices", "windows", device_id, "--max-deferrals", "0")
    assert len(server.admin.device(device_id)["windows"]) == 2
    assert "no maintenance windows" in _ok(server, "devices", "windows", device_id, "--clear")
    assert server.admin.device(device_id)["windows"] == []


BAD_WINDOWS = [
    ("0 2 * *;60m", "windows.0.cron", "it needs 5"),
    ("0 25 * * *;60m", "windows.0.cron", "hour"),
    ("0 0 30 2 *;60m", "windows.0.cron", "day-of-month"),  # February 30th: never opens
    ("0 2 * * *;60m;Mars/Olympus_Mons", "windows.0.time_zone", "Mars/Olympus_Mons"),
    ("0 2 * * *;30s", "windows.0.duration_s", "greater than or equal to 60"),
    ("0 2 * * *;8d", "windows.0.duration_s", "less than or equal to 604800"),
]


def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    server: ServerHandle, device_id: str
) -> None:
    _ok(server, "devices", "windows", device_id, "--window", "0 3 * * *;1h")
    before = server.admin.device(device_id)
    for window, field, says in BAD_WINDOWS:
        code, output = _cli(server, "devices", "windows", device_id, "--window", window)
        assert code != 0, window
        assert field in output and says in output, (window, output)
    code, output = _cli(server, "devices", "windows", device_id, "--tz", "Europe/Atlantis")
    assert code != 0 and "time_zone" in output and "Europe/Atlantis" in output, output
    code, output = _cli(server, "devices", "windows", device_id, "--window", "0 2 * * *")
    assert code != 0 and "CRON;DURATION" in output, output
    after = server.admin.device(device_id)
    assert (after["windows"], after["time_zone"]) == (before["windows"], before["time_zone"])


def test_the_reported_zone_shows_in_devices_show_and_on_the_dashboard(
    server: ServerHandle, device_id: str
) -> None:
    shown = _ok(server, "devices", "show", device_id)
    assert '"reported_time_zone": "Europe/Berlin"' in shown
    with httpx.Client(base_url=server.url, verify=server.ssl_context()) as client:
        login = re.search(r'name="login_token" value="([^"]+)"', client.get("/ui/login").text)
        assert login is not None
        form = {"token": server.admin_token, "login_token": login.group(1)}
        assert client.post("/ui/login", data=form).status_code == 303
        page = client.get(f"/ui/devices/{device_id}")
    assert page.status_code == 200
    zone = re.search(r'<dd id="time-zone">([^<]*)</dd>', page.text)
    assert zone is not None and zone.group(1) == "Europe/Berlin"
