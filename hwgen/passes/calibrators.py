"""PTQ calibrators: choose a format's own scale from data, per tensor or per output channel.

Methods: min/max (the finest scale that holds max |x|), percentile (the finest that holds the p-th
percentile of |x|, clipping the rest), and MSE (the candidate with the least quantization error;
the min/max choice is always a candidate, so MSE is never worse than min/max).

What "scale" means per family:
- fixed point: the power-of-two step (frac); minifloat: the bias (both via `fmt.scaled(t)`);
- binary/ternary: a fixed alpha (`Binary(alpha=...)`): min/max alpha = max |x|, percentile alpha =
  the percentile of |x|, MSE searches alpha (including mean |x| and the TWN alpha);
- block formats (BFP, block minifloat, block log): each block picks its own exponent/bias at encode
  time; there is no static scale, so every method returns the format unchanged (its MSE is reported).
Per channel, each index along `axis` gets its own format; the MSE search also tries the per-tensor
choice, so per-channel MSE is never worse than per-tensor MSE.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics import Binary, FixedPoint, Minifloat, QuantFormat, Rounding, Ternary
from hwgen.numerics.binary import TWN_THRESHOLD
from hwgen.numerics.scaling import fit_bound, is_scalable, quant_mse, search_mse

#: candidate alphas the MSE search of binary/ternary tries between 0 and max |x|
ALPHA_CANDIDATES = 64


class CalibMethod(StrEnum):
    """How a scale is chosen from data."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"


@dataclass(frozen=True)
class Calibration:
    """The calibrated format(s) of one tensor.

    Per tensor: `fmt`. Per channel: `channel_formats[i]` is the format of index i along `axis`
    (`fmt` is then the per-tensor choice, kept for reference). `mse` is the mean squared
    quantization error of the whole tensor with the chosen format(s).
    """

    fmt: QuantFormat
    channel_formats: tuple[QuantFormat, ...] | None
    axis: int
    method: CalibMethod
    mse: float
    block_axis: int = -1  #: the blocked axis of block formats (the reduction axis)

    def quantize(self, x: np.ndarray, *, rounding: Rounding) -> np.ndarray:
        """x rounded onto the calibrated grid(s)."""
        x = np.asarray(x, dtype=np.float64)
        if self.channel_formats is None:
            return _quantize(self.fmt, x, rounding, self.block_axis)
        xs = np.moveaxis(x, self.axis, 0)
        out = np.stack([_quantize(f, xs[i], rounding, self.block_axis) for i, f in enumerate(self.channel_formats)])
        return np.moveaxis(out, 0, self.axis)


def _quantize(fmt: QuantFormat, x: np.ndarray, rounding: Rounding, block_axis: int) -> np.ndarray:
    if isinstance(fmt, FixedPoint | Minifloat | Binary | Ternary):
        return fmt.quantize(x, rounding=rounding)
    if x.ndim == 0:
        return fmt.quantize(x.reshape(1), rounding=rounding, axis=0).reshape(())  # type: ignore[call-arg]
    return fmt.quantize(x, rounding=rounding, axis=block_axis)  # type: ignore[call-arg]


def _mse(fmt: QuantFormat, x: np.ndarray, rounding: Rounding, block_axis: int) -> float:
    return float(np.mean((_quantize(fmt, x, rounding, block_axis) - x) ** 2)) if x.size else 0.0


def _bound(x: np.ndarray, method: CalibMethod, percentile: float) -> float:
    mag = np.abs(x)
    if not mag.size:
        return 0.0
    return float(np.percentile(mag, percentile)) if method is CalibMethod.PERCENTILE else float(mag.max())


def _alpha_format(fmt: Binary | Ternary, alpha: float) -> Binary | Ternary:
    return type(fmt)(alpha=alpha) if alpha > 0 else type(fmt)(alpha=np.finfo(np.float32).tiny)


def _alpha_candidates(fmt: Binary | Ternary, x: np.ndarray) -> list[float]:
    mag = np.abs(x)
    top = float(mag.max()) if mag.size else 0.0
    cands = [top, float(mag.mean()) if mag.size else 0.0]
    if isinstance(fmt, Ternary) and mag.size:
        keep = mag > TWN_THRESHOLD * mag.mean()
        if np.any(keep):
            cands.append(float(mag[keep].mean()))
    cands += list(np.linspace(top / ALPHA_CANDIDATES, top, ALPHA_CANDIDATES))
    return [c for c in cands if c > 0] or [1.0]


def _choose(
    fmt: QuantFormat,
    x: np.ndarray,
    method: CalibMethod,
    percentile: float,
    rounding: Rounding,
    extra: tuple[QuantFormat, ...] = (),
) -> QuantFormat:
    """The format for one tensor (or one channel's slice)."""
    if is_scalable(fmt):
        if method is CalibMethod.MSE:
            return search_mse(fmt, x, rounding, extra=extra)[0]  # type: ignore[arg-type]
        return fit_bound(fmt, _bound(x, method, percentile))  # type: ignore[arg-type]
    if isinstance(fmt, Binary | Ternary):
        if method is not CalibMethod.MSE:
            return _alpha_format(fmt, _bound(x, method, percentile))
        cands = [_alpha_format(fmt, a) for a in _alpha_candidates(fmt, x)] + list(extra)
        errs = [quant_mse(c, x, rounding) for c in cands]
        return cands[int(np.argmin(errs))]
    return fmt  # block formats: the per-block exponent is chosen at encode time


def calibrate_tensor(
    x: np.ndarray,
    fmt: QuantFormat,
    *,
    method: CalibMethod,
    rounding: Rounding,
    per_channel: bool = False,
    axis: int = 0,
    percentile: float = 99.99,
    block_axis: int = -1,
) -> Calibration:
    """Choose fmt's scale for tensor x (weights: axis 0 is the output channel of Dense and Conv).

    Only the template's shape matters (fixed: bits and signedness; minifloat: E, M, denormals;
    binary/ternary: the family): its current scale is replaced.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise FormatError(f"{fmt.name}: cannot calibrate a tensor holding NaN or infinity")
    method = CalibMethod(method)
    if isinstance(fmt, Binary | Ternary) and fmt.per_channel:
        fmt = type(fmt)()  # per-channel alphas come from per_channel=True below
    tensor_fmt = _choose(fmt, x, method, percentile, rounding)
    if not per_channel or x.ndim == 0 or not (is_scalable(fmt) or isinstance(fmt, Binary | Ternary)):
        return Calibration(tensor_fmt, None, axis, method, _mse(tensor_fmt, x, rounding, block_axis), block_axis)
    if not -x.ndim <= axis < x.ndim:
        raise FormatError(f"{fmt.name}: channel axis {axis} is out of range for a {x.ndim}-d tensor")
    ax = axis % x.ndim
    xs = np.moveaxis(x, ax, 0)
    extra = (tensor_fmt,) if method is CalibMethod.MSE else ()
    chans = tuple(_choose(fmt, xs[i], method, percentile, rounding, extra) for i in range(xs.shape[0]))
    cal = Calibration(tensor_fmt, chans, ax, method, 0.0, block_axis)
    q = cal.quantize(x, rounding=rounding)
    return Calibration(tensor_fmt, chans, ax, method, float(np.mean((q - x) ** 2)) if x.size else 0.0, block_axis)
