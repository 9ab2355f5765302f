"""PTQ calibrators: min/max holds the range, MSE is never worse than min/max, per channel never worse."""

from __future__ import annotations

import numpy as np
import pytest

from hwgen.errors import FormatError
from hwgen.numerics import Binary, BlockFloat, FixedPoint, Minifloat, Rounding, Ternary
from hwgen.passes.calibrators import CalibMethod, calibrate_tensor

RNE = Rounding.HALF_EVEN
TEMPLATES = [
    FixedPoint(4, 0),
    FixedPoint(8, 0),
    Minifloat(2, 1),
    Minifloat(4, 3),
    Minifloat(3, 2, denorm=False),
    Binary(),
    Ternary(),
]


def heavy_tailed(seed: int) -> np.ndarray:
    """A weight-like [16, 64] tensor: Student-t (df=2) rows with very different per-row scales."""
    rng = np.random.default_rng(seed)
    return rng.standard_t(2, (16, 64)) * np.exp2(rng.integers(-6, 0, size=(16, 1)))


def mse(cal, x: np.ndarray) -> float:
    return float(np.mean((cal.quantize(x, rounding=RNE) - x) ** 2))


@pytest.mark.parametrize("fmt", TEMPLATES, ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mse_never_worse_than_minmax_on_heavy_tails(fmt: object, seed: int) -> None:
    x = heavy_tailed(seed)
    for per_channel in (False, True):
        mm = calibrate_tensor(x, fmt, method=CalibMethod.MINMAX, rounding=RNE, per_channel=per_channel)
        best = calibrate_tensor(x, fmt, method=CalibMethod.MSE, rounding=RNE, per_channel=per_channel)
        assert best.mse <= mm.mse
        assert best.mse == pytest.approx(mse(best, x), rel=1e-12)  # the reported figure is the real one


def test_mse_search_strictly_helps_a_low_bit_fixed_point_on_heavy_tails() -> None:
    x = heavy_tailed(0)
    mm = calibrate_tensor(x, FixedPoint(4, 0), method=CalibMethod.MINMAX, rounding=RNE)
    best = calibrate_tensor(x, FixedPoint(4, 0), method=CalibMethod.MSE, rounding=RNE)
    assert best.mse < 0.9 * mm.mse and best.fmt.frac > mm.fmt.frac


@pytest.mark.parametrize(
    ("fmt", "method"),
    [(f, CalibMethod.MSE) for f in TEMPLATES]
    # min/max alpha = max |x| is no error bound for binary/ternary: per channel is not guaranteed better there
    + [(f, CalibMethod.MINMAX) for f in TEMPLATES if not isinstance(f, Binary | Ternary)],
    ids=str,
)
def test_per_channel_never_worse_than_per_tensor(fmt: object, method: CalibMethod) -> None:
    x = heavy_tailed(3)
    t = calibrate_tensor(x, fmt, method=method, rounding=RNE)
    c = calibrate_tensor(x, fmt, method=method, rounding=RNE, per_channel=True)
    assert c.channel_formats is not None and len(c.channel_formats) == 16
    assert c.mse <= t.mse


@pytest.mark.parametrize("fmt", [FixedPoint(6, 0), Minifloat(3, 2)], ids=str)
def test_minmax_never_clips_beyond_half_a_step(fmt: object) -> None:
    x = heavy_tailed(4)
    cal = calibrate_tensor(x, fmt, method=CalibMethod.MINMAX, rounding=RNE)
    top = float(np.max(cal.fmt.to_float(cal.fmt.all_codes())))
    grid = np.unique(np.abs(cal.fmt.to_float(cal.fmt.all_codes())))
    assert np.max(np.abs(x)) <= top + (grid[-1] - grid[-2]) / 2
    # one step finer would clip: the choice is the finest that holds max |x|
    finer = cal.fmt.scaled(-1)
    top_f = float(np.max(finer.to_float(finer.all_codes())))
    grid_f = np.unique(np.abs(finer.to_float(finer.all_codes())))
    assert np.max(np.abs(x)) > top_f + (grid_f[-1] - grid_f[-2]) / 2


def test_percentile_clips_the_tail() -> None:
    x = heavy_tailed(5)
    mm = calibrate_tensor(x, FixedPoint(8, 0), method=CalibMethod.MINMAX, rounding=RNE)
    pc = calibrate_tensor(x, FixedPoint(8, 0), method=CalibMethod.PERCENTILE, rounding=RNE, percentile=99.0)
    assert pc.fmt.frac > mm.fmt.frac
    assert pc.fmt.max_value < np.max(np.abs(x))


def test_binary_mse_alpha_is_mean_abs() -> None:
    x = heavy_tailed(6)
    cal = calibrate_tensor(x, Binary(), method=CalibMethod.MSE, rounding=RNE)
    dyn = Binary().quantize(x, rounding=RNE)  # alpha = mean |x|, the closed-form optimum
    assert cal.mse <= float(np.mean((dyn - x) ** 2)) * (1 + 1e-6)


def test_per_channel_formats_follow_the_axis() -> None:
    x = heavy_tailed(7).T  # channels on axis 1
    cal = calibrate_tensor(x, FixedPoint(8, 0), method=CalibMethod.MINMAX, rounding=RNE, per_channel=True, axis=1)
    assert cal.axis == 1 and len(cal.channel_formats) == 16
    for i, f in enumerate(cal.channel_formats):
        np.testing.assert_array_equal(cal.quantize(x, rounding=RNE)[:, i], f.quantize(x[:, i], rounding=RNE))


def test_block_formats_keep_their_per_block_exponents() -> None:
    x = heavy_tailed(8)
    fmt = BlockFloat(3, 8, 16)
    cal = calibrate_tensor(x, fmt, method=CalibMethod.MSE, rounding=RNE)
    assert cal.fmt == fmt and cal.channel_formats is None
    np.testing.assert_array_equal(cal.quantize(x, rounding=RNE), fmt.quantize(x, rounding=RNE, axis=-1))


def test_refuses_non_finite_and_bad_axis() -> None:
    with pytest.raises(FormatError, match="NaN or infinity"):
        calibrate_tensor(np.array([np.nan]), FixedPoint(8, 0), method=CalibMethod.MINMAX, rounding=RNE)
    with pytest.raises(FormatError, match="axis 3"):
        calibrate_tensor(
            np.ones((2, 2)), FixedPoint(8, 0), method=CalibMethod.MINMAX, rounding=RNE, per_channel=True, axis=3
        )
