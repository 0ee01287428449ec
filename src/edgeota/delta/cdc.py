"""Content-defined chunking with a gear rolling hash, vectorised with numpy.

Cut points depend only on the 32 bytes before them, so an insertion or deletion shifts the
chunks around it but leaves the rest with identical boundaries and hashes. The gear hash
h_i = sum_k gear[b_(i-k)] << k (mod 2**32, k < 32) is computed for a whole window at once by
doubling (5 shifted adds instead of a loop per byte); a cut is a position whose top bits are
zero, then minimum and maximum chunk sizes are enforced in one pass over the candidates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_WINDOW = 32
_SCAN = 8 << 20  # bytes hashed per numpy pass

# A fixed table (derived from sha256, so it never changes between versions or platforms).
GEAR = np.frombuffer(
    b"".join(hashlib.sha256(b"edgeota-gear-%d" % i).digest()[:4] for i in range(256)),
    dtype="<u4",
).astype(np.uint32)


@dataclass(frozen=True)
class ChunkParams:
    min_size: int = 2 << 10
    avg_bits: int = 13  # about 2**13 bytes between candidate cuts
    max_size: int = 64 << 10

    @property
    def mask(self) -> np.uint32:
        # The top bits depend on all 32 bytes of the window; the low bits only on the last few.
        return np.uint32(((1 << self.avg_bits) - 1) << (32 - self.avg_bits))


def gear_hash(data: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
    """The rolling hash at every position of ``data`` (bytes before the start count as 0)."""
    h = GEAR[data]
    shift = 1
    while shift < _WINDOW:
        h[shift:] += h[:-shift] << np.uint32(shift)
        shift *= 2
    return h


def _candidates(data: memoryview, mask: np.uint32) -> Iterator[int]:
    """Positions just after a byte whose hash has the mask bits clear, in order."""
    size = len(data)
    start = 0
    while start < size:
        lead = min(start, _WINDOW - 1)
        end = min(size, start + _SCAN)
        window = np.frombuffer(data[start - lead : end], dtype=np.uint8)
        h = gear_hash(window)[lead:]
        hits = np.flatnonzero((h & mask) == 0)
        yield from (hits + (start + 1)).tolist()
        start = end


def chunk_ends(data: memoryview, params: ChunkParams | None = None) -> list[int]:
    """End offsets of consecutive chunks covering ``data`` (the last one is ``len(data)``)."""
    p = params or ChunkParams()
    size = len(data)
    ends: list[int] = []
    last = 0
    for cut in _candidates(data, p.mask):
        while cut - last > p.max_size:
            last += p.max_size
            ends.append(last)
        if cut - last >= p.min_size and cut < size:
            ends.append(cut)
            last = cut
    while size - last > p.max_size:
        last += p.max_size
        ends.append(last)
    if size > last:
        ends.append(size)
    return ends


def chunk_digest(data: memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()
