"""GGUF deltas: F32/F16 and Q8_0 tensors, metadata changes, container recognised by content."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from edgeota.delta import Method, PatchInfo, apply_patch, create_patch
from edgeota.delta.container_gguf import parse


def write_gguf(
    path: Path, tensors: dict[str, np.ndarray], *, quant: bool = False, vocab: int = 300
) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(vocab)])
    for name, arr in tensors.items():
        if quant and arr.ndim == 2 and arr.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(arr.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def round_trip(tmp_path: Path, old: Path, new: Path) -> PatchInfo:
    patch, out = tmp_path / "p.delta", tmp_path / "out.bin"
    info = create_patch(old, new, patch)
    apply_patch(old, patch, out)
    assert out.read_bytes() == new.read_bytes()
    assert info.container == "gguf"
    return info


def model(rng: np.random.Generator, scale: float = 0.0) -> dict[str, np.ndarray]:
    base = np.random.default_rng(0)
    w = {
        "blk.0.attn_q.weight": base.standard_normal((64, 128)),
        "blk.0.ffn_up.weight": base.standard_normal((96, 64)),
        "output_norm.weight": np.ones(64),
    }
    return {k: v * (1 + scale * rng.standard_normal(v.shape)) for k, v in w.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float_gguf_fine_tune_round_trip(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(1)
    old, new = tmp_path / "old.gguf", tmp_path / "new.gguf"
    write_gguf(old, {k: v.astype(dtype) for k, v in model(rng).items()})
    write_gguf(new, {k: v.astype(dtype) for k, v in model(rng, 1e-3).items()})
    info = round_trip(tmp_path, old, new)
    assert info.patch_size < 0.7 * info.new_size


def test_q8_0_fine_tune_round_trip_uses_block_codec(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    old, new = tmp_path / "old.gguf", tmp_path / "new.gguf"
    write_gguf(old, {k: v.astype(np.float32) for k, v in model(rng).items()}, quant=True)
    write_gguf(new, {k: v.astype(np.float32) for k, v in model(rng, 1e-3).items()}, quant=True)
    layout = parse(memoryview(new.read_bytes()))
    assert layout is not None
    strides = {t.name: t.layout.stride for t in layout.tensors}
    assert strides["blk.0.attn_q.weight"] == 34  # Q8_0 block: fp16 scale + 32 int8
    info = round_trip(tmp_path, old, new)
    assert info.patch_size < 0.5 * info.new_size


def test_metadata_change_and_added_tensor(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    tensors = {k: v.astype(np.float16) for k, v in model(rng).items()}
    old, new = tmp_path / "old.gguf", tmp_path / "new.gguf"
    write_gguf(old, tensors, vocab=300)
    write_gguf(new, {**tensors, "extra.bias": np.zeros(64, np.float32)}, vocab=305)
    info = round_trip(tmp_path, old, new)
    used = {s.method for s in info.sections}
    assert Method.COPY in used
    # The tensor data is unchanged; only the header (vocab +5, one more tensor info) moved.
    assert info.patch_size < 1500


def test_extension_does_not_matter(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    old, new = tmp_path / "old.bin", tmp_path / "new.dat"
    write_gguf(old, {k: v.astype(np.float16) for k, v in model(rng).items()})
    write_gguf(new, {k: v.astype(np.float16) for k, v in model(rng, 1e-3).items()})
    round_trip(tmp_path, old, new)
