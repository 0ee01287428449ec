"""Apply works in bounded memory: a fixed buffer (plus one tensor block), not the file size."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np

from edgeota.delta import apply_patch, create_patch

SIZE = 64 << 20


def test_apply_of_a_64_mb_file_stays_far_below_its_size(tmp_path: Path) -> None:
    old_bytes = np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    new_bytes = (
        old_bytes[:10_000_000]
        + os.urandom(100_000)
        + old_bytes[10_000_000:40_000_000]
        + old_bytes[41_000_000:]
    )
    old, new, patch, out = (tmp_path / n for n in ("old", "new", "p.delta", "out"))
    old.write_bytes(old_bytes)
    new.write_bytes(new_bytes)
    del old_bytes
    create_patch(old, new, patch)
    tracemalloc.start()
    try:
        apply_patch(old, patch, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.read_bytes() == new_bytes
    assert peak < 16 << 20, f"apply peaked at {peak / 2**20:.1f} MiB of Python memory"


def test_apply_of_a_tensor_file_is_bounded_by_a_block(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    weights = {f"w{i}": rng.standard_normal((1024, 1024)).astype(np.float32) for i in range(4)}
    tuned = {
        k: (v * (1 + 1e-3 * rng.standard_normal(v.shape))).astype(v.dtype)
        for k, v in weights.items()
    }
    old, new, patch, out = (tmp_path / n for n in ("old", "new", "p.delta", "out"))
    save_file(weights, str(old))
    save_file(tuned, str(new))
    create_patch(old, new, patch, level=1)
    tracemalloc.start()
    try:
        apply_patch(old, patch, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.read_bytes() == new.read_bytes()
    # 16 MiB of tensors, each 4 MiB: apply holds a few 1 MiB blocks at a time.
    assert peak < 12 << 20, f"apply peaked at {peak / 2**20:.1f} MiB of Python memory"
