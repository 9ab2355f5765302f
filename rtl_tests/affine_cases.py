"""Per-channel affine engine designs for the C simulation and RTL tests: plans, vectors, golden outputs.

Expected outputs come from hwgen.sim.integer_kernels.requantize(x * m + a, ...), the kernel
hwgen.sim.exact.affine_codes runs for an Affine node. Vectors: all min, all max, zero,
alternating extremes (the saturating ones), then seeded random codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwgen.hw.channel_affine import plan_channel_affine
from hwgen.hw.plan import ChannelAffinePlan, IntType, Requant
from hwgen.numerics import Rounding
from hwgen.sim.integer_kernels import requantize

SEED = 13


@dataclass(frozen=True)
class AffineCase:
    inp: IntType
    m: IntType
    out: IntType
    shift: int
    rounding: Rounding
    period: int
    repeats: int  #: pixels: count = period * repeats
    seed: int = 0

    def constants(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        m = rng.integers(self.m.lo, self.m.hi + 1, size=self.period)
        m[0] = self.m.lo  # the most negative scale: the widest product
        a = rng.integers(-(1 << (self.shift + 6)), 1 << (self.shift + 6), size=self.period)
        return m, a

    def plan(self) -> ChannelAffinePlan:
        m, a = self.constants()
        return plan_channel_affine(
            "aff",
            "/bn/Mul",
            scales=np.tile(m, self.repeats),
            offsets=np.tile(a, self.repeats),
            inp=self.inp,
            m=self.m,
            out=self.out,
            requant=Requant(self.shift, self.rounding, self.out.lo, self.out.hi),
        )


CASES = {
    # signed 8-bit pixels, 4 channels of 16-bit scales, half-even: saturates at the extremes
    "s8_c4_half_even": AffineCase(IntType(8, True), IntType(16, True), IntType(8, True), 12, Rounding.HALF_EVEN, 4, 6),
    # unsigned input, unsigned output, floor, one pixel of 7 channels (a vector)
    "u6_k7_floor": AffineCase(IntType(6, False), IntType(10, True), IntType(6, False), 5, Rounding.FLOOR, 7, 1, 1),
    # half-up with a left shift (shift < 0: exact)
    "s4_c3_left_shift": AffineCase(
        IntType(4, True), IntType(5, True), IntType(12, True), -2, Rounding.HALF_UP, 3, 5, 2
    ),
}


def vectors(case: AffineCase, n_random: int = 8) -> tuple[np.ndarray, np.ndarray]:
    t = case.inp
    count = case.period * case.repeats
    rng = np.random.default_rng(SEED)
    print(f"affine vectors: seed {SEED}")
    alt = np.where(np.arange(count) % 2 == 0, t.lo, t.hi)
    fixed = [np.full(count, t.lo), np.full(count, t.hi), np.full(count, max(t.lo, 0)), alt, alt[::-1].copy()]
    x = np.stack(fixed + [rng.integers(t.lo, t.hi + 1, size=count) for _ in range(n_random)]).astype(np.int64)
    m, a = case.constants()
    acc = x * np.tile(m, case.repeats) + np.tile(a, case.repeats)
    return x, requantize(acc, case.shift, case.rounding, case.out.lo, case.out.hi)
