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
