"""The update state machine: one table, illegal events refused, no committed slot ever lost."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeota.agent.statemachine import (
    TABLE,
    Event,
    IllegalTransitionError,
    SlotEffect,
    State,
    allowed_events,
    render_mermaid,
    reported_name,
    step,
    transition,
)


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_state_event_pair_maps_or_raises(state: State, event: Event) -> None:
    if event in TABLE[state]:
        assert transition(state, event) is TABLE[state][event].target
    else:
        with pytest.raises(IllegalTransitionError) as info:
            transition(state, event)
        assert info.value.state is state and info.value.event is event
        assert state.value in str(info.value) and event.value in str(info.value)


def test_illegal_event_leaves_the_state_unchanged() -> None:
    state = State.IDLE
    with pytest.raises(IllegalTransitionError):
        state = transition(state, Event.HEALTH_OK)
    assert state is State.IDLE
    assert isinstance(IllegalTransitionError(State.IDLE, Event.HEALTH_OK), RuntimeError)


def test_every_state_is_reachable_and_can_return_to_idle() -> None:
    reached = {State.IDLE}
    frontier = [State.IDLE]
    while frontier:
        for tr in TABLE[frontier.pop()].values():
            if tr.target not in reached:
                reached.add(tr.target)
                frontier.append(tr.target)
    assert reached == set(State)
    for state in State:
        assert allowed_events(state), f"{state} is a dead end"


def test_the_happy_path() -> None:
    state = State.IDLE
    for event in (Event.UPDATE_FOUND, Event.DOWNLOAD_OK, Event.SWITCHED, Event.HEALTH_OK):
        state = transition(state, event)
    assert state is State.IDLE
    assert step(State.TRIAL, Event.HEALTH_OK).effect is SlotEffect.COMMIT


def test_commit_and_rollback_are_reported_under_their_protocol_names() -> None:
    assert reported_name(Event.HEALTH_OK) == "committed"
    assert reported_name(Event.ROLLBACK_DONE) == "rolled_back"
    assert reported_name(Event.DOWNLOAD_OK) == "download_ok"


def test_mermaid_diagram_lists_every_transition() -> None:
    text = render_mermaid()
    assert text.startswith("stateDiagram-v2\n")
    edges = [line for line in text.splitlines() if "-->" in line and "[*]" not in line]
    assert len(edges) == sum(len(row) for row in TABLE.values())
    assert "    trial --> idle: health_ok / commit" in text


# -- the property: a committed slot, once there, is never lost -----------------------------
@dataclass(frozen=True)
class Slots:
    committed: str | None = None
    active: str | None = None  # what `current` points at
    candidate: str | None = None


def apply(slots: Slots, state: State, event: Event) -> Slots:
    """What the agent does to the slots for each transition (mirrors reconcile.py)."""
    effect = step(state, event).effect
    if event is Event.UPDATE_FOUND:
        slots = replace(slots, candidate="b" if slots.committed == "a" else "a")
    if effect is SlotEffect.SWITCH:
        slots = replace(slots, active=slots.candidate)
    elif effect is SlotEffect.COMMIT:
        slots = replace(slots, committed=slots.active)
    elif effect is SlotEffect.RESTORE:
        slots = replace(slots, active=slots.committed)
    return slots


@settings(max_examples=500)
@given(st.lists(st.sampled_from(list(Event)), max_size=60))
def test_random_event_sequences_never_lose_the_committed_slot(events: list[Event]) -> None:
    state, slots = State.IDLE, Slots()
    for event in events:
        had_committed = slots.committed is not None
        try:
            new_slots = apply(slots, state, event)
            new_state = transition(state, event)
        except IllegalTransitionError:
            continue  # refused: nothing changed
        state, slots = new_state, new_slots
        if had_committed:
            assert slots.committed is not None
        # Outside a trial, `current` is the committed slot: the device runs what passed.
        if state in (State.IDLE, State.DOWNLOADING, State.STAGED):
            assert slots.active == slots.committed
        # The slot being written is never the one running.
        if state is State.DOWNLOADING:
            assert slots.candidate != slots.active
