"""Device maintenance windows and switch policies through the API, and the rollout's
simulated-environment gate with a stand-in runner."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from apitools import app_context
from edgeota.server import sim_gate
from edgeota.server.app import create_app
from edgeota.server.bootstrap import prepare
from edgeota.server.settings import ServerSettings
from edgeota.server.sim_gate import GateJob, GateOutcome, GateRunner
from support import RecordingSigner


class FakeGateRunner:
    def __init__(self) -> None:
        self.outcome = GateOutcome(True, "all healthy")
        self.jobs: list[GateJob] = []

    def run(self, job: GateJob, alive: Callable[[], bool]) -> GateOutcome:
        assert alive()
        self.jobs.append(job)
        return self.outcome


@pytest.fixture
def runner() -> FakeGateRunner:
    return FakeGateRunner()


@contextmanager
def _serve(tmp_path: Path, runner: GateRunner) -> Iterator[TestClient]:
    settings = ServerSettings(
        data_dir=tmp_path / "server",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        rollout_interval_s=86400,  # the tests run the passes by hand
    )
    token = prepare(settings).first_admin_token
    app = create_app(settings, signer=RecordingSigner(), gate_runner=runner)
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


@pytest.fixture
def client(tmp_path: Path, runner: FakeGateRunner) -> Iterator[TestClient]:
    with _serve(tmp_path, runner) as c:
        yield c


def _enroll(
    client: TestClient, groups: list[str], hw: str = "x86-64"
) -> tuple[str, dict[str, str]]:
    token = client.post("/api/v1/enrollment-tokens", json={"groups": groups}).json()["token"]
    r = client.post(
        "/api/v1/enroll",
        json={"enrollment_token": token, "name": "cam", "hardware_class": hw},
        headers={"Authorization": ""},
    )
    assert r.status_code == 201, r.text
    return r.json()["device_id"], {"Authorization": f"Bearer {r.json()['credential']}"}


def _desired(client: TestClient, device_id: str, headers: dict[str, str]) -> dict[str, Any]:
    r = client.get(f"/api/v1/devices/{device_id}/desired-state", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _publish(client: TestClient, version: str) -> dict[str, Any]:
    data = f"model {version}".encode()
    sha = hashlib.sha256(data).hexdigest()
    assert client.put(f"/api/v1/artifacts/{sha}", content=data).status_code == 200
    r = client.post(
        "/api/v1/releases",
        json={
            "component": "denoiser",
            "version": version,
            "files": [{"file": "model.onnx", "role": "model", "sha256": sha, "length": len(data)}],
        },
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


WINDOWS = {
    "time_zone": "Europe/Berlin",
    "windows": [{"cron": "0 2 * * *", "duration_s": 7200}],
    "max_deferrals": 2,
}


def test_windows_reach_the_device_with_its_desired_state(client: TestClient) -> None:
    device_id, headers = _enroll(client, ["lab"])
    before = client.get(f"/api/v1/devices/{device_id}/desired-state", headers=headers)
    assert before.json()["schedule"] is None
    r = client.put(f"/api/v1/devices/{device_id}/windows", json=WINDOWS)
    assert r.status_code == 200, r.text
    assert r.json()["windows"] == [
        {"cron": "0 2 * * *", "duration_s": 7200, "time_zone": "Europe/Berlin"}
    ]
    assert r.json()["time_zone"] == "Europe/Berlin" and r.json()["max_deferrals"] == 2
    # The schedule is part of the desired state: the old ETag no longer matches.
    again = client.get(
        f"/api/v1/devices/{device_id}/desired-state",
        headers={**headers, "If-None-Match": before.headers["etag"]},
    )
    assert again.status_code == 200
    assert again.json()["schedule"] == {
        "time_zone": "Europe/Berlin",
        "windows": [{"cron": "0 2 * * *", "duration_s": 7200, "time_zone": "Europe/Berlin"}],
        "max_deferrals": 2,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"windows": [{"cron": "0 0 31 4 *", "duration_s": 3600}]}, "day-of-month"),
        ({"windows": [{"cron": "0 2 * *", "duration_s": 3600}]}, "needs 5"),
        ({"time_zone": "Mars/Olympus", "windows": []}, "not an IANA time zone"),
        ({"windows": [{"cron": "0 2 * * *", "duration_s": 10}]}, "duration_s"),
    ],
)
def test_bad_windows_are_refused_naming_the_field(
    client: TestClient, body: dict[str, Any], message: str
) -> None:
    device_id, _ = _enroll(client, ["lab"])
    r = client.put(f"/api/v1/devices/{device_id}/windows", json=body)
    assert r.status_code == 422
    assert message in r.text


def test_devices_may_not_set_their_own_windows(client: TestClient) -> None:
    device_id, headers = _enroll(client, ["lab"])
    r = client.put(f"/api/v1/devices/{device_id}/windows", json=WINDOWS, headers=headers)
    assert r.status_code == 403


def test_switch_policy_comes_from_the_rollout_and_deployments_are_now(client: TestClient) -> None:
    device_id, headers = _enroll(client, ["lab"])
    v1, v2 = _publish(client, "1.0.0"), _publish(client, "2.0.0")
    assert client.post("/api/v1/deployments", json={"release": v1["id"], "group": "lab"}).is_success
    assert _desired(client, device_id, headers)["components"]["denoiser"]["switch_policy"] == "now"
    r = client.post(
        "/api/v1/rollouts",
        json={"release": v2["id"], "group": "lab", "percentages": [100], "switch_policy": "window"},
    )
    assert r.status_code == 201, r.text
    ctx = app_context(client)
    sim_gate.run_due(ctx)  # no gate: nothing to do
    from edgeota.server import rollout_loop

    rollout_loop.run_due(ctx.sessions, ctx.clock)
    wanted = _desired(client, device_id, headers)["components"]["denoiser"]
    assert wanted["version"] == "2.0.0" and wanted["switch_policy"] == "window"


def test_simulated_devices_stay_out_of_real_groups(client: TestClient) -> None:
    real, _ = _enroll(client, ["lab"], hw="arm64")
    simulated, _ = _enroll(client, ["simulated-fleet"], hw="arm64")
    r = client.post("/api/v1/groups", json={"name": "arm", "filter": {"hardware_class": ["arm64"]}})
    assert r.status_code == 201, r.text
    members = [d["id"] for d in client.get("/api/v1/groups/arm/devices").json()]
    assert members == [real]
    sims = [d["id"] for d in client.get("/api/v1/groups/simulated-fleet/devices").json()]
    assert sims == [simulated]
    reserved = client.post("/api/v1/groups", json={"name": "simulated-x", "filter": {}})
    assert reserved.status_code == 409


def _gated_rollout(client: TestClient, runner: FakeGateRunner) -> tuple[int, str, dict[str, str]]:
    device_id, headers = _enroll(client, ["lab"], hw="arm64")
    v1 = _publish(client, "1.0.0")
    r = client.post(
        "/api/v1/rollouts",
        json={"release": v1["id"], "group": "lab", "percentages": [100], "sim_gate_devices": 3},
    )
    assert r.status_code == 201, r.text
    assert r.json()["gate"] == "waiting" and r.json()["sim_gate_devices"] == 3
    return int(r.json()["id"]), device_id, headers


def _run_gate(client: TestClient) -> None:
    sim_gate.run_due(app_context(client))
    assert sim_gate.wait_for_runs(app_context(client), 30) == []
    sim_gate.run_due(app_context(client))  # applies the result


def test_a_failed_gate_halts_the_rollout_before_any_device_is_told(
    client: TestClient, runner: FakeGateRunner
) -> None:
    runner.outcome = GateOutcome(False, "3 of 3 simulated devices rolled back", {"healthy": 0})
    rollout_id, device_id, headers = _gated_rollout(client, runner)
    from edgeota.server import rollout_loop

    ctx = app_context(client)
    rollout_loop.run_due(ctx.sessions, ctx.clock)  # held: the gate has not run
    assert "denoiser" not in _desired(client, device_id, headers)["components"]
    _run_gate(client)
    (job,) = runner.jobs
    assert job.hardware_classes == ("arm64", "arm64", "arm64") and len(job.enroll_tokens) == 3
    rollout_loop.run_due(ctx.sessions, ctx.clock)
    body = client.get(f"/api/v1/rollouts/{rollout_id}").json()
    assert body["status"] == "halted" and body["gate"] == "failed"
    assert body["halt_reason"] == "simulated environment: 3 of 3 simulated devices rolled back"
    assert body["gate_result"]["healthy"] == 0
    assert "denoiser" not in _desired(client, device_id, headers)["components"]

    # Resuming accepts the gate's failure: the first phase starts.
    assert client.post(f"/api/v1/rollouts/{rollout_id}/resume").status_code == 200
    rollout_loop.run_due(ctx.sessions, ctx.clock)
    assert client.get(f"/api/v1/rollouts/{rollout_id}").json()["gate"] == "waived"
    assert _desired(client, device_id, headers)["components"]["denoiser"]["version"] == "1.0.0"


def test_a_passed_gate_lets_the_first_phase_start(
    client: TestClient, runner: FakeGateRunner
) -> None:
    rollout_id, device_id, headers = _gated_rollout(client, runner)
    _run_gate(client)
    from edgeota.server import rollout_loop

    ctx = app_context(client)
    rollout_loop.run_due(ctx.sessions, ctx.clock)
    body = client.get(f"/api/v1/rollouts/{rollout_id}").json()
    assert body["gate"] == "passed" and body["status"] in ("running", "completed")
    assert _desired(client, device_id, headers)["components"]["denoiser"]["version"] == "1.0.0"
    # A second pass starts no second run.
    _run_gate(client)
    assert len(runner.jobs) == 1


class StoppableGateRunner:
    """A gate run that goes on until the server says stop, as a long simulation would."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.ended = threading.Event()

    def run(self, job: GateJob, alive: Callable[[], bool]) -> GateOutcome:
        self.started.set()
        while alive():
            self.ended.wait(0.05)  # the real runner asks alive() between simulated steps
        self.ended.set()
        return GateOutcome(False, "stopped")


def test_server_shutdown_stops_a_running_gate_and_waits_for_it(tmp_path: Path) -> None:
    runner = StoppableGateRunner()
    with _serve(tmp_path, runner) as client:
        _gated_rollout(client, FakeGateRunner())
        sim_gate.run_due(app_context(client))
        assert runner.started.wait(10)
        assert not runner.ended.is_set()
    # The shutdown told the run to stop and waited for it: nothing runs on a closed engine.
    assert runner.ended.is_set()
