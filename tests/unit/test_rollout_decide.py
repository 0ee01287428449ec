"""The rollout decision, scenario by scenario, driven the way the server's loop drives it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from edgeota.rollout import (
    ActivatePhase,
    Complete,
    Decision,
    DeviceOutcome,
    DeviceStatus,
    Halt,
    Phase,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    SetDesired,
    abort,
    decide,
    pause,
    phase_of,
    resume,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
HOUR = 3600


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class Loop:
    """What the server does with a decision: store the state, record PENDING for the told."""

    plan: RolloutPlan
    state: RolloutState
    targets: list[str]
    outcomes: dict[str, DeviceOutcome] = field(default_factory=dict)
    told: list[str] = field(default_factory=list)

    def run(self, now: datetime) -> Decision:
        decision = decide(self.plan, self.state, self.outcomes, self.targets, now)
        self.state = decision.state
        for device_id in decision.newly_eligible:
            self.outcomes[device_id] = DeviceOutcome(DeviceStatus.PENDING, now)
            self.told.append(device_id)
        return decision

    def report(self, ids: Iterable[str], status: DeviceStatus, now: datetime) -> None:
        for device_id in ids:
            self.outcomes[device_id] = DeviceOutcome(status, now)

    def in_phase(self, index: int) -> list[str]:
        return [d for d in self.targets if phase_of(self.plan, d) == index]


FIELD_TEST = [f"ft-{i}" for i in range(5)]
FLEET = [f"dev-{i:04d}" for i in range(400)]


def staged_loop(soak: float = HOUR, start_at: datetime = T0, **gate: float | None) -> Loop:
    plan = RolloutPlan.staged("rollout-42", (1, 10, 50, 100), FIELD_TEST, soak_seconds=soak, **gate)  # type: ignore[arg-type]
    return Loop(plan, RolloutState.scheduled(start_at), FIELD_TEST + FLEET)


def test_field_test_success_then_each_percentage_then_complete() -> None:
    loop = staged_loop(soak=HOUR, max_failed_share=0.05)
    now = 0.0
    activated: list[int] = []
    for index in range(len(loop.plan.phases)):
        decision = loop.run(at(now))
        activated += [a.index for a in decision.actions if isinstance(a, ActivatePhase)]
        assert loop.state.current_phase == index
        assert decision.eligible == {d for d in loop.targets if phase_of(loop.plan, d) <= index}
        # The phase's devices update; it meets its threshold, then soaks for an hour.
        now += 600
        loop.report(loop.in_phase(index), DeviceStatus.UPDATED, at(now))
        met = loop.run(at(now))
        assert met.state.phase_met_at == at(now)
        assert met.wake_at == at(now + HOUR)
        assert not any(isinstance(a, ActivatePhase) for a in loop.run(at(now + HOUR - 1)).actions)
        now += HOUR
    final = loop.run(at(now))
    assert activated == [0, 1, 2, 3, 4]
    assert final.state.status == RolloutStatus.COMPLETED
    assert final.actions[-1] == Complete()
    assert sorted(loop.told) == sorted(loop.targets)  # every device told exactly once
    assert len(loop.told) == len(set(loop.told))


def test_phases_hold_roughly_their_percentages() -> None:
    loop = staged_loop()
    sizes = [len(loop.in_phase(i)) for i in range(1, 5)]
    cumulative = [sum(sizes[: i + 1]) / len(FLEET) * 100 for i in range(4)]
    assert cumulative[-1] == 100
    assert abs(cumulative[1] - 10) < 5 and abs(cumulative[2] - 50) < 10


def test_bad_canary_halts_and_no_device_outside_the_field_test_is_touched() -> None:
    """Row 25: a release failing in the field-test phase halts the rollout by itself."""
    loop = staged_loop(soak=0, max_failed=0, max_failed_share=None)
    loop.run(at(0))
    assert sorted(loop.told) == FIELD_TEST
    loop.report(FIELD_TEST[:4], DeviceStatus.UPDATED, at(60))
    loop.report(FIELD_TEST[4:], DeviceStatus.ROLLED_BACK, at(60))
    halted = loop.run(at(60))
    assert halted.state.status == RolloutStatus.HALTED
    (halt,) = [a for a in halted.actions if isinstance(a, Halt)]
    assert "phase 0 (field-test)" in halt.reason
    assert "1 of 5 devices failed or rolled back" in halt.reason
    assert "max_failed=0" in halt.reason
    assert halt.reason == halted.state.halt_reason
    assert halted.eligible == set(FIELD_TEST)
    # Time passes, the last device recovers, new devices join: nothing moves.
    loop.report(FIELD_TEST[4:], DeviceStatus.UPDATED, at(120))
    loop.targets.append("late-joiner")
    for t in (120, 10 * HOUR, 100 * HOUR):
        later = loop.run(at(t))
        assert later.actions == ()
        assert later.eligible == set(FIELD_TEST)
        assert later.state == halted.state
    assert sorted(loop.told) == FIELD_TEST


def test_failure_share_threshold_names_counts_and_limit() -> None:
    plan = RolloutPlan("s", (Phase("all", 100, max_failed_share=0.1),))
    targets = [f"d{i}" for i in range(20)]
    loop = Loop(plan, RolloutState.scheduled(T0), targets)
    loop.run(at(0))
    loop.report(targets[:2], DeviceStatus.FAILED, at(10))
    assert loop.run(at(10)).state.status == RolloutStatus.RUNNING  # 2 of 20 is not over 10 %
    loop.report(targets[2:3], DeviceStatus.FAILED, at(20))
    decision = loop.run(at(20))
    assert decision.state.status == RolloutStatus.HALTED
    assert decision.state.halt_reason is not None
    assert "3 of 20 devices" in decision.state.halt_reason
    assert "max_failed_share=0.1 (2 of 20 devices)" in decision.state.halt_reason


def test_count_or_share_whichever_is_crossed_first() -> None:
    plan = RolloutPlan("s", (Phase("all", 100, max_failed=1, max_failed_share=0.5),))
    targets = [f"d{i}" for i in range(100)]
    loop = Loop(plan, RolloutState.scheduled(T0), targets)
    loop.run(at(0))
    loop.report(targets[:2], DeviceStatus.FAILED, at(1))
    reason = loop.run(at(1)).state.halt_reason
    assert reason is not None and "max_failed=1" in reason and "max_failed_share" not in reason


def test_a_later_failure_in_an_earlier_phase_still_halts() -> None:
    loop = staged_loop(soak=0, max_failed=0, max_failed_share=None)
    loop.run(at(0))
    loop.report(FIELD_TEST, DeviceStatus.UPDATED, at(10))
    assert loop.run(at(10)).state.current_phase is not None
    assert loop.state.current_phase >= 1  # type: ignore[operator]
    loop.report(FIELD_TEST[:1], DeviceStatus.ROLLED_BACK, at(20))
    decision = loop.run(at(20))
    assert decision.state.status == RolloutStatus.HALTED
    assert "phase 0 (field-test)" in str(decision.state.halt_reason)


def test_soak_counts_from_when_the_threshold_was_met_and_restarts_if_lost() -> None:
    plan = RolloutPlan(
        "s",
        (
            Phase("half", 50, success_share=0.9, max_failed_share=0.5, soak_seconds=HOUR),
            Phase("all", 100, max_failed_share=0.5),
        ),
    )
    targets = [f"d{i}" for i in range(200)]
    loop = Loop(plan, RolloutState.scheduled(T0), targets)
    loop.run(at(0))
    first = loop.in_phase(0)
    need = -(-len(first) * 9 // 10)
    # Met late in the phase: the soak counts from then, not from the phase start.
    loop.report(first[:need], DeviceStatus.UPDATED, at(2 * HOUR))
    assert loop.run(at(2 * HOUR)).state.phase_met_at == at(2 * HOUR)
    assert loop.run(at(2 * HOUR + 100)).actions == ()
    # One device rolls back during the soak: the threshold is lost, the soak starts over.
    loop.report(first[:1], DeviceStatus.ROLLED_BACK, at(2 * HOUR + 200))
    lost = loop.run(at(2 * HOUR + 200))
    assert lost.state.phase_met_at is None and lost.wake_at is None
    loop.report(first[need : need + 1], DeviceStatus.UPDATED, at(2 * HOUR + 300))
    assert loop.run(at(2 * HOUR + 300)).state.phase_met_at == at(2 * HOUR + 300)
    assert loop.run(at(3 * HOUR + 200)).actions == ()  # an hour after the first meeting
    assert loop.run(at(3 * HOUR + 299)).actions == ()
    advanced = loop.run(at(3 * HOUR + 300))
    assert ActivatePhase(1, "all") in advanced.actions
    assert advanced.state.phase_started_at[1] == at(3 * HOUR + 300)


def test_scheduled_rollout_starts_at_start_at_and_not_before() -> None:
    loop = staged_loop(start_at=at(HOUR))
    early = loop.run(at(HOUR - 1))
    assert early.actions == () and early.eligible == set()
    assert early.state.status == RolloutStatus.SCHEDULED and early.state.version == 0
    assert early.wake_at == at(HOUR)
    started = loop.run(at(HOUR))
    assert started.state.status == RolloutStatus.RUNNING
    assert started.actions == (ActivatePhase(0, "field-test"), SetDesired(tuple(FIELD_TEST)))
    assert started.state.phase_started_at == (at(HOUR),)
    assert started.state.version == 1


def test_pause_holds_everything_and_resume_lets_it_go_on() -> None:
    loop = staged_loop(soak=0)
    loop.run(at(0))
    loop.state = pause(loop.state)
    loop.report(FIELD_TEST, DeviceStatus.UPDATED, at(10))
    loop.targets.append("joiner")
    paused = loop.run(at(10))
    assert paused.actions == () and paused.state == loop.state
    assert paused.eligible == set(FIELD_TEST)
    loop.state = resume(loop.state, at(20))
    resumed = loop.run(at(20))
    assert ActivatePhase(1, "1%") in resumed.actions
    assert resumed.state.status == RolloutStatus.RUNNING


def test_abort_stops_for_good() -> None:
    loop = staged_loop(soak=0)
    loop.run(at(0))
    loop.state = abort(loop.state)
    loop.report(FIELD_TEST, DeviceStatus.UPDATED, at(10))
    decision = loop.run(at(10))
    assert decision.actions == () and decision.state.status == RolloutStatus.ABORTED
    assert decision.eligible == set(FIELD_TEST)


def test_resume_after_halt_accepts_old_failures_and_soaks_again() -> None:
    plan = RolloutPlan(
        "s", (Phase("all", 100, success_share=0.5, max_failed=0, soak_seconds=HOUR),)
    )
    targets = [f"d{i}" for i in range(10)]
    loop = Loop(plan, RolloutState.scheduled(T0), targets)
    loop.run(at(0))
    loop.report(targets[:6], DeviceStatus.UPDATED, at(10))
    loop.report(targets[6:7], DeviceStatus.FAILED, at(20))
    assert loop.run(at(20)).state.status == RolloutStatus.HALTED
    loop.state = resume(loop.state, at(30))
    assert loop.state.failures_counted_since == at(30)
    decision = loop.run(at(30))
    assert decision.state.status == RolloutStatus.RUNNING
    assert decision.state.phase_met_at == at(30)  # the soak starts over from the resume
    assert loop.run(at(30 + HOUR - 1)).actions == ()
    # A failure after the resume counts again.
    loop.report(targets[7:8], DeviceStatus.FAILED, at(40))
    halted = loop.run(at(40))
    assert halted.state.status == RolloutStatus.HALTED
    assert "1 of 10 devices" in str(halted.state.halt_reason)


def test_device_joining_mid_rollout_lands_in_a_started_phase_and_is_told_at_once() -> None:
    loop = staged_loop(soak=0)
    loop.run(at(0))
    loop.report(FIELD_TEST, DeviceStatus.UPDATED, at(10))
    loop.run(at(10))  # field test done: the 1 % phase starts
    loop.report(loop.in_phase(1), DeviceStatus.UPDATED, at(20))
    loop.run(at(20))  # 1 % done: the 10 % phase starts
    assert loop.state.current_phase == 2
    plan = loop.plan
    early = next(f"new-{i}" for i in range(10_000) if phase_of(plan, f"new-{i}") <= 2)
    late = next(f"new-{i}" for i in range(10_000) if phase_of(plan, f"new-{i}") == 4)
    loop.targets += [early, late]
    version = loop.state.version
    decision = loop.run(at(30))
    assert decision.actions == (SetDesired((early,)),)
    assert early in decision.eligible and late not in decision.eligible
    assert decision.state.current_phase == 2
    # Telling devices bumps the version, so two processes cannot both apply it.
    assert decision.state.version == version + 1
    assert loop.run(at(31)).actions == ()  # told once, not again
    # The same phase on every pass and in every process: nothing about it is stored.
    assert phase_of(plan, early) == phase_of(
        RolloutPlan.staged("rollout-42", (1, 10, 50, 100), FIELD_TEST), early
    )


def test_halted_rollout_tells_no_joiner_even_into_a_started_phase() -> None:
    loop = staged_loop(soak=0, max_failed=0, max_failed_share=None)
    loop.run(at(0))
    loop.report(FIELD_TEST, DeviceStatus.UPDATED, at(10))
    loop.run(at(10))
    loop.report(loop.in_phase(1), DeviceStatus.UPDATED, at(20))
    loop.run(at(20))
    assert loop.state.current_phase == 2
    loop.report(loop.in_phase(2)[:1], DeviceStatus.FAILED, at(30))
    halted = loop.run(at(30))
    assert halted.state.status == RolloutStatus.HALTED
    assert "phase 2 (10%)" in str(halted.state.halt_reason)
    joiner = next(f"new-{i}" for i in range(10_000) if phase_of(loop.plan, f"new-{i}") == 1)
    loop.targets.append(joiner)
    later = loop.run(at(40))
    assert later.actions == () and joiner not in later.eligible


def test_empty_phases_pass_in_the_same_decision() -> None:
    plan = RolloutPlan.staged("s", (0.001, 0.002, 100), ["ft"], soak_seconds=0)
    loop = Loop(plan, RolloutState.scheduled(T0), ["ft", "a", "b", "c"])
    loop.run(at(0))
    loop.report(["ft"], DeviceStatus.UPDATED, at(5))
    decision = loop.run(at(5))
    assert [a.index for a in decision.actions if isinstance(a, ActivatePhase)] == [1, 2, 3]
    assert decision.newly_eligible == ("a", "b", "c")
    assert loop.run(at(5)).actions == ()


def test_completing_decision_tells_the_last_joiners_and_then_nothing_moves() -> None:
    plan = RolloutPlan("s", (Phase("all", 100, success_share=0.5),))
    targets = [f"d{i}" for i in range(4)]
    loop = Loop(plan, RolloutState.scheduled(T0), targets)
    loop.run(at(0))
    loop.report(targets, DeviceStatus.UPDATED, at(1))
    loop.targets.append("joiner")
    done = loop.run(at(1))
    assert done.actions == (SetDesired(("joiner",)), Complete())
    loop.targets.append("after-completion")
    after = loop.run(at(2))
    assert after.actions == () and "after-completion" not in after.eligible


def test_same_inputs_give_the_same_decision_and_applied_decisions_converge() -> None:
    loop = staged_loop(soak=0)
    first = decide(loop.plan, loop.state, loop.outcomes, loop.targets, at(0))
    assert first == decide(loop.plan, loop.state, loop.outcomes, loop.targets, at(0))
    loop.run(at(0))
    again = loop.run(at(0))
    assert again.actions == () and again.state == first.state


def test_version_moves_only_when_something_changes() -> None:
    loop = staged_loop(soak=HOUR)
    assert loop.run(at(0)).state.version == 1
    assert loop.run(at(1)).state.version == 1
    loop.report(FIELD_TEST, DeviceStatus.UPDATED, at(2))
    assert loop.run(at(2)).state.version == 2  # phase_met_at recorded
    assert loop.run(at(3)).state.version == 2


def test_updating_and_pending_count_neither_way() -> None:
    plan = RolloutPlan("s", (Phase("all", 100, success_share=1.0, max_failed=0),))
    loop = Loop(plan, RolloutState.scheduled(T0), ["a", "b"])
    loop.run(at(0))
    loop.report(["a"], DeviceStatus.UPDATING, at(1))
    decision = loop.run(at(1))
    assert decision.state.status == RolloutStatus.RUNNING
    assert decision.phase_counts[0].updated == 0 and decision.phase_counts[0].failed == 0


def test_naive_times_are_read_as_utc() -> None:
    loop = staged_loop(start_at=datetime(2025, 3, 3, 10, 0))
    assert loop.state.start_at == datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
    assert loop.run(datetime(2025, 3, 3, 10, 0)).state.status == RolloutStatus.RUNNING


def test_state_from_another_plan_is_refused() -> None:
    plan = RolloutPlan.staged("s", (100,))
    state = RolloutState(RolloutStatus.RUNNING, T0, (T0, T0, T0))
    with pytest.raises(ValueError, match="3 started phases but the plan has only 1"):
        decide(plan, state, {}, [], T0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": RolloutStatus.RUNNING}, "has started its first phase"),
        ({"status": RolloutStatus.SCHEDULED, "phase_started_at": (T0,)}, "no started phase"),
        ({"status": RolloutStatus.HALTED, "phase_started_at": (T0,)}, "halt_reason"),
        ({"status": RolloutStatus.SCHEDULED, "version": -1}, "version must be >= 0"),
    ],
)
def test_inconsistent_states_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RolloutState(start_at=T0, **kwargs)  # type: ignore[arg-type]
