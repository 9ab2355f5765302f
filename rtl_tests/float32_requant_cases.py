"""Worst cases of onnxruntime's float32 requantization for the dense engine, shared by the C simulation
(tests/hw/test_scaled_requant.py) and RTL (rtl_tests/test_scaled_requant_rtl.py) tests.

A dense layer with weights [2**11, 1] per channel lets the input set each accumulator directly, up to
+-2**26 (past float32's exact integers); expected codes come from integer_kernels.requantize_float32
(numpy's float32 arithmetic, as onnxruntime computes it).
"""

from __future__ import annotations

import numpy as np

from hwgen.hw.plan import DensePlan, IntType, Requant
from hwgen.hw.schedule import plan_dense
from hwgen.numerics import Rounding
from hwgen.sim import integer_kernels

S16 = IntType(16, True)

#: (M, n) per channel: a full mantissa, the smallest normalized one, 0.75 (rint ties at acc = 2 mod 4),
#: 1.0 as (1, 0), a ratio > 1, a tiny ratio (every output 0), and two float32 ratios near 2**-12
F32_CHANNELS = ((0xFFFFFF, 30), (0x800000, 27), (0xC00000, 24), (1, 0), (0xB504F3, 22), (0x800001, 60),
                (0xA3D70A, 35), (0x9D89D9, 36))  # fmt: skip
#: weights [2**11, 1]: acc = 2048 * x0 + x1 + bias reaches +-2**26, past float32's exact integers
F32_W0 = 1 << 11


def f32_plan(pe: int, simd: int, out: IntType) -> DensePlan:
    ms, ns = zip(*F32_CHANNELS, strict=True)
    k = 2 * simd
    w = np.zeros((len(ms), k), dtype=np.int64)
    w[:, 0], w[:, 1] = F32_W0, 1
    b = np.array([0, 1, -1, 5, 0, -3, 2, 0], dtype=np.int64)
    lo, hi = (0, out.hi) if not out.signed else (out.lo, out.hi)
    rq = Requant(max(ns), Rounding.HALF_EVEN, lo, hi, tuple(ms), (0,) * len(ms), None, "float32", tuple(ns))
    return plan_dense("fc", "/fc/Gemm", w, b, S16, out, rq, pe=pe, simd=simd)


def f32_accs() -> np.ndarray:
    """Accumulators hitting every rounding step's ties: float32(acc) ties above 2**24, ties and near-ties
    of the float32 product (found with the integer model), rint ties, and the extremes."""
    big = [(1 << e) + d for e in (24, 25) for d in range(-6, 7)]  # ties of float32(acc): odd multiples of 1, 2
    below, above = np.arange((1 << 24) - (1 << 19), 1 << 24), np.arange((1 << 24) + 1, (1 << 24) + (1 << 19))
    picked = []
    # per channel and range (float32(acc) exact / rounding, both signs): where float32 differs from the exact ratio
    for cand in (np.arange(-(1 << 19), 1 << 19), below, above, -above, 2 * above):
        for m, n in F32_CHANNELS:
            exact = _exact_ratio(cand, m, n)
            f32 = integer_kernels.requantize_float32(cand.reshape(-1, 1), m, n, -(1 << 40), 1 << 40)[:, 0]
            picked += list(cand[exact != f32][:4])
    accs = np.array(sorted({*big, *(-a for a in big), *range(-40, 41), *picked}), dtype=np.int64)
    return accs


def _exact_ratio(acc: np.ndarray, m: int, n: int) -> np.ndarray:
    return integer_kernels.requantize_scaled(acc.reshape(-1, 1), m, n, Rounding.HALF_EVEN, -(1 << 40), 1 << 40)[:, 0]


def f32_vectors(p: DensePlan) -> np.ndarray:
    """Inputs giving acc = each of f32_accs() on channel 0 (bias 0), then the four input corners; checks
    that they reach both clamp bounds and the roundings where float32 and the exact ratio differ."""
    accs = f32_accs()
    x = np.zeros((len(accs), p.in_features), dtype=np.int64)
    x[:, 0], x[:, 1] = np.divmod(accs, F32_W0)
    corners = np.zeros((4, p.in_features), dtype=np.int64)
    corners[:, :2] = [[S16.lo, S16.lo], [S16.lo, S16.hi], [S16.hi, S16.lo], [S16.hi, S16.hi]]
    x = np.concatenate([x, corners])
    acc = x @ p.weights.T + p.biases
    assert np.abs(acc).max() > 1 << 25
    rq = p.requant
    m, n, wide = np.array(rq.multiplier), np.array(rq.shifts), 1 << 40
    f32_wide = integer_kernels.requantize_float32(acc, m, n, -wide, wide)
    exact_wide = integer_kernels.requantize_scaled(acc, m, n, Rounding.HALF_EVEN, -wide, wide)
    assert (f32_wide != exact_wide).sum() >= 8  # the float32-only roundings are in the vectors
    want = f32_expected(p, x)
    assert (want == rq.lo).any() and (want == rq.hi).any()
    return x


def f32_expected(p: DensePlan, x: np.ndarray) -> np.ndarray:
    rq = p.requant
    acc = x @ p.weights.T + p.biases
    return integer_kernels.requantize_float32(acc, np.array(rq.multiplier), np.array(rq.shifts), rq.lo, rq.hi)
