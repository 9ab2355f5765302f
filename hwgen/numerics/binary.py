"""Binary (+-alpha) and ternary (-alpha, 0, +alpha) formats with a dyadic scale alpha.

alpha is a per-tensor or per-output-channel scale: computed from the tensor at encode time
(binary: mean |x|, the MSE-optimal scale of sign(x); ternary: TWN, threshold delta = 0.7 * mean |x|,
alpha = mean |x| over |x| > delta), or fixed in the format (`alpha=...`, e.g. chosen by a calibrator
for activations). alpha is held as a code of `SCALE_FORMAT` (bf16-like: 8 significant bits, rounded
to nearest even) so decoded values stay exact dyadic numbers.

Element codes: binary 1 -> +alpha, 0 -> -alpha (the XNOR-popcount convention); ternary -1, 0, +1.
With a fixed alpha, `encode` rounds to the nearest of the values (ties by `rounding`; HALF_EVEN
takes the even code: binary -alpha at 0, ternary 0). With a computed alpha, binary does the same
and ternary applies the TWN threshold instead (|x| > delta, whatever `rounding` says).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics.base import BlockCodes, DyadicRange, check_finite, dyadic_to_float
from hwgen.numerics.minifloat import Minifloat
from hwgen.numerics.rounding import Rounding

#: the format alpha is stored in (16 bits per scale)
SCALE_FORMAT = Minifloat(8, 7, 127, denorm=True)
#: TWN: delta = TWN_THRESHOLD * mean |x|
TWN_THRESHOLD = 0.7


def scale_code(alpha: np.ndarray) -> np.ndarray:
    """Codes of alpha in SCALE_FORMAT, rounded to nearest even (alpha >= 0)."""
    return SCALE_FORMAT.encode(np.asarray(alpha, dtype=np.float64), rounding=Rounding.HALF_EVEN)


@dataclass(frozen=True)
class _Scaled:
    """What binary and ternary share: the scale's granularity and storage."""

    per_channel: bool = False
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.alpha is not None:
            a = float(self.alpha)
            if not (np.isfinite(a) and a > 0):
                raise FormatError(f"{self._family}: alpha must be a positive finite number, got {self.alpha!r}")
            if self.per_channel:
                raise FormatError(
                    f"{self._family}: a fixed alpha is per tensor; give one format per channel instead of <channel>"
                )
            object.__setattr__(self, "alpha", float(SCALE_FORMAT.to_float(scale_code(np.array(a)))))

    _family = "scaled"

    @property
    def name(self) -> str:
        if self.alpha is not None:
            return f"{self._family}<alpha={self.alpha!r}>"
        return f"{self._family}<channel>" if self.per_channel else self._family

    def __str__(self) -> str:
        return self.name

    @property
    def scale_bits(self) -> int:
        return SCALE_FORMAT.bits

    def storage_bits(self, shape: tuple[int, ...], axis: int = 0) -> int:
        n = int(np.prod(shape, dtype=np.int64))
        scales = shape[axis] if self.per_channel and len(shape) else 1
        return self.bits * n + self.scale_bits * scales  # type: ignore[attr-defined]

    def dyadic_range(self) -> DyadicRange:
        if self.alpha is not None:
            m, e = SCALE_FORMAT.decode(scale_code(np.array(self.alpha)))
            return DyadicRange(abs(int(m)), int(e), int(e))
        return SCALE_FORMAT.dyadic_range()

    def _group_axes(self, ndim: int, axis: int) -> tuple[int, ...]:
        if not self.per_channel or ndim == 0:
            return tuple(range(ndim))
        if not -ndim <= axis < ndim:
            raise FormatError(f"{self.name}: channel axis {axis} is out of range for a {ndim}-d tensor")
        return tuple(i for i in range(ndim) if i != axis % ndim)

    def _alpha_codes(self, x: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
        if self.alpha is not None:
            return np.full((1,) * x.ndim, scale_code(np.array(self.alpha)), dtype=np.int64)
        return scale_code(alpha)

    def decode(self, codes: BlockCodes) -> tuple[np.ndarray, np.ndarray]:
        el = self._element_values(np.asarray(codes.elements, dtype=np.int64))
        am, ae = SCALE_FORMAT.decode(codes.shared_per_element())
        if np.any(am < 0):
            raise FormatError(f"{self.name}: scale codes must be non-negative")
        return (el * am).astype(np.int64), ae.astype(np.int64)

    def to_float(self, codes: BlockCodes) -> np.ndarray:
        return dyadic_to_float(*self.decode(codes))

    def quantize(self, x: np.ndarray, *, rounding: Rounding, axis: int = 0) -> np.ndarray:
        return self.to_float(self.encode(x, rounding=rounding, axis=axis))  # type: ignore[attr-defined]

    def _element_values(self, c: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class Binary(_Scaled):
    """`binary`, `binary<channel>` (alpha per output channel) or `binary<alpha=A>` (fixed alpha)."""

    _family = "binary"

    @property
    def bits(self) -> int:
        return 1

    def all_codes(self) -> np.ndarray:
        return np.array([0, 1], dtype=np.int64)

    def _element_values(self, c: np.ndarray) -> np.ndarray:
        if np.any((c != 0) & (c != 1)):
            raise FormatError(f"{self.name}: element codes must be 0 or 1")
        return 2 * c - 1

    def encode(self, x: np.ndarray, *, rounding: Rounding, axis: int = 0) -> BlockCodes:
        """Codes of the nearest of +-alpha (alpha = mean |x| per group unless fixed)."""
        x = check_finite(x, self.name)
        red = self._group_axes(x.ndim, axis)
        alpha = None if self.alpha is not None else np.mean(np.abs(x), axis=red, keepdims=True)
        shared = self._alpha_codes(x, alpha)
        a = np.broadcast_to(SCALE_FORMAT.to_float(shared), x.shape)
        rounding = Rounding(rounding)
        if rounding is Rounding.FLOOR:
            el = x >= a
        elif rounding is Rounding.HALF_UP:
            el = x >= 0
        else:
            el = x > 0  # the tie at 0 goes to the even code 0 (-alpha)
        return BlockCodes(el.astype(np.int64), shared, None, 0)


@dataclass(frozen=True)
class Ternary(_Scaled):
    """`ternary`, `ternary<channel>` (TWN alpha per output channel) or `ternary<alpha=A>` (fixed alpha)."""

    _family = "ternary"

    @property
    def bits(self) -> int:
        return 2

    def all_codes(self) -> np.ndarray:
        return np.array([-1, 0, 1], dtype=np.int64)

    def _element_values(self, c: np.ndarray) -> np.ndarray:
        if np.any(np.abs(c) > 1):
            raise FormatError(f"{self.name}: element codes must be -1, 0 or 1")
        return c

    def encode(self, x: np.ndarray, *, rounding: Rounding, axis: int = 0) -> BlockCodes:
        """TWN codes with a computed alpha, else the nearest of {-alpha, 0, alpha} by `rounding`."""
        x = check_finite(x, self.name)
        if self.alpha is None:
            red = self._group_axes(x.ndim, axis)
            mag = np.abs(x)
            delta = TWN_THRESHOLD * np.mean(mag, axis=red, keepdims=True)
            keep = mag > delta
            count = np.sum(keep, axis=red, keepdims=True)
            alpha = np.sum(np.where(keep, mag, 0.0), axis=red, keepdims=True) / np.maximum(count, 1)
            shared = self._alpha_codes(x, alpha)
            el = np.where(keep, np.sign(x), 0)
            el = np.where(np.broadcast_to(SCALE_FORMAT.to_float(shared), x.shape) > 0, el, 0)
            return BlockCodes(el.astype(np.int64), shared, None, 0)
        shared = self._alpha_codes(x, None)
        a = float(SCALE_FORMAT.to_float(shared).reshape(-1)[0])
        h = a / 2  # exact: a is dyadic
        rounding = Rounding(rounding)
        if rounding is Rounding.FLOOR:
            el = np.where(x >= a, 1, np.where(x >= 0, 0, -1))
        elif rounding is Rounding.HALF_UP:
            el = np.where(x >= h, 1, np.where(x >= -h, 0, -1))
        else:
            el = np.where(x > h, 1, np.where(x < -h, -1, 0))
        return BlockCodes(el.astype(np.int64), shared, None, 0)
