"""A merged LoRA update is detected and carried as factors plus an exact residual."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import edgeota.delta.encode as encode_module
from edgeota.delta import Method, PatchInfo, apply_patch, create_patch
from edgeota.delta.floats import round_from_float64, to_float64
from edgeota.delta.format import FloatKind

DTYPES = {FloatKind.F32: "F32", FloatKind.F16: "F16", FloatKind.BF16: "BF16"}


def save_bits(path: Path, tensors: dict[str, tuple[FloatKind, np.ndarray]]) -> None:
    """Write safetensors from raw bit patterns (numpy has no bf16)."""
    header: dict[str, object] = {}
    blobs, offset = [], 0
    for name, (kind, bits) in tensors.items():
        raw = bits.tobytes()
        header[name] = {
            "dtype": DTYPES[kind],
            "shape": list(bits.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def lora_pair(tmp_path: Path, kind: FloatKind) -> tuple[Path, Path]:
    """W' = cast(float32(W) + B @ A) for two projections, as a LoRA merge computes it."""
    rng = np.random.default_rng(11)
    old_t, new_t = {}, {}
    for name, (rows, cols) in {"q_proj": (192, 256), "v_proj": (256, 192)}.items():
        w = round_from_float64(rng.standard_normal((rows, cols)) * 0.04, kind)
        b = (rng.standard_normal((rows, 8)) * 0.03).astype(np.float32)
        a = (rng.standard_normal((8, cols)) * 0.03).astype(np.float32)
        merged = to_float64(w, kind).astype(np.float32) + b @ a
        old_t[name] = (kind, w)
        new_t[name] = (kind, round_from_float64(merged.astype(np.float64), kind))
    norm = round_from_float64(np.ones(256), kind)
    old_t["norm"] = new_t["norm"] = (kind, norm)
    old, new = tmp_path / "old.st", tmp_path / "new.st"
    save_bits(old, old_t)
    save_bits(new, new_t)
    return old, new


def create_and_check(tmp_path: Path, old: Path, new: Path, name: str) -> PatchInfo:
    patch, out = tmp_path / f"{name}.delta", tmp_path / f"{name}.out"
    info = create_patch(old, new, patch)
    apply_patch(old, patch, out)
    assert out.read_bytes() == new.read_bytes()
    return info


@pytest.mark.parametrize("kind", list(FloatKind))
def test_merged_lora_is_detected_and_far_smaller_than_a_plain_diff(
    tmp_path: Path, kind: FloatKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = lora_pair(tmp_path, kind)
    info = create_and_check(tmp_path, old, new, "lowrank")
    lowrank = [s for s in info.sections if s.method is Method.LOWRANK]
    assert lowrank and lowrank[0].count == 2

    monkeypatch.setattr(encode_module, "encode_lowrank", lambda *a, **k: None)
    plain = create_and_check(tmp_path, old, new, "plain")
    assert not any(s.method is Method.LOWRANK for s in plain.sections)
    assert info.patch_size * 4 < plain.patch_size


def test_lora_merged_by_numpy_safetensors_fp16(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((128, 128)) * 0.05).astype(np.float16)
    b = (rng.standard_normal((128, 4)) * 0.02).astype(np.float32)
    a = (rng.standard_normal((4, 128)) * 0.02).astype(np.float32)
    old, new = tmp_path / "old.safetensors", tmp_path / "new.safetensors"
    save_file({"w": w}, str(old))
    save_file({"w": (w.astype(np.float32) + b @ a).astype(np.float16)}, str(new))
    info = create_and_check(tmp_path, old, new, "st")
    assert any(s.method is Method.LOWRANK for s in info.sections)
    assert info.patch_size < 0.15 * w.nbytes


@pytest.mark.parametrize("case", ["nan", "zeros", "constant"])
def test_degenerate_tensors_round_trip(tmp_path: Path, case: str) -> None:
    rng = np.random.default_rng(9)
    w = (rng.standard_normal((64, 64)) * 0.05).astype(np.float32)
    if case == "nan":
        w[3, 4] = np.nan
        w[5, 6] = np.inf
        new_w = w + (rng.standard_normal((64, 2)) @ rng.standard_normal((2, 64))).astype(np.float32)
    elif case == "zeros":
        w[:] = 0
        new_w = (rng.standard_normal((64, 2)) @ rng.standard_normal((2, 64))).astype(np.float32)
    else:
        w[:] = 1
        new_w = np.full_like(w, 2)
    old, new = tmp_path / "old.st", tmp_path / "new.st"
    save_file({"w": w}, str(old))
    save_file({"w": new_w.astype(np.float32)}, str(new))
    create_and_check(tmp_path, old, new, case)


def test_screen_keeps_low_rank_updates_and_skips_dense_noise() -> None:
    from edgeota.delta.lowrank import worth_fitting

    rng = np.random.default_rng(5)
    old = rng.standard_normal((512, 256)).astype(np.float16)
    lowrank = (
        old.astype(np.float32)
        + (rng.standard_normal((512, 4)) @ rng.standard_normal((4, 256))).astype(np.float32) * 0.01
    ).astype(np.float16)
    noise = old.astype(np.float32) + rng.standard_normal((512, 256)).astype(np.float32) * 0.01
    old_bits = old.view("<u2")
    assert worth_fitting(old_bits, lowrank.view("<u2"), FloatKind.F16)
    assert not worth_fitting(old_bits, noise.astype(np.float16).view("<u2"), FloatKind.F16)
    assert not worth_fitting(old_bits, old_bits, FloatKind.F16)  # no change at all


def test_dense_update_round_trips_without_a_low_rank_op(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    w = rng.standard_normal((256, 128)).astype(np.float32)
    step = rng.standard_normal((256, 128)).astype(np.float32) * 1e-3
    old, new = tmp_path / "old.safetensors", tmp_path / "new.safetensors"
    save_file({"w": w}, str(old))
    save_file({"w": w + step}, str(new))
    info = create_patch(old, new, tmp_path / "p")
    assert Method.LOWRANK not in {s.method for s in info.sections}
    apply_patch(old, tmp_path / "p", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == new.read_bytes()


def test_large_tensors_use_a_faster_level_and_threads() -> None:
    level, threads = encode_module.frame_settings(19, encode_module.LARGE_TENSOR)
    assert level == encode_module.LARGE_TENSOR_LEVEL
    assert threads in (0, min(4, os.cpu_count() or 1))
    assert encode_module.frame_settings(19, encode_module.LARGE_TENSOR - 1) == (19, 0)
