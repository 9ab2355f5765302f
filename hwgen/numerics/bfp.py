"""Block floating point: signed M-bit mantissas sharing one E-bit exponent per block.

Element code: the signed mantissa m itself, |m| <= 2**M - 1 (sign + M magnitude bits: the seeds'
"W8A8 BFP, M=7" is `bfp<m7,e8,block=...>`). Shared field: a signed E-bit exponent s, the weight of
the mantissa's LSB. Value = m * 2**s. Blocks run along `axis` (for a dot product: the reduction
axis of both operands, so each block's products share one exponent s_w + s_a).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics.base import BlockCodes, DyadicRange, check_finite, dyadic_to_float, signed_range
from hwgen.numerics.blocks import encode_blocks, n_blocks
from hwgen.numerics.rounding import Rounding, round_scaled


@dataclass(frozen=True)
class BlockFloat:
    """`bfp<m{man_bits},e{exp_bits},block={block}>`: element bits = man_bits + 1."""

    man_bits: int
    exp_bits: int = 8
    block: int = 16

    def __post_init__(self) -> None:
        for field, v, lo in (("man_bits", self.man_bits, 1), ("exp_bits", self.exp_bits, 2), ("block", self.block, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise FormatError(f"bfp: {field} must be an integer >= {lo}, got {v!r}")
        if self.man_bits > 52:
            raise FormatError(f"{self.name}: at most 52 mantissa bits")

    @property
    def name(self) -> str:
        return f"bfp<m{self.man_bits},e{self.exp_bits},block={self.block}>"

    def __str__(self) -> str:
        return self.name

    @property
    def bits(self) -> int:
        return self.man_bits + 1

    @property
    def shared_bits(self) -> int:
        return self.exp_bits

    @property
    def max_mantissa(self) -> int:
        return (1 << self.man_bits) - 1

    def storage_bits(self, shape: tuple[int, ...], axis: int = -1) -> int:
        return self.bits * int(np.prod(shape, dtype=np.int64)) + self.exp_bits * n_blocks(shape, axis, self.block)

    def dyadic_range(self, shared: tuple[int, int] | None = None) -> DyadicRange:
        """Bounds over every code; `shared` narrows the shared exponents to [lo, hi] (e.g. as calibrated)."""
        lo, hi = shared if shared is not None else signed_range(self.exp_bits)
        return DyadicRange(self.max_mantissa, lo, hi)

    def all_codes(self) -> np.ndarray:
        """Every element code, ascending (the value order at any shared exponent)."""
        return np.arange(-self.max_mantissa, self.max_mantissa + 1, dtype=np.int64)

    def shared_codes(self) -> np.ndarray:
        lo, hi = signed_range(self.exp_bits)
        return np.arange(lo, hi + 1, dtype=np.int64)

    def encode(self, x: np.ndarray, *, rounding: Rounding, axis: int = -1) -> BlockCodes:
        """Per block: the finest exponent that holds max |x|, then mantissas rounded by `rounding`."""
        x = check_finite(x, self.name)
        mx = self.max_mantissa

        def round_units(u: np.ndarray) -> np.ndarray:
            return np.clip(round_scaled(u, rounding), -mx, mx)

        elements, t, ax = encode_blocks(
            x,
            axis=axis,
            block=self.block,
            threshold=mx + 0.5,
            t_range=signed_range(self.exp_bits),
            round_units=round_units,
            name=self.name,
        )
        return BlockCodes(elements, t, ax, self.block)

    def decode(self, codes: BlockCodes) -> tuple[np.ndarray, np.ndarray]:
        m = np.asarray(codes.elements, dtype=np.int64)
        if np.any(np.abs(m) > self.max_mantissa):
            raise FormatError(f"{self.name}: element codes must lie in [-{self.max_mantissa}, {self.max_mantissa}]")
        lo, hi = signed_range(self.exp_bits)
        s = codes.shared_per_element().astype(np.int64)
        if np.any((s < lo) | (s > hi)):
            raise FormatError(f"{self.name}: shared exponents must lie in [{lo}, {hi}]")
        return m.copy(), s.copy()

    def to_float(self, codes: BlockCodes) -> np.ndarray:
        return dyadic_to_float(*self.decode(codes))

    def quantize(self, x: np.ndarray, *, rounding: Rounding, axis: int = -1) -> np.ndarray:
        return self.to_float(self.encode(x, rounding=rounding, axis=axis))
