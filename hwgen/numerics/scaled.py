"""Scaled integers: quantization imported from QDQ / QONNX, codes times a real (float) scale.

The one format whose scale is not a power of two. Each scale is a float, hence an exact dyadic
rational, so decode stays exact; requantization between two of them is an integer multiplier and
a shift (hwgen.sim.integer_kernels). Spec (read back by `hwgen.numerics.spec.parse_format`):

    scaled<0..255,s=0.0039215688593685627>                   per tensor
    scaled<-127..127,s=[0.0012;0.0031;...],axis=0>           per channel along an axis
    ... ,zp=128                                              the exporter's zero point
    ... ,bits=9,signed                                       a container wider than the range needs

Scales print as Python's shortest repr of the float, so the spec round-trips bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwgen.errors import FormatError
from hwgen.numerics.rounding import Overflow, Rounding, round_scaled


def container_of(lo: int, hi: int) -> tuple[int, bool]:
    """(bits, signed) of the narrowest two's-complement or unsigned container of codes [lo, hi]."""
    signed = lo < 0
    need = max(int(hi).bit_length(), (-int(lo) - 1).bit_length() if lo < 0 else 0) + (1 if signed else 0)
    return max(need, 2 if signed else 1), signed


@dataclass(frozen=True)
class ScaledInt:
    """Integer codes in [lo, hi] times a real scale: quantization imported from QDQ / QONNX.

    value = code * scale[channel]. Codes are centred (the exporter's q - zero_point), so a zero
    code is the value 0 (Conv zero padding, ReLU and max pooling act on codes unchanged) and an
    asymmetric uint8 tensor becomes a signed range [-zp, 255 - zp]. Each scale is a float (a
    float32 from the model, or an exact product of two): an exact dyadic rational, so decode
    stays exact. `axis` is the array axis the per-channel scales run along (0 for weights and
    bias; activations are per tensor).
    """

    bits: int  #: width of the two's-complement (or unsigned) container of [lo, hi]
    signed: bool
    lo: int  #: smallest code (the exporter's qmin - zero_point)
    hi: int  #: largest code
    scale: tuple[float, ...]  #: one scale, or one per channel along `axis`
    axis: int = 0
    zero_point: int = 0  #: the exporter's zero point (codes here are already centred)

    def __post_init__(self) -> None:
        if not self.scale or any(not math.isfinite(s) or s <= 0 for s in self.scale):
            raise FormatError(f"scaled integer: scales must be finite and > 0, got {self.scale[:4]}")
        if self.lo > self.hi:
            raise FormatError(f"scaled integer: empty code range [{self.lo}, {self.hi}]")

    @staticmethod
    def for_range(lo: int, hi: int, scale: tuple[float, ...], axis: int = 0, zero_point: int = 0) -> ScaledInt:
        """The narrowest container holding codes [lo, hi]."""
        bits, signed = container_of(lo, hi)
        return ScaledInt(bits, signed, int(lo), int(hi), tuple(float(s) for s in scale), axis, zero_point)

    @property
    def name(self) -> str:
        """The canonical spec `parse_format` reads back exactly (every scale, shortest float repr)."""
        s = repr(float(self.scale[0])) if self.per_tensor else "[" + ";".join(repr(float(v)) for v in self.scale) + "]"
        extra = f",axis={self.axis}" if self.axis or not self.per_tensor else ""
        extra += f",zp={self.zero_point}" if self.zero_point else ""
        if (self.bits, self.signed) != container_of(self.lo, self.hi):
            extra += f",bits={self.bits},{'signed' if self.signed else 'unsigned'}"
        return f"scaled<{self.lo}..{self.hi},s={s}{extra}>"

    def __str__(self) -> str:
        """Short form for messages: per-channel scales are counted, not listed."""
        if self.per_tensor:
            return self.name
        zp = f",zp={self.zero_point}" if self.zero_point else ""
        return f"scaled<{self.lo}..{self.hi},s=[{len(self.scale)}]@{self.axis}{zp}>"

    @property
    def min_code(self) -> int:
        return self.lo

    @property
    def max_code(self) -> int:
        return self.hi

    @property
    def per_tensor(self) -> bool:
        return len(self.scale) == 1

    def scales(self, ndim: int) -> np.ndarray:
        """float64 scales shaped to broadcast against an array of rank `ndim`."""
        s = np.asarray(self.scale, dtype=np.float64)
        if self.per_tensor:
            return s.reshape(())
        shape = [1] * ndim
        shape[self.axis] = len(self.scale)
        return s.reshape(shape)

    def to_float(self, codes: np.ndarray) -> np.ndarray:
        """Exact float64 values (a <= 32-bit code times a float32 scale fits 53 bits)."""
        c = np.asarray(codes)
        return c.astype(np.float64) * self.scales(c.ndim)

    def decode(self, codes: np.ndarray) -> tuple[np.ndarray, int]:
        """Exact dyadic value: (mantissa, exponent) with value = mantissa * 2**exponent."""
        c = np.asarray(codes)
        pairs = [np.frexp(np.float64(s)) for s in self.scale]
        exps = [int(e) - 53 for _, e in pairs]
        e0 = min(exps)
        mants = [int(np.ldexp(m, 53)) << (e - e0) for (m, _), e in zip(pairs, exps, strict=True)]
        mm = np.asarray(mants, dtype=object)
        if not self.per_tensor:
            shape = [1] * c.ndim
            shape[self.axis] = len(mants)
            mm = mm.reshape(shape)
        return c.astype(object) * (mm if not self.per_tensor else mants[0]), e0

    def encode(self, x: np.ndarray, *, rounding: Rounding, overflow: Overflow) -> np.ndarray:
        """Quantize as the exporters do: float32 x / scale, rounded by `rounding`, saturated.

        onnxruntime's QuantizeLinear and qonnx's Quant both divide in float32 and round half to
        even; the division is IEEE-correctly rounded, so numpy reproduces it bit for bit.
        """
        x = np.asarray(x, dtype=np.float32)
        if not np.all(np.isfinite(x)):
            raise FormatError(f"{self}: cannot encode NaN or infinity")
        scaled = x / self.scales(x.ndim).astype(np.float32)
        r = np.clip(round_scaled(scaled.astype(np.float64), rounding), -(2.0**62), 2.0**62).astype(np.int64)
        if Overflow(overflow) is Overflow.SATURATE:
            return np.clip(r, self.lo, self.hi)
        raise FormatError(f"{self}: only saturation is defined for imported formats")

    def encode_exact(self, x: np.ndarray) -> np.ndarray:
        """Codes of values that are exactly code * scale; raises FormatError otherwise."""
        x = np.asarray(x, dtype=np.float64)
        codes = np.rint(x / self.scales(x.ndim))
        if np.any(self.to_float(codes) != x) or np.any(codes < self.lo) or np.any(codes > self.hi):
            raise FormatError(f"{self}: values are not exactly representable")
        return codes.astype(np.int64)
