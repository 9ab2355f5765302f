"""Power-of-two scale selection for formats with a scale knob (fixed point: frac; minifloat: bias).

`fmt.scaled(t)` is the same format with every value multiplied by 2**t. These helpers pick t from
data: the finest scale whose range holds a bound (min/max, percentile), or the candidate that
minimises the quantization MSE. Dynamic fixed point and the PTQ calibrators build on them.
"""

from __future__ import annotations

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics.base import finest_scale_exponent
from hwgen.numerics.fixed import FixedPoint
from hwgen.numerics.minifloat import Minifloat, unit_grid
from hwgen.numerics.rounding import Rounding

#: formats whose grid moves by powers of two through `scaled(t)`
ScalableFormat = FixedPoint | Minifloat
#: how far finer than the min/max scale the MSE search looks (each step clips one more binade)
MSE_SEARCH_STEPS = 12
#: clamp of the chosen scale exponent (keeps fixed-point fractions within what the backends take)
SCALE_LIMIT = 64


def is_scalable(fmt: object) -> bool:
    return isinstance(fmt, FixedPoint | Minifloat)


def range_threshold(fmt: ScalableFormat) -> float:
    """Largest |x| that saturates no worse than nearest rounding just below the top value."""
    if isinstance(fmt, FixedPoint):
        return (fmt.max_code + 0.5) * fmt.step
    if isinstance(fmt, Minifloat):
        return float(np.ldexp(unit_grid(fmt.exp_bits, fmt.man_bits, fmt.denorm).top_threshold, -fmt.bias))
    raise FormatError(f"{fmt}: has no power-of-two scale to choose")


def fit_bound(fmt: ScalableFormat, bound: float) -> ScalableFormat:
    """The finest `fmt.scaled(t)` whose range holds `bound` (a zero bound leaves fmt unchanged)."""
    if not np.isfinite(bound) or bound <= 0:
        return fmt
    t = int(finest_scale_exponent(np.array(bound), range_threshold(fmt), -SCALE_LIMIT, SCALE_LIMIT))
    return fmt.scaled(t)


def quant_mse(fmt: object, x: np.ndarray, rounding: Rounding, **kw: int) -> float:
    """Mean squared quantization error of x in fmt."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 0.0
    q = fmt.quantize(x, rounding=rounding, **kw)  # type: ignore[attr-defined]
    return float(np.mean((q - x) ** 2))


def search_mse(
    fmt: ScalableFormat, x: np.ndarray, rounding: Rounding, extra: tuple[ScalableFormat, ...] = ()
) -> tuple[ScalableFormat, float]:
    """The min-MSE scale among fit_bound(max |x|) and the MSE_SEARCH_STEPS finer ones (plus `extra`).

    The min/max choice is the first candidate and wins ties, so the result is never worse than it.
    """
    x = np.asarray(x, dtype=np.float64)
    start = fit_bound(fmt, float(np.max(np.abs(x))) if x.size else 0.0)
    cands = [start] + [start.scaled(-k) for k in range(1, MSE_SEARCH_STEPS + 1)] + list(extra)
    errs = [quant_mse(c, x, rounding) for c in cands]
    i = int(np.argmin(errs))
    return cands[i], errs[i]
