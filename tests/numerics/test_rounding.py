"""hwgen.numerics.rounding against an exact Fraction model of each rounding and overflow mode."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hwgen.numerics import Overflow, Rounding, round_scaled, saturate, shift_round

ALL_ROUNDINGS = list(Rounding)


def ref_round(q: Fraction, rounding: Rounding) -> int:
    """The integer `q` rounds to, written from the definitions (not from the code under test)."""
    fl = math.floor(q)
    rest = q - fl  # in [0, 1)
    if rounding is Rounding.FLOOR:
        return fl
    if rest > Fraction(1, 2):
        return fl + 1
    if rest < Fraction(1, 2):
        return fl
    # an exact tie
    if rounding is Rounding.HALF_UP:
        return fl + 1
    return fl if fl % 2 == 0 else fl + 1


def ref_shift(x: int, shift: int, rounding: Rounding) -> int:
    return ref_round(Fraction(x) / Fraction(2) ** shift, rounding)


# -- shift_round -----------------------------------------------------------------------------
def test_ref_round_self_check() -> None:
    """The oracle itself on hand-worked ties: half_up and half_even differ exactly on odd halves."""
    halves = [Fraction(k, 2) for k in (-5, -3, -1, 1, 3, 5)]
    assert [ref_round(h, Rounding.FLOOR) for h in halves] == [-3, -2, -1, 0, 1, 2]
    assert [ref_round(h, Rounding.HALF_UP) for h in halves] == [-2, -1, 0, 1, 2, 3]
    assert [ref_round(h, Rounding.HALF_EVEN) for h in halves] == [-2, -2, 0, 0, 2, 2]


def test_shift_round_hand_worked_ties() -> None:
    x = np.array([-5, -3, -1, 1, 3, 5], dtype=np.int64)
    assert shift_round(x, 1, Rounding.FLOOR).tolist() == [-3, -2, -1, 0, 1, 2]
    assert shift_round(x, 1, Rounding.HALF_UP).tolist() == [-2, -1, 0, 1, 2, 3]
    assert shift_round(x, 1, Rounding.HALF_EVEN).tolist() == [-2, -2, 0, 0, 2, 2]
    # a tie at a larger shift: 6/4 = 1.5 and 10/4 = 2.5
    y = np.array([6, 10, -6, -10], dtype=np.int64)
    assert shift_round(y, 2, Rounding.HALF_EVEN).tolist() == [2, 2, -2, -2]
    assert shift_round(y, 2, Rounding.HALF_UP).tolist() == [2, 3, -1, -2]


@pytest.mark.parametrize("rounding", ALL_ROUNDINGS)
@pytest.mark.parametrize("shift", range(-3, 11))
def test_shift_round_int64_exhaustive(rounding: Rounding, shift: int) -> None:
    """Every x in [-1100, 1100] (every residue and tie for shifts up to 10) against the Fraction model."""
    xs = np.arange(-1100, 1101, dtype=np.int64)
    got = shift_round(xs, shift, rounding)
    assert got.dtype == np.int64
    expected = [ref_shift(int(x), shift, rounding) for x in xs]
    assert got.tolist() == expected


@pytest.mark.parametrize("rounding", ALL_ROUNDINGS)
def test_shift_round_object_huge_values(rounding: Rounding) -> None:
    """Python-int arrays above 2**70 (far beyond int64) stay exact, ties included."""
    rng = np.random.default_rng(7)
    vals: list[int] = []
    for shift in (1, 5, 33, 64, 80):
        base = 1 << (70 + shift % 9)
        vals += [base + (1 << (shift - 1)), -base - (1 << (shift - 1))]  # exact ties
        vals += [base * 3 + (1 << (shift - 1)) + 1, -(base * 5) - 1, base - 1]
    highs, lows = rng.integers(-1000, 1000, 40), rng.integers(0, 1 << 62, 40)
    vals += [int(v) * (1 << 70) + int(r) for v, r in zip(highs, lows, strict=True)]
    x = np.array(vals, dtype=object)
    for shift in (-5, 0, 1, 5, 33, 64, 80, 140):
        got = shift_round(x, shift, rounding)
        assert got.dtype == object
        assert all(isinstance(v, int) for v in got.tolist())
        assert got.tolist() == [ref_shift(v, shift, rounding) for v in vals], shift


@pytest.mark.parametrize("rounding", ALL_ROUNDINGS)
def test_shift_round_int64_and_object_agree(rounding: Rounding) -> None:
    x = np.random.default_rng(3).integers(-(2**40), 2**40, 500)
    for shift in (-4, 0, 1, 7, 20, 39, 45):
        a = shift_round(x, shift, rounding)
        b = shift_round(x.astype(object), shift, rounding)
        assert a.tolist() == b.tolist()


def test_shift_round_negative_shift_is_exact_left_shift() -> None:
    x = np.array([-7, -1, 0, 1, 7], dtype=np.int64)
    for rounding in ALL_ROUNDINGS:
        assert shift_round(x, -3, rounding).tolist() == [-56, -8, 0, 8, 56]
        huge = np.array([-(2**90) - 1, 2**90 + 1], dtype=object)
        assert shift_round(huge, -20, rounding).tolist() == [(-(2**90) - 1) * 2**20, (2**90 + 1) * 2**20]


def test_shift_round_rejects_floats_and_bad_mode() -> None:
    with pytest.raises(TypeError, match="integer"):
        shift_round(np.array([1.5]), 1, Rounding.FLOOR)
    with pytest.raises(ValueError):
        shift_round(np.array([1]), 1, "nearest")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    x=st.integers(-(2**62), 2**62),
    shift=st.integers(0, 62),
    rounding=st.sampled_from(ALL_ROUNDINGS),
)
def test_shift_round_int64_property(x: int, shift: int, rounding: Rounding) -> None:
    got = shift_round(np.array([x], dtype=np.int64), shift, rounding)
    assert int(got[0]) == ref_shift(x, shift, rounding)


@settings(max_examples=300, deadline=None)
@given(
    x=st.integers(-(2**200), 2**200),
    shift=st.integers(-70, 210),
    rounding=st.sampled_from(ALL_ROUNDINGS),
)
@example(x=2**71 + 2**9, shift=10, rounding=Rounding.HALF_EVEN)
@example(x=-(2**71) - 3 * 2**9, shift=10, rounding=Rounding.HALF_EVEN)
def test_shift_round_object_property(x: int, shift: int, rounding: Rounding) -> None:
    got = shift_round(np.array([x], dtype=object), shift, rounding)
    assert got[0] == ref_shift(x, shift, rounding)


# -- round_scaled ----------------------------------------------------------------------------
@pytest.mark.parametrize("rounding", ALL_ROUNDINGS)
def test_round_scaled_on_eighths(rounding: Rounding) -> None:
    """Every multiple of 1/8 in [-40, 40]: exact ties (k/2) included."""
    ks = np.arange(-320, 321)
    x = ks / 8.0
    got = round_scaled(x, rounding)
    assert got.tolist() == [ref_round(Fraction(int(k), 8), rounding) for k in ks]


def test_round_scaled_ties_differ_between_half_up_and_half_even() -> None:
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    assert round_scaled(x, Rounding.HALF_UP).tolist() == [-2, -1, 0, 1, 2, 3]
    assert round_scaled(x, Rounding.HALF_EVEN).tolist() == [-2, -2, 0, 0, 2, 2]
    assert round_scaled(x, Rounding.FLOOR).tolist() == [-3, -2, -1, 0, 1, 2]


@settings(max_examples=400, deadline=None)
@given(
    x=st.floats(min_value=-(2.0**51), max_value=2.0**51, allow_nan=False, allow_infinity=False),
    rounding=st.sampled_from([Rounding.FLOOR, Rounding.HALF_EVEN]),
)
@example(x=0.49999999999999994, rounding=Rounding.HALF_EVEN)
@example(x=-2.5000000000000004, rounding=Rounding.HALF_EVEN)
def test_round_scaled_property(x: float, rounding: Rounding) -> None:
    assert round_scaled(np.array([x]), rounding)[0] == ref_round(Fraction(x), rounding)


@settings(max_examples=300, deadline=None)
@given(k=st.integers(-(2**40), 2**40))
def test_round_scaled_half_up_on_a_fine_grid(k: int) -> None:
    """HALF_UP on multiples of 2**-10 (where x + 0.5 is exact in float64)."""
    x = math.ldexp(k, -10)
    assert round_scaled(np.array([x]), Rounding.HALF_UP)[0] == ref_round(Fraction(k, 1024), Rounding.HALF_UP)


def test_round_scaled_half_up_just_below_a_tie() -> None:
    x = np.array([0.49999999999999994, 1.4999999999999998, 2.0**52 + 1, -(2.0**52) - 1])
    expected = [ref_round(Fraction(float(v)), Rounding.HALF_UP) for v in x]
    assert expected == [0, 1, 2**52 + 1, -(2**52) - 1]
    assert round_scaled(x, Rounding.HALF_UP).tolist() == expected


# -- saturate --------------------------------------------------------------------------------
@pytest.mark.parametrize(("bits", "signed"), [(b, s) for b in range(1, 9) for s in (True, False) if b >= 1 + s])
def test_saturate_and_wrap_exhaustive(bits: int, signed: bool) -> None:
    patterns = range(1 << bits)
    values = [p - (1 << bits) if signed and p >= 1 << (bits - 1) else p for p in patterns]
    lo, hi = min(values), max(values)
    codes = np.arange(-700, 701, dtype=np.int64)
    sat = saturate(codes, lo, hi, Overflow.SATURATE, bits, signed)
    assert sat.tolist() == [min(max(int(c), lo), hi) for c in codes]
    wrap = saturate(codes, lo, hi, Overflow.WRAP, bits, signed)
    for c, w in zip(codes.tolist(), wrap.tolist(), strict=True):
        assert lo <= w <= hi
        assert (w - c) % (1 << bits) == 0  # same low `bits` bits
    # object (Python int) codes far outside int64 wrap and saturate the same way
    big = np.array([2**80 + 5, -(2**80) - 3], dtype=object)
    assert saturate(big, lo, hi, Overflow.SATURATE, bits, signed).tolist() == [hi, lo]
    wrapped = saturate(big, lo, hi, Overflow.WRAP, bits, signed).tolist()
    assert all(lo <= w <= hi and (w - int(c)) % (1 << bits) == 0 for c, w in zip(big.tolist(), wrapped, strict=True))


def test_saturate_wrap_hand_worked() -> None:
    codes = np.array([127, 128, 129, 255, 256, -128, -129, -130], dtype=np.int64)
    assert saturate(codes, -128, 127, Overflow.WRAP, 8, True).tolist() == [127, -128, -127, -1, 0, -128, 127, 126]
    assert saturate(codes, 0, 255, Overflow.WRAP, 8, False).tolist() == [127, 128, 129, 255, 0, 128, 127, 126]
