"""Memory estimates: what a device needs to hold and run one variant.

An estimate is the weights as the runtime holds them, plus the runtime's own overhead, plus
what a run needs on top (activations; for LLMs the KV cache at a configured context length,
computed from the model's own metadata). The overheads are constants measured once and kept
in :class:`EstimateConfig`, so the same model always gets the same estimate (it is signed
into the release) and a device class with a different runtime can be given its own.

Two findings are built in:

- onnxruntime's CPU provider has few float16 kernels, so it casts fp16 weights back to fp32
  at load time and keeps both: an fp16 ONNX variant halves the download, not the RAM;
- int8 and int4 weights stay packed in memory (MatMulInteger, MatMulNBits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeota.runtime.probe import Array

MB = 1024 * 1024

# onnx element type -> bytes per value (int4/uint4 are half a byte).
_ELEM_BYTES: dict[int, float] = {
    1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2,
    21: 0.5, 22: 0.5,
}  # fmt: skip
_FLOAT16 = 10


@dataclass(frozen=True)
class EstimateConfig:
    """The constants an estimate adds to the weights (MB = 2**20 bytes)."""

    # The runtime service (CPython, numpy, onnxruntime, edgeota.runtime.server) before it
    # loads a model, plus an InferenceSession's thread pools and kernel registry: measured
    # as peak RSS on x86_64 Linux, CPython 3.11, onnxruntime 1.32.
    onnx_runtime_base_mb: float = 66.0
    # Per MB of weights, what loading costs beyond the weights themselves (the protobuf
    # being parsed, pre-packed MatMul weights): measured on the bench models.
    onnx_load_factor: float = 1.25
    # How many of the largest activation tensors are alive at once in a run.
    onnx_live_activations: int = 3
    # The runtime service with llama.cpp loaded, at its default batch: taken from llama.cpp's
    # own load logs; with the llm extra the build measures it (53 MiB peak for the 0.4 MiB
    # tiny LLM: CPython, numpy, the runtime service, llama-cpp-python, a 256-token context).
    gguf_runtime_base_mb: float = 64.0
    # Context length for the KV cache; None takes the model's own ``context_length``.
    context_length: int | None = None
    kv_cache_bytes_per_value: int = 2  # llama.cpp's default f16 cache
    # A process that loads a safetensors checkpoint into numpy (the consumer is unknown).
    safetensors_base_mb: float = 32.0


@dataclass(frozen=True)
class MemoryEstimate:
    weights_mb: float
    overhead_mb: float
    activations_mb: float = 0.0
    kv_cache_mb: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total_mb(self) -> float:
        return self.weights_mb + self.overhead_mb + self.activations_mb + self.kv_cache_mb

    def to_json(self) -> dict[str, Any]:
        return {
            "estimate_mb": _sig(self.total_mb),
            "weights_mb": _sig(self.weights_mb),
            "overhead_mb": _sig(self.overhead_mb),
            "activations_mb": _sig(self.activations_mb),
            "kv_cache_mb": _sig(self.kv_cache_mb),
            "notes": list(self.notes),
        }


def _sig(value: float) -> float:
    return float(f"{value:.6g}")


def _initializer_bytes(tensor: Any) -> float:
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count * _ELEM_BYTES.get(int(tensor.data_type), 4)


def estimate_onnx(model: Any, activations_mb: float, config: EstimateConfig) -> MemoryEstimate:
    """Weights (as loaded) + runtime base + activations for one ONNX variant."""
    weights = 0.0
    upcast = 0.0
    for tensor in model.graph.initializer:
        size = _initializer_bytes(tensor)
        weights += size
        if tensor.data_type == _FLOAT16:
            upcast += 2 * size
    notes = []
    if upcast:
        notes.append(
            "fp16 weights are counted twice over: onnxruntime's CPU provider keeps an fp32 "
            "copy for ops without fp16 kernels"
        )
    resident = (weights + upcast) / MB
    overhead = config.onnx_runtime_base_mb + (config.onnx_load_factor - 1.0) * resident
    return MemoryEstimate(resident, overhead, activations_mb, notes=tuple(notes))


def onnx_activations_mb(model: Any, inputs: Mapping[str, Array], config: EstimateConfig) -> float:
    """Activation memory of one run on ``inputs``: the largest intermediate tensors.

    Shapes come from ONNX shape inference with the probe's concrete input shapes; tensors
    whose shape cannot be inferred are left out (the estimate says "about").
    """
    import onnx
    from onnx import shape_inference

    concrete = onnx.ModelProto()
    concrete.CopyFrom(model)
    del concrete.graph.initializer[:]  # shapes only: no need to copy the weights around
    for value in concrete.graph.input:
        array = inputs.get(value.name)
        if array is None:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, array.shape, strict=False):
            dim.Clear()
            dim.dim_value = int(size)
    # Initializers are gone, so declare them as inputs with their shapes for inference.
    for tensor in model.graph.initializer:
        concrete.graph.input.append(
            onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
        )
    try:
        inferred = shape_inference.infer_shapes(concrete, strict_mode=False)
    except Exception:  # inference is best effort; custom-domain ops can defeat it
        return sum(a.nbytes for a in inputs.values()) / MB
    sizes = []
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        if dims and all(d > 0 for d in dims):
            sizes.append(float(np.prod(dims)) * _ELEM_BYTES.get(int(tensor.elem_type), 4))
    sizes.sort(reverse=True)
    live = sum(sizes[: config.onnx_live_activations])
    return (live + sum(a.nbytes for a in inputs.values())) / MB


@dataclass(frozen=True)
class LlmShape:
    """What the KV cache size depends on, from a GGUF's metadata."""

    layers: int
    kv_heads: int
    key_length: int
    value_length: int
    context_length: int
    vocab_size: int | None  # None: the metadata does not say


def llm_shape(metadata: Mapping[str, Any]) -> LlmShape | None:
    """The attention shape from GGUF metadata, or None when it is not an LLM-like model."""
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        return None

    def number(key: str) -> int | None:
        value = metadata.get(f"{arch}.{key}")
        return int(value) if isinstance(value, int | float) and value > 0 else None

    layers, embd, heads = (
        number("block_count"),
        number("embedding_length"),
        number("attention.head_count"),
    )
    context = number("context_length")
    if layers is None or embd is None or heads is None or context is None:
        return None
    kv_heads = number("attention.head_count_kv") or heads
    key = number("attention.key_length") or embd // heads
    value = number("attention.value_length") or embd // heads
    tokens = metadata.get("tokenizer.ggml.tokens")
    vocab = number("vocab_size") or (len(tokens) if isinstance(tokens, list) and tokens else None)
    return LlmShape(layers, kv_heads, key, value, context, vocab)


def estimate_gguf(
    weights_bytes: int, metadata: Mapping[str, Any], config: EstimateConfig
) -> MemoryEstimate:
    """Weights + KV cache at the configured context + the logits the runtime keeps +
    llama.cpp's base, for one GGUF variant."""
    shape = llm_shape(metadata)
    notes: list[str] = []
    kv = logits = 0.0
    if shape is None:
        notes.append("no attention metadata (block_count, head_count, ...): no KV cache counted")
    else:
        context = config.context_length or shape.context_length
        kv = (
            shape.layers
            * context
            * shape.kv_heads
            * (shape.key_length + shape.value_length)
            * config.kv_cache_bytes_per_value
        ) / MB
        notes.append(
            f"KV cache: {shape.layers} layers x {context} tokens x {shape.kv_heads} KV heads x "
            f"({shape.key_length} + {shape.value_length}) x {config.kv_cache_bytes_per_value} B"
        )
        # edgeota.runtime.llm keeps every position's logits, so a probe scores whole prompts.
        if shape.vocab_size is None:
            notes.append("no vocabulary size in the metadata: the logits are not counted")
        else:
            logits = context * shape.vocab_size * 4 / MB
            notes.append(f"logits: {context} tokens x {shape.vocab_size} vocabulary x 4 B")
    return MemoryEstimate(
        weights_bytes / MB,
        config.gguf_runtime_base_mb,
        activations_mb=logits,
        kv_cache_mb=kv,
        notes=tuple(notes),
    )


def estimate_safetensors(weights_bytes: int, config: EstimateConfig) -> MemoryEstimate:
    return MemoryEstimate(
        weights_bytes / MB,
        config.safetensors_base_mb,
        notes=("tensors loaded into numpy; the runtime that will use them is not known",),
    )
