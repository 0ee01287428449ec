"""Which model variant a device gets: the best quality whose needs the device meets.

Pure: the variants' signed requirements and the device's reported fit in, a choice and its
reason out. The device's *model RAM budget* is a configured figure it reports in its
inventory, not its momentary free RAM, so the choice does not flap with load.

A variant fits when its estimated memory need is within the budget, the device's CPU
architecture is one it lists (or it lists none), and the device has the accelerator it
needs (if any). Of the variants that fit, the highest quality wins; ties go to the smaller
memory need, then to the name, so the choice is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CHOSEN = "chosen"
NO_VARIANT_FITS = "no_variant_fits"
AWAITING_INVENTORY = "awaiting_inventory"


@dataclass(frozen=True)
class VariantOption:
    variant: str
    memory_mb: int | None = None  # None: no memory figure, fits any budget
    quality: float | None = None  # None: unknown, ranked below every scored variant
    arch: tuple[str, ...] | None = None  # None: any architecture
    accelerator: str | None = None  # None: needs none


@dataclass(frozen=True)
class DeviceFit:
    """What a device reported about itself; ``None`` budget: no inventory yet."""

    model_ram_budget_mb: int | None
    arch: str = ""
    accelerators: tuple[str, ...] = ()


@dataclass(frozen=True)
class Choice:
    status: str  # CHOSEN, NO_VARIANT_FITS or AWAITING_INVENTORY
    variant: str | None
    reason: str


def misfit(option: VariantOption, device: DeviceFit) -> str | None:
    """Why ``option`` does not fit ``device`` (every reason), or None when it does."""
    why = []
    budget = device.model_ram_budget_mb
    if option.memory_mb is not None and budget is not None and option.memory_mb > budget:
        why.append(f"needs {option.memory_mb} MB")
    if option.arch is not None and device.arch not in option.arch:
        arch = device.arch or "an unreported architecture"
        why.append(f"runs only on {', '.join(option.arch)}, not {arch}")
    if option.accelerator is not None and option.accelerator not in device.accelerators:
        why.append(f"needs accelerator {option.accelerator!r}")
    return f"{option.variant} ({', '.join(why)})" if why else None


def _rank(option: VariantOption) -> tuple[float, float, str]:
    quality = -math.inf if option.quality is None else option.quality
    memory = math.inf if option.memory_mb is None else float(option.memory_mb)
    return (-quality, memory, option.variant)


def _budget_text(device: DeviceFit) -> str:
    return f"the device's {device.model_ram_budget_mb} MB model RAM budget"


def choose_variant(options: Sequence[VariantOption], device: DeviceFit) -> Choice:
    if not options:
        raise ValueError("choose_variant needs at least one variant")
    needs_budget = any(o.memory_mb is not None for o in options)
    if device.model_ram_budget_mb is None and needs_budget:
        return Choice(
            AWAITING_INVENTORY,
            None,
            "the device has not reported its model RAM budget yet; the variant is chosen "
            "once its inventory arrives",
        )
    fits = sorted((o for o in options if misfit(o, device) is None), key=_rank)
    passed_over = [why for o in sorted(options, key=_rank) if (why := misfit(o, device))]
    over = f" ({_budget_text(device)})" if needs_budget else ""
    if not fits:
        return Choice(NO_VARIANT_FITS, None, f"no variant fits: {'; '.join(passed_over)}{over}")
    best = fits[0]
    parts = [f"{best.variant}: the best quality"]
    if best.quality is not None:
        parts[0] += f" ({best.quality:g})"
    parts[0] += " of the variants that fit"
    if best.memory_mb is not None:
        parts.append(f"needs {best.memory_mb} MB of {device.model_ram_budget_mb} MB")
    if passed_over:
        parts.append(f"passed over: {'; '.join(passed_over)}")
    return Choice(CHOSEN, best.variant, ", ".join(parts))
