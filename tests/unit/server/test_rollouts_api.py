"""Staged rollouts through the API, with the rollout loop driven by hand at chosen times.

Devices are enrolled and report events over the API; what a device is told is read from its
own check-in (the desired state as the device sees it). ``tick`` is called directly with an
explicit ``now``, so soaks pass without sleeping; the app's background loop is set to an
interval the tests never reach.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from apitools import app_context, publish, tick
from edgeota.rollout import RolloutPlan, phase_of
from edgeota.server import rollout_loop
from edgeota.server.app import create_app
from edgeota.server.bootstrap import prepare
from edgeota.server.db import session_scope
from edgeota.server.models import RolloutDevice
from edgeota.server.settings import ServerSettings
from edgeota.timeutil import utcnow
from support import RecordingSigner

SOAK = 600


@pytest.fixture
def signer() -> RecordingSigner:
    return RecordingSigner()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ServerSettings:
    return ServerSettings(
        data_dir=tmp_path / "server",
        database_url=database_url,
        poll_interval_s=5,
        rollout_interval_s=86400,  # the tests tick by hand
    )


@pytest.fixture
def client(settings: ServerSettings, signer: RecordingSigner) -> Iterator[TestClient]:
    token = prepare(settings).first_admin_token
    with TestClient(create_app(settings, signer=signer)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


class Device:
    """One enrolled device, seen from its side of the API."""

    def __init__(self, client: TestClient, groups: list[str]) -> None:
        self.client = client
        token = client.post("/api/v1/enrollment-tokens", json={"groups": groups}).json()
        r = client.post(
            "/api/v1/enroll",
            json={"enrollment_token": token["token"], "name": "cam", "hardware_class": "x86-64"},
            headers={"Authorization": ""},
        )
        assert r.status_code == 201, r.text
        self.id: str = r.json()["device_id"]
        self.headers = {"Authorization": f"Bearer {r.json()['credential']}"}
        self.seq = itertools.count(1)

    def desired(self) -> dict[str, Any]:
        r = self.client.get(f"/api/v1/devices/{self.id}/desired-state", headers=self.headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def desired_version(self, component: str = "denoiser") -> str | None:
        wanted = self.desired()["components"].get(component)
        return None if wanted is None else str(wanted["version"])

    def report(
        self,
        event: str,
        release: dict[str, Any],
        state: str = "idle",
        detail: dict[str, Any] | None = None,
    ) -> None:
        body = {
            "events": [
                {
                    "seq": next(self.seq),
                    "time": "2026-01-01T00:00:00Z",
                    "event": event,
                    "component": release["component"],
                    "state": state,
                    "release_id": release["id"],
                    "version": release["version"],
                    "detail": detail or {},
                }
            ]
        }
        r = self.client.post(f"/api/v1/devices/{self.id}/events", json=body, headers=self.headers)
        assert r.status_code == 200, r.text


def _create(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/rollouts", json=body)
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


def _get(client: TestClient, rollout_id: int) -> dict[str, Any]:
    r = client.get(f"/api/v1/rollouts/{rollout_id}")
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def _seed_with_both_phases(ids: list[str], field: list[str]) -> str:
    """A seed that puts at least one non-field-test device in each of phases 50% and 100%."""
    for n in range(1000):
        plan = RolloutPlan.staged(f"s{n}", (50, 100), field, max_failed=0, max_failed_share=None)
        phases = {phase_of(plan, d) for d in ids if d not in field}
        if phases == {1, 2}:
            return f"s{n}"
    raise AssertionError("no seed spreads these devices over both phases")


def _told(devices: list[Device], version: str = "2.0.0") -> set[str]:
    return {d.id for d in devices if d.desired_version() == version}


def test_field_test_first_then_each_phase_after_its_soak(client: TestClient) -> None:
    release = publish(client, "2.0.0", b"v2")
    fleet = [Device(client, ["fleet"]) for _ in range(8)]
    ids = [d.id for d in fleet]
    field = ids[:2]
    seed = _seed_with_both_phases(ids, field)
    rollout = _create(
        client,
        release="denoiser@2.0.0",
        group="fleet",
        field_test_devices=field,
        percentages=[50, 100],
        success_share=1.0,
        max_failed=0,
        max_failed_share=None,
        soak_s=SOAK,
        seed=seed,
    )
    assert rollout["status"] == "scheduled"
    assert _told(fleet) == set()
    t = utcnow() + timedelta(seconds=1)

    tick(client, t)
    assert _told(fleet) == set(field)
    status = _get(client, rollout["id"])
    assert status["status"] == "running"
    assert status["current_phase"] == "field-test"
    assert status["phases"][0]["told"] == 2
    assert status["phases"][0]["pending"] == 2

    for d in fleet[:2]:
        d.report("update_found", release, state="downloading")
        d.report("committed", release)
    tick(client, t + timedelta(seconds=10))  # the field test now meets its gate: soak starts
    assert _told(fleet) == set(field)
    tick(client, t + timedelta(seconds=10 + SOAK - 1))
    assert _told(fleet) == set(field)

    tick(client, t + timedelta(seconds=10 + SOAK))
    plan = RolloutPlan.staged(seed, (50, 100), field, max_failed=0, max_failed_share=None)
    first_half = {d for d in ids if phase_of(plan, d) <= 1}
    assert _told(fleet) == first_half
    assert len(first_half) < len(ids)
    status = _get(client, rollout["id"])
    assert status["current_phase"] == "50%"
    assert status["phases"][0]["updated"] == 2

    for d in fleet:
        if d.id in first_half - set(field):
            d.report("committed", release)
    tick(client, t + timedelta(seconds=20 + SOAK))
    tick(client, t + timedelta(seconds=20 + 2 * SOAK))
    assert _told(fleet) == set(ids)
    for d in fleet:
        if d.id not in first_half:
            d.report("committed", release)
    tick(client, t + timedelta(seconds=30 + 2 * SOAK))
    tick(client, t + timedelta(seconds=30 + 3 * SOAK))
    status = _get(client, rollout["id"])
    assert status["status"] == "completed"
    assert sum(p["updated"] for p in status["phases"]) == len(ids)


def test_bad_canary_halts_the_rollout_and_touches_no_other_device(client: TestClient) -> None:
    """RELIABILITY row 25: a release failing in the field test stops itself there."""
    release = publish(client, "2.0.0", b"v2")
    fleet = [Device(client, ["fleet"]) for _ in range(6)]
    canary, others = fleet[:2], fleet[2:]
    etags = {
        d.id: client.get(f"/api/v1/devices/{d.id}/desired-state", headers=d.headers).headers["etag"]
        for d in others
    }
    rollout = _create(
        client,
        release=release["id"],
        group="fleet",
        field_test_devices=[d.id for d in canary],
        percentages=[100],
        max_failed=0,
        max_failed_share=None,
        soak_s=0,
    )
    t = utcnow() + timedelta(seconds=1)
    tick(client, t)
    canary[0].report("committed", release)
    canary[1].report("switched", release, state="trial")
    canary[1].report("rolled_back", release)

    tick(client, t + timedelta(seconds=5))
    status = _get(client, rollout["id"])
    assert status["status"] == "halted"
    assert "phase 0 (field-test)" in status["halt_reason"]
    assert "1 of 2 devices failed or rolled back" in status["halt_reason"]
    assert status["phases"][0]["rolled_back"] == 1

    for later in (60, 3600, 86400 * 30):
        tick(client, t + timedelta(seconds=later))
    assert _get(client, rollout["id"])["status"] == "halted"
    for d in others:
        r = client.get(
            f"/api/v1/devices/{d.id}/desired-state",
            headers={**d.headers, "If-None-Match": etags[d.id]},
        )
        assert r.status_code == 304, f"{d.id} was touched by a halted rollout"


def test_pause_resume_abort_and_illegal_commands(client: TestClient) -> None:
    release = publish(client, "2.0.0", b"v2")
    fleet = [Device(client, ["fleet"]) for _ in range(4)]
    rollout = _create(
        client,
        release="denoiser@2.0.0",
        group="fleet",
        field_test_devices=[fleet[0].id],
        percentages=[100],
        soak_s=0,
    )
    url = f"/api/v1/rollouts/{rollout['id']}"
    t = utcnow() + timedelta(seconds=1)
    tick(client, t)
    assert _told(fleet) == {fleet[0].id}

    paused = client.post(f"{url}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    again = client.post(f"{url}/pause")
    assert again.status_code == 409
    assert "cannot pause a rollout that is paused" in again.json()["detail"]

    fleet[0].report("committed", release)
    tick(client, t + timedelta(seconds=3600))
    assert _told(fleet) == {fleet[0].id}, "a paused rollout told new devices"

    assert client.post(f"{url}/resume").json()["status"] == "running"
    tick(client, t + timedelta(seconds=3601))
    assert _told(fleet) == {d.id for d in fleet}

    assert client.post(f"{url}/abort").json()["status"] == "aborted"
    resumed = client.post(f"{url}/resume")
    assert resumed.status_code == 409
    assert "cannot resume a rollout that is aborted" in resumed.json()["detail"]
    assert client.post(f"{url}/launch").status_code == 422
    assert client.post("/api/v1/rollouts/999/pause").status_code == 404


def test_resume_after_halt_accepts_the_failures_seen(client: TestClient) -> None:
    release = publish(client, "2.0.0", b"v2")
    fleet = [Device(client, ["fleet"]) for _ in range(3)]
    rollout = _create(
        client,
        release="denoiser@2.0.0",
        group="fleet",
        field_test_devices=[fleet[0].id, fleet[1].id],
        percentages=[100],
        success_share=0.5,
        max_failed=0,
        max_failed_share=None,
    )
    t = utcnow() + timedelta(seconds=1)
    tick(client, t)
    fleet[0].report("download_failed", release)
    fleet[1].report("committed", release)
    tick(client, t + timedelta(seconds=1))
    assert _get(client, rollout["id"])["status"] == "halted"
    assert client.post(f"/api/v1/rollouts/{rollout['id']}/resume").status_code == 200
    later = utcnow() + timedelta(seconds=5)
    tick(client, later)
    assert _get(client, rollout["id"])["status"] == "running"
    assert _told(fleet) == {d.id for d in fleet}
    fleet[2].report("committed", release)
    tick(client, later + timedelta(seconds=1))
    assert _get(client, rollout["id"])["status"] == "completed"


def test_second_live_rollout_to_overlapping_devices_is_refused(client: TestClient) -> None:
    publish(client, "2.0.0", b"v2")
    publish(client, "2.1.0", b"v21")
    Device(client, ["fleet"])
    Device(client, ["fleet", "lab"])
    Device(client, ["other"])
    first = _create(client, release="denoiser@2.0.0", group="fleet")

    r = client.post("/api/v1/rollouts", json={"release": "denoiser@2.1.0", "group": "lab"})
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert f"rollout {first['id']} of denoiser" in detail
    assert "already covers 1 of these devices" in detail
    assert "abort it first" in detail

    assert (
        client.post(
            "/api/v1/rollouts", json={"release": "denoiser@2.1.0", "group": "other"}
        ).status_code
        == 201
    )
    assert client.post(f"/api/v1/rollouts/{first['id']}/abort").status_code == 200
    assert (
        client.post(
            "/api/v1/rollouts", json={"release": "denoiser@2.1.0", "group": "lab"}
        ).status_code
        == 201
    )
    outside = client.post(
        "/api/v1/rollouts",
        json={"release": "denoiser@2.0.0", "group": "fleet", "field_test_devices": ["dev-x"]},
    )
    assert outside.status_code == 422
    assert "not in target group 'fleet'" in outside.json()["detail"]
    unknown = client.post("/api/v1/rollouts", json={"release": "denoiser@2.0.0", "group": "nope"})
    assert unknown.status_code == 404
    bad_plan = client.post(
        "/api/v1/rollouts",
        json={"release": "denoiser@2.0.0", "group": "fleet", "percentages": [10, 50]},
    )
    assert bad_plan.status_code == 422
    assert "100 percent" in bad_plan.json()["detail"]


def test_device_joining_a_dynamic_group_mid_rollout_gets_it_if_its_phase_started(
    client: TestClient,
) -> None:
    release = publish(client, "2.0.0", b"v2")
    group = client.post(
        "/api/v1/groups", json={"name": "eu", "filter": {"region": "eu-west"}}
    ).json()
    assert group["kind"] == "dynamic"
    early = [Device(client, []) for _ in range(2)]
    for d in early:
        client.put(f"/api/v1/devices/{d.id}/tags", json={"tags": ["region=eu-west"]})
    stranger = Device(client, [])
    client.put(f"/api/v1/devices/{stranger.id}/tags", json={"tags": ["region=us-east"]})
    # The soak holds the first phase even if none of these devices fell into it.
    rollout = _create(client, release=release["id"], group="eu", percentages=[50, 100], soak_s=SOAK)
    plan = RolloutPlan.staged(rollout["seed"], (50, 100))
    t = utcnow() + timedelta(seconds=1)
    tick(client, t)
    assert _told(early) == {d.id for d in early if phase_of(plan, d.id) == 0}

    # Join until there is a device for the started phase and one for the next.
    joiners: list[Device] = []
    while len({phase_of(plan, d.id) for d in joiners}) < 2:
        d = Device(client, [])
        client.put(f"/api/v1/devices/{d.id}/tags", json={"tags": ["region=eu-west", "site=3"]})
        joiners.append(d)
    tick(client, t + timedelta(seconds=1))
    assert _told(joiners) == {d.id for d in joiners if phase_of(plan, d.id) == 0}
    assert stranger.desired_version() is None
    assert _get(client, rollout["id"])["target_devices"] == len(early) + len(joiners)
    members = client.get("/api/v1/groups/eu/devices").json()
    assert {m["id"] for m in members} == {d.id for d in early + joiners}
    assert members[0]["tags"][0].startswith("region=eu-west")


def test_dynamic_group_filters_and_name_rules(client: TestClient) -> None:
    a, b = Device(client, ["lab"]), Device(client, ["lab"])
    inventory = {
        "hardware_class": "x86-64",
        "ram_total_mb": 1,
        "model_ram_budget_mb": 1,
        "disk_free_mb": 1,
        "components": {"denoiser": {"version": "1.4.0", "release_id": "rel-a"}},
    }
    r = client.put(f"/api/v1/devices/{a.id}/inventory", json=inventory, headers=a.headers)
    assert r.status_code == 204
    created = client.post(
        "/api/v1/groups",
        json={
            "name": "old-denoisers",
            "filter": {"installed": {"denoiser": ">=1.0.0,<2.0.0"}, "hardware_class": ["x86-64"]},
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["devices"] == 1
    groups = {g["name"]: g for g in client.get("/api/v1/groups").json()}
    assert groups["lab"] == {
        "name": "lab",
        "kind": "static",
        "filter": None,
        "devices": 2,
        "created_at": None,
    }
    assert groups["old-denoisers"]["kind"] == "dynamic"

    assert client.post("/api/v1/groups", json={"name": "lab", "filter": {}}).status_code == 409
    r = client.put(f"/api/v1/devices/{b.id}/groups", json={"groups": ["old-denoisers"]})
    assert r.status_code == 409
    assert "dynamic group" in r.json()["detail"]
    bad = client.post(
        "/api/v1/groups", json={"name": "x", "filter": {"installed": {"denoiser": ">=two"}}}
    )
    assert bad.status_code == 422
    bad_tag = client.put(f"/api/v1/devices/{b.id}/tags", json={"tags": ["no-equals-sign"]})
    assert bad_tag.status_code == 422
    static = client.post("/api/v1/groups", json={"name": "pilots", "devices": [b.id]})
    assert static.status_code == 201
    assert static.json() == {
        "name": "pilots",
        "kind": "static",
        "filter": None,
        "devices": 1,
        "created_at": None,
    }
    assert client.delete("/api/v1/groups/old-denoisers").status_code == 204
    assert client.get("/api/v1/groups/old-denoisers").status_code == 404


def test_fleet_rollback_republishes_the_previous_content_higher(
    client: TestClient, signer: RecordingSigner
) -> None:
    v1 = publish(client, "1.0.0", b"good weights")
    v2 = publish(client, "2.0.0", b"bad weights")
    publish(client, "2.1.0", b"unrelated")  # the highest version, never rolled out
    fleet = [Device(client, ["fleet"]) for _ in range(3)]
    bystander = Device(client, ["lab"])
    rollout = _create(client, release=v2["id"], group="fleet", percentages=[100])
    t = utcnow() + timedelta(seconds=1)
    tick(client, t)
    assert _told(fleet) == {d.id for d in fleet}
    fleet[0].report("committed", v2)

    r = client.post(f"/api/v1/rollouts/{rollout['id']}/rollback")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rolling_back"
    back_id = r.json()["rolled_back_by"]
    assert back_id is not None

    back = _get(client, back_id)
    assert back["version"] == "2.1.1"
    assert back["rollback_of"] == rollout["id"]
    assert back["status"] == "running"
    assert back["phases"][0]["told"] == 3
    republished = client.get(f"/api/v1/releases/{back['release_id']}").json()
    assert [f["sha256"] for f in republished["files"]] == [f["sha256"] for f in v1["files"]]
    assert republished["id"] not in (v1["id"], v2["id"])
    assert signer.signed[-1][0] == "denoiser/2.1.1/model.onnx"
    assert signer.signed[-1][2] == v1["files"][0]["sha256"]
    assert _told(fleet, "2.1.1") == {d.id for d in fleet}
    assert bystander.desired_version() is None

    again = client.post(f"/api/v1/rollouts/{rollout['id']}/rollback")
    assert again.status_code == 409
    assert "rolling_back" in again.json()["detail"]


def test_rollback_needs_an_earlier_release(client: TestClient) -> None:
    v1 = publish(client, "1.0.0", b"first")
    Device(client, ["fleet"])
    rollout = _create(client, release=v1["id"], group="fleet", percentages=[100])
    tick(client, utcnow() + timedelta(seconds=1))
    r = client.post(f"/api/v1/rollouts/{rollout['id']}/rollback")
    assert r.status_code == 409
    assert "nothing to roll back to" in r.json()["detail"]
    assert _get(client, rollout["id"])["status"] == "running"


def test_group_change_keeps_a_rollouts_release_over_an_older_deployment(
    client: TestClient,
) -> None:
    publish(client, "1.0.0", b"v1")
    publish(client, "2.0.0", b"v2")
    d = Device(client, ["fleet"])
    client.post("/api/v1/deployments", json={"release": "denoiser@1.0.0", "group": "fleet"})
    assert d.desired_version() == "1.0.0"
    _create(client, release="denoiser@2.0.0", group="fleet", percentages=[100])
    tick(client, utcnow() + timedelta(seconds=1))
    assert d.desired_version() == "2.0.0"
    client.put(f"/api/v1/devices/{d.id}/groups", json={"groups": ["fleet", "extra"]})
    assert d.desired_version() == "2.0.0"


def test_resent_or_late_events_never_move_a_device_back(client: TestClient) -> None:
    release = publish(client, "2.0.0", b"v2")
    d = Device(client, ["fleet"])
    rollout = _create(client, release=release["id"], group="fleet", percentages=[100])
    tick(client, utcnow() + timedelta(seconds=1))
    d.report("committed", release)
    late = {
        "seq": 0,
        "time": "2026-01-01T00:00:00Z",
        "event": "update_found",
        "component": "denoiser",
        "state": "downloading",
        "release_id": release["id"],
        "version": "2.0.0",
    }
    client.post(f"/api/v1/devices/{d.id}/events", json={"events": [late]}, headers=d.headers)
    assert _get(client, rollout["id"])["phases"][0]["updated"] == 1


def test_concurrent_passes_apply_one_decision_once(client: TestClient) -> None:
    publish(client, "2.0.0", b"v2")
    fleet = [Device(client, ["fleet"]) for _ in range(3)]
    rollout = _create(
        client,
        release="denoiser@2.0.0",
        group="fleet",
        field_test_devices=[fleet[0].id],
        percentages=[100],
    )
    revision_before = fleet[0].desired()["revision"]
    now = utcnow() + timedelta(seconds=1)
    sessions = app_context(client).sessions
    with session_scope(sessions) as first, session_scope(sessions) as second:
        # Both processes read the same state before either writes.
        a = rollout_loop.evaluate(first, rollout["id"], now)
        b = rollout_loop.evaluate(second, rollout["id"], now)
        assert a is not None and b is not None
        assert a.changes and b.changes
        assert rollout_loop.apply(first, a, now)
        first.commit()
        assert not rollout_loop.apply(second, b, now), "the stale decision was applied too"

    assert fleet[0].desired()["revision"] == revision_before + 1
    assert _get(client, rollout["id"])["state_version"] == 1
    with session_scope(sessions) as session:
        rows = session.scalar(
            select(func.count())
            .select_from(RolloutDevice)
            .where(RolloutDevice.rollout_id == rollout["id"])
        )
    assert rows == 1
    assert tick(client, now) == [], "an applied decision was applied again"


def test_device_drifting_into_a_second_rollouts_group_stays_with_the_first(
    client: TestClient,
) -> None:
    publish(client, "2.0.0", b"v2")
    publish(client, "2.1.0", b"v21")
    client.post("/api/v1/groups", json={"name": "eu", "filter": {"region": "eu"}})
    d = Device(client, ["lab"])
    _create(client, release="denoiser@2.1.0", group="eu", percentages=[100], soak_s=SOAK)
    _create(client, release="denoiser@2.0.0", group="lab", percentages=[100], soak_s=SOAK)
    t = utcnow() + timedelta(seconds=1)
    tick(client, t)
    assert d.desired_version() == "2.0.0"
    client.put(f"/api/v1/devices/{d.id}/tags", json={"tags": ["region=eu"]})
    tick(client, t + timedelta(seconds=1))
    assert d.desired_version() == "2.0.0", "a second rollout pulled a device from the first"


def test_background_pass_runs_each_due_rollout(client: TestClient) -> None:
    publish(client, "2.0.0", b"v2")
    d = Device(client, ["fleet"])
    _create(client, release="denoiser@2.0.0", group="fleet", percentages=[100])
    later = utcnow() + timedelta(seconds=1)
    rollout_loop.run_due(app_context(client).sessions, lambda: later)
    assert d.desired_version() == "2.0.0"


def test_cli_status_shows_phases_gate_and_halt_reason(client: TestClient) -> None:
    from edgeota.cli import rollout as cli
    from edgeota.cli.common import out

    release = publish(client, "2.0.0", b"v2")
    fleet = [Device(client, ["fleet"]) for _ in range(2)]
    rollout = _create(
        client,
        release=release["id"],
        group="fleet",
        field_test_devices=[fleet[0].id],
        percentages=[100],
        max_failed=0,
        soak_s=60,
    )
    t = utcnow() + timedelta(seconds=1)
    tick(client, t)
    fleet[0].report("rolled_back", release)
    tick(client, t + timedelta(seconds=1))
    with out.capture() as captured:
        cli.print_rollout(_get(client, rollout["id"]))
    text = captured.get()
    assert "halted" in text
    assert "field-test" in text
    assert "advance at 95% updated, halt above 0 devices or 5% failed, soak 60 s" in text
    assert cli.parse_duration("2h") == 7200
    assert cli.parse_duration("90") == 90
    assert cli.parse_percentages("1, 10,50,100") == [1, 10, 50, 100]


def test_devices_the_release_does_not_fit_are_not_targeted(client: TestClient) -> None:
    data = b"arm only"
    sha = hashlib.sha256(data).hexdigest()
    client.put(f"/api/v1/artifacts/{sha}", content=data)
    file = {"file": "m.onnx", "role": "model", "sha256": sha, "length": len(data)}
    r = client.post(
        "/api/v1/releases",
        json={"component": "denoiser", "version": "2.0.0", "files": [file], "hardware": ["arm"]},
    )
    assert r.status_code == 201, r.text
    d = Device(client, ["fleet"])  # enrolled as x86-64
    rollout = _create(client, release="denoiser@2.0.0", group="fleet", percentages=[100])
    assert rollout["target_devices"] == 0
    tick(client, utcnow() + timedelta(seconds=1))
    assert d.desired_version() is None
    assert _get(client, rollout["id"])["status"] == "completed"


def test_a_download_the_device_retries_does_not_count_as_a_failure(client: TestClient) -> None:
    """A network drop fails a download the agent will retry: not a failed device; a
    download that failed for good (tampered bytes, say) is one."""
    release = publish(client, "2.0.0", b"v2")
    fleet = [Device(client, ["fleet"]) for _ in range(2)]
    rollout = _create(
        client,
        release="denoiser@2.0.0",
        group="fleet",
        field_test_devices=[fleet[0].id, fleet[1].id],
        percentages=[100],
        max_failed=0,
        max_failed_share=None,
    )
    t = utcnow() + timedelta(seconds=1)
    tick(client, t)
    fleet[0].report("download_failed", release, detail={"will_retry": True})
    tick(client, t + timedelta(seconds=1))
    assert _get(client, rollout["id"])["status"] == "running"
    fleet[1].report("download_failed", release, detail={"will_retry": False})
    tick(client, t + timedelta(seconds=2))
    halted = _get(client, rollout["id"])
    assert halted["status"] == "halted" and "failure threshold" in halted["halt_reason"]
