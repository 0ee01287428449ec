"""Measure a variant in a fresh process: peak RSS, load time, probe latency, outputs.

A fresh process per variant keeps one variant's memory out of the next one's figure, and
matches the device, where the runtime is started anew on each slot. It also keeps the build
alive when llama.cpp aborts on a GGUF file it cannot run (it asserts rather than raises).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeota.modelops.catalog import BuildError
from edgeota.runtime.probe import Array

CHILD_MODULE = "edgeota.modelops.measure_child"


@dataclass(frozen=True)
class Measurement:
    peak_rss_mb: float
    load_ms: float
    what: str  # "load+probe" or "load"
    first_ms: float | None = None  # first run of the probe set (what a health check sees)
    median_ms: float | None = None  # median of the later runs
    outputs: dict[str, Array] | None = None
    runtime: str | None = None  # what ran the probe when it is not onnxruntime

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "peak_rss_mb": round(self.peak_rss_mb, 2),
            "load_ms": round(self.load_ms, 3),
            "what": self.what,
            "first_ms": None if self.first_ms is None else round(self.first_ms, 3),
            "median_ms": None if self.median_ms is None else round(self.median_ms, 3),
        }
        if self.runtime is not None:
            body["runtime"] = self.runtime
        return body


def measure(
    fmt: str,
    model: Path,
    inputs: Mapping[str, Array] | None = None,
    *,
    prompts: Sequence[str] | None = None,
    repeat: int = 5,
    timeout_s: float = 600.0,
) -> Measurement:
    """Run the measuring child on ``model``; BuildError when it fails.

    ``inputs`` feed an ONNX model; ``prompts`` are the probe of a GGUF LLM, run through
    llama.cpp (the outputs then hold the ``tokens`` the prompts became).
    """
    with tempfile.TemporaryDirectory(prefix="edgeota-measure-") as tmp:
        argv = [sys.executable, "-m", CHILD_MODULE, fmt, str(model), "--repeat", str(repeat)]
        out_path = Path(tmp) / "outputs.npz"
        if inputs is not None:
            in_path = Path(tmp) / "inputs.npz"
            np.savez(in_path, allow_pickle=False, **dict(inputs))
            argv += ["--inputs", str(in_path), "--outputs", str(out_path)]
        elif prompts is not None:
            prompts_path = Path(tmp) / "prompts.json"
            prompts_path.write_text(json.dumps(list(prompts)), "utf-8")
            argv += ["--prompts", str(prompts_path), "--outputs", str(out_path)]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise BuildError(f"measuring {model.name} took longer than {timeout_s:g} s") from e
        if done.returncode != 0:
            tail = (done.stderr or "").strip().splitlines()[-5:]
            raise BuildError(
                f"the runtime could not load or run {model.name} (exit {done.returncode}): "
                + " | ".join(tail)
            )
        try:
            body = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError) as e:
            raise BuildError(f"measuring {model.name} printed no result: {done.stdout!r}") from e
        outputs = None
        if inputs is not None or prompts is not None:
            with np.load(out_path, allow_pickle=False) as archive:
                outputs = {name: archive[name] for name in archive.files}
    return Measurement(
        peak_rss_mb=float(body["peak_rss_mb"]),
        load_ms=float(body["load_ms"]),
        what=str(body["measured"]),
        first_ms=None if body.get("first_ms") is None else float(body["first_ms"]),
        median_ms=None if body.get("median_ms") is None else float(body["median_ms"]),
        outputs=outputs,
        runtime=None if body.get("runtime") is None else str(body["runtime"]),
    )
