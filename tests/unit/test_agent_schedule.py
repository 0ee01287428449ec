"""Switching only inside maintenance windows, "now" policies, and the user's deferrals.

The agent runs against in-memory fakes of the server and TUF, with real downloads through
httpx.MockTransport, real slots and journal on disk, and a clock the test moves.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edgeota.agent import schedule
from edgeota.agent.api_client import DesiredComponent, DesiredState
from edgeota.agent.config import AgentConfig
from edgeota.agent.download import Downloader, DownloadLimits
from edgeota.agent.driver import FakeDriver, RuntimeDriver
from edgeota.agent.journal import Journal
from edgeota.agent.reconcile import Agent
from edgeota.agent.schedule import Schedule, switch_verdict
from edgeota.agent.statemachine import State
from edgeota.errors import PolicyError, TransportError
from edgeota.rollout.windows import MaintenanceWindow
from edgeota.targets import TargetCustom, VerifiedTarget

COMPONENT = "denoiser"
DAY0 = datetime(2027, 1, 4, 0, 0, tzinfo=UTC)  # a Monday
NIGHTLY = MaintenanceWindow("0 2 * * *", 3600, "UTC")  # 02:00-03:00 UTC


# -- pure verdicts -------------------------------------------------------------------------
def test_now_policy_switches_outside_any_window() -> None:
    verdict = switch_verdict("now", Schedule((NIGHTLY,)), None, DAY0)
    assert verdict.switch


def test_window_policy_waits_for_the_next_start() -> None:
    verdict = switch_verdict("window", Schedule((NIGHTLY,)), None, DAY0)
    assert not verdict.switch
    assert verdict.wait_until == DAY0.replace(hour=2)
    assert switch_verdict("window", Schedule((NIGHTLY,)), None, DAY0.replace(hour=2)).switch


def test_no_windows_means_any_time() -> None:
    assert switch_verdict("window", Schedule(), None, DAY0).switch


def test_margin_keeps_a_switch_out_of_a_closing_window() -> None:
    late = DAY0.replace(hour=2, minute=55)
    assert switch_verdict("window", Schedule((NIGHTLY,)), None, late).switch
    verdict = switch_verdict("window", Schedule((NIGHTLY,)), None, late, margin_s=600)
    assert not verdict.switch
    assert verdict.wait_until == late.replace(minute=0) + timedelta(days=1)


def test_window_across_spring_forward_opens_after_the_jump() -> None:
    """Europe/Berlin skips 02:00-03:00 on 2027-03-28: a 02:30 window opens at 03:00 CEST."""
    berlin = MaintenanceWindow("30 2 * * *", 3600, "Europe/Berlin")
    before = datetime(2027, 3, 28, 0, 45, tzinfo=UTC)  # 01:45 CET
    verdict = switch_verdict("window", Schedule((berlin,)), None, before)
    assert verdict.wait_until == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert switch_verdict(
        "window", Schedule((berlin,)), None, before + timedelta(minutes=20)
    ).switch


# -- fakes -------------------------------------------------------------------------------
class Repo:
    """Signed targets (the TUF side) and a file server for their bytes."""

    def __init__(self) -> None:
        self.targets: dict[str, VerifiedTarget] = {}
        self.blobs: dict[str, bytes] = {}

    def publish(self, version: str, policy: str = "window") -> DesiredComponent:
        release_id = f"rel-{COMPONENT}-{version}"
        data = f"model {version}".encode() * 50
        path = f"{COMPONENT}/{version}/model.onnx"
        sha = hashlib.sha256(data).hexdigest()
        url = f"http://files.test/{COMPONENT}/{version}/{sha}.model.onnx"
        custom = TargetCustom(COMPONENT, version, release_id, "model", "model.onnx")
        self.targets[path] = VerifiedTarget(path, len(data), sha, custom, url)
        self.blobs[url] = data
        return DesiredComponent(release_id, version, (path,), switch_policy=policy)

    def refresh(self) -> None:
        return None

    def get_target(self, path: str) -> VerifiedTarget:
        try:
            return self.targets[path]
        except KeyError:
            raise PolicyError(f"{path} is not signed") from None

    def handle(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=self.blobs[str(request.url)])


class FakeApi:
    def __init__(self) -> None:
        self.online = True
        self.state = DesiredState(0, 1.0, {}, '"0"')
        self.events: list[dict[str, Any]] = []

    def want(self, component: DesiredComponent, sched: Schedule = schedule.NO_SCHEDULE) -> None:
        rev = self.state.revision + 1
        self.state = DesiredState(rev, 1.0, {COMPONENT: component}, f'"{rev}"', sched)

    def _check(self) -> None:
        if not self.online:
            raise TransportError("network unreachable")

    def set_identity(self, device_id: str, credential: str) -> None:
        return None

    def enroll(self, token: str, name: str, hardware_class: str) -> tuple[str, str]:
        return "dev-1", "cred-1"

    def desired_state(self, etag: str | None) -> DesiredState | None:
        self._check()
        return None if etag == self.state.etag else self.state

    def put_inventory(self, inventory: Any) -> None:
        self._check()

    def post_events(self, events: Any) -> int:
        self._check()
        last = self.events[-1]["seq"] if self.events else 0
        self.events.extend(dict(e) for e in events if e["seq"] > last)
        return int(self.events[-1]["seq"]) if self.events else 0

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


@dataclass
class Device:
    tmp: Path
    now: datetime = DAY0
    repo: Repo = field(default_factory=Repo)
    api: FakeApi = field(default_factory=FakeApi)
    agents: list[Agent] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    def agent(self, **config: Any) -> Agent:
        cfg = AgentConfig(
            server_url="http://127.0.0.1:1",
            data_dir=self.data,
            hardware_class="x86-64-cpu",
            enroll_token="tok",
            disk_reserve_mb=0,
            download=DownloadLimits(max_attempts=1, backoff_initial_s=0.0),
            **config,
        )
        client = httpx.Client(transport=httpx.MockTransport(self.repo.handle))
        fetcher = Downloader(client, cfg.downloads_dir, cfg.download_limits, sleep=lambda _: None)

        def driver(_name: str) -> RuntimeDriver:
            return FakeDriver()

        def healthy(_url: str, _slot: Path, _timeout: float) -> Healthy:
            return Healthy()

        agent = Agent(
            cfg,
            api=self.api,
            trust=self.repo,
            drivers=driver,
            health=healthy,
            fetcher=fetcher,
            now=lambda: self.now,
            rng=random.Random(1),
            measure_free=lambda _p: 10**12,
        )
        self.agents.append(agent)
        return agent

    def restart(self, **config: Any) -> Agent:
        for a in self.agents:
            a.close(stop_runtimes=False)
        return self.agent(**config)

    def at(self, when: datetime) -> Device:
        self.now = when
        return self

    def committed(self) -> str | None:
        rec = Journal.load(self.data / "journal.json").components.get(COMPONENT)
        return None if rec is None or rec.committed is None else rec.committed.version

    def state(self) -> State:
        return Journal.load(self.data / "journal.json").components[COMPONENT].state


@dataclass(frozen=True)
class Healthy:
    ok: bool = True
    reason: str | None = None
    figures: dict[str, float] = field(default_factory=dict)


@pytest.fixture
def dev(tmp_path: Path) -> Any:
    d = Device(tmp_path)
    yield d
    for a in d.agents:
        a.close()


def nightly(max_deferrals: int = 0) -> Schedule:
    return Schedule((NIGHTLY,), max_deferrals, "UTC")


def install_v1(dev: Device) -> Agent:
    dev.api.want(dev.repo.publish("1.0.0", policy="now"), nightly())
    agent = dev.agent()
    assert agent.run_once()
    assert dev.committed() == "1.0.0"
    return agent


# -- the agent -----------------------------------------------------------------------------
def test_switch_waits_for_the_window_and_tells_once(dev: Device) -> None:
    agent = install_v1(dev)
    dev.api.want(dev.repo.publish("2.0.0"), nightly())
    assert agent.run_once()
    assert dev.state() is State.STAGED and dev.committed() == "1.0.0"
    (waiting,) = dev.api.named("waiting_for_window")
    assert waiting["detail"]["next_window_start"] == "2027-01-04T02:00:00Z"
    assert waiting["state"] == "staged" and waiting["version"] == "2.0.0"
    assert agent.wake_at == DAY0.replace(hour=2)

    dev.at(DAY0.replace(hour=1, minute=30))
    assert agent.run_once()
    assert dev.state() is State.STAGED
    assert len(dev.api.named("waiting_for_window")) == 1  # told once

    dev.at(DAY0.replace(hour=2, minute=5))
    assert agent.run_once()
    assert dev.committed() == "2.0.0"
    (switched,) = [e for e in dev.api.named("switched") if e["version"] == "2.0.0"]
    assert switched["time"].startswith("2027-01-04T02:05")


def test_now_policy_switches_at_once(dev: Device) -> None:
    agent = install_v1(dev)
    dev.api.want(dev.repo.publish("2.0.0", policy="now"), nightly())
    assert agent.run_once()
    assert dev.committed() == "2.0.0"
    assert not dev.api.named("waiting_for_window")
    assert agent.wake_at is None


def test_deferrals_are_honoured_up_to_the_limit_then_the_next_window_applies(
    dev: Device,
) -> None:
    agent = install_v1(dev)
    dev.api.want(dev.repo.publish("2.0.0"), nightly(max_deferrals=2))
    assert agent.run_once()
    release = "rel-denoiser-2.0.0"

    # First deferral, before tonight's window: skips tonight's window.
    schedule.request_deferral(dev.data, COMPONENT, release, dev.now)
    assert agent.run_once()
    (deferred,) = dev.api.named("deferred")
    assert deferred["detail"]["deferred_until"] == "2027-01-05T02:00:00Z"
    assert not list((dev.data / "deferrals").iterdir())  # applied, then removed
    dev.at(DAY0.replace(hour=2, minute=10))
    assert agent.run_once()
    assert dev.committed() == "1.0.0"

    # Second deferral, inside tomorrow's window: skips that one too.
    dev.at(DAY0.replace(hour=2, minute=10) + timedelta(days=1))
    schedule.request_deferral(dev.data, COMPONENT, release, dev.now)
    assert agent.run_once()
    assert dev.committed() == "1.0.0"
    assert dev.api.named("deferred")[-1]["detail"]["deferred_until"] == "2027-01-06T02:00:00Z"

    # A third is refused: the update is forced into the next window.
    dev.at(DAY0.replace(hour=12) + timedelta(days=1))
    schedule.request_deferral(dev.data, COMPONENT, release, dev.now)
    assert agent.run_once()
    (refused,) = dev.api.named("deferral_refused")
    assert refused["detail"]["forced_apply_at"] == "2027-01-06T02:00:00Z"
    assert dev.committed() == "1.0.0"

    dev.at(datetime(2027, 1, 6, 2, 1, tzinfo=UTC))
    assert agent.run_once()
    assert dev.committed() == "2.0.0"
    waits = [e["detail"]["next_window_start"] for e in dev.api.named("waiting_for_window")]
    assert waits == ["2027-01-04T02:00:00Z", "2027-01-05T02:00:00Z", "2027-01-06T02:00:00Z"]


def test_an_urgent_update_cannot_be_deferred(dev: Device) -> None:
    agent = install_v1(dev)
    dev.api.want(dev.repo.publish("2.0.0", policy="now"), nightly(max_deferrals=5))
    schedule.request_deferral(dev.data, COMPONENT, "rel-denoiser-2.0.0", dev.now)
    assert agent.run_once()
    assert dev.committed() == "2.0.0"
    assert "urgent" in dev.api.named("deferral_refused")[0]["reason"]


def test_a_restart_while_waiting_keeps_waiting_offline_then_switches_in_the_window(
    dev: Device,
) -> None:
    """Power cut while staged: the journaled schedule holds without the server."""
    install_v1(dev)
    dev.api.want(dev.repo.publish("2.0.0"), nightly())
    assert dev.agents[-1].run_once()
    dev.api.online = False
    dev.at(DAY0.replace(hour=1))
    agent = dev.restart()
    agent.open()
    assert dev.state() is State.STAGED
    assert not agent.run_once()  # the server is unreachable
    assert dev.state() is State.STAGED
    dev.at(DAY0.replace(hour=2, minute=30))
    agent.run_once()
    assert dev.committed() == "2.0.0"


def test_a_staged_release_is_dropped_when_another_is_desired(dev: Device) -> None:
    agent = install_v1(dev)
    dev.api.want(dev.repo.publish("2.0.0"), nightly())
    assert agent.run_once()
    dev.api.want(dev.repo.publish("3.0.0", policy="now"), nightly())
    assert agent.run_once()
    assert dev.committed() == "3.0.0"
    (dropped,) = dev.api.named("stage_invalid")
    assert "superseded by release rel-denoiser-3.0.0" in dropped["reason"]


def test_defer_command_records_a_request_for_the_waiting_update(dev: Device) -> None:
    from edgeota.cli.main import app

    runner = CliRunner()
    agent = install_v1(dev)
    nothing = runner.invoke(app, ["agent", "defer", "--data-dir", str(dev.data)])
    assert nothing.exit_code != 0 and "no update is waiting" in nothing.output

    dev.api.want(dev.repo.publish("2.0.0"), nightly(max_deferrals=1))
    assert agent.run_once()
    done = runner.invoke(app, ["agent", "defer", "--data-dir", str(dev.data)])
    assert done.exit_code == 0, done.output
    assert "2.0.0" in done.output
    assert agent.run_once()
    assert len(dev.api.named("deferred")) == 1
