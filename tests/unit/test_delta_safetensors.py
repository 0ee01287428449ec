"""safetensors deltas: byte-identical round trips for every kind of tensor change."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from edgeota.delta import Method, PatchInfo, apply_patch, create_patch

Tensors = dict[str, tuple[str, np.ndarray]]  # name -> (safetensors dtype, raw array)


def write_safetensors(path: Path, tensors: Tensors, metadata: dict[str, str] | None = None) -> None:
    """A minimal writer, so bf16 (which numpy lacks) can be written as raw uint16 bits."""
    header: dict[str, object] = {"__metadata__": metadata or {}}
    blobs = []
    offset = 0
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        shape = list(arr.shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def bf16(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def round_trip(tmp_path: Path, old: Path, new: Path) -> PatchInfo:
    patch, out = tmp_path / "p.delta", tmp_path / "out.bin"
    info = create_patch(old, new, patch)
    apply_patch(old, patch, out)
    assert out.read_bytes() == new.read_bytes()
    assert info.container == "safetensors"
    assert info.patch_size == patch.stat().st_size
    return info


def methods(info: PatchInfo) -> dict[Method, int]:
    return {s.method: s.count for s in info.sections}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_fine_tuned_tensors_round_trip_and_beat_the_raw_size(
    tmp_path: Path, rng: np.random.Generator, dtype: str
) -> None:
    def cast(x: np.ndarray) -> np.ndarray:
        if dtype == "BF16":
            return bf16(x)
        return x.astype(np.float32 if dtype == "F32" else np.float16)

    base = {f"h{i}.weight": rng.standard_normal((64, 96)) * 0.05 for i in range(3)}
    tuned = {k: v * (1 + 1e-3 * rng.standard_normal(v.shape)) for k, v in base.items()}
    old, new = tmp_path / "old.safetensors", tmp_path / "new.safetensors"
    write_safetensors(old, {k: (dtype, cast(v)) for k, v in base.items()})
    write_safetensors(new, {k: (dtype, cast(v)) for k, v in tuned.items()})
    info = round_trip(tmp_path, old, new)
    assert info.patch_size < 0.75 * info.new_size


def test_unchanged_renamed_reshaped_added_and_removed_tensors(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    a = rng.standard_normal((32, 48)).astype(np.float32)
    b = rng.standard_normal((16, 16)).astype(np.float16)
    c = rng.standard_normal((40,)).astype(np.float32)
    gone = rng.standard_normal((20, 20)).astype(np.float32)
    old, new = tmp_path / "old.st", tmp_path / "new.st"
    write_safetensors(
        old, {"a": ("F32", a), "b": ("F16", b), "c": ("F32", c), "gone": ("F32", gone)}
    )
    write_safetensors(
        new,
        {
            "c": ("F32", c),  # unchanged, moved first
            "renamed_a": ("F32", a),  # renamed
            "b": ("F16", b.reshape(8, 32)),  # reshaped, same bytes
            "added": ("F32", rng.standard_normal((10, 10)).astype(np.float32)),
        },
        metadata={"format": "pt", "version": "2"},
    )
    info = round_trip(tmp_path, old, new)
    used = methods(info)
    assert used[Method.COPY] >= 1
    copied = sum(s.new_bytes for s in info.sections if s.method is Method.COPY)
    assert copied == a.nbytes + b.nbytes + c.nbytes
    # Only the added tensor costs a payload of its own size.
    assert info.patch_size < 400 + 10 * 10 * 4 + 200


def test_reshaped_and_changed_tensor_is_diffed_against_its_namesake(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    w = rng.standard_normal((64, 64)).astype(np.float32)
    grown = np.concatenate([w, rng.standard_normal((8, 64)).astype(np.float32)])  # vocab +8
    old, new = tmp_path / "old.st", tmp_path / "new.st"
    write_safetensors(old, {"embed": ("F32", w)})
    write_safetensors(new, {"embed": ("F32", grown)})
    info = round_trip(tmp_path, old, new)
    # The first 64 rows are identical to the old tensor: they cost (almost) nothing.
    assert info.patch_size < 8 * 64 * 4 + 600


def test_renamed_and_changed_tensor_finds_its_old_self(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    w = (rng.standard_normal((128, 64)) * 0.1).astype(np.float16)
    other = (rng.standard_normal((128, 64)) * 0.1).astype(np.float16)
    moved = (w.astype(np.float32) * (1 + 1e-3 * rng.standard_normal(w.shape))).astype(np.float16)
    old, new = tmp_path / "old.st", tmp_path / "new.st"
    write_safetensors(old, {"layer.0.w": ("F16", other), "layer.1.w": ("F16", w)})
    write_safetensors(new, {"layer.0.w": ("F16", other), "blocks.1.w": ("F16", moved)})
    info = round_trip(tmp_path, old, new)
    assert methods(info).get(Method.TENSOR_RAW, 0) == 0
    assert info.patch_size < 0.5 * w.nbytes


def test_dtype_change_is_encoded_without_a_reference(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    w = rng.standard_normal((32, 32)).astype(np.float32)
    old, new = tmp_path / "old.st", tmp_path / "new.st"
    write_safetensors(old, {"w": ("F32", w)})
    write_safetensors(new, {"w": ("F16", w.astype(np.float16))})
    info = round_trip(tmp_path, old, new)
    assert methods(info).get(Method.TENSOR_RAW) == 1


def test_identical_files_cost_one_copy(tmp_path: Path, rng: np.random.Generator) -> None:
    old = tmp_path / "old.st"
    write_safetensors(old, {"w": ("F32", rng.standard_normal((16, 16)).astype(np.float32))})
    new = tmp_path / "new.st"
    new.write_bytes(old.read_bytes())
    info = round_trip(tmp_path, old, new)
    assert methods(info) == {Method.COPY: 1}
