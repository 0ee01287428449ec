"""safetensors variants: fp32, fp16 and bf16 copies of a checkpoint's float tensors.

The format is simple enough to read and write directly (an 8-byte header length, a JSON
header, the raw tensors), which also gives bfloat16 without a framework: numpy has no bf16
type, so bf16 values travel as the upper 16 bits of float32, rounded to nearest even.
Integer and boolean tensors are copied unchanged; ``__metadata__`` is kept.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeota.modelops.catalog import BuildError
from edgeota.runtime.probe import Array

_NUMPY: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
    "BF16": np.dtype("<u2"),  # raw bits; see _from_bf16
}  # fmt: skip
_FLOATS = ("F64", "F32", "F16", "BF16")
_TARGET = {"fp32": "F32", "fp16": "F16", "bf16": "BF16"}


@dataclass(frozen=True)
class Checkpoint:
    tensors: dict[str, tuple[str, Array]]  # name -> (safetensors dtype, values)
    metadata: dict[str, str] | None


def _from_bf16(bits: Array) -> Array:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _to_bf16(values: Array) -> Array:
    bits = values.astype(np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest, ties to even
    rounded = np.where(np.isnan(values), bits | 0x00400000, rounded)  # keep NaN a NaN
    return (rounded >> 16).astype(np.uint16)


def read_checkpoint(path: Path) -> Checkpoint:
    try:
        data = path.read_bytes()
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + length])
    except (OSError, struct.error, ValueError) as e:
        raise BuildError(f"cannot read safetensors file {path}: {e}") from e
    base = 8 + length
    metadata = header.pop("__metadata__", None)
    tensors: dict[str, tuple[str, Array]] = {}
    for name, info in header.items():
        dtype = info.get("dtype")
        if dtype not in _NUMPY:
            raise BuildError(f"{path}: tensor {name!r} has dtype {dtype!r}, which is not handled")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[base + start : base + end], dtype=_NUMPY[dtype]).reshape(
            info["shape"]
        )
        tensors[name] = (dtype, array)
    return Checkpoint(tensors, metadata)


def as_float32(dtype: str, array: Array) -> Array:
    if dtype == "BF16":
        return _from_bf16(array)
    return array.astype(np.float32)


def write_variant(source: Checkpoint, variant: str, out: Path) -> dict[str, Array]:
    """Write ``variant`` of ``source`` to ``out``; return its float weights as float32."""
    target = _TARGET.get(variant)
    if target is None:
        raise ValueError(f"unknown safetensors variant {variant!r}")
    header: dict[str, Any] = {}
    if source.metadata is not None:
        header["__metadata__"] = source.metadata
    blobs: list[bytes] = []
    decoded: dict[str, Array] = {}
    offset = 0
    for name, (dtype, array) in sorted(source.tensors.items()):
        if dtype in _FLOATS:
            values = as_float32(dtype, array)
            if target == "BF16":
                stored = _to_bf16(values)
                decoded[name] = _from_bf16(stored)
            else:
                stored = values.astype(_NUMPY[target])
                decoded[name] = stored.astype(np.float32)
            out_dtype = target
        else:
            stored, out_dtype = array, dtype
        blob = np.ascontiguousarray(stored).tobytes()
        header[name] = {
            "dtype": out_dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # keep tensors 8-byte aligned, as writers do
    with out.open("wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)
    return decoded


def float_weights(source: Checkpoint) -> dict[str, Array]:
    return {n: as_float32(d, a) for n, (d, a) in source.tensors.items() if d in _FLOATS}


def tensor_bytes(source: Checkpoint, variant: str) -> int:
    width = {"fp32": 4, "fp16": 2, "bf16": 2}[variant]
    return sum(a.size * width if d in _FLOATS else a.nbytes for d, a in source.tensors.values())
