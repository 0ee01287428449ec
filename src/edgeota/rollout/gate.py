"""The simulated-environment gate: a rollout's first phase waits for simulated devices.

A plan with ``sim_gate_devices > 0`` stays scheduled past its start time until the caller has
installed the release on that many simulated devices and reported the outcome with
:func:`pass_gate` or :func:`fail_gate`. A failed gate halts the rollout before any real device
is told; resuming it (``edgeota.rollout.commands.resume``) waives the gate.

    gate     status before          after
    pass     scheduled, paused      unchanged, gate passed: the first phase may start
    fail     scheduled, paused      halted, gate failed, with the reason
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from edgeota.rollout.plan import RolloutPlan
from edgeota.rollout.state import GateStatus, RolloutState, RolloutStatus
from edgeota.timeutil import as_utc

GATE_REASON_PREFIX = "simulated environment: "
_OPEN = frozenset({RolloutStatus.SCHEDULED, RolloutStatus.PAUSED})


def gate_pending(plan: RolloutPlan, state: RolloutState) -> bool:
    """Whether the plan has a gate whose outcome is still unknown."""
    return plan.sim_gate_devices > 0 and state.gate is None and not state.phase_started_at


def awaiting_gate(plan: RolloutPlan, state: RolloutState, now: datetime) -> bool:
    """Whether the gate should be running now: scheduled, due, and not passed or waived."""
    return (
        state.status == RolloutStatus.SCHEDULED
        and as_utc(now) >= state.start_at
        and gate_pending(plan, state)
    )


def _check(state: RolloutState, what: str) -> None:
    if state.status not in _OPEN or state.gate is not None or state.phase_started_at:
        raise ValueError(
            f"cannot record a {what} gate on a rollout that is {state.status} with gate "
            f"{state.gate or 'pending'}: only a scheduled or paused rollout whose gate is "
            "pending takes a gate outcome"
        )


def pass_gate(state: RolloutState) -> RolloutState:
    _check(state, "passed")
    return replace(state, gate=GateStatus.PASSED, version=state.version + 1)


def fail_gate(state: RolloutState, reason: str) -> RolloutState:
    _check(state, "failed")
    if not reason.startswith(GATE_REASON_PREFIX):
        reason = GATE_REASON_PREFIX + reason
    return replace(
        state,
        status=RolloutStatus.HALTED,
        gate=GateStatus.FAILED,
        halt_reason=reason,
        version=state.version + 1,
    )
