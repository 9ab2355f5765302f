"""The exact dot-product golden kernel for every number format pair (weights W, activations A).

Each operand decodes to exact dyadic values m * 2**e (`hwgen.numerics`), so a dot product is an
exact integer at a known LSB exponent: acc * 2**lsb = sum_k w_k * a_k, with no rounding anywhere.
Block formats (BFP, block minifloat, block log) carry one shared exponent/bias per block along the
reduction axis; binary/ternary carry a scale per tensor or per output channel. The hardware MAC
engines of every format are checked against `dot_exact`, and size their accumulator with
`accumulator_spec` (the one width derivation for format MACs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics import BlockCodes, Codes, DyadicRange, QuantFormat

#: int64 stays exact while every partial sum fits this many magnitude bits
_INT64_SAFE_BITS = 62


@dataclass(frozen=True)
class AccSpec:
    """An accumulator that holds every dot product exactly: `width` signed bits with LSB weight 2**lsb."""

    width: int  #: two's-complement bits, sign included
    lsb: int  #: exponent of the least significant bit
    max_abs: int  #: the bound on |acc| (in LSB units) the width was derived from


@dataclass(frozen=True, eq=False)
class ExactAcc:
    """Dot products as exact integers: value = acc * 2**lsb. acc is int64, or object (Python ints) when wider."""

    acc: np.ndarray
    lsb: int

    def to_float(self) -> np.ndarray:
        """float64 values, correctly rounded (Python int division rounds exactly)."""
        flat = [int(v) * (1 << self.lsb) if self.lsb >= 0 else int(v) / (1 << -self.lsb) for v in self.acc.reshape(-1)]
        return np.array(flat, dtype=np.float64).reshape(self.acc.shape)

    def at_lsb(self, lsb: int) -> np.ndarray:
        """acc rescaled to another LSB exponent; FormatError if that would drop set bits."""
        return _rescale(self.acc, self.lsb, lsb)


def decode_operand(fmt: QuantFormat, codes: Codes) -> tuple[np.ndarray, np.ndarray]:
    """(m, e) int64 per element of an operand."""
    if isinstance(codes, BlockCodes) != _is_block(fmt):
        kind = "BlockCodes" if _is_block(fmt) else "a plain code array"
        raise FormatError(f"{fmt.name}: expected {kind} (from {fmt.name}.encode)")
    return fmt.decode(codes)


def _is_block(fmt: QuantFormat) -> bool:
    from hwgen.numerics import BLOCK_FORMATS

    return isinstance(fmt, BLOCK_FORMATS)


def _check_reduction_blocks(fmt: QuantFormat, codes: Codes, what: str) -> None:
    """Block shared fields must run along the reduction (last) axis, as the MAC engines need."""
    if isinstance(codes, BlockCodes) and codes.axis is not None and codes.axis != codes.elements.ndim - 1:
        raise FormatError(
            f"{fmt.name}: the {what} blocks run along axis {codes.axis}, not the reduction axis "
            f"{codes.elements.ndim - 1}; encode with axis=-1"
        )


def _aligned(m: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, int]:
    """Integers i and an exponent lo with i * 2**lo == m * 2**e elementwise (lo = least e of a non-zero m)."""
    nz = m != 0
    if not np.any(nz):
        return np.zeros(m.shape, dtype=np.int64), 0
    lo = int(e[nz].min())
    shift = np.where(nz, e - lo, 0)
    top = int(shift.max()) + int(np.abs(m).max()).bit_length()
    if top <= _INT64_SAFE_BITS:
        return np.left_shift(m.astype(np.int64), shift), lo
    return m.astype(object) << shift.astype(object), lo


def _bits(a: np.ndarray) -> int:
    return int(np.max(np.abs(a))).bit_length() if a.size else 0


def _rescale(acc: np.ndarray, lsb_from: int, lsb_to: int) -> np.ndarray:
    d = lsb_from - lsb_to
    if d == 0:
        return acc
    if d > 0:
        if acc.dtype != object and _bits(acc) + d <= _INT64_SAFE_BITS:
            return np.left_shift(acc, d)
        return acc.astype(object) << d
    mask = (1 << -d) - 1
    if np.any((acc.astype(object) & mask) != 0):
        raise FormatError(f"accumulator at LSB 2**{lsb_from} is not representable at LSB 2**{lsb_to} without rounding")
    return acc >> -d if acc.dtype != object else acc.astype(object) >> -d


def dot_exact(
    w_fmt: QuantFormat, w_codes: Codes, a_fmt: QuantFormat, a_codes: Codes, *, lsb: int | None = None
) -> ExactAcc:
    """Exact y[n, j] = sum_k W[j, k] * A[n, k] for weight codes [M, K] and activation codes [N, K] (or [K]).

    The result is at LSB exponent `lsb` (default: the least exponent the two formats can produce,
    `accumulator_spec(...).lsb` without weights), so it does not depend on the data.
    """
    _check_reduction_blocks(w_fmt, w_codes, "weight")
    _check_reduction_blocks(a_fmt, a_codes, "activation")
    mw, ew = decode_operand(w_fmt, w_codes)
    ma, ea = decode_operand(a_fmt, a_codes)
    vector = ma.ndim == 1
    if vector:
        ma, ea = ma[None, :], ea[None, :]
    if mw.ndim != 2 or ma.ndim != 2 or mw.shape[1] != ma.shape[1]:
        raise FormatError(f"dot_exact: weights {mw.shape} and activations {ma.shape} do not share a reduction axis")
    wi, lw = _aligned(mw, ew)
    ai, la = _aligned(ma, ea)
    k = mw.shape[1]
    if wi.dtype != object and ai.dtype != object and _bits(wi) + _bits(ai) + k.bit_length() <= _INT64_SAFE_BITS:
        acc = ai @ wi.T
    else:
        acc = ai.astype(object) @ wi.astype(object).T
    target = lsb if lsb is not None else w_fmt.dyadic_range().e_min + a_fmt.dyadic_range().e_min
    out = _rescale(np.asarray(acc), lw + la, target)
    return ExactAcc(out[0] if vector else out, target)


def observed_range(fmt: QuantFormat, codes: Codes) -> DyadicRange:
    """The (m, e) bounds of actual codes (non-zero values only), e.g. activations over calibration data."""
    m, e = decode_operand(fmt, codes)
    nz = m != 0
    if not np.any(nz):
        r = fmt.dyadic_range()
        return DyadicRange(0, r.e_min, r.e_min)
    return DyadicRange(int(np.abs(m).max()), int(e[nz].min()), int(e[nz].max()))


def accumulator_spec(
    w_fmt: QuantFormat,
    a_fmt: QuantFormat,
    fan_in: int,
    *,
    w_codes: Codes | None = None,
    a_range: DyadicRange | None = None,
) -> AccSpec:
    """Accumulator width and LSB for a dot product of `fan_in` terms that can never overflow.

    Without weights: worst case over both formats' whole code ranges. With the layer's weight codes
    [M, K]: the LSB is the least exponent of a non-zero weight and the bound is the largest row sum
    of |w| times the largest |a|. `a_range` narrows the activations (e.g. the shared exponents a
    calibration allows) and must hold every activation the engine will see.
    """
    ar = a_range if a_range is not None else a_fmt.dyadic_range()
    a_max = ar.max_abs_m << (ar.e_max - ar.e_min)  # largest |a| in units of 2**ar.e_min
    if w_codes is None:
        wr = w_fmt.dyadic_range()
        w_sum = int(fan_in) * (wr.max_abs_m << (wr.e_max - wr.e_min))
        lw = wr.e_min
    else:
        _check_reduction_blocks(w_fmt, w_codes, "weight")
        mw, ew = decode_operand(w_fmt, w_codes)
        wi, lw = _aligned(mw, ew)
        rows = np.abs(wi.reshape(-1, wi.shape[-1])).astype(object).sum(axis=1) if wi.size else np.array([0])
        w_sum = int(max(rows)) if len(rows) else 0
    max_abs = w_sum * a_max
    return AccSpec(width=max_abs.bit_length() + 1, lsb=lw + ar.e_min, max_abs=max_abs)
