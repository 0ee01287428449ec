"""safetensors: an 8-byte little-endian header length, a JSON header, then raw tensor data."""

from __future__ import annotations

import json
import struct
from typing import Any

from edgeota.delta.container import ElementLayout, Layout, TensorSpan, clean_spans, plain_layout
from edgeota.delta.format import Container, FloatKind

_MAX_HEADER = 100 << 20  # the reference implementation refuses larger headers too

# dtype -> (bytes per element, float kind for low-rank detection)
_DTYPES: dict[str, tuple[int, FloatKind | None]] = {
    "F64": (8, None),
    "F32": (4, FloatKind.F32),
    "F16": (2, FloatKind.F16),
    "BF16": (2, FloatKind.BF16),
    "I64": (8, None),
    "U64": (8, None),
    "I32": (4, None),
    "U32": (4, None),
    "I16": (2, None),
    "U16": (2, None),
    "I8": (1, None),
    "U8": (1, None),
    "BOOL": (1, None),
    "F8_E4M3": (1, None),
    "F8_E5M2": (1, None),
}


def parse(data: memoryview) -> Layout | None:
    size = len(data)
    if size < 10:
        return None
    (header_len,) = struct.unpack_from("<Q", data, 0)
    if header_len < 2 or header_len > min(_MAX_HEADER, size - 8) or data[8] != ord("{"):
        return None
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    base = 8 + header_len
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        span = _span(name, entry, base, size)
        if span is None:
            return None
        spans.append(span)
    return Layout(Container.SAFETENSORS, clean_spans(spans, size))


def _span(name: str, entry: Any, base: int, size: int) -> TensorSpan | None:
    if not isinstance(entry, dict):
        return None
    offsets = entry.get("data_offsets")
    shape = entry.get("shape")
    dtype = entry.get("dtype")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and o >= 0 for o in offsets)
        or not isinstance(shape, list)
        or not all(isinstance(d, int) and d >= 0 for d in shape)
        or not isinstance(dtype, str)
    ):
        return None
    begin, end = offsets
    if begin > end or base + end > size:
        return None
    length = end - begin
    if dtype in _DTYPES:
        itemsize, kind = _DTYPES[dtype]
        layout = plain_layout(itemsize, kind, tuple(shape), length)
    else:
        layout = ElementLayout()
    return TensorSpan(name, base + begin, length, layout)
