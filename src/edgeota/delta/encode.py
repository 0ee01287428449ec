"""Encoders for one region of NEW: literal bytes, tensor codecs, merged low-rank updates.

Each returns an ``Encoded``: the op plus its payload spooled to a temporary file. Choosing an
encoding is done by measurement: candidates are compressed (whole, or on samples of large
tensors) and the smallest wins.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import numpy as np

from edgeota.delta.codecs import U8, as_u8, encode_block
from edgeota.delta.container import ElementLayout
from edgeota.delta.floats import bits_dtype
from edgeota.delta.format import (
    MAX_ROW_BLOCK_ELEMENTS,
    Codec,
)
from edgeota.delta.lowrank import (
    factor_section_size,
    fit_lowrank,
    pack_factors,
    reconstruct,
    worth_fitting,
)
from edgeota.delta.ops import (
    LiteralOp,
    LowRankOp,
    Op,
    TensorOp,
    op_payload_length,
)
from edgeota.delta.zstdio import compress, compressor

BLOCK_TARGET = 1 << 20  # bytes per tensor block (rounded to the stride)
SPOOL_MAX = 64 << 20  # payloads larger than this go to a temporary file
TRIAL_FULL = 1 << 20  # tensors up to this size are encoded with every candidate
SAMPLE = 128 << 10  # otherwise candidates are compared on three samples of this size
TRIAL_LEVEL_MAX = 6  # samples are compressed at most this hard: ranking barely changes
LOWRANK_MAX_ELEMENTS = 1 << 24  # the fit holds a few float64 copies of the matrix
LOWRANK_MIN_PAYLOAD = 4096  # below this a plain diff is already cheap
LOWRANK_ROW_BLOCK_ELEMENTS = 1 << 18  # bounds apply's float64 work area
# Large tensors: create throughput matters more than the last percent. On byte-plane-shuffled
# diffs zstd level 9 is ~10x faster than 16 and costs 2-10% in size; multithreaded zstd
# (same frame format, apply unchanged) spreads the rest over the cores.
LARGE_TENSOR = 8 << 20
LARGE_TENSOR_LEVEL = 9
_THREADS = min(4, os.cpu_count() or 1)
_EMPTY: U8 = np.zeros(0, dtype=np.uint8)


def frame_settings(level: int, size: int) -> tuple[int, int]:
    """(zstd level, compression threads) for a payload frame holding ``size`` bytes of NEW."""
    if size >= LARGE_TENSOR:
        return min(level, LARGE_TENSOR_LEVEL), (_THREADS if _THREADS > 1 else 0)
    return level, 0


@dataclass
class Encoded:
    op: Op
    payload: IO[bytes]

    @property
    def size(self) -> int:
        return op_payload_length(self.op)

    def close(self) -> None:
        self.payload.close()


def _spool(workdir: Path) -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX, dir=str(workdir))


def tensor_block_size(stride: int) -> int:
    return max(stride, BLOCK_TARGET // stride * stride)


def encode_literal(new: memoryview, ref: memoryview | None, ref_offset: int, level: int) -> Encoded:
    """zstd of ``new``, with the old bytes ``ref`` (if any) as a raw-content dictionary."""
    ref_bytes = bytes(ref) if ref is not None and len(ref) else b""
    payload = compress(new, level, ref_bytes or None)
    op = LiteralOp(ref_offset if ref_bytes else 0, len(ref_bytes), len(new), len(payload))
    return Encoded(op, io.BytesIO(payload))


def encode_tensor(
    new: memoryview,
    ref: memoryview | None,
    ref_offset: int,
    codec: Codec,
    layout: ElementLayout,
    level: int,
    workdir: Path,
) -> Encoded:
    out_len = len(new)
    block = tensor_block_size(layout.stride)
    ref_len = 0 if codec is Codec.RAW or ref is None else len(ref)
    op = TensorOp(
        codec,
        layout.elem,
        layout.stride,
        block,
        ref_offset if ref_len else 0,
        ref_len,
        out_len,
        0,
    )
    m = op.diff_length
    spool = _spool(workdir)
    frame_level, threads = frame_settings(level, out_len)
    cctx = compressor(frame_level, out_len, threads=threads)
    with cctx.stream_writer(spool, size=out_len, closefd=False) as w:
        for s in range(0, out_len, block):
            e = min(s + block, out_len)
            old = as_u8(ref[s : min(e, m)]) if ref is not None and s < m else _EMPTY
            w.write(encode_block(as_u8(new[s:e]), old, codec, layout.elem, layout.stride).data)
    return Encoded(replace(op, payload_length=spool.tell()), spool)


def _sample_ranges(length: int, stride: int) -> list[tuple[int, int]]:
    if length <= TRIAL_FULL:
        return [(0, length)]
    width = max(stride, SAMPLE // stride * stride)
    starts = {0, (length // 2) // stride * stride, (length - width) // stride * stride}
    return [(s, min(s + width, length)) for s in sorted(starts)]


def trial_cost(
    new: memoryview,
    ref: memoryview | None,
    codec: Codec,
    layout: ElementLayout,
    level: int,
    ranges: list[tuple[int, int]],
) -> int:
    """Compressed size of ``ranges`` of the region under one codec."""
    if codec is Codec.RAW or ref is None:
        m = 0
    else:
        common = min(len(new), len(ref))
        m = common - common % layout.stride
    total = 0
    for s, e in ranges:
        old = as_u8(ref[s : min(e, m)]) if ref is not None and s < m else _EMPTY
        block = encode_block(as_u8(new[s:e]), old, codec, layout.elem, layout.stride)
        total += len(compress(block.data, level))
    return total


def choose_tensor(
    new: memoryview,
    ref: memoryview | None,
    ref_offset: int,
    layout: ElementLayout,
    level: int,
    workdir: Path,
) -> Encoded:
    """The smallest of RAW, XOR, SUB and (for float matrices) low-rank for one tensor."""
    codecs = [Codec.RAW]
    if ref is not None and min(len(new), len(ref)) >= layout.stride:
        codecs += [Codec.SUB, Codec.XOR]
    if len(codecs) == 1:
        best = encode_tensor(new, None, 0, Codec.RAW, layout, level, workdir)
    elif len(new) <= TRIAL_FULL:
        tried = [encode_tensor(new, ref, ref_offset, c, layout, level, workdir) for c in codecs]
        best = min(tried, key=lambda enc: enc.size)
        for enc in tried:
            if enc is not best:
                enc.close()
    else:
        ranges = _sample_ranges(len(new), layout.stride)
        trial_level = min(level, TRIAL_LEVEL_MAX)
        pick = min(codecs, key=lambda c: trial_cost(new, ref, c, layout, trial_level, ranges))
        best = encode_tensor(new, ref, ref_offset, pick, layout, level, workdir)
    if ref is not None and best.size > LOWRANK_MIN_PAYLOAD:
        low = encode_lowrank(new, ref, ref_offset, layout, level, workdir)
        if low is not None and low.size < 0.9 * best.size:
            best.close()
            return low
        if low is not None:
            low.close()
    return best


def lowrank_shape(layout: ElementLayout, new_len: int, ref_len: int) -> tuple[int, int] | None:
    """(rows, cols) if a tensor can carry a low-rank op, else None."""
    if layout.kind is None or layout.shape is None or len(layout.shape) < 2:
        return None
    rows = layout.shape[0]
    cols = 1
    for d in layout.shape[1:]:
        cols *= d
    if rows < 16 or cols < 16 or rows * cols > LOWRANK_MAX_ELEMENTS:
        return None
    if cols > MAX_ROW_BLOCK_ELEMENTS:
        return None
    if rows * cols * layout.kind.itemsize != new_len or ref_len != new_len:
        return None
    return rows, cols


def encode_lowrank(
    new: memoryview,
    ref: memoryview,
    ref_offset: int,
    layout: ElementLayout,
    level: int,
    workdir: Path,
) -> Encoded | None:
    """A low-rank op for the tensor, or None if its change is not a (useful) low-rank one."""
    shape = lowrank_shape(layout, len(new), len(ref))
    if shape is None or layout.kind is None:
        return None
    rows, cols = shape
    kind = layout.kind
    dt = bits_dtype(kind)
    old_bits = np.frombuffer(ref, dtype=dt).reshape(rows, cols)
    new_bits = np.frombuffer(new, dtype=dt).reshape(rows, cols)
    if not worth_fitting(old_bits, new_bits, kind):
        return None
    factors = fit_lowrank(old_bits, new_bits, kind)
    if factors is None:
        return None
    rank = factors.rank
    rows_per_block = max(1, min(rows, LOWRANK_ROW_BLOCK_ELEMENTS // cols))
    bq = factors.bq.astype(np.float64)
    aq = factors.aq.astype(np.float64)
    total = factor_section_size(rows, cols, rank) + len(new)
    spool = _spool(workdir)
    frame_level, threads = frame_settings(level, len(new))
    cctx = compressor(frame_level, total, threads=threads)
    with cctx.stream_writer(spool, size=total, closefd=False) as w:
        w.write(pack_factors(factors))
        for i0 in range(0, rows, rows_per_block):
            i1 = min(rows, i0 + rows_per_block)
            rec = reconstruct(
                old_bits[i0:i1], bq[i0:i1], aq, factors.row_exp[i0:i1], factors.col_exp, kind
            )
            target = np.ascontiguousarray(new_bits[i0:i1]).view(np.uint8).reshape(-1)
            guess = np.ascontiguousarray(rec).view(np.uint8).reshape(-1)
            w.write(encode_block(target, guess, Codec.SUB, dt.itemsize, dt.itemsize).data)
    op = LowRankOp(kind, rows, cols, rank, factors.qbits, rows_per_block, ref_offset, spool.tell())
    return Encoded(op, spool)
