"""Build the GGUF variants of an LLM (F16, Q8_0, Q4_0) and score them.

Where llama-cpp-python is installed (the ``llm`` extra), every variant and the original are
loaded into llama.cpp in a fresh process and run on the probe prompts: peak RSS, latency, and
quality against the original as the share of positions whose top-1 next token agrees
(:func:`edgeota.modelops.quality.token_quality`), with the change in perplexity beside it.
Each variant then ships a probe set (the prompts as token IDs, the original's next tokens as
references) and a ``min_agreement`` the device's health check holds it to.

Without llama.cpp, or when llama.cpp cannot run the original (a GGUF that is not an LLM it
knows), quality is the weights' signal-to-noise ratio, loading is all that is measured, and
the manifest says which of the two was used and why (``metric.why``, ``notes``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edgeota.modelops import gguf_variants
from edgeota.modelops.build_onnx import Built, Progress, write_probe
from edgeota.modelops.build_tensors import WHY_WEIGHTS, record_loaded_only
from edgeota.modelops.catalog import GGUF, BuildError, variant_file_name
from edgeota.modelops.manifest import VariantRecord
from edgeota.modelops.measure import Measurement, measure
from edgeota.modelops.memory import EstimateConfig, estimate_gguf
from edgeota.modelops.quality import (
    AGREEMENT,
    WEIGHT_SNR,
    token_quality,
    token_tolerance_for,
    weight_quality,
)
from edgeota.releasefolder import sha256_file
from edgeota.runtime.llm import NEXT_TOKEN, TOKENS, llama_cpp_available
from edgeota.runtime.probe import Array, ProbeSet

# General English, long enough to be PROBE_TOKENS tokens for any tokenizer; an LLM's probe is
# about whether the variant still predicts what the original did, not about a domain.
PROBE_PROMPTS = (
    "The update was downloaded overnight, and in the morning the device switched to the new "
    "model without anyone noticing that anything had changed at all.",
    "When the health check fails after an update, the agent switches back to the old slot and "
    "reports the reason to the server, which holds the rollout.",
    "A small model that runs on the device itself can answer questions even when the network "
    "is slow, expensive, or not there at all for hours at a time.",
    "Quantization stores each weight in fewer bits, which makes the file smaller and the model "
    "faster, at the price of outputs that drift from the original.",
    "The operator looked at the dashboard, saw that two devices in the pilot group had rolled "
    "back, and paused the release before it reached the rest.",
    "Every file of a release is signed, so a device that downloads it from a mirror can still "
    "tell whether a single byte was changed on the way.",
    "In the first week the new model answered more questions correctly, but it also used more "
    "memory, so the smallest devices kept the previous version.",
    "She wrote the test first, watched it fail for the right reason, and only then changed the "
    "code until the failure turned into a pass.",
)


def _why_agreement(runtime: str) -> str:
    return (
        f"{runtime} ran the probe prompts: the share of positions whose top-1 next token "
        "equals the original model's"
    )


def build_gguf(
    model_path: Path,
    staging: Path,
    variants: tuple[str, ...],
    estimate: EstimateConfig,
    progress: Progress,
    repeat: int = 5,
) -> Built:
    progress("reading the GGUF model")
    source = gguf_variants.read_source(model_path)
    notes = []
    why = WHY_WEIGHTS.format(fmt="GGUF")
    if source.quantized_source:
        notes.append("the source is already quantized: it was dequantized first")
    if llama_cpp_available():
        progress("running the original model on the probe prompts in llama.cpp")
        try:
            original = measure(GGUF, model_path, prompts=PROBE_PROMPTS, repeat=repeat)
        except BuildError as e:
            why = "llama.cpp cannot run this GGUF: scored on the weights, not on outputs"
            notes.append(
                f"llama.cpp cannot run the original model ({e}): GGUF variants are scored on "
                "their weights and measured on loading only"
            )
        else:
            built = _build_measured(source, original, staging, variants, estimate, progress, repeat)
            built.notes[:0] = notes
            return built
    else:
        notes.append(
            "llama-cpp-python is not installed: GGUF variants are scored on their weights and "
            "measured on loading only; their estimates include the KV cache a run would need"
        )
    built = Built(metric={"name": WEIGHT_SNR, "why": why}, notes=notes)
    for name in variants:
        progress(f"building {name}")
        out = staging / variant_file_name(GGUF, name)
        decoded = gguf_variants.write_variant(source, name, out)
        memory = estimate_gguf(gguf_variants.tensor_bytes(out), source.metadata, estimate)
        quality = weight_quality(source.tensors, decoded)
        progress(f"measuring {name} in a fresh process")
        built.records.append(
            record_loaded_only(staging, GGUF, name, memory.to_json(), quality.to_json())
        )
    return built


def _spec(arrays: dict[str, Array]) -> dict[str, Any]:
    return {n: {"dtype": a.dtype.name, "shape": list(a.shape)} for n, a in arrays.items()}


def _build_measured(
    source: gguf_variants.GgufSource,
    original: Measurement,
    staging: Path,
    variants: tuple[str, ...],
    estimate: EstimateConfig,
    progress: Progress,
    repeat: int,
) -> Built:
    assert original.outputs is not None
    reference = original.outputs
    tokens = reference[TOKENS]
    runtime = original.runtime or "llama.cpp"
    probe = ProbeSet(inputs={TOKENS: tokens}, references={NEXT_TOKEN: reference[NEXT_TOKEN]})
    built = Built(metric={"name": AGREEMENT, "why": _why_agreement(runtime), "runtime": runtime})
    built.probe = {
        "generated": False,
        "description": f"{len(PROBE_PROMPTS)} built-in prompts, cut to {tokens.shape[1]} tokens",
        "examples": probe.batch_size,
        "inputs": _spec(probe.inputs),
        "references": _spec(probe.references),
        "prompts": list(PROBE_PROMPTS),
    }
    built.notes.append(
        f"the original under {runtime}: peak RSS {original.peak_rss_mb:.1f} MiB, probe "
        f"{original.median_ms or 0.0:.2f} ms (median), load {original.load_ms:.1f} ms"
    )
    first_probe: Path | None = None
    for name in variants:
        progress(f"building {name}")
        file = variant_file_name(GGUF, name)
        path = staging / file
        decoded = gguf_variants.write_variant(source, name, path)
        progress(f"measuring {name} in llama.cpp in a fresh process")
        measured = measure(GGUF, path, prompts=PROBE_PROMPTS, repeat=repeat)
        assert measured.outputs is not None
        if not np.array_equal(measured.outputs[TOKENS], tokens):
            raise BuildError(f"variant {name} tokenizes the probe prompts unlike the original")
        quality = token_quality(measured.outputs, reference)
        # The weights' SNR too: it tells rounding from a broken file when agreement drops.
        weights = weight_quality(source.tensors, decoded).figures
        quality = dataclasses.replace(quality, figures={**quality.figures, **weights})
        latency = max(measured.first_ms or 0.0, measured.median_ms or 0.0)
        tolerance = token_tolerance_for(quality, latency, measured.peak_rss_mb)
        probe_path = write_probe(staging, name, probe, first_probe)
        first_probe = first_probe or probe_path
        digest, length = sha256_file(path)
        memory = estimate_gguf(gguf_variants.tensor_bytes(path), source.metadata, estimate)
        built.records.append(
            VariantRecord(
                name=name,
                file=file,
                bytes=length,
                sha256=digest,
                memory=memory.to_json(),
                measured=measured.to_json(),
                quality=quality.to_json(),
                probe_file=probe_path.name,
                tolerance=tolerance,
            )
        )
    return built
