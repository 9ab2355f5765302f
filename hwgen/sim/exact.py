"""The bit-exact golden model: runs a quantized graph on integer codes.

HLS C simulation and RTL simulation must match this on every output bit. It computes with
int64 where the widths allow and with Python ints beyond, so it is exact by construction;
the Schedule proves the hardware's accumulators are wide enough to be exact too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwgen.errors import GraphError, UnsupportedOpError
from hwgen.ir.graph import Graph, Node
from hwgen.numerics import FixedPoint, Overflow, Rounding
from hwgen.sim import integer_kernels
from hwgen.sim.reference import check_input, real_counts, windows

#: element-wise functions computed as a lookup table over the input codes
LUT_OPS = ("Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu")


@dataclass(frozen=True)
class DenseRequant:
    """How a quantized Dense turns its accumulator into output codes (see integer_kernels.requantize)."""

    shift: int
    rounding: Rounding
    lo: int
    hi: int


def fixed_format(graph: Graph, value: str) -> FixedPoint:
    fmt = graph.value(value).type.format
    if not isinstance(fmt, FixedPoint):
        raise GraphError(f"value {value!r} has format {fmt}, not fixed point: quantize the graph first")
    return fmt


def dense_requant(graph: Graph, node: Node) -> DenseRequant:
    """Shift, rounding and output clamp of a quantized Dense/Conv: one definition for sim and hardware."""
    x_fmt = fixed_format(graph, node.inputs[0])
    w_fmt = fixed_format(graph, node.inputs[1])
    out_fmt = fixed_format(graph, node.outputs[0])
    shift = x_fmt.frac + w_fmt.frac - out_fmt.frac
    lo, hi = activation_bounds(node, out_fmt)
    return DenseRequant(shift, Rounding(node.attrs["rounding"]), lo, hi)


def activation_bounds(node: Node, out_fmt: FixedPoint) -> tuple[int, int]:
    """Output clamp [lo, hi] in codes: the fused activation merged with saturation."""
    lo, hi = out_fmt.min_code, out_fmt.max_code
    act = node.attrs.get("activation", "none")
    if act == "relu":
        lo = max(lo, 0)
    elif act == "clip":
        return clip_bounds(node.attrs["clip_lo"], node.attrs["clip_hi"], out_fmt)
    return lo, hi


def clip_bounds(clip_lo: float, clip_hi: float, fmt: FixedPoint) -> tuple[int, int]:
    """Clip bounds in codes: lo rounds up and hi rounds down, so the clamp never leaves [min, max]."""
    lo, hi = fmt.min_code, fmt.max_code
    if math.isfinite(clip_lo):
        lo = max(lo, math.ceil(math.ldexp(clip_lo, fmt.frac)))
    if math.isfinite(clip_hi):
        hi = min(hi, math.floor(math.ldexp(clip_hi, fmt.frac)))
    return lo, max(hi, lo)


def lut_table(node: Node, in_fmt: FixedPoint, out_fmt: FixedPoint) -> np.ndarray:
    """The lookup table of an element-wise function: entry i is the output code of input code in.min + i.

    One Python function generates it; the golden model and both hardware views index the same table.
    """
    from hwgen.sim.reference import KERNELS

    codes = np.arange(in_fmt.min_code, in_fmt.max_code + 1, dtype=np.int64)
    values = KERNELS[node.op](node, [in_fmt.to_float(codes)[None]])[0]
    rounding = Rounding(node.attrs.get("rounding", Rounding.HALF_EVEN))
    return out_fmt.encode(values, rounding=rounding, overflow=Overflow.SATURATE)


def dense_codes(graph: Graph, node: Node) -> tuple[np.ndarray, np.ndarray]:
    """Integer weight codes [out, ...] and bias codes [out] (accumulator units) of a quantized Dense/Conv."""
    w = fixed_format(graph, node.inputs[1]).encode_exact(graph.const(node.inputs[1]))
    b = fixed_format(graph, node.inputs[2]).encode_exact(graph.const(node.inputs[2]))
    return w, b


def encode_input(graph: Graph, x: np.ndarray, name: str | None = None) -> np.ndarray:
    """Float samples -> input codes, with the graph's input rounding and saturation."""
    name = name or graph.inputs[0]
    x = check_input(graph, x, name)
    fmt = fixed_format(graph, name)
    rounding = Rounding(graph.meta.get("input_rounding", Rounding.HALF_EVEN))
    return fmt.encode(x, rounding=rounding, overflow=Overflow.SATURATE)


def _conv(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    w, b = dense_codes(graph, node)
    r = dense_requant(graph, node)
    win, _ = windows(x, node, 0)  # [N, C, *out, *k]; zero padding is code 0 (value 0)
    n, c = x.shape[:2]
    rank = x.ndim - 2
    out_sp = win.shape[2 : 2 + rank]
    groups = node.attrs.get("group", 1)
    cg, mg = c // groups, w.shape[0] // groups
    positions = int(np.prod(out_sp))
    # [N, G, Cg, P, K] -> per group a [N*P, Cg*K] matrix times [Mg, Cg*K]
    win = win.reshape(n, groups, cg, positions, -1).transpose(1, 0, 3, 2, 4).reshape(groups, n * positions, -1)
    wg = w.reshape(groups, mg, -1)
    acc = np.concatenate([integer_kernels.matmul_exact(win[gi], wg[gi]) for gi in range(groups)], axis=1)
    acc = acc + (b.astype(object) if acc.dtype == object else b)
    y = integer_kernels.requantize(acc, r.shift, r.rounding, r.lo, r.hi)  # [N*P, M]
    return y.reshape(n, *out_sp, w.shape[0]).transpose(0, rank + 1, *range(1, rank + 1))


def _avgpool(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    fmt = fixed_format(graph, node.outputs[0])
    rank = x.ndim - 2
    axes = tuple(range(-rank, 0))
    if node.op == "GlobalAveragePool":
        sums = x.sum(axis=tuple(range(2, x.ndim)), keepdims=True)
        counts = np.full(sums.shape[2:], int(np.prod(x.shape[2:])))
    else:
        win, mask = windows(x, node, 0)
        sums = win.sum(axis=axes)
        counts = mask.sum(axis=axes) if node.attrs.get("count_include_pad", 0) else real_counts(x.shape[2:], node)
    out = np.empty(sums.shape, dtype=np.int64)
    for count in np.unique(counts):
        m, s = integer_kernels.avgpool_multiplier(int(count))
        where = np.broadcast_to(counts == count, sums.shape)
        q = integer_kernels.requantize(sums * m, s, Rounding(node.attrs["rounding"]), fmt.min_code, fmt.max_code)
        out[where] = q[where]
    return out


def _maxpool(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    if node.op == "GlobalMaxPool":
        return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)
    win, _ = windows(x, node, np.iinfo(np.int64).min)
    return win.max(axis=tuple(range(-(x.ndim - 2), 0)))


def _add(graph: Graph, node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    fa, fb = fixed_format(graph, node.inputs[0]), fixed_format(graph, node.inputs[1])
    out = fixed_format(graph, node.outputs[0])
    s, f = integer_kernels.align_add(a, fa.frac, b, fb.frac)
    lo, hi = activation_bounds(node, out)
    return integer_kernels.requantize(s, f - out.frac, Rounding(node.attrs["rounding"]), lo, hi)


def _concat(graph: Graph, node: Node, xs: list[np.ndarray]) -> np.ndarray:
    out = fixed_format(graph, node.outputs[0])
    rounding = Rounding(node.attrs["rounding"])
    parts = [
        integer_kernels.requantize(x, fixed_format(graph, i).frac - out.frac, rounding, out.min_code, out.max_code)
        for i, x in zip(node.inputs, xs, strict=True)
    ]
    return np.concatenate(parts, axis=node.attrs["axis"] + 1)


def _pad(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    fmt = fixed_format(graph, node.inputs[0])
    begin, end = node.attrs["pads_begin"], node.attrs["pads_end"]
    crop = (
        slice(None),
        *(slice(max(0, -bb), d - max(0, -e)) for d, bb, e in zip(x.shape[1:], begin, end, strict=True)),
    )
    x = x[crop]
    width = [(0, 0)] + [(max(0, bb), max(0, e)) for bb, e in zip(begin, end, strict=True)]
    mode = node.attrs.get("mode", "constant")
    if mode == "constant":
        value = int(
            fmt.encode(np.array(node.attrs.get("value", 0.0)), rounding=Rounding.HALF_EVEN, overflow=Overflow.SATURATE)
        )
        return np.pad(x, width, mode="constant", constant_values=value)
    return np.pad(x, width, mode=mode)


def affine_codes(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    """y = requant(x * m + a) with per-sample-broadcast constant codes m (scale) and a (offset)."""
    fx, fm, fo = (fixed_format(graph, v) for v in (node.inputs[0], node.inputs[1], node.outputs[0]))
    m = fm.encode_exact(graph.const(node.inputs[1]))
    a = fixed_format(graph, node.inputs[2]).encode_exact(graph.const(node.inputs[2]))
    wide = fx.bits + fm.bits + 2 > 62 or int(np.abs(a).max(initial=0)).bit_length() > 60
    acc = (x.astype(object) if wide else x) * m + a  # Python ints when int64 could overflow
    return integer_kernels.requantize(
        acc, fx.frac + fm.frac - fo.frac, Rounding(node.attrs["rounding"]), fo.min_code, fo.max_code
    )


def _softmax(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    fi, fo = fixed_format(graph, node.inputs[0]), fixed_format(graph, node.outputs[0])
    axis = node.attrs["axis"] + 1
    shaped = x.reshape(*x.shape[:axis], -1) if node.attrs.get("legacy") else x
    ax = -1 if node.attrs.get("legacy") else axis
    y = integer_kernels.softmax(shaped - fi.min_code, ax, fi.frac, fi.bits, fo.frac, fo.max_code)
    return y.reshape(x.shape)


def run_codes(graph: Graph, codes: np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
    """Run input codes (batch first) through the quantized graph; returns output codes."""
    env: dict[str, np.ndarray] = {graph.inputs[0]: np.asarray(codes, dtype=np.int64)}
    for node in graph.nodes:
        x = env[node.inputs[0]]
        op = node.op
        if op in ("Flatten", "Reshape"):
            y = x.reshape((x.shape[0], *graph.value(node.outputs[0]).type.shape))
        elif op == "Transpose":
            y = x.transpose((0, *(p + 1 for p in node.attrs["perm"])))
        elif op == "Identity":
            y = x
        elif op == "Relu":
            y = np.maximum(x, 0)
        elif op == "Clip":
            lo, hi = clip_bounds(
                node.attrs.get("min", -math.inf), node.attrs.get("max", math.inf), fixed_format(graph, node.inputs[0])
            )
            y = np.clip(x, lo, hi)
        elif op == "Dense":
            w, b = dense_codes(graph, node)
            r = dense_requant(graph, node)
            flat = x.reshape(-1, x.shape[-1])
            y = integer_kernels.dense(flat, w, b, shift=r.shift, rounding=r.rounding, lo=r.lo, hi=r.hi)
            y = y.reshape((*x.shape[:-1], w.shape[0]))
        elif op == "Conv":
            y = _conv(graph, node, x)
        elif op in ("MaxPool", "GlobalMaxPool"):
            y = _maxpool(graph, node, x)
        elif op in ("AveragePool", "GlobalAveragePool"):
            y = _avgpool(graph, node, x)
        elif op == "Add" and len(graph.activations(node)) == 2:
            y = _add(graph, node, x, env[node.inputs[1]])
        elif op == "Concat":
            y = _concat(graph, node, [env[i] for i in node.inputs])
        elif op == "Affine":
            y = affine_codes(graph, node, x)
        elif op == "Pad":
            y = _pad(graph, node, x)
        elif op in LUT_OPS:
            in_fmt = fixed_format(graph, node.inputs[0])
            y = lut_table(node, in_fmt, fixed_format(graph, node.outputs[0]))[x - in_fmt.min_code]
        elif op == "Softmax":
            y = _softmax(graph, node, x)
        else:
            raise UnsupportedOpError(f"{node.describe()}: sim.exact has no integer kernel for {node.op}")
        env[node.outputs[0]] = y
    return env if keep else {o: env[o] for o in graph.outputs}


def run(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Float samples in, output codes out (the golden model end to end)."""
    return run_codes(graph, encode_input(graph, x))


def decode_outputs(graph: Graph, codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Output codes -> exact float values."""
    return {k: fixed_format(graph, k).to_float(v) for k, v in codes.items()}
