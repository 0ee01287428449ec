"""Pure pieces of the delta format: block codecs, float rounding, low-rank math, op records, CDC."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeota.delta import cdc
from edgeota.delta.codecs import (
    decode_block,
    encode_block,
    shuffle,
    unshuffle,
    unzigzag,
    zigzag,
)
from edgeota.delta.floats import round_from_float64, to_float64
from edgeota.delta.format import (
    MAGIC,
    Codec,
    Container,
    FloatKind,
    PatchHeader,
    unpack_header,
)
from edgeota.delta.lowrank import (
    LowRankFactors,
    fit_lowrank,
    pack_factors,
    reconstruct,
    unpack_factors,
)
from edgeota.delta.ops import (
    CopyOp,
    LiteralOp,
    LowRankOp,
    OpCode,
    OpValidator,
    TensorOp,
    pack_op,
    unpack_op_body,
)
from edgeota.errors import FormatError

FAST = settings(max_examples=60, deadline=None, database=None)


@FAST
@given(st.binary(max_size=300), st.sampled_from([1, 2, 4, 8, 34]))
def test_shuffle_round_trip(data: bytes, stride: int) -> None:
    data = data[: len(data) - len(data) % stride]
    arr = np.frombuffer(data, dtype=np.uint8)
    assert unshuffle(shuffle(arr, stride), stride).tobytes() == data


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_zigzag_maps_small_moves_to_small_numbers(dtype: type) -> None:
    d = np.array([0, 1, 2], dtype=dtype)
    neg = (np.zeros(3, dtype=dtype) - np.array([1, 2, 3], dtype=dtype)).astype(dtype)
    assert zigzag(d).tolist() == [0, 2, 4]
    assert zigzag(neg).tolist() == [1, 3, 5]
    assert unzigzag(zigzag(neg)).tolist() == neg.tolist()


@FAST
@given(
    st.binary(min_size=0, max_size=200),
    st.binary(min_size=0, max_size=200),
    st.sampled_from([Codec.RAW, Codec.XOR, Codec.SUB]),
    st.sampled_from([(1, 1), (2, 2), (4, 4), (8, 8), (1, 18), (2, 6)]),
)
def test_block_codec_round_trip(
    new: bytes, old: bytes, codec: Codec, layout: tuple[int, int]
) -> None:
    elem, stride = layout
    k = 0 if codec is Codec.RAW else min(len(new), len(old)) // stride * stride
    n = np.frombuffer(new, dtype=np.uint8)
    o = np.frombuffer(old[:k], dtype=np.uint8)
    enc = encode_block(n, o, codec, elem, stride)
    assert enc.size == n.size
    assert decode_block(enc, o, codec, elem, stride).tobytes() == new


def test_sub_codec_turns_small_weight_moves_into_zero_high_planes() -> None:
    rng = np.random.default_rng(0)
    old = rng.standard_normal(4096).astype(np.float32)
    new = (old * (1 + 1e-4 * rng.standard_normal(4096))).astype(np.float32)
    enc = encode_block(new.view(np.uint8), old.view(np.uint8), Codec.SUB, 4, 4)
    top_plane = enc[3 * 4096 :]
    assert np.count_nonzero(top_plane) == 0


def test_bf16_rounding_is_round_to_nearest_even() -> None:
    # 1 + 2**-8 lies exactly between two bf16 values: ties go to the even one (1.0).
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5, 3e38, np.inf, np.nan])
    bits = round_from_float64(x, FloatKind.BF16)
    assert bits[:4].tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC020]
    assert bits[5] == 0 and bits[6] == 0  # non-finite results are replaced by zero bits
    assert to_float64(bits[:4], FloatKind.BF16).tolist() == [1.0, 1.0, 1.0 + 2**-6, -2.5]


@pytest.mark.parametrize("kind", list(FloatKind))
def test_low_rank_fit_rebuilds_a_merged_update(kind: FloatKind) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((96, 128)) * 0.05
    b = rng.standard_normal((96, 4)) * 0.02
    a = rng.standard_normal((4, 128)) * 0.02
    old = round_from_float64(w, kind)
    new = round_from_float64(to_float64(old, kind) + b @ a, kind)
    f = fit_lowrank(old, new, kind)
    assert f is not None
    assert f.rank == 4
    guess = reconstruct(old, f.bq.astype(float), f.aq.astype(float), f.row_exp, f.col_exp, kind)
    assert np.mean(guess == new) > 0.9


def test_low_rank_fit_declines_an_unrelated_change() -> None:
    rng = np.random.default_rng(2)
    old = round_from_float64(rng.standard_normal((64, 64)), FloatKind.F16)
    new = round_from_float64(rng.standard_normal((64, 64)), FloatKind.F16)
    assert fit_lowrank(old, new, FloatKind.F16) is None


def test_reconstruct_is_the_same_row_block_by_row_block() -> None:
    rng = np.random.default_rng(3)
    old = round_from_float64(rng.standard_normal((40, 24)), FloatKind.F32)
    bq = rng.integers(-(2**20), 2**20, (40, 3)).astype(np.float64)
    aq = rng.integers(-(2**20), 2**20, (3, 24)).astype(np.float64)
    re = rng.integers(-60, -40, 40).astype(np.int16)
    ce = rng.integers(-5, 5, 24).astype(np.int16)
    whole = reconstruct(old, bq, aq, re, ce, FloatKind.F32)
    parts = np.concatenate(
        [
            reconstruct(old[i : i + 7], bq[i : i + 7], aq, re[i : i + 7], ce, FloatKind.F32)
            for i in range(0, 40, 7)
        ]
    )
    assert np.array_equal(whole, parts)


def test_factor_values_outside_their_declared_bits_are_refused() -> None:
    f = LowRankFactors(
        np.full((4, 2), 1 << 12, dtype=np.int32),
        np.ones((2, 5), dtype=np.int32),
        np.zeros(4, dtype=np.int16),
        np.zeros(5, dtype=np.int16),
        qbits=12,
    )
    raw = pack_factors(f)
    with pytest.raises(FormatError, match="12-bit"):
        unpack_factors(raw, 4, 5, 2, 12)
    assert unpack_factors(raw, 4, 5, 2, 14).bq.max() == 1 << 12


def test_op_records_round_trip() -> None:
    ops = [
        CopyOp(10, 20),
        LiteralOp(5, 100, 1000, 77),
        TensorOp(Codec.SUB, 2, 2, 1 << 20, 0, 64, 64, 12),
        LowRankOp(FloatKind.BF16, 32, 48, 4, 12, 16, 0, 99),
    ]
    for op in ops:
        raw = pack_op(op)
        assert unpack_op_body(OpCode(raw[0]), raw[1:]) == op


@pytest.mark.parametrize(
    "op",
    [
        TensorOp(Codec.SUB, 3, 3, 3 << 10, 0, 0, 10, 1),  # elem 3
        TensorOp(Codec.SUB, 4, 6, 6 << 10, 0, 0, 10, 1),  # stride not a multiple of elem
        TensorOp(Codec.RAW, 1, 1, 1 << 30, 0, 0, 10, 1),  # block too large
        TensorOp(Codec.RAW, 1, 1, 1024, 0, 5, 10, 1),  # raw op naming a reference
        LowRankOp(FloatKind.F32, 1 << 20, 1 << 20, 64, 20, 1, 0, 1),  # factors too big
        LowRankOp(FloatKind.F32, 64, 64, 1000, 26, 1, 0, 1),  # product not exact in float64
        LowRankOp(FloatKind.F32, 64, 1 << 24, 1, 8, 1, 0, 1),  # row block too big
    ],
)
def test_op_records_outside_the_limits_are_refused(op: TensorOp | LowRankOp) -> None:
    raw = pack_op(op)
    with pytest.raises(FormatError):
        unpack_op_body(OpCode(raw[0]), raw[1:])


def test_validator_refuses_reads_past_old_and_writes_past_new() -> None:
    v = OpValidator(old_size=100, new_size=50, data_length=0)
    with pytest.raises(FormatError, match="past the old size"):
        v.check(CopyOp(90, 20))
    with pytest.raises(FormatError, match="past the declared new size"):
        v.check(CopyOp(0, 60))
    v.check(CopyOp(0, 40))
    with pytest.raises(FormatError, match="truncated"):
        v.finish()


def test_header_round_trip_and_refusals() -> None:
    h = PatchHeader(Container.GGUF, 10, b"a" * 32, 20, b"b" * 32, 0, 1, 5, 7)
    raw = h.pack()
    assert raw.startswith(MAGIC)
    assert unpack_header(raw, h.total_size) == h
    with pytest.raises(FormatError, match="truncated"):
        unpack_header(raw, h.total_size - 1)
    with pytest.raises(FormatError, match="magic"):
        unpack_header(b"X" + raw[1:], h.total_size)
    with pytest.raises(FormatError, match="version 9"):
        unpack_header(raw[:8] + b"\x09\x00" + raw[10:], h.total_size)


def test_chunk_boundaries_resynchronise_after_an_insertion() -> None:
    data = os.urandom(400_000)
    edited = data[:100_000] + b"inserted!" + data[100_000:]
    a = set(cdc.chunk_ends(memoryview(data)))
    b = {e - 9 for e in cdc.chunk_ends(memoryview(edited)) if e > 100_000}
    assert len(a & b) > 0.8 * len([e for e in a if e > 110_000])
    ends = cdc.chunk_ends(memoryview(data))
    sizes = np.diff([0, *ends])
    assert ends[-1] == len(data)
    assert sizes[:-1].min() >= cdc.ChunkParams().min_size
    assert sizes.max() <= cdc.ChunkParams().max_size


def test_gear_hash_depends_only_on_the_last_32_bytes() -> None:
    tail = np.frombuffer(os.urandom(64), dtype=np.uint8)
    a = cdc.gear_hash(np.concatenate([np.frombuffer(os.urandom(50), np.uint8), tail]))
    b = cdc.gear_hash(np.concatenate([np.frombuffer(os.urandom(7), np.uint8), tail]))
    assert np.array_equal(a[-33:], b[-33:])
