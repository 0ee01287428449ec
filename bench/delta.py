#!/usr/bin/env python3
"""Delta patches on realistic model updates, against named baselines measured in the same run.

A numpy MLP is trained on scikit-learn's digits (no torch), then updated three ways on shifted
data (mirrored digits): the head only (frozen backbone), a full fine-tune at a small learning
rate, and a LoRA (rank-8 adapters on the hidden layers) merged into the weights. Each update is
saved as safetensors fp32 and fp16; the full fine-tune also as GGUF F16 and Q8_0 and as ONNX.

For each old -> new pair it prints the new file's size, the patch size as % of it, create and
apply time and apply peak RSS (apply runs in a child process; RSS from RUSAGE_CHILDREN), for
edgeota and for: ``zstd --patch-from`` (CLI, level 19, old file as window), plain zstd -19 of the
new file, and bsdiff4 (if installed).

Run: .venv/bin/python bench/delta.py [--hidden 768] [--level 16]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits  # type: ignore[import-untyped]

from edgeota.delta import DEFAULT_LEVEL, create_patch, read_patch_info

Params = dict[str, np.ndarray]
RANK = 8


# ----------------------------------------------------------------------------- model + training
def init_mlp(sizes: list[int], rng: np.random.Generator) -> Params:
    p: Params = {}
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        p[f"layers.{i}.weight"] = (rng.standard_normal((b, a)) * np.sqrt(2.0 / a)).astype(
            np.float32
        )
        p[f"layers.{i}.bias"] = np.zeros(b, np.float32)
    return p


def n_layers(p: Params) -> int:
    return sum(1 for k in p if k.endswith(".weight"))


def train(
    p: Params,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    trainable: Callable[[str], bool],
    lora: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
    batch: int = 64,
) -> float:
    """Plain minibatch SGD with softmax cross-entropy; returns final training accuracy."""
    rng = np.random.default_rng(seed)
    nl = n_layers(p)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            hs = [x[idx]]
            ws = []
            for i in range(nl):
                w = p[f"layers.{i}.weight"]
                if lora and i in lora:
                    b_, a_ = lora[i]
                    w = w + b_ @ a_
                ws.append(w)
                z = hs[-1] @ w.T + p[f"layers.{i}.bias"]
                hs.append(np.maximum(z, 0) if i < nl - 1 else z)
            logits = hs[-1]
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            grad = e / e.sum(axis=1, keepdims=True)
            grad[np.arange(len(idx)), y[idx]] -= 1
            grad /= len(idx)
            for i in reversed(range(nl)):
                gw = grad.T @ hs[i]
                gb = grad.sum(axis=0)
                if i > 0:
                    grad = (grad @ ws[i]) * (hs[i] > 0)
                if trainable(f"layers.{i}.weight"):
                    p[f"layers.{i}.weight"] -= lr * gw
                if trainable(f"layers.{i}.bias"):
                    p[f"layers.{i}.bias"] -= lr * gb
                if lora and i in lora:
                    b_, a_ = lora[i]
                    gb_, ga_ = gw @ a_.T, b_.T @ gw
                    b_ -= lr * gb_
                    a_ -= lr * ga_
    return accuracy(p, x, y, lora)


def accuracy(
    p: Params, x: np.ndarray, y: np.ndarray, lora: dict[int, tuple[np.ndarray, np.ndarray]] | None
) -> float:
    h = x
    nl = n_layers(p)
    for i in range(nl):
        w = p[f"layers.{i}.weight"]
        if lora and i in lora:
            w = w + lora[i][0] @ lora[i][1]
        h = h @ w.T + p[f"layers.{i}.bias"]
        if i < nl - 1:
            h = np.maximum(h, 0)
    return float((h.argmax(axis=1) == y).mean())


# ----------------------------------------------------------------------------------- writers
def save_safetensors(p: Params, path: Path, dtype: type) -> None:
    from safetensors.numpy import save_file

    save_file({k: v.astype(dtype) for k, v in p.items()}, str(path))


def save_gguf(p: Params, path: Path, quant: str) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "mlp")
    w.add_name("digits-mlp")
    w.add_array("tokenizer.ggml.tokens", [f"<tok{i}>" for i in range(2000)])
    for k, v in p.items():
        if quant == "Q8_0" and v.ndim == 2 and v.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(v, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(k, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif v.ndim == 2:
            w.add_tensor(k, v.astype(np.float16))
        else:
            w.add_tensor(k, v.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def save_onnx(p: Params, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nl = n_layers(p)
    nodes = []
    prev = "x"
    for i in range(nl):
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"z{i}"], transB=1))
        prev = f"z{i}"
        if i < nl - 1:
            nodes.append(helper.make_node("Relu", [prev], [f"h{i}"]))
            prev = f"h{i}"
    inits = []
    for i in range(nl):
        inits.append(numpy_helper.from_array(p[f"layers.{i}.weight"], f"w{i}"))
        inits.append(numpy_helper.from_array(p[f"layers.{i}.bias"], f"b{i}"))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [None, 10])],
        inits,
    )
    onnx.save(helper.make_model(graph), str(path))


# ------------------------------------------------------------------------------- measurement
@dataclass
class Result:
    size: int | None = None
    create_s: float = 0.0
    apply_s: float = 0.0
    rss_mb: float = 0.0


_RSS_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def run_child(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``cmd``, measured from a fresh wrapper process."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_WRAPPER, *cmd], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), int(out[1]) / 1024


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def same(a: Path, b: Path) -> None:
    if a.read_bytes() != b.read_bytes():
        raise SystemExit(f"round trip failed: {a} != {b}")


def bench_edgeota(old: Path, new: Path, work: Path, level: int) -> Result:
    patch, out = work / "edgeota.patch", work / "edgeota.out"
    t = time.perf_counter()
    create_patch(old, new, patch, level=level)
    create_s = time.perf_counter() - t
    code = (
        "from pathlib import Path; from edgeota.delta import apply_patch; "
        f"apply_patch(Path({str(old)!r}), Path({str(patch)!r}), Path({str(out)!r}))"
    )
    apply_s, rss = run_child(py(code))
    same(out, new)
    return Result(patch.stat().st_size, create_s, apply_s, rss)


def bench_patch_from(old: Path, new: Path, work: Path) -> Result:
    zstd = shutil.which("zstd")
    if zstd is None:
        return bench_patch_from_lib(old, new, work)
    patch, out = work / "pf.zst", work / "pf.out"
    t = time.perf_counter()
    subprocess.run(
        [zstd, "-q", "-f", "-19", f"--patch-from={old}", str(new), "-o", str(patch)],
        check=True,
        stderr=subprocess.DEVNULL,  # zstd prints tuning advice for --patch-from
    )
    create_s = time.perf_counter() - t
    apply_s, rss = run_child(
        [zstd, "-q", "-f", "-d", f"--patch-from={old}", str(patch), "-o", str(out)]
    )
    same(out, new)
    return Result(patch.stat().st_size, create_s, apply_s, rss)


def bench_patch_from_lib(old: Path, new: Path, work: Path) -> Result:
    import zstandard

    patch = work / "pf.zst"
    t = time.perf_counter()
    d = zstandard.ZstdCompressionDict(old.read_bytes(), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    params = zstandard.ZstdCompressionParameters.from_level(19, window_log=27)
    patch.write_bytes(
        zstandard.ZstdCompressor(compression_params=params, dict_data=d).compress(new.read_bytes())
    )
    create_s = time.perf_counter() - t
    code = (
        "import zstandard, pathlib; P = pathlib.Path; "
        f"d = zstandard.ZstdCompressionDict(P({str(old)!r}).read_bytes(), "
        "dict_type=zstandard.DICT_TYPE_RAWCONTENT); "
        "zstandard.ZstdDecompressor(dict_data=d, max_window_size=1 << 27)"
        f".decompress(P({str(patch)!r}).read_bytes())"
    )
    apply_s, rss = run_child(py(code))
    return Result(patch.stat().st_size, create_s, apply_s, rss)


def bench_zstd(new: Path, work: Path) -> Result:
    import zstandard

    patch = work / "plain.zst"
    t = time.perf_counter()
    patch.write_bytes(zstandard.ZstdCompressor(level=19).compress(new.read_bytes()))
    create_s = time.perf_counter() - t
    code = (
        "import zstandard, pathlib; "
        f"zstandard.ZstdDecompressor().decompress(pathlib.Path({str(patch)!r}).read_bytes())"
    )
    apply_s, rss = run_child(py(code))
    return Result(patch.stat().st_size, create_s, apply_s, rss)


def bench_bsdiff(old: Path, new: Path, work: Path) -> Result:
    try:
        import bsdiff4  # type: ignore[import-untyped]
    except ImportError:
        return Result()
    patch, out = work / "bsdiff.patch", work / "bsdiff.out"
    t = time.perf_counter()
    bsdiff4.file_diff(str(old), str(new), str(patch))
    create_s = time.perf_counter() - t
    code = f"import bsdiff4; bsdiff4.file_patch({str(old)!r}, {str(out)!r}, {str(patch)!r})"
    apply_s, rss = run_child(py(code))
    same(out, new)
    return Result(patch.stat().st_size, create_s, apply_s, rss)


# ------------------------------------------------------------------------------------- main
def make_pairs(work: Path, hidden: int, layers: int, seed: int) -> list[tuple[str, Path, Path]]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_shift = x.reshape(-1, 8, 8)[:, :, ::-1].reshape(-1, 64).copy()  # mirrored digits
    rng = np.random.default_rng(seed)
    sizes = [64] + [hidden] * layers + [10]
    base = init_mlp(sizes, rng)
    t = time.perf_counter()
    acc = train(base, x, y, epochs=4, lr=0.05, trainable=lambda _: True)
    print(f"base model {sizes}: train acc {acc:.3f} ({time.perf_counter() - t:.1f}s)")
    head = {k: v.copy() for k, v in base.items()}
    last = n_layers(base) - 1
    acc = train(
        head, x_shift, y, epochs=2, lr=0.05, trainable=lambda k: k.startswith(f"layers.{last}.")
    )
    print(f"head-only on mirrored digits: acc {acc:.3f}")
    full = {k: v.copy() for k, v in base.items()}
    acc = train(full, x_shift, y, epochs=2, lr=0.005, trainable=lambda _: True, seed=1)
    print(f"full fine-tune (lr 0.005) on mirrored digits: acc {acc:.3f}")
    lora = {
        i: (
            np.zeros((base[f"layers.{i}.weight"].shape[0], RANK), np.float32),
            (rng.standard_normal((RANK, base[f"layers.{i}.weight"].shape[1])) * 0.01).astype(
                np.float32
            ),
        )
        for i in range(1, last)
    }
    lbase = {k: v.copy() for k, v in base.items()}
    acc = train(lbase, x_shift, y, epochs=3, lr=0.05, trainable=lambda _: False, lora=lora, seed=2)
    print(f"LoRA rank {RANK} on hidden layers: acc {acc:.3f}")

    def merged(dtype: type) -> Params:
        # What a LoRA merge does: W' = cast(float32(W) + B @ A), in the checkpoint's dtype.
        out = {}
        for k, v in base.items():
            w = v.astype(dtype).astype(np.float32)
            i = int(k.split(".")[1])
            if k.endswith(".weight") and i in lora:
                w = w + lora[i][0] @ lora[i][1]
            out[k] = w.astype(dtype)
        return out

    pairs = []

    def add(name: str, save: Callable[[Params, Path], None], old: Params, new: Params) -> None:
        a, b = work / f"{name}.old", work / f"{name}.new"
        save(old, a)
        save(new, b)
        pairs.append((name, a, b))

    for dt, tag in ((np.float32, "fp32"), (np.float16, "fp16")):

        def st(p: Params, path: Path, dt: type = dt) -> None:
            save_safetensors(p, path, dt)

        add(f"head-only   st {tag}", st, base, head)
        add(f"full-ft     st {tag}", st, base, full)
        add(f"lora-merged st {tag}", st, base, merged(dt))
    for quant in ("F16", "Q8_0"):
        add(f"full-ft   gguf {quant}", lambda p, path, q=quant: save_gguf(p, path, q), base, full)
    add("full-ft   onnx fp32", save_onnx, base, full)
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--level", type=int, default=DEFAULT_LEVEL)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeota-bench-") as tmp:
        work = Path(tmp)
        pairs = make_pairs(work, args.hidden, args.layers, args.seed)
        _, floor_rss = run_child(py("import edgeota.delta"))
        print(f"python + numpy + zstandard import floor: {floor_rss:.0f} MB RSS\n")
        rows = []
        for name, old, new in pairs:
            size = new.stat().st_size
            ours = bench_edgeota(old, new, work, args.level)
            methods = ", ".join(
                f"{s.name}:{s.count}" for s in read_patch_info(work / "edgeota.patch").sections
            )
            base = {
                "patch-from": bench_patch_from(old, new, work),
                "zstd-19": bench_zstd(new, work),
                "bsdiff4": bench_bsdiff(old, new, work),
            }
            rows.append((name, size, ours, base, methods))
        print_table(rows)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f}s")


def pct(r: Result, size: int) -> str:
    return "n/a" if r.size is None else f"{100 * r.size / size:.2f}%"


def print_table(rows: list[tuple[str, int, Result, dict[str, Result], str]]) -> None:
    head = (
        f"{'update':22} {'new MB':>7} | {'edgeota':>8} {'create':>7} {'apply':>6} {'RSS':>5}"
        f" | {'patch-from':>10} {'RSS':>5} | {'zstd-19':>7} | {'bsdiff4':>8} {'RSS':>5}"
        f" | {'x pf':>6} {'x zstd':>6} {'x bsd':>6}"
    )
    print(head)
    print("-" * len(head))
    for name, size, ours, base, _ in rows:
        pf, zs, bs = base["patch-from"], base["zstd-19"], base["bsdiff4"]
        assert ours.size is not None

        def ratio(r: Result, ours: Result = ours) -> str:
            return "n/a" if r.size is None or not ours.size else f"{r.size / ours.size:.1f}x"

        print(
            f"{name:22} {size / 1e6:7.2f} | {pct(ours, size):>8} {ours.create_s:6.2f}s"
            f" {ours.apply_s:5.2f}s {ours.rss_mb:4.0f}M | {pct(pf, size):>10} {pf.rss_mb:4.0f}M"
            f" | {pct(zs, size):>7} | {pct(bs, size):>8} {bs.rss_mb:4.0f}M"
            f" | {ratio(pf):>6} {ratio(zs):>6} {ratio(bs):>6}"
        )
    print("\nmethods used by edgeota per update:")
    for name, _, _, _, methods in rows:
        print(f"  {name:22} {methods}")
    print(
        "\n% = patch size / new file size; 'x pf' etc. = baseline patch size / edgeota patch "
        "size (higher is better for edgeota); RSS = apply peak resident memory of the child."
    )


if __name__ == "__main__":
    main()
