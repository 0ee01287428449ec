"""One agent per data folder: an exclusive lock that names its holder."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edgeota.errors import EdgeotaError


class AgentLockedError(EdgeotaError):
    """Another agent already runs on the same data folder."""


def lock_data_dir(lock_path: Path, data_dir: Path) -> int:
    """Take the folder's lock and write our pid in it; returns the descriptor that holds it
    (closing it releases the lock, as does the process ending in any way)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AgentLockedError(
            f"another agent (pid {holder}) is running on {data_dir}: stop it, "
            "or give this agent its own data folder"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
