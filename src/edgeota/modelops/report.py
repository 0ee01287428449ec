"""The rows of ``edgeota model report``: one per variant, as text, from a manifest."""

from __future__ import annotations

from dataclasses import dataclass

from edgeota.modelops.manifest import Manifest, VariantRecord
from edgeota.modelops.quality import AGREEMENT, COSINE, PSNR, WEIGHT_SNR
from edgeota.runtime.probe import MAX_ABS_ERROR, MIN_AGREEMENT

COLUMNS = (
    "variant",
    "size",
    "est MiB",
    "peak MiB",
    "ms (1st)",
    "quality",
    "max err",
    "tol",
)
_QUALITY_HEADERS = {PSNR: "PSNR dB", COSINE: "cosine", WEIGHT_SNR: "wSNR dB*", AGREEMENT: "agree"}


def columns(manifest: Manifest) -> tuple[str, ...]:
    """The column headers, with the quality column named after the build's metric."""
    metric = str(manifest.metric.get("name"))
    quality = _QUALITY_HEADERS.get(metric, metric)
    return tuple(quality if c == "quality" else c for c in COLUMNS)


def human_bytes(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def quality_text(quality: dict[str, object]) -> str:
    score = quality.get("score")
    if not isinstance(score, int | float):
        return "-"
    if quality.get("metric") == COSINE:
        return f"{score:.5f}"
    if quality.get("metric") == AGREEMENT:
        return f"{score:.3f}"
    return f"{score:.1f}"


@dataclass(frozen=True)
class ReportRow:
    cells: tuple[str, ...]


def _row(v: VariantRecord) -> ReportRow:
    measured = v.measured or {}
    rss = measured.get("peak_rss_mb")
    # A load-only figure (no runtime for the format) is marked: it lacks the run's memory.
    marker = "" if measured.get("what") == "load+probe" else " L"
    median, first = measured.get("median_ms"), measured.get("first_ms")
    max_err = v.quality.get(MAX_ABS_ERROR)
    tolerance = v.tolerance or {}
    tol = tolerance.get(MAX_ABS_ERROR)
    least = tolerance.get(MIN_AGREEMENT)
    return ReportRow(
        (
            v.name,
            human_bytes(v.bytes),
            f"{v.estimate_mb:.1f}",
            "-" if rss is None else f"{rss:.1f}{marker}",
            "-" if median is None else f"{median:.2f} ({first:.1f})",
            quality_text(v.quality),
            "-" if not isinstance(max_err, int | float) else f"{max_err:.3g}",
            f">={least:.3f}" if least is not None else "-" if tol is None else f"{tol:.3g}",
        )
    )


def rows(manifest: Manifest) -> list[ReportRow]:
    return [_row(v) for v in manifest.variants]


def header_lines(manifest: Manifest) -> list[str]:
    source = manifest.source
    lines = [
        f"source: {source['file']} ({source['format']}, {human_bytes(source['bytes'])}), "
        f"built by {manifest.created_by}",
        f"quality metric: {manifest.metric.get('name')} ({manifest.metric.get('why')})",
    ]
    if manifest.probe is not None:
        probe = manifest.probe
        lines.append(f"probe set: {probe['examples']} examples, {probe['description']}")
    lines += [f"skipped {s['variant']}: {s['reason']}" for s in manifest.skipped]
    lines += [f"note: {n}" for n in manifest.notes]
    changes = [
        f"{v.name} {v.quality['perplexity_change']:+.2%}"
        for v in manifest.variants
        if isinstance(v.quality.get("perplexity_change"), int | float)
    ]
    if changes:
        lines.append("perplexity on the probe prompts vs the original: " + ", ".join(changes))
    if any(v.quality.get("basis") == "weights" for v in manifest.variants):
        lines.append("* wSNR: scored on the weights against the original's, not on outputs")
    if any((v.measured or {}).get("what") == "load" for v in manifest.variants):
        lines.append("L: peak RSS of loading only (no runtime for the format here)")
    if manifest.mlflow_run_id:
        lines.append(f"MLflow run: {manifest.mlflow_run_id}")
    return lines
