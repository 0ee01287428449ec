"""Secrets the server makes for itself when the operator configures none.

One machine needs no set-up: a random key is created once in the data dir (mode 0600) and
read by every later start. Several server processes on several machines share a key by
setting it (``EDGEOTA_SESSION_SECRET``, ``EDGEOTA_MQTT_DEVICE_KEY``) instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from edgeota.fsutil import atomic_write_text, fsync_dir


def server_key(folder: Path, name: str, configured: SecretStr | None) -> bytes:
    """The configured secret, or the one kept as ``folder/<name>.key`` (created if missing)."""
    if configured is not None:
        return configured.get_secret_value().encode("utf-8")
    path = folder / f"{name}.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    draft = folder / f".{name}.{os.getpid()}.new"
    atomic_write_text(draft, secrets.token_hex(32), mode=0o600)
    # link() fails if the key exists: of two processes starting at once, one key wins and
    # both read it.
    with contextlib.suppress(FileExistsError):
        os.link(draft, path)
        fsync_dir(folder)
    draft.unlink(missing_ok=True)
    return path.read_bytes().strip()
