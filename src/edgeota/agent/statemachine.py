"""The update state machine of one component, as one transition table.

Every state change the agent makes goes through :func:`transition`, so the table below is the
whole truth about which steps may follow which; the diagram in the docs is generated from it
(:func:`render_mermaid`). An event that the table does not allow raises
:class:`IllegalTransitionError` and the caller's state stays what it was, in the manner of
h11's ``LocalProtocolError``.

Each transition also names its :class:`SlotEffect`: what happens to the committed and the
active (``current``) slot. The effects are what make the agent unbrickable, and a property
test drives random event sequences through them to show that a committed slot, once there,
is never lost, and that ``current`` points at it whenever no update is in trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    IDLE = "idle"  # running the committed slot (or nothing, before the first install)
    DOWNLOADING = "downloading"  # fetching and installing into the inactive slot
    STAGED = "staged"  # inactive slot complete and verified, not yet switched to
    TRIAL = "trial"  # switched; health check running; not committed
    ROLLING_BACK = "rolling_back"  # switching back to the committed slot


class Event(StrEnum):
    UPDATE_FOUND = "update_found"
    DOWNLOAD_OK = "download_ok"
    DOWNLOAD_FAILED = "download_failed"
    SWITCHED = "switched"
    HEALTH_OK = "health_ok"
    HEALTH_FAILED = "health_failed"
    ROLLBACK_DONE = "rollback_done"
    # Recovery after a restart (kill -9, power cut):
    RESUME = "resume"  # pick up an interrupted download or rollback where it stopped
    STAGE_INVALID = "stage_invalid"  # the staged slot no longer verifies: abandon it
    TRIAL_INTERRUPTED = "trial_interrupted"  # a health check was cut short: count an attempt
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"  # too many interrupted trials: roll back


class SlotEffect(StrEnum):
    NONE = "none"
    SWITCH = "switch"  # current -> the candidate slot
    COMMIT = "commit"  # committed slot := the candidate slot (current already points there)
    RESTORE = "restore"  # current -> the committed slot (or nothing, if none was committed)


@dataclass(frozen=True)
class Transition:
    target: State
    effect: SlotEffect = SlotEffect.NONE


S, E, X = State, Event, SlotEffect

TABLE: dict[State, dict[Event, Transition]] = {
    S.IDLE: {
        E.UPDATE_FOUND: Transition(S.DOWNLOADING),
    },
    S.DOWNLOADING: {
        E.DOWNLOAD_OK: Transition(S.STAGED),
        E.DOWNLOAD_FAILED: Transition(S.IDLE),
        E.RESUME: Transition(S.DOWNLOADING),
    },
    S.STAGED: {
        E.SWITCHED: Transition(S.TRIAL, X.SWITCH),
        # A crash may have come after the switch but before the journal said TRIAL, so
        # abandoning a staged slot always points current back at the committed one.
        E.STAGE_INVALID: Transition(S.IDLE, X.RESTORE),
    },
    S.TRIAL: {
        E.HEALTH_OK: Transition(S.IDLE, X.COMMIT),
        E.HEALTH_FAILED: Transition(S.ROLLING_BACK),
        E.TRIAL_INTERRUPTED: Transition(S.TRIAL),
        E.ATTEMPTS_EXHAUSTED: Transition(S.ROLLING_BACK),
    },
    S.ROLLING_BACK: {
        E.ROLLBACK_DONE: Transition(S.IDLE, X.RESTORE),
        E.RESUME: Transition(S.ROLLING_BACK),
    },
}

del S, E, X


class IllegalTransitionError(RuntimeError):
    """An event arrived that the current state does not allow: a bug in the caller."""

    def __init__(self, state: State, event: Event) -> None:
        allowed = ", ".join(e.value for e in TABLE[state]) or "none"
        super().__init__(
            f"event {event.value!r} is not allowed in state {state.value!r} "
            f"(allowed there: {allowed}); the state is unchanged"
        )
        self.state = state
        self.event = event


def step(state: State, event: Event) -> Transition:
    """The transition ``event`` causes in ``state``; raises IllegalTransitionError if none."""
    try:
        return TABLE[state][event]
    except KeyError:
        raise IllegalTransitionError(state, event) from None


def transition(state: State, event: Event) -> State:
    """The state after ``event`` in ``state``; raises IllegalTransitionError if not allowed."""
    return step(state, event).target


# The name each event is reported under (docs/protocol.md): the server reads "committed" as
# "this release is now installed", and operators look for "rolled_back".
_REPORTED_AS = {Event.HEALTH_OK: "committed", Event.ROLLBACK_DONE: "rolled_back"}


def reported_name(event: Event) -> str:
    return _REPORTED_AS.get(event, event.value)


def allowed_events(state: State) -> tuple[Event, ...]:
    return tuple(TABLE[state])


def render_mermaid() -> str:
    """The transition table as a Mermaid ``stateDiagram-v2`` (for the docs)."""
    lines = ["stateDiagram-v2", f"    [*] --> {State.IDLE.value}"]
    for state, row in TABLE.items():
        for event, tr in row.items():
            label = (
                event.value
                if tr.effect is SlotEffect.NONE
                else f"{event.value} / {tr.effect.value}"
            )
            lines.append(f"    {state.value} --> {tr.target.value}: {label}")
    return "\n".join(lines) + "\n"
