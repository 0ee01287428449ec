"""Bit-exact conversions between stored float formats (f32, f16, bf16) and float64.

Apply must rebuild the same bits on every machine, so only IEEE-754 basic operations are used:
widening is exact, and narrowing goes float64 -> float32 -> target, each step correctly rounded
(round to nearest, ties to even) by numpy or, for bf16, by integer arithmetic below. Non-finite
results are replaced by zero bits because NaN payload propagation differs between CPUs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edgeota.delta.format import FloatKind

F64 = npt.NDArray[np.float64]
Bits = npt.NDArray[np.unsignedinteger]

_U4: np.dtype[np.unsignedinteger] = np.dtype("<u4")
_U2: np.dtype[np.unsignedinteger] = np.dtype("<u2")


def bits_dtype(kind: FloatKind) -> np.dtype[np.unsignedinteger]:
    """The unsigned integer type holding one element's bit pattern."""
    return _U4 if kind is FloatKind.F32 else _U2


def to_float64(bits: Bits, kind: FloatKind) -> F64:
    """Exact widening of stored bit patterns to float64."""
    if kind is FloatKind.F32:
        return bits.view("<f4").astype(np.float64)
    if kind is FloatKind.F16:
        return bits.view("<f2").astype(np.float64)
    return (bits.astype(np.uint32) << np.uint32(16)).view("<f4").astype(np.float64)


def _f32_to_bf16_bits(x: npt.NDArray[np.float32]) -> Bits:
    u = x.view(np.uint32).astype(np.uint64)
    rounded = (u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    return rounded.astype("<u2")


def round_from_float64(x: F64, kind: FloatKind) -> Bits:
    """Deterministic narrowing of float64 values to the bit patterns of ``kind``."""
    with np.errstate(over="ignore", invalid="ignore"):
        f32 = x.astype(np.float32)
        if kind is FloatKind.F32:
            out = f32
            finite = np.isfinite(out)
            bits: Bits = out.view("<u4")
        elif kind is FloatKind.F16:
            out16 = f32.astype(np.float16)
            finite = np.isfinite(out16)
            bits = out16.view("<u2")
        else:
            bits = _f32_to_bf16_bits(f32)
            finite = (bits & np.uint16(0x7F80)) != np.uint16(0x7F80)
    if not finite.all():
        bits = np.where(finite, bits, np.zeros((), dtype=bits.dtype))
    return bits


def neighbour_gaps(bits: Bits, kind: FloatKind) -> tuple[F64, F64]:
    """Distances from each value down and up to the next representable value of ``kind``.

    Half of each is how far a real number may sit from the value and still round to it. At the
    largest finite value the gap up is taken equal to the gap down.
    """
    x = to_float64(bits, kind)
    if kind is FloatKind.BF16:
        up_bits, down_bits = _bf16_neighbours(bits)
        up = to_float64(up_bits, kind)
        down = to_float64(down_bits, kind)
    else:
        ftype = np.float32 if kind is FloatKind.F32 else np.float16
        v = bits.view(np.dtype(ftype).newbyteorder("<"))
        with np.errstate(over="ignore"):
            up = np.nextafter(v, ftype(np.inf)).astype(np.float64)
            down = np.nextafter(v, ftype(-np.inf)).astype(np.float64)
    with np.errstate(invalid="ignore"):
        gap_up = up - x
        gap_down = x - down
    gap_up = np.where(np.isfinite(gap_up), gap_up, gap_down)
    gap_down = np.where(np.isfinite(gap_down), gap_down, gap_up)
    return gap_down, gap_up


def _bf16_neighbours(bits: Bits) -> tuple[Bits, Bits]:
    b = bits.astype(np.int32)
    negative = (b & 0x8000) != 0
    magnitude = b & 0x7FFF
    # Moving away from zero increases the magnitude; towards zero decreases it, crossing to
    # the other sign's smallest subnormal at zero.
    away = b + 1
    toward = np.where(magnitude == 0, (b ^ 0x8000) + 1, b - 1)
    up = np.where(negative, toward, away)
    down = np.where(negative, away, toward)
    return up.astype("<u2"), down.astype("<u2")
