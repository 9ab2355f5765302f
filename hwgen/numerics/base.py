"""What every quantized number format offers, and the pieces the format families share.

The contract (DESIGN, "numerical contract"): a format turns floats into integer codes (`encode`),
and every code decodes to an exact dyadic value `m * 2**e` with integer numpy arrays m and e, one
pair per element (`decode`). So every product of two decoded values is exact in integers.

Element-wise formats (fixed, minifloat) encode to an int64 array. Formats with a shared field
(block floating point, block minifloat, block logarithm: one exponent or bias per block; binary and
ternary: one scale per tensor or per output channel) encode to a `BlockCodes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics.rounding import Rounding


@dataclass(frozen=True, eq=False)
class BlockCodes:
    """Element codes plus one shared field per group of elements.

    `shared` has the elements' ndim. Along a blocked `axis` it holds one entry per `block`
    consecutive elements (the last block may be partial); along every other axis its length is
    either the elements' length (one entry per index) or 1 (shared by the whole axis). So a
    per-output-channel scale of a [M, K] weight is `shared.shape == (M, 1)` with `axis=None`.
    """

    elements: np.ndarray  #: int64 element codes, the tensor's shape
    shared: np.ndarray  #: int64 shared field codes (block exponent, block bias, or scale code)
    axis: int | None  #: the blocked axis (non-negative), or None when nothing is blocked
    block: int  #: elements per block along `axis`; 0 when `axis` is None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.elements.shape)

    def shared_per_element(self) -> np.ndarray:
        """The shared field of every element, in the elements' shape."""
        s = np.asarray(self.shared)
        if self.axis is not None:
            n = self.elements.shape[self.axis]
            s = np.take(np.repeat(s, self.block, axis=self.axis), np.arange(n), axis=self.axis)
        return np.broadcast_to(s, self.elements.shape)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlockCodes):
            return NotImplemented
        return (
            self.axis == other.axis
            and self.block == other.block
            and np.array_equal(self.elements, other.elements)
            and np.array_equal(self.shared, other.shared)
            and self.shared.shape == other.shared.shape
        )

    __hash__ = None  # type: ignore[assignment]


#: what `encode` returns: plain element codes, or element codes plus shared fields
Codes: TypeAlias = "np.ndarray | BlockCodes"


@dataclass(frozen=True)
class DyadicRange:
    """Bounds of the decoded (m, e) pairs of a format: |m| <= max_abs_m and e_min <= e <= e_max.

    The accumulator of a dot product is sized from these (see `hwgen.sim.format_mac`).
    """

    max_abs_m: int
    e_min: int
    e_max: int


@runtime_checkable
class QuantFormat(Protocol):
    """The interface of every quantized format (FixedPoint, Minifloat, BlockFloat, BlockMinifloat,
    BlockLog, Binary, Ternary). Keyword arguments beyond `rounding` are family-specific: `overflow`
    for fixed point, `axis` (the blocked or channel axis) for formats with shared fields."""

    @property
    def name(self) -> str: ...  # canonical spec string; parse_format(f.name) == f

    @property
    def bits(self) -> int: ...  # bits per element code (shared fields excluded)

    def storage_bits(self, shape: tuple[int, ...]) -> int: ...  # elements + shared fields + scales

    def encode(self, x: np.ndarray, *, rounding: Rounding) -> Codes: ...

    def decode(self, codes: Codes) -> tuple[np.ndarray, np.ndarray]: ...  # (m, e) int64, per element

    def to_float(self, codes: Codes) -> np.ndarray: ...

    def quantize(self, x: np.ndarray, *, rounding: Rounding) -> np.ndarray: ...

    def dyadic_range(self) -> DyadicRange: ...


# -- helpers shared by the families ----------------------------------------------------------
def check_finite(x: np.ndarray, name: str) -> np.ndarray:
    """float64 view of x; refuses NaN and infinities (no format here has a code for them)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise FormatError(f"{name}: cannot encode NaN or infinity; clean the tensor first")
    return x


def dyadic_to_float(m: np.ndarray, e: np.ndarray) -> np.ndarray:
    """float64 m * 2**e (exact while |m| < 2**53 and the result is a normal float)."""
    return np.ldexp(np.asarray(m, dtype=np.float64), np.asarray(e, dtype=np.int64).astype(np.int32))


def ldexp_safe(x: np.ndarray, t: np.ndarray | int) -> np.ndarray:
    """x * 2**t that never turns a non-zero value into a signed zero (keeps floor of tiny negatives right)."""
    y = np.ldexp(x, np.asarray(t, dtype=np.int64).astype(np.int32))
    return np.where((y == 0) & (x != 0), np.copysign(5e-324, x), y)


@dataclass(frozen=True, eq=False)
class Grid:
    """A sorted set of representable values (in units of the format's scale) and their codes.

    `round` maps floats to the codes of the nearest values (ties by `Rounding`, HALF_EVEN picks the
    even code) or, for FLOOR, the largest value not above; outside the grid it saturates.
    """

    values: np.ndarray  #: float64, strictly increasing
    codes: np.ndarray  #: int64 code of each value (the canonical one when two codes decode equal)

    def round(self, x: np.ndarray, rounding: Rounding) -> np.ndarray:
        rounding = Rounding(rounding)
        v = self.values
        lo = np.clip(np.searchsorted(v, x, side="right") - 1, 0, len(v) - 1)
        hi = np.minimum(lo + 1, len(v) - 1)
        if rounding is Rounding.FLOOR:
            pick_hi = np.zeros(np.shape(x), dtype=bool)
        else:
            mid = (v[lo] + v[hi]) / 2  # exact: neighbouring grid values have short mantissas
            pick_hi = x > mid
            tie = x == mid
            if rounding is Rounding.HALF_UP:
                pick_hi |= tie
            else:
                pick_hi |= tie & (self.codes[hi] % 2 == 0)
        idx = np.where(pick_hi, hi, lo)
        idx = np.where(x < v[0], 0, idx)  # below the grid: saturate to the smallest value
        return self.codes[idx]

    @property
    def top_threshold(self) -> float:
        """Largest |x| (in scale units) that saturates no worse than nearest rounding below the top.

        top + half the top step: block formats and calibrators pick the finest scale whose
        threshold still holds a tensor's max |x|.
        """
        top = float(max(self.values[-1], -self.values[0]))
        pos = np.abs(self.values)
        below = float(np.max(pos[pos < top])) if np.any(pos < top) else 0.0
        return top + (top - below) / 2


def finest_scale_exponent(bound: np.ndarray, threshold: float, lo: int, hi: int) -> np.ndarray:
    """Smallest integer t in [lo, hi] with bound * 2**-t <= threshold (t = 0 clamped where bound is 0).

    Exact: candidates come from frexp and are checked with power-of-two scaling.
    """
    b = np.asarray(bound, dtype=np.float64)
    safe = np.where(b > 0, b, 1.0)
    t = (np.frexp(safe)[1] - np.frexp(threshold)[1]).astype(np.int64)
    for _ in range(3):  # frexp is within one binade of the answer; fix up exactly
        t = np.where(np.ldexp(safe, (-t).astype(np.int32)) > threshold, t + 1, t)
    for _ in range(3):
        t = np.where(np.ldexp(safe, (-(t - 1)).astype(np.int32)) <= threshold, t - 1, t)
    t = np.where(b > 0, t, 0)
    return np.clip(t, lo, hi).astype(np.int64)


def to_blocks(x: np.ndarray, axis: int, block: int) -> tuple[np.ndarray, int]:
    """x with `axis` moved last, zero-padded to whole blocks and split: [..., n_blocks, block]; and n."""
    xt = np.moveaxis(np.asarray(x), axis, -1)
    n = xt.shape[-1]
    nb = max(1, -(-n // block))
    pad = nb * block - n
    if pad:
        xt = np.concatenate([xt, np.zeros((*xt.shape[:-1], pad), dtype=xt.dtype)], axis=-1)
    return xt.reshape(*xt.shape[:-1], nb, block), n


def from_blocks(xb: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Inverse of `to_blocks`: [..., n_blocks, block] back to the tensor layout with `axis` of length n."""
    flat = xb.reshape(*xb.shape[:-2], xb.shape[-2] * xb.shape[-1])[..., :n]
    return np.moveaxis(flat, -1, axis)


def normalize_axis(axis: int, ndim: int, name: str) -> int:
    if ndim == 0:
        raise FormatError(f"{name}: a block format needs a tensor with at least one axis, got a scalar")
    if not -ndim <= axis < ndim:
        raise FormatError(f"{name}: axis {axis} is out of range for a {ndim}-d tensor")
    return axis % ndim


def signed_range(bits: int) -> tuple[int, int]:
    """Two's-complement range of a `bits`-bit shared field."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
