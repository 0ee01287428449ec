"""How good a variant is compared with the original, and the health-check bounds it gets.

With a runtime, quality is measured on the probe set's outputs against the original model's
reference outputs, with a metric that fits what the model produces:

- ``psnr_db`` for images (outputs in [0, 1]): peak signal-to-noise ratio, higher is better;
- ``cosine`` for embeddings and other unbounded outputs: mean cosine similarity per example;
- ``agreement`` for LLMs (GGUF under llama.cpp): the share of the probe prompts' positions
  where the variant's top-1 next token is the original's. The change in perplexity on the
  prompts' own text is recorded beside it; agreement is what the device can check, since it
  needs only the references the release ships.

Without one (GGUF without llama.cpp, safetensors), it is measured on the weights:
``weight_snr_db``, the signal-to-noise ratio of the variant's weights against the original's.
Every metric is a score where higher is better, so the server can pick the best one that fits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeota.runtime.llm import NEXT_TOKEN, TOKEN_LOGPROB
from edgeota.runtime.probe import (
    MAX_ABS_ERROR,
    MAX_LATENCY_MS,
    MAX_PEAK_RSS_MB,
    MIN_AGREEMENT,
    PSNR_CAP_DB,
    Array,
    agreement,
    psnr_db,
)

PSNR = "psnr_db"
COSINE = "cosine"
WEIGHT_SNR = "weight_snr_db"
AGREEMENT = "agreement"
OUTPUT_METRICS = (PSNR, COSINE)
IMAGE_SLACK = 0.25

# Build-time error times this (and at least the floor) is the device's bound: the same
# variant on another CPU rounds differently, a broken or badly quantized one does not pass.
ERROR_MARGIN = 2.0
ERROR_FLOOR = 1e-3  # relative to the largest reference value (at least 1)
# An LLM variant's agreement floor is its build-time agreement less this share: another CPU's
# kernels round differently and flip near-ties between the top two tokens; a broken or badly
# quantized file loses far more.
AGREEMENT_SLACK = 0.05
# Latency and memory only catch regressions that are far off, never a slower device.
LATENCY_FACTOR = 20.0
LATENCY_SLACK_MS = 1000.0
RSS_FACTOR = 2.0
RSS_SLACK_MB = 64.0


@dataclass(frozen=True)
class Quality:
    metric: str
    score: float  # higher is better
    basis: str  # "outputs" or "weights"
    figures: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "score": _round(self.score),
            "basis": self.basis,
            **{k: _round(v) for k, v in self.figures.items()},
        }


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _image_like(values: Array) -> bool:
    low, mid, high = (float(q) for q in np.percentile(values, [1, 50, 99]))
    # Percentiles, not min/max: a regressor's image outputs overshoot [0, 1] a little. The
    # spread tells images (which use the range) from small, zero-centred embeddings.
    return low >= -IMAGE_SLACK and high <= 1 + IMAGE_SLACK and mid >= 0 and high - low >= 0.5


def auto_metric(references: Mapping[str, Array]) -> tuple[str, str]:
    """The metric that fits the reference outputs, and why it was chosen."""
    values = [r for r in references.values() if r.dtype.kind == "f" and r.size]
    if values and all(_image_like(r) for r in values):
        return PSNR, "the reference outputs span [0, 1], as images do"
    return COSINE, "the reference outputs are not images in [0, 1]: compared as vectors"


def _cosine(outputs: list[Array], references: list[Array]) -> float:
    rows = references[0].shape[0]
    got = np.concatenate([o.reshape(rows, -1) for o in outputs], axis=1)
    want = np.concatenate([r.reshape(rows, -1) for r in references], axis=1)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    dots = np.sum(got * want, axis=1)
    # Two zero vectors are the same vector; one zero vector is not similar to anything.
    both_zero = (np.linalg.norm(got, axis=1) == 0) & (np.linalg.norm(want, axis=1) == 0)
    similarity = np.where(both_zero, 1.0, dots / np.where(norms == 0, 1.0, norms))
    return float(np.mean(similarity))


def output_quality(
    outputs: Mapping[str, Array], references: Mapping[str, Array], metric: str
) -> Quality:
    """Compare a variant's outputs with the original's; NaN or Inf gives the worst score."""
    names = sorted(references)
    got = [np.asarray(outputs[n], dtype=np.float64) for n in names]
    want = [np.asarray(references[n], dtype=np.float64) for n in names]
    finite = all(np.isfinite(g).all() for g in got)
    if not finite:
        figures = {MAX_ABS_ERROR: math.inf, "mean_abs_error": math.inf}
        return Quality(metric, -math.inf, "outputs", figures)
    diffs = np.concatenate([np.abs(g - w).ravel() for g, w in zip(got, want, strict=True)])
    figures = {
        MAX_ABS_ERROR: float(diffs.max()) if diffs.size else 0.0,
        "mean_abs_error": float(diffs.mean()) if diffs.size else 0.0,
        PSNR: psnr_db(
            np.concatenate([g.ravel() for g in got]), np.concatenate([w.ravel() for w in want])
        ),
        COSINE: _cosine(got, want),
    }
    return Quality(metric, figures[metric], "outputs", figures)


def token_quality(outputs: Mapping[str, Array], references: Mapping[str, Array]) -> Quality:
    """An LLM variant against the original on the probe prompts (both as
    :func:`edgeota.runtime.llm.score_prompts` returns them)."""
    score = agreement(np.asarray(outputs[NEXT_TOKEN]), np.asarray(references[NEXT_TOKEN]))
    figures = {AGREEMENT: score}
    got = np.asarray(outputs[TOKEN_LOGPROB], dtype=np.float64)
    want = np.asarray(references[TOKEN_LOGPROB], dtype=np.float64)
    if got.size and want.size:
        if not (np.isfinite(got).all() and np.isfinite(want).all()):
            return Quality(AGREEMENT, -math.inf, "outputs", {**figures, "perplexity": math.inf})
        perplexity = math.exp(-float(got.mean()))
        reference = math.exp(-float(want.mean()))
        figures["perplexity"] = perplexity
        figures["reference_perplexity"] = reference
        figures["perplexity_change"] = perplexity / reference - 1.0
    return Quality(AGREEMENT, score, "outputs", figures)


def weight_quality(original: Mapping[str, Array], variant: Mapping[str, Array]) -> Quality:
    """Signal-to-noise of the variant's float weights against the original's."""
    signal = noise = 0.0
    worst = 0.0
    for name, want in original.items():
        got = variant[name]
        if want.dtype.kind != "f":
            continue
        w = want.astype(np.float64)
        d = got.astype(np.float64).reshape(w.shape) - w
        signal += float(np.sum(w * w))
        noise += float(np.sum(d * d))
        worst = max(worst, float(np.max(np.abs(d))) if d.size else 0.0)
    if noise <= signal * 10.0 ** (-PSNR_CAP_DB / 10.0):
        snr = PSNR_CAP_DB
    else:
        snr = 10.0 * math.log10(signal / noise)
    rel_rms = math.sqrt(noise / signal) if signal > 0 else 0.0
    figures = {WEIGHT_SNR: snr, "weight_max_abs_error": worst, "weight_rel_rms_error": rel_rms}
    return Quality(WEIGHT_SNR, snr, "weights", figures)


def _ceil_3(value: float) -> float:
    """``value`` rounded up to three significant digits (a bound must not shrink)."""
    if value <= 0:
        return 0.0
    exponent = math.floor(math.log10(value)) - 2
    step = 10.0**exponent
    return float(f"{math.ceil(value / step - 1e-9) * step:.3g}")


def _floor_3(value: float) -> float:
    """``value`` rounded down to three decimals (a floor must not rise)."""
    return math.floor(max(value, 0.0) * 1000.0 + 1e-9) / 1000.0


def _budgets(latency_ms: float | None, peak_rss_mb: float | None) -> dict[str, float]:
    budgets = {}
    if latency_ms is not None:
        budgets[MAX_LATENCY_MS] = _ceil_3(LATENCY_FACTOR * latency_ms + LATENCY_SLACK_MS)
    if peak_rss_mb is not None:
        budgets[MAX_PEAK_RSS_MB] = _ceil_3(RSS_FACTOR * peak_rss_mb + RSS_SLACK_MB)
    return budgets


def token_tolerance_for(
    quality: Quality, latency_ms: float | None, peak_rss_mb: float | None
) -> dict[str, float]:
    """The device's bounds for an LLM variant: its agreement less the slack, and budgets."""
    return {MIN_AGREEMENT: _floor_3(quality.score - AGREEMENT_SLACK)} | _budgets(
        latency_ms, peak_rss_mb
    )


def tolerance_for(
    quality: Quality,
    references: Mapping[str, Array],
    latency_ms: float | None,
    peak_rss_mb: float | None,
) -> dict[str, float]:
    """The device's health-check bounds for a variant: a margin over its build-time figures."""
    scale = max([1.0, *(float(np.max(np.abs(r))) for r in references.values() if r.size)])
    measured = quality.figures[MAX_ABS_ERROR]
    bound = max(ERROR_MARGIN * measured, measured + ERROR_FLOOR * scale)
    return {MAX_ABS_ERROR: _ceil_3(bound)} | _budgets(latency_ms, peak_rss_mb)
