"""Fuzzing the patch parser (row 22): random and mutated patches fail cleanly and quickly.

Apply may only ever raise an edgeota error (or succeed with exactly NEW); it must not crash,
hang or allocate what a forged length asks for. Mutations are tried both as they are (the
checksum stops them) and resealed with a fresh checksum, which is what reaches the op parser.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeota.delta import apply_patch, create_patch
from edgeota.delta.detect import detect
from edgeota.delta.format import (
    DIGEST_SIZE,
    Codec,
    Container,
    FloatKind,
    PatchHeader,
    pack_summary,
)
from edgeota.delta.ops import (
    CopyOp,
    InlineOp,
    LiteralOp,
    LowRankOp,
    Op,
    OpValidator,
    TensorOp,
    pack_op,
)
from edgeota.delta.reader import iter_ops
from edgeota.errors import EdgeotaError, FormatError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_SECONDS = 5.0


def _safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        raw = arr.tobytes()
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}[arr.dtype]
        header[name] = {
            "dtype": dtype,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, bytes, bytes]]:
    """(old file, new bytes, patch bytes) for patches using every op kind."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    out = []
    # Generic: copies, inline and literal ops.
    g_old = rng.integers(0, 256, 60_000, dtype=np.uint8).tobytes()
    g_new = g_old[:5000] + b"edit" * 300 + g_old[9000:]
    # Tensor ops, including a low-rank one.
    w = (rng.standard_normal((64, 96)) * 0.05).astype(np.float16)
    lora = (
        w.astype(np.float32)
        + (rng.standard_normal((64, 4)) * 0.02).astype(np.float32)
        @ (rng.standard_normal((4, 96)) * 0.02).astype(np.float32)
    ).astype(np.float16)
    v = rng.standard_normal((32, 32)).astype(np.float32)
    old_t = {"w": w, "v": v, "gone": v[:4]}
    new_t = {"w": lora, "v": (v * 1.001).astype(np.float32), "added": v[:2] * 2}
    for name, (old_b, new_b) in {
        "generic": (g_old, g_new),
        "tensors": (None, None),
    }.items():
        old_p, new_p = d / f"{name}.old", d / f"{name}.new"
        if old_b is None:
            _safetensors(old_p, old_t)
            _safetensors(new_p, new_t)
        else:
            old_p.write_bytes(old_b)
            new_p.write_bytes(new_b)
        patch = d / f"{name}.delta"
        create_patch(old_p, new_p, patch)
        out.append((old_p, new_p.read_bytes(), patch.read_bytes()))
    return out


def _apply_bytes(old: Path, patch_bytes: bytes, work: Path) -> bytes | None:
    """Apply ``patch_bytes``; the output, or None after a clean edgeota error."""
    patch, out = work / "fuzz.delta", work / "fuzz.out"
    patch.write_bytes(patch_bytes)
    out.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        apply_patch(old, patch, out)
    except EdgeotaError:
        assert not out.exists()
        return None
    finally:
        assert time.monotonic() - started < MAX_SECONDS
        leftovers = [p.name for p in work.iterdir() if p.name.startswith(".fuzz.out")]
        assert not leftovers
    return out.read_bytes()


def _reseal(data: bytes) -> bytes:
    body = data[:-DIGEST_SIZE] if len(data) >= DIGEST_SIZE else data
    return body + hashlib.sha256(body).digest()


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_are_refused(tmp_path: Path, data: bytes) -> None:
    old = tmp_path / "old"
    old.write_bytes(b"base")
    assert _apply_bytes(old, data, tmp_path) is None
    assert _apply_bytes(old, _reseal(data), tmp_path) is None


@FUZZ
@given(
    which=st.integers(0, 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    reseal=st.booleans(),
)
def test_mutated_patches_fail_cleanly(
    tmp_path: Path,
    corpus: list[tuple[Path, bytes, bytes]],
    which: int,
    edits: list[tuple[int, int]],
    cut: int | None,
    reseal: bool,
) -> None:
    old, new, patch = corpus[which]
    data = bytearray(patch)
    for pos, flip in edits:
        data[pos % len(data)] ^= flip
    if cut is not None:
        del data[cut % len(data) :]
    mutated = _reseal(bytes(data)) if reseal else bytes(data)
    result = _apply_bytes(old, mutated, tmp_path)
    assert result is None or result == new


def _forged_patch(old: bytes, new_size: int, control: bytes, data: bytes) -> bytes:
    """A patch with a valid checksum around an arbitrary (compressed) op stream."""
    frame = zstandard.ZstdCompressor(level=1).compress(control)
    summary = pack_summary([])
    header = PatchHeader(
        Container.GENERIC,
        len(old),
        hashlib.sha256(old).digest(),
        new_size,
        b"\x00" * 32,
        0,
        len(summary),
        len(frame),
        len(data),
    )
    body = header.pack() + frame + data + summary
    return body + hashlib.sha256(body).digest()


@FUZZ
@given(
    ops=st.binary(max_size=200),
    data=st.binary(max_size=200),
    new_size=st.sampled_from([0, 1, 100, 10**6, 2**40, 2**63]),
)
def test_forged_op_streams_fail_cleanly(
    tmp_path: Path, ops: bytes, data: bytes, new_size: int
) -> None:
    old = tmp_path / "old"
    old.write_bytes(b"0123456789" * 10)
    forged = _forged_patch(old.read_bytes(), new_size, ops, data)
    assert _apply_bytes(old, forged, tmp_path) is None


@FUZZ
@given(st.binary(max_size=300))
def test_op_parser_only_raises_format_errors(control: bytes) -> None:
    validator = OpValidator(old_size=1000, new_size=1000, data_length=1000)
    with pytest.raises(FormatError):
        for _ in iter_ops(io.BytesIO(control), validator):
            pass


@FUZZ
@given(
    which=st.integers(0, 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=3),
)
def test_container_parsers_survive_damaged_models(
    tmp_path: Path,
    corpus: list[tuple[Path, bytes, bytes]],
    which: int,
    edits: list[tuple[int, int]],
) -> None:
    # create_patch reads untrusted model files too: a damaged one must still round trip.
    old, new, _ = corpus[which]
    damaged = bytearray(new)
    for pos, flip in edits:
        damaged[pos % min(len(damaged), 400)] ^= flip  # mostly the header
    detect(memoryview(bytes(damaged)))
    new_path, patch, out = tmp_path / "new", tmp_path / "p.delta", tmp_path / "out"
    new_path.write_bytes(bytes(damaged))
    create_patch(old, new_path, patch)
    apply_patch(old, patch, out)
    assert out.read_bytes() == bytes(damaged)


@FUZZ
@given(st.binary(max_size=400))
def test_detect_never_raises(data: bytes) -> None:
    detect(memoryview(data))
    detect(memoryview(b"GGUF\x03\x00\x00\x00" + data))
    detect(memoryview(struct.pack("<Q", len(data)) + data))


_U64 = st.one_of(st.integers(0, 300), st.sampled_from([2**31, 2**32 - 1, 2**63, 2**64 - 1]))
_U32 = st.one_of(st.integers(0, 300), st.sampled_from([2**20, 2**31, 2**32 - 1]))
_OPS = st.one_of(
    st.builds(CopyOp, _U64, _U64),
    st.builds(InlineOp, st.binary(max_size=20)),
    st.builds(LiteralOp, _U64, _U32, _U64, _U64),
    st.builds(
        TensorOp,
        st.sampled_from(list(Codec)),
        st.sampled_from([1, 2, 4, 8]),
        st.sampled_from([1, 2, 4, 8, 34]),
        st.sampled_from([34, 64, 1 << 20]),
        _U64,
        _U64,
        _U64,
        _U64,
    ),
    st.builds(
        LowRankOp,
        st.sampled_from(list(FloatKind)),
        st.integers(1, 70),
        st.integers(1, 70),
        st.integers(1, 9),
        st.integers(1, 24),
        st.integers(1, 70),
        _U64,
        _U64,
    ),
)


@FUZZ
@given(
    ops=st.lists(_OPS, max_size=4),
    payloads=st.lists(st.binary(max_size=64), max_size=4),
    compress=st.booleans(),
    new_size=st.sampled_from([0, 16, 100, 4096, 2**40]),
)
def test_forged_structured_ops_fail_cleanly(
    tmp_path: Path, ops: list[Op], payloads: list[bytes], compress: bool, new_size: int
) -> None:
    old = tmp_path / "old"
    old.write_bytes(bytes(range(256)) * 20)
    if compress:  # payloads that are real zstd frames get past the decompressor
        payloads = [zstandard.ZstdCompressor(level=1).compress(p) for p in payloads]
    data = b"".join(payloads)
    control = b"".join(pack_op(op) for op in ops) + b"\x00"
    forged = _forged_patch(old.read_bytes(), new_size, control, data)
    assert _apply_bytes(old, forged, tmp_path) is None
