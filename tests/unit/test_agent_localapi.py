"""The agent's local API (the device user's side, /metrics) and what feeds it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeota.agent import agentlog
from edgeota.agent.api_client import DesiredComponent, DesiredState
from edgeota.agent.config import AgentConfig
from edgeota.agent.feedback_outbox import FeedbackOutbox
from edgeota.agent.journal import ComponentRecord, Identity, Journal, ReleaseRef
from edgeota.agent.localapi import LocalApi, LocalApiServer, start_local_api
from edgeota.agent.reporting import AgentStatus, ReportingClient
from edgeota.agent.schedule import Schedule, SwitchWait, pending_requests
from edgeota.agent.statemachine import State
from edgeota.errors import TransportError
from edgeota.procs import wait_until
from edgeota.rollout.windows import MaintenanceWindow

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday, outside the 02:00 window


@dataclass
class FakeAgent:
    config: AgentConfig
    journal: Journal
    desired: DesiredState | None = None
    woken: threading.Event = field(default_factory=threading.Event)

    def wake(self) -> None:
        self.woken.set()


def _desired(policy: str = "window", max_deferrals: int = 2) -> DesiredState:
    schedule = Schedule((MaintenanceWindow("0 2 * * *", 3600, "UTC"),), max_deferrals, "UTC")
    return DesiredState(
        revision=3,
        poll_interval_s=30,
        components={
            "denoiser": DesiredComponent(
                "rel-v2",
                "2.0.0",
                ("denoiser/2.0.0/model.onnx",),
                switch_policy=policy,
                size_bytes=123456,
            ),
            "app": DesiredComponent("rel-app1", "1.0.0", ("app/1.0.0/app.bin",)),
        },
        etag='"3-30"',
        schedule=schedule,
    )


@pytest.fixture
def agent(tmp_path: Path) -> FakeAgent:
    config = AgentConfig(server_url="http://127.0.0.1:1", data_dir=tmp_path, hardware_class="x")
    journal = Journal(config.journal_path)
    journal.identity = Identity("dev-1", "dev-1.secret")
    journal.components["denoiser"] = ComponentRecord(
        committed_slot="a", committed=ReleaseRef("1.0.0", "rel-v1")
    )
    journal.components["app"] = ComponentRecord(
        committed_slot="a", committed=ReleaseRef("1.0.0", "rel-app1")
    )
    return FakeAgent(config, journal, _desired())


@dataclass
class Served:
    url: str
    api: LocalApi
    sent: list[dict[str, Any]]


@pytest.fixture
def served(agent: FakeAgent, tmp_path: Path) -> Iterator[Served]:
    outbox = FeedbackOutbox(tmp_path / "feedback-outbox.json")
    sent: list[dict[str, Any]] = []
    api = LocalApi(
        agent,
        AgentStatus(),
        outbox,
        send_feedback=lambda: outbox.flush(sent.append),
        now=lambda: NOW,
    )
    server = start_local_api(api, "127.0.0.1", 0)
    assert server is not None
    try:
        yield Served(f"http://127.0.0.1:{server.port}", api, sent)
    finally:
        server.shutdown()
        server.server_close()


def test_upcoming_updates_say_what_when_how_big_and_how_long(served: Served) -> None:
    body = httpx.get(f"{served.url}/v1/updates").json()
    [update] = body["updates"]  # the app is installed already
    assert update["component"] == "denoiser"
    assert (update["version"], update["installed_version"]) == ("2.0.0", "1.0.0")
    assert update["size_bytes"] == 123456
    assert update["switch_at"] == "2026-03-03T02:00:00Z"  # the next window
    assert "maintenance window" in update["why"]
    assert update["expected_downtime_s"] > 0
    assert (update["can_defer"], update["deferrals_used"], update["max_deferrals"]) == (True, 0, 2)


def test_a_deferral_request_goes_to_the_agent_within_the_policy(
    served: Served, agent: FakeAgent
) -> None:
    r = httpx.post(f"{served.url}/v1/defer", json={"component": "denoiser"})
    assert r.status_code == 202, r.text
    [request] = pending_requests(agent.config.data_dir, "denoiser")
    assert request.release_id == "rel-v2"
    assert agent.woken.is_set()  # applied at once, not a poll interval later
    assert httpx.post(f"{served.url}/v1/defer", json={"component": "app"}).status_code == 404
    assert httpx.post(f"{served.url}/v1/defer", json={"what": 1}).status_code == 400


def test_used_up_or_urgent_updates_cannot_be_deferred(served: Served, agent: FakeAgent) -> None:
    agent.journal.components["denoiser"].wait = SwitchWait(
        "rel-v2", policy="window", known=True, deferrals_used=2
    )
    r = httpx.post(f"{served.url}/v1/defer", json={"component": "denoiser"})
    assert r.status_code == 409 and "deferrals are used" in r.json()["error"]
    agent.desired = _desired(policy="now")
    r = httpx.post(f"{served.url}/v1/defer", json={"component": "denoiser"})
    assert r.status_code == 409 and "urgent" in r.json()["error"]
    assert pending_requests(agent.config.data_dir, "denoiser") == []


def test_feedback_is_checked_queued_and_forwarded(served: Served) -> None:
    url = f"{served.url}/v1/feedback"
    r = httpx.post(url, json={"component": "denoiser", "rating": 2, "comment": "  too slow "})
    assert r.status_code == 202, r.text
    assert r.json()["release_id"] == "rel-v1"  # the installed release of the component
    r = httpx.post(url, json={"release_id": "rel-v2", "rating": 5})
    assert r.status_code == 202
    for bad in (
        {"component": "denoiser", "rating": 0},
        {"component": "denoiser", "rating": True},
        {"component": "denoiser", "rating": 3, "comment": "x" * 1001},
        {"component": "denoiser", "rating": 3, "input": [1, 2, 3]},  # never model inputs
        {"rating": 3},
    ):
        assert httpx.post(url, json=bad).status_code == 400, bad
    assert httpx.post(url, content=b"not json", headers={"Content-Length": "8"}).status_code == 400

    wait_until(lambda: len(served.sent) == 2, 10, interval_s=0.05, what="feedback forwarded")
    assert [(s["release_id"], s["rating"], s["comment"]) for s in served.sent] == [
        ("rel-v1", 2, "too slow"),
        ("rel-v2", 5, ""),
    ]
    assert set(served.sent[0]) == {"client_id", "release_id", "rating", "comment", "time"}
    assert served.api.outbox.pending() == []


def test_feedback_waits_in_the_outbox_while_the_server_is_away(tmp_path: Path) -> None:
    outbox = FeedbackOutbox(tmp_path / "outbox.json")
    report = outbox.add("rel-v1", 4, "")

    def offline(_: Any) -> None:
        raise TransportError("no network")

    assert outbox.flush(offline) == 0
    assert FeedbackOutbox(tmp_path / "outbox.json").pending() == [report]  # survives a restart
    got: list[Any] = []
    assert outbox.flush(got.append) == 1
    assert got == [report] and outbox.pending() == []


def test_metrics_show_state_updates_failures_and_check_in_age(
    served: Served, agent: FakeAgent
) -> None:
    agent.journal.components["denoiser"].state = State.DOWNLOADING
    status = served.api.status
    status.checkin("changed")
    status.checkin("failed")
    status.observe(
        [
            {
                "seq": 1,
                "event": "switched",
                "component": "app",
                "release_id": "r",
                "time": "2026-01-01T00:00:00Z",
            },
            {
                "seq": 2,
                "event": "committed",
                "component": "app",
                "release_id": "r",
                "time": "2026-01-01T00:00:07Z",
            },
            {"seq": 3, "event": "rolled_back", "component": "denoiser", "release_id": "q"},
            {
                "seq": 3,
                "event": "rolled_back",
                "component": "denoiser",
                "release_id": "q",
            },  # resent
        ]
    )
    r = httpx.get(f"{served.url}/metrics")
    assert r.status_code == 200
    # The agent's own memory: this process's, between a few MiB and the machine's RAM.
    memory = {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(r.text)
        if family.name.endswith("resident_memory_bytes")
    }
    assert set(memory) == {
        "edgeota_agent_resident_memory_bytes",
        "edgeota_agent_peak_resident_memory_bytes",
    }
    assert memory["edgeota_agent_resident_memory_bytes"] > 4 * 2**20
    assert (
        memory["edgeota_agent_resident_memory_bytes"]
        <= (memory["edgeota_agent_peak_resident_memory_bytes"])
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    assert (
        samples[
            ("edgeota_agent_component_state", (("component", "denoiser"), ("state", "downloading")))
        ]
        == 1
    )
    assert (
        samples[("edgeota_agent_component_state", (("component", "denoiser"), ("state", "idle")))]
        == 0
    )
    assert (
        samples[("edgeota_agent_updates_total", (("component", "app"), ("outcome", "committed")))]
        == 1
    )
    assert (
        samples[
            ("edgeota_agent_failures_total", (("component", "denoiser"), ("reason", "rolled_back")))
        ]
        == 1
    )
    assert samples[("edgeota_agent_checkins_total", (("result", "failed"),))] == 1
    assert 0 <= samples[("edgeota_agent_last_checkin_age_seconds", ())] < 60
    assert status.snapshot().downtime_s == {"app": 7.0}


def test_a_busy_port_leaves_the_agent_without_a_local_api(served: Served) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    assert start_local_api(served.api, "127.0.0.1", port) is None
    other = LocalApiServer(("127.0.0.1", 0), served.api)  # any free port does
    other.server_close()


# -- the reporting client -----------------------------------------------------------------
class RecordingServer:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.endswith("/events"):
            events = json.loads(request.content)["events"]
            return httpx.Response(200, json={"accepted_through": max(e["seq"] for e in events)})
        if path.endswith("/logs"):
            return httpx.Response(201, json={"id": 1})
        if path.endswith("/desired-state"):
            if request.headers.get("if-none-match") == '"7-30"':
                return httpx.Response(304)
            body = {"revision": 7, "poll_interval_s": 30, "components": {}}
            return httpx.Response(200, json=body, headers={"ETag": '"7-30"'})
        return httpx.Response(404)


def _client(tmp_path: Path, server: RecordingServer) -> ReportingClient:
    http = httpx.Client(transport=httpx.MockTransport(server))
    client = ReportingClient("http://server", http, data_dir=tmp_path, log_cap_bytes=2048)
    client.set_identity("dev-1", "dev-1.secret")
    return client


def test_a_failed_update_uploads_the_tail_of_the_log_once(tmp_path: Path) -> None:
    log = agentlog.log_path(tmp_path)
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i} of the agent log\n" for i in range(1000)))
    agentlog.runtime_log_path(tmp_path, "denoiser").write_text("runtime: NaN in output\n")
    server = RecordingServer()
    client = _client(tmp_path, server)
    event = {
        "seq": 5,
        "event": "rolled_back",
        "component": "denoiser",
        "release_id": "rel-v2",
        "state": "idle",
    }
    client.post_events([event, {**event, "seq": 6, "event": "update_found"}])
    client.post_events([{**event, "seq": 7}])  # the same failure again: no second upload
    uploads = [r for r in server.requests if r.url.path.endswith("/logs")]
    assert len(uploads) == 1
    upload = uploads[0]
    assert upload.url.path == "/api/v1/devices/dev-1/logs"
    assert upload.url.params["release_id"] == "rel-v2"
    assert upload.url.params["event"] == "rolled_back"
    text = upload.content.decode()
    assert len(upload.content) <= 2048
    assert text.startswith("line ") and "line 999 of the agent log" in text
    assert text.endswith("runtime: NaN in output\n")
    assert client.status.snapshot().updates[("denoiser", "rolled_back")] == 2


def test_long_poll_returns_the_new_etag_or_none(tmp_path: Path) -> None:
    server = RecordingServer()
    client = _client(tmp_path, server)
    assert client.wait_for_change(None, 20) == '"7-30"'
    assert client.wait_for_change('"7-30"', 20) is None
    assert server.requests[-1].url.params["wait"] == "20"


def test_the_device_user_commands_talk_to_the_local_api(served: Served) -> None:
    from typer.testing import CliRunner

    from edgeota.cli.main import app

    runner = CliRunner()
    shown = runner.invoke(
        app, ["agent", "updates", "--agent-api", served.url], env={"COLUMNS": "200"}
    )
    assert shown.exit_code == 0, shown.output
    assert "denoiser" in shown.output and "2.0.0" in shown.output and "0.1 MiB" in shown.output
    given = runner.invoke(
        app,
        [
            "agent",
            "feedback",
            "--component",
            "denoiser",
            "--rating",
            "4",
            "--agent-api",
            served.url,
        ],
    )
    assert given.exit_code == 0, given.output
    assert "rel-v1" in given.output
    refused = runner.invoke(app, ["agent", "feedback", "--rating", "4", "--agent-api", served.url])
    assert refused.exit_code == 1
