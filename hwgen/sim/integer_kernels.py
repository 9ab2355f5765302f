"""Integer kernels of the golden model: exact arithmetic on codes.

These are the single definition of what each engine computes. `sim.exact` applies them to a
quantized graph; engine-level hardware tests call them directly with a plan's numbers.
"""

from __future__ import annotations

import numpy as np

from hwgen.numerics import Rounding, shift_round

#: int64 is exact while every partial sum stays below this magnitude; beyond, Python ints are used.
_INT64_SAFE_BITS = 62


def _bits_of(a: np.ndarray) -> int:
    if a.size == 0:
        return 1
    m = int(np.max(np.abs(a.astype(object) if a.dtype == object else a.astype(np.int64))))
    return max(1, m.bit_length() + 1)


def matmul_exact(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [N, K] @ w.T ([M, K]) in exact integers (int64 when provably safe, else Python ints)."""
    k = x.shape[-1]
    need = _bits_of(x) + _bits_of(w) + max(1, int(k).bit_length())
    if need <= _INT64_SAFE_BITS and x.dtype != object and w.dtype != object:
        return x.astype(np.int64) @ w.astype(np.int64).T
    return x.astype(object) @ w.astype(object).T


def requantize(acc: np.ndarray, shift: int, rounding: Rounding, lo: int, hi: int) -> np.ndarray:
    """out = clamp(shift_round(acc, shift, rounding), lo, hi): the one requantization step."""
    q = shift_round(acc, shift, rounding)
    q = np.minimum(np.maximum(q, lo), hi)
    return q.astype(np.int64)


def dense(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, *, shift: int, rounding: Rounding, lo: int, hi: int
) -> np.ndarray:
    """A dense layer on codes: requantize(x @ w.T + b). x [N, K], w [M, K], b [M] (acc units)."""
    acc = matmul_exact(np.asarray(x), np.asarray(w))
    acc = acc + (np.asarray(b).astype(object) if acc.dtype == object else np.asarray(b, dtype=np.int64))
    return requantize(acc, shift, rounding, lo, hi)


def align_add(a: np.ndarray, fa: int, b: np.ndarray, fb: int) -> tuple[np.ndarray, int]:
    """a * 2**-fa + b * 2**-fb exactly, as codes at the finer of the two scales."""
    f = max(fa, fb)
    return np.left_shift(np.asarray(a, dtype=np.int64), f - fa) + np.left_shift(
        np.asarray(b, dtype=np.int64), f - fb
    ), f


def avgpool_multiplier(count: int) -> tuple[int, int]:
    """(M, S) with M / 2**S ~ 1 / count: 16 significant bits, M = round_half_even(2**S / count).

    The golden model and both hardware views divide a window sum by `count` as (sum * M) >> S.
    """
    s = 16 + int(count).bit_length()
    q, r = divmod(1 << s, count)
    m = q + (1 if 2 * r > count or (2 * r == count and q & 1) else 0)
    return m, s


def softmax_exp_table(in_frac: int, size: int) -> np.ndarray:
    """E[d] = round_half_even(2**16 * exp(-d * 2**-in_frac)) for d = 0..size-1 (codes of max - x)."""
    d = np.arange(size, dtype=np.float64)
    return np.rint(np.ldexp(np.exp(-np.ldexp(d, -in_frac)), 16)).astype(np.int64)


def softmax(x: np.ndarray, axis: int, in_frac: int, in_bits: int, out_frac: int, hi: int) -> np.ndarray:
    """Integer softmax along `axis`: y = clamp(round_half_up(E[max - x] * 2**out_frac / sum E), 0, hi)."""
    x = np.asarray(x, dtype=np.int64)
    d = x.max(axis=axis, keepdims=True) - x
    table = softmax_exp_table(in_frac, 1 << in_bits)
    e = table[d]
    s = e.sum(axis=axis, keepdims=True)
    num = e << (out_frac + 1)
    y = (num + s) // (2 * s)
    return np.minimum(y, hi).astype(np.int64)


# -- integer multiplier + shift requantization (imported QDQ / QONNX scales) ------------------
#: significant bits of a requantization multiplier M0: 24 holds any float32 ratio exactly
REQUANT_MULTIPLIER_BITS = 24


def fixed_multiplier(real: float, bits: int = REQUANT_MULTIPLIER_BITS) -> tuple[int, int]:
    """(M0, n) with M0 * 2**-n = `real` rounded half-even to `bits` significant bits.

    M0 lies in [2**(bits-1), 2**bits) (gemmlowp/TFLite's normalized multiplier), so a float32
    ratio is held exactly for bits >= 24. `real` must be finite and >= 0; 0 gives (0, 0).
    """
    if not np.isfinite(real) or real < 0:
        raise ValueError(f"requantization multiplier must be finite and >= 0, got {real!r}")
    if real == 0:
        return 0, 0
    m, e = np.frexp(np.float64(real))  # real = m * 2**e, m in [0.5, 1)
    m0 = round(float(np.ldexp(m, bits)))  # exact product; Python's round() is half-even
    if m0 == 1 << bits:
        m0, e = m0 >> 1, e + 1
    return int(m0), int(bits - e)


def requantize_scaled(
    acc: np.ndarray,
    multiplier: np.ndarray | int,
    shift: np.ndarray | int,
    rounding: Rounding,
    lo: int,
    hi: int,
    offset: np.ndarray | int = 0,
) -> np.ndarray:
    """out = clamp(shift_round(acc * M0 + offset, n, rounding), lo, hi), per output channel (last axis).

    `offset` is the bias in units of 2**-n output codes (added after the multiplier, so a float
    bias keeps n fractional bits). The arithmetic is exact (int64 when provably safe, Python ints
    beyond); M0, n and offset may differ per channel.
    """
    acc = np.asarray(acc)
    m = np.broadcast_to(np.asarray(multiplier, dtype=np.int64), acc.shape[-1:] if acc.ndim else ())
    n = np.broadcast_to(np.asarray(shift, dtype=np.int64), m.shape)
    off = np.broadcast_to(np.asarray(offset, dtype=object), m.shape)
    wide = acc.dtype == object or max(_bits_of(acc) + _bits_of(m), _bits_of(off)) + 1 > _INT64_SAFE_BITS
    p = acc.astype(object) * m.astype(object) + off if wide else acc.astype(np.int64) * m + off.astype(np.int64)
    out = np.empty(p.shape, dtype=object if wide else np.int64)
    for s in np.unique(n):
        cols = n == s
        out[..., cols] = shift_round(p[..., cols], int(s), rounding)
    return np.minimum(np.maximum(out, lo), hi).astype(np.int64)


def requantize_float32(
    acc: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int, lo: int, hi: int
) -> np.ndarray:
    """onnxruntime's requantization, reproduced bit for bit: float32(acc) * float32(M0 * 2**-n), then
    round half to even and clamp (MlasRequantizeOutput). Differs from `requantize_scaled` (HALF_EVEN)
    only where the float32 product rounds onto a tie the exact product is not on, or |acc| >= 2**24.
    """
    acc = np.asarray(acc)
    m = np.broadcast_to(np.asarray(multiplier, dtype=np.int64), acc.shape[-1:])
    n = np.broadcast_to(np.asarray(shift, dtype=np.int64), m.shape)
    scale = np.ldexp(m.astype(np.float32), (-n).astype(np.int32)).astype(np.float32)  # exact: M0 < 2**24
    prod = np.asarray(acc, dtype=np.float64).astype(np.float32) * scale  # int -> float32 rounds half-even
    return np.clip(np.rint(prod).astype(np.float64), lo, hi).astype(np.int64)


#: significant bits of an IEEE float32 (23 stored + the implicit one)
FLOAT32_SIGNIFICANT_BITS = 24


def round_significant(x: int, bits: int = FLOAT32_SIGNIFICANT_BITS) -> int:
    """x >= 0 rounded half to even to `bits` significant bits, kept at its own scale (low bits zero).

    The integer view of a float32 rounding: bits below the leading one's position - (bits - 1) are
    dropped, so the hardware finds that position by smearing the leading one down (no shifter).
    """
    drop = int(x).bit_length() - bits
    if drop <= 0:
        return int(x)
    half = 1 << (drop - 1)
    lsb = (x >> drop) & 1
    return ((x + half - 1 + lsb) >> drop) << drop


def requantize_float32_integer(acc: int, multiplier: int, shift: int, lo: int, hi: int) -> int:
    """`requantize_float32` of one accumulator in integer steps only: the algorithm both hardware views run.

    float32(acc) is round_significant(|acc|) (exact below 2**24); float32 * float32 is exact in
    48 bits, then round_significant again; rint is a half-even shift by `shift`; the sign is
    applied to the magnitude (IEEE rounding is symmetric), then the clamp. Equal to
    requantize_float32 whenever multiplier * 2**-shift is a float32 (tests/sim/test_float32_requant.py).
    """
    a = round_significant(abs(int(acc)))
    q = round_significant(a * int(multiplier))
    half_even = (q + (1 << (shift - 1)) - 1 + ((q >> shift) & 1)) >> shift if shift > 0 else None
    r = q << -shift if half_even is None else half_even
    v = -r if acc < 0 else r
    return min(max(v, lo), hi)
