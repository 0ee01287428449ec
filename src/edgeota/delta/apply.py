"""Apply a patch in bounded memory; OUT appears only once it is verified byte for byte.

Order of work: check the paths; verify the patch's own checksum (a streaming pass); verify
OLD's length and sha256 against the patch; check free space; then decode ops into a temporary
file in OUT's folder, hashing as it goes. Only if the result has NEW's length and sha256 is it
fsynced and renamed over OUT (then the folder is fsynced). On any error the temporary file is
removed and OUT is left as it was.

Memory: OLD is read with positioned reads, range by range; the patch is read as streams; the
largest buffers are one tensor block (``MAX_BLOCK``), a literal's reference window
(``MAX_REF``), the control dictionary (``MAX_DICT_BYTES``) and, for a low-rank op, its
factors and one block of rows in float64 (``MAX_ROW_BLOCK_ELEMENTS``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import zstandard

from edgeota.delta.codecs import as_u8, decode_block
from edgeota.delta.floats import bits_dtype
from edgeota.delta.format import (
    Codec,
    PatchHeader,
    PatchInfo,
)
from edgeota.delta.lowrank import factor_section_size, reconstruct, unpack_factors
from edgeota.delta.ops import (
    CopyOp,
    InlineOp,
    LiteralOp,
    LowRankOp,
    Op,
    OpValidator,
    TensorOp,
)
from edgeota.delta.reader import iter_ops, open_header, read_dict_ranges, read_info
from edgeota.delta.zstdio import BoundedReader, expect_end, open_frame, read_exact
from edgeota.errors import FormatError, InsufficientSpaceError, VerificationError
from edgeota.fsutil import fsync_dir

_BUFFER = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OldFile:
    """Positioned reads of the base file; a short read means it changed under us."""

    def __init__(self, f: BinaryIO) -> None:
        self._fd = f.fileno()

    def read(self, offset: int, length: int) -> bytes:
        parts = []
        while length:
            chunk = os.pread(self._fd, min(length, _BUFFER * 16), offset)
            if not chunk:
                raise VerificationError("the old file shrank while the patch was being applied")
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(parts)


class HashingSink:
    """Where decoded bytes go: the temporary output file, hashed on the way."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._f.write(data)
        self.sha256.update(data)
        self.size += len(data)


def read_patch_info(patch: Path) -> PatchInfo:
    """Header and method summary of ``patch``, after verifying its checksum."""
    with Path(patch).open("rb") as f:
        return read_info(f)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.samefile(b)
    except OSError:
        return False


def _check_paths(old: Path, patch: Path, out: Path) -> None:
    if _same_file(out, old):
        raise ValueError(f"OUT {out} is OLD {old}: write the new file to another path")
    if _same_file(out, patch):
        raise ValueError(f"OUT {out} is the patch {patch}: write the new file to another path")
    if out.is_dir():
        raise ValueError(f"OUT {out} is a directory")


def _verify_old(old_f: BinaryIO, old: Path, header: PatchHeader) -> None:
    digest = hashlib.sha256()
    size = 0
    old_f.seek(0)
    while chunk := old_f.read(_BUFFER):
        digest.update(chunk)
        size += len(chunk)
    got, want = digest.hexdigest(), header.old_sha256.hex()
    if size != header.old_size or got != want:
        raise VerificationError(
            f"{old} is not the base this patch was made for: it has sha256 {got} "
            f"({size} bytes), the patch expects sha256 {want} ({header.old_size} bytes); "
            "fetch the patch for this base, or the full file"
        )


def apply_patch(old: Path, patch: Path, out: Path) -> None:
    """Rebuild NEW from ``old`` and ``patch`` into ``out`` (byte-identical, or an error).

    Raises FormatError (corrupt or truncated patch), VerificationError (wrong base, or a
    result that does not match), InsufficientSpaceError (disk full), ValueError (OUT is OLD
    or the patch). ``out`` is untouched on every error.
    """
    old, patch, out = Path(old), Path(patch), Path(out)
    _check_paths(old, patch, out)
    with patch.open("rb") as pf, old.open("rb") as of:
        header = open_header(pf)
        _verify_old(of, old, header)
        out.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out.parent).free
        if free < header.new_size:
            raise InsufficientSpaceError(
                f"not enough space in {out.parent}: the new file needs {header.new_size} "
                f"bytes, {free} are free; free some space and retry"
            )
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as tf:
                sink = HashingSink(tf)
                _decode(pf, OldFile(of), header, sink)
                _verify_result(sink, header)
                tf.flush()
                os.fsync(tf.fileno())
            tmp.chmod(0o644)
            tmp.replace(out)
        except OSError as e:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if e.errno in _NO_SPACE:
                raise InsufficientSpaceError(
                    f"disk full while writing {out} ({header.new_size} bytes): free some "
                    "space and retry"
                ) from e
            raise
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    fsync_dir(out.parent)


def _verify_result(sink: HashingSink, header: PatchHeader) -> None:
    got = sink.sha256.digest()
    if sink.size != header.new_size or got != header.new_sha256:
        raise VerificationError(
            f"patched result does not match: {sink.size} bytes with sha256 {got.hex()}, "
            f"expected {header.new_size} bytes with sha256 {header.new_sha256.hex()}"
        )


def _decode(pf: BinaryIO, old: OldFile, header: PatchHeader, sink: HashingSink) -> None:
    try:
        ranges = read_dict_ranges(pf, header)
        dict_data = b"".join(old.read(o, n) for o, n in ranges)
        control_src = BoundedReader(pf, header.control_offset, header.control_length)
        control = open_frame(control_src, dict_data or None)
        validator = OpValidator(header.old_size, header.new_size, header.data_length)
        data_pos = header.data_offset
        for op in iter_ops(control, validator):
            _run(op, pf, data_pos, old, sink)
            if isinstance(op, LiteralOp | TensorOp | LowRankOp):
                data_pos += op.payload_length
    except zstandard.ZstdError as e:
        raise FormatError(f"corrupt compressed data in the patch: {e}") from e


def _run(op: Op, pf: BinaryIO, pos: int, old: OldFile, sink: HashingSink) -> None:
    if isinstance(op, CopyOp):
        for start in range(0, op.length, _BUFFER):
            n = min(_BUFFER, op.length - start)
            sink.write(old.read(op.old_offset + start, n))
    elif isinstance(op, InlineOp):
        sink.write(op.data)
    elif isinstance(op, LiteralOp):
        _run_literal(op, pf, pos, old, sink)
    elif isinstance(op, TensorOp):
        _run_tensor(op, pf, pos, old, sink)
    else:
        _run_lowrank(op, pf, pos, old, sink)


def _run_literal(op: LiteralOp, pf: BinaryIO, pos: int, old: OldFile, sink: HashingSink) -> None:
    ref = old.read(op.ref_offset, op.ref_length) if op.ref_length else None
    src = BoundedReader(pf, pos, op.payload_length)
    reader = open_frame(src, ref)
    left = op.out_length
    while left:
        chunk = read_exact(reader, min(left, _BUFFER), "literal data")
        sink.write(chunk)
        left -= len(chunk)
    expect_end(reader, "literal data")


def _run_tensor(op: TensorOp, pf: BinaryIO, pos: int, old: OldFile, sink: HashingSink) -> None:
    src = BoundedReader(pf, pos, op.payload_length)
    reader = open_frame(
        src,
    )
    m = op.diff_length
    empty = np.zeros(0, dtype=np.uint8)
    for s in range(0, op.out_length, op.block):
        e = min(s + op.block, op.out_length)
        enc = as_u8(read_exact(reader, e - s, "tensor data"))
        d_end = min(e, m)
        ref = as_u8(old.read(op.ref_offset + s, d_end - s)) if d_end > s else empty
        sink.write(decode_block(enc, ref, op.codec, op.elem, op.stride).data)
    expect_end(reader, "tensor data")


def _run_lowrank(op: LowRankOp, pf: BinaryIO, pos: int, old: OldFile, sink: HashingSink) -> None:
    src = BoundedReader(pf, pos, op.payload_length)
    reader = open_frame(
        src,
    )
    raw = read_exact(reader, factor_section_size(op.rows, op.cols, op.rank), "low-rank factors")
    factors = unpack_factors(raw, op.rows, op.cols, op.rank, op.qbits)
    bq = factors.bq.astype(np.float64)
    aq = factors.aq.astype(np.float64)
    dt = bits_dtype(op.kind)
    row_bytes = op.cols * dt.itemsize
    for i0 in range(0, op.rows, op.rows_per_block):
        i1 = min(op.rows, i0 + op.rows_per_block)
        old_rows = old.read(op.ref_offset + i0 * row_bytes, (i1 - i0) * row_bytes)
        old_bits = np.frombuffer(old_rows, dtype=dt).reshape(i1 - i0, op.cols)
        guess = reconstruct(
            old_bits, bq[i0:i1], aq, factors.row_exp[i0:i1], factors.col_exp, op.kind
        )
        enc = as_u8(read_exact(reader, (i1 - i0) * row_bytes, "low-rank residual"))
        ref = np.ascontiguousarray(guess).view(np.uint8).reshape(-1)
        sink.write(decode_block(enc, ref, Codec.SUB, dt.itemsize, dt.itemsize).data)
    expect_end(reader, "low-rank residual")
