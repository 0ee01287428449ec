"""The simulated-environment gate in the pure rollout logic: hold, pass, fail, waive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edgeota.rollout import (
    ActivatePhase,
    Command,
    GateStatus,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    apply_command,
    awaiting_gate,
    decide,
    fail_gate,
    pass_gate,
)

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
DEVICES = [f"dev-{i:03d}" for i in range(50)]


def gated(n: int = 3) -> RolloutPlan:
    return RolloutPlan.staged("gate", (10, 100), sim_gate_devices=n)


def test_a_gated_rollout_stays_scheduled_past_its_start_until_the_gate_passes() -> None:
    plan, state = gated(), RolloutState.scheduled(T0)
    held = decide(plan, state, {}, DEVICES, T0 + timedelta(hours=1))
    assert held.state == state and held.actions == () and held.eligible == frozenset()
    assert awaiting_gate(plan, state, T0)
    assert not awaiting_gate(plan, state, T0 - timedelta(seconds=1))

    passed = pass_gate(state)
    assert passed.gate == GateStatus.PASSED and passed.version == state.version + 1
    assert not awaiting_gate(plan, passed, T0)
    started = decide(plan, passed, {}, DEVICES, T0)
    assert started.state.status == RolloutStatus.RUNNING
    assert isinstance(started.actions[0], ActivatePhase)


def test_a_failed_gate_halts_before_any_phase_and_tells_no_device() -> None:
    plan = gated()
    halted = fail_gate(RolloutState.scheduled(T0), "2 of 3 devices rolled back")
    assert halted.status == RolloutStatus.HALTED and halted.gate == GateStatus.FAILED
    assert halted.halt_reason == "simulated environment: 2 of 3 devices rolled back"
    assert halted.phase_started_at == ()
    later = decide(plan, halted, {}, DEVICES, T0 + timedelta(days=1))
    assert later.actions == () and later.eligible == frozenset() and later.state == halted


def test_resuming_a_failed_gate_waives_it_and_the_rollout_starts() -> None:
    plan = gated()
    halted = fail_gate(RolloutState.scheduled(T0), "broken")
    resumed = apply_command(Command.RESUME, halted, T0 + timedelta(hours=2))
    assert resumed.status == RolloutStatus.SCHEDULED and resumed.gate == GateStatus.WAIVED
    assert decide(plan, resumed, {}, DEVICES, T0 + timedelta(hours=2)).state.status == (
        RolloutStatus.RUNNING
    )


def test_a_plan_without_gate_starts_at_once() -> None:
    plan = RolloutPlan.staged("nogate", (100,))
    assert not awaiting_gate(plan, RolloutState.scheduled(T0), T0)
    assert decide(plan, RolloutState.scheduled(T0), {}, DEVICES, T0).state.status == (
        RolloutStatus.RUNNING
    )


def test_a_gate_outcome_is_taken_only_while_it_is_pending() -> None:
    passed = pass_gate(RolloutState.scheduled(T0))
    with pytest.raises(ValueError, match="gate is pending"):
        pass_gate(passed)
    with pytest.raises(ValueError, match="gate is pending"):
        fail_gate(RolloutState(RolloutStatus.RUNNING, T0, (T0,)), "late")
    paused = apply_command(Command.PAUSE, RolloutState.scheduled(T0), T0)
    assert fail_gate(paused, "x").status == RolloutStatus.HALTED


def test_inconsistent_gate_states_are_refused() -> None:
    with pytest.raises(ValueError, match="has started its first phase"):
        RolloutState(RolloutStatus.HALTED, T0, halt_reason="x")
    with pytest.raises(ValueError, match="before any phase starts"):
        RolloutState(RolloutStatus.HALTED, T0, (T0,), halt_reason="x", gate=GateStatus.FAILED)
    with pytest.raises(ValueError, match="sim_gate_devices"):
        RolloutPlan.staged("s", (100,), sim_gate_devices=-1)
