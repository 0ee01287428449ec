"""Crash-safe file helpers: every state file is written temp -> fsync -> rename -> fsync(dir).

A reader therefore sees either the old file or the new one, never an empty or torn one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from edgeota.errors import PolicyError


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_symlink(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` with one atomic rename (the A/B slot switch)."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)
    fsync_dir(link.parent)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def safe_relative_path(name: str) -> PurePosixPath:
    """Check that ``name`` is a plain relative path that cannot leave its folder.

    Raises PolicyError for absolute paths, ``..``, empty segments, backslashes or NULs.
    """
    if not name or "\\" in name or "\x00" in name:
        raise PolicyError(f"unsafe path {name!r}: empty, or contains a backslash or NUL")
    rel = PurePosixPath(name)
    if rel.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise PolicyError(f"unsafe path {name!r}: it must be relative and must not use '.' or '..'")
    return rel


def safe_join(root: Path, name: str) -> Path:
    """Join ``name`` below ``root``; the result is guaranteed to stay inside ``root``."""
    joined = (root / safe_relative_path(name)).resolve()
    root_resolved = root.resolve()
    if joined != root_resolved and root_resolved not in joined.parents:
        raise PolicyError(f"path {name!r} escapes {root}")
    return joined
