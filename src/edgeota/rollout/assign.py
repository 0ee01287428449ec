"""Which phase a device belongs to: a pure function of the plan's seed and the device id.

Nothing about the assignment is stored. Every server process, on every pass, computes the
same phase for the same device, and a device that joins the target group mid-rollout lands
in the phase its hash picks: if that phase has started, it is eligible at once.
"""

from __future__ import annotations

import hashlib

from edgeota.rollout.plan import RolloutPlan

_BUCKET_BITS = 53  # a double holds 53 bits exactly, so the bucket is always < 1.0


def bucket(seed: str, device_id: str) -> float:
    """A number in [0, 1), uniform over devices and independent between seeds."""
    seed_bytes = seed.encode()
    # Length-prefixing the seed keeps ("ab", "c") and ("a", "bc") apart.
    material = len(seed_bytes).to_bytes(4, "big") + seed_bytes + device_id.encode()
    digest = hashlib.sha256(material).digest()
    return (int.from_bytes(digest[:8], "big") >> (64 - _BUCKET_BITS)) / (1 << _BUCKET_BITS)


def phase_of(plan: RolloutPlan, device_id: str) -> int:
    """The index in ``plan.phases`` of the phase that brings ``device_id`` in."""
    if plan.has_field_test and device_id in plan.field_test_device_ids:
        return 0
    # Compare against percent / 100 rather than bucket * 100: 100 / 100 is exactly 1.0, so
    # the last phase catches every bucket, with no rounding at the top end.
    point = bucket(plan.seed, device_id)
    for index, phase in enumerate(plan.phases):
        if phase.percent is not None and point < phase.percent / 100:
            return index
    # Unreachable: the plan's last percentage is 100 and every bucket is below 1.0.
    raise AssertionError(f"no phase for bucket {point} in a plan ending at 100 percent")
