"""Fixed point: value = code * 2**-frac, with `bits`-bit signed or unsigned codes.

`Float32` marks a value that is not quantized (the float reference graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics.base import DyadicRange
from hwgen.numerics.rounding import Overflow, Rounding, round_scaled, saturate


@runtime_checkable
class NumberFormat(Protocol):
    """What every number format offers (see DESIGN: the numerical contract)."""

    @property
    def name(self) -> str: ...

    @property
    def bits(self) -> int: ...


@dataclass(frozen=True)
class Float32:
    """An unquantized IEEE float32 tensor."""

    @property
    def name(self) -> str:
        return "float32"

    @property
    def bits(self) -> int:
        return 32

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class FixedPoint:
    """Two's-complement (or unsigned) fixed point with `frac` fractional bits.

    `frac` may be negative (a coarse scale) or larger than `bits` (a fine one): only
    `code * 2**-frac` matters.
    """

    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.frac, int) or isinstance(self.frac, bool):
            raise FormatError(f"fixed point: frac must be an integer, got {self.frac!r}")
        if not isinstance(self.bits, int) or self.bits < 1 or (self.signed and self.bits < 2):
            raise FormatError(f"{self.name}: a fixed-point format needs bits >= {2 if self.signed else 1}")

    @property
    def name(self) -> str:
        return f"{'' if self.signed else 'u'}fixed<{self.bits},{self.frac}>"

    def __str__(self) -> str:
        return self.name

    @property
    def min_code(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max_code(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def step(self) -> float:
        """The value of one code unit, 2**-frac."""
        return math.ldexp(1.0, -self.frac)

    @property
    def max_value(self) -> float:
        return self.max_code * self.step

    @property
    def min_value(self) -> float:
        return self.min_code * self.step

    def storage_bits(self, shape: tuple[int, ...]) -> int:
        return self.bits * int(np.prod(shape, dtype=np.int64))

    def dyadic_range(self) -> DyadicRange:
        return DyadicRange(max(-self.min_code, self.max_code), -self.frac, -self.frac)

    def all_codes(self) -> np.ndarray:
        """Every code, ascending (= ascending value)."""
        return np.arange(self.min_code, self.max_code + 1, dtype=np.int64)

    def scaled(self, t: int) -> FixedPoint:
        """The same format with every value multiplied by 2**t (t fewer fraction bits)."""
        return FixedPoint(self.bits, self.frac - int(t), self.signed)

    def encode(self, x: np.ndarray, *, rounding: Rounding, overflow: Overflow = Overflow.SATURATE) -> np.ndarray:
        """Quantize float values to int64 codes with the named rounding and overflow modes."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise FormatError(f"{self.name}: cannot encode NaN or infinity")
        scaled = round_scaled(np.ldexp(x, self.frac), rounding)
        if Rounding(rounding) is Rounding.FLOOR:
            # ldexp may underflow a tiny negative value to -0.0, whose floor is 0 instead of -1
            scaled = np.where((scaled == 0) & (x < 0), -1.0, scaled)
        scaled = np.clip(scaled, -(2.0**62), 2.0**62)  # keep int64 conversion defined before saturation
        codes = scaled.astype(np.int64)
        return saturate(codes, self.min_code, self.max_code, overflow, self.bits, self.signed)

    def encode_exact(self, x: np.ndarray) -> np.ndarray:
        """Codes of values that are exactly representable; raises FormatError otherwise."""
        x = np.asarray(x, dtype=np.float64)
        scaled = np.ldexp(x, self.frac)
        codes = np.rint(scaled)
        if np.any(codes != scaled) or np.any(codes < self.min_code) or np.any(codes > self.max_code):
            raise FormatError(f"{self.name}: values are not exactly representable")
        return codes.astype(np.int64)

    def decode(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact dyadic value of codes: (mantissa, exponent) int64 arrays with value = mantissa * 2**exponent."""
        m = np.asarray(codes, dtype=np.int64)
        return m, np.full(m.shape, -self.frac, dtype=np.int64)

    def to_float(self, codes: np.ndarray) -> np.ndarray:
        """float64 view of codes (exact while |code| < 2**53)."""
        return np.ldexp(np.asarray(codes, dtype=np.float64), -self.frac)

    def quantize(self, x: np.ndarray, *, rounding: Rounding, overflow: Overflow = Overflow.SATURATE) -> np.ndarray:
        """Float values rounded onto this format's grid (fake quantization)."""
        return self.to_float(self.encode(x, rounding=rounding, overflow=overflow))


def parse_format(name: str) -> NumberFormat:
    """Parse a canonical format name; see `hwgen.numerics.spec.parse_format` (kept here for old imports)."""
    from hwgen.numerics.spec import parse_format as parse  # spec imports every family, fixed included

    return parse(name)
