"""Open an untrusted patch: header, whole-file checksum, summary, dictionary ranges, op stream.

Nothing is trusted before the checksum over the whole patch matches, and every length read
afterwards is still checked against ``format``'s limits and the sizes the header declares.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import BinaryIO

from edgeota.delta.format import (
    DIGEST_SIZE,
    HEADER_SIZE,
    RANGE_SIZE,
    PatchHeader,
    PatchInfo,
    info_from_header,
    unpack_header,
    unpack_ranges,
    unpack_summary,
)
from edgeota.delta.ops import (
    OP_BODY_SIZE,
    InlineOp,
    Op,
    OpCode,
    OpValidator,
    unpack_inline_length,
    unpack_op_body,
)
from edgeota.delta.zstdio import Readable, expect_end, read_exact
from edgeota.errors import FormatError

_READ = 1 << 20


def _pread(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise FormatError("patch changed or was truncated while it was being read")
    return data


def open_header(f: BinaryIO) -> PatchHeader:
    """Parse the header and verify the checksum of the whole patch (a streaming pass)."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    header = unpack_header(f.read(HEADER_SIZE), size)
    digest = hashlib.sha256()
    f.seek(0)
    left = size - DIGEST_SIZE
    while left:
        chunk = f.read(min(_READ, left))
        if not chunk:
            raise FormatError("patch was truncated while it was being read")
        digest.update(chunk)
        left -= len(chunk)
    if f.read(DIGEST_SIZE) != digest.digest():
        raise FormatError(
            "patch checksum mismatch: the patch is corrupt or truncated; download it again"
        )
    return header


def read_info(f: BinaryIO) -> PatchInfo:
    header = open_header(f)
    summary = unpack_summary(_pread(f, header.summary_offset, header.summary_length))
    return info_from_header(header, summary)


def read_dict_ranges(f: BinaryIO, header: PatchHeader) -> list[tuple[int, int]]:
    raw = _pread(f, header.dict_offset, header.dict_ranges * RANGE_SIZE)
    return unpack_ranges(raw, header.old_size)


def iter_ops(control: Readable, validator: OpValidator) -> Iterator[Op]:
    """Decode and check ops from the decompressed control stream until END."""
    while True:
        code_byte = read_exact(control, 1, "control stream")[0]
        try:
            code = OpCode(code_byte)
        except ValueError as e:
            raise FormatError(f"unknown op code {code_byte} in the control stream") from e
        if code is OpCode.END:
            validator.finish()
            expect_end(control, "control stream")
            return
        body = read_exact(control, OP_BODY_SIZE[code], "control stream")
        op: Op
        if code is OpCode.INLINE:
            op = InlineOp(read_exact(control, unpack_inline_length(body), "inline op"))
        else:
            op = unpack_op_body(code, body)
        validator.check(op)
        yield op
