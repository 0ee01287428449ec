"""Log a model build as an MLflow run, when MLflow is installed (it is not a dependency).

MLflow finds its tracking server the way it always does (``MLFLOW_TRACKING_URI`` and
friends, read by MLflow itself); edgeota adds nothing to that.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeota.modelops.manifest import Manifest


def _mlflow() -> Any | None:
    if importlib.util.find_spec("mlflow") is None:
        return None
    return importlib.import_module("mlflow")


def build_metrics(manifest: Manifest) -> dict[str, float]:
    """Flat ``<variant>.<figure>`` metrics of a build."""
    metrics: dict[str, float] = {}
    for v in manifest.variants:
        metrics[f"{v.name}.bytes"] = float(v.bytes)
        metrics[f"{v.name}.estimate_mb"] = v.estimate_mb
        metrics[f"{v.name}.quality"] = float(v.quality["score"])
        if v.measured is not None:
            metrics[f"{v.name}.peak_rss_mb"] = float(v.measured["peak_rss_mb"])
            if v.measured.get("median_ms") is not None:
                metrics[f"{v.name}.latency_ms"] = float(v.measured["median_ms"])
    return metrics


@dataclass(frozen=True)
class Logged:
    """How logging a build went: the run ID, or why there is none (None: not installed)."""

    run_id: str | None = None
    problem: str | None = None


def log_build(manifest: Manifest, bundle: Path, progress: Callable[[str], None]) -> Logged:
    """Log params, metrics and the bundle's manifest and release description as a run."""
    mlflow = _mlflow()
    if mlflow is None:
        return Logged()
    progress("logging the build to MLflow")
    try:
        return Logged(run_id=_log(mlflow, manifest, bundle))
    # Whatever the tracking store raises (a server that is down, a database it cannot open):
    # the bundle is the product and stays built; the run is only a record of it.
    except Exception as e:
        first_line = (str(e).splitlines() or [type(e).__name__])[0][:300]
        return Logged(problem=f"not logged to MLflow: {first_line}")


def _log(mlflow: Any, manifest: Manifest, bundle: Path) -> str:
    source = manifest.source
    with mlflow.start_run(run_name=f"edgeota model build {source['file']}") as run:
        mlflow.log_params(
            {
                "source": source["file"],
                "format": source["format"],
                "source_sha256": source["sha256"],
                "variants": ",".join(v.name for v in manifest.variants),
                "metric": manifest.metric.get("name", ""),
                "probe_generated": bool((manifest.probe or {}).get("generated", False)),
            }
        )
        mlflow.log_metrics(build_metrics(manifest))
        for name in ("manifest.json", "release.json"):
            mlflow.log_artifact(str(bundle / name))
        return str(run.info.run_id)
