"""Staged rollouts as pure decisions: plans, state, the decision rule, commands, windows.

Nothing here does I/O or reads the clock: the rollout engine on the server loads a plan, a
state and the device outcomes, calls :func:`decide` with the current time, and stores the
result with a compare-and-set on ``RolloutState.version``.
"""

from __future__ import annotations

from edgeota.rollout.actions import (
    Action,
    ActivatePhase,
    Complete,
    Decision,
    Halt,
    PhaseCounts,
    SetDesired,
)
from edgeota.rollout.assign import bucket, phase_of
from edgeota.rollout.commands import (
    ALLOWED_FROM,
    Command,
    abort,
    apply_command,
    pause,
    resume,
    rollback,
)
from edgeota.rollout.decide import decide
from edgeota.rollout.gate import (
    GATE_REASON_PREFIX,
    awaiting_gate,
    fail_gate,
    gate_pending,
    pass_gate,
)
from edgeota.rollout.plan import FIELD_TEST_NAME, Phase, RolloutPlan
from edgeota.rollout.state import (
    DeviceOutcome,
    DeviceStatus,
    GateStatus,
    RolloutState,
    RolloutStatus,
)
from edgeota.rollout.windows import (
    MaintenanceWindow,
    can_defer,
    forced_apply_at,
    in_window,
    next_allowed_time,
    next_window_start,
)

__all__ = [
    "ALLOWED_FROM",
    "FIELD_TEST_NAME",
    "GATE_REASON_PREFIX",
    "Action",
    "ActivatePhase",
    "Command",
    "Complete",
    "Decision",
    "DeviceOutcome",
    "DeviceStatus",
    "GateStatus",
    "Halt",
    "MaintenanceWindow",
    "Phase",
    "PhaseCounts",
    "RolloutPlan",
    "RolloutState",
    "RolloutStatus",
    "SetDesired",
    "abort",
    "apply_command",
    "awaiting_gate",
    "bucket",
    "can_defer",
    "decide",
    "fail_gate",
    "forced_apply_at",
    "gate_pending",
    "in_window",
    "next_allowed_time",
    "next_window_start",
    "pass_gate",
    "pause",
    "phase_of",
    "resume",
    "rollback",
]
