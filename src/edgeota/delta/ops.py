"""The ops a control stream holds: records, their packing, and the checks a reader applies.

Pure: bytes in, ops out (or ``FormatError``). The meaning of each op is in the package
docstring; ``apply`` executes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from edgeota.delta.format import (
    MAX_BLOCK,
    MAX_FACTOR_ELEMENTS,
    MAX_INLINE,
    MAX_QBITS,
    MAX_RANK,
    MAX_REF,
    MAX_ROW_BLOCK_ELEMENTS,
    MAX_STRIDE,
    Codec,
    FloatKind,
    Method,
)
from edgeota.errors import FormatError


class OpCode(IntEnum):
    END = 0
    COPY = 1
    INLINE = 2
    LITERAL = 3
    TENSOR = 4
    LOWRANK = 5


@dataclass(frozen=True)
class CopyOp:
    old_offset: int
    length: int


@dataclass(frozen=True)
class InlineOp:
    data: bytes


@dataclass(frozen=True)
class LiteralOp:
    ref_offset: int
    ref_length: int
    out_length: int
    payload_length: int


@dataclass(frozen=True)
class TensorOp:
    codec: Codec
    elem: int
    stride: int
    block: int
    ref_offset: int
    ref_length: int
    out_length: int
    payload_length: int

    @property
    def diff_length(self) -> int:
        """Bytes at the start of the region that are encoded against the reference."""
        if self.codec is Codec.RAW:
            return 0
        common = min(self.out_length, self.ref_length)
        return common - common % self.stride


@dataclass(frozen=True)
class LowRankOp:
    kind: FloatKind
    rows: int
    cols: int
    rank: int
    qbits: int
    rows_per_block: int
    ref_offset: int
    payload_length: int

    @property
    def out_length(self) -> int:
        return self.rows * self.cols * self.kind.itemsize


Op = CopyOp | InlineOp | LiteralOp | TensorOp | LowRankOp

_COPY = struct.Struct("<QQ")
_INLINE = struct.Struct("<I")
_LITERAL = struct.Struct("<QIQQ")
_TENSOR = struct.Struct("<BBIIQQQQ")
_LOWRANK = struct.Struct("<BIIHBIQQ")

OP_BODY_SIZE = {
    OpCode.END: 0,
    OpCode.COPY: _COPY.size,
    OpCode.INLINE: _INLINE.size,
    OpCode.LITERAL: _LITERAL.size,
    OpCode.TENSOR: _TENSOR.size,
    OpCode.LOWRANK: _LOWRANK.size,
}


def op_method(op: Op) -> Method:
    if isinstance(op, CopyOp):
        return Method.COPY
    if isinstance(op, InlineOp):
        return Method.INLINE
    if isinstance(op, LiteralOp):
        return Method.LITERAL
    if isinstance(op, LowRankOp):
        return Method.LOWRANK
    return {
        Codec.RAW: Method.TENSOR_RAW,
        Codec.XOR: Method.TENSOR_XOR,
        Codec.SUB: Method.TENSOR_SUB,
    }[op.codec]


def op_out_length(op: Op) -> int:
    if isinstance(op, CopyOp):
        return op.length
    if isinstance(op, InlineOp):
        return len(op.data)
    return op.out_length


def op_payload_length(op: Op) -> int:
    if isinstance(op, CopyOp | InlineOp):
        return 0
    return op.payload_length


def pack_op(op: Op) -> bytes:
    if isinstance(op, CopyOp):
        return bytes([OpCode.COPY]) + _COPY.pack(op.old_offset, op.length)
    if isinstance(op, InlineOp):
        return bytes([OpCode.INLINE]) + _INLINE.pack(len(op.data)) + op.data
    if isinstance(op, LiteralOp):
        body = _LITERAL.pack(op.ref_offset, op.ref_length, op.out_length, op.payload_length)
        return bytes([OpCode.LITERAL]) + body
    if isinstance(op, TensorOp):
        body = _TENSOR.pack(
            op.codec,
            op.elem,
            op.stride,
            op.block,
            op.ref_offset,
            op.ref_length,
            op.out_length,
            op.payload_length,
        )
        return bytes([OpCode.TENSOR]) + body
    body = _LOWRANK.pack(
        op.kind,
        op.rows,
        op.cols,
        op.rank,
        op.qbits,
        op.rows_per_block,
        op.ref_offset,
        op.payload_length,
    )
    return bytes([OpCode.LOWRANK]) + body


def unpack_op_body(code: OpCode, body: bytes) -> Op:
    """Decode one op's fixed fields (inline data is read by the caller) and check them alone.

    Checks that need context (old size, bytes left to produce) are done by ``OpValidator``.
    """
    if code is OpCode.COPY:
        return CopyOp(*_COPY.unpack(body))
    if code is OpCode.INLINE:
        raise RuntimeError("inline ops carry data; use unpack_inline_length")
    if code is OpCode.LITERAL:
        lit = LiteralOp(*_LITERAL.unpack(body))
        if lit.ref_length > MAX_REF:
            raise FormatError(f"literal reference of {lit.ref_length} bytes exceeds {MAX_REF}")
        return lit
    if code is OpCode.TENSOR:
        codec, elem, stride, block, ref_off, ref_len, out_len, pay_len = _TENSOR.unpack(body)
        try:
            codec_v = Codec(codec)
        except ValueError as e:
            raise FormatError(f"unknown tensor codec {codec}") from e
        if elem not in (1, 2, 4, 8) or stride < elem or stride % elem or stride > MAX_STRIDE:
            raise FormatError(f"invalid tensor element width {elem} / stride {stride}")
        if block < stride or block % stride or block > MAX_BLOCK:
            raise FormatError(f"invalid tensor block size {block} for stride {stride}")
        if codec_v is Codec.RAW and ref_len:
            raise FormatError("a raw tensor op must not name a reference")
        return TensorOp(codec_v, elem, stride, block, ref_off, ref_len, out_len, pay_len)
    if code is OpCode.LOWRANK:
        kind, rows, cols, rank, qbits, rpb, ref_off, pay_len = _LOWRANK.unpack(body)
        try:
            kind_v = FloatKind(kind)
        except ValueError as e:
            raise FormatError(f"unknown low-rank float kind {kind}") from e
        if not (rows and cols and 0 < rank <= MAX_RANK and 0 < qbits <= MAX_QBITS):
            raise FormatError(f"invalid low-rank shape {rows}x{cols} rank {rank} q{qbits}")
        if (rows + cols) * rank > MAX_FACTOR_ELEMENTS:
            raise FormatError(f"low-rank factors of {(rows + cols) * rank} elements: too many")
        if 2 * qbits + rank.bit_length() > 53:
            # The factor product is computed in float64; beyond 53 bits it is no longer exact
            # and apply would not be reproducible from one machine to another.
            raise FormatError(f"low-rank precision q{qbits} rank {rank} exceeds float64")
        if not 0 < rpb <= rows or rpb * cols > MAX_ROW_BLOCK_ELEMENTS:
            raise FormatError(f"invalid low-rank row block {rpb} for {rows}x{cols}")
        return LowRankOp(kind_v, rows, cols, rank, qbits, rpb, ref_off, pay_len)
    raise FormatError(f"unknown op code {code}")


def unpack_inline_length(body: bytes) -> int:
    (length,) = _INLINE.unpack(body)
    if length > MAX_INLINE:
        raise FormatError(f"inline op of {length} bytes exceeds {MAX_INLINE}")
    return int(length)


@dataclass
class OpValidator:
    """Checks each op against the header, tracking output produced and payload consumed."""

    old_size: int
    new_size: int
    data_length: int
    produced: int = 0
    consumed: int = 0

    def check(self, op: Op) -> None:
        out = op_out_length(op)
        if out > self.new_size - self.produced:
            raise FormatError(
                f"op writes {out} bytes at output offset {self.produced}, past the declared "
                f"new size {self.new_size}"
            )
        pay = op_payload_length(op)
        if pay > self.data_length - self.consumed:
            raise FormatError(f"op payload of {pay} bytes runs past the data section")
        for offset, length in _old_ranges(op):
            if offset > self.old_size or length > self.old_size - offset:
                raise FormatError(
                    f"op reads old bytes {offset}..{offset + length}, past the old size "
                    f"{self.old_size}"
                )
        self.produced += out
        self.consumed += pay

    def finish(self) -> None:
        if self.produced != self.new_size:
            raise FormatError(
                f"patch produces {self.produced} bytes but declares {self.new_size}: truncated?"
            )
        if self.consumed != self.data_length:
            raise FormatError("data section has bytes no op consumed")


def _old_ranges(op: Op) -> list[tuple[int, int]]:
    if isinstance(op, CopyOp):
        return [(op.old_offset, op.length)]
    if isinstance(op, LiteralOp):
        return [(op.ref_offset, op.ref_length)]
    if isinstance(op, TensorOp):
        return [(op.ref_offset, op.ref_length)]
    if isinstance(op, LowRankOp):
        return [(op.ref_offset, op.out_length)]
    return []
