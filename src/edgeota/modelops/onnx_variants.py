"""ONNX variants: fp32 (the original), fp16, int8 and int4 weight-only.

- fp16: every float initializer and float op in half precision, inputs and outputs kept
  float32 so the variant is a drop-in replacement (onnxruntime's float16 converter);
- int8: onnxruntime's dynamic quantization (weights int8, activations quantized per batch at
  run time), or static quantization (QDQ) calibrated on the probe inputs;
- int4: onnxruntime's ``MatMulNBits`` weight-only quantizer, on MatMul weights and Gather
  tables (embeddings), in blocks of ``int4_block_size`` values with one scale each.

onnxruntime's quantizers log advice and emit warnings meant for interactive use; they are
silenced here so a build prints only what edgeota has to say.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edgeota.modelops.catalog import BuildError
from edgeota.runtime.probe import Array

INT4_OPSET = 21  # MatMulNBits models carry int4 tensors, which need opset 21
QUANTIZABLE_INT8 = frozenset({"MatMul", "Gemm", "Conv", "Gather", "Attention", "LSTM"})
QUANTIZABLE_INT4 = frozenset({"MatMul", "Gather"})
_FLOAT = onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class OnnxBuildOptions:
    int8_mode: str = "dynamic"  # "dynamic" or "static" (calibrated on the probe inputs)
    int4_block_size: int = 32  # values per int4 scale; smaller is more accurate and larger
    int4_symmetric: bool = True

    def __post_init__(self) -> None:
        if self.int8_mode not in ("dynamic", "static"):
            raise ValueError(f"int8_mode must be 'dynamic' or 'static', not {self.int8_mode!r}")
        if self.int4_block_size < 16 or self.int4_block_size & (self.int4_block_size - 1):
            raise ValueError(
                f"int4_block_size must be a power of two >= 16, not {self.int4_block_size}"
            )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizers log through the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def op_types(model: Any) -> set[str]:
    return {node.op_type for node in model.graph.node}


def not_applicable(model: Any, variant: str) -> str | None:
    """Why ``variant`` cannot be built from ``model``, or None when it can."""
    ops = op_types(model)
    if variant == "int8" and not ops & QUANTIZABLE_INT8:
        return f"int8 needs one of {sorted(QUANTIZABLE_INT8)}; the model has none"
    if variant == "int4" and "MatMul" not in ops:
        return "int4 (MatMulNBits) needs MatMul nodes; the model has none"
    if variant != "fp32" and not _has_float_weights(model):
        return f"{variant} converts float32 weights; the model has none"
    return None


def _has_float_weights(model: Any) -> bool:
    return any(i.data_type == _FLOAT for i in model.graph.initializer)


def build_variant(
    source: Path,
    variant: str,
    calibration: Mapping[str, Array],
    options: OnnxBuildOptions,
) -> bytes:
    """The serialized ONNX model of ``variant`` built from the model file ``source``."""
    model = onnx.load(str(source))
    why = not_applicable(model, variant)
    if why is not None:
        raise BuildError(f"cannot build {variant}: {why}")
    if variant == "fp32":
        return source.read_bytes()
    with _quiet():
        if variant == "fp16":
            return _fp16(model)
        if variant == "int8":
            return _int8(source, calibration, options)
        if variant == "int4":
            return _int4(model, options)
    raise ValueError(f"unknown ONNX variant {variant!r}")


def _fp16(model: Any) -> bytes:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=True)
    return bytes(converted.SerializeToString())


class _ProbeReader:
    """Feeds the probe inputs to static quantization, one example at a time."""

    def __init__(self, inputs: Mapping[str, Array]) -> None:
        size = int(next(iter(inputs.values())).shape[0])
        self._feeds = iter(
            [{name: a[i : i + 1] for name, a in inputs.items()} for i in range(size)]
        )

    def get_next(self) -> dict[str, Array] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of onnxruntime's reader interface; one pass is enough
        pass


def _int8(source: Path, calibration: Mapping[str, Array], options: OnnxBuildOptions) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory(prefix="edgeota-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        if options.int8_mode == "dynamic":
            quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8)
        else:
            quantize_static(
                str(source),
                str(out),
                _ProbeReader(calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        return out.read_bytes()


def _opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _int4(model: Any, options: OnnxBuildOptions) -> bytes:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if _opset(model) < INT4_OPSET:
        # The quantizer only bumps the opset number, which breaks ops whose attributes
        # became inputs since (ReduceMean's axes, say); converting first keeps the model valid.
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, INT4_OPSET)
        except Exception as e:  # the converter raises bare RuntimeErrors and C++ errors
            raise BuildError(f"cannot convert the model to opset {INT4_OPSET} for int4: {e}") from e
    quantizer = MatMulNBitsQuantizer(
        model,
        block_size=options.int4_block_size,
        is_symmetric=options.int4_symmetric,
        op_types_to_quantize=tuple(sorted(QUANTIZABLE_INT4)),
    )
    quantizer.process()
    return bytes(quantizer.model.model.SerializeToString())
