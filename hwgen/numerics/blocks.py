"""The block machinery shared by block floating point, block minifloat and block logarithm.

A block format has a unit element grid G (the values at shared scale 2**0) and one power-of-two
scale 2**t per block of `block` consecutive elements along one axis. Each block takes the finest t
whose threshold still holds the block's max |x| (so the block max never saturates by more than
nearest rounding would cost), clamped to the shared field's range; its elements are then rounded
onto G * 2**t with the named rounding mode, saturating.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hwgen.numerics.base import finest_scale_exponent, from_blocks, ldexp_safe, normalize_axis, to_blocks

#: rounds floats in scale units to element codes (saturating)
RoundUnits = Callable[[np.ndarray], np.ndarray]


def encode_blocks(
    x: np.ndarray,
    *,
    axis: int,
    block: int,
    threshold: float,
    t_range: tuple[int, int],
    round_units: RoundUnits,
    name: str,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(element codes in x's shape, t per block with the blocked axis shortened to n_blocks, axis)."""
    ax = normalize_axis(axis, np.ndim(x), name)
    xb, n = to_blocks(x, ax, block)
    t = finest_scale_exponent(np.abs(xb).max(axis=-1), threshold, *t_range)
    units = ldexp_safe(xb, -t[..., None])
    codes = round_units(units).astype(np.int64)
    elements = from_blocks(codes, ax, n)
    return elements, np.moveaxis(t, -1, ax), ax


def n_blocks(shape: tuple[int, ...], axis: int, block: int) -> int:
    """How many shared fields a tensor of `shape` blocked along `axis` carries."""
    if len(shape) == 0:
        return 1
    ax = axis % len(shape)
    total = 1
    for i, d in enumerate(shape):
        total *= max(1, -(-d // block)) if i == ax else d
    return total
