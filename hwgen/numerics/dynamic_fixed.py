"""Dynamic fixed point: fixed point whose binary point is chosen per tensor (per layer) from data.

The result is an ordinary `FixedPoint`; only how its `frac` is chosen differs.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics.fixed import FixedPoint
from hwgen.numerics.rounding import Rounding
from hwgen.numerics.scaling import fit_bound, search_mse


class FracMethod(StrEnum):
    """How the binary point is placed."""

    MINMAX = "minmax"  #: finest frac whose range holds max |x| (no clipping)
    PERCENTILE = "percentile"  #: finest frac whose range holds the given percentile of |x|
    MSE = "mse"  #: the frac (at or finer than min/max) with the least quantization MSE


def fixed_for_tensor(
    x: np.ndarray,
    bits: int,
    *,
    signed: bool | None = None,
    method: FracMethod = FracMethod.MINMAX,
    rounding: Rounding = Rounding.HALF_EVEN,
    percentile: float = 99.99,
) -> FixedPoint:
    """The `bits`-bit FixedPoint for tensor x; signed unless x has no negative value (signed=None)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise FormatError(f"dynamic fixed<{bits}>: the tensor holds NaN or infinity")
    if signed is None:
        signed = bool(x.size and np.min(x) < 0)
    base = FixedPoint(bits, bits - 1 if signed else bits, signed)
    method = FracMethod(method)
    mag = np.abs(x)
    if method is FracMethod.MSE:
        return search_mse(base, x, rounding)[0]  # type: ignore[return-value]
    if method is FracMethod.PERCENTILE:
        bound = float(np.percentile(mag, percentile)) if mag.size else 0.0
    else:
        bound = float(mag.max()) if mag.size else 0.0
    return fit_bound(base, bound)  # type: ignore[return-value]
