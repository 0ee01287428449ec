"""Build GGUF and safetensors variants: scored on their weights, measured on loading.

No runtime for these formats is a dependency (llama.cpp for GGUF; a safetensors checkpoint
is read by whatever framework the device runs), so quality is the weights' signal-to-noise
ratio against the original's, and the report marks it so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgeota.modelops import gguf_variants, safetensors_variants
from edgeota.modelops.build_onnx import Built, Progress
from edgeota.modelops.catalog import GGUF, SAFETENSORS, variant_file_name
from edgeota.modelops.manifest import VariantRecord
from edgeota.modelops.measure import measure
from edgeota.modelops.memory import EstimateConfig, estimate_gguf, estimate_safetensors
from edgeota.modelops.quality import WEIGHT_SNR, weight_quality
from edgeota.releasefolder import sha256_file

_WHY_WEIGHTS = "no runtime for {fmt} is installed here: scored on the weights, not on outputs"


def _record(
    staging: Path, fmt: str, name: str, memory: dict[str, object], quality: dict[str, object]
) -> VariantRecord:
    file = variant_file_name(fmt, name)
    path = staging / file
    measured = measure(fmt, path)
    digest, length = sha256_file(path)
    return VariantRecord(
        name=name,
        file=file,
        bytes=length,
        sha256=digest,
        memory=memory,
        measured=measured.to_json(),
        quality=quality,
        probe_file=None,
        tolerance=None,
    )


def build_gguf(
    model_path: Path,
    staging: Path,
    variants: tuple[str, ...],
    estimate: EstimateConfig,
    progress: Progress,
) -> Built:
    progress("reading the GGUF model")
    source = gguf_variants.read_source(model_path)
    built = Built(metric={"name": WEIGHT_SNR, "why": _WHY_WEIGHTS.format(fmt="GGUF")})
    if importlib.util.find_spec("llama_cpp") is None:
        built.notes.append(
            "llama-cpp-python is not installed: GGUF variants are scored on their weights and "
            "measured on loading only; their estimates include the KV cache a run would need"
        )
    if source.quantized_source:
        built.notes.append("the source is already quantized: it was dequantized first")
    for name in variants:
        progress(f"building {name}")
        out = staging / variant_file_name(GGUF, name)
        decoded = gguf_variants.write_variant(source, name, out)
        memory = estimate_gguf(gguf_variants.tensor_bytes(out), source.metadata, estimate)
        quality = weight_quality(source.tensors, decoded)
        progress(f"measuring {name} in a fresh process")
        built.records.append(_record(staging, GGUF, name, memory.to_json(), quality.to_json()))
    return built


def build_safetensors(
    model_path: Path,
    staging: Path,
    variants: tuple[str, ...],
    estimate: EstimateConfig,
    progress: Progress,
) -> Built:
    progress("reading the safetensors checkpoint")
    source = safetensors_variants.read_checkpoint(model_path)
    original = safetensors_variants.float_weights(source)
    metric = {"name": WEIGHT_SNR, "why": _WHY_WEIGHTS.format(fmt="safetensors")}
    built = Built(metric=metric)
    for name in variants:
        progress(f"building {name}")
        out = staging / variant_file_name(SAFETENSORS, name)
        decoded = safetensors_variants.write_variant(source, name, out)
        weights = safetensors_variants.tensor_bytes(source, name)
        memory = estimate_safetensors(weights, estimate)
        quality = weight_quality(original, decoded)
        progress(f"measuring {name} in a fresh process")
        built.records.append(
            _record(staging, SAFETENSORS, name, memory.to_json(), quality.to_json())
        )
    return built
