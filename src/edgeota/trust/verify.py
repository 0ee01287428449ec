"""Checking downloaded bytes against a verified target: length first, then sha256.

``TargetVerifier`` is fed chunks as they arrive, so a download can stop the moment it passes
the signed length instead of filling the disk; ``verify_file`` checks a finished file.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from edgeota.errors import VerificationError
from edgeota.targets import VerifiedTarget

_CHUNK_BYTES = 1 << 20


class TargetVerifier:
    """Incremental length and hash check of one target's bytes."""

    def __init__(self, target: VerifiedTarget) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self._length = 0

    @property
    def length(self) -> int:
        """Bytes seen so far."""
        return self._length

    def update(self, chunk: bytes) -> None:
        """Add ``chunk``; raises as soon as the total passes the signed length."""
        self._length += len(chunk)
        if self._length > self._target.length:
            raise VerificationError(
                f"{self._target.path}: more data than its signed length "
                f"(expected {self._target.length} bytes, got at least {self._length}); "
                "the file is refused, download it again"
            )
        self._hash.update(chunk)

    def finish(self) -> None:
        """Raise unless exactly the signed length and hash were seen."""
        target = self._target
        if self._length != target.length:
            raise VerificationError(
                f"{target.path}: length mismatch (expected {target.length} bytes, "
                f"got {self._length}); the file is refused, download it again"
            )
        actual = self._hash.hexdigest()
        if not hmac.compare_digest(actual, target.sha256):
            raise VerificationError(
                f"{target.path}: sha256 mismatch (expected {target.sha256}, got {actual}); "
                "the file was altered or corrupted and is refused, download it again"
            )


def verify_file(path: Path, target: VerifiedTarget) -> None:
    """Stream ``path`` and raise VerificationError unless it matches ``target`` exactly."""
    size = path.stat().st_size
    if size != target.length:
        # Refuse before reading: an oversized file is never hashed.
        raise VerificationError(
            f"{target.path}: length mismatch in {path} (expected {target.length} bytes, "
            f"got {size}); the file is refused, download it again"
        )
    verifier = TargetVerifier(target)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            verifier.update(chunk)
    verifier.finish()
