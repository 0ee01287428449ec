"""A notice wakes the agent at once: ``Agent.wake`` and the long-poll notice listener."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx

from edgeota.agent.config import AgentConfig
from edgeota.agent.download import Downloader
from edgeota.agent.driver import FakeDriver
from edgeota.agent.journal import Identity
from edgeota.agent.notices import NoticeListener
from edgeota.agent.reconcile import Agent
from edgeota.agent.reporting import AgentStatus, ReportingClient
from edgeota.procs import wait_until
from edgeota.targets import VerifiedTarget


class FakeServer:
    """The device API: the desired state changes when ``revision`` does."""

    def __init__(self) -> None:
        self.revision = 1
        self.checkins = 0
        self.changed = threading.Condition()
        self.lock = threading.Lock()

    def etag(self) -> str:
        return f'"{self.revision}-3600"'

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/enroll":
            return httpx.Response(201, json={"device_id": "dev-1", "credential": "dev-1.s"})
        if path.endswith("/notices"):
            return httpx.Response(200, json={"mqtt": None, "long_poll_max_s": 30})
        if path.endswith("/desired-state"):
            return self._desired(request)
        if path.endswith("/events"):
            seqs = [e["seq"] for e in json.loads(request.content)["events"]]
            return httpx.Response(200, json={"accepted_through": max(seqs)})
        return httpx.Response(204)

    def _desired(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.checkins += 1
        wait = float(request.url.params.get("wait", "0"))
        with self.changed:
            if request.headers.get("if-none-match") == self.etag():
                self.changed.wait_for(
                    lambda: request.headers.get("if-none-match") != self.etag(), timeout=wait
                )
            if request.headers.get("if-none-match") == self.etag():
                return httpx.Response(304)
            body = {"revision": self.revision, "poll_interval_s": 3600, "components": {}}
            return httpx.Response(200, json=body, headers={"ETag": self.etag()})

    def change(self) -> None:
        with self.changed:
            self.revision += 1
            self.changed.notify_all()


class NoTrust:
    def refresh(self) -> None:
        pass

    def get_target(self, path: str) -> VerifiedTarget:
        raise AssertionError(f"nothing is desired, yet {path} was looked up")


def _agent(tmp_path: Path, server: FakeServer) -> Agent:
    config = AgentConfig(
        server_url="http://127.0.0.1:1",
        data_dir=tmp_path,
        hardware_class="x86-64",
        enroll_token="eoe_token",
        poll_interval_s=3600.0,
    )
    http = httpx.Client(transport=httpx.MockTransport(server))
    return Agent(
        config,
        api=ReportingClient(config.server_url, http),
        trust=NoTrust(),
        drivers=lambda _name: FakeDriver(),
        health=lambda *_: None,  # type: ignore[arg-type,return-value]
        fetcher=Downloader(http, config.downloads_dir),
    )


def test_wake_starts_the_next_pass_without_waiting_for_the_poll_interval(
    tmp_path: Path,
) -> None:
    server = FakeServer()
    agent = _agent(tmp_path, server)
    thread = threading.Thread(target=agent.run_forever)
    thread.start()
    try:
        wait_until(lambda: server.checkins == 1, 10, interval_s=0.02, what="the first check-in")
        agent.wake()
        wait_until(lambda: server.checkins == 2, 5, interval_s=0.02, what="a check-in on wake")
        agent.wake()
        wait_until(lambda: server.checkins == 3, 5, interval_s=0.02, what="another one")
    finally:
        agent.stop()
        thread.join(10)
    assert not thread.is_alive()  # stop() ends the hour-long wait at once too


def test_long_poll_listener_wakes_the_agent_when_the_desired_state_changes(
    tmp_path: Path,
) -> None:
    server = FakeServer()
    http = httpx.Client(transport=httpx.MockTransport(server))
    woken = threading.Event()
    status = AgentStatus()
    listener = NoticeListener(
        ReportingClient("http://127.0.0.1:1", http),
        lambda: Identity("dev-1", "dev-1.s"),
        woken.set,
        status=status,
        ca_file=None,
        long_poll_s=20,
    )
    listener.start()
    try:
        wait_until(lambda: server.checkins >= 2, 10, interval_s=0.02, what="the listener waits")
        assert not woken.is_set()  # learning the current ETag is no notice
        server.change()
        assert woken.wait(5)
        assert listener.channel == "long_poll"
        assert status.snapshot().notices["long_poll"] == 1
    finally:
        listener.stop()
        server.change()  # ends the pending long-poll
        listener.join(5)


def test_the_listener_waits_for_the_device_to_be_enrolled(tmp_path: Path) -> None:
    asked: list[Any] = []
    listener = NoticeListener(
        ReportingClient(
            "http://127.0.0.1:1", httpx.Client(transport=httpx.MockTransport(asked.append))
        ),  # type: ignore[arg-type]
        lambda: None,
        lambda: None,
        status=AgentStatus(),
        ca_file=None,
    )
    listener.start()
    listener.stop()
    listener.join(5)
    assert asked == []
