"""The pure variant choice: best quality that fits budget, architecture and accelerator."""

from __future__ import annotations

import pytest

from edgeota.modelops.choice import (
    AWAITING_INVENTORY,
    CHOSEN,
    NO_VARIANT_FITS,
    DeviceFit,
    VariantOption,
    choose_variant,
)

FP32 = VariantOption("fp32", memory_mb=400, quality=200.0)
INT8 = VariantOption("int8", memory_mb=150, quality=40.0)
INT4 = VariantOption("int4", memory_mb=100, quality=28.0)


def test_the_best_quality_within_the_budget_wins() -> None:
    assert choose_variant([INT4, FP32, INT8], DeviceFit(1024)).variant == "fp32"
    assert choose_variant([INT4, FP32, INT8], DeviceFit(399)).variant == "int8"
    assert choose_variant([INT4, FP32, INT8], DeviceFit(150)).variant == "int8"  # inclusive
    assert choose_variant([INT4, FP32, INT8], DeviceFit(100)).variant == "int4"


def test_nothing_fits_says_what_each_variant_needs() -> None:
    choice = choose_variant([INT4, INT8], DeviceFit(64))
    assert choice.status == NO_VARIANT_FITS and choice.variant is None
    assert choice.reason == (
        "no variant fits: int8 (needs 150 MB); int4 (needs 100 MB) "
        "(the device's 64 MB model RAM budget)"
    )


def test_no_budget_reported_yet_waits_unless_no_variant_needs_one() -> None:
    assert choose_variant([INT8], DeviceFit(None)).status == AWAITING_INVENTORY
    plain = [VariantOption("a", quality=1.0), VariantOption("b", quality=2.0)]
    choice = choose_variant(plain, DeviceFit(None))
    assert (choice.status, choice.variant) == (CHOSEN, "b")


def test_ties_go_to_less_memory_then_the_name_and_unscored_variants_rank_last() -> None:
    same = [
        VariantOption("b", 200, 10.0),
        VariantOption("a", 200, 10.0),
        VariantOption("c", 100, 10.0),
    ]
    assert choose_variant(same, DeviceFit(1000)).variant == "c"
    assert choose_variant(same[:2], DeviceFit(1000)).variant == "a"
    unscored = [VariantOption("x", 10, None), VariantOption("y", 500, 1.0)]
    assert choose_variant(unscored, DeviceFit(1000)).variant == "y"
    assert choose_variant(unscored, DeviceFit(100)).variant == "x"


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        (DeviceFit(1000, "x86_64", ("cuda",)), "gpu"),
        (DeviceFit(1000, "x86_64"), "arm-or-x86"),
        (DeviceFit(1000, "riscv64"), "cpu"),
        (DeviceFit(1000, ""), "cpu"),  # an unreported architecture matches no list
    ],
)
def test_architecture_and_accelerator_must_match(device: DeviceFit, expected: str) -> None:
    options = [
        VariantOption("gpu", 100, 90.0, accelerator="cuda"),
        VariantOption("arm-or-x86", 100, 80.0, arch=("aarch64", "x86_64")),
        VariantOption("cpu", 100, 70.0),
    ]
    assert choose_variant(options, device).variant == expected


def test_no_options_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        choose_variant([], DeviceFit(1))
