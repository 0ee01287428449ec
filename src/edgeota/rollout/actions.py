"""What a decision asks the caller to do, and the decision itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edgeota.rollout.state import RolloutState


@dataclass(frozen=True)
class ActivatePhase:
    """Phase ``index`` has started (record it, notify, show it on the dashboard)."""

    index: int
    name: str


@dataclass(frozen=True)
class SetDesired:
    """Make the release desired on these devices and record a PENDING outcome for each."""

    device_ids: tuple[str, ...]


@dataclass(frozen=True)
class Halt:
    """The rollout halted itself; ``reason`` names the phase, the counts and the limit."""

    reason: str


@dataclass(frozen=True)
class Complete:
    """The last phase succeeded and soaked: the rollout is done."""


Action = ActivatePhase | SetDesired | Halt | Complete


@dataclass(frozen=True)
class PhaseCounts:
    """Devices of one phase among the current target devices, by outcome.

    ``failed`` counts failed and rolled-back devices that the failure thresholds see, that is
    those reported after the state's ``failures_counted_since``.
    """

    size: int
    updated: int
    failed: int


@dataclass(frozen=True)
class Decision:
    """The new state, the actions that lead to it, and who may now run the release.

    ``eligible`` is every target device in a started phase that may hold the release as
    desired: while running, that includes the devices of ``SetDesired``; in any other status
    it is only devices that had already been told, since nothing frozen makes a device newly
    eligible. ``wake_at`` is the earliest time at which the passing of time alone would change
    the decision (a scheduled start, the end of a soak), so a loop can sleep until then.
    """

    state: RolloutState
    actions: tuple[Action, ...]
    eligible: frozenset[str]
    phase_counts: tuple[PhaseCounts, ...]
    wake_at: datetime | None = None

    @property
    def newly_eligible(self) -> tuple[str, ...]:
        return tuple(
            device_id
            for action in self.actions
            if isinstance(action, SetDesired)
            for device_id in action.device_ids
        )
