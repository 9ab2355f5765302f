"""Sliding-window geometry shared by Conv and pooling: padding, output sizes (ONNX semantics)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Geometry of a sliding window over the spatial axes of a [C, *spatial] tensor."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]  #: explicit padding only (ceil_mode extra is in `out`)
    ceil_mode: bool = False

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def span(self, axis: int) -> int:
        return (self.kernel[axis] - 1) * self.dilations[axis] + 1

    def out_size(self, in_size: Sequence[int]) -> tuple[int, ...]:
        out = []
        for a, n in enumerate(in_size):
            total = n + self.pads_begin[a] + self.pads_end[a] - self.span(a)
            if self.ceil_mode:
                o = math.ceil(total / self.strides[a]) + 1
                if (o - 1) * self.strides[a] >= n + self.pads_begin[a]:
                    o -= 1  # the last window would start in the end padding
            else:
                o = total // self.strides[a] + 1
            out.append(o)
        return tuple(out)


def make_window(attrs: dict, spatial: Sequence[int], kernel: Sequence[int] | None = None) -> Window:
    """A Window from ONNX attributes (kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)."""
    k = tuple(int(v) for v in (kernel if kernel is not None else attrs["kernel_shape"]))
    r = len(k)
    strides = tuple(int(v) for v in attrs.get("strides", [1] * r))
    dil = tuple(int(v) for v in attrs.get("dilations", [1] * r))
    auto = attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for a in range(r):
            out = math.ceil(spatial[a] / strides[a])
            total = max(0, (out - 1) * strides[a] + (k[a] - 1) * dil[a] + 1 - spatial[a])
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return Window(k, strides, dil, tuple(begin), tuple(end), ceil_mode)
    if auto == "VALID":
        return Window(k, strides, dil, (0,) * r, (0,) * r, ceil_mode)
    pads = [int(v) for v in attrs.get("pads", [0] * (2 * r))]
    return Window(k, strides, dil, tuple(pads[:r]), tuple(pads[r:]), ceil_mode)
