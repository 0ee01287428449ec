"""The process's own memory: the peak, as the runtime reports it and the model build measures
it, and the resident size now (the agent's /metrics).

``getrusage(RUSAGE_SELF).ru_maxrss`` is the obvious source, but on Linux it carries over the
parent's peak across fork and exec (the kernel folds the old address space's high-water
mark into it at exec), so a runtime started by a large agent would report the agent's
memory. ``VmHWM`` in ``/proc/self/status`` is the high-water mark of this process's own
address space; it is used where it exists, ``getrusage`` elsewhere.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    peak_kib = status_kib("VmHWM")
    if peak_kib is not None:
        return peak_kib / 1024.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB; macOS reports bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def resident_mb() -> float | None:
    """Resident set size of this process now in MiB (None where /proc does not say)."""
    kib = status_kib("VmRSS")
    return None if kib is None else kib / 1024.0


def status_kib(field: str, pid: int | None = None) -> int | None:
    """A figure of ``/proc/<pid>/status`` in KiB (this process by default): ``VmHWM`` the
    peak resident size, ``VmRSS`` the resident size now; None where /proc does not say."""
    path = _STATUS if pid is None else Path(f"/proc/{pid}/status")
    try:
        for line in path.read_text("ascii").splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        pass
    return None
