"""What a rollout is meant to do: its phases, their gates, and the seed that spreads devices.

A plan is a value: it is checked once, when it is built, and never changes. Phase 0 may be a
field-test (canary) phase made of named devices; every other phase names a cumulative
percentage of the remaining target devices, so ``(1, 10, 50, 100)`` means the second phase
brings the share of those devices to 10 %, not 10 % more.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FIELD_TEST_NAME = "field-test"


@dataclass(frozen=True)
class Phase:
    """One phase and its gate.

    ``percent`` is None for the field-test phase, else the cumulative share (0, 100] of the
    non-field-test target devices that this phase brings in. The phase *succeeds* when at least
    ``success_share`` of its devices are updated and healthy; it *fails* when more than
    ``max_failed`` of its devices, or more than ``max_failed_share`` of them, have failed or
    rolled back (whichever limit is crossed first; None leaves that limit unset). After it
    succeeds, it must stay successful for ``soak_seconds`` before the next phase starts.
    """

    name: str
    percent: float | None
    success_share: float = 0.95
    max_failed: int | None = None
    max_failed_share: float | None = 0.05
    soak_seconds: float = 0.0

    def __post_init__(self) -> None:
        where = f"phase {self.name!r}"
        if not self.name:
            raise ValueError("a phase needs a non-empty name")
        if self.percent is not None and not (0 < self.percent <= 100):
            raise ValueError(f"{where}: percent must be in (0, 100], got {self.percent}")
        if not (0 < self.success_share <= 1):
            raise ValueError(
                f"{where}: success_share must be in (0, 1], got {self.success_share}; "
                "use 1.0 to require every device"
            )
        if self.max_failed is None and self.max_failed_share is None:
            raise ValueError(
                f"{where}: set max_failed or max_failed_share, or the phase could never halt; "
                "max_failed=0 halts on the first failure"
            )
        if self.max_failed is not None and self.max_failed < 0:
            raise ValueError(f"{where}: max_failed must be >= 0, got {self.max_failed}")
        if self.max_failed_share is not None and not (0 <= self.max_failed_share < 1):
            raise ValueError(
                f"{where}: max_failed_share must be in [0, 1), got {self.max_failed_share}"
            )
        if not (math.isfinite(self.soak_seconds) and self.soak_seconds >= 0):
            raise ValueError(f"{where}: soak_seconds must be >= 0, got {self.soak_seconds}")

    @property
    def is_field_test(self) -> bool:
        return self.percent is None


@dataclass(frozen=True)
class RolloutPlan:
    """The phases of one rollout, the field-test devices, and the seed for assignment.

    ``seed`` makes the spread of devices over phases reproducible (the rollout's id is a good
    seed); a different seed picks different devices for the first percentages, so successive
    rollouts do not always test on the same few devices.
    """

    seed: str
    phases: tuple[Phase, ...]
    field_test_device_ids: frozenset[str] = frozenset()
    # Simulated devices that must install the release and stay healthy before the first
    # phase starts (the simulated-environment gate); 0 means no gate.
    sim_gate_devices: int = 0

    def __post_init__(self) -> None:
        if self.sim_gate_devices < 0:
            raise ValueError(f"sim_gate_devices must be >= 0, got {self.sim_gate_devices}")
        if not self.seed:
            raise ValueError("a rollout plan needs a non-empty seed, such as the rollout id")
        if not self.phases:
            raise ValueError("a rollout plan needs at least one phase, ending at 100 percent")
        if any(p.is_field_test for p in self.phases[1:]):
            raise ValueError("only the first phase may be the field-test phase")
        if self.phases[0].is_field_test and not self.field_test_device_ids:
            raise ValueError("the field-test phase needs at least one field-test device id")
        if self.field_test_device_ids and not self.phases[0].is_field_test:
            raise ValueError(
                "field-test device ids were given but the first phase is not a field-test "
                "phase (percent=None)"
            )
        if any(not d for d in self.field_test_device_ids):
            raise ValueError("field-test device ids must be non-empty strings")
        percents = [p.percent for p in self.phases if p.percent is not None]
        if not percents:
            raise ValueError("a rollout plan needs percentage phases ending at 100 percent")
        for before, after in itertools.pairwise(percents):
            if after <= before:
                raise ValueError(
                    f"phase percentages must be strictly increasing, got {percents} "
                    f"({after} follows {before})"
                )
        if percents[-1] != 100:
            raise ValueError(
                f"the last phase must reach 100 percent, got {percents}; "
                "a rollout that stops short never completes"
            )
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")

    @classmethod
    def staged(
        cls,
        seed: str,
        percentages: Sequence[float] = (1, 10, 50, 100),
        field_test_device_ids: Iterable[str] = (),
        *,
        success_share: float = 0.95,
        max_failed: int | None = None,
        max_failed_share: float | None = 0.05,
        soak_seconds: float = 0.0,
        sim_gate_devices: int = 0,
    ) -> RolloutPlan:
        """A plan whose phases all share one gate: the field test (if any), then percentages."""

        def phase(name: str, percent: float | None) -> Phase:
            return Phase(name, percent, success_share, max_failed, max_failed_share, soak_seconds)

        field_test = frozenset(field_test_device_ids)
        phases = [phase(FIELD_TEST_NAME, None)] if field_test else []
        phases.extend(phase(f"{p:g}%", p) for p in percentages)
        return cls(seed, tuple(phases), field_test, sim_gate_devices)

    @property
    def has_field_test(self) -> bool:
        return self.phases[0].is_field_test
