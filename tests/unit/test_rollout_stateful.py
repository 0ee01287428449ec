"""A stateful model of the rollout loop: random reports, clocks, joiners and operator commands.

After every step the invariants that keep a fleet safe must hold: no device outside the
started phases is ever told, nothing frozen tells anyone, phases never go back, versions move
exactly when something changes, and every decision, fed back in, is a fixed point.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from edgeota.rollout import (
    ALLOWED_FROM,
    Command,
    Complete,
    DeviceOutcome,
    DeviceStatus,
    Halt,
    Phase,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    apply_command,
    decide,
    phase_of,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
FIELD_TEST = ("ft-0", "ft-1", "ft-2")
PLAN = RolloutPlan(
    "stateful",
    (
        Phase("field-test", None, success_share=1.0, max_failed=2, soak_seconds=60),
        Phase("5%", 5, success_share=0.8, max_failed_share=0.3, soak_seconds=30),
        Phase("25%", 25, success_share=0.8, max_failed=3, max_failed_share=0.3),
        Phase("100%", 100, success_share=0.9, max_failed_share=0.2, soak_seconds=600),
    ),
    frozenset(FIELD_TEST),
)
TELLING = {RolloutStatus.RUNNING, RolloutStatus.SCHEDULED}


class RolloutLoop(RuleBasedStateMachine):
    """Each step changes the world (or not) and then runs one pass of the server's loop."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.state = RolloutState.scheduled(T0)
        self.targets: list[str] = [*FIELD_TEST, *(f"d{i}" for i in range(30))]
        self.outcomes: dict[str, DeviceOutcome] = {}
        self.eligible: frozenset[str] = frozenset()
        self.next_joiner = 0
        self.highest_phase = -1

    @initialize(delay=st.sampled_from([0, 0, 0, 30]))
    def schedule(self, delay: int) -> None:
        self.state = RolloutState.scheduled(T0 + timedelta(seconds=delay))

    # The outside world.

    @rule(seconds=st.sampled_from([0, 1, 15, 30, 59, 60, 600]))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self.loop_pass()

    @rule(
        pick=st.integers(0, 10_000),
        status=st.sampled_from(
            [DeviceStatus.UPDATING, DeviceStatus.FAILED, DeviceStatus.ROLLED_BACK]
            + [DeviceStatus.UPDATED] * 5
        ),
    )
    @precondition(lambda self: bool(self.outcomes))
    def a_device_reports(self, pick: int, status: DeviceStatus) -> None:
        told = sorted(self.outcomes)
        self.outcomes[told[pick % len(told)]] = DeviceOutcome(status, self.now)
        self.loop_pass()

    @rule()
    def told_devices_update(self) -> None:
        """Most devices succeed: without this the rollout would rarely get far."""
        for device_id, outcome in self.outcomes.items():
            if outcome.status in (DeviceStatus.PENDING, DeviceStatus.UPDATING):
                self.outcomes[device_id] = DeviceOutcome(DeviceStatus.UPDATED, self.now)
        self.loop_pass()

    @rule()
    def a_device_joins(self) -> None:
        self.targets.append(f"joiner-{self.next_joiner}")
        self.next_joiner += 1
        self.loop_pass()

    # Pause, abort and rollback hold or end a run, so they go through only one time in ten;
    # illegal commands are drawn too.
    @rule(command=st.sampled_from(list(Command)), dice=st.integers(0, 9))
    def operator(self, command: Command, dice: int) -> None:
        if dice != 0 and command != Command.RESUME:
            return
        before = self.state
        try:
            after = apply_command(command, before, self.now)
        except ValueError as e:
            assert before.status not in ALLOWED_FROM[command]
            assert str(before.status) in str(e) and str(command) in str(e)
            assert self.state == before
            return
        assert before.status in ALLOWED_FROM[command]
        assert after.version == before.version + 1
        self.state = after
        self.loop_pass()

    # The server's loop.

    def loop_pass(self) -> None:
        before, told_before = self.state, set(self.outcomes)
        decision = decide(PLAN, before, self.outcomes, self.targets, self.now)
        after = decision.state

        if before.status not in TELLING:
            assert decision.actions == () and after == before
            assert decision.eligible <= told_before
        if before.status == after.status == RolloutStatus.RUNNING:
            assert decision.eligible >= self.eligible  # the group only grows here
        if after.status == RolloutStatus.HALTED:
            assert decision.newly_eligible == ()
            assert any(isinstance(a, Halt) for a in decision.actions) == (
                before.status != RolloutStatus.HALTED
            )
        if after.status == RolloutStatus.COMPLETED:
            assert after.started_phases == len(PLAN.phases)
            assert (decision.actions[-1:] == (Complete(),)) == (
                before.status != RolloutStatus.COMPLETED
            )
        assert after.started_phases >= before.started_phases
        changed = replace(after, version=before.version) != before or bool(decision.actions)
        assert after.version == before.version + int(changed)

        for device_id in decision.newly_eligible:
            assert device_id not in told_before
            self.outcomes[device_id] = DeviceOutcome(DeviceStatus.PENDING, self.now)
        self.state, self.eligible = after, decision.eligible

        again = decide(PLAN, self.state, self.outcomes, self.targets, self.now)
        assert again.actions == () and again.state == self.state

    # What must hold whatever happened.

    @invariant()
    def only_started_phases_are_told(self) -> None:
        started = self.state.started_phases
        for device_id in self.outcomes:
            assert phase_of(PLAN, device_id) < started, device_id

    @invariant()
    def phases_never_go_back(self) -> None:
        current = self.state.current_phase
        index = -1 if current is None else current
        assert index >= self.highest_phase
        self.highest_phase = index


TestRolloutLoop = RolloutLoop.TestCase
TestRolloutLoop.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
