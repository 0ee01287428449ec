"""The content-addressed artifact store: every file is named by its sha256.

Files live at ``<root>/sha256/<ab>/<abcdef…>``; a file reaches that name only after its
hash and length were checked, so whatever is there is what its name says. Any static file
server, CDN or object store can serve this tree.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from edgeota.errors import InsufficientSpaceError, VerificationError
from edgeota.fsutil import fsync_dir

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(text: str) -> bool:
    return bool(_SHA256_RE.match(text))


class ArtifactTooLargeError(VerificationError):
    """An upload passed the configured maximum size."""


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "incoming").mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return is_sha256(sha256) and self.path_for(sha256).is_file()

    def length(self, sha256: str) -> int | None:
        try:
            return self.path_for(sha256).stat().st_size
        except (FileNotFoundError, ValueError):
            return None

    def delete(self, sha256: str) -> bool:
        """Remove a stored file (no release lists it any more); False if it was not there."""
        try:
            self.path_for(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    @property
    def incoming_dir(self) -> Path:
        """Where files are written before they reach their name (same file system)."""
        return self.root / "incoming"

    def adopt_file(self, source: Path) -> tuple[str, int]:
        """Move a finished file from :attr:`incoming_dir` to its content address.

        Returns its sha256 and length. The hash is computed here, from the bytes on disk,
        so the file's name is always what its content says.
        """
        digest = hashlib.sha256()
        length = 0
        with source.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                length += len(chunk)
            os.fsync(f.fileno())
        sha256 = digest.hexdigest()
        final = self.path_for(sha256)
        if final.is_file():
            source.unlink()  # the same bytes are stored already
            return sha256, length
        final.parent.mkdir(parents=True, exist_ok=True)
        source.replace(final)
        fsync_dir(final.parent)
        return sha256, length

    async def put_stream(
        self, chunks: AsyncIterator[bytes], expected_sha256: str, max_bytes: int
    ) -> int:
        """Store a streamed upload under its hash; return its length.

        The bytes go to a temp file first and reach their final name only when the hash
        matches ``expected_sha256``; nothing half-written is ever visible.
        """
        final = self.path_for(expected_sha256)
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "incoming")
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        length = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    length += len(chunk)
                    if length > max_bytes:
                        raise ArtifactTooLargeError(
                            f"upload is larger than the server's limit of {max_bytes} bytes"
                        )
                    digest.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            actual = digest.hexdigest()
            if actual != expected_sha256:
                raise VerificationError(
                    f"uploaded bytes hash to {actual}, not {expected_sha256}: the upload was "
                    "corrupted or the wrong file was sent; upload it again"
                )
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(final)
            fsync_dir(final.parent)
            return length
        except OSError as e:
            if e.errno == 28:  # ENOSPC
                raise InsufficientSpaceError(
                    f"the server's artifact store at {self.root} is full; free space and retry"
                ) from e
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
