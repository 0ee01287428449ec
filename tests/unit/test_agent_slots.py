"""A/B slots: atomic switch, only the inactive slot written, no path escapes a slot."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgeota.agent.slots import ActiveSlotWriteError, ComponentSlots, other_slot
from edgeota.errors import PolicyError, VerificationError
from edgeota.slotinfo import SlotFile, SlotInfo


def stage(slots: ComponentSlots, slot: str, files: dict[str, bytes], tmp: Path) -> SlotInfo:
    slots.prepare(slot)
    entries = []
    for name, data in files.items():
        src = tmp / f"src-{hashlib.sha256(data).hexdigest()}"
        src.write_bytes(data)
        slots.install_file(slot, name, src)
        entries.append(SlotFile(name, "file", hashlib.sha256(data).hexdigest(), len(data)))
    info = SlotInfo("app", "1.0.0", "rel-1", tuple(entries))
    slots.write_info(slot, info)
    return info


def test_other_slot() -> None:
    assert other_slot(None) == "a" and other_slot("a") == "b" and other_slot("b") == "a"


def test_switch_is_a_symlink_swap(tmp_path: Path) -> None:
    slots = ComponentSlots(tmp_path, "app")
    assert slots.active() is None
    stage(slots, "a", {"x.bin": b"x"}, tmp_path)
    slots.switch_to("a")
    assert slots.active() == "a"
    assert slots.current_link.is_symlink()
    assert (slots.current_link / "x.bin").read_bytes() == b"x"
    stage(slots, "b", {"x.bin": b"y"}, tmp_path)
    slots.switch_to("b")
    slots.switch_to("b")  # idempotent
    assert slots.active() == "b"
    assert (slots.current_link / "x.bin").read_bytes() == b"y"
    assert not any(p.name.startswith(".current") for p in slots.root.iterdir())
    slots.clear_current()
    assert slots.active() is None


def test_the_active_slot_is_never_written(tmp_path: Path) -> None:
    slots = ComponentSlots(tmp_path, "app")
    stage(slots, "a", {"x.bin": b"x"}, tmp_path)
    slots.switch_to("a")
    src = tmp_path / "s"
    src.write_bytes(b"z")
    with pytest.raises(ActiveSlotWriteError):
        slots.prepare("a")
    with pytest.raises(ActiveSlotWriteError):
        slots.install_file("a", "y.bin", src)
    with pytest.raises(ActiveSlotWriteError):
        slots.empty("a")
    assert slots.is_valid("a")


@pytest.mark.parametrize("name", ["../escape.bin", "a/../../escape.bin", "/etc/passwd", "a\\b"])
def test_traversal_names_are_refused(tmp_path: Path, name: str) -> None:
    """Row 11: a signed file name with ``..`` cannot write outside the slot."""
    slots = ComponentSlots(tmp_path / "data", "app")
    slots.prepare("b")
    src = tmp_path / "s"
    src.write_bytes(b"z")
    with pytest.raises(PolicyError):
        slots.install_file("b", name, src)
    assert not (tmp_path / "data" / "components" / "app" / "slots" / "escape.bin").exists()
    assert not (tmp_path / "data" / "components" / "app" / "escape.bin").exists()


@pytest.mark.parametrize("name", ["../x", "a/b", "UPPER", ""])
def test_traversal_component_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(PolicyError):
        ComponentSlots(tmp_path, name)


def test_slot_is_valid_only_with_its_description_and_matching_files(tmp_path: Path) -> None:
    slots = ComponentSlots(tmp_path, "app")
    slots.prepare("a")
    assert not slots.is_valid("a")  # no edgeota-slot.json: not installed
    stage(slots, "a", {"x.bin": b"x", "sub/y.bin": b"yy"}, tmp_path)
    assert slots.verify("a").release_id == "rel-1"
    (slots.slot_dir("a") / "sub" / "y.bin").unlink()
    (slots.slot_dir("a") / "sub" / "y.bin").write_bytes(b"yz")
    with pytest.raises(VerificationError, match="does not match"):
        slots.verify("a")
    (slots.slot_dir("a") / "x.bin").unlink()
    assert not slots.is_valid("a")


def test_prepare_empties_the_slot(tmp_path: Path) -> None:
    slots = ComponentSlots(tmp_path, "app")
    stage(slots, "b", {"x.bin": b"x"}, tmp_path)
    slots.prepare("b")
    assert list(slots.slot_dir("b").iterdir()) == []


def test_install_links_without_copying(tmp_path: Path) -> None:
    slots = ComponentSlots(tmp_path, "app")
    slots.prepare("a")
    src = tmp_path / "blob"
    src.write_bytes(b"data")
    dest = slots.install_file("a", "m/model.bin", src)
    assert dest.read_bytes() == b"data"
    assert dest.stat().st_ino == src.stat().st_ino
