"""Dynamic fixed point: the binary point follows the tensor."""

from __future__ import annotations

import numpy as np
import pytest

from hwgen.numerics import FixedPoint, FracMethod, Rounding, fixed_for_tensor


@pytest.mark.parametrize(("bound", "frac"), [(1.0, 6), (0.99, 7), (127.4, 0), (127.6, -1), (0.003, 15)])
def test_minmax_is_the_finest_frac_that_holds_max(bound: float, frac: int) -> None:
    f = fixed_for_tensor(np.array([bound, -bound / 3]), 8)
    assert f == FixedPoint(8, frac, signed=True)
    assert bound <= (f.max_code + 0.5) * f.step and not bound <= (f.max_code + 0.5) * f.step / 2


def test_unsigned_when_nothing_is_negative() -> None:
    assert fixed_for_tensor(np.array([0.0, 3.0]), 4) == FixedPoint(4, 2, signed=False)


def test_mse_and_percentile_clip_outliers() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(5000) * 0.1, [2.0]])
    mm = fixed_for_tensor(x, 4)
    mse = fixed_for_tensor(x, 4, method=FracMethod.MSE, rounding=Rounding.HALF_EVEN)
    pct = fixed_for_tensor(x, 4, method=FracMethod.PERCENTILE, percentile=99.0)
    assert mse.frac > mm.frac and pct.frac > mm.frac

    def err(f: FixedPoint) -> float:
        return float(np.mean((f.quantize(x, rounding=Rounding.HALF_EVEN) - x) ** 2))

    assert err(mse) < err(mm)
