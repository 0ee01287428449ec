"""Operator commands on a rollout, as one transition table of pure functions.

A command the table does not allow in the current status raises ``ValueError`` naming both,
and returns nothing: the caller's state stays what it was. Every allowed command bumps the
state's version, so it races safely with the decision loop under a compare-and-set.

    command   from                                        to
    pause     scheduled, running                          paused
    resume    paused                                      running (scheduled if never started)
    resume    halted                                      running, failures counted afresh
    resume    halted by a failed gate                     scheduled, the gate waived
    abort     scheduled, running, paused, halted          aborted
    rollback  running, paused, halted, completed, aborted rolling_back

Resuming a halted rollout means the operator accepts the failures seen so far: from then on
the failure thresholds count only failures reported after the resume, and the current phase
must soak again from scratch. Resuming a paused one keeps its soak clock: devices kept
reporting while it was paused, and the pause only held the phases back.

``rollback`` only records the decision; the fleet rollback itself (re-issuing the previous
release's content as a new, higher version, in a new rollout) is the caller's.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from enum import StrEnum

from edgeota.rollout.state import GateStatus, RolloutState, RolloutStatus
from edgeota.timeutil import as_utc


class Command(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"


R = RolloutStatus

ALLOWED_FROM: dict[Command, frozenset[RolloutStatus]] = {
    Command.PAUSE: frozenset({R.SCHEDULED, R.RUNNING}),
    Command.RESUME: frozenset({R.PAUSED, R.HALTED}),
    Command.ABORT: frozenset({R.SCHEDULED, R.RUNNING, R.PAUSED, R.HALTED}),
    Command.ROLLBACK: frozenset({R.RUNNING, R.PAUSED, R.HALTED, R.COMPLETED, R.ABORTED}),
}


def _check(command: Command, state: RolloutState) -> None:
    allowed = ALLOWED_FROM[command]
    if state.status not in allowed:
        names = ", ".join(sorted(allowed))
        raise ValueError(
            f"cannot {command} a rollout that is {state.status}; "
            f"{command} is allowed only when it is {names}"
        )


def pause(state: RolloutState) -> RolloutState:
    _check(Command.PAUSE, state)
    return replace(state, status=R.PAUSED, version=state.version + 1)


def resume(state: RolloutState, now: datetime) -> RolloutState:
    _check(Command.RESUME, state)
    if state.status == R.HALTED and not state.phase_started_at:
        # Halted by the simulated-environment gate: resuming accepts its failure.
        return replace(
            state,
            status=R.SCHEDULED,
            gate=GateStatus.WAIVED,
            failures_counted_since=as_utc(now),
            version=state.version + 1,
        )
    if state.status == R.HALTED:
        return replace(
            state,
            status=R.RUNNING,
            phase_met_at=None,
            failures_counted_since=as_utc(now),
            version=state.version + 1,
        )
    status = R.RUNNING if state.phase_started_at else R.SCHEDULED
    return replace(state, status=status, version=state.version + 1)


def abort(state: RolloutState) -> RolloutState:
    _check(Command.ABORT, state)
    return replace(state, status=R.ABORTED, version=state.version + 1)


def rollback(state: RolloutState) -> RolloutState:
    _check(Command.ROLLBACK, state)
    return replace(state, status=R.ROLLING_BACK, version=state.version + 1)


def apply_command(command: Command, state: RolloutState, now: datetime) -> RolloutState:
    """Dispatch by name, for callers (API, CLI) that receive the command as data."""
    if command == Command.PAUSE:
        return pause(state)
    if command == Command.RESUME:
        return resume(state, now)
    if command == Command.ABORT:
        return abort(state)
    return rollback(state)
