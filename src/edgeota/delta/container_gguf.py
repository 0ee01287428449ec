"""GGUF (llama.cpp): header, key/value metadata, tensor infos, then aligned tensor data.

Only little-endian GGUF v2/v3 is recognised; anything else falls back to the generic method.
Every count and length read is checked against the bytes left, so a malformed file is rejected
rather than looped over.
"""

from __future__ import annotations

import bisect
import struct

from edgeota.delta.container import ElementLayout, Layout, TensorSpan, clean_spans, plain_layout
from edgeota.delta.format import Container, FloatKind

_MAGIC = b"GGUF"
_MAX_DIMS = 8
_DEFAULT_ALIGNMENT = 32

# Fixed-size metadata value types -> size in bytes (8 = string, 9 = array are variable).
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING = 8
_ARRAY = 9
_UINT32 = 4

# ggml type -> (elements per block, bytes per block, float kind); from ggml's type traits.
_GGML_TYPES: dict[int, tuple[int, int, FloatKind | None]] = {
    0: (1, 4, FloatKind.F32),
    1: (1, 2, FloatKind.F16),
    2: (32, 18, None),  # Q4_0
    3: (32, 20, None),  # Q4_1
    6: (32, 22, None),  # Q5_0
    7: (32, 24, None),  # Q5_1
    8: (32, 34, None),  # Q8_0
    9: (32, 40, None),  # Q8_1
    10: (256, 84, None),  # Q2_K
    11: (256, 110, None),  # Q3_K
    12: (256, 144, None),  # Q4_K
    13: (256, 176, None),  # Q5_K
    14: (256, 210, None),  # Q6_K
    15: (256, 292, None),  # Q8_K
    16: (256, 66, None),  # IQ2_XXS
    17: (256, 74, None),  # IQ2_XS
    18: (256, 98, None),  # IQ3_XXS
    19: (256, 50, None),  # IQ1_S
    20: (32, 18, None),  # IQ4_NL
    21: (256, 110, None),  # IQ3_S
    22: (256, 82, None),  # IQ2_S
    23: (256, 136, None),  # IQ4_XS
    24: (1, 1, None),  # I8
    25: (1, 2, None),  # I16
    26: (1, 4, None),  # I32
    27: (1, 8, None),  # I64
    28: (1, 8, None),  # F64
    29: (256, 56, None),  # IQ1_M
    30: (1, 2, FloatKind.BF16),
    34: (256, 54, None),  # TQ1_0
    35: (256, 66, None),  # TQ2_0
}


class _Malformed(Exception):
    pass


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> int:
        if n < 0 or n > len(self.data) - self.pos:
            raise _Malformed
        start = self.pos
        self.pos += n
        return start

    def u32(self) -> int:
        value: int = struct.unpack_from("<I", self.data, self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack_from("<Q", self.data, self.take(8))[0]
        return value

    def string(self) -> bytes:
        n = self.u64()
        start = self.take(n)
        return bytes(self.data[start : start + n])

    def skip_value(self, vtype: int, depth: int = 0) -> None:
        if vtype in _SCALAR_SIZES:
            self.take(_SCALAR_SIZES[vtype])
        elif vtype == _STRING:
            self.take(self.u64())
        elif vtype == _ARRAY and depth < 4:
            itype = self.u32()
            count = self.u64()
            if itype in _SCALAR_SIZES:
                if count > len(self.data):
                    raise _Malformed
                self.take(count * _SCALAR_SIZES[itype])
            else:
                if count > len(self.data) - self.pos:  # every item takes at least one byte
                    raise _Malformed
                for _ in range(count):
                    self.skip_value(itype, depth + 1)
        else:
            raise _Malformed


def parse(data: memoryview) -> Layout | None:
    if len(data) < 24 or bytes(data[:4]) != _MAGIC:
        return None
    try:
        return _parse(data)
    except (_Malformed, struct.error):
        return None


def _parse(data: memoryview) -> Layout | None:
    cur = _Cursor(data)
    cur.take(4)
    if cur.u32() not in (2, 3):
        return None
    n_tensors = cur.u64()
    n_kv = cur.u64()
    if n_tensors > len(data) or n_kv > len(data):
        return None
    alignment = _DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.u32()
        if key == b"general.alignment" and vtype == _UINT32:
            alignment = cur.u32()
            if alignment == 0 or alignment & (alignment - 1):
                return None
        else:
            cur.skip_value(vtype)
    infos = []
    for _ in range(n_tensors):
        name = cur.string().decode("utf-8", "replace")
        n_dims = cur.u32()
        if n_dims > _MAX_DIMS:
            return None
        dims = [cur.u64() for _ in range(n_dims)]
        infos.append((name, dims, cur.u32(), cur.u64()))
    data_start = -(-cur.pos // alignment) * alignment
    starts = [*sorted(data_start + off for _, _, _, off in infos), len(data)]
    spans = []
    for name, dims, ggml_type, rel in infos:
        offset = data_start + rel
        spans.append(_span(name, dims, ggml_type, offset, starts, len(data)))
    return Layout(Container.GGUF, clean_spans(spans, len(data)))


def _span(
    name: str, dims: list[int], ggml_type: int, offset: int, starts: list[int], size: int
) -> TensorSpan:
    count = 1
    for d in dims:
        count *= d
    shape = tuple(reversed(dims))  # ggml lists the fastest-varying dimension first
    traits = _GGML_TYPES.get(ggml_type)
    if traits is not None and count % traits[0] == 0:
        per_block, block_bytes, kind = traits
        length = count // per_block * block_bytes
        if per_block == 1:
            return TensorSpan(name, offset, length, plain_layout(block_bytes, kind, shape, length))
        return TensorSpan(name, offset, length, ElementLayout(1, block_bytes))
    # Unknown type: the data runs to the next tensor (or the end of the file).
    i = bisect.bisect_right(starts, offset)
    end = starts[i] if i < len(starts) else size
    return TensorSpan(name, offset, end - offset, ElementLayout())
