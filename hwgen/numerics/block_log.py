"""Block logarithm: each element is +-2**(s + f) or zero, with s a signed exponent shared per block.

Element code: sign << E | f with an E-bit field f; f = 0 is zero, f in 1..2**E-1 gives
value = (-1)**sign * 2**(s + f). Multiplying two such values is an exponent addition: the hardware
engine is shift-only. Rounding is to the nearest value on the linear scale (the tie between 2**k
and 2**(k+1) is 1.5 * 2**k; HALF_EVEN takes the even field).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics.base import BlockCodes, DyadicRange, Grid, check_finite, dyadic_to_float, signed_range
from hwgen.numerics.blocks import encode_blocks, n_blocks
from hwgen.numerics.rounding import Rounding

#: widest exponent field: 2**(2**9 - 1) is still a float64
MAX_LOG_EXP_BITS = 9


@dataclass(frozen=True)
class BlockLog:
    """`blog<e{exp_bits},b{shared_bits},block={block}>`: element bits = exp_bits + 1."""

    exp_bits: int
    shared_bits: int = 8
    block: int = 8

    def __post_init__(self) -> None:
        for field, v, lo in (
            ("exp_bits", self.exp_bits, 1),
            ("shared_bits", self.shared_bits, 2),
            ("block", self.block, 1),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise FormatError(f"blog: {field} must be an integer >= {lo}, got {v!r}")
        if self.exp_bits > MAX_LOG_EXP_BITS:
            raise FormatError(f"{self.name}: at most {MAX_LOG_EXP_BITS} exponent bits")

    @property
    def name(self) -> str:
        return f"blog<e{self.exp_bits},b{self.shared_bits},block={self.block}>"

    def __str__(self) -> str:
        return self.name

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits

    def storage_bits(self, shape: tuple[int, ...], axis: int = -1) -> int:
        return self.bits * int(np.prod(shape, dtype=np.int64)) + self.shared_bits * n_blocks(shape, axis, self.block)

    def dyadic_range(self, shared: tuple[int, int] | None = None) -> DyadicRange:
        """Bounds over every code; `shared` narrows the shared exponents to [lo, hi] (e.g. as calibrated)."""
        lo, hi = shared if shared is not None else signed_range(self.shared_bits)
        return DyadicRange(1, lo + 1, hi + (1 << self.exp_bits) - 1)

    def all_codes(self) -> np.ndarray:
        """Every element code, ordered by value (the sign-set zero just before zero)."""
        f = np.arange(1 << self.exp_bits, dtype=np.int64)
        return np.concatenate([((1 << self.exp_bits) | f)[::-1], f])

    def shared_codes(self) -> np.ndarray:
        lo, hi = signed_range(self.shared_bits)
        return np.arange(lo, hi + 1, dtype=np.int64)

    def encode(self, x: np.ndarray, *, rounding: Rounding, axis: int = -1) -> BlockCodes:
        x = check_finite(x, self.name)
        grid = _log_grid(self.exp_bits)
        elements, t, ax = encode_blocks(
            x,
            axis=axis,
            block=self.block,
            threshold=grid.top_threshold,
            t_range=signed_range(self.shared_bits),
            round_units=lambda u: grid.round(u, rounding),
            name=self.name,
        )
        return BlockCodes(elements, t, ax, self.block)

    def decode(self, codes: BlockCodes) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(codes.elements, dtype=np.int64)
        if np.any((c < 0) | (c >> (self.exp_bits + 1) != 0)):
            raise FormatError(f"{self.name}: element codes must lie in [0, {(1 << (self.exp_bits + 1)) - 1}]")
        lo, hi = signed_range(self.shared_bits)
        s = codes.shared_per_element().astype(np.int64)
        if np.any((s < lo) | (s > hi)):
            raise FormatError(f"{self.name}: shared exponents must lie in [{lo}, {hi}]")
        f = c & ((1 << self.exp_bits) - 1)
        neg = (c >> self.exp_bits) & 1
        m = np.where(f == 0, 0, np.where(neg == 1, -1, 1)).astype(np.int64)
        e = s + np.maximum(f, 1)
        return m, e.astype(np.int64)

    def to_float(self, codes: BlockCodes) -> np.ndarray:
        return dyadic_to_float(*self.decode(codes))

    def quantize(self, x: np.ndarray, *, rounding: Rounding, axis: int = -1) -> np.ndarray:
        return self.to_float(self.encode(x, rounding=rounding, axis=axis))


@functools.cache
def _log_grid(exp_bits: int) -> Grid:
    """Values at shared exponent 0: -2**(2**E-1) .. -2, 0, 2 .. 2**(2**E-1), with their codes."""
    f = np.arange(1, 1 << exp_bits, dtype=np.int64)
    pos = np.ldexp(1.0, f.astype(np.int32))
    values = np.concatenate([-pos[::-1], [0.0], pos])
    codes = np.concatenate([((1 << exp_bits) | f)[::-1], [0], f])
    return Grid(values, codes)
