"""Where a rollout stands, and where each of its devices stands: plain values, stored by the caller.

All times are timezone-aware UTC; naive values (as SQLite returns them) are read as UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from edgeota.timeutil import as_utc


class GateStatus(StrEnum):
    """The outcome of the simulated-environment gate, for a plan that has one."""

    PASSED = "passed"  # the simulated devices installed the release and stayed healthy
    FAILED = "failed"  # they did not: the rollout halted before its first phase
    WAIVED = "waived"  # an operator resumed after a failed gate and accepted it


class RolloutStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting for start_at
    RUNNING = "running"  # phases advance and halt on their own
    PAUSED = "paused"  # an operator froze it; nothing moves until resume
    HALTED = "halted"  # a failure threshold was crossed; nothing moves until resume
    ABORTED = "aborted"  # stopped for good; updated devices keep the release
    COMPLETED = "completed"  # the last phase succeeded
    ROLLING_BACK = "rolling_back"  # the fleet is being moved back by a new, higher release


@dataclass(frozen=True)
class RolloutState:
    """The mutable part of a rollout, as one value.

    ``phase_started_at`` has one entry per started phase, so the current phase is its last
    index. ``phase_met_at`` is when the current phase last began to meet its success
    threshold (None while it does not); its soak time counts from there. ``halt_reason`` is
    why the rollout last halted; it is kept after a resume, as a record. Failure thresholds
    count only failures reported after ``failures_counted_since`` (set when an operator
    resumes a halted rollout). ``version`` grows by one with every decision or command that
    changes anything, so stores can apply decisions with a compare-and-set on it.
    """

    status: RolloutStatus
    start_at: datetime
    phase_started_at: tuple[datetime, ...] = ()
    phase_met_at: datetime | None = None
    halt_reason: str | None = None
    failures_counted_since: datetime | None = None
    version: int = 0
    gate: GateStatus | None = None  # None: no gate, or its outcome is not known yet

    def __post_init__(self) -> None:
        # Normalise times here, once, so that comparisons elsewhere never mix naive and aware.
        object.__setattr__(self, "start_at", as_utc(self.start_at))
        object.__setattr__(
            self, "phase_started_at", tuple(as_utc(t) for t in self.phase_started_at)
        )
        if self.phase_met_at is not None:
            object.__setattr__(self, "phase_met_at", as_utc(self.phase_met_at))
        if self.failures_counted_since is not None:
            object.__setattr__(self, "failures_counted_since", as_utc(self.failures_counted_since))
        if self.version < 0:
            raise ValueError(f"version must be >= 0, got {self.version}")
        started = bool(self.phase_started_at)
        if self.status == RolloutStatus.SCHEDULED and started:
            raise ValueError("a scheduled rollout has no started phase")
        # A failed gate halts a rollout before its first phase: the one halt without a phase.
        gate_halt = self.status == RolloutStatus.HALTED and self.gate == GateStatus.FAILED
        if (
            self.status in (RolloutStatus.RUNNING, RolloutStatus.HALTED, RolloutStatus.COMPLETED)
            and not started
            and not gate_halt
        ):
            raise ValueError(f"a {self.status} rollout has started its first phase")
        if self.gate == GateStatus.FAILED and started:
            raise ValueError("a failed gate halts the rollout before any phase starts")
        if self.status == RolloutStatus.HALTED and not self.halt_reason:
            raise ValueError("a halted rollout records why it halted (halt_reason)")
        if self.phase_met_at is not None and not started:
            raise ValueError("phase_met_at is set but no phase has started")

    @classmethod
    def scheduled(cls, start_at: datetime) -> RolloutState:
        """A new rollout; pass the current time as ``start_at`` to start at the next decision."""
        return cls(RolloutStatus.SCHEDULED, start_at)

    @property
    def current_phase(self) -> int | None:
        """Index of the latest started phase, or None before the first one starts."""
        return len(self.phase_started_at) - 1 if self.phase_started_at else None

    @property
    def started_phases(self) -> int:
        return len(self.phase_started_at)


class DeviceStatus(StrEnum):
    PENDING = "pending"  # told to update, not begun
    UPDATING = "updating"  # downloading, staging, or in its health check
    UPDATED = "updated"  # healthy and committed
    FAILED = "failed"  # the update failed before the switch
    ROLLED_BACK = "rolled_back"  # switched, then failed its health check and went back


FAILURES = frozenset({DeviceStatus.FAILED, DeviceStatus.ROLLED_BACK})


@dataclass(frozen=True)
class DeviceOutcome:
    """Where one device of the rollout stands, and when that last changed.

    The caller records a PENDING outcome for every device of a ``SetDesired`` action when it
    applies a decision: the outcomes are also the record of which devices have been told.
    """

    status: DeviceStatus
    changed_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "changed_at", as_utc(self.changed_at))
