#!/usr/bin/env python3
"""Model variants: size, estimated vs measured memory, latency and quality, per variant.

Two models, both built here (nothing is downloaded):

- the example model: the digits denoiser (an sklearn MLP exported to ONNX, 64 KiB), probed
  with 16 held-out noisy digits; quality is PSNR (dB) against the original's outputs;
- a transformer-style text encoder written with onnx.helper: a 4096 x 512 token embedding
  and 4 blocks of single-head attention (Q, K, V, O 512 x 512) and a 512 -> 2048 -> 512 MLP,
  mean-pooled to a 512-d embedding (14.7 M parameters, 56 MiB in fp32); probed with 8
  seeded sequences of 32 tokens; quality is cosine similarity to the original's embeddings.

Each variant is built by ``edgeota model build``'s code and loaded and run in a fresh
process, as the device runtime does (one thread). Baselines, measured in the same run: the
fp16 variant for size (the ratios commonly quoted are int8 about 2x smaller than fp16 and
int4 about 4x), and the fp32 variant for memory and latency.

Run: .venv/bin/python bench/variants.py [--out DIR] [--repeat 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeota.modelops.bundle import BuildOptions, build_bundle
from edgeota.modelops.digits import build_example_releases
from edgeota.modelops.manifest import Manifest, VariantRecord
from edgeota.modelops.report import human_bytes

QUOTED = {"int8": 2.0, "int4": 4.0}  # size reduction vs fp16 commonly quoted


def encoder_onnx(
    path: Path, d: int = 512, ff: int = 2048, layers: int = 4, vocab: int = 4096, seq: int = 32
) -> Path:
    """A small transformer-style encoder: tokens int64 [N, seq] -> embedding float [N, d]."""
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, shape: tuple[int, ...], scale: float) -> str:
        values = (rng.standard_normal(shape) * scale).astype(np.float32)
        inits.append(numpy_helper.from_array(values, name))
        return name

    weight("embed", (vocab, d), 1.0)
    nodes.append(helper.make_node("Gather", ["embed", "tokens"], ["h0"], axis=0))
    h = "h0"
    for i in range(layers):
        p = f"l{i}_"
        for n in "qkvo":
            weight(p + n, (d, d), d**-0.5)
        weight(p + "up", (d, ff), d**-0.5)
        weight(p + "down", (ff, d), ff**-0.5)
        inits.append(numpy_helper.from_array(np.array(d**-0.5, np.float32), p + "scale"))
        nodes += [
            *(helper.make_node("MatMul", [h, p + n], [p + n + "_out"]) for n in "qkv"),
            helper.make_node("Transpose", [p + "k_out"], [p + "kT"], perm=[0, 2, 1]),
            helper.make_node("MatMul", [p + "q_out", p + "kT"], [p + "scores"]),
            helper.make_node("Mul", [p + "scores", p + "scale"], [p + "scaled"]),
            helper.make_node("Softmax", [p + "scaled"], [p + "attn"], axis=-1),
            helper.make_node("MatMul", [p + "attn", p + "v_out"], [p + "ctx"]),
            helper.make_node("MatMul", [p + "ctx", p + "o"], [p + "att_out"]),
            helper.make_node("Add", [h, p + "att_out"], [p + "res1"]),
            helper.make_node("MatMul", [p + "res1", p + "up"], [p + "up_out"]),
            helper.make_node("Relu", [p + "up_out"], [p + "act"]),
            helper.make_node("MatMul", [p + "act", p + "down"], [p + "down_out"]),
            helper.make_node("Add", [p + "res1", p + "down_out"], [p + "out"]),
        ]
        h = p + "out"
    nodes.append(helper.make_node("ReduceMean", [h], ["embedding"], axes=[1], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "text_encoder",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", seq])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", d])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def quality_text(v: dict[str, float | str]) -> str:
    if v["metric"] == "cosine":
        return f"cos {float(v['score']):.5f}"
    return f"PSNR {float(v['score']):.1f} dB"


def peak_mb(v: VariantRecord) -> float:
    return float((v.measured or {})["peak_rss_mb"])


def median_ms(v: VariantRecord) -> float:
    return float((v.measured or {})["median_ms"])


def table(title: str, manifest: Manifest) -> None:
    fp16 = manifest.variant("fp16")
    fp32 = manifest.variant("fp32")
    print(f"\n{title}  (source {human_bytes(manifest.source['bytes'])})")
    header = (
        f"{'variant':<8}{'size':>11}{'vs fp16':>9}{'weights':>10}{'est MiB':>9}"
        f"{'peak MiB':>10}{'est/peak':>10}{'ms (med)':>10}{'vs fp32':>9}  quality"
    )
    print(header)
    print("-" * len(header))
    for v in manifest.variants:
        peak, median, base_ms = peak_mb(v), median_ms(v), median_ms(fp32)
        print(
            f"{v.name:<8}{human_bytes(v.bytes):>11}{fp16.bytes / v.bytes:>8.2f}x"
            f"{v.memory['weights_mb']:>9.1f}M{v.estimate_mb:>9.1f}{peak:>10.1f}"
            f"{v.estimate_mb / peak:>10.2f}{median:>10.2f}{base_ms / median:>8.2f}x  "
            f"{quality_text(v.quality)}"
        )
    for name, quoted in QUOTED.items():
        v = manifest.variant(name)
        print(
            f"{name} vs fp16: {fp16.bytes / v.bytes:.2f}x smaller on disk (commonly quoted: "
            f"about {quoted:g}x); peak RSS {peak_mb(fp16) / peak_mb(v):.2f}x lower"
        )
    errors = {v.name: v.estimate_mb / peak_mb(v) - 1 for v in manifest.variants}
    worst = max(errors, key=lambda name: abs(errors[name]))
    print(f"largest estimate error: {worst} {100 * errors[worst]:+.1f}% (target: within 25%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="keep the bundles here (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=20, help="probe runs per variant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeota-bench-variants-") as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        examples = build_example_releases(work / "examples")
        digits = build_bundle(
            examples.v2.path / "model.onnx",
            work / "digits-bundle",
            BuildOptions(probe=examples.v2.path / "probe.npz", force=True, repeat=args.repeat),
        )
        table("digits denoiser (example model, sklearn MLP -> ONNX)", digits)
        encoder = build_bundle(
            encoder_onnx(work / "encoder.onnx"),
            work / "encoder-bundle",
            BuildOptions(force=True, repeat=args.repeat),
        )
        table("text encoder (4 attention + MLP blocks, d=512, vocab 4096)", encoder)
        print(
            "\nweights: as the runtime holds them (fp16 on the CPU provider: plus an fp32 copy); "
            "est: weights + runtime base + activations; peak: measured peak RSS of a fresh "
            "process loading the variant and running the probe set"
        )


if __name__ == "__main__":
    main()
