"""Reuse files the committed slot already holds instead of downloading them again.

A container release's layers are named by their sha256 and usually most of them are
unchanged from the installed release. :func:`reusable_files` finds, for the verified targets
of a new release, the files of the committed slot with the same signed sha256 and length,
and re-hashes each candidate before offering it: the slot's ``edgeota-slot.json`` and file
names only say where to look, never what a file holds. The agent then hard-links (or, across
file systems, copies) it into the slot being staged, as it does with a download.

A hard link shares the file with the committed slot, so nothing may write a slot file in
place: slots are only ever written with new files renamed into place, and a slot that is
cleared for the next release drops its links without touching the other slot's files.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from edgeota.agent.slots import file_sha256
from edgeota.errors import FormatError, PolicyError
from edgeota.fsutil import safe_join
from edgeota.slotinfo import SlotInfo

_CHUNK = 1 << 20


class _Custom(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def file(self) -> str: ...


class ReusableTarget(Protocol):
    """What this module needs of a target (``edgeota.targets.VerifiedTarget`` has it)."""

    @property
    def sha256(self) -> str: ...
    @property
    def length(self) -> int: ...
    @property
    def custom(self) -> _Custom: ...


def reusable_files(
    targets: Iterable[ReusableTarget], committed_slot: Path | None
) -> dict[str, Path]:
    """Map each target's slot file name to a committed-slot file with the same bytes.

    Only targets whose signed sha256 and length match a file the committed slot lists, and
    whose bytes on disk hash to that sha256 now, are in the result. No committed slot, no or
    a broken ``edgeota-slot.json``: nothing is reusable (everything is downloaded).
    """
    if committed_slot is None:
        return {}
    try:
        info = SlotInfo.read(committed_slot)
    except (FileNotFoundError, FormatError):
        return {}
    listed: dict[tuple[str, int], list[str]] = {}
    for f in info.files:
        listed.setdefault((f.sha256, f.length), []).append(f.file)
    checked: dict[Path, str | None] = {}  # path -> its sha256 now (None: unusable)
    found: dict[str, Path] = {}
    for target in targets:
        for name in listed.get((target.sha256, target.length), []):
            path = _slot_path(committed_slot, name)
            if path is None:
                continue
            if path not in checked:
                checked[path] = _regular_file_sha256(path, target.length)
            if checked[path] == target.sha256:
                found[target.custom.file] = path
                break
    return found


def _slot_path(slot: Path, name: str) -> Path | None:
    try:
        return safe_join(slot, name)
    except PolicyError:
        return None


def _regular_file_sha256(path: Path, length: int) -> str | None:
    """The file's sha256 if it is a regular file (not a link) of ``length`` bytes."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size != length:
            return None
        return file_sha256(path)
    except OSError:
        return None
