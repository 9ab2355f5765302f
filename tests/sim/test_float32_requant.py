"""The integer algorithm of the float32 requantization (what the hardware runs) against onnxruntime's
float32 arithmetic (integer_kernels.requantize_float32): ties at every rounding step, accumulators at
and beyond 2**24, full and minimal mantissas, tiny and huge ratios, saturation at both ends."""

from __future__ import annotations

import numpy as np
import pytest

from hwgen.numerics import Rounding
from hwgen.sim.integer_kernels import (
    requantize_float32,
    requantize_float32_integer,
    requantize_scaled,
    round_significant,
)


def _both(acc: np.ndarray, m: int, n: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    acc = np.asarray(acc, dtype=np.int64).reshape(-1, 1)
    want = requantize_float32(acc, m, n, lo, hi)[:, 0]
    got = np.array([requantize_float32_integer(int(a), m, n, lo, hi) for a in acc[:, 0]], dtype=np.int64)
    return want, got


def test_round_significant_is_float32_conversion() -> None:
    rng = np.random.default_rng(0)
    xs = np.concatenate(
        [
            np.arange((1 << 24) - 40, (1 << 24) + 200),  # every tie just above 2**24
            np.arange((1 << 26) - 64, (1 << 26) + 64),
            rng.integers(0, 1 << 52, 3000),
        ]
    )
    want = xs.astype(np.float64).astype(np.float32).astype(np.float64).astype(np.int64)
    got = np.array([round_significant(int(x)) for x in xs])
    np.testing.assert_array_equal(got, want)


#: (M, n): a full mantissa, the smallest normalized one, 0.75 (ties at acc = 2 mod 4), 1.0 as (1, 0),
#: a ratio > 1, a tiny ratio (every output 0 or +-1), a ratio >= 2**24 (n < 0) and two float32 ratios
RATIOS = [(0xFFFFFF, 30), (0x800000, 27), (0xC00000, 24), (1, 0), (0xB504F3, 22), (0x800001, 60), (0xA00001, -3),
          (0xA3D70A, 27), (0x9D89D9, 33)]  # fmt: skip


@pytest.mark.parametrize(("m", "n"), RATIOS)
def test_integer_algorithm_equals_float32(m: int, n: int) -> None:
    rng = np.random.default_rng(m ^ (n & 0xFF))
    lo, hi = -(1 << 31), (1 << 31) - 1
    acc = np.concatenate(
        [
            np.arange(-2000, 2001),
            np.arange((1 << 24) - 300, (1 << 24) + 300),  # float32(acc) rounds from here on
            -np.arange((1 << 24) - 300, (1 << 24) + 300),
            rng.integers(-(1 << 36), 1 << 36, 4000),
            rng.integers(-(1 << 26), 1 << 26, 4000),
        ]
    )
    want, got = _both(acc, m, n, lo, hi)
    np.testing.assert_array_equal(got, want)


def test_double_rounding_cases_are_found_and_equal() -> None:
    """Exact products just off a tie that float32 rounds onto it (and ties it rounds off): the cases
    where float32 and the exact multiplier + shift disagree, searched at random and checked."""
    rng = np.random.default_rng(5)
    differ = 0
    for _ in range(300):
        m = int(rng.integers(1 << 23, 1 << 24))
        n = int(rng.integers(20, 40))
        acc = rng.integers(-(1 << 27), 1 << 27, 400)
        want, got = _both(acc, m, n, -(1 << 40), 1 << 40)
        np.testing.assert_array_equal(got, want)
        exact = requantize_scaled(acc.reshape(-1, 1), m, n, Rounding.HALF_EVEN, -(1 << 40), 1 << 40)[:, 0]
        differ += int((exact != want).sum())
    assert differ > 50  # the search really reached the float32-only roundings


@pytest.mark.parametrize(("lo", "hi"), [(-128, 127), (0, 255), (-128, 0)])
def test_saturation_both_ends(lo: int, hi: int) -> None:
    acc = np.array([-(1 << 40), -(1 << 30), -300, -129, -128, -1, 0, 1, 127, 128, 255, 256, 1 << 30, 1 << 40])
    for m, n in ((0xFFFFFF, 24), (0x800000, 20), (1, 0)):
        want, got = _both(acc, m, n, lo, hi)
        np.testing.assert_array_equal(got, want)
        assert got.min() == lo and got.max() == hi
