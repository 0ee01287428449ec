"""Model variants in a release: the rules their files follow, and each device's choice.

A release may carry several model files, one per variant (``fp32``, ``int8``, ...), each
with what the server chooses by: ``memory_mb`` (estimated need), ``quality`` (higher is
better), ``arch`` and ``accelerator``. A probe set is either shared by all of them (no
variant) or given per variant (its ``variant`` names a model variant), so that each variant
carries its own signed tolerance: a quantized variant's outputs are further from the
original's than the fp32 one's, and its health check must allow for that much and no more.

At check-in (the 200 answer; the 304 path is untouched) a device is told only the chosen
variant's model and probe plus the files every variant shares (:func:`resolve`); a change of
choice is recorded as a ``variant_chosen`` device event. Releases with a single model file
and no requirements are listed whole, as before.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeota.modelops.choice import (
    CHOSEN,
    Choice,
    DeviceFit,
    VariantOption,
    choose_variant,
)
from edgeota.server.models import DesiredComponent, Device, DeviceEvent, ReleaseFile
from edgeota.server.schemas import ReleaseCreate, ReleaseFileCreate, VariantChoicePublic
from edgeota.server.services.errors import InvalidError
from edgeota.server.sqlutil import insert_ignoring_conflicts
from edgeota.timeutil import utcnow

CHOSEN_EVENT = "variant_chosen"
# Inventory keys a choice depends on: a change of any of them is a new desired state.
FIT_KEYS = ("model_ram_budget_mb", "arch", "accelerators")
_REQUIREMENTS = ("memory_mb", "quality", "arch", "accelerator")


def id_parts(f: ReleaseFileCreate) -> tuple[Any, ...]:
    """The variant keys that are set, for the content-derived release ID (none set: ``()``,
    so releases without them keep the IDs they always had)."""
    return tuple((key, getattr(f, key)) for key in _REQUIREMENTS if getattr(f, key) is not None)


def check_release_files(body: ReleaseCreate) -> None:
    """Raise InvalidError when the release's model and probe files break the variant rules."""
    for f in body.files:
        if f.role != "model" and id_parts(f):
            raise InvalidError(
                f"file {f.file!r}: only model files carry {', '.join(_REQUIREMENTS)}"
            )
    models = Counter(f.variant for f in body.files if f.role == "model")
    probes = Counter(f.variant for f in body.files if f.role == "probe")
    if len(models) > 1 and None in models:
        raise InvalidError(
            "a release with several model variants must name the variant of every model file"
        )
    twice = sorted(str(v) for v, n in models.items() if n > 1 and v is not None)
    if twice:
        raise InvalidError(f"more than one model file for variant(s) {twice}")
    if any(n > 1 for n in probes.values()):
        raise InvalidError("a release may carry at most one probe set (role 'probe') per variant")
    per_variant = sorted(str(v) for v in probes if v is not None)
    if per_variant and None in probes:
        raise InvalidError("give one shared probe set (no variant) or one per variant, not both")
    orphans = sorted(set(per_variant) - {str(v) for v in models if v is not None})
    if orphans:
        raise InvalidError(f"probe set(s) for variant(s) {orphans} that no model file has")


@dataclass(frozen=True)
class Resolved:
    """The files of a release to list for one device, and the variant choice behind it."""

    choice: Choice | None  # None: nothing to choose, every file is listed
    keep: frozenset[str] | None  # file names to list; None: all

    def keeps(self, file: str) -> bool:
        return self.keep is None or file in self.keep

    def patches(self, paths: list[str]) -> list[str]:
        """The delta patches of the kept files (``.../deltas/<file>.from-<sha>.patch``)."""
        if self.keep is None:
            return paths
        return [p for p in paths if any(f"/deltas/{f}.from-" in p for f in self.keep)]


def device_fit(device: Device) -> DeviceFit:
    inventory = device.inventory or {}
    budget = inventory.get("model_ram_budget_mb")
    return DeviceFit(
        model_ram_budget_mb=budget if isinstance(budget, int) else None,
        arch=str(inventory.get("arch") or ""),
        accelerators=tuple(str(a) for a in inventory.get("accelerators") or ()),
    )


def fit_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    old = old or {}
    return any(old.get(key) != new.get(key) for key in FIT_KEYS)


def _options(files: list[ReleaseFile]) -> list[VariantOption] | None:
    models = [f for f in files if f.role == "model" and f.variant is not None]
    variants = {f.variant for f in models}
    required = any(
        getattr(f, key) is not None for f in models for key in ("memory_mb", "arch", "accelerator")
    )
    if len(variants) < 2 and not required:
        return None
    return [
        VariantOption(
            variant=str(f.variant),
            memory_mb=f.memory_mb,
            quality=f.quality,
            arch=None if f.arch is None else tuple(f.arch),
            accelerator=f.accelerator,
        )
        for f in models
    ]


def resolve(session: Session, device: Device, release_id: str) -> Resolved:
    files = list(session.scalars(select(ReleaseFile).where(ReleaseFile.release_id == release_id)))
    options = _options(files)
    if options is None:
        return Resolved(None, None)
    choice = choose_variant(options, device_fit(device))
    keep = (
        frozenset(
            f.file
            for f in files
            if f.variant is None or (choice.variant is not None and f.variant == choice.variant)
        )
        if choice.status == CHOSEN
        else frozenset()
    )
    return Resolved(choice, keep)


def record_change(
    session: Session,
    device: Device,
    component: str,
    release_id: str,
    version: str,
    choice: Choice,
) -> None:
    """Add a ``variant_chosen`` event when the choice differs from the last one recorded.

    Server-made events take negative sequence numbers, counting down, so they never collide
    with the device's own (which count up from 1); two concurrent check-ins computing the
    same event insert it once.
    """
    last = session.scalar(
        select(DeviceEvent)
        .where(
            DeviceEvent.device_id == device.id,
            DeviceEvent.component == component,
            DeviceEvent.event == CHOSEN_EVENT,
        )
        .order_by(DeviceEvent.id.desc())
        .limit(1)
    )
    key = {"variant": choice.variant, "status": choice.status}
    if (
        last is not None
        and last.release_id == release_id
        and ({k: last.detail.get(k) for k in key} == key)
    ):
        return
    lowest = session.scalar(
        select(func.min(DeviceEvent.seq)).where(
            DeviceEvent.device_id == device.id, DeviceEvent.seq < 0
        )
    )
    now = utcnow()
    insert_ignoring_conflicts(
        session,
        DeviceEvent,
        [
            {
                "device_id": device.id,
                "seq": (lowest or 0) - 1,
                "time": now,
                "received_at": now,
                "component": component,
                "event": CHOSEN_EVENT,
                "state": None,
                "release_id": release_id,
                "version": version,
                "reason": choice.reason,
                "detail": {**key, "by": "server"},
            }
        ],
        conflict_columns=("device_id", "seq"),
    )


def choices_for(session: Session, device: Device) -> dict[str, VariantChoicePublic]:
    """The current choice for each desired component that has variants (read-only)."""
    desired = session.execute(
        select(DesiredComponent.component, DesiredComponent.release_id).where(
            DesiredComponent.device_id == device.id
        )
    ).all()
    out: dict[str, VariantChoicePublic] = {}
    for component, release_id in desired:
        choice = resolve(session, device, release_id).choice
        if choice is not None:
            out[component] = VariantChoicePublic(
                variant=choice.variant, status=choice.status, reason=choice.reason
            )
    return out
