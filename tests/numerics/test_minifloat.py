"""Minifloat specifics: the named formats' ranges, denormals present or absent, the bias knob."""

from __future__ import annotations

import numpy as np
import pytest

from hwgen.errors import FormatError
from hwgen.numerics import Minifloat, Rounding


@pytest.mark.parametrize(
    ("fmt", "max_value", "min_positive"),
    [
        (Minifloat(4, 3), 480.0, 2.0**-9),  # E4M3 bias 7, no NaN: 1.875 * 2**8
        (Minifloat(5, 2), 114688.0, 2.0**-16),  # E5M2 bias 15, all-ones exponent is a binade: 1.75 * 2**16
        (Minifloat(2, 1), 6.0, 0.5),  # E2M1 bias 1 (the OCP FP4 grid)
        (Minifloat(4, 3, denorm=False), 480.0, 1.125 * 2.0**-7),
    ],
    ids=str,
)
def test_named_formats(fmt: Minifloat, max_value: float, min_positive: float) -> None:
    assert fmt.max_value == max_value
    assert fmt.min_positive == min_positive
    q = fmt.quantize(np.array([1e9, -1e9, max_value * 1.01]), rounding=Rounding.HALF_EVEN)
    assert q.tolist() == [max_value, -max_value, max_value]


def test_e2m1_grid() -> None:
    pos = Minifloat(2, 1).to_float(Minifloat(2, 1).all_codes())
    assert sorted(set(pos.tolist())) == [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]


def test_denormals_present_or_absent() -> None:
    with_d, without = Minifloat(3, 2, bias=3), Minifloat(3, 2, bias=3, denorm=False)
    vd = np.unique(with_d.to_float(with_d.all_codes()))
    vn = np.unique(without.to_float(without.all_codes()))
    # with denormals: 0 .. 2**(1-bias) evenly spaced by 2**(1-bias-M)
    small_d = vd[(vd >= 0) & (vd <= 2.0**-2)]
    assert np.all(np.diff(small_d) == 2.0**-4) and small_d[0] == 0
    # without: nothing between 0 and 2**-bias * (1 + 2**-M); f = 0 is an ordinary binade
    pos_n = vn[vn > 0]
    assert pos_n[0] == 2.0**-3 * 1.25
    assert np.all(np.diff(pos_n[:4]) == 2.0**-5)
    # nearest rounding across the gap: half of the smallest goes to 0 (even) or up (HALF_UP)
    half = pos_n[0] / 2
    assert without.quantize(np.array([half, -half]), rounding=Rounding.HALF_EVEN).tolist() == [0.0, 0.0]
    assert without.quantize(np.array([half, -half]), rounding=Rounding.HALF_UP).tolist() == [pos_n[0], 0.0]
    assert without.quantize(np.array([half, -half]), rounding=Rounding.FLOOR).tolist() == [0.0, -pos_n[0]]


def test_bias_scales_every_value_by_a_power_of_two() -> None:
    a, b = Minifloat(4, 3, bias=7), Minifloat(4, 3, bias=10)
    assert a.scaled(-3) == b
    np.testing.assert_array_equal(b.to_float(b.all_codes()), a.to_float(a.all_codes()) / 8)


def test_tiny_negative_floors_to_the_negative_neighbour() -> None:
    f = Minifloat(2, 1)
    assert f.quantize(np.array([-1e-300]), rounding=Rounding.FLOOR).tolist() == [-0.5]
    assert f.quantize(np.array([-1e-300]), rounding=Rounding.HALF_EVEN).tolist() == [0.0]


@pytest.mark.parametrize(
    "kwargs", [{"exp_bits": 0, "man_bits": 3}, {"exp_bits": 4, "man_bits": -1}, {"exp_bits": 9, "man_bits": 7}]
)
def test_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(FormatError, match="minifloat"):
        Minifloat(**kwargs)


def test_rejects_bad_codes_and_non_finite() -> None:
    f = Minifloat(2, 1)
    with pytest.raises(FormatError, match=r"codes must lie in \[0, 15\]"):
        f.decode(np.array([16]))
    with pytest.raises(FormatError, match="NaN or infinity"):
        f.encode(np.array([np.nan]), rounding=Rounding.HALF_EVEN)
