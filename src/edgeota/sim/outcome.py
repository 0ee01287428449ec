"""What a simulation run found: per device, and as the figures ``edgeota sim --json`` prints.

Per device, from the events the server accepted from it: whether the new release reached it,
when it switched and whether that was inside one of its windows, whether it waited for a
window first, and how its update ended. Per run: the rollout as the server reports it, the
installed versions as the server reports them, and what the network carried.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeota.fsutil import atomic_write_text
from edgeota.rollout import Phase, RolloutPlan, phase_of
from edgeota.rollout.windows import MaintenanceWindow
from edgeota.sim.clock import FleetClock
from edgeota.sim.device import SimDevice
from edgeota.sim.engine import EngineStats
from edgeota.sim.network import NetworkStats


@dataclass(frozen=True)
class DeviceReport:
    name: str
    device_id: str | None
    hardware_class: str
    time_zone: str
    windows: list[dict[str, Any]]
    phase: int | None  # index of the rollout phase the device falls in
    received: bool  # the new release reached it (it reported something about it)
    outcome: str | None  # how its update ended: committed, rolled_back, ...
    switched_at: list[str]  # the agent's times of each switch to the new release
    switched_outside_window: int
    waited_for_window: bool  # it reported waiting_for_window before switching
    crashes: int
    final_version: str | None  # installed at the end, as the server reports it


def plan_of(rollout: Mapping[str, Any]) -> RolloutPlan:
    """The rollout's plan, from its public form (enough to tell each device's phase)."""
    phases = tuple(
        Phase(
            p["name"],
            p["percent"],
            p["success_share"],
            p["max_failed"],
            p["max_failed_share"],
            p["soak_s"],
        )
        for p in rollout["phases"]
    )
    return RolloutPlan(str(rollout["seed"]), phases, frozenset(rollout["field_test_devices"]))


def device_report(
    device: SimDevice, release_id: str, plan: RolloutPlan, installed: Mapping[str, str | None]
) -> DeviceReport:
    spec = device.spec
    windows = [MaintenanceWindow(w.cron, w.duration_s, w.time_zone) for w in spec.windows]
    events = device.events(release_id)
    switched = [e.time for e in events if e.event == "switched"]
    first_switch = next((i for i, e in enumerate(events) if e.event == "switched"), len(events))
    waited = any(e.event == "waiting_for_window" for e in events[:first_switch])
    outside = sum(not any(w.is_open(datetime.fromisoformat(t)) for w in windows) for t in switched)
    device_id = device.device_id
    return DeviceReport(
        name=spec.name,
        device_id=device_id,
        hardware_class=spec.hardware_class,
        time_zone=spec.time_zone,
        windows=[w.to_api() for w in spec.windows],
        phase=None if device_id is None else phase_of(plan, device_id),
        received=bool(events),
        outcome=_outcome(device, release_id),
        switched_at=switched,
        switched_outside_window=outside,
        waited_for_window=waited,
        crashes=device.crashes,
        final_version=None if device_id is None else installed.get(device_id),
    )


def _outcome(device: SimDevice, release_id: str) -> str | None:
    """How the update ended: a rollback stays the story even after the refusals that follow
    it (the release failed here, so the device refuses it from then on)."""
    events = device.events(release_id)
    for ending in ("rolled_back", "committed"):
        if any(e.event == ending for e in events):
            return ending
    return device.outcome(release_id) or (events[-1].event if events else None)


@dataclass
class SimResult:
    devices: int
    final_versions: dict[str, int]
    failed: int
    rolled_back: int
    phases_reached: list[str]
    halted: bool
    halt_reason: str | None
    bytes_sent: int
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        opts: Mapping[str, Any],
        rollout: Mapping[str, Any],
        reports: Sequence[DeviceReport],
        final_versions: dict[str, int],
        stats: NetworkStats,
        engine: EngineStats,
        clock: FleetClock,
        windows_open_at_start: int,
        sim_hours: float,
        settled: bool,
    ) -> SimResult:
        started = [p["name"] for p in rollout["phases"] if p["started_at"] is not None]
        received = [r for r in reports if r.received]
        p95 = stats.checkin_p95_ms()
        return cls(
            devices=len(reports),
            final_versions=final_versions,
            failed=sum(r.outcome in ("update_refused", "download_failed") for r in received),
            rolled_back=sum(r.outcome == "rolled_back" for r in received),
            phases_reached=started,
            halted=rollout["status"] == "halted",
            halt_reason=rollout.get("halt_reason") if rollout["status"] == "halted" else None,
            bytes_sent=stats.bytes_from_server,
            extra={
                "rollout_id": rollout["id"],
                "rollout_status": rollout["status"],
                "gate": rollout.get("gate"),
                "received": len(received),
                "committed": sum(r.outcome == "committed" for r in received),
                "outside_started_phases": sum(
                    r.phase is None or r.phase >= len(started) for r in received
                ),
                "switched": sum(bool(r.switched_at) for r in reports),
                "switched_outside_window": sum(r.switched_outside_window for r in reports),
                "waited_for_window": sum(r.waited_for_window for r in reports),
                "windows_open_at_start": windows_open_at_start,
                "crashes": sum(r.crashes for r in reports),
                "settled": settled,
                "sim_hours": round(sim_hours, 1),
                "requests": stats.requests,
                "dropped_requests": stats.dropped,
                "checkin_p95_ms": None if p95 is None else round(p95, 1),
                "bytes_received": stats.bytes_to_server,
                "bytes_from_cache": stats.bytes_from_cache,
                "steps": engine.steps,
                "step_late_p95_sim_s": round(engine.late_p95_s(), 1),
                "effective_time_scale": round(clock.effective_scale()),
                "clock_held_s": round(clock.held_wall_s, 1),
                **opts,
            },
        )

    def to_json(self) -> dict[str, Any]:
        body = {k: v for k, v in asdict(self).items() if k != "extra"}
        body["seconds"] = round(self.seconds, 1)
        return {**body, **self.extra}

    def write_report(self, path: Path, reports: Sequence[DeviceReport]) -> None:
        body = {"result": self.to_json(), "devices": [asdict(r) for r in reports]}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(body, indent=1) + "\n")
