"""Rounding and overflow modes, and the exact integer operations that implement them.

These functions are the single definition of rounding: the golden model calls them, and the
HLS/RTL emitters spell out the same arithmetic (add half, arithmetic shift, tie fix-up, clamp).
No function here has a default rounding mode: a narrowing that names no mode is a bug.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class Rounding(StrEnum):
    """How a value between two representable codes is resolved."""

    FLOOR = "floor"  #: towards minus infinity (a plain arithmetic right shift)
    HALF_UP = "half_up"  #: to nearest, ties towards plus infinity
    HALF_EVEN = "half_even"  #: to nearest, ties to the even code (unbiased)


class Overflow(StrEnum):
    """What happens to a value outside the representable code range."""

    SATURATE = "saturate"  #: clamp to the nearest end of the range
    WRAP = "wrap"  #: keep the low bits (two's complement wrap-around)


def _as_int(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == object or np.issubdtype(x.dtype, np.integer):
        return x
    raise TypeError(f"expected an integer array, got dtype {x.dtype}")


def shift_round(x: np.ndarray, shift: int, rounding: Rounding) -> np.ndarray:
    """Return x / 2**shift rounded to an integer by `rounding`; exact for int64 and object arrays.

    A negative shift is an exact left shift. Arithmetic right shift is floor division, so
    FLOOR is `x >> s`, HALF_UP is `(x + 2**(s-1)) >> s`, and HALF_EVEN corrects the ties of
    HALF_UP whose result is odd.
    """
    x = _as_int(x)
    rounding = Rounding(rounding)
    if shift <= 0:
        return x * (1 << -shift) if x.dtype == object else np.left_shift(x, -shift)
    if rounding is Rounding.FLOOR:
        return x >> shift
    half = 1 << (shift - 1)
    q = (x + half) >> shift
    if rounding is Rounding.HALF_UP:
        return q
    # HALF_EVEN: a tie is x mod 2**s == half; HALF_UP rounded it up, so take odd results down.
    mask = (1 << shift) - 1
    tie = (x & mask) == half
    odd = (q & 1) == 1
    return q - (tie & odd).astype(np.int64)


def round_scaled(x: np.ndarray, rounding: Rounding) -> np.ndarray:
    """Round float values (already scaled to code units) to integers with `rounding`.

    Scaling by a power of two is exact in float64, so quantizing float data is exact too.
    """
    x = np.asarray(x, dtype=np.float64)
    rounding = Rounding(rounding)
    if rounding is Rounding.FLOOR:
        r = np.floor(x)
    elif rounding is Rounding.HALF_UP:
        r = np.floor(x)
        r = r + (x - r >= 0.5)  # exact: x - floor(x) is representable; floor(x + 0.5) is not
    else:
        r = np.rint(x)  # IEEE round-half-to-even
    return r


def saturate(codes: np.ndarray, lo: int, hi: int, overflow: Overflow, bits: int, signed: bool) -> np.ndarray:
    """Bring integer codes into [lo, hi] by saturation or two's-complement wrap-around."""
    overflow = Overflow(overflow)
    if overflow is Overflow.SATURATE:
        return np.clip(codes, lo, hi)
    mod = 1 << bits
    wrapped = np.mod(codes, mod)
    if signed:
        wrapped = np.where(wrapped >= mod // 2, wrapped - mod, wrapped)
    return wrapped
