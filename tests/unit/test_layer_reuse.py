"""The agent reuses committed-slot files only when their bytes are what a new target signs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgeota.agent.layer_reuse import reusable_files
from edgeota.slotinfo import SlotFile, SlotInfo
from edgeota.targets import TargetCustom, VerifiedTarget

OLD_LAYER = b"layer shared by 1.0.0 and 2.0.0" * 100
CHANGED_LAYER = b"layer of 2.0.0 only" * 100


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def target(file: str, data: bytes, role: str = "layer") -> VerifiedTarget:
    custom = TargetCustom(
        component="app", version="2.0.0", release_id="rel-new", role=role, file=file
    )
    return VerifiedTarget(
        path=f"app/2.0.0/{file}",
        length=len(data),
        sha256=sha(data),
        custom=custom,
        url=f"app/2.0.0/{sha(data)}.{file}",
    )


def committed_slot(
    root: Path, files: dict[str, bytes], listed: dict[str, bytes] | None = None
) -> Path:
    """A slot holding ``files``; its ``edgeota-slot.json`` lists ``listed`` (default: them)."""
    slot = root / "slots" / "a"
    for name, data in files.items():
        (slot / name).parent.mkdir(parents=True, exist_ok=True)
        (slot / name).write_bytes(data)
    slot.mkdir(parents=True, exist_ok=True)
    SlotInfo(
        component="app",
        version="1.0.0",
        release_id="rel-old",
        files=tuple(
            SlotFile(file=name, role="layer", sha256=sha(data), length=len(data))
            for name, data in (files if listed is None else listed).items()
        ),
    ).write(slot)
    return slot


def layer_name(data: bytes) -> str:
    return f"image/{sha(data)}.tar"


def test_an_unchanged_layer_is_reused_and_a_changed_one_is_not(tmp_path: Path) -> None:
    slot = committed_slot(tmp_path, {layer_name(OLD_LAYER): OLD_LAYER, "image/x.tar": b"old"})
    new = [
        target(layer_name(OLD_LAYER), OLD_LAYER),
        target(layer_name(CHANGED_LAYER), CHANGED_LAYER),
    ]
    assert reusable_files(new, slot) == {layer_name(OLD_LAYER): slot / layer_name(OLD_LAYER)}


def test_a_file_under_another_name_is_found_by_its_signed_hash(tmp_path: Path) -> None:
    slot = committed_slot(tmp_path, {"old-name.bin": OLD_LAYER})
    found = reusable_files([target("image/new-name.tar", OLD_LAYER)], slot)
    assert found == {"image/new-name.tar": slot / "old-name.bin"}


def test_a_file_whose_bytes_changed_on_disk_is_not_reused(tmp_path: Path) -> None:
    """The slot description says the right hash; the file no longer has it (same length)."""
    name = layer_name(OLD_LAYER)
    slot = committed_slot(tmp_path, {name: OLD_LAYER})
    (slot / name).write_bytes(b"X" + OLD_LAYER[1:])
    assert reusable_files([target(name, OLD_LAYER)], slot) == {}


def test_a_name_alone_is_not_trusted(tmp_path: Path) -> None:
    """A file named by the new layer's sha256 but listed with other bytes is not reused."""
    name = layer_name(CHANGED_LAYER)
    slot = committed_slot(tmp_path, {name: OLD_LAYER})
    assert reusable_files([target(name, CHANGED_LAYER)], slot) == {}


def test_a_file_the_slot_does_not_list_is_not_reused(tmp_path: Path) -> None:
    name = layer_name(OLD_LAYER)
    slot = committed_slot(tmp_path, {name: OLD_LAYER}, listed={})
    assert reusable_files([target(name, OLD_LAYER)], slot) == {}


def test_a_symlink_in_the_slot_is_not_followed_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(OLD_LAYER)
    name = layer_name(OLD_LAYER)
    slot = committed_slot(tmp_path, {}, listed={name: OLD_LAYER})
    (slot / "image").mkdir()
    (slot / name).symlink_to(outside)
    assert reusable_files([target(name, OLD_LAYER)], slot) == {}


@pytest.mark.parametrize("state", ["no slot", "empty slot", "broken slot description"])
def test_without_a_readable_committed_slot_nothing_is_reused(tmp_path: Path, state: str) -> None:
    slot: Path | None = None
    if state != "no slot":
        slot = tmp_path / "slots" / "a"
        slot.mkdir(parents=True)
        (slot / layer_name(OLD_LAYER)).parent.mkdir()
        (slot / layer_name(OLD_LAYER)).write_bytes(OLD_LAYER)
    if state == "broken slot description":
        assert slot is not None
        (slot / "edgeota-slot.json").write_text('{"component": "app"')
    assert reusable_files([target(layer_name(OLD_LAYER), OLD_LAYER)], slot) == {}
