"""Softmax engine designs for the C simulation and RTL tests: plans, vectors and golden outputs.

Expected outputs come from hwgen.sim.integer_kernels.softmax (what hwgen.sim.exact runs for a
Softmax node), never from a model written here. Vectors: the worst cases first (every element
equal at the minimum, at zero and at the maximum code, one dominant element, two tied maxima,
alternating extremes, a single element above the rest by one code), then seeded random codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwgen.hw.plan import IntType, SoftmaxPlan
from hwgen.hw.softmax import MAX_LENGTH, plan_softmax
from hwgen.sim.integer_kernels import softmax

SEED = 5


@dataclass(frozen=True)
class Case:
    inp: IntType
    in_frac: int
    out: IntType
    out_frac: int
    hi: int
    length: int
    vectors: int = 1
    n_random: int = 8

    def plan(self, name: str = "sm") -> SoftmaxPlan:
        return plan_softmax(
            name,
            f"/head/{name}/Softmax",
            inp=self.inp,
            out=self.out,
            in_frac=self.in_frac,
            out_frac=self.out_frac,
            hi=self.hi,
            length=self.length,
            vectors=self.vectors,
        )


S8, U8, U4, S6, U16 = IntType(8, True), IntType(8, False), IntType(4, False), IntType(6, True), IntType(16, False)

#: name -> design. Outputs are unsigned with frac = bits - 1 (what hwgen.passes.quantize gives a Softmax)
CASES: dict[str, Case] = {
    # a classifier head: 10 signed logits (frac 4), u8 probabilities (frac 7)
    "s8_n10": Case(S8, 4, U8, 7, 255, 10),
    # unsigned 4-bit input, frac 0: the table ends at d = 12 (later entries round to 0), u4 output
    "u4_n7_short_table": Case(U4, 0, U4, 3, 15, 7),
    # the clamp below 2**out_frac: the output saturates at 100
    "s6_clamped": Case(S6, 3, U8, 7, 100, 9),
    # one element: the quotient is always 2**out_frac
    "s8_n1": Case(S8, 4, U8, 7, 255, 1),
    # 16-bit output: 16 quotient bits per element
    "s8_u16_out": Case(S8, 5, U16, 15, 65535, 5),
    # per-pixel softmax over channels: 6 vectors of 4 per sample
    "s8_per_pixel": Case(S8, 2, U8, 7, 255, 4, vectors=6),
}

#: the longest vector, every element equal: the sum is exactly 2**32 (33 bits)
MAX_CASE = Case(S8, 4, U8, 7, 255, MAX_LENGTH, n_random=1)


def vectors(case: Case, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Input codes [S, count] (worst cases, then random) and the golden output codes [S, count]."""
    n, v, t = case.length, case.vectors, case.inp
    rng = np.random.default_rng(seed)
    print(f"softmax vectors: seed {seed}")
    shape = (v, n)
    dominant = np.full(shape, t.lo)
    dominant[:, n // 2] = t.hi
    tied = np.full(shape, t.lo)
    tied[:, 0] = tied[:, -1] = t.hi
    above = np.full(shape, min(max(0, t.lo), t.hi - 1))
    above[:, -1] += 1
    alt = np.where(np.arange(n) % 2 == 0, t.lo, t.hi) * np.ones(shape, dtype=np.int64)
    zero = np.full(shape, min(max(0, t.lo), t.hi))
    fixed = [np.full(shape, t.lo), zero, np.full(shape, t.hi), dominant, tied, above, alt]
    rand = [rng.integers(t.lo, t.hi + 1, size=shape) for _ in range(case.n_random)]
    x = np.stack(fixed + rand).astype(np.int64)
    y = softmax(x - t.lo, -1, case.in_frac, t.bits, case.out_frac, case.hi)
    return x.reshape(len(x), -1), y.reshape(len(x), -1)
