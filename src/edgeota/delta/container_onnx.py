"""ONNX: a protobuf ``ModelProto``; tensor data sits in ``raw_data`` (or packed float fields).

The protobuf wire format is walked directly so that each tensor's data span is known as a byte
range of the file; the framing in between (names, dims, graph nodes) is left to the caller.
Tensors are found in graph initializers, sparse initializers, node attributes (``Constant``
values), subgraphs of control-flow nodes, functions and training-info graphs. Tensors kept in
external-data files are not inside the .onnx file; those files are diffed one by one.
"""

from __future__ import annotations

from collections.abc import Iterator

from edgeota.delta.container import ElementLayout, Layout, TensorSpan, clean_spans, plain_layout
from edgeota.delta.format import Container, FloatKind

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MAX_DEPTH = 24

# ModelProto / GraphProto / NodeProto / AttributeProto / TensorProto field numbers.
_MODEL_IR_VERSION, _MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 1, 7, 20, 25
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_SPARSE_INIT = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE = 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_ATTR_SPARSE, _ATTR_SPARSES = 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TRAINING_INIT, _TRAINING_ALGO = 1, 2
_T_DIMS, _T_TYPE, _T_FLOAT, _T_NAME, _T_RAW, _T_DOUBLE = 1, 2, 4, 8, 9, 10

# TensorProto.DataType -> (bytes per element, float kind)
_DTYPES: dict[int, tuple[int, FloatKind | None]] = {
    1: (4, FloatKind.F32),
    2: (1, None),
    3: (1, None),
    4: (2, None),
    5: (2, None),
    6: (4, None),
    7: (8, None),
    9: (1, None),
    10: (2, FloatKind.F16),
    11: (8, None),
    12: (4, None),
    13: (8, None),
    16: (2, FloatKind.BF16),
    17: (1, None),
    18: (1, None),
    19: (1, None),
    20: (1, None),
}


class _Malformed(Exception):
    pass


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field number, wire type, value or content start, content end) of one message."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed
        if wire == _VARINT:
            value, pos = _varint(data, pos, end)
            yield number, wire, value, pos
        elif wire == _I64:
            pos += 8
            yield number, wire, pos - 8, pos
        elif wire == _I32:
            pos += 4
            yield number, wire, pos - 4, pos
        elif wire == _LEN:
            length, pos = _varint(data, pos, end)
            if length > end - pos:
                raise _Malformed
            yield number, wire, pos, pos + length
            pos += length
        else:
            raise _Malformed  # groups are not used by ONNX
        if pos > end:
            raise _Malformed


def parse(data: memoryview) -> Layout | None:
    if not len(data):
        return None
    try:
        top = list(_fields(data, 0, len(data)))
    except _Malformed:
        return None
    has_ir = any(n == _MODEL_IR_VERSION and w == _VARINT for n, w, _, _ in top)
    has_graph = any(n == _MODEL_GRAPH and w == _LEN for n, w, _, _ in top)
    if not (has_ir and has_graph):
        return None
    spans: list[TensorSpan] = []
    try:
        for i, (number, wire, start, end) in enumerate(top):
            if wire != _LEN:
                continue
            if number == _MODEL_GRAPH:
                _graph(data, start, end, spans, "graph", 0)
            elif number == _MODEL_FUNCTIONS:
                _function(data, start, end, spans, f"function{i}", 0)
            elif number == _MODEL_TRAINING:
                for j, (n, w, s, e) in enumerate(_fields(data, start, end)):
                    if w == _LEN and n in (_TRAINING_INIT, _TRAINING_ALGO):
                        _graph(data, s, e, spans, f"training{i}.{j}", 0)
    except _Malformed:
        return None
    return Layout(Container.ONNX, clean_spans(spans, len(data)))


def _graph(
    data: memoryview, start: int, end: int, spans: list[TensorSpan], path: str, depth: int
) -> None:
    if depth > _MAX_DEPTH:
        raise _Malformed
    # Unnamed tensors are called by position (the n-th node, ...), which survives edits that
    # shift byte offsets.
    for i, (number, wire, s, e) in enumerate(_fields(data, start, end)):
        if wire != _LEN:
            continue
        if number == _GRAPH_INIT:
            _tensor(data, s, e, spans, f"{path}/init{i}")
        elif number == _GRAPH_SPARSE_INIT:
            _sparse(data, s, e, spans, f"{path}/sparse{i}")
        elif number == _GRAPH_NODE:
            _node(data, s, e, spans, f"{path}/node{i}", depth)


def _function(
    data: memoryview, start: int, end: int, spans: list[TensorSpan], path: str, depth: int
) -> None:
    for i, (number, wire, s, e) in enumerate(_fields(data, start, end)):
        if wire == _LEN and number == _FUNCTION_NODE:
            _node(data, s, e, spans, f"{path}/node{i}", depth)


def _node(
    data: memoryview, start: int, end: int, spans: list[TensorSpan], path: str, depth: int
) -> None:
    for i, (number, wire, s, e) in enumerate(_fields(data, start, end)):
        if wire != _LEN or number != _NODE_ATTRIBUTE:
            continue
        for j, (an, aw, a_s, a_e) in enumerate(_fields(data, s, e)):
            if aw != _LEN:
                continue
            where = f"{path}/attr{i}.{j}"
            if an in (_ATTR_T, _ATTR_TENSORS):
                _tensor(data, a_s, a_e, spans, where)
            elif an in (_ATTR_G, _ATTR_GRAPHS):
                _graph(data, a_s, a_e, spans, where, depth + 1)
            elif an in (_ATTR_SPARSE, _ATTR_SPARSES):
                _sparse(data, a_s, a_e, spans, where)


def _sparse(data: memoryview, start: int, end: int, spans: list[TensorSpan], path: str) -> None:
    for number, wire, s, e in _fields(data, start, end):
        if wire == _LEN and number in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(data, s, e, spans, f"{path}/{number}")


def _tensor(data: memoryview, start: int, end: int, spans: list[TensorSpan], path: str) -> None:
    dims: list[int] = []
    dtype = 0
    name = ""
    payload: tuple[int, int, int] | None = None  # (start, end, field)
    for number, wire, s, e in _fields(data, start, end):
        if number == _T_DIMS:
            if wire == _VARINT:
                dims.append(s)
            elif wire == _LEN:
                pos = s
                while pos < e:
                    value, pos = _varint(data, pos, e)
                    dims.append(value)
        elif number == _T_TYPE and wire == _VARINT:
            dtype = s
        elif number == _T_NAME and wire == _LEN:
            name = bytes(data[s:e]).decode("utf-8", "replace")
        elif number in (_T_RAW, _T_FLOAT, _T_DOUBLE) and wire == _LEN:
            payload = (s, e, number)
    if payload is None:
        return
    s, e, number = payload
    length = e - s
    if number == _T_FLOAT:
        layout = plain_layout(4, FloatKind.F32, tuple(dims), length)
    elif number == _T_DOUBLE:
        layout = plain_layout(8, None, tuple(dims), length)
    elif dtype in _DTYPES:
        itemsize, kind = _DTYPES[dtype]
        layout = plain_layout(itemsize, kind, tuple(dims), length)
    else:
        layout = ElementLayout()
    spans.append(TensorSpan(name or path, s, length, layout))
