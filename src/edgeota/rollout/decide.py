"""The rollout engine's one decision: from plan, state, device outcomes and time, what next.

``decide`` is pure, so any number of server processes may run it over one database: each
applies its decision with a compare-and-set on ``RolloutState.version``, and the losers
decide again on what the winner wrote. Feeding a decision's state back in, together with a
PENDING outcome for each device it told, yields the same state and no action: decisions
converge instead of repeating.

Rules:

- A scheduled rollout starts its first phase at ``start_at`` (at the first decision made
  at or after it), unless its plan has a simulated-environment gate that has not passed yet:
  then it stays scheduled, and the caller runs the gate (:mod:`edgeota.rollout.gate`).
- While running, every started phase is checked against its failure threshold first; the
  first one crossed halts the rollout, and a halted rollout tells no new device.
- The current phase advances once it meets its success threshold *and* has kept meeting it
  for its soak time, counted from the moment it began to meet it (not from the phase start:
  a soak is time spent watching the whole phase run the release). If it stops meeting the
  threshold, the soak starts over when it meets it again.
- Only target devices count and are told: a field-test device outside the target group is
  neither. A phase with no target device meets its threshold at once, so only its soak
  holds it.
- Target devices in started phases are eligible; those with no outcome yet are told with
  ``SetDesired``, which is how a device joining mid-rollout into a started phase gets the
  release at once.
- Paused, halted, aborted, completed and rolling-back rollouts change nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from edgeota.rollout.actions import (
    Action,
    ActivatePhase,
    Complete,
    Decision,
    Halt,
    PhaseCounts,
    SetDesired,
)
from edgeota.rollout.assign import phase_of
from edgeota.rollout.gate import awaiting_gate
from edgeota.rollout.plan import Phase, RolloutPlan
from edgeota.rollout.state import (
    FAILURES,
    DeviceOutcome,
    DeviceStatus,
    RolloutState,
    RolloutStatus,
)
from edgeota.timeutil import as_utc

# Shares times sizes are rounded to this many decimals before comparing, so that a share
# like 0.07 of 100 devices means 7 devices and not 7.000000000000001.
_SHARE_DECIMALS = 9


def decide(
    plan: RolloutPlan,
    state: RolloutState,
    devices: Mapping[str, DeviceOutcome],
    target_device_ids: Iterable[str],
    now: datetime,
) -> Decision:
    """Decide what the rollout does next. See the module docstring for the rules."""
    now = as_utc(now)
    if state.started_phases > len(plan.phases):
        raise ValueError(
            f"the rollout state has {state.started_phases} started phases but the plan has "
            f"only {len(plan.phases)}: this state belongs to another plan"
        )
    membership = {device_id: phase_of(plan, device_id) for device_id in target_device_ids}
    counts = _count(len(plan.phases), membership, devices, state.failures_counted_since)

    actions: list[Action] = []
    wake_at: datetime | None = None
    new = state
    if state.status == RolloutStatus.SCHEDULED:
        if now < state.start_at:
            return Decision(state, (), frozenset(), counts, wake_at=state.start_at)
        if awaiting_gate(plan, state, now):
            return Decision(state, (), frozenset(), counts)
        new = replace(state, status=RolloutStatus.RUNNING, phase_started_at=(now,))
        actions.append(ActivatePhase(0, plan.phases[0].name))
    if new.status == RolloutStatus.RUNNING:
        new, wake_at = _advance(plan, new, counts, now, actions)

    # Running, or completed by this very decision: every target device of a started phase
    # may have the release, and those not told yet are told now. Otherwise the eligible set
    # is frozen to the devices already told.
    telling = new.status == RolloutStatus.RUNNING or (
        new.status == RolloutStatus.COMPLETED and state.status != RolloutStatus.COMPLETED
    )
    started = new.started_phases
    eligible = frozenset(
        d for d, p in membership.items() if p < started and (telling or d in devices)
    )
    newly = tuple(sorted(d for d in eligible if d not in devices))
    if newly:
        # Before Complete, so that the actions read in the order they happen.
        at = len(actions) - 1 if actions and isinstance(actions[-1], Complete) else len(actions)
        actions.insert(at, SetDesired(newly))

    # Telling devices changes no field of the state, yet it must bump the version too:
    # otherwise two processes could both apply the same SetDesired, and the second would
    # reset outcomes that the first one's devices had already moved on from.
    if actions or new != state:
        new = replace(new, version=state.version + 1)
    return Decision(new, tuple(actions), eligible, counts, wake_at)


def _advance(
    plan: RolloutPlan,
    state: RolloutState,
    counts: tuple[PhaseCounts, ...],
    now: datetime,
    actions: list[Action],
) -> tuple[RolloutState, datetime | None]:
    """Run the running-state rules to a fixed point; return the state and when to wake."""
    # Looping (rather than one step per call) is what makes decide converge: an empty phase
    # with no soak is passed in the same decision, so deciding again finds nothing to do.
    while True:
        reason = _failure_reason(plan, counts, state.started_phases)
        if reason is not None:
            actions.append(Halt(reason))
            return replace(state, status=RolloutStatus.HALTED, halt_reason=reason), None
        index = state.started_phases - 1
        phase = plan.phases[index]
        if not _succeeded(phase, counts[index]):
            return replace(state, phase_met_at=None), None
        met_at = state.phase_met_at or now
        state = replace(state, phase_met_at=met_at)
        soak_end = met_at + timedelta(seconds=phase.soak_seconds)
        if now < soak_end:
            return state, soak_end
        if index == len(plan.phases) - 1:
            actions.append(Complete())
            return replace(state, status=RolloutStatus.COMPLETED), None
        state = replace(state, phase_started_at=(*state.phase_started_at, now), phase_met_at=None)
        actions.append(ActivatePhase(index + 1, plan.phases[index + 1].name))


def _count(
    phase_total: int,
    membership: Mapping[str, int],
    devices: Mapping[str, DeviceOutcome],
    failures_since: datetime | None,
) -> tuple[PhaseCounts, ...]:
    size = [0] * phase_total
    updated = [0] * phase_total
    failed = [0] * phase_total
    for device_id, phase in membership.items():
        size[phase] += 1
        outcome = devices.get(device_id)
        if outcome is None:
            continue
        if outcome.status == DeviceStatus.UPDATED:
            updated[phase] += 1
        elif outcome.status in FAILURES and (
            failures_since is None or outcome.changed_at > failures_since
        ):
            failed[phase] += 1
    return tuple(PhaseCounts(*c) for c in zip(size, updated, failed, strict=True))


def _succeeded(phase: Phase, counts: PhaseCounts) -> bool:
    required = math.ceil(round(phase.success_share * counts.size, _SHARE_DECIMALS))
    return counts.updated >= required


def _failure_reason(plan: RolloutPlan, counts: tuple[PhaseCounts, ...], started: int) -> str | None:
    """Why the first started phase over its failure threshold halts the rollout, or None."""
    for index in range(started):
        phase, c = plan.phases[index], counts[index]
        crossed: list[str] = []
        if phase.max_failed is not None and c.failed > phase.max_failed:
            crossed.append(f"max_failed={phase.max_failed}")
        if phase.max_failed_share is not None:
            allowed = round(phase.max_failed_share * c.size, _SHARE_DECIMALS)
            if c.failed > allowed:
                crossed.append(
                    f"max_failed_share={phase.max_failed_share:g} ({allowed:g} of {c.size} devices)"
                )
        if crossed:
            return (
                f"phase {index} ({phase.name}) crossed its failure threshold: {c.failed} of "
                f"{c.size} devices failed or rolled back, over {' and '.join(crossed)}; "
                "resume to accept these failures and go on, or roll back"
            )
    return None
