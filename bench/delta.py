#!/usr/bin/env python3
"""Delta patches on realistic model updates, against named baselines measured in the same run.

A numpy MLP is trained on scikit-learn's digits (no torch), then updated three ways on shifted
data (mirrored digits): the head only (frozen backbone), a full fine-tune at a small learning
rate, and a LoRA (rank-8 adapters on the hidden layers) merged into the weights. Each update is
saved as safetensors fp32 and fp16; the full fine-tune also as GGUF F16 and Q8_0 and as ONNX.

For each old -> new pair it prints the patch size as % of the new file and of the new file
compressed by ``zstd -19``, create time and throughput, apply time and apply peak RSS (apply
runs in a child process; RSS from RUSAGE_CHILDREN), for edgeota and, in the same run, for
``xdelta3 -9``, ``zstd -19 --long --patch-from`` and ``bsdiff`` (the Debian CLIs; installed with
apt-get when missing and running as root), plus each baseline's size relative to edgeota's.

``--large`` adds a generated ~1 GB safetensors file (fp16 4096x4096 matrices, a dense small
update of three in four) to show that apply's peak RSS stays at most 64 MiB plus the largest
tensor and to measure create throughput; edgeota and xdelta3 only (bsdiff needs ~17x the file
in memory, zstd -19 --patch-from runs at ~2 MB/s). Files go to a temporary directory
(``--tmpdir``) that is removed afterwards.

Run: .venv/bin/python bench/delta.py [--large] [--hidden 768] [--level 16]
"""

from __future__ import annotations

import argparse
import filecmp
import itertools
import json
import os
import shutil
import struct
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
    if not filecmp.cmp(a, b, shallow=False):
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
    out.unlink()
    return Result(patch.stat().st_size, create_s, apply_s, rss)


def ensure_tools() -> dict[str, str | None]:
    """Paths of the baseline CLIs, installing the Debian packages when missing and root."""
    wanted = {"xdelta3": "xdelta3", "zstd": "zstd", "bsdiff": "bsdiff", "bspatch": "bsdiff"}
    missing = sorted({pkg for cmd, pkg in wanted.items() if shutil.which(cmd) is None})
    if missing:
        if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
            print(f"installing {' '.join(missing)} (apt-get) ...", flush=True)
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(
                ["apt-get", "install", "-y", "-q", *missing],
                check=False,
                env=env,
                stdout=subprocess.DEVNULL,
            )
        else:
            print(
                f"missing baselines; install them with: sudo apt-get install -y {' '.join(missing)}"
            )
    return {cmd: shutil.which(cmd) for cmd in wanted}


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def bench_xdelta3(xdelta3: str, old: Path, new: Path, work: Path) -> Result:
    patch, out = work / "xd.vcdiff", work / "xd.out"
    create_s = timed([xdelta3, "-9", "-e", "-f", "-s", str(old), str(new), str(patch)])
    apply_s, rss = run_child([xdelta3, "-d", "-f", "-s", str(old), str(patch), str(out)])
    same(out, new)
    out.unlink()
    return Result(patch.stat().st_size, create_s, apply_s, rss)


def bench_patch_from(zstd: str, old: Path, new: Path, work: Path) -> Result:
    patch, out = work / "pf.zst", work / "pf.out"
    # zstd sizes the window to cover OLD for --patch-from; --long=31 on the decoder only lifts
    # its memory limit so that a 1 GB window is accepted.
    create_s = timed(
        [zstd, "-q", "-f", "-19", "--long", f"--patch-from={old}", str(new), "-o", str(patch)]
    )
    apply_s, rss = run_child(
        [zstd, "-q", "-f", "-d", "--long=31", f"--patch-from={old}", str(patch), "-o", str(out)]
    )
    same(out, new)
    out.unlink()
    return Result(patch.stat().st_size, create_s, apply_s, rss)


def bench_bsdiff(bsdiff: str, bspatch: str, old: Path, new: Path, work: Path) -> Result:
    patch, out = work / "bsdiff.patch", work / "bsdiff.out"
    create_s = timed([bsdiff, str(old), str(new), str(patch)])
    apply_s, rss = run_child([bspatch, str(old), str(out), str(patch)])
    same(out, new)
    out.unlink()
    return Result(patch.stat().st_size, create_s, apply_s, rss)


def bench_zstd(zstd: str, new: Path, work: Path) -> Result:
    """Plain zstd -19 of NEW: what a full download costs, the yardstick for every patch."""
    patch, out = work / "plain.zst", work / "plain.out"
    create_s = timed([zstd, "-q", "-f", "-19", str(new), "-o", str(patch)])
    apply_s, rss = run_child([zstd, "-q", "-f", "-d", str(patch), "-o", str(out)])
    out.unlink()
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


def make_large(work: Path, size_mb: int, seed: int) -> tuple[Path, Path, int]:
    """OLD/NEW safetensors of 4096x4096 fp16 matrices: a dense small fine-tune of 3 in 4.

    Generated one tensor at a time so that building 1 GB takes seconds and little memory.
    Returns (old, new, largest tensor bytes).
    """
    rows = cols = 4096
    count = max(1, size_mb * 2**20 // (rows * cols * 2))
    old, new = work / "large.old", work / "large.new"
    rng = np.random.default_rng(seed)
    header: list[tuple[str, tuple[int, int]]] = [
        (f"model.layers.{i}.weight", (rows, cols)) for i in range(count)
    ]
    meta: dict[str, object] = {
        name: {
            "dtype": "F16",
            "shape": list(shape),
            "data_offsets": [i * rows * cols * 2, (i + 1) * rows * cols * 2],
        }
        for i, (name, shape) in enumerate(header)
    }
    raw = json.dumps(meta, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with old.open("wb") as fo, new.open("wb") as fn:
        for f in (fo, fn):
            f.write(struct.pack("<Q", len(raw)) + raw)
        for i in range(count):
            w = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02)
            fo.write(w.astype(np.float16).tobytes())
            if i % 4 == 3:  # frozen layer
                fn.write(w.astype(np.float16).tobytes())
            else:
                step = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(2e-4)
                fn.write((w + step).astype(np.float16).tobytes())
    return old, new, rows * cols * 2


def run_large(args: argparse.Namespace, tools: dict[str, str | None]) -> None:
    with tempfile.TemporaryDirectory(prefix="edgeota-bench-large-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        old, new, largest = make_large(work, args.large_mb, args.seed)
        size = new.stat().st_size
        print(
            f"\nlarge case: {size / 2**20:.0f} MiB safetensors, fp16 4096x4096 tensors "
            f"({largest / 2**20:.0f} MiB each), generated in {time.perf_counter() - t:.0f}s"
        )
        bound = 64 + largest / 2**20

        def show(name: str, r: Result) -> None:
            assert r.size is not None
            print(
                f"  {name:12} patch {100 * r.size / size:6.2f}% of new  create {r.create_s:6.1f}s"
                f" ({size / 1e6 / r.create_s:5.1f} MB/s)  apply {r.apply_s:6.1f}s"
                f"  peak RSS {r.rss_mb:6.0f} MiB",
                flush=True,
            )

        ours = bench_edgeota(old, new, work, args.level)
        show("edgeota", ours)
        if tools.get("xdelta3") and not args.large_edgeota_only:
            show("xdelta3 -9", bench_xdelta3(str(tools["xdelta3"]), old, new, work))
        verdict = "within" if ours.rss_mb <= bound else "ABOVE"
        print(
            f"  edgeota apply peak RSS {ours.rss_mb:.0f} MiB: {verdict} the bound "
            f"64 MiB + largest tensor = {bound:.0f} MiB"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--level", type=int, default=DEFAULT_LEVEL)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--large", action="store_true", help="also run the ~1 GB file case")
    ap.add_argument("--large-mb", type=int, default=1024)
    ap.add_argument(
        "--large-edgeota-only", action="store_true", help="no xdelta3 in the large case (~10 min)"
    )
    ap.add_argument("--skip-small", action="store_true", help="only the large case")
    ap.add_argument("--tmpdir", default=None, help="where the large files go (default: TMPDIR)")
    args = ap.parse_args()
    started = time.perf_counter()
    tools = ensure_tools()
    print("baselines: " + ", ".join(f"{k}={v or 'missing'}" for k, v in tools.items()))
    if not args.skip_small:
        with tempfile.TemporaryDirectory(prefix="edgeota-bench-") as tmp:
            work = Path(tmp)
            pairs = make_pairs(work, args.hidden, args.layers, args.seed)
            _, floor_rss = run_child(py("import edgeota.delta"))
            print(f"python + numpy + zstandard import floor: {floor_rss:.0f} MB RSS\n")
            rows = []
            for name, old, new in pairs:
                ours = bench_edgeota(old, new, work, args.level)
                methods = ", ".join(
                    f"{s.name}:{s.count}" for s in read_patch_info(work / "edgeota.patch").sections
                )
                base: dict[str, Result] = {}
                if tools["xdelta3"]:
                    base["xdelta3 -9"] = bench_xdelta3(tools["xdelta3"], old, new, work)
                if tools["zstd"]:
                    base["zstd -19 --long --patch-from"] = bench_patch_from(
                        tools["zstd"], old, new, work
                    )
                if tools["bsdiff"] and tools["bspatch"]:
                    base["bsdiff"] = bench_bsdiff(tools["bsdiff"], tools["bspatch"], old, new, work)
                plain = bench_zstd(tools["zstd"], new, work) if tools["zstd"] else Result()
                rows.append((name, new.stat().st_size, plain, ours, base, methods))
            print_table(rows)
    if args.large:
        run_large(args, tools)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f}s")


Row = tuple[str, int, Result, Result, dict[str, Result], str]


def print_table(rows: list[Row]) -> None:
    print(
        "| update | new MB | tool | patch % of new | % of new zstd -19 | create s | create MB/s"
        " | apply s | apply peak RSS MB | tool / edgeota size |"
    )
    print("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, size, plain, ours, base, _ in rows:
        assert ours.size
        for tool, r in [("edgeota", ours), *base.items()]:
            if r.size is None:
                continue
            of_zstd = f"{100 * r.size / plain.size:.1f}%" if plain.size else "n/a"
            print(
                f"| {name.strip()} | {size / 1e6:.2f} | {tool} | {100 * r.size / size:.2f}%"
                f" | {of_zstd} | {r.create_s:.2f} | {size / 1e6 / r.create_s:.1f}"
                f" | {r.apply_s:.2f} | {r.rss_mb:.0f} | {r.size / ours.size:.2f}x |"
            )
        if plain.size:
            print(
                f"| {name.strip()} | {size / 1e6:.2f} | (zstd -19 of new) | "
                f"{100 * plain.size / size:.2f}% | 100% | {plain.create_s:.2f} | "
                f"{size / 1e6 / plain.create_s:.1f} | {plain.apply_s:.2f} | {plain.rss_mb:.0f} | "
                f"{plain.size / ours.size:.2f}x |"
            )
    print("\nedgeota methods per update:")
    for name, _, _, _, _, methods in rows:
        print(f"  {name:22} {methods}")
    worst = min(
        (r.size / ours.size, name, tool)
        for name, _, _, ours, base, _ in rows
        for tool, r in base.items()
        if r.size is not None and ours.size
    )
    print(
        f"\nsmallest baseline/edgeota size ratio: {worst[0]:.2f}x"
        f" ({worst[2]} on {worst[1].strip()})"
    )
    print(
        "% = patch size / new file size; 'tool / edgeota size' > 1 means edgeota's patch is "
        "smaller; apply peak RSS = max resident memory of the applying child process "
        "(getrusage RUSAGE_CHILDREN)."
    )


if __name__ == "__main__":
    main()
