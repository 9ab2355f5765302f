"""Block minifloat: minifloat elements (E exponent, M mantissa bits) sharing one B-bit bias per block.

Element code: a minifloat code (see `hwgen.numerics.minifloat`) read with bias 0. Shared field: a
signed B-bit bias b. Value = minifloat_value(code, bias=b), i.e. the bias-0 value times 2**-b.
Each block takes the largest (finest) bias whose range still holds the block's max |x|.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics.base import BlockCodes, DyadicRange, check_finite, dyadic_to_float, signed_range
from hwgen.numerics.blocks import encode_blocks, n_blocks
from hwgen.numerics.minifloat import Minifloat, unit_grid
from hwgen.numerics.rounding import Rounding


@dataclass(frozen=True)
class BlockMinifloat:
    """`bminifloat<e{exp_bits}m{man_bits},b{bias_bits},block={block},denorm|nodenorm>`."""

    exp_bits: int
    man_bits: int
    bias_bits: int = 8
    block: int = 8
    denorm: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.bias_bits, int) or self.bias_bits < 2:
            raise FormatError(f"bminifloat: bias_bits must be an integer >= 2, got {self.bias_bits!r}")
        if not isinstance(self.block, int) or self.block < 1:
            raise FormatError(f"bminifloat: block must be an integer >= 1, got {self.block!r}")
        self.element  # validates exp_bits/man_bits  # noqa: B018

    @property
    def element(self) -> Minifloat:
        """The element format at shared bias 0."""
        return Minifloat(self.exp_bits, self.man_bits, 0, self.denorm)

    @property
    def name(self) -> str:
        d = "denorm" if self.denorm else "nodenorm"
        return f"bminifloat<e{self.exp_bits}m{self.man_bits},b{self.bias_bits},block={self.block},{d}>"

    def __str__(self) -> str:
        return self.name

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def shared_bits(self) -> int:
        return self.bias_bits

    def storage_bits(self, shape: tuple[int, ...], axis: int = -1) -> int:
        return self.bits * int(np.prod(shape, dtype=np.int64)) + self.bias_bits * n_blocks(shape, axis, self.block)

    def dyadic_range(self, shared: tuple[int, int] | None = None) -> DyadicRange:
        """Bounds over every code; `shared` narrows the shared biases to [lo, hi] (e.g. as calibrated)."""
        r = self.element.dyadic_range()
        lo, hi = shared if shared is not None else signed_range(self.bias_bits)
        return DyadicRange(r.max_abs_m, r.e_min - hi, r.e_max - lo)

    def all_codes(self) -> np.ndarray:
        """Every element code, ordered by value (at any shared bias)."""
        return self.element.all_codes()

    def shared_codes(self) -> np.ndarray:
        lo, hi = signed_range(self.bias_bits)
        return np.arange(lo, hi + 1, dtype=np.int64)

    def encode(self, x: np.ndarray, *, rounding: Rounding, axis: int = -1) -> BlockCodes:
        """Per block: the largest bias that holds max |x|; elements rounded by `rounding`, saturating."""
        x = check_finite(x, self.name)
        grid = unit_grid(self.exp_bits, self.man_bits, self.denorm)
        lo, hi = signed_range(self.bias_bits)
        elements, t, ax = encode_blocks(
            x,
            axis=axis,
            block=self.block,
            threshold=grid.top_threshold,
            t_range=(-hi, -lo),
            round_units=lambda u: grid.round(u, rounding),
            name=self.name,
        )
        return BlockCodes(elements, -t, ax, self.block)

    def decode(self, codes: BlockCodes) -> tuple[np.ndarray, np.ndarray]:
        m, e = self.element.decode(codes.elements)
        lo, hi = signed_range(self.bias_bits)
        b = codes.shared_per_element().astype(np.int64)
        if np.any((b < lo) | (b > hi)):
            raise FormatError(f"{self.name}: shared biases must lie in [{lo}, {hi}]")
        return m, e - b

    def to_float(self, codes: BlockCodes) -> np.ndarray:
        return dyadic_to_float(*self.decode(codes))

    def quantize(self, x: np.ndarray, *, rounding: Rounding, axis: int = -1) -> np.ndarray:
        return self.to_float(self.encode(x, rounding=rounding, axis=axis))
