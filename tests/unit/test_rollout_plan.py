"""Rollout plans: validation with clear messages, and reproducible assignment of devices."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeota.rollout import FIELD_TEST_NAME, Phase, RolloutPlan, bucket, phase_of


def test_staged_plan_has_field_test_then_percentages() -> None:
    plan = RolloutPlan.staged("r1", (1, 10, 50, 100), ["cam-1", "cam-2"], soak_seconds=60)
    assert [p.name for p in plan.phases] == [FIELD_TEST_NAME, "1%", "10%", "50%", "100%"]
    assert plan.phases[0].percent is None and plan.has_field_test
    assert all(p.soak_seconds == 60 for p in plan.phases)
    assert plan.field_test_device_ids == frozenset({"cam-1", "cam-2"})


def test_plan_without_field_test() -> None:
    plan = RolloutPlan.staged("r1", (50, 100))
    assert not plan.has_field_test
    assert [p.percent for p in plan.phases] == [50, 100]


@pytest.mark.parametrize(
    ("percentages", "message"),
    [
        ((10, 5, 100), "strictly increasing"),
        ((10, 10, 100), "strictly increasing"),
        ((1, 10, 50), "must reach 100"),
        ((), "ending at 100"),
        ((0, 100), "percent must be in (0, 100]"),
        ((50, 101), "percent must be in (0, 100]"),
    ],
)
def test_bad_percentages_are_refused(percentages: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
        RolloutPlan.staged("r1", percentages)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"success_share": 0.0}, "success_share must be in"),
        ({"success_share": 1.5}, "success_share must be in"),
        ({"max_failed": -1}, "max_failed must be >= 0"),
        ({"max_failed_share": 1.0}, "max_failed_share must be in"),
        ({"max_failed_share": -0.1}, "max_failed_share must be in"),
        ({"max_failed": None, "max_failed_share": None}, "could never halt"),
        ({"soak_seconds": -1}, "soak_seconds must be >= 0"),
        ({"soak_seconds": float("inf")}, "soak_seconds must be >= 0"),
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, float | None], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Phase("1%", 1, **kwargs)  # type: ignore[arg-type]


def test_field_test_needs_devices_and_devices_need_a_field_test() -> None:
    with pytest.raises(ValueError, match="needs at least one field-test device"):
        RolloutPlan("r1", (Phase(FIELD_TEST_NAME, None), Phase("all", 100)))
    with pytest.raises(ValueError, match="first phase is not a field-test"):
        RolloutPlan("r1", (Phase("all", 100),), frozenset({"cam-1"}))
    with pytest.raises(ValueError, match="only the first phase"):
        RolloutPlan("r1", (Phase("a", 50), Phase("b", None), Phase("c", 100)))


def test_duplicate_names_and_empty_seed_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        RolloutPlan("r1", (Phase("x", 50), Phase("x", 100)))
    with pytest.raises(ValueError, match="non-empty seed"):
        RolloutPlan.staged("", (100,))


def test_assignment_is_reproducible_and_depends_on_the_seed() -> None:
    plan = RolloutPlan.staged("rollout-7", (1, 10, 50, 100), ["cam-1"])
    again = RolloutPlan.staged("rollout-7", (1, 10, 50, 100), ["cam-1"])
    ids = [f"dev-{i}" for i in range(500)]
    first = [phase_of(plan, d) for d in ids]
    assert first == [phase_of(again, d) for d in ids]
    assert first == [phase_of(plan, d) for d in ids]
    other = RolloutPlan.staged("rollout-8", (1, 10, 50, 100), ["cam-1"])
    assert first != [phase_of(other, d) for d in ids]
    assert phase_of(plan, "cam-1") == 0
    assert 0 not in first  # only named devices are in the field test


def test_bucket_separates_seed_and_device_boundaries() -> None:
    assert bucket("ab", "c") != bucket("a", "bc")
    assert 0 <= bucket("s", "d") < 1


def test_assignment_is_cumulative_across_plans_with_more_phases() -> None:
    """A device in the first 10 % of a plan is in the first 10 % of any plan with that seed."""
    coarse = RolloutPlan.staged("s", (10, 100))
    fine = RolloutPlan.staged("s", (1, 5, 10, 100))
    for i in range(2000):
        d = f"dev-{i}"
        assert (phase_of(coarse, d) == 0) == (phase_of(fine, d) <= 2)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.text(min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 99), min_size=1, max_size=4, unique=True),
)
def test_assignment_shares_match_the_plan_for_many_devices(seed: str, cuts: list[int]) -> None:
    percentages = (*sorted(cuts), 100)
    plan = RolloutPlan.staged(seed, percentages)
    n = 20_000
    tally = [0] * len(plan.phases)
    for i in range(n):
        tally[phase_of(plan, f"device-{i:05d}")] += 1
    cumulative = 0
    for index, percent in enumerate(percentages):
        cumulative += tally[index]
        # Binomial standard deviation at n=20000 is at most 0.35 percentage points; allow ~4.
        assert abs(cumulative / n * 100 - percent) < 1.5, (percentages, tally)
