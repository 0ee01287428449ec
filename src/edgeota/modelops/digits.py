"""The example model: a denoising and inpainting autoencoder for scikit-learn's 8x8 digits.

It is a real (if tiny) generative image model: given a digit with Gaussian noise and a quarter
of its pixels dropped, it reconstructs the clean image. It trains in a few seconds on one
core, exports to ONNX, and comes as three release folders (``docs/release-folder.md``):

- ``v1/``: the first model;
- ``v2/``: the same network trained further on more corrupted copies (measurably better, and
  with the same tensor shapes as v1, as a fine-tuned model has);
- ``v3-broken/``: v2 with its output multiplied by NaN: it loads and runs, and its health
  check must fail.

Everything is seeded, so a seed gives the same data split, weights and probe sets.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

from edgeota.fsutil import atomic_write_bytes, atomic_write_text, exclusive_lock
from edgeota.modelops.onnx_edit import poison_output_with_nan, reshape_output
from edgeota.runtime.probe import MAX_ABS_ERROR, Array, ProbeSet, psnr_db, save_probe

COMPONENT = "denoiser"
INPUT_NAME = "noisy"
OUTPUT_NAME = "denoised"
N_PIXELS = 64
MODEL_FILE = "model.onnx"
PROBE_FILE = "probe.npz"
RELEASE_FILE = "release.json"
STAMP_FILE = "edgeota-examples.json"
# Bump when anything that changes the built files changes, so stale caches are rebuilt.
BUILD_FORMAT = 1

HELD_OUT = 297  # a sixth of the 1,797 digits, never trained on
PROBE_SIZE = 16
NOISE_SIGMA = 0.2
DROP_FRACTION = 0.25
ONNX_OPSET = 15  # old enough for any onnxruntime >= 1.10 on a device
# The reference outputs come from scikit-learn in float64; onnxruntime computes in float32.
# The probe tolerance is this many times the error measured at build time, and at least
# TOLERANCE_FLOOR, so different CPUs' float rounding passes while a wrong model does not.
TOLERANCE_MARGIN = 10.0
TOLERANCE_FLOOR = 1e-3


@dataclass(frozen=True)
class ExampleRelease:
    """One built release folder and what was measured while building it."""

    name: str  # folder name below the output folder
    version: str  # the semver to publish it as
    path: Path
    psnr_db: float  # reconstruction quality on the held-out digits; NaN for the broken model
    train_seconds: float
    tolerance: dict[str, float]
    model_bytes: int


@dataclass(frozen=True)
class ExampleReleases:
    out_dir: Path
    seed: int
    noisy_psnr_db: float  # the corrupted inputs against the clean digits: the baseline
    v1: ExampleRelease
    v2: ExampleRelease
    v3_broken: ExampleRelease
    cached: bool  # True when an earlier build in out_dir was reused

    @property
    def releases(self) -> tuple[ExampleRelease, ...]:
        return (self.v1, self.v2, self.v3_broken)


@dataclass(frozen=True)
class _Data:
    train_clean: Array
    held_out_clean: Array
    held_out_noisy: Array


def corrupt(images: Array, rng: np.random.Generator) -> Array:
    """Add Gaussian noise, drop a random quarter of the pixels to 0, clip to [0, 1]."""
    noisy = images + rng.normal(0.0, NOISE_SIGMA, images.shape)
    noisy[rng.random(images.shape) < DROP_FRACTION] = 0.0
    return np.clip(noisy, 0.0, 1.0)


def _load_data(seed: int) -> _Data:
    images = load_digits().data / 16.0  # 0..16 grey levels -> [0, 1]
    order = np.random.default_rng(seed).permutation(len(images))
    held_out = images[order[:HELD_OUT]]
    noisy = corrupt(held_out, np.random.default_rng([seed, 1]))
    return _Data(images[order[HELD_OUT:]], held_out, noisy)


def _noisy_copies(clean: Array, copies: int, rng: np.random.Generator) -> tuple[Array, Array]:
    noisy = np.concatenate([corrupt(clean, rng) for _ in range(copies)])
    return noisy, np.tile(clean, (copies, 1))


def _fit(model: Any, x: Array, y: Array) -> float:
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The iteration budget is deliberately short so training takes seconds.
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        model.fit(x, y)
    return time.perf_counter() - start


def _train_v1(data: _Data, seed: int) -> tuple[Any, float]:
    model = MLPRegressor(hidden_layer_sizes=(128,), max_iter=30, batch_size=128, random_state=seed)
    x, y = _noisy_copies(data.train_clean, 1, np.random.default_rng([seed, 2]))
    return model, _fit(model, x, y)


def _train_v2(v1: Any, data: _Data, seed: int) -> tuple[Any, float]:
    """Continue training v1 on eight freshly corrupted copies of every training digit."""
    model = copy.deepcopy(v1)
    model.set_params(warm_start=True, max_iter=60)
    x, y = _noisy_copies(data.train_clean, 8, np.random.default_rng([seed, 3]))
    return model, _fit(model, x, y)


def export_onnx(model: Any) -> bytes:
    """The fitted regressor as ONNX: ``noisy`` float32 [N, 64] -> ``denoised`` float32 [N, 64]."""
    exported = convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, N_PIXELS]))],
        target_opset=ONNX_OPSET,
    )
    fixed = reshape_output(exported, N_PIXELS, OUTPUT_NAME, graph_name="digits_denoiser")
    fixed.doc_string = "edgeota example: denoising autoencoder for 8x8 digits in [0, 1]"
    return bytes(fixed.SerializeToString())


def run_onnx(model_bytes: bytes, noisy: Array) -> Array:
    """Run an exported model with onnxruntime on the CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    outputs = session.run([OUTPUT_NAME], {INPUT_NAME: noisy.astype(np.float32)})
    return np.asarray(outputs[0])


def _probe_and_tolerance(
    model: Any, model_bytes: bytes, data: _Data
) -> tuple[ProbeSet, dict[str, float]]:
    inputs = data.held_out_noisy[:PROBE_SIZE].astype(np.float32)
    # The reference is the trained model itself, not its export: the probe then also
    # catches a conversion that changed what the model computes.
    reference = model.predict(inputs.astype(np.float64)).astype(np.float32)
    measured = float(np.max(np.abs(run_onnx(model_bytes, inputs) - reference)))
    bound = float(f"{max(TOLERANCE_FLOOR, TOLERANCE_MARGIN * measured):.3g}")
    probe = ProbeSet(inputs={INPUT_NAME: inputs}, references={OUTPUT_NAME: reference})
    return probe, {MAX_ABS_ERROR: bound}


def _write_folder(
    folder: Path, model_bytes: bytes, probe: ProbeSet, tolerance: dict[str, float]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / MODEL_FILE, model_bytes)
    save_probe(folder / PROBE_FILE, probe)
    manifest = {
        "schema": 1,
        "hardware": ["*"],
        "needs": {},
        "files": [
            {"path": MODEL_FILE, "role": "model", "variant": "fp32"},
            {"path": PROBE_FILE, "role": "probe", "tolerance": tolerance},
        ],
    }
    atomic_write_text(folder / RELEASE_FILE, json.dumps(manifest, indent=2) + "\n")


def _build(out_dir: Path, seed: int) -> ExampleReleases:
    data = _load_data(seed)

    def release(
        name: str, version: str, model_bytes: bytes, train_s: float, tol: dict[str, float]
    ) -> ExampleRelease:
        quality = psnr_db(run_onnx(model_bytes, data.held_out_noisy), data.held_out_clean)
        return ExampleRelease(
            name, version, out_dir / name, quality, train_s, tol, len(model_bytes)
        )

    v1_model, v1_seconds = _train_v1(data, seed)
    v1_bytes = export_onnx(v1_model)
    v1_probe, v1_tol = _probe_and_tolerance(v1_model, v1_bytes, data)
    _write_folder(out_dir / "v1", v1_bytes, v1_probe, v1_tol)

    v2_model, v2_seconds = _train_v2(v1_model, data, seed)
    v2_bytes = export_onnx(v2_model)
    v2_probe, v2_tol = _probe_and_tolerance(v2_model, v2_bytes, data)
    _write_folder(out_dir / "v2", v2_bytes, v2_probe, v2_tol)

    # Same probe set and tolerance as v2: the only thing wrong with v3 is its NaN outputs.
    v3_bytes = bytes(poison_output_with_nan(onnx.load_from_string(v2_bytes)).SerializeToString())
    _write_folder(out_dir / "v3-broken", v3_bytes, v2_probe, v2_tol)

    return ExampleReleases(
        out_dir=out_dir,
        seed=seed,
        noisy_psnr_db=psnr_db(data.held_out_noisy, data.held_out_clean),
        v1=release("v1", "1.0.0", v1_bytes, v1_seconds, v1_tol),
        v2=release("v2", "2.0.0", v2_bytes, v2_seconds, v2_tol),
        v3_broken=release("v3-broken", "3.0.0", v3_bytes, 0.0, v2_tol),
        cached=False,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stamp(built: ExampleReleases) -> dict[str, Any]:
    return {
        "format": BUILD_FORMAT,
        "seed": built.seed,
        "noisy_psnr_db": built.noisy_psnr_db,
        "releases": [
            {
                "name": r.name,
                "version": r.version,
                # NaN is not JSON; the broken model's PSNR is stored as null.
                "psnr_db": r.psnr_db if math.isfinite(r.psnr_db) else None,
                "train_seconds": r.train_seconds,
                "tolerance": r.tolerance,
                "model_bytes": r.model_bytes,
                "sha256": {f: _sha256(r.path / f) for f in (MODEL_FILE, PROBE_FILE, RELEASE_FILE)},
            }
            for r in built.releases
        ],
    }


def _from_stamp(out_dir: Path, seed: int) -> ExampleReleases | None:
    """The earlier build in ``out_dir`` if it is for this seed and format and intact."""
    try:
        stamp = json.loads((out_dir / STAMP_FILE).read_text("utf-8"))
        if stamp["format"] != BUILD_FORMAT or stamp["seed"] != seed:
            return None
        releases = []
        for r in stamp["releases"]:
            path = out_dir / r["name"]
            if any(_sha256(path / f) != digest for f, digest in r["sha256"].items()):
                return None
            psnr = float("nan") if r["psnr_db"] is None else float(r["psnr_db"])
            tolerance = {str(k): float(v) for k, v in r["tolerance"].items()}
            releases.append(
                ExampleRelease(
                    str(r["name"]),
                    str(r["version"]),
                    path,
                    psnr,
                    float(r["train_seconds"]),
                    tolerance,
                    int(r["model_bytes"]),
                )
            )
        v1, v2, v3 = releases
        noisy_psnr = float(stamp["noisy_psnr_db"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, torn or foreign: rebuild
    return ExampleReleases(out_dir, seed, noisy_psnr, v1, v2, v3, cached=True)


def build_example_releases(out_dir: Path, seed: int = 0, *, force: bool = False) -> ExampleReleases:
    """Train the example models and write ``v1/``, ``v2/`` and ``v3-broken/`` below ``out_dir``.

    A finished build leaves a stamp file; a later call with the same seed reuses the folders
    (after checking their hashes) unless ``force`` is set. Concurrent callers are serialised
    by a lock file in ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out_dir / ".edgeota-examples.lock"):
        if not force:
            cached = _from_stamp(out_dir, seed)
            if cached is not None:
                return cached
        # Remove the stamp first: a build interrupted half-way must not look finished.
        (out_dir / STAMP_FILE).unlink(missing_ok=True)
        built = _build(out_dir, seed)
        atomic_write_text(out_dir / STAMP_FILE, json.dumps(_stamp(built), indent=2) + "\n")
        return built
