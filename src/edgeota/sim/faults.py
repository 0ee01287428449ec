"""What goes wrong in a simulated fleet, decided up front from the seed.

- a release marked broken fails its health check on the hardware classes named for it (as a
  model that runs on one accelerator and not on another does);
- a share of every device's requests is dropped (``edgeota.sim.network.FlakyTransport``);
- some devices crash mid-update at a named crash point and restart from their journal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeota.agent.config import CRASH_POINTS
from edgeota.errors import EdgeotaError
from edgeota.slotinfo import SlotInfo


class SimulatedCrash(BaseException):
    """Unwinds an agent at a crash point, as kill -9 would stop it (nothing catches it)."""


def crash(point: str) -> None:
    raise SimulatedCrash(point)


@dataclass(frozen=True)
class FaultPlan:
    """``broken`` maps a release id to the hardware classes it fails on."""

    broken: Mapping[str, frozenset[str]] = field(default_factory=dict)
    drop_share: float = 0.0

    def breaks(self, release_id: str, hardware_class: str) -> bool:
        return hardware_class in self.broken.get(release_id, frozenset())


@dataclass(frozen=True)
class SimHealth:
    """The outcome of a simulated health check (the agent's HealthResult)."""

    ok: bool
    reason: str | None
    figures: dict[str, float] = field(default_factory=dict)


def check_slot(
    plan: FaultPlan, hardware_class: str, slot_dir: Path, probe: bool = False
) -> SimHealth:
    """The simulated runtime's health check of ``slot_dir`` on ``hardware_class``.

    With ``probe`` the slot's model also runs its probe set in this process (onnxruntime),
    so a release that is broken everywhere fails for real, not because a plan said so.
    """
    try:
        info = SlotInfo.read(slot_dir)
    except (OSError, EdgeotaError) as e:
        return SimHealth(False, f"cannot read the slot description: {e}")
    if plan.breaks(info.release_id, hardware_class):
        return SimHealth(
            False,
            f"simulated fault: release {info.release_id} outputs NaN on {hardware_class}",
            {"non_finite_values": 1.0},
        )
    if probe:
        return _probe(slot_dir, info)
    return SimHealth(True, None, {"simulated": 1.0})


def _probe(slot_dir: Path, info: SlotInfo) -> SimHealth:
    from edgeota.fsutil import safe_join
    from edgeota.runtime.probe import compare_outputs, load_probe
    from edgeota.runtime.slotmodel import load_slot_model

    entry = info.file_with_role("probe")
    if entry is None or info.file_with_role("model") is None:
        return SimHealth(True, f"release {info.release_id} ships no probe set", {})
    try:
        model = load_slot_model(slot_dir)
        probe = load_probe(safe_join(slot_dir, entry.file))
        outputs = model.run(probe.inputs)
        result = compare_outputs(outputs, probe.references, info.tolerance)
    # onnxruntime's exceptions derive straight from Exception, so nothing narrower works.
    except Exception as e:
        return SimHealth(False, f"the model cannot run its probe set: {e}")
    return SimHealth(result.ok, result.reason, dict(result.figures))


def crash_points() -> tuple[str, ...]:
    return tuple(sorted(CRASH_POINTS))


def describe(plan: FaultPlan) -> dict[str, Any]:
    return {
        "broken": {r: sorted(c) for r, c in plan.broken.items()},
        "drop_share": plan.drop_share,
    }
