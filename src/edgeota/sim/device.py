"""One simulated device: the real agent with its real API, TUF and download clients, over
the shared simulated network, with temp-dir slots and a simulated runtime.

Only the runtime is simulated (``FakeDriver`` and ``edgeota.sim.faults.check_slot``): no
inference process starts, and the health verdict comes from the fault plan. A crash at a
crash point unwinds the agent (``SimulatedCrash``); the next step opens a new agent on the
same data folder, which recovers from its journal as one restarted after kill -9 would.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from edgeota.agent.api_client import ApiClient, DesiredState
from edgeota.agent.config import AgentConfig
from edgeota.agent.download import Downloader, DownloadLimits
from edgeota.agent.driver import FakeDriver, HealthResult, RuntimeDriver
from edgeota.agent.reconcile import Agent
from edgeota.sim.faults import FaultPlan, SimulatedCrash, check_slot, crash
from edgeota.sim.network import FlakyTransport, NetworkStats
from edgeota.sim.population import DeviceSpec
from edgeota.trust.client import TrustClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimEnv:
    """What every simulated device of one run shares."""

    server_url: str
    root: bytes  # the TUF root.json pinned at enrollment
    transport: httpx.BaseTransport  # edgeota.sim.network.shared_transport
    stats: NetworkStats
    faults: FaultPlan
    work_dir: Path
    poll_interval_s: float  # simulated seconds between check-ins
    time_scale: float = 1.0  # simulated seconds per wall-clock second
    switch_margin_s: float = 0.0  # simulated seconds a window must stay open for a switch
    probe: bool = False  # also run real models' probe sets in-process
    seed: int = 0


@dataclass(frozen=True)
class SeenEvent:
    """An event the server accepted from a device."""

    time: str
    event: str
    release_id: str | None
    version: str | None
    reason: str | None
    detail: Mapping[str, Any]


class _Seen:
    """Events the server accepted from one device, across agent restarts."""

    def __init__(self) -> None:
        self.events: list[SeenEvent] = []
        self.through = 0


class _RecordingApi:
    """The device's ApiClient, keeping each event the server accepted."""

    def __init__(self, api: ApiClient, seen: _Seen) -> None:
        self._api = api
        self._seen = seen

    def set_identity(self, device_id: str, credential: str) -> None:
        self._api.set_identity(device_id, credential)

    def enroll(self, token: str, name: str, hardware_class: str) -> tuple[str, str]:
        return self._api.enroll(token, name, hardware_class)

    def desired_state(self, etag: str | None) -> DesiredState | None:
        return self._api.desired_state(etag)

    def put_inventory(self, inventory: Mapping[str, Any]) -> None:
        self._api.put_inventory(inventory)

    def post_events(self, events: Sequence[Mapping[str, Any]]) -> int:
        through = self._api.post_events(events)
        for e in events:
            if self._seen.through < int(e["seq"]) <= through:
                self._seen.events.append(
                    SeenEvent(
                        str(e["time"]),
                        str(e["event"]),
                        e.get("release_id"),
                        e.get("version"),
                        e.get("reason"),
                        dict(e.get("detail") or {}),
                    )
                )
        self._seen.through = max(self._seen.through, through)
        return through


@dataclass
class SimDevice:
    spec: DeviceSpec
    env: SimEnv
    enroll_token: str
    _seen: _Seen = field(default_factory=_Seen)
    crashes: int = 0
    steps: int = 0
    failures: int = 0  # consecutive passes that failed (back-off)
    _agent: Agent | None = None
    _crash_pending: str | None = None
    _device_id: str | None = None
    _now: datetime | None = None  # the simulated instant of the step under way
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.env.seed}-{self.spec.index}")

    @property
    def data_dir(self) -> Path:
        return self.env.work_dir / self.spec.name

    @property
    def device_id(self) -> str | None:
        """The id the server gave the device at enrollment (None before)."""
        if self._device_id is None:
            agent = self._agent
            if agent is not None and agent.journal.identity is not None:
                self._device_id = agent.journal.identity.device_id
        return self._device_id

    def _make_agent(self) -> Agent:
        env, spec = self.env, self.spec
        config = AgentConfig(
            server_url=env.server_url,
            data_dir=self.data_dir,
            hardware_class=spec.hardware_class,
            device_name=spec.name,
            enroll_token=self.enroll_token,
            poll_interval_s=env.poll_interval_s,
            poll_jitter=0.3,
            backoff_initial_s=min(env.time_scale, env.poll_interval_s),
            backoff_max_s=max(5 * env.time_scale, 4 * env.poll_interval_s),
            disk_reserve_mb=0,
            download=DownloadLimits(max_attempts=4, backoff_initial_s=0.05, backoff_max_s=0.5),
            switch_margin_s=env.switch_margin_s,
            # The crash point is armed for the first update only; the restart runs clean.
            crash_at=self._crash_pending,
        )
        http = httpx.Client(
            transport=FlakyTransport(env.transport, env.faults.drop_share, self._rng, env.stats),
            timeout=httpx.Timeout(30.0),
            trust_env=False,
        )
        trust = TrustClient(
            self.data_dir / "tuf", config.metadata_base_url, config.targets_base_url, http, env.root
        )

        def driver(_name: str) -> RuntimeDriver:
            return FakeDriver()

        def health(_base_url: str, slot_dir: Path, _timeout_s: float) -> HealthResult:
            return check_slot(env.faults, spec.hardware_class, slot_dir, probe=env.probe)

        def crash_bytes() -> None:
            crash("bytes")

        return Agent(
            config,
            api=_RecordingApi(ApiClient(env.server_url, http), self._seen),
            trust=trust,
            drivers=driver,
            health=health,
            fetcher=Downloader(
                http, config.downloads_dir, config.download_limits, crash=crash_bytes, rng=self._rng
            ),
            now=self._step_time,
            rng=self._rng,
            crash=crash,
            measure_free=lambda _path: 1 << 40,
        )

    def _step_time(self) -> datetime:
        assert self._now is not None, "the agent reads the time only during a step"
        return self._now

    def step(self, now: datetime) -> float:
        """One pass of the agent at the simulated instant ``now`` (its clock for the whole
        pass); the simulated seconds until the next one."""
        with self._lock:  # one pass at a time per device
            self._now = now
            if self._agent is None:
                self._agent = self._make_agent()
            agent = self._agent
            self.steps += 1
            try:
                ok = agent.run_once()
            except SimulatedCrash as e:
                log.info(
                    "%s: simulated crash at %s; restarting from its journal", self.spec.name, e
                )
                self.crashes += 1
                self._crash_pending = None
                agent.close(stop_runtimes=False)  # as kill -9 leaves it: the lock goes
                self._agent = None
                return 0.05 * self.env.time_scale
            except Exception:
                log.exception("%s: the agent failed", self.spec.name)
                ok = False
            self.failures = 0 if ok else self.failures + 1
            return agent.until_next_pass(self.failures)

    def arm_crash(self) -> None:
        """Crash at the spec's crash point during the next update (then restart clean)."""
        with self._lock:
            if self.spec.crash_at is None:
                return
            self._crash_pending = self.spec.crash_at
            if self._agent is not None:
                self._agent.close()
                self._agent = None  # the next step builds an agent with the fault armed

    def close(self) -> None:
        with self._lock:
            if self._agent is not None:
                self._agent.close()
                self._agent = None

    # -- what happened -----------------------------------------------------------------
    def events(self, release_id: str | None = None) -> list[SeenEvent]:
        seen = list(self._seen.events)
        return [e for e in seen if release_id is None or e.release_id == release_id]

    def committed(self) -> str | None:
        """The release id the device last reported committed (or already installed)."""
        for e in reversed(self.events()):
            if e.event in ("committed", "already_installed"):
                return e.release_id
        return None

    def outcome(self, release_id: str) -> str | None:
        """How the device's update to ``release_id`` ended, if it has: the event's name."""
        for e in reversed(self.events(release_id)):
            if e.event in TERMINAL_EVENTS:
                return e.event
            if e.event in UPDATE_STEPS:
                return None  # tried again since (a download failure is retried)
        return None


# A failed download is retried on a later pass, so it ends nothing.
TERMINAL_EVENTS = frozenset({"committed", "already_installed", "rolled_back", "update_refused"})
UPDATE_STEPS = frozenset(
    {
        "update_found",
        "resume",
        "download_ok",
        "download_failed",
        "switched",
        "trial_interrupted",
        "health_failed",
    }
)
