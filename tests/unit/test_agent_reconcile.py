"""The agent's decisions and recovery, against in-memory fakes of the server, TUF and runtime.

Downloads go through the real Downloader over httpx.MockTransport. A "crash" is a
BaseException raised at a crash point (nothing in the agent catches it); a fresh Agent on
the same data folder then plays the restart after kill -9.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import signal
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeota.agent.api_client import DesiredComponent, DesiredState
from edgeota.agent.config import CRASH_POINTS, AgentConfig
from edgeota.agent.datalock import AgentLockedError
from edgeota.agent.download import Downloader, DownloadLimits
from edgeota.agent.driver import FakeDriver, RuntimeDriver
from edgeota.agent.journal import Journal
from edgeota.agent.reconcile import Agent, NotEnrolledError
from edgeota.agent.slots import ComponentSlots
from edgeota.agent.statemachine import State
from edgeota.errors import PolicyError, TransportError, VerificationError
from edgeota.slotinfo import SlotInfo
from edgeota.targets import TargetCustom, VerifiedTarget

COMPONENT = "denoiser"


class Crash(BaseException):
    """Plays kill -9: unwinds through the agent without being handled."""


def crash_hook(point: str) -> None:
    raise Crash(point)


def _no_crash(point: str) -> None:
    raise AssertionError(f"crash point {point} reached without a fault plan")


# -- fakes -------------------------------------------------------------------------------
class Repo:
    """The signed targets (the TUF side) and a file server for their bytes."""

    def __init__(self) -> None:
        self.targets: dict[str, VerifiedTarget] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[httpx.Request] = []
        self.refresh_error: Exception | None = None
        self.status: int | None = None  # answer every download with this status

    def publish(
        self,
        version: str,
        *,
        component: str = COMPONENT,
        signed_component: str | None = None,
        signed_version: str | None = None,
        hardware: tuple[str, ...] = ("*",),
        release_id: str | None = None,
        model: bytes | None = None,
        tamper: bool = False,
        needs: dict[str, str] | None = None,
        variant: str | None = None,
        files: dict[str, tuple[str, bytes]] | None = None,
    ) -> DesiredComponent:
        release_id = release_id or f"rel-{component}-{version}"
        # Other components and variants get other bytes (the downloads folder is by sha256).
        default = (component, variant) == (COMPONENT, None)
        tag = version if default else f"{component} {version} {variant}"
        files = files or {
            "model.onnx": ("model", model or f"model {tag}".encode() * 100),
            "probe.npz": ("probe", f"probe {tag}".encode()),
        }
        paths = []
        for name, (role, data) in files.items():
            path = f"{component}/{version}/{variant + '/' if variant else ''}{name}"
            sha = hashlib.sha256(data).hexdigest()
            url = f"http://files.test/{component}/{version}/{sha}.{name}"
            custom = TargetCustom(
                component=signed_component or component,
                version=signed_version or version,
                release_id=release_id,
                role=role,
                file=name,
                hardware=hardware,
                tolerance={"max_abs_error": 0.1} if role == "probe" else None,
                needs=dict(needs or {}),
                variant=variant if role == "model" else None,
            )
            self.targets[path] = VerifiedTarget(path, len(data), sha, custom, url)
            self.blobs[url] = data[:-1] + b"!" if tamper else data
            paths.append(path)
        return DesiredComponent(release_id, version, tuple(paths), variant=variant)

    # TrustSource
    def refresh(self) -> None:
        if self.refresh_error is not None:
            raise self.refresh_error

    def get_target(self, path: str) -> VerifiedTarget:
        try:
            return self.targets[path]
        except KeyError:
            raise PolicyError(f"{path} is not in the signed metadata") from None

    # the file server
    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status is not None:
            return httpx.Response(self.status)
        data = self.blobs[str(request.url)]
        rng = request.headers.get("range")
        if rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            return httpx.Response(
                206,
                content=data[start:],
                headers={"content-range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
            )
        return httpx.Response(200, content=data, headers={"etag": '"e"'})


class FakeApi:
    def __init__(self) -> None:
        self.online = True
        self.revision = 0
        self.components: dict[str, DesiredComponent] = {}
        self.events: list[dict[str, Any]] = []
        self.inventories: list[dict[str, Any]] = []
        self.enrollments = 0
        self.identity: tuple[str, str] | None = None

    def want(self, **components: DesiredComponent) -> None:
        self.revision += 1
        self.components = dict(components)

    def _check(self) -> None:
        if not self.online:
            raise TransportError("network unreachable")

    def set_identity(self, device_id: str, credential: str) -> None:
        self.identity = (device_id, credential)

    def enroll(self, token: str, name: str, hardware_class: str) -> tuple[str, str]:
        self._check()
        self.enrollments += 1
        return "dev-1", "cred-1"

    def desired_state(self, etag: str | None) -> DesiredState | None:
        self._check()
        if etag == f'"{self.revision}"':
            return None
        return DesiredState(self.revision, 0.5, dict(self.components), f'"{self.revision}"')

    def put_inventory(self, inventory: Any) -> None:
        self._check()
        self.inventories.append(dict(inventory))

    def post_events(self, events: Any) -> int:
        self._check()
        last = self.events[-1]["seq"] if self.events else 0
        self.events.extend(dict(e) for e in events if e["seq"] > last)
        return int(self.events[-1]["seq"]) if self.events else 0

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]


@dataclass(frozen=True)
class Report:
    ok: bool
    reason: str | None
    figures: dict[str, float] = field(default_factory=dict)


class Health:
    def __init__(self) -> None:
        self.bad: set[str] = set()
        self.checked: list[str] = []

    def __call__(self, base_url: str, slot_dir: Path, timeout_s: float) -> Report:
        release = SlotInfo.read(slot_dir).release_id
        self.checked.append(release)
        if release in self.bad:
            return Report(False, "outputs are NaN", {"max_abs_error": float("nan")})
        return Report(True, None, {"max_abs_error": 0.01})


@dataclass
class Device:
    tmp: Path
    repo: Repo = field(default_factory=Repo)
    api: FakeApi = field(default_factory=FakeApi)
    health: Health = field(default_factory=Health)
    drivers: dict[str, FakeDriver] = field(default_factory=dict)
    free: int = 10**12
    agents: list[Agent] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    def config(self, **kw: Any) -> AgentConfig:
        base: dict[str, Any] = {
            "server_url": "http://127.0.0.1:1",
            "data_dir": self.data,
            "hardware_class": "x86-64-cpu",
            "enroll_token": "tok",
            "disk_reserve_mb": 0,
            "download": DownloadLimits(max_attempts=2, backoff_initial_s=0.0),
        }
        return AgentConfig(**{**base, **kw})

    def agent(
        self,
        *,
        crash: bool = False,
        real_kill: bool = False,
        driver: FakeDriver | None = None,
        **kw: Any,
    ) -> Agent:
        cfg = self.config(**kw)

        def serve(request: httpx.Request) -> httpx.Response:
            return self.repo.handle(request)  # looked up per request: tests swap it

        client = httpx.Client(transport=httpx.MockTransport(serve))
        fetcher = Downloader(
            client,
            cfg.downloads_dir,
            cfg.download_limits,
            sleep=lambda _s: None,
            measure_free=lambda _p: self.free,
            crash=lambda: crash_hook("bytes"),
        )

        def make_driver(name: str) -> RuntimeDriver:
            self.drivers[name] = driver or FakeDriver()
            return self.drivers[name]

        faults: dict[str, Any] = {} if real_kill else {"crash": crash_hook if crash else _no_crash}
        agent = Agent(
            cfg,
            api=self.api,
            trust=self.repo,
            drivers=make_driver,
            health=self.health,
            fetcher=fetcher,
            rng=random.Random(1),
            measure_free=lambda _p: self.free,
            **faults,
        )
        self.agents.append(agent)
        return agent

    def restart(self, **kw: Any) -> Agent:
        """Kill -9 is simulated: the old agent's lock is released, its runtime left alone."""
        for a in self.agents:
            a.close(stop_runtimes=False)
        return self.agent(**kw)

    def journal(self) -> Journal:
        return Journal.load(self.data / "journal.json")

    def slots(self) -> ComponentSlots:
        return ComponentSlots(self.data, COMPONENT)

    def running(self) -> Path | None:
        return self.drivers[COMPONENT].slot_dir

    def assert_committed(self, version: str, slot: str) -> None:
        rec = self.journal().components[COMPONENT]
        assert rec.state is State.IDLE
        assert rec.committed is not None and rec.committed.version == version
        assert rec.committed_slot == slot
        assert self.slots().active() == slot
        assert self.slots().verify(slot).version == version
        assert self.running() == self.slots().slot_dir(slot)


@pytest.fixture
def dev(tmp_path: Path) -> Any:
    d = Device(tmp_path)
    yield d
    for a in d.agents:
        a.close()


def install_v1(dev: Device) -> Agent:
    dev.api.want(denoiser=dev.repo.publish("1.0.0"))
    agent = dev.agent()
    assert agent.run_once()
    dev.assert_committed("1.0.0", "a")
    return agent


# -- updates -----------------------------------------------------------------------------
def test_first_install_is_committed_and_reported(dev: Device) -> None:
    agent = install_v1(dev)
    assert dev.api.names() == ["update_found", "download_ok", "switched", "committed"]
    committed = dev.api.events[-1]
    assert committed["release_id"] == "rel-denoiser-1.0.0" and committed["state"] == "idle"
    full = len(b"model 1.0.0" * 100) + len(b"probe 1.0.0")
    assert committed["detail"] == {
        "figures": {"max_abs_error": 0.01},
        "bytes_downloaded": full,  # a first install has no base: full files
        "bytes_full": full,
        "delta_files": 0,
    }
    assert [e["seq"] for e in dev.api.events] == [1, 2, 3, 4]
    inv = dev.api.inventories[-1]["components"][COMPONENT]
    assert inv == {
        "version": "1.0.0",
        "release_id": "rel-denoiser-1.0.0",
        "state": "idle",
        "slot": "a",
    }
    assert SlotInfo.read(dev.slots().slot_dir("a")).tolerance == {"max_abs_error": 0.1}
    # downloads are cleaned up after the commit; the slot keeps its own links
    assert list((dev.data / "downloads").iterdir()) == []
    # a second pass is quiet: no new download, no new inventory
    n_requests, n_inv = len(dev.repo.requests), len(dev.api.inventories)
    assert agent.run_once()
    assert len(dev.repo.requests) == n_requests and len(dev.api.inventories) == n_inv


def test_update_goes_to_the_other_slot_each_time(dev: Device) -> None:
    agent = install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    agent.run_once()
    dev.assert_committed("2.0.0", "b")
    dev.api.want(denoiser=dev.repo.publish("3.0.0"))
    agent.run_once()
    dev.assert_committed("3.0.0", "a")


def test_health_failure_rolls_back_and_is_not_retried(dev: Device) -> None:
    """Row 16: no commit, roll back to the previous slot, tell the server why."""
    agent = install_v1(dev)
    bad = dev.repo.publish("2.0.0")
    dev.health.bad.add(bad.release_id)
    dev.api.want(denoiser=bad)
    agent.run_once()
    dev.assert_committed("1.0.0", "a")
    rec = dev.journal().components[COMPONENT]
    assert rec.failed_release_ids == [bad.release_id]
    failed = next(e for e in dev.api.events if e["event"] == "health_failed")
    assert failed["reason"] == "outputs are NaN"
    assert failed["detail"] == {"figures": {"max_abs_error": None}}  # NaN sent as null
    assert dev.api.events[-1]["event"] == "rolled_back"
    assert dev.api.events[-1]["state"] == "idle"
    assert not dev.slots().slot_dir("b").exists()  # the failed slot's space is reclaimed
    # no retry loop: the same release is refused from now on, and said so once
    checks, requests = len(dev.health.checked), len(dev.repo.requests)
    agent.run_once()
    agent.run_once()
    assert len(dev.health.checked) == checks and len(dev.repo.requests) == requests
    # The rollback said it all: nothing more is reported (a refusal would make a rollout
    # count the device failed instead of rolled back); after a restart it is said once.
    assert "update_refused" not in dev.api.names()
    assert "already_failed" not in dev.api.names()
    agent = dev.restart()
    agent.run_once()
    agent.run_once()
    assert dev.api.names().count("already_failed") == 1
    assert len(dev.health.checked) == checks and len(dev.repo.requests) == requests
    # a newer release is installed normally
    dev.api.want(denoiser=dev.repo.publish("2.0.1"))
    agent.run_once()
    dev.assert_committed("2.0.1", "b")


def test_failed_first_install_leaves_nothing_installed(dev: Device) -> None:
    bad = dev.repo.publish("1.0.0")
    dev.health.bad.add(bad.release_id)
    dev.api.want(denoiser=bad)
    agent = dev.agent()
    agent.run_once()
    rec = dev.journal().components[COMPONENT]
    assert rec.state is State.IDLE and rec.committed is None and rec.committed_slot is None
    assert dev.slots().active() is None
    assert dev.running() is None
    assert dev.api.names()[-1] == "rolled_back"


def test_crash_loop_in_the_new_slot_rolls_back(dev: Device, tmp_path: Path) -> None:
    """Row 17: the runtime exits at once, repeatedly: no commit."""
    slot_b = ComponentSlots(tmp_path / "data", COMPONENT).slot_dir("b")
    driver = FakeDriver(crash_loop=lambda slot: slot == slot_b)
    dev.api.want(denoiser=dev.repo.publish("1.0.0"))
    agent = dev.agent(driver=driver)
    agent.run_once()
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    agent.run_once()
    dev.assert_committed("1.0.0", "a")
    failed = next(e for e in dev.api.events if e["event"] == "health_failed")
    assert "crash-loops" in failed["reason"]


def test_runtime_not_ready_rolls_back(dev: Device, tmp_path: Path) -> None:
    slot_b = ComponentSlots(tmp_path / "data", COMPONENT).slot_dir("b")
    driver = FakeDriver(ready=lambda slot: slot != slot_b)
    dev.api.want(denoiser=dev.repo.publish("1.0.0"))
    agent = dev.agent(driver=driver)
    agent.run_once()
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    agent.run_once()
    dev.assert_committed("1.0.0", "a")
    assert "did not answer" in next(
        e["reason"] for e in dev.api.events if e["event"] == "health_failed"
    )


# -- refusals (decided on signed data only) ------------------------------------------------
def refused(dev: Device) -> list[str]:
    return [e["reason"] for e in dev.api.events if e["event"] == "update_refused"]


def test_older_version_is_refused(dev: Device) -> None:
    """Row 3: installed versions never go down."""
    agent = install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("0.9.0"))
    agent.run_once()
    dev.assert_committed("1.0.0", "a")
    assert "never go down" in refused(dev)[0]


def test_same_version_with_other_content_is_refused(dev: Device) -> None:
    agent = install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("1.0.0", release_id="rel-other", model=b"other"))
    agent.run_once()
    dev.assert_committed("1.0.0", "a")
    assert "needs a new version" in refused(dev)[0]


def test_already_installed_is_not_installed_again(dev: Device) -> None:
    """Row 20: deploying the same release again."""
    agent = install_v1(dev)
    requests = len(dev.repo.requests)
    dev.api.want(denoiser=dev.repo.publish("1.0.0"))  # a re-deploy: new revision
    agent2 = dev.restart()
    assert agent2.run_once()
    assert len(dev.repo.requests) == requests
    assert dev.api.names()[-1] == "already_installed"
    agent2.run_once()
    assert dev.api.names().count("already_installed") == 1
    del agent


def test_target_signed_for_another_component_is_refused(dev: Device) -> None:
    """Row 10."""
    dev.api.want(denoiser=dev.repo.publish("1.0.0", signed_component="vae"))
    dev.agent().run_once()
    assert "signed for component 'vae'" in refused(dev)[0]
    assert dev.repo.requests == []
    assert COMPONENT not in dev.journal().components


def test_target_for_another_hardware_class_is_refused(dev: Device) -> None:
    """Row 10."""
    dev.api.want(denoiser=dev.repo.publish("1.0.0", hardware=("arm64-npu",)))
    dev.agent().run_once()
    assert "hardware" in refused(dev)[0]
    assert dev.repo.requests == []


def test_signed_version_must_match_the_desired_one(dev: Device) -> None:
    dev.api.want(denoiser=dev.repo.publish("1.0.0", signed_version="9.0.0"))
    dev.agent().run_once()
    assert "signed as 9.0.0" in refused(dev)[0]


def test_unsigned_target_is_refused(dev: Device) -> None:
    dev.api.want(denoiser=DesiredComponent("rel-x", "1.0.0", ("denoiser/1.0.0/model.onnx",)))
    dev.agent().run_once()
    assert "not in the signed metadata" in refused(dev)[0]


def test_refused_metadata_is_reported(dev: Device) -> None:
    """Row 4: expired or otherwise bad metadata is refused and reported, nothing installed."""
    dev.repo.refresh_error = VerificationError("timestamp metadata expired")
    dev.api.want(denoiser=dev.repo.publish("1.0.0"))
    dev.agent().run_once()
    assert refused(dev) == ["timestamp metadata expired"]
    assert dev.repo.requests == []


def test_component_name_with_traversal_is_refused(dev: Device) -> None:
    """Row 11: a component name from the server never becomes a path."""
    dev.api.want(**{"../evil": DesiredComponent("rel-x", "1.0.0", ("x/1.0.0/model.onnx",))})
    dev.agent().run_once()
    assert "invalid component name" in refused(dev)[0]
    assert not (dev.tmp / "evil").exists() and not (dev.data / "evil").exists()


# -- downloads that fail ------------------------------------------------------------------
def test_tampered_target_installs_nothing(dev: Device) -> None:
    """Row 1."""
    agent = install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("2.0.0", tamper=True))
    agent.run_once()
    dev.assert_committed("1.0.0", "a")
    failed = next(e for e in dev.api.events if e["event"] == "download_failed")
    assert "sha256" in failed["reason"]
    assert not dev.slots().slot_dir("b").exists() or not any(dev.slots().slot_dir("b").iterdir())


def test_not_enough_space_fails_before_switching(dev: Device) -> None:
    """Row 19: a clear reason with figures; the active slot is untouched."""
    agent = install_v1(dev)
    dev.free = 1000
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    agent.run_once()
    dev.assert_committed("1.0.0", "a")
    failed = next(e for e in dev.api.events if e["event"] == "download_failed")
    assert "not enough disk space" in failed["reason"]
    assert failed["detail"]["free_bytes"] == 1000
    assert failed["detail"]["needed_bytes"] > 1000


def test_network_failure_during_download_is_retried_later(dev: Device) -> None:
    agent = install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    dev.repo.status = 503
    assert not agent.run_once()
    dev.assert_committed("1.0.0", "a")
    assert dev.api.names()[-1] == "download_failed"
    dev.repo.status = None
    assert agent.run_once()
    dev.assert_committed("2.0.0", "b")


def test_events_are_delivered_after_the_network_returns(dev: Device) -> None:
    """Row 18: the network drops after the switch; the commit is local, the report later."""
    agent = install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    assert agent.run_once() is True
    # take the network down right after the check-in of the next pass
    dev.api.want(denoiser=dev.repo.publish("3.0.0"))
    original = dev.api.desired_state

    def then_offline(etag: str | None) -> DesiredState | None:
        answer = original(etag)
        dev.api.online = False
        return answer

    dev.api.desired_state = then_offline  # type: ignore[method-assign]
    seen = len(dev.api.events)
    assert agent.run_once() is False
    dev.assert_committed("3.0.0", "a")
    assert len(dev.api.events) == seen
    assert [e.event for e in dev.journal().outbox][-1] == "committed"
    dev.api.desired_state = original  # type: ignore[method-assign]
    dev.api.online = True
    assert agent.run_once() is True
    assert dev.api.names()[-1] == "committed"
    seqs = [e["seq"] for e in dev.api.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert dev.journal().outbox == []


# -- identity, lock, timing -----------------------------------------------------------------
def test_enrolls_once_and_keeps_the_credential_private(dev: Device) -> None:
    install_v1(dev)
    ident = dev.data / "identity.json"
    assert stat.S_IMODE(ident.stat().st_mode) == 0o600
    dev.restart().run_once()
    assert dev.api.enrollments == 1
    assert dev.api.identity == ("dev-1", "cred-1")


def test_without_identity_or_token_the_agent_says_what_to_do(dev: Device) -> None:
    with pytest.raises(NotEnrolledError, match="enrollment token"):
        dev.agent(enroll_token=None).run_once()


def test_second_agent_on_the_same_data_dir_is_refused(dev: Device) -> None:
    """Row 20: the lock stops the second agent."""
    first = dev.agent()
    first.open()
    with pytest.raises(AgentLockedError, match="another agent"):
        dev.agent().open()
    first.close()
    dev.agent().open()


def test_poll_delays_are_jittered_and_back_off_is_capped(dev: Device) -> None:
    agent = dev.agent(
        poll_interval_s=10.0, poll_jitter=0.2, backoff_initial_s=1.0, backoff_max_s=60.0
    )
    polls = [agent.next_delay_s(0) for _ in range(200)]
    assert all(8.0 <= d <= 12.0 for d in polls) and len(set(polls)) > 100
    backoffs = [agent.next_delay_s(n) for n in range(1, 12)]
    assert backoffs[0] <= 1.2 and backoffs[3] >= 8 * 0.8
    assert max(backoffs) <= 60 * 1.2


def test_unknown_crash_point_is_a_configuration_error(dev: Device) -> None:
    with pytest.raises(ValueError, match="crash_at"):
        dev.config(crash_at="nowhere")


# -- recovery after kill -9 ---------------------------------------------------------------
@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_crash_at_each_point_recovers_to_a_committed_slot(dev: Device, point: str) -> None:
    """Row 14: after a crash anywhere, the restarted agent ends on a committed, working slot."""
    install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    with pytest.raises(Crash):
        dev.restart(crash=True, crash_at=point).run_once()
    rec = dev.journal().components[COMPONENT]
    assert rec.committed_slot in ("a", "b")
    agent = dev.restart()
    agent.run_once()
    dev.assert_committed("2.0.0", "b")
    names = dev.api.names()
    assert names.count("committed") == 2
    assert "health_failed" not in names


def test_interrupted_health_check_rolls_back_when_attempts_are_spent(dev: Device) -> None:
    """DESIGN: an interrupted check counts; past the budget the agent rolls back."""
    install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    with pytest.raises(Crash):
        dev.restart(crash=True, crash_at="health", max_trial_attempts=2).run_once()
    with pytest.raises(Crash):  # recovery retries the check, and is interrupted again
        dev.restart(crash=True, crash_at="health", max_trial_attempts=2).open()
    assert dev.journal().components[COMPONENT].trial_attempts == 2
    agent = dev.restart(max_trial_attempts=2)
    agent.run_once()
    dev.assert_committed("1.0.0", "a")
    rec = dev.journal().components[COMPONENT]
    assert rec.failed_release_ids == ["rel-denoiser-2.0.0"]
    assert "interrupted 2 times" in next(
        e["reason"] for e in dev.api.events if e["event"] == "attempts_exhausted"
    )


def test_crash_mid_download_resumes_with_range(dev: Device) -> None:
    agent = install_v1(dev)
    agent.close()
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    with pytest.raises(Crash):
        dev.agent(
            crash=True,
            crash_after_bytes=300,
            download=DownloadLimits(max_attempts=2),
        ).run_once()
    assert dev.journal().components[COMPONENT].state is State.DOWNLOADING
    dev.repo.requests.clear()
    dev.restart().run_once()
    dev.assert_committed("2.0.0", "b")
    assert dev.repo.requests[0].headers["range"] == "bytes=300-"
    assert "resume" in dev.api.names()


def test_staged_slot_that_no_longer_verifies_is_discarded(dev: Device) -> None:
    install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    with pytest.raises(Crash):
        dev.restart(crash=True, crash_at="staged").run_once()
    model = dev.slots().slot_dir("b") / "model.onnx"
    model.unlink()
    model.write_bytes(b"bit rot")
    agent = dev.restart()
    agent.open()
    dev.assert_committed("1.0.0", "a")
    assert "stage_invalid" in dev.api.names() or any(
        e.event == "stage_invalid" for e in dev.journal().outbox
    )
    agent.run_once()  # not marked failed: the release is fetched and installed again
    dev.assert_committed("2.0.0", "b")


def test_crash_while_rolling_back_finishes_the_rollback(dev: Device, tmp_path: Path) -> None:
    install_v1(dev)
    bad = dev.repo.publish("2.0.0")
    dev.health.bad.add(bad.release_id)
    dev.api.want(denoiser=bad)
    slot_a = ComponentSlots(tmp_path / "data", COMPONENT).slot_dir("a")

    class DiesOnRollback(FakeDriver):
        def start(self, slot_dir: Path) -> None:
            if slot_dir == slot_a and self.slot_dir is not None:
                raise Crash("killed while restarting the old runtime")
            super().start(slot_dir)

        def stop(self) -> None:
            self.calls.append(("stop", self.slot_dir))

    with pytest.raises(Crash):
        dev.restart(driver=DiesOnRollback()).run_once()
    assert dev.journal().components[COMPONENT].state is State.ROLLING_BACK
    agent = dev.restart()
    agent.open()
    dev.assert_committed("1.0.0", "a")
    assert dev.journal().components[COMPONENT].failed_release_ids == [bad.release_id]


def test_unexpected_error_is_handled_like_a_crash(dev: Device) -> None:
    agent = install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    calls = {"n": 0}
    real = agent.health

    def flaky_once(base_url: str, slot_dir: Path, timeout_s: float) -> Any:
        calls["n"] += 1
        return real(base_url, slot_dir, timeout_s)

    agent.health = flaky_once
    original_switch = ComponentSlots.switch_to

    def broken_switch(self: ComponentSlots, slot: str) -> None:
        ComponentSlots.switch_to = original_switch  # type: ignore[method-assign]
        raise OSError("I/O error")

    ComponentSlots.switch_to = broken_switch  # type: ignore[method-assign]
    try:
        assert agent.run_once() is False  # the error is contained, recovery runs
    finally:
        ComponentSlots.switch_to = original_switch  # type: ignore[method-assign]
    dev.assert_committed("2.0.0", "b")  # STAGED was recovered: re-verified and switched


# -- stopping -------------------------------------------------------------------------------
def test_run_forever_returns_promptly_when_stopped(dev: Device) -> None:
    dev.api.want(denoiser=dev.repo.publish("1.0.0"))
    agent = dev.agent(poll_interval_s=3600.0)
    first_pass_done = threading.Event()
    put = dev.api.put_inventory

    def put_and_signal(inventory: Any) -> None:
        put(inventory)
        first_pass_done.set()

    dev.api.put_inventory = put_and_signal  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=agent.run_forever, args=(stop,))
    thread.start()
    assert first_pass_done.wait(10)
    stop.set()  # what the CLI's SIGTERM handler does, through agent.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert dev.running() is None  # the runtime was stopped on the way out
    dev.agent().open()  # and the lock released


def test_stop_during_a_download_leaves_it_to_resume(dev: Device) -> None:
    agent = install_v1(dev)
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    serve = dev.repo.handle

    def serve_then_stop(request: httpx.Request) -> httpx.Response:
        agent.stop()
        return serve(request)

    dev.repo.handle = serve_then_stop  # type: ignore[method-assign]
    agent.run_once()
    assert dev.journal().components[COMPONENT].state is State.DOWNLOADING
    assert dev.slots().active() == "a" and dev.running() == dev.slots().slot_dir("a")
    agent.close()
    dev.repo.handle = serve  # type: ignore[method-assign]
    dev.agent().run_once()
    dev.assert_committed("2.0.0", "b")


# -- the real thing: SIGKILL at each crash point, in a child process ------------------------
CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import test_agent_reconcile as t

dev = t.Device(Path(sys.argv[2]))
dev.repo.publish("1.0.0")
dev.api.want(denoiser=dev.repo.publish("2.0.0"))
dev.agent(real_kill=True, crash_at=sys.argv[3]).run_once()
sys.exit(0)  # not reached: the agent kills itself at the crash point
"""


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_kill_9_at_each_crash_point(dev: Device, point: str) -> None:
    install_v1(dev)
    for a in dev.agents:
        a.close()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(Path(__file__).parent), str(dev.tmp), point],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    dev.api.want(denoiser=dev.repo.publish("2.0.0"))
    agent = dev.agent()  # the dead agent's lock went with it
    agent.run_once()
    dev.assert_committed("2.0.0", "b")


def test_no_variant_fits_is_reported_once_and_nothing_is_installed(dev: Device) -> None:
    """The server found no model variant this device can run: not a failed install."""
    agent = install_v1(dev)
    requests = len(dev.repo.requests)
    v2 = dev.repo.publish("2.0.0")
    reason = "no variant fits: int8 (needs 150 MB) (the device's 64 MB model RAM budget)"
    dev.api.want(
        denoiser=dataclasses.replace(v2, targets=(), status="no_variant_fits", reason=reason)
    )
    assert agent.run_once()
    assert agent.run_once()
    told = [e for e in dev.api.events if e["event"] == "no_variant_fits"]
    assert len(told) == 1
    assert told[0]["reason"] == reason and told[0]["release_id"] == v2.release_id
    assert "update_refused" not in dev.api.names()
    assert len(dev.repo.requests) == requests
    dev.assert_committed("1.0.0", "a")
    assert dev.running() == dev.slots().slot_dir("a")
