"""Build and measure the ONNX variants of a model into a staging folder.

Every variant is loaded and run in a fresh process on the probe inputs; its outputs are
compared with the original model's (the references, computed here in-process with the
same single-threaded session the device runtime uses).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from edgeota.fsutil import atomic_write_bytes
from edgeota.modelops.catalog import ONNX, BuildError, variant_file_name
from edgeota.modelops.manifest import VariantRecord
from edgeota.modelops.measure import measure
from edgeota.modelops.memory import EstimateConfig, estimate_onnx, onnx_activations_mb
from edgeota.modelops.onnx_variants import OnnxBuildOptions, build_variant, not_applicable
from edgeota.modelops.probeinputs import declared_inputs, generate_inputs, load_inputs
from edgeota.modelops.quality import OUTPUT_METRICS, auto_metric, output_quality, tolerance_for
from edgeota.releasefolder import sha256_file
from edgeota.runtime.probe import Array, ProbeSet, save_probe

Progress = Callable[[str], None]


@dataclass(frozen=True)
class OnnxInputs:
    """What the ONNX build needs beyond the model file."""

    probe: Path | None
    seed: int
    metric: str | None  # None: chosen from the reference outputs
    options: OnnxBuildOptions
    estimate: EstimateConfig
    repeat: int


@dataclass
class Built:
    records: list[VariantRecord] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    probe: dict[str, Any] | None = None
    metric: dict[str, Any] = field(default_factory=dict)


def _spec(arrays: dict[str, Array]) -> dict[str, Any]:
    return {n: {"dtype": a.dtype.name, "shape": list(a.shape)} for n, a in arrays.items()}


def reference_outputs(model_path: Path, inputs: dict[str, Array]) -> dict[str, Array]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        results = session.run(names, inputs)
    # onnxruntime's exceptions derive straight from Exception.
    except Exception as e:
        raise BuildError(f"onnxruntime cannot run the original model {model_path}: {e}") from e
    outputs = {n: np.asarray(r) for n, r in zip(names, results, strict=True)}
    for name, array in outputs.items():
        if array.dtype.kind not in "biuf":
            raise BuildError(f"output {name!r} is not numeric ({array.dtype}); cannot score it")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise BuildError(f"the original model's output {name!r} has NaN or Inf on the probe")
    return outputs


def write_probe(staging: Path, variant: str, probe: ProbeSet, first: Path | None) -> Path:
    path = staging / f"probe-{variant}.npz"
    if first is None:
        save_probe(path, probe)
        return path
    # Same bytes for every variant (only the signed tolerance differs): link, not copy.
    try:
        os.link(first, path)
    except OSError:
        atomic_write_bytes(path, first.read_bytes())
    return path


def build_onnx(
    model_path: Path,
    staging: Path,
    variants: tuple[str, ...],
    explicit: bool,
    given: OnnxInputs,
    progress: Progress,
) -> Built:
    model = onnx.load(str(model_path))
    specs = declared_inputs(model)
    built = Built()
    if given.probe is not None:
        inputs = load_inputs(given.probe, specs)
        described = f"from {given.probe.name}"
    else:
        inputs, described = generate_inputs(specs, given.seed)
        built.notes.append(
            f"no probe set was given: the probe inputs were {described}; quality figures "
            "describe the model on random inputs, give --probe with real ones"
        )
    progress("running the original model on the probe inputs")
    references = reference_outputs(model_path, inputs)
    probe = ProbeSet(inputs=inputs, references=references)
    if given.metric is None:
        metric, why = auto_metric(references)
    elif given.metric in OUTPUT_METRICS:
        metric, why = given.metric, "chosen with --metric"
    else:
        raise BuildError(f"unknown metric {given.metric!r}; use one of {list(OUTPUT_METRICS)}")
    built.metric = {"name": metric, "why": why}
    built.probe = {
        "generated": given.probe is None,
        "description": described,
        "examples": probe.batch_size,
        "inputs": _spec(inputs),
        "references": _spec(references),
    }
    activations = onnx_activations_mb(model, inputs, given.estimate)
    first_probe: Path | None = None
    for name in variants:
        why_not = not_applicable(model, name)
        if why_not is not None:
            if explicit:
                raise BuildError(f"cannot build {name}: {why_not}")
            built.skipped.append({"variant": name, "reason": why_not})
            continue
        progress(f"building {name}")
        file = variant_file_name(ONNX, name)
        path = staging / file
        atomic_write_bytes(path, build_variant(model_path, name, inputs, given.options))
        progress(f"measuring {name} in a fresh process")
        measured = measure(ONNX, path, inputs, repeat=given.repeat)
        assert measured.outputs is not None
        quality = output_quality(measured.outputs, references, metric)
        if not np.isfinite(quality.score):
            raise BuildError(f"variant {name} outputs NaN or Inf on the probe set")
        latency = max(measured.first_ms or 0.0, measured.median_ms or 0.0)
        tolerance = tolerance_for(quality, references, latency, measured.peak_rss_mb)
        probe_path = write_probe(staging, name, probe, first_probe)
        first_probe = first_probe or probe_path
        digest, length = sha256_file(path)
        variant_model = onnx.load(str(path), load_external_data=False)
        estimate = estimate_onnx(variant_model, activations, given.estimate)
        built.records.append(
            VariantRecord(
                name=name,
                file=file,
                bytes=length,
                sha256=digest,
                memory=estimate.to_json(),
                measured=measured.to_json(),
                quality=quality.to_json(),
                probe_file=probe_path.name,
                tolerance=tolerance,
            )
        )
    return built
