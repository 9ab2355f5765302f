"""The exact dot-product kernel against an independent Fraction sum and float64, for every format pair."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from hwgen.errors import FormatError
from hwgen.numerics import (
    Binary,
    BlockFloat,
    BlockLog,
    BlockMinifloat,
    FixedPoint,
    Minifloat,
    Rounding,
    Ternary,
)
from hwgen.sim.format_mac import accumulator_spec, dot_exact, observed_range

FORMATS = [
    FixedPoint(8, 5),
    FixedPoint(4, 2, signed=False),
    Minifloat(4, 3),
    Minifloat(2, 1, denorm=False),
    BlockFloat(7, 8, 8),
    BlockFloat(3, 5, 4),
    BlockMinifloat(4, 3, 8, 8),
    BlockLog(3, 6, 8),
    Binary(per_channel=True),
    Ternary(),
]
PAIRS = [(w, a) for w in FORMATS for a in FORMATS]


def encode(fmt: object, x: np.ndarray):
    if isinstance(fmt, Binary | Ternary):
        return fmt.encode(x, rounding=Rounding.HALF_EVEN, axis=0)
    if isinstance(fmt, FixedPoint | Minifloat):
        return fmt.encode(x, rounding=Rounding.HALF_EVEN)
    return fmt.encode(x, rounding=Rounding.HALF_EVEN, axis=-1)


def fraction_dot(wf: object, wc, af: object, ac) -> list[list[Fraction]]:
    """sum_k w*a from each decoded value as a Fraction: no shared code with the kernel's alignment."""
    mw, ew = wf.decode(wc)
    ma, ea = af.decode(ac)
    w = [
        [Fraction(int(m)) * Fraction(2) ** int(e) for m, e in zip(r1, r2, strict=True)]
        for r1, r2 in zip(mw, ew, strict=True)
    ]
    a = [
        [Fraction(int(m)) * Fraction(2) ** int(e) for m, e in zip(r1, r2, strict=True)]
        for r1, r2 in zip(ma, ea, strict=True)
    ]
    return [[sum((x * y for x, y in zip(ar, wr, strict=True)), Fraction(0)) for wr in w] for ar in a]


def extreme_inputs(rng: np.random.Generator, k: int) -> np.ndarray:
    """Rows of huge, tiny, zero, alternating and random values: max/min/zero/denormal/saturating codes."""
    return np.stack(
        [
            np.full(k, 1e30),
            np.full(k, -1e30),
            np.zeros(k),
            np.where(np.arange(k) % 2 == 0, 1e30, -1e30),
            np.full(k, 1e-30) * np.where(np.arange(k) % 3 == 0, -1, 1),
            rng.standard_normal(k) * np.exp2(rng.integers(-12, 12, size=k)),
        ]
    )


@pytest.mark.parametrize(("wf", "af"), PAIRS, ids=lambda f: f.name)
def test_dot_exact_equals_fraction_sum(wf: object, af: object) -> None:
    rng = np.random.default_rng(abs(hash((wf.name, af.name))) % 2**32)
    k = 19  # not a multiple of any block size: partial last blocks
    w = np.concatenate([rng.standard_normal((3, k)), extreme_inputs(rng, k)[:3]])
    a = np.concatenate([rng.standard_normal((2, k)) * 4, extreme_inputs(rng, k)])
    wc, ac = encode(wf, w), encode(af, a)
    got = dot_exact(wf, wc, af, ac)
    want = fraction_dot(wf, wc, af, ac)
    assert [[Fraction(int(v)) * Fraction(2) ** got.lsb for v in row] for row in got.acc] == want
    spec = accumulator_spec(wf, af, k)
    assert got.lsb == spec.lsb
    assert max(abs(int(v)) for v in got.acc.ravel()) <= spec.max_abs < 2 ** (spec.width - 1)
    tight = accumulator_spec(wf, af, k, w_codes=wc)
    assert tight.width <= spec.width and tight.lsb >= spec.lsb
    assert all(abs(int(v)) <= tight.max_abs for v in got.at_lsb(tight.lsb).ravel())


@pytest.mark.parametrize(("wf", "af"), [(w, a) for w in FORMATS[:4] for a in FORMATS[:4]], ids=lambda f: f.name)
def test_small_formats_match_float64(wf: object, af: object) -> None:
    """Element formats with short mantissas: the float64 dot product is exact, so it must match bit for bit."""
    rng = np.random.default_rng(5)
    w, a = rng.standard_normal((4, 16)), rng.standard_normal((8, 16))
    wc, ac = encode(wf, w), encode(af, a)
    ref = af.to_float(ac) @ wf.to_float(wc).T
    np.testing.assert_array_equal(dot_exact(wf, wc, af, ac).to_float(), ref)


def test_worst_case_values_reach_the_bound_and_fit() -> None:
    """All-max weights times all-max (and all-min) activations hit the accumulator bound exactly."""
    wf, af = Minifloat(4, 3), FixedPoint(8, 0)
    k = 33
    wc = np.full((1, k), wf.all_codes()[-1])
    for a_code, sign in ((127, 1), (-128, -1)):
        got = dot_exact(wf, wc, af, np.full((1, k), a_code))
        spec = accumulator_spec(wf, af, k, w_codes=wc)
        acc = int(got.at_lsb(spec.lsb)[0, 0])
        assert Fraction(acc) * Fraction(2) ** spec.lsb == sign * k * 480 * abs(a_code)
        assert abs(acc) <= spec.max_abs < 2 ** (spec.width - 1)
    assert abs(acc) == spec.max_abs  # -128 is the largest |a|: the bound is tight


def test_bfp_blocks_share_one_exponent_per_block_product() -> None:
    wf = af = BlockFloat(3, 6, 4)
    w = np.array([[1.0, 2.0, 3.0, 4.0, 0.001, 0.002, 0.003, 0.004]])
    a = np.array([[4.0, 3.0, 2.0, 1.0, 1000.0, 2000.0, 3000.0, 4000.0]])
    wc, ac = wf.encode(w, rounding=Rounding.HALF_EVEN), af.encode(a, rounding=Rounding.HALF_EVEN)
    got = dot_exact(wf, wc, af, ac)
    per_block = [
        int(np.dot(ac.elements[0, b * 4 : b * 4 + 4], wc.elements[0, b * 4 : b * 4 + 4]))
        * Fraction(2) ** int(wc.shared[0, b] + ac.shared[0, b])
        for b in range(2)
    ]
    assert Fraction(int(got.acc[0, 0])) * Fraction(2) ** got.lsb == sum(per_block)


def test_observed_range_narrows_the_accumulator() -> None:
    wf, af = FixedPoint(8, 6), BlockFloat(7, 8, 16)
    a = np.random.default_rng(2).standard_normal((64, 32))
    ac = af.encode(a, rounding=Rounding.HALF_EVEN)
    r = observed_range(af, ac)
    narrow = accumulator_spec(wf, af, 32, a_range=r)
    assert narrow.width < accumulator_spec(wf, af, 32).width
    got = dot_exact(wf, FixedPoint(8, 6).encode(a[:4], rounding=Rounding.HALF_EVEN), af, ac, lsb=narrow.lsb)
    assert max(abs(int(v)) for v in got.acc.ravel()) <= narrow.max_abs


def test_refuses_blocks_off_the_reduction_axis_and_lossy_lsb() -> None:
    wf = BlockFloat(3, 6, 4)
    w = np.ones((4, 4))
    with pytest.raises(FormatError, match="reduction axis"):
        dot_exact(wf, wf.encode(w, rounding=Rounding.HALF_EVEN, axis=0), wf, wf.encode(w, rounding=Rounding.HALF_EVEN))
    f = FixedPoint(8, 4)
    with pytest.raises(FormatError, match="without rounding"):
        dot_exact(f, np.array([[1]]), f, np.array([[1]]), lsb=0)
    with pytest.raises(FormatError, match="BlockCodes"):
        dot_exact(wf, np.ones((1, 4), dtype=np.int64), f, np.ones((1, 4), dtype=np.int64))
