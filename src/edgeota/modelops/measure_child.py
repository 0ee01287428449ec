"""Load one model variant, run the probe inputs, print peak RSS and latency as JSON.

Run by :mod:`edgeota.modelops.measure` in a fresh process, so the peak RSS
(:func:`edgeota.runtime.resources.peak_rss_mb`) belongs to this variant alone:

    python -m edgeota.modelops.measure_child onnx MODEL --inputs IN.npz --outputs OUT.npz
    python -m edgeota.modelops.measure_child gguf MODEL --prompts P.json --outputs OUT.npz

An ONNX variant is loaded the way the device runtime loads it (same modules imported, same
session options), so the figures predict what the device's health check will see. A GGUF
LLM given prompts is loaded into llama.cpp the same way (:mod:`edgeota.runtime.llm`); its
prompts are tokenized, cut to one common length, and scored. Without prompts (llama.cpp not
installed) and for safetensors, the tensors are loaded into memory and only the load is
measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _measure_onnx(model: Path, inputs: Path | None, outputs: Path | None, repeat: int) -> Any:
    # Import what the runtime service imports, so the base RSS is the device's.
    import onnxruntime as ort

    import edgeota.runtime.server  # noqa: F401

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    start = time.perf_counter()
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - start) * 1000.0
    result: dict[str, Any] = {"load_ms": load_ms, "measured": "load+probe"}
    if inputs is None:
        result["measured"] = "load"
        return result
    with np.load(inputs, allow_pickle=False) as archive:
        feed = {name: archive[name] for name in archive.files}
    names = [o.name for o in session.get_outputs()]
    times = []
    got: list[Any] = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        got = session.run(names, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    result["first_ms"] = times[0]
    result["median_ms"] = statistics.median(times[1:] or times)
    if outputs is not None:
        np.savez(outputs, allow_pickle=False, **dict(zip(names, got, strict=True)))
    return result


PROBE_TOKENS = 32  # longest probe prompt, in tokens; all are cut to the shortest one


def _measure_llm(model: Path, prompts: Path, outputs: Path | None, repeat: int) -> Any:
    from importlib.metadata import version

    import edgeota.runtime.server  # noqa: F401  (the runtime's imports: the device's base RSS)
    from edgeota.runtime.llm import TOKENS, LlamaSession, score_prompts

    texts = json.loads(prompts.read_text("utf-8"))
    start = time.perf_counter()
    session = LlamaSession(model)
    load_ms = (time.perf_counter() - start) * 1000.0
    ids = [session.tokenize(str(text)) for text in texts]
    length = min(PROBE_TOKENS, *(len(i) for i in ids))
    tokens = np.array([i[:length] for i in ids], dtype=np.int32)
    times = []
    got: dict[str, Any] = {}
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        got = score_prompts(session, tokens)
        times.append((time.perf_counter() - start) * 1000.0)
    if outputs is not None:
        np.savez(outputs, allow_pickle=False, **{TOKENS: tokens, **got})
    return {
        "load_ms": load_ms,
        "measured": "load+probe",
        "first_ms": times[0],
        "median_ms": statistics.median(times[1:] or times),
        "runtime": f"llama-cpp-python {version('llama-cpp-python')}",
    }


def _measure_gguf(model: Path) -> Any:
    import gguf

    start = time.perf_counter()
    reader = gguf.GGUFReader(str(model))
    # Copy out of the memory map, as a runtime that does not mmap would hold them.
    tensors = [np.array(t.data) for t in reader.tensors]
    load_ms = (time.perf_counter() - start) * 1000.0
    return {"load_ms": load_ms, "measured": "load", "tensors": len(tensors)}


def _measure_safetensors(model: Path) -> Any:
    # edgeota's own reader: numpy (and so safetensors.numpy) has no bfloat16.
    from edgeota.modelops.safetensors_variants import read_checkpoint

    start = time.perf_counter()
    tensors = read_checkpoint(model).tensors
    load_ms = (time.perf_counter() - start) * 1000.0
    return {"load_ms": load_ms, "measured": "load", "tensors": len(tensors)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeota.modelops.measure_child")
    parser.add_argument("format", choices=["onnx", "gguf", "safetensors"])
    parser.add_argument("model", type=Path)
    parser.add_argument("--inputs", type=Path, help=".npz of input arrays keyed by name")
    parser.add_argument("--outputs", type=Path, help="write the outputs here as .npz")
    parser.add_argument("--prompts", type=Path, help="GGUF: a JSON list of probe prompts")
    parser.add_argument("--repeat", type=int, default=5, help="runs of the probe inputs")
    args = parser.parse_args(argv)
    from edgeota.errors import EdgeotaError

    try:
        if args.format == "onnx":
            result = _measure_onnx(args.model, args.inputs, args.outputs, args.repeat)
        elif args.format == "gguf" and args.prompts is not None:
            result = _measure_llm(args.model, args.prompts, args.outputs, args.repeat)
        elif args.format == "gguf":
            result = _measure_gguf(args.model)
        else:
            result = _measure_safetensors(args.model)
    except EdgeotaError as e:  # a model the runtime refuses: its reason, not a traceback
        sys.stderr.write(f"{e}\n")
        return 1
    from edgeota.runtime.resources import peak_rss_mb

    result["peak_rss_mb"] = peak_rss_mb()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
