"""``manifest.json``: what ``edgeota model build`` made and measured, versioned.

Version 1 (every figure in MB is 2**20 bytes, every time in milliseconds)::

    {
      "manifest_version": 1,
      "created_by": "edgeota 0.1.0",
      "source": {"file": "model.onnx", "format": "onnx", "sha256": "...", "bytes": 67109},
      "probe": {"generated": true, "description": "...", "examples": 8,
                "inputs": {"noisy": {"dtype": "float32", "shape": [8, 64]}},
                "references": {"denoised": {"dtype": "float32", "shape": [8, 64]}}} | null,
      "metric": {"name": "psnr_db", "why": "..."},
      "estimate_config": {...},                 # the constants the memory estimates used
      "variants": [{
        "name": "int8", "file": "model-int8.onnx", "bytes": 19580, "sha256": "...",
        "memory": {"estimate_mb": ..., "weights_mb": ..., "overhead_mb": ...,
                   "activations_mb": ..., "kv_cache_mb": ..., "notes": [...]},
        "measured": {"peak_rss_mb": ..., "load_ms": ..., "what": "load+probe",
                     "first_ms": ..., "median_ms": ...} | null,
        "quality": {"metric": "psnr_db", "score": 38.1, "basis": "outputs", ...figures},
        "probe_file": "probe-int8.npz" | null,
        "tolerance": {"max_abs_error": 0.082, ...} | null
      }],
      "skipped": [{"variant": "int4", "reason": "..."}],
      "notes": ["..."],
      "mlflow_run_id": null
    }

The original model's reference outputs are in each probe file (``reference:<name>``).
Readers refuse a newer ``manifest_version`` instead of misreading it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeota.errors import FormatError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class VariantRecord:
    name: str
    file: str
    bytes: int
    sha256: str
    memory: dict[str, Any]
    measured: dict[str, Any] | None
    quality: dict[str, Any]
    probe_file: str | None
    tolerance: dict[str, float] | None

    @property
    def estimate_mb(self) -> float:
        return float(self.memory["estimate_mb"])

    @property
    def peak_rss_mb(self) -> float | None:
        return None if self.measured is None else float(self.measured["peak_rss_mb"])

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "memory": self.memory,
            "measured": self.measured,
            "quality": self.quality,
            "probe_file": self.probe_file,
            "tolerance": self.tolerance,
        }


@dataclass(frozen=True)
class Manifest:
    created_by: str
    source: dict[str, Any]
    probe: dict[str, Any] | None
    metric: dict[str, Any]
    estimate_config: dict[str, Any]
    variants: tuple[VariantRecord, ...]
    skipped: tuple[dict[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    mlflow_run_id: str | None = None
    version: int = MANIFEST_VERSION

    def variant(self, name: str) -> VariantRecord:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest_version": self.version,
            "created_by": self.created_by,
            "source": self.source,
            "probe": self.probe,
            "metric": self.metric,
            "estimate_config": self.estimate_config,
            "variants": [v.to_json() for v in self.variants],
            "skipped": list(self.skipped),
            "notes": list(self.notes),
            "mlflow_run_id": self.mlflow_run_id,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n"


def load_manifest(bundle: Path) -> Manifest:
    """Read ``bundle/manifest.json``; FormatError with a hint when it is missing or wrong."""
    path = bundle / MANIFEST_NAME
    try:
        body = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise FormatError(
            f"{bundle} has no {MANIFEST_NAME}: it is not a bundle made by `edgeota model build`"
        ) from None
    except (OSError, ValueError) as e:
        raise FormatError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(body, dict) or not isinstance(body.get("manifest_version"), int):
        raise FormatError(f"{path} has no integer manifest_version")
    if body["manifest_version"] > MANIFEST_VERSION:
        raise FormatError(
            f"{path} is manifest version {body['manifest_version']}; this edgeota reads up to "
            f"{MANIFEST_VERSION}: upgrade edgeota"
        )
    try:
        variants = tuple(
            VariantRecord(
                name=str(v["name"]),
                file=str(v["file"]),
                bytes=int(v["bytes"]),
                sha256=str(v["sha256"]),
                memory=dict(v["memory"]),
                measured=None if v.get("measured") is None else dict(v["measured"]),
                quality=dict(v["quality"]),
                probe_file=v.get("probe_file"),
                tolerance=v.get("tolerance"),
            )
            for v in body["variants"]
        )
        return Manifest(
            created_by=str(body.get("created_by", "")),
            source=dict(body["source"]),
            probe=body.get("probe"),
            metric=dict(body["metric"]),
            estimate_config=dict(body.get("estimate_config") or {}),
            variants=variants,
            skipped=tuple(body.get("skipped") or ()),
            notes=tuple(body.get("notes") or ()),
            mlflow_run_id=body.get("mlflow_run_id"),
            version=int(body["manifest_version"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{path} is not a valid bundle manifest: {e!r}") from e
