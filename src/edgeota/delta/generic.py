"""Ops for any file: content-defined chunk matches become copies, the rest literal pieces.

1. Both files are cut into content-defined chunks (``cdc``); a chunk of NEW whose hash (and
   bytes) equal an old chunk becomes a copy, and copies are extended byte by byte into their
   unmatched neighbours, so an edit inside a chunk costs only the edited bytes.
2. What is left is cut into pieces of at most ``PIECE`` bytes. Each piece is encoded against
   the old bytes at the same relative position (the offset of the nearest copy carries over
   insertions and deletions), either as zstd with that old window as dictionary (edits, code,
   text) or, for blobs of raw weights that every fine-tune changes slightly, with the XOR/SUB
   tensor codecs at a guessed element width. A sample of each piece decides.

Apply needs at most one piece's reference window in memory, never the whole old file: this is
what keeps the method bounded where ``zstd --patch-from`` needs the old file as its window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeota.delta.cdc import chunk_digest, chunk_ends
from edgeota.delta.container import ElementLayout
from edgeota.delta.encode import Encoded, encode_literal, encode_tensor, trial_cost
from edgeota.delta.format import Codec
from edgeota.delta.writer import PatchWriter
from edgeota.delta.zstdio import compress

PIECE = 4 << 20
MARGIN = 64 << 10  # old bytes on each side of the aligned position in a literal's dictionary
INLINE_BELOW = 512  # shorter leftovers go inline: a literal frame costs more than that
TENSOR_MIN = 64 << 10  # pieces shorter than this are never tried as raw tensors
_EXTEND_STEP = 4096
_TRIAL_LEVEL = 3
_RAW_TENSOR_LAYOUTS = (ElementLayout(4, 4), ElementLayout(2, 2))


@dataclass
class _Match:
    new: int
    old: int
    length: int

    @property
    def new_end(self) -> int:
        return self.new + self.length

    @property
    def old_end(self) -> int:
        return self.old + self.length


def _chunks(data: memoryview) -> list[tuple[int, int]]:
    out = []
    start = 0
    for end in chunk_ends(data):
        out.append((start, end))
        start = end
    return out


def find_matches(old: memoryview, new: memoryview) -> list[_Match]:
    """Copies of old chunks found in NEW, merged and extended, in NEW order, non-overlapping."""
    if not len(old) or not len(new):
        return []
    index: dict[bytes, int] = {}
    for start, end in _chunks(old):
        index.setdefault(chunk_digest(old[start:end]), start)
    matches: list[_Match] = []
    for start, end in _chunks(new):
        off = index.get(chunk_digest(new[start:end]))
        if off is None or old[off : off + end - start] != new[start:end]:
            continue
        last = matches[-1] if matches else None
        if last is not None and last.new_end == start and last.old_end == off:
            last.length += end - start
        else:
            matches.append(_Match(start, off, end - start))
    _extend(old, new, matches)
    return matches


def _first_difference(a: memoryview, b: memoryview) -> int:
    x = np.frombuffer(a, dtype=np.uint8)
    y = np.frombuffer(b, dtype=np.uint8)
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else len(x)


def _last_difference(a: memoryview, b: memoryview) -> int:
    """Length of the common suffix of two equal-length buffers."""
    x = np.frombuffer(a, dtype=np.uint8)
    y = np.frombuffer(b, dtype=np.uint8)
    diff = np.flatnonzero(x != y)
    return len(x) - int(diff[-1]) - 1 if diff.size else len(x)


def _extend(old: memoryview, new: memoryview, matches: list[_Match]) -> None:
    for i, m in enumerate(matches):
        # Forward, up to the next match.
        limit = matches[i + 1].new if i + 1 < len(matches) else len(new)
        while m.new_end < limit and m.old_end < len(old):
            n = min(_EXTEND_STEP, limit - m.new_end, len(old) - m.old_end)
            same = _first_difference(new[m.new_end : m.new_end + n], old[m.old_end : m.old_end + n])
            m.length += same
            if same < n:
                break
        # Backward, down to the previous match.
        floor = matches[i - 1].new_end if i else 0
        while m.new > floor and m.old > 0:
            n = min(_EXTEND_STEP, m.new - floor, m.old)
            same = _last_difference(new[m.new - n : m.new], old[m.old - n : m.old])
            m.new -= same
            m.old -= same
            m.length += same
            if same < n:
                break


def _encode_piece(
    old: memoryview, new: memoryview, start: int, end: int, delta: int, level: int, workdir: Path
) -> Encoded:
    length = end - start
    aligned = start + delta
    ref_lo = min(max(0, aligned - MARGIN), len(old))
    ref_hi = min(len(old), max(ref_lo, aligned + length + MARGIN))
    ref = old[ref_lo:ref_hi] if ref_hi > ref_lo else None
    piece = new[start:end]
    same_place = aligned >= 0 and aligned + length <= len(old)
    if length < TENSOR_MIN or not same_place:
        return encode_literal(piece, ref, ref_lo, level)
    # Compare on a sample: zstd against the local old window versus raw-tensor codecs.
    width = min(length, 128 << 10)
    s_ref = old[max(0, aligned - MARGIN) : min(len(old), aligned + width + MARGIN)]
    best_cost = len(compress(piece[:width], _TRIAL_LEVEL, bytes(s_ref) or None))
    best: tuple[Codec, ElementLayout] | None = None
    aligned_old = old[aligned : aligned + length]
    for layout in _RAW_TENSOR_LAYOUTS:
        for codec in (Codec.SUB, Codec.XOR):
            cost = trial_cost(piece, aligned_old, codec, layout, _TRIAL_LEVEL, [(0, width)])
            if cost < 0.9 * best_cost:
                best_cost, best = cost, (codec, layout)
    if best is None:
        return encode_literal(piece, ref, ref_lo, level)
    codec, layout = best
    return encode_tensor(piece, aligned_old, aligned, codec, layout, level, workdir)


def write_generic_ops(
    writer: PatchWriter, old: memoryview, new: memoryview, level: int, workdir: Path
) -> None:
    matches = find_matches(old, new)
    pos = 0
    delta = 0
    for i in range(len(matches) + 1):
        nxt = matches[i] if i < len(matches) else None
        gap_end = nxt.new if nxt is not None else len(new)
        if i == 0 and nxt is not None:
            delta = nxt.old - nxt.new  # before the first copy, align on it
        _write_gap(writer, old, new, pos, gap_end, delta, level, workdir)
        if nxt is not None:
            writer.copy(nxt.old, nxt.length)
            pos = nxt.new_end
            delta = nxt.old_end - nxt.new_end


def _write_gap(
    writer: PatchWriter,
    old: memoryview,
    new: memoryview,
    start: int,
    end: int,
    delta: int,
    level: int,
    workdir: Path,
) -> None:
    if end - start < INLINE_BELOW:
        writer.inline(new[start:end])
        return
    for piece_start in range(start, end, PIECE):
        piece_end = min(end, piece_start + PIECE)
        enc = _encode_piece(old, new, piece_start, piece_end, delta, level, workdir)
        try:
            writer.payload_op(enc.op, enc.payload)
        finally:
            enc.close()
