"""Build safetensors variants: scored on their weights, measured on loading.

A safetensors checkpoint is read by whatever framework the device runs, which is not known
here, so quality is the weights' signal-to-noise ratio against the original's, and the
report marks it so. GGUF variants fall back to the same when llama.cpp cannot run them
(:mod:`edgeota.modelops.build_gguf`).
"""

from __future__ import annotations

from pathlib import Path

from edgeota.modelops import safetensors_variants
from edgeota.modelops.build_onnx import Built, Progress
from edgeota.modelops.catalog import SAFETENSORS, variant_file_name
from edgeota.modelops.manifest import VariantRecord
from edgeota.modelops.measure import measure
from edgeota.modelops.memory import EstimateConfig, estimate_safetensors
from edgeota.modelops.quality import WEIGHT_SNR, weight_quality
from edgeota.releasefolder import sha256_file

WHY_WEIGHTS = "no runtime for {fmt} is installed here: scored on the weights, not on outputs"


def record_loaded_only(
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
    metric = {"name": WEIGHT_SNR, "why": WHY_WEIGHTS.format(fmt="safetensors")}
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
            record_loaded_only(staging, SAFETENSORS, name, memory.to_json(), quality.to_json())
        )
    return built
