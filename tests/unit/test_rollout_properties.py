"""Properties of decide over random plans, fleets, outcomes and clocks.

- eligibility never shrinks while a rollout runs (the target group only grows here);
- after a halt, the eligible set never grows and no device is told;
- decide is pure, and a decision fed back in (with its devices recorded) changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeota.rollout import (
    DeviceOutcome,
    DeviceStatus,
    Phase,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    decide,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
FAST = settings(max_examples=60, deadline=None)


@st.composite
def plans(draw: st.DrawFn) -> RolloutPlan:
    cuts = draw(st.lists(st.integers(1, 99), max_size=3, unique=True))
    percentages = [*sorted(cuts), 100]
    field_test = draw(st.sets(st.sampled_from([f"ft-{i}" for i in range(4)]), max_size=3))

    def phase(name: str, percent: float | None) -> Phase:
        max_failed = draw(st.none() | st.integers(0, 3))
        share = draw(st.floats(0, 0.5)) if max_failed is None else draw(st.none())
        return Phase(
            name,
            percent,
            success_share=draw(st.sampled_from([0.5, 0.8, 0.95, 1.0])),
            max_failed=max_failed,
            max_failed_share=share,
            soak_seconds=draw(st.sampled_from([0, 30, 300])),
        )

    phases = [phase("field-test", None)] if field_test else []
    phases += [phase(f"{p}%", p) for p in percentages]
    return RolloutPlan(draw(st.text(min_size=1, max_size=6)), tuple(phases), frozenset(field_test))


statuses = st.sampled_from(list(DeviceStatus))
device_ids = st.sampled_from([f"d{i}" for i in range(40)] + [f"ft-{i}" for i in range(4)])


@st.composite
def steps(draw: st.DrawFn) -> tuple[int, dict[str, DeviceStatus], list[str]]:
    """One pass of the loop: seconds elapsed, outcome reports, devices joining the group."""
    seconds = draw(st.sampled_from([0, 1, 29, 30, 120, 301]))
    reports = draw(st.dictionaries(device_ids, statuses, max_size=8))
    joiners = draw(st.lists(device_ids, max_size=3))
    return seconds, reports, joiners


@FAST
@given(
    plan=plans(),
    initial=st.lists(device_ids, min_size=1, max_size=30, unique=True),
    script=st.lists(steps(), min_size=1, max_size=25),
)
def test_eligibility_grows_while_running_and_freezes_after_a_halt(
    plan: RolloutPlan,
    initial: list[str],
    script: list[tuple[int, dict[str, DeviceStatus], list[str]]],
) -> None:
    state = RolloutState.scheduled(T0)
    targets = list(initial)
    outcomes: dict[str, DeviceOutcome] = {}
    now = T0
    previous: frozenset[str] = frozenset()
    for seconds, reports, joiners in script:
        now += timedelta(seconds=seconds)
        # Devices report only once told: a device with no outcome has not been asked.
        for device_id, status in reports.items():
            if device_id in outcomes:
                outcomes[device_id] = DeviceOutcome(status, now)
        targets += [j for j in joiners if j not in targets]
        before = state
        decision = decide(plan, state, outcomes, targets, now)
        if before.status == RolloutStatus.RUNNING:
            assert decision.eligible >= previous
        if before.status == RolloutStatus.HALTED:
            assert decision.eligible <= previous
            assert decision.newly_eligible == ()
        if decision.state.status == RolloutStatus.HALTED:
            assert decision.newly_eligible == ()
        for device_id in decision.newly_eligible:
            outcomes[device_id] = DeviceOutcome(DeviceStatus.PENDING, now)
        state, previous = decision.state, decision.eligible


@st.composite
def states(draw: st.DrawFn, plan: RolloutPlan) -> RolloutState:
    status = draw(st.sampled_from(list(RolloutStatus)))
    if status == RolloutStatus.SCHEDULED:
        return RolloutState.scheduled(T0 + timedelta(seconds=draw(st.integers(-60, 60))))
    started = draw(st.integers(1, len(plan.phases)))
    starts = tuple(T0 + timedelta(seconds=10 * i) for i in range(started))
    met = draw(st.none() | st.integers(0, 600).map(lambda s: T0 + timedelta(seconds=s)))
    since = draw(st.none() | st.just(T0 + timedelta(seconds=100)))
    reason = "halted earlier" if status == RolloutStatus.HALTED else None
    return RolloutState(status, T0, starts, met, reason, since, draw(st.integers(0, 5)))


@FAST
@given(data=st.data())
def test_decide_is_pure_and_converges(data: st.DataObject) -> None:
    plan = data.draw(plans())
    state = data.draw(states(plan))
    targets = data.draw(st.lists(device_ids, max_size=40))
    # Arbitrary outcomes, even for devices never told or outside the target group.
    outcomes = {
        d: DeviceOutcome(s, T0 + timedelta(seconds=t))
        for d, (s, t) in data.draw(
            st.dictionaries(device_ids, st.tuples(statuses, st.integers(0, 600)))
        ).items()
    }
    now = T0 + timedelta(seconds=data.draw(st.integers(0, 1200)))

    first = decide(plan, state, outcomes, targets, now)
    assert first == decide(plan, state, outcomes, targets, now)
    assert (first.state.version == state.version) == (first.state == state)
    assert first.state.version in (state.version, state.version + 1)
    if first.actions:  # so that a compare-and-set lets only one process apply them
        assert first.state.version == state.version + 1

    applied = dict(outcomes)
    for device_id in first.newly_eligible:
        assert device_id not in outcomes
        applied[device_id] = DeviceOutcome(DeviceStatus.PENDING, now)
    second = decide(plan, first.state, applied, targets, now)
    assert second.actions == ()
    assert second.state == first.state
    assert second.eligible == first.eligible
