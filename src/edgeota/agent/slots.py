"""A/B slots of one component on disk.

Layout::

    <data_dir>/components/<name>/slots/a/     one complete release each
    <data_dir>/components/<name>/slots/b/
    <data_dir>/components/<name>/current  ->  slots/a   (the switch: one atomic rename)

Only a slot that ``current`` does not point at is ever written. Files are placed with
:func:`edgeota.fsutil.safe_join`, so a signed file name with ``..`` cannot escape the slot.
A slot counts as installed only when its ``edgeota-slot.json`` exists (written last) and every
file it lists has the recorded length and sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from edgeota.errors import FormatError, UntrustedError, VerificationError
from edgeota.fsutil import atomic_symlink, fsync_dir, safe_join
from edgeota.slotinfo import SLOT_INFO_NAME, SlotInfo
from edgeota.targets import check_component_name

SLOT_NAMES = ("a", "b")
_HASH_CHUNK = 1 << 20


def other_slot(slot: str | None) -> str:
    """The slot an update goes into: the one not committed (``a`` on a fresh device)."""
    return "b" if slot == "a" else "a"


def _check_slot(slot: str) -> str:
    if slot not in SLOT_NAMES:
        raise ValueError(f"slot must be one of {SLOT_NAMES}, not {slot!r}")
    return slot


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ActiveSlotWriteError(RuntimeError):
    """Something tried to write the slot ``current`` points at: a bug, refused."""


class ComponentSlots:
    def __init__(self, data_dir: Path, component: str) -> None:
        self.component = check_component_name(component)
        self.root = data_dir / "components" / component
        self.current_link = self.root / "current"

    def slot_dir(self, slot: str) -> Path:
        return self.root / "slots" / _check_slot(slot)

    # -- the switch --------------------------------------------------------------------
    def active(self) -> str | None:
        """The slot ``current`` points at, or None when nothing is switched to."""
        try:
            target = self.current_link.readlink()
        except FileNotFoundError:
            return None
        name = target.name
        if target.parent != Path("slots") or name not in SLOT_NAMES:
            raise FormatError(f"{self.current_link} points at {target!r}, not at a slot")
        return name

    def switch_to(self, slot: str) -> None:
        """Point ``current`` at ``slot`` with one atomic rename (idempotent)."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_symlink(f"slots/{_check_slot(slot)}", self.current_link)

    def clear_current(self) -> None:
        """Remove ``current`` (a first install that failed: nothing is installed)."""
        with contextlib.suppress(FileNotFoundError):
            self.current_link.unlink()
            fsync_dir(self.root)

    # -- writing the inactive slot -----------------------------------------------------
    def _writable(self, slot: str) -> Path:
        if self.active() == slot:
            raise ActiveSlotWriteError(
                f"refusing to write slot {slot!r} of {self.component!r}: it is the active slot"
            )
        return self.slot_dir(slot)

    def prepare(self, slot: str) -> Path:
        """Empty the (inactive) ``slot`` and return its folder."""
        path = self._writable(slot)
        # Remove the description first: an interrupted removal then leaves a slot that is
        # plainly not installed, never one that looks complete but lacks files.
        with contextlib.suppress(FileNotFoundError):
            (path / SLOT_INFO_NAME).unlink()
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        fsync_dir(path.parent)
        return path

    def install_file(self, slot: str, name: str, source: Path) -> Path:
        """Place ``source`` at ``name`` inside the inactive ``slot`` (hard link, else copy)."""
        root = self._writable(slot)
        dest = safe_join(root, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        try:
            # A hard link costs no space and keeps the verified download in place, so a
            # crash before the slot is complete can resume without fetching it again.
            os.link(source, dest)
        except OSError:
            tmp = dest.with_name(f".{dest.name}.copy")
            shutil.copyfile(source, tmp)
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            tmp.replace(dest)
        fsync_dir(dest.parent)
        return dest

    def write_info(self, slot: str, info: SlotInfo) -> None:
        """Write ``edgeota-slot.json`` (last: it is what makes the slot count as installed)."""
        info.write(self._writable(slot))

    def empty(self, slot: str) -> None:
        """Reclaim the space of an inactive slot."""
        path = self._writable(slot)
        with contextlib.suppress(FileNotFoundError):
            (path / SLOT_INFO_NAME).unlink()
        shutil.rmtree(path, ignore_errors=True)

    # -- reading -----------------------------------------------------------------------
    def verify(self, slot: str) -> SlotInfo:
        """The slot's description, after checking every file; raises if it is not valid."""
        path = self.slot_dir(slot)
        try:
            info = SlotInfo.read(path)
        except FileNotFoundError:
            raise VerificationError(
                f"slot {slot!r} of {self.component!r} has no {SLOT_INFO_NAME}: "
                "it is empty or was not completely staged"
            ) from None
        if info.component != self.component:
            raise VerificationError(
                f"slot {slot!r} of {self.component!r} describes component {info.component!r}"
            )
        for f in info.files:
            file = safe_join(path, f.file)
            try:
                size = file.stat().st_size
            except FileNotFoundError:
                raise VerificationError(f"slot {slot!r} lacks {f.file!r}") from None
            if size != f.length or file_sha256(file) != f.sha256:
                raise VerificationError(
                    f"{f.file!r} in slot {slot!r} of {self.component!r} does not match its "
                    "recorded length and sha256"
                )
        return info

    def is_valid(self, slot: str) -> bool:
        try:
            self.verify(slot)
        except UntrustedError:
            return False
        return True
