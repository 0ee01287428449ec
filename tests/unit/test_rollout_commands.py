"""Operator commands: every status against every command, as the transition table says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edgeota.rollout import (
    ALLOWED_FROM,
    Command,
    RolloutState,
    RolloutStatus,
    abort,
    apply_command,
    pause,
    resume,
    rollback,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
S = RolloutStatus


def state_in(status: RolloutStatus) -> RolloutState:
    if status == S.SCHEDULED:
        return RolloutState.scheduled(T0)
    reason = "phase 0 (field-test) crossed its failure threshold" if status == S.HALTED else None
    return RolloutState(status, T0, (T0,), phase_met_at=T0, halt_reason=reason, version=7)


EXPECTED: dict[tuple[Command, RolloutStatus], RolloutStatus] = {
    (Command.PAUSE, S.SCHEDULED): S.PAUSED,
    (Command.PAUSE, S.RUNNING): S.PAUSED,
    (Command.RESUME, S.PAUSED): S.RUNNING,
    (Command.RESUME, S.HALTED): S.RUNNING,
    (Command.ABORT, S.SCHEDULED): S.ABORTED,
    (Command.ABORT, S.RUNNING): S.ABORTED,
    (Command.ABORT, S.PAUSED): S.ABORTED,
    (Command.ABORT, S.HALTED): S.ABORTED,
    (Command.ROLLBACK, S.RUNNING): S.ROLLING_BACK,
    (Command.ROLLBACK, S.PAUSED): S.ROLLING_BACK,
    (Command.ROLLBACK, S.HALTED): S.ROLLING_BACK,
    (Command.ROLLBACK, S.COMPLETED): S.ROLLING_BACK,
    (Command.ROLLBACK, S.ABORTED): S.ROLLING_BACK,
}


@pytest.mark.parametrize("command", list(Command))
@pytest.mark.parametrize("status", list(RolloutStatus))
def test_every_command_in_every_status(command: Command, status: RolloutStatus) -> None:
    before = state_in(status)
    expected = EXPECTED.get((command, status))
    assert (expected is not None) == (status in ALLOWED_FROM[command])
    if expected is None:
        with pytest.raises(ValueError, match=f"cannot {command} a rollout that is {status}"):
            apply_command(command, before, T0)
        assert before == state_in(status)  # values: nothing to undo, nothing changed
        return
    after = apply_command(command, before, T0 + timedelta(minutes=5))
    assert after.status == expected
    assert after.version == before.version + 1


def test_resume_of_a_paused_rollout_that_never_started_goes_back_to_scheduled() -> None:
    paused = pause(RolloutState.scheduled(T0))
    assert paused.status == S.PAUSED and paused.phase_started_at == ()
    assert resume(paused, T0).status == S.SCHEDULED


def test_resume_of_a_paused_rollout_keeps_its_soak_clock() -> None:
    running = state_in(S.RUNNING)
    resumed = resume(pause(running), T0 + timedelta(hours=1))
    assert resumed.phase_met_at == running.phase_met_at
    assert resumed.failures_counted_since is None


def test_resume_of_a_halted_rollout_counts_failures_afresh_and_soaks_again() -> None:
    now = T0 + timedelta(hours=2)
    resumed = resume(state_in(S.HALTED), now)
    assert resumed.failures_counted_since == now
    assert resumed.phase_met_at is None
    assert resumed.halt_reason is not None  # kept as the record of the last halt


def test_the_error_names_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="pause is allowed only when it is running, scheduled"):
        pause(state_in(S.HALTED))


def test_direct_functions_match_the_dispatcher() -> None:
    running = state_in(S.RUNNING)
    assert abort(running) == apply_command(Command.ABORT, running, T0)
    assert rollback(running) == apply_command(Command.ROLLBACK, running, T0)
    assert pause(running) == apply_command(Command.PAUSE, running, T0)
