"""``edgeota model build``: a model file in, a release bundle of its variants out.

A bundle is a folder that ``edgeota release publish`` takes as it is:

    BUNDLE/
      manifest.json          what was built and measured (edgeota.modelops.manifest)
      release.json           the release folder description (docs/release-folder.md)
      model-<variant>.<ext>  one model file per variant (role "model", its variant name)
      probe-<variant>.npz    ONNX, and GGUF where llama.cpp ran it: the probe set with the
                             original's reference outputs, one per variant, so each variant
                             carries its own signed tolerance

The bundle is built in a hidden staging folder next to BUNDLE and moved into place at the
end, so an interrupted build never leaves a half-written bundle under the final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeota import __version__
from edgeota.fsutil import atomic_write_text, fsync_dir
from edgeota.modelops.build_gguf import build_gguf
from edgeota.modelops.build_onnx import Built, OnnxInputs, build_onnx
from edgeota.modelops.build_tensors import build_safetensors
from edgeota.modelops.catalog import GGUF, ONNX, BuildError, detect_format, select_variants
from edgeota.modelops.manifest import MANIFEST_NAME, Manifest, VariantRecord
from edgeota.modelops.memory import EstimateConfig
from edgeota.modelops.onnx_variants import OnnxBuildOptions
from edgeota.modelops.tracking import log_build
from edgeota.releasefolder import MANIFEST_NAME as RELEASE_NAME
from edgeota.releasefolder import sha256_file


@dataclass(frozen=True)
class BuildOptions:
    variants: list[str] | None = None  # None: every variant that applies to the format
    probe: Path | None = None  # ONNX only; None: generated from the declared inputs
    seed: int = 0  # for a generated probe set
    metric: str | None = None  # ONNX: "psnr_db" or "cosine"; None: chosen from the outputs
    force: bool = False  # replace an existing bundle
    onnx: OnnxBuildOptions = field(default_factory=OnnxBuildOptions)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    repeat: int = 5  # probe runs per variant for the latency figure
    log_mlflow: bool = True  # when mlflow is importable


def release_description(manifest: Manifest) -> dict[str, Any]:
    """The ``release.json`` of a bundle: each variant's model and probe, with what the
    server chooses by (``memory_mb``: estimated need; ``quality``: higher is better)."""
    files: list[dict[str, Any]] = []
    for v in manifest.variants:
        files.append(
            {
                "path": v.file,
                "role": "model",
                "variant": v.name,
                "memory_mb": math.ceil(v.estimate_mb),
                "quality": v.quality["score"],
            }
        )
        if v.probe_file is not None:
            files.append(
                {"path": v.probe_file, "role": "probe", "variant": v.name, "tolerance": v.tolerance}
            )
    return {"schema": 1, "hardware": ["*"], "needs": {}, "files": files}


def _check_target(model: Path, out: Path, force: bool) -> None:
    if out.exists() or out.is_symlink():
        if not force:
            raise BuildError(f"{out} already exists; pass --force to replace it")
        if not out.is_dir():
            raise BuildError(f"{out} exists and is not a folder; remove it or choose another")
        if out.resolve() in model.resolve().parents:
            raise BuildError(f"the model {model} is inside {out}; --force would delete it")


def _replace(staging: Path, out: Path) -> None:
    """Move the finished staging folder to ``out``, replacing an old bundle there."""
    old: Path | None = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{staging.name}")
        out.rename(old)
    staging.rename(out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_bundle(
    model: Path,
    out: Path,
    options: BuildOptions | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Manifest:
    """Build the variants of ``model`` into the bundle folder ``out``; return its manifest.

    Raises BuildError (or FormatError for a file of no known format) with what to do.
    """
    options = options or BuildOptions()
    _check_target(model, out, options.force)
    fmt = detect_format(model)
    variants = select_variants(fmt, options.variants)
    explicit = options.variants is not None
    if fmt != ONNX and options.probe is not None:
        raise BuildError(
            f"--probe applies to ONNX models; {fmt} variants are scored on their weights"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        if fmt == ONNX:
            given = OnnxInputs(
                options.probe,
                options.seed,
                options.metric,
                options.onnx,
                options.estimate,
                options.repeat,
            )
            built = build_onnx(model, staging, variants, explicit, given, progress)
        elif fmt == GGUF:
            built = build_gguf(model, staging, variants, options.estimate, progress, options.repeat)
        else:
            built = build_safetensors(model, staging, variants, options.estimate, progress)
        _check_built(model, built)
        manifest = _manifest(model, fmt, built, options)
        atomic_write_text(staging / MANIFEST_NAME, manifest.dumps())
        description = json.dumps(release_description(manifest), indent=2) + "\n"
        atomic_write_text(staging / RELEASE_NAME, description)
        if options.log_mlflow:
            logged = log_build(manifest, staging, progress)
            if logged.run_id is not None or logged.problem is not None:
                notes = manifest.notes + ((logged.problem,) if logged.problem else ())
                manifest = dataclasses.replace(manifest, mlflow_run_id=logged.run_id, notes=notes)
                atomic_write_text(staging / MANIFEST_NAME, manifest.dumps())
        _replace(staging, out)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return manifest


def _check_built(model: Path, built: Built) -> None:
    if not built.records:
        reasons = "; ".join(f"{s['variant']}: {s['reason']}" for s in built.skipped)
        raise BuildError(f"no variant could be built from {model}: {reasons}")


def _manifest(model: Path, fmt: str, built: Built, options: BuildOptions) -> Manifest:
    digest, length = sha256_file(model)
    records: tuple[VariantRecord, ...] = tuple(built.records)
    return Manifest(
        created_by=f"edgeota {__version__}",
        source={"file": model.name, "format": fmt, "sha256": digest, "bytes": length},
        probe=built.probe,
        metric=built.metric,
        estimate_config=dataclasses.asdict(options.estimate),
        variants=records,
        skipped=tuple(built.skipped),
        notes=tuple(built.notes),
    )
