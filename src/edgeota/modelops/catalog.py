"""Which model formats ``edgeota model build`` takes and which variants each can become.

The format is recognised by content (GGUF and safetensors by their headers, ONNX by parsing),
not by the file name, so a renamed file still builds. Variant names are matched without
regard to case and returned in their canonical spelling.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

from edgeota.errors import EdgeotaError, FormatError

ONNX = "onnx"
GGUF = "gguf"
SAFETENSORS = "safetensors"

VARIANTS: dict[str, tuple[str, ...]] = {
    ONNX: ("fp32", "fp16", "int8", "int4"),
    GGUF: ("F16", "Q8_0", "Q4_0"),
    SAFETENSORS: ("fp32", "fp16", "bf16"),
}
SUFFIXES = {ONNX: ".onnx", GGUF: ".gguf", SAFETENSORS: ".safetensors"}

_GGUF_MAGIC = b"GGUF"
# A safetensors header longer than this is not a header but a misread file.
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class BuildError(EdgeotaError):
    """A model cannot be built into variants as asked (bad input, unknown variant, ...)."""


def detect_format(path: Path) -> str:
    """The format of the model file at ``path``; FormatError when it is none of ours."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if head[:4] == _GGUF_MAGIC:
                return GGUF
            if len(head) == 8:
                (length,) = struct.unpack("<Q", head)
                if 2 <= length <= _MAX_SAFETENSORS_HEADER:
                    header = f.read(length)
                    if _is_safetensors_header(header):
                        return SAFETENSORS
    except FileNotFoundError:
        raise BuildError(f"model file {path} does not exist") from None
    except OSError as e:
        raise BuildError(f"cannot read model file {path}: {e}") from e
    if _parses_as_onnx(path):
        return ONNX
    raise FormatError(
        f"{path} is not an ONNX, GGUF or safetensors model: give one of those formats "
        "(an .onnx export, a GGUF file, or a .safetensors checkpoint)"
    )


def _is_safetensors_header(header: bytes) -> bool:
    try:
        body = json.loads(header)
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(body, dict) and all(
        k == "__metadata__" or (isinstance(v, dict) and "dtype" in v) for k, v in body.items()
    )


def _parses_as_onnx(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    # protobuf raises its own DecodeError, which derives straight from Exception.
    except Exception:
        return False
    return len(model.graph.node) > 0


def select_variants(fmt: str, names: Sequence[str] | None) -> tuple[str, ...]:
    """The canonical variant names asked for (all of the format's when ``names`` is None).

    Raises BuildError naming the unknown name and the format's valid ones.
    """
    known = VARIANTS[fmt]
    if names is None:
        return known
    by_key = {v.lower(): v for v in known}
    chosen: list[str] = []
    for raw in names:
        name = raw.strip()
        canonical = by_key.get(name.lower())
        if canonical is None:
            raise BuildError(
                f"unknown variant {name!r} for a {fmt} model; {fmt} variants are {', '.join(known)}"
            )
        if canonical not in chosen:
            chosen.append(canonical)
    if not chosen:
        raise BuildError(f"no variants asked for; {fmt} variants are {', '.join(known)}")
    return tuple(chosen)


def parse_variant_list(text: str | None) -> list[str] | None:
    """``"fp16,int8"`` -> ``["fp16", "int8"]``; None or empty -> None (all variants)."""
    if text is None or not text.strip():
        return None
    return [part for part in (p.strip() for p in text.split(",")) if part]


def variant_file_name(fmt: str, variant: str) -> str:
    return f"model-{variant}{SUFFIXES[fmt]}"
