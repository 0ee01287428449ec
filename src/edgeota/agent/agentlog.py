"""The agent's own log file, and the tail of it a device uploads when an update fails.

The log is a small rotating file in ``<data dir>/logs/`` (two files of at most
``LOG_FILE_BYTES``), so it survives a restart, and the tail uploaded after a failure also
shows what happened before a crash. The runtime's log of the component is appended, since a
failed health check is often explained there.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

LOG_FILE_BYTES = 1024 * 1024
UPLOAD_CAP_BYTES = 256 * 1024  # what the server accepts by default
_RUNTIME_SHARE = 4  # a quarter of the upload is the runtime's log


def log_path(data_dir: Path) -> Path:
    return data_dir / "logs" / "agent.log"


def runtime_log_path(data_dir: Path, component: str) -> Path:
    """Where the agent's runtime driver writes the runtime's output (see ``build_agent``)."""
    return data_dir / "logs" / f"runtime-{component}.log"


def install_file_log(data_dir: Path, level: int = logging.INFO) -> logging.Handler:
    """Also write the ``edgeota`` loggers to the agent's log file (idempotent per file)."""
    path = log_path(data_dir)
    logger = logging.getLogger("edgeota")
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path:
            return handler
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_FILE_BYTES, backupCount=1, encoding="utf-8"
    )
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    return handler


def tail(path: Path, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of a file, from its rotated predecessor too, cut at a line start."""
    parts: list[bytes] = []
    left = max_bytes
    for candidate in (path, path.with_name(path.name + ".1")):
        if left <= 0:
            break
        try:
            with candidate.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - left))
                data = f.read(left)
        except FileNotFoundError:
            continue
        parts.insert(0, data)
        left -= len(data)
    data = b"".join(parts)
    if len(data) >= max_bytes and b"\n" in data:
        data = data[data.index(b"\n") + 1 :]  # drop the partial first line
    return data


def failure_report(data_dir: Path, component: str | None, cap: int = UPLOAD_CAP_BYTES) -> str:
    """The agent log's tail, then the component runtime's, in at most ``cap`` bytes."""
    runtime = b""
    if component is not None:
        runtime = tail(runtime_log_path(data_dir, component), cap // _RUNTIME_SHARE)
    header = f"\n--- runtime log of {component} (tail) ---\n".encode() if runtime else b""
    agent = tail(log_path(data_dir), cap - len(runtime) - len(header))
    return (agent + header + runtime).decode("utf-8", errors="replace")
