"""Probe sets: the inputs and reference outputs a release ships for its on-device health check.

A probe file is an ``.npz`` archive with ``input:<name>`` and ``reference:<name>`` arrays that
all share one batch size (axis 0). The device feeds the inputs to the newly started runtime and
compares what comes back with the references under the release's signed tolerance.

``compare_outputs`` is pure: arrays in, a verdict out. Only ``load_probe``/``save_probe`` touch
the disk.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeota.errors import FormatError
from edgeota.fsutil import atomic_write_bytes

INPUT_PREFIX = "input:"
REFERENCE_PREFIX = "reference:"

MAX_ABS_ERROR = "max_abs_error"
MIN_PSNR_DB = "min_psnr_db"
# For outputs that are labels, not quantities (an LLM's top-1 next tokens): the share of
# output values equal to the reference, in [0, 1]. An error size means nothing for token IDs.
MIN_AGREEMENT = "min_agreement"
AGREEMENT = "agreement"
# Budgets for the runtime, not the outputs: checked by the device's health check from the
# figures the runtime reports (its inference latency and peak RSS).
MAX_LATENCY_MS = "max_latency_ms"
MAX_PEAK_RSS_MB = "max_peak_rss_mb"
KNOWN_TOLERANCES = (MAX_ABS_ERROR, MIN_PSNR_DB, MIN_AGREEMENT, MAX_LATENCY_MS, MAX_PEAK_RSS_MB)
_NON_NEGATIVE = (MAX_ABS_ERROR, MAX_LATENCY_MS, MAX_PEAK_RSS_MB)

NON_FINITE_REASON = "outputs contain NaN or Inf"

# PSNR of identical outputs is infinite; reports travel as strict JSON, which has no
# Infinity, so the figure is capped at a value no real comparison reaches.
PSNR_CAP_DB = 200.0

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class ProbeSet:
    """Model inputs and the outputs the published model gave for them, keyed by tensor name."""

    inputs: dict[str, Array]
    references: dict[str, Array]

    def __post_init__(self) -> None:
        _check_arrays(self.inputs, self.references, "probe set")

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


@dataclass(frozen=True)
class ProbeResult:
    """The verdict of one comparison; ``reason`` says why it failed (None when ``ok``)."""

    ok: bool
    reason: str | None
    figures: dict[str, float] = field(default_factory=dict)


def _check_arrays(inputs: Mapping[str, Array], references: Mapping[str, Array], where: str) -> None:
    if not inputs:
        raise FormatError(f"{where} has no '{INPUT_PREFIX}<name>' arrays")
    if not references:
        raise FormatError(f"{where} has no '{REFERENCE_PREFIX}<name>' arrays")
    sizes: dict[str, int] = {}
    for prefix, arrays in ((INPUT_PREFIX, inputs), (REFERENCE_PREFIX, references)):
        for name, array in arrays.items():
            key = f"{prefix}{name}"
            if not name:
                raise FormatError(f"{where} has an array {key!r} without a tensor name")
            if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
                raise FormatError(f"{where}: {key!r} must be a numeric array")
            if array.ndim == 0:
                raise FormatError(f"{where}: {key!r} is a scalar; it needs a batch axis")
            if array.shape[0] == 0:
                raise FormatError(f"{where}: {key!r} holds no examples (batch size 0)")
            sizes[key] = int(array.shape[0])
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{k}={v}" for k, v in sorted(sizes.items()))
        raise FormatError(
            f"{where}: arrays disagree on the batch size (axis 0): {listed}; "
            "every input and reference must hold the same number of examples"
        )


def load_probe(path: Path) -> ProbeSet:
    """Read a probe ``.npz``; raise FormatError when it is not a valid probe set."""
    inputs: dict[str, Array] = {}
    references: dict[str, Array] = {}
    try:
        # Open the file here: np.load leaks its own handle when the archive is corrupt.
        with path.open("rb") as f:
            archive = np.load(f, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise FormatError(f"{path} holds a single array, not an .npz probe archive")
            with archive:
                for key in archive.files:
                    if key.startswith(INPUT_PREFIX):
                        inputs[key.removeprefix(INPUT_PREFIX)] = archive[key]
                    elif key.startswith(REFERENCE_PREFIX):
                        references[key.removeprefix(REFERENCE_PREFIX)] = archive[key]
                    else:
                        raise FormatError(
                            f"{path}: unexpected array {key!r}; a probe archive holds only "
                            f"'{INPUT_PREFIX}<name>' and '{REFERENCE_PREFIX}<name>' arrays"
                        )
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        # Pickled data (refused), truncated or corrupt archives all land here.
        raise FormatError(f"{path} is not a readable .npz probe archive: {e}") from e
    _check_arrays(inputs, references, str(path))
    return ProbeSet(inputs=inputs, references=references)


def save_probe(path: Path, probe: ProbeSet) -> None:
    """Write ``probe`` to ``path`` atomically (temp file, fsync, rename, fsync of the folder)."""
    arrays = {f"{INPUT_PREFIX}{k}": v for k, v in probe.inputs.items()}
    arrays.update({f"{REFERENCE_PREFIX}{k}": v for k, v in probe.references.items()})
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def check_tolerance(tolerance: Mapping[str, float]) -> None:
    """Raise ValueError for unknown keys or values that cannot be bounds."""
    unknown = sorted(set(tolerance) - set(KNOWN_TOLERANCES))
    if unknown:
        raise ValueError(
            f"unknown tolerance key(s) {unknown}; known keys are {list(KNOWN_TOLERANCES)}"
        )
    for key, value in tolerance.items():
        if not math.isfinite(value):
            raise ValueError(f"tolerance {key} must be a finite number, got {value}")
    for key in _NON_NEGATIVE:
        if tolerance.get(key, 0.0) < 0:
            raise ValueError(f"tolerance {key} must not be negative")
    if not 0.0 <= tolerance.get(MIN_AGREEMENT, 0.0) <= 1.0:
        raise ValueError(f"tolerance {MIN_AGREEMENT} is a share and must lie in [0, 1]")


def psnr_db(outputs: Array, references: Array) -> float:
    """Peak signal-to-noise ratio for data in [0, 1], capped at ``PSNR_CAP_DB``."""
    mse = float(np.mean((outputs.astype(np.float64) - references.astype(np.float64)) ** 2))
    if mse <= 10.0 ** (-PSNR_CAP_DB / 10.0):
        return PSNR_CAP_DB
    return -10.0 * math.log10(mse)


def compare_outputs(
    outputs: Mapping[str, Array],
    references: Mapping[str, Array],
    tolerance: Mapping[str, float],
) -> ProbeResult:
    """Compare a model's outputs with the probe references under ``tolerance``.

    Every reference must have an output of the same shape; outputs the references do not
    name are ignored. Non-finite outputs always fail, whatever the tolerance. Figures
    (``max_abs_error``, ``mean_abs_error``, ``psnr_db``, and ``agreement`` when the tolerance
    bounds it) are taken over all referenced outputs.
    Raises ValueError for unknown tolerance keys (a caller or publisher bug).
    """
    check_tolerance(tolerance)
    if not references:
        raise ValueError("compare_outputs needs at least one reference output")
    missing = sorted(set(references) - set(outputs))
    if missing:
        return ProbeResult(False, f"the model returned no output named {missing}")

    diffs: list[Array] = []
    got: list[Array] = []
    want: list[Array] = []
    non_finite = 0
    for name, reference in sorted(references.items()):
        output = np.asarray(outputs[name])
        if output.dtype.kind not in "biuf":
            return ProbeResult(False, f"output {name!r} is not numeric (dtype {output.dtype})")
        bad = int(output.size - np.count_nonzero(np.isfinite(output)))
        if bad:
            non_finite += bad
            continue
        if output.shape != reference.shape:
            return ProbeResult(
                False,
                f"output {name!r} has shape {list(output.shape)}, "
                f"but the reference has {list(reference.shape)}",
            )
        out64 = output.astype(np.float64).ravel()
        ref64 = reference.astype(np.float64).ravel()
        got.append(out64)
        want.append(ref64)
        diffs.append(np.abs(out64 - ref64))
    if non_finite:
        return ProbeResult(False, NON_FINITE_REASON, {"non_finite_values": float(non_finite)})

    all_diffs = np.concatenate(diffs)
    figures = {
        MAX_ABS_ERROR: float(all_diffs.max()) if all_diffs.size else 0.0,
        "mean_abs_error": float(all_diffs.mean()) if all_diffs.size else 0.0,
        "psnr_db": psnr_db(np.concatenate(got), np.concatenate(want)) if all_diffs.size else 0.0,
    }
    bound = tolerance.get(MAX_ABS_ERROR)
    if bound is not None and figures[MAX_ABS_ERROR] > bound:
        return ProbeResult(
            False,
            f"max abs error {figures[MAX_ABS_ERROR]:.6g} exceeds the tolerance {bound:.6g}",
            figures,
        )
    floor = tolerance.get(MIN_PSNR_DB)
    if floor is not None and figures["psnr_db"] < floor:
        return ProbeResult(
            False,
            f"PSNR {figures['psnr_db']:.2f} dB is below the tolerance {floor:.2f} dB",
            figures,
        )
    least = tolerance.get(MIN_AGREEMENT)
    if least is not None:
        figures[AGREEMENT] = agreement(np.concatenate(got), np.concatenate(want))
        if figures[AGREEMENT] < least:
            return ProbeResult(
                False,
                f"agreement {figures[AGREEMENT]:.4f} with the reference outputs is below "
                f"the tolerance {least:.4f}",
                figures,
            )
    return ProbeResult(True, None, figures)


def agreement(outputs: Array, references: Array) -> float:
    """The share of output values exactly equal to the reference (1.0 for no values)."""
    if references.size == 0:
        return 1.0
    return float(np.count_nonzero(outputs == references)) / float(references.size)
