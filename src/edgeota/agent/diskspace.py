"""Free-space checks made before any download starts, so a release that cannot fit fails
early, before the active slot is touched, with the figures a person needs to act."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from edgeota.errors import InsufficientSpaceError

FreeBytes = Callable[[Path], int]
_MB = 1024 * 1024


class NotEnoughSpaceError(InsufficientSpaceError):
    """Carries the figures: bytes needed (including the reserve) and bytes free."""

    def __init__(self, message: str, needed_bytes: int, free_bytes: int) -> None:
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def ensure_free(
    path: Path,
    needed_bytes: int,
    *,
    reserve_bytes: int = 0,
    what: str = "the download",
    measure: FreeBytes = free_bytes,
) -> None:
    """Raise NotEnoughSpaceError unless ``needed_bytes`` + ``reserve_bytes`` are free."""
    free = measure(path)
    total = needed_bytes + reserve_bytes
    if free < total:
        raise NotEnoughSpaceError(
            f"not enough disk space for {what} in {path}: needs {total / _MB:.1f} MB "
            f"({needed_bytes} bytes plus a {reserve_bytes / _MB:.1f} MB reserve), "
            f"{free / _MB:.1f} MB free; free some space or choose a smaller variant",
            needed_bytes=total,
            free_bytes=free,
        )
