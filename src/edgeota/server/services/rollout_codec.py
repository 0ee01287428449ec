"""Rollout plans and states as the JSON stored in the ``rollouts`` table, and back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edgeota.rollout import GateStatus, Phase, RolloutPlan, RolloutState, RolloutStatus

S = RolloutStatus
# Rollouts that may still tell devices, or be resumed to: they own the devices they told.
LIVE_STATUSES = frozenset({S.SCHEDULED, S.RUNNING, S.PAUSED, S.HALTED})
# Rollouts whose next decision may change something without an operator's command.
DUE_STATUSES = frozenset({S.SCHEDULED, S.RUNNING})
del S


def plan_to_json(plan: RolloutPlan) -> dict[str, Any]:
    return {
        "seed": plan.seed,
        "sim_gate_devices": plan.sim_gate_devices,
        "field_test_device_ids": sorted(plan.field_test_device_ids),
        "phases": [
            {
                "name": p.name,
                "percent": p.percent,
                "success_share": p.success_share,
                "max_failed": p.max_failed,
                "max_failed_share": p.max_failed_share,
                "soak_seconds": p.soak_seconds,
            }
            for p in plan.phases
        ],
    }


def plan_from_json(data: dict[str, Any]) -> RolloutPlan:
    return RolloutPlan(
        seed=data["seed"],
        phases=tuple(Phase(**p) for p in data["phases"]),
        field_test_device_ids=frozenset(data["field_test_device_ids"]),
        sim_gate_devices=int(data.get("sim_gate_devices", 0)),
    )


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def state_to_json(state: RolloutState) -> dict[str, Any]:
    return {
        "status": state.status.value,
        "start_at": state.start_at.isoformat(),
        "phase_started_at": [t.isoformat() for t in state.phase_started_at],
        "phase_met_at": _time(state.phase_met_at),
        "halt_reason": state.halt_reason,
        "failures_counted_since": _time(state.failures_counted_since),
        "version": state.version,
        "gate": None if state.gate is None else state.gate.value,
    }


def state_from_json(data: dict[str, Any]) -> RolloutState:
    return RolloutState(
        status=RolloutStatus(data["status"]),
        start_at=datetime.fromisoformat(data["start_at"]),
        phase_started_at=tuple(datetime.fromisoformat(t) for t in data["phase_started_at"]),
        phase_met_at=_parse(data["phase_met_at"]),
        halt_reason=data["halt_reason"],
        failures_counted_since=_parse(data["failures_counted_since"]),
        version=data["version"],
        gate=None if data.get("gate") is None else GateStatus(data["gate"]),
    )
