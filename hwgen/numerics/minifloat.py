"""Minifloat: 1 sign bit, E exponent bits, M mantissa bits, an integer bias; saturating, no inf/NaN.

Code layout (an unsigned integer): sign << (E+M) | exponent field f << M | mantissa field u.

    f > 0:                    value = +-(2**M + u) * 2**(f - bias - M)     (normal)
    f = 0, denorm:            value = +-u * 2**(1 - bias - M)             (denormal, u = 0 is zero)
    f = 0, no denorm, u > 0:  value = +-(2**M + u) * 2**(-bias - M)       (f = 0 is one more normal binade)
    f = 0, no denorm, u = 0:  zero

The all-ones exponent is an ordinary binade (no inf/NaN), so E4M3 with bias 7 reaches 480;
values beyond the largest saturate. The sign-set zero pattern decodes to 0 and is never produced
by `encode`. `minifloat<e4m3,bias=7,denorm>` is the canonical name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics.base import DyadicRange, Grid, check_finite, dyadic_to_float, ldexp_safe
from hwgen.numerics.rounding import Rounding

#: widest minifloat (sign + E + M) whose encoder enumerates its grid
MAX_MINIFLOAT_BITS = 16


@dataclass(frozen=True)
class Minifloat:
    """A saturating minifloat (see module docstring). bias=None means the IEEE bias 2**(E-1) - 1."""

    exp_bits: int
    man_bits: int
    bias: int = None  # type: ignore[assignment]  # set to the IEEE bias in __post_init__
    denorm: bool = True

    def __post_init__(self) -> None:
        for field, v, lo in (("exp_bits", self.exp_bits, 1), ("man_bits", self.man_bits, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise FormatError(f"minifloat: {field} must be an integer >= {lo}, got {v!r}")
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (self.exp_bits - 1)) - 1)
        if not isinstance(self.bias, int) or isinstance(self.bias, bool):
            raise FormatError(f"minifloat: bias must be an integer, got {self.bias!r}")
        if self.bits > MAX_MINIFLOAT_BITS:
            raise FormatError(
                f"{self.name}: {self.bits} bits is wider than the {MAX_MINIFLOAT_BITS} a minifloat may have"
            )

    # -- description ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        d = "denorm" if self.denorm else "nodenorm"
        return f"minifloat<e{self.exp_bits}m{self.man_bits},bias={self.bias},{d}>"

    def __str__(self) -> str:
        return self.name

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    def storage_bits(self, shape: tuple[int, ...]) -> int:
        return self.bits * int(np.prod(shape, dtype=np.int64))

    @property
    def max_value(self) -> float:
        return float(dyadic_to_float(*self.decode(np.array(self._max_code))))

    @property
    def min_positive(self) -> float:
        """The smallest positive value (a denormal, or the first value of the f = 0 binade)."""
        return float(dyadic_to_float(*self.decode(np.array(1))))

    @property
    def _max_code(self) -> int:
        return (1 << (self.exp_bits + self.man_bits)) - 1

    def dyadic_range(self) -> DyadicRange:
        e_min = (1 if self.denorm else 0) - self.bias - self.man_bits
        e_max = (1 << self.exp_bits) - 1 - self.bias - self.man_bits
        return DyadicRange((1 << (self.man_bits + 1)) - 1, e_min, e_max)

    def scaled(self, t: int) -> Minifloat:
        """The same format with every value multiplied by 2**t (the bias moves by -t)."""
        return Minifloat(self.exp_bits, self.man_bits, self.bias - int(t), self.denorm)

    # -- codes ------------------------------------------------------------------------------
    def all_codes(self) -> np.ndarray:
        """Every code, ordered by decoded value (the sign-set zero just before zero)."""
        mag = np.arange(1 << (self.exp_bits + self.man_bits), dtype=np.int64)
        sign = np.int64(1) << (self.exp_bits + self.man_bits)
        return np.concatenate([(sign | mag)[::-1], mag])

    def decode(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact (m, e) per element: value = m * 2**e; |m| < 2**(M+1)."""
        c = np.asarray(codes, dtype=np.int64)
        em = self.exp_bits + self.man_bits
        if np.any((c < 0) | (c >> (em + 1) != 0)):
            raise FormatError(f"{self.name}: codes must lie in [0, {(1 << (em + 1)) - 1}]")
        neg = (c >> em) & 1
        f = (c >> self.man_bits) & ((1 << self.exp_bits) - 1)
        u = c & ((1 << self.man_bits) - 1)
        implicit = (f > 0) | (~np.bool_(self.denorm) & (u > 0))
        m = np.where(implicit, u + (1 << self.man_bits), u)
        e = np.maximum(f, 1 if self.denorm else 0) - self.bias - self.man_bits
        return np.where(neg == 1, -m, m).astype(np.int64), e.astype(np.int64)

    def to_float(self, codes: np.ndarray) -> np.ndarray:
        return dyadic_to_float(*self.decode(codes))

    def encode(self, x: np.ndarray, *, rounding: Rounding) -> np.ndarray:
        """Codes of the nearest values (ties by `rounding`; FLOOR: largest not above); saturating."""
        x = check_finite(x, self.name)
        grid = unit_grid(self.exp_bits, self.man_bits, self.denorm)
        return grid.round(ldexp_safe(x, self.bias), rounding).reshape(x.shape)

    def quantize(self, x: np.ndarray, *, rounding: Rounding) -> np.ndarray:
        return self.to_float(self.encode(x, rounding=rounding))


@functools.cache
def unit_grid(exp_bits: int, man_bits: int, denorm: bool) -> Grid:
    """Every distinct value of the bias-0 minifloat and its canonical code (values scale by 2**-bias)."""
    f = Minifloat(exp_bits, man_bits, 0, denorm)
    codes = f.all_codes()
    values = f.to_float(codes)
    keep = ~((values == 0) & (codes != 0))  # the sign-set zero duplicates zero
    return Grid(values[keep], codes[keep])
