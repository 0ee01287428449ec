"""GGUF variants: F16, Q8_0 and Q4_0, written with the ``gguf`` package (numpy only).

The rules follow llama.cpp's own quantizer: 1-D tensors (norms, biases) stay F32; matrices
whose rows are a whole number of 32-value blocks are quantized; other matrices become F16.
All metadata is copied, with ``general.file_type`` set to the variant's type. A source that
is already quantized is dequantized first, and quality is measured against that.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from edgeota.modelops.catalog import BuildError
from edgeota.runtime.probe import Array

_QTYPES = {
    "F16": gguf.GGMLQuantizationType.F16,
    "Q8_0": gguf.GGMLQuantizationType.Q8_0,
    "Q4_0": gguf.GGMLQuantizationType.Q4_0,
}
_FILE_TYPES = {
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
}
_FLOAT_TYPES = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
_BLOCK = 32
_SKIPPED_KEYS = ("general.architecture", "general.file_type")


@dataclass(frozen=True)
class GgufSource:
    """A GGUF model read into memory: metadata and float32 tensors."""

    arch: str
    metadata: dict[str, Any]
    fields: list[tuple[str, Any, Any, Any]]  # (key, value, type, array item type)
    tensors: dict[str, Array]  # float32, numpy shape (rows last-dim first, as stored)
    quantized_source: bool


def read_source(path: Path) -> GgufSource:
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise BuildError(f"cannot read GGUF file {path}: {e}") from e
    metadata: dict[str, Any] = {}
    fields = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        metadata[key] = value
        if key in _SKIPPED_KEYS:
            continue
        item_type = field.types[1] if len(field.types) > 1 else None
        fields.append((key, value, field.types[0], item_type))
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise BuildError(f"GGUF file {path} has no general.architecture")
    tensors: dict[str, Array] = {}
    quantized = False
    for t in reader.tensors:
        if t.tensor_type in _FLOAT_TYPES:
            tensors[t.name] = np.array(t.data, dtype=np.float32)
        else:
            quantized = True
            tensors[t.name] = gguf.dequantize(t.data, t.tensor_type).astype(np.float32)
    return GgufSource(arch, metadata, fields, tensors, quantized)


def _encode(array: Array, variant: str) -> tuple[Array, Any, Array]:
    """(data to write, raw dtype or None, the float32 values a runtime would compute with)."""
    if array.ndim < 2:
        return array, None, array
    qtype = _QTYPES[variant]
    if qtype != gguf.GGMLQuantizationType.F16 and array.shape[-1] % _BLOCK == 0:
        packed = gguf.quantize(array, qtype)
        return packed, qtype, gguf.dequantize(packed, qtype).reshape(array.shape)
    half = array.astype(np.float16)
    return half, None, half.astype(np.float32)


@contextlib.contextmanager
def _quiet_writer() -> Iterator[None]:
    """The writer logs every file it writes at INFO; a build reports its own progress."""
    logger = logging.getLogger("gguf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_variant(source: GgufSource, variant: str, out: Path) -> dict[str, Array]:
    """Write ``variant`` of ``source`` to ``out``; return its weights as float32 for scoring."""
    if variant not in _QTYPES:
        raise ValueError(f"unknown GGUF variant {variant!r}")
    with _quiet_writer():
        return _write(source, variant, out)


def _write(source: GgufSource, variant: str, out: Path) -> dict[str, Array]:
    writer = gguf.GGUFWriter(str(out), source.arch)
    for key, value, vtype, item_type in source.fields:
        writer.add_key_value(key, value, vtype, sub_type=item_type)
    writer.add_file_type(int(_FILE_TYPES[variant]))
    decoded: dict[str, Array] = {}
    for name, array in source.tensors.items():
        data, raw_dtype, values = _encode(array, variant)
        if raw_dtype is None:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, data, raw_dtype=raw_dtype)
        decoded[name] = values
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return decoded


def tensor_bytes(path: Path) -> int:
    """Bytes of tensor data in a GGUF file: what a runtime holds as weights."""
    reader = gguf.GGUFReader(str(path))
    return sum(int(t.n_bytes) for t in reader.tensors)
