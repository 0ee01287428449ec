"""Device users' feedback through the API: validation, aggregation, and halting a rollout."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from apitools import (
    ApiDevice,
    app_context,
    get_json,
    hand_ticked_settings,
    make_client,
    publish,
    tick,
)
from edgeota.rollout import Decision, PhaseCounts, RolloutState, RolloutStatus, SetDesired
from edgeota.server import feedback_gate
from edgeota.server.db import session_scope
from edgeota.server.services import feedback
from edgeota.timeutil import utcnow


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    yield from make_client(hand_ticked_settings(tmp_path, database_url))


def test_feedback_is_validated_and_stored_once(client: TestClient) -> None:
    device = ApiDevice(client, ["lab"])
    release = publish(client, "1.0.0", b"v1")
    url = f"/api/v1/devices/{device.id}/feedback"
    good = {"client_id": "report-0001", "release_id": release["id"], "rating": 4, "comment": " ok "}
    first = client.post(url, json=good, headers=device.headers)
    assert first.status_code == 201, first.text
    assert first.json()["comment"] == "ok"
    again = client.post(url, json={**good, "rating": 1}, headers=device.headers)
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.json()["rating"] == 4

    def status(**change: object) -> int:
        return client.post(url, json={**good, **change}, headers=device.headers).status_code

    assert status(rating=0) == 422
    assert status(rating=6) == 422
    assert status(comment="x" * 1001) == 422
    assert status(client_id="report-0002", comment="y" * 1000) == 201
    assert status(client_id="report-0003", prompt="what the user typed") == 422  # no user data
    assert status(client_id="report-0004", release_id="rel-unknown") == 404


def test_a_device_may_give_feedback_only_as_itself(client: TestClient) -> None:
    a, b = ApiDevice(client, ["lab"]), ApiDevice(client, ["lab"])
    release = publish(client, "1.0.0", b"v1")
    body = {"client_id": "report-0001", "release_id": release["id"], "rating": 5}
    r = client.post(f"/api/v1/devices/{b.id}/feedback", json=body, headers=a.headers)
    assert r.status_code == 403
    assert client.post(f"/api/v1/devices/{a.id}/feedback", json=body).status_code == 403  # admin
    r = client.get(f"/api/v1/releases/{release['id']}/feedback", headers=a.headers)
    assert r.status_code == 403


def test_feedback_is_summed_per_release_and_rollout_by_each_devices_newest_rating(
    client: TestClient,
) -> None:
    fleet = [ApiDevice(client, ["fleet"]) for _ in range(3)]
    release = publish(client, "2.0.0", b"v2")
    r = client.post(
        "/api/v1/rollouts",
        json={"release": release["id"], "group": "fleet", "percentages": [100], "max_failed": 1},
    )
    assert r.status_code == 201, r.text
    rollout_id = r.json()["id"]
    tick(client, utcnow())
    assert fleet[0].feedback(release, 1, "slower than before").status_code == 201
    assert fleet[0].feedback(release, 4, "fine after a restart").status_code == 201  # changed mind
    assert fleet[1].feedback(release, 2).status_code == 201
    assert fleet[2].feedback(release, 5, "sharper images").status_code == 201

    body = get_json(client, f"/api/v1/releases/{release['id']}/feedback")
    assert body["total"]["count"] == 3
    assert body["total"]["ratings"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}
    assert body["total"]["negative"] == 1
    assert body["total"]["average"] == pytest.approx(11 / 3, abs=0.01)
    [by_rollout] = body["by_rollout"]
    assert by_rollout["rollout_id"] == rollout_id and by_rollout["count"] == 3
    assert [f["comment"] for f in body["recent"]][:2] == ["sharper images", ""]
    same = get_json(client, "/api/v1/releases/denoiser@2.0.0/feedback")
    assert same["total"] == body["total"]
    with session_scope(app_context(client).sessions) as session:  # the dashboard's list
        listed = feedback.counts_by_release(session)
    assert listed[release["id"]].model_dump() == body["total"]


def test_negative_feedback_halts_a_rollout_and_says_why(client: TestClient) -> None:
    fleet = [ApiDevice(client, ["fleet"]) for _ in range(4)]
    release = publish(client, "2.0.0", b"v2")
    r = client.post(
        "/api/v1/rollouts",
        json={
            "release": release["id"],
            "group": "fleet",
            "percentages": [100],
            "max_failed": 2,
            "soak_s": 3600,  # keeps it running while the feedback comes in
            "max_negative_feedback_share": 0.4,
            "feedback_min_count": 3,
        },
    )
    assert r.status_code == 201, r.text
    rollout_id = r.json()["id"]
    assert r.json()["max_negative_feedback_share"] == 0.4
    now = utcnow()
    tick(client, now)
    for device in fleet:
        device.report("committed", release)
    fleet[0].feedback(release, 1, "the output is noisy")
    fleet[1].feedback(release, 2)
    tick(client, now + timedelta(seconds=1))
    assert get_json(client, f"/api/v1/rollouts/{rollout_id}")["status"] == "running"  # 2 < 3

    fleet[2].feedback(release, 5)  # 2 of 3 negative: above 40 %
    tick(client, now + timedelta(seconds=2))
    rollout = get_json(client, f"/api/v1/rollouts/{rollout_id}")
    assert rollout["status"] == "halted"
    assert "negative feedback: 2 of 3 devices" in rollout["halt_reason"]
    halted = get_json(client, "/api/v1/audit", action="rollout.halted")
    assert halted[0]["target_id"] == str(rollout_id)
    assert halted[0]["details"]["reason"] == rollout["halt_reason"]

    # An operator who resumes accepts the feedback so far; only new feedback counts.
    assert client.post(f"/api/v1/rollouts/{rollout_id}/resume").status_code == 200
    tick(client, now + timedelta(seconds=3))
    assert get_json(client, f"/api/v1/rollouts/{rollout_id}")["status"] == "running"
    fleet[3].feedback(release, 1)  # 1 of 1 new rating is negative, but 3 are needed
    tick(client, now + timedelta(seconds=4))
    assert get_json(client, f"/api/v1/rollouts/{rollout_id}")["status"] == "running"


def _running(version: int = 3) -> RolloutState:
    start = utcnow()
    return RolloutState(RolloutStatus.RUNNING, start, (start,), version=version)


def _decision(state: RolloutState, tell: tuple[str, ...] = ()) -> Decision:
    actions = (SetDesired(tell),) if tell else ()
    return Decision(state, actions, frozenset({"a", "b", *tell}), (PhaseCounts(3, 2, 0),))


def test_gate_halts_the_rollout_as_read_and_tells_no_new_device() -> None:
    state = _running()
    decided = _decision(dataclasses.replace(state, version=4), tell=("c",))
    halted = feedback_gate.gate(state, decided, {"a": 1, "b": 2, "c": 5}, 0.5, 2)
    assert halted.state.status is RolloutStatus.HALTED
    assert halted.state.version == state.version + 1
    assert halted.newly_eligible == ()
    assert halted.eligible == frozenset({"a", "b"})
    assert halted.state.halt_reason is not None
    assert "2 of 3 devices" in halted.state.halt_reason


def test_gate_leaves_decisions_alone_within_the_limit_or_below_the_minimum() -> None:
    state = _running()
    decided = _decision(state)
    assert feedback_gate.gate(state, decided, {"a": 1, "b": 5}, 0.5, 1) is decided  # 50 %
    assert feedback_gate.gate(state, decided, {"a": 1}, 0.1, 2) is decided  # too few
    assert feedback_gate.gate(state, decided, {}, 0.0, 1) is decided
    paused = RolloutState(RolloutStatus.PAUSED, state.start_at, state.phase_started_at)
    assert feedback_gate.gate(paused, _decision(paused), {"a": 1}, 0.0, 1).state is paused
