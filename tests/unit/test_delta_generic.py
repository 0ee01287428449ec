"""Deltas of arbitrary files: edits, insertions, deletions, raw weight blobs, empty files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgeota.delta import Method, PatchInfo, apply_patch, create_patch, read_patch_info


def round_trip(tmp_path: Path, old_bytes: bytes, new_bytes: bytes) -> PatchInfo:
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(old_bytes)
    new.write_bytes(new_bytes)
    patch, out = tmp_path / "p.delta", tmp_path / "out"
    info = create_patch(old, new, patch)
    apply_patch(old, patch, out)
    assert out.read_bytes() == new_bytes
    assert read_patch_info(patch) == info
    return info


def test_edits_insertions_and_deletions_cost_about_what_changed(tmp_path: Path) -> None:
    old = os.urandom(2_000_000)
    new = (
        old[:100_000]
        + b"inserted bytes"
        + old[100_000:700_000]
        + old[750_000:1_500_000]  # 50 kB deleted
        + b"X" * 300  # overwritten
        + old[1_500_300:]
    )
    info = round_trip(tmp_path, old, new)
    assert info.container == "generic"
    assert info.patch_size < 3_000


def test_a_changed_byte_in_every_chunk_stays_small(tmp_path: Path) -> None:
    old = bytearray(os.urandom(500_000))
    new = bytearray(old)
    for i in range(0, len(new), 4096):
        new[i] ^= 0xFF
    info = round_trip(tmp_path, bytes(old), bytes(new))
    assert info.patch_size < 0.1 * len(new)


def test_unrelated_files(tmp_path: Path) -> None:
    info = round_trip(tmp_path, os.urandom(300_000), os.urandom(200_000))
    assert info.patch_size < 200_000 * 1.01 + 500


def test_raw_weight_blob_uses_a_tensor_codec(tmp_path: Path) -> None:
    # An ONNX external-data file: raw fp32 weights, no header to recognise.
    rng = np.random.default_rng(0)
    w = (rng.standard_normal(300_000) * 0.05).astype(np.float32)
    tuned = (w * (1 + 1e-3 * rng.standard_normal(w.size))).astype(np.float32)
    info = round_trip(tmp_path, w.tobytes(), tuned.tobytes())
    assert {s.method for s in info.sections} & {Method.TENSOR_SUB, Method.TENSOR_XOR}
    assert info.patch_size < 0.75 * len(tuned.tobytes())


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"", b""), (b"", b"fresh content" * 100), (b"old content" * 100, b""), (b"a", b"b")],
)
def test_empty_and_tiny_files(tmp_path: Path, old: bytes, new: bytes) -> None:
    info = round_trip(tmp_path, old, new)
    assert info.new_size == len(new)
    assert info.old_size == len(old)


def test_text_file_with_small_edits(tmp_path: Path) -> None:
    lines = [f"line {i}: setting_{i % 17} = {i * 7 % 101}\n" for i in range(20_000)]
    old = "".join(lines).encode()
    lines[500] = "line 500: changed\n"
    lines.insert(12_000, "a new line\n")
    new = "".join(lines).encode()
    info = round_trip(tmp_path, old, new)
    assert info.patch_size < 1_000
