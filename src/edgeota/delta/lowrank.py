"""Merged low-rank updates (W' = W + B @ A, rank r): find small factors, rebuild W' bit-exactly.

A merged LoRA changes every weight of a matrix but carries only r * (rows + cols) numbers. The
encoder estimates factors from D = W' - W, sends them as integers with power-of-two scales, and
sends the exact bits of W' as a residual against ``reconstruct``; where the factors are good the
residual is zero and costs almost nothing. The same op also serves updates that are only close
to low rank (a short fine-tune): the residual is then small numbers rather than zeros.

Reproducibility: apply must compute the same bits on any CPU and BLAS. The integer factors are
bounded so that every product and partial sum of ``Bq @ Aq`` is an integer below 2**53, which
float64 represents exactly whatever the summation order, blocking or FMA use of the BLAS; the
scales are powers of two (exact); the sum with W and the narrowing are single IEEE-754 roundings.

Estimating the factors: W' is W + B @ A rounded to fp16/bf16/fp32, so D holds rounding noise of up
to half a unit in the last place (ulp) of each weight; that noise is far larger for large weights
than for small ones. A plain SVD spreads the noise of large weights onto small ones and misses
their narrow rounding intervals. Weighted alternating least squares (weights 1/ulp^2, clipped)
fixes most of that: on a rank-8 fp16 update it takes mismatching weights from ~30% to ~1%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import zstandard

from edgeota.delta.codecs import encode_block, shuffle, unshuffle
from edgeota.delta.floats import Bits, neighbour_gaps, round_from_float64, to_float64
from edgeota.delta.format import MAX_EXPONENT, MAX_FACTOR_ELEMENTS, MAX_QBITS, Codec, FloatKind
from edgeota.errors import FormatError

F64 = npt.NDArray[np.float64]

# Weighted-least-squares weight ratios (largest / median), widened step by step.
_WEIGHT_CLIPS = (10.0, 30.0, 100.0, 300.0, 1000.0)
# Truncated-SVD predictors tried for updates that are only approximately low-rank; their
# residual absorbs the factors' rounding, so few bits per factor suffice.
_APPROX_RANKS = (4, 8, 16, 32, 64)
_APPROX_QBITS = (8, 10, 12)
_SAMPLE_ROWS = 256  # rows on which candidates are compared
_SAMPLE_LEVEL = 3
# Screening before the fit: the update's spectrum on a few rows. The fit (sketch, least
# squares, candidate scoring) costs ~1 s per million weights; a dense update whose energy is
# spread over many directions never pays it back, so it is screened out in about 1 ms.
_SCREEN_ROWS = 64
_SCREEN_RANK = 16
_SCREEN_ENERGY = 0.8  # merged LoRA and short fine-tunes measure > 0.98; white noise 0.3-0.45


@dataclass(frozen=True)
class LowRankFactors:
    """Integer factors with per-row (B) and per-column (A) power-of-two scales."""

    bq: npt.NDArray[np.int32]  # rows x rank
    aq: npt.NDArray[np.int32]  # rank x cols
    row_exp: npt.NDArray[np.int16]  # rows
    col_exp: npt.NDArray[np.int16]  # cols
    qbits: int

    @property
    def rank(self) -> int:
        return int(self.bq.shape[1])


@dataclass(frozen=True)
class FitSettings:
    """Search limits for ``fit_lowrank`` (create side only)."""

    max_rank: int = 64
    max_als_iterations: int = 10
    als_flop_budget: float = 2e10  # multiply-adds spent on refinement per tensor
    seed: int = 0


def max_qbits(rank: int) -> int:
    """Largest factor precision for which rank-``rank`` products stay exact in float64."""
    return min(MAX_QBITS, (53 - rank.bit_length()) // 2)


def reconstruct(
    old_bits: Bits,
    bq: F64,
    aq: F64,
    row_exp: npt.NDArray[np.int16],
    col_exp: npt.NDArray[np.int16],
    kind: FloatKind,
) -> Bits:
    """round(W + 2**(row_exp + col_exp) * (Bq @ Aq)) for a block of rows, bit for bit."""
    product = bq @ aq  # integers below 2**53: exact in any order
    scale = row_exp.astype(np.int32)[:, None] + col_exp.astype(np.int32)[None, :]
    with np.errstate(over="ignore", invalid="ignore"):
        total = to_float64(old_bits, kind) + np.ldexp(product, scale)
    return round_from_float64(total, kind)


def worth_fitting(old_bits: Bits, new_bits: Bits, kind: FloatKind) -> bool:
    """Cheap test: does the update look low-rank on a sample of rows?

    Keeps ``fit_lowrank`` for updates whose row sample has at least ``_SCREEN_ENERGY`` of its
    energy in the top ``_SCREEN_RANK`` singular directions. The sample's spectrum is the
    whole matrix's projected onto a few rows, so a low-rank update stays low-rank in it.
    """
    rows = old_bits.shape[0]
    if rows <= 2 * _SCREEN_RANK:
        return True  # too few rows to tell; the fit is cheap there anyway
    pick = np.linspace(0, rows - 1, min(rows, _SCREEN_ROWS)).astype(np.intp)
    with np.errstate(all="ignore"):
        d = to_float64(np.ascontiguousarray(new_bits[pick]), kind) - to_float64(
            np.ascontiguousarray(old_bits[pick]), kind
        )
        if not np.isfinite(d).all():
            return False
        try:
            # Eigenvalues of the small Gram matrix are the squared singular values, without
            # an SVD of the wide sample.
            energy = np.sort(np.clip(np.linalg.eigvalsh(d @ d.T), 0.0, None))[::-1]
        except np.linalg.LinAlgError:
            return False
    total = float(energy.sum())
    if total == 0.0:
        return False
    return float(energy[:_SCREEN_RANK].sum()) >= _SCREEN_ENERGY * total


def fit_lowrank(
    old_bits: Bits, new_bits: Bits, kind: FloatKind, settings: FitSettings | None = None
) -> LowRankFactors | None:
    """Factors that predict ``new_bits`` from ``old_bits`` (2-D arrays) well, or None.

    Two kinds of candidates are scored on a sample of rows by the compressed size of factors
    plus residual: an exact fit, when the spectrum of D drops to the rounding-noise floor (a
    merged LoRA), and plain truncated SVDs of a few ranks, which pay off for any update whose
    spectrum decays fast (short fine-tunes). None means no candidate beats the plain diff.
    """
    try:
        # Degenerate inputs (all-zero rows, huge ranges) may overflow or make the normal
        # equations singular; such candidates are dropped, not reported.
        with np.errstate(all="ignore"):
            return _fit(old_bits, new_bits, kind, settings or FitSettings())
    except np.linalg.LinAlgError:
        return None


def _fit(
    old_bits: Bits, new_bits: Bits, kind: FloatKind, cfg: FitSettings
) -> LowRankFactors | None:
    old = to_float64(old_bits, kind)
    new = to_float64(new_bits, kind)
    if not (np.isfinite(old).all() and np.isfinite(new).all()):
        return None
    d = new - old
    rows, cols = d.shape
    max_rank = min(cfg.max_rank, MAX_FACTOR_ELEMENTS // (rows + cols))
    k = min(max_rank + 8, rows, cols)
    if k < 8:
        return None
    u, s, vt = _sketch(d, k, cfg.seed)
    if not s.size or s[0] == 0:
        return None
    candidates: list[LowRankFactors | None] = []
    gap_down, gap_up = neighbour_gaps(new_bits, kind)
    width = np.minimum(gap_down, gap_up)
    exact = _exact_rank(s, width, k, max_rank)
    if exact is not None:
        b, a = u[:, :exact] * s[:exact], vt[:exact]
        b, a = _refine(d, width, d - gap_down / 2, d + gap_up / 2, b, a, cfg)
        candidates += [quantize(b, a, q) for q in range(10, max_qbits(exact) + 1, 2)]
    for r in _APPROX_RANKS:
        if r <= min(max_rank, k - 4):
            candidates += [quantize(u[:, :r] * s[:r], vt[:r], q) for q in _APPROX_QBITS]
    return _cheapest(old_bits, new_bits, kind, [c for c in candidates if c is not None])


def _sketch(d: F64, k: int, seed: int) -> tuple[F64, F64, F64]:
    """Top-k singular triplets of d (randomised range finder with one power iteration)."""
    rng = np.random.default_rng(seed)
    y = d @ rng.standard_normal((d.shape[1], k))
    y = d @ (d.T @ np.linalg.qr(y)[0])
    q, _ = np.linalg.qr(y)
    u, s, vt = np.linalg.svd(q.T @ d, full_matrices=False)
    return q @ u, s, vt


def _exact_rank(s: F64, width: F64, k: int, max_rank: int) -> int | None:
    """The rank of a low-rank update hidden under rounding noise, if there is one."""
    rows, cols = width.shape
    # Rounding noise is uniform within +-width/2; its largest singular value is about
    # sigma * (sqrt(rows) + sqrt(cols)). A low-rank update stands above that floor.
    sigma = float(np.sqrt(np.mean(width**2) / 12.0))
    floor = sigma * (np.sqrt(rows) + np.sqrt(cols))
    above = int(np.count_nonzero(s > 1.5 * floor))
    if above == 0 or above > max_rank or above >= k - 4:
        return None  # nothing above the noise, or no drop inside the sketch
    return above


def _weights(width: F64, clip: float) -> F64:
    # Relative to the median width, clipped: unclipped 1/ulp^2 weights span many decades and
    # make alternating least squares crawl; a widening clip converges in a few steps.
    ref = float(np.median(width))
    ratio = np.clip(ref / np.maximum(width, np.finfo(np.float64).tiny), 1.0 / clip, clip)
    return ratio**2


def _violations(p: F64, lo: F64, hi: F64) -> int:
    return int(np.count_nonzero((p < lo) | (p > hi)))


def _refine(
    d: F64, width: F64, lo: F64, hi: F64, b: F64, a: F64, cfg: FitSettings
) -> tuple[F64, F64]:
    rows, cols = d.shape
    rank = b.shape[1]
    cost = 2.0 * rows * cols * rank * (rank + 2)
    budget = min(cfg.max_als_iterations, int(cfg.als_flop_budget // max(cost, 1.0)))
    best = _violations(b @ a, lo, hi)
    done = 0
    for clip in _WEIGHT_CLIPS:
        weights = _weights(width, clip)
        for _ in range(2):
            if done >= budget or best == 0:
                return b, a
            done += 1
            nb = _weighted_rows(d, weights, a)
            na = _weighted_rows(d.T, weights.T, nb.T).T
            v = _violations(nb @ na, lo, hi)
            if v < best:
                b, a, best = nb, na, v
    return b, a


def _weighted_rows(d: F64, w: F64, a: F64) -> F64:
    """Per row i: argmin_b sum_j w_ij (d_ij - b . a_j)^2, for fixed a (rank x cols)."""
    rank, cols = a.shape
    outer = (a[:, None, :] * a[None, :, :]).reshape(rank * rank, cols)
    gram = (w @ outer.T).reshape(-1, rank, rank)
    rhs = (d * w) @ a.T
    ridge = 1e-12 * np.trace(gram, axis1=1, axis2=2) + np.finfo(np.float64).tiny
    gram += ridge[:, None, None] * np.eye(rank)
    return np.asarray(np.linalg.solve(gram, rhs[..., None])[..., 0], dtype=np.float64)


def _exponents(m: F64, q: int, axis: int) -> npt.NDArray[np.int16]:
    peak = np.max(np.abs(m), axis=axis)
    with np.errstate(divide="ignore"):
        e = np.ceil(np.log2(np.where(peak > 0, peak, 1.0))) - (q - 1)
    out: npt.NDArray[np.int16] = np.clip(e, -1000, 1000).astype(np.int16)
    return out


def quantize(b: F64, a: F64, q: int) -> LowRankFactors | None:
    """Integer factors of ``q`` bits for b @ a, or None if b or a is not finite."""
    if not (np.isfinite(b).all() and np.isfinite(a).all()):
        return None
    # Balance each rank component so B's column and A's row carry equal magnitude.
    nb = np.linalg.norm(b, axis=0)
    na = np.linalg.norm(a, axis=1)
    g = np.sqrt(np.where((nb > 0) & (na > 0), na / np.where(nb > 0, nb, 1.0), 1.0))
    b = np.asarray(b * g, dtype=np.float64)
    a = np.asarray(a / g[:, None], dtype=np.float64)
    row_exp = _exponents(b, q, axis=1)
    col_exp = _exponents(a, q, axis=0)
    limit = float(2 ** (q - 1))
    bq = np.clip(np.rint(np.ldexp(b, -row_exp.astype(np.int32)[:, None])), -limit, limit)
    aq = np.clip(np.rint(np.ldexp(a, -col_exp.astype(np.int32)[None, :])), -limit, limit)
    return LowRankFactors(
        np.ascontiguousarray(bq, dtype=np.int32),
        np.ascontiguousarray(aq, dtype=np.int32),
        row_exp,
        col_exp,
        q,
    )


def _sample_rows(rows: int) -> npt.NDArray[np.intp]:
    if rows <= _SAMPLE_ROWS:
        return np.arange(rows)
    return np.linspace(0, rows - 1, _SAMPLE_ROWS).astype(np.intp)


def _u8(a: Bits) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1)


def _compressed(data: npt.NDArray[np.uint8]) -> int:
    return len(zstandard.ZstdCompressor(level=_SAMPLE_LEVEL).compress(data.data))


def _cheapest(
    old_bits: Bits, new_bits: Bits, kind: FloatKind, candidates: list[LowRankFactors]
) -> LowRankFactors | None:
    """The candidate with the smallest estimated payload, if it beats the plain SUB diff."""
    rows = new_bits.shape[0]
    pick = _sample_rows(rows)
    scale = rows / len(pick)
    old_s = np.ascontiguousarray(old_bits[pick])
    new_s = np.ascontiguousarray(new_bits[pick])
    w = new_s.dtype.itemsize
    plain = scale * _compressed(encode_block(_u8(new_s), _u8(old_s), Codec.SUB, w, w))
    best: tuple[float, LowRankFactors] | None = None
    for f in candidates:
        guess = reconstruct(
            old_s,
            f.bq[pick].astype(np.float64),
            f.aq.astype(np.float64),
            f.row_exp[pick],
            f.col_exp,
            kind,
        )
        residual = encode_block(_u8(new_s), _u8(guess), Codec.SUB, w, w)
        factors = np.frombuffer(pack_factors(f), dtype=np.uint8)
        cost = scale * _compressed(residual) + _compressed(factors)
        if best is None or cost < best[0]:
            best = (cost, f)
    if best is None or best[0] > 0.9 * plain:
        return None
    return best[1]


def factor_section_size(rows: int, cols: int, rank: int) -> int:
    """Bytes of the factor section at the start of a low-rank payload."""
    return 4 * rank * (rows + cols) + 2 * (rows + cols)


def pack_factors(f: LowRankFactors) -> bytes:
    """Bq and Aq as int32 (byte-plane shuffled), then row and column exponents as int16."""
    parts = [
        shuffle(np.ascontiguousarray(f.bq, dtype="<i4").view(np.uint8).reshape(-1), 4),
        shuffle(np.ascontiguousarray(f.aq, dtype="<i4").view(np.uint8).reshape(-1), 4),
        np.ascontiguousarray(f.row_exp, dtype="<i2").view(np.uint8).reshape(-1),
        np.ascontiguousarray(f.col_exp, dtype="<i2").view(np.uint8).reshape(-1),
    ]
    return b"".join(p.tobytes() for p in parts)


def unpack_factors(raw: bytes, rows: int, cols: int, rank: int, qbits: int) -> LowRankFactors:
    """Inverse of ``pack_factors``; raises FormatError on values outside the declared bounds."""
    if len(raw) != factor_section_size(rows, cols, rank):
        raise FormatError("low-rank factor section has the wrong size")
    buf = np.frombuffer(raw, dtype=np.uint8)
    nb, na = 4 * rows * rank, 4 * rank * cols
    bq = unshuffle(buf[:nb], 4).view("<i4").reshape(rows, rank)
    aq = unshuffle(buf[nb : nb + na], 4).view("<i4").reshape(rank, cols)
    exps = buf[nb + na :].view("<i2")
    row_exp, col_exp = exps[:rows], exps[rows:]
    limit = 1 << (qbits - 1)
    for name, values in (("B", bq), ("A", aq)):
        if values.size and int(np.abs(values.astype(np.int64)).max()) > limit:
            raise FormatError(f"low-rank factor {name} exceeds its declared {qbits}-bit range")
    if exps.size and int(np.abs(exps.astype(np.int32)).max()) > MAX_EXPONENT:
        raise FormatError("low-rank scale exponent out of range")
    return LowRankFactors(bq, aq, row_exp.copy(), col_exp.copy(), qbits)
