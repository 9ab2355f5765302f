"""The bit-exact golden model: runs a quantized graph on integer codes.

HLS C simulation and RTL simulation must match this on every output bit. It computes with
int64 where the widths allow and with Python ints beyond, so it is exact by construction;
the Schedule proves the hardware's accumulators are wide enough to be exact too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from hwgen.errors import FormatError, GraphError, UnsupportedOpError
from hwgen.ir.graph import Graph, Node
from hwgen.numerics import (
    Binary,
    BlockCodes,
    BlockFloat,
    BlockLog,
    BlockMinifloat,
    Codes,
    FixedPoint,
    Minifloat,
    NumberFormat,
    Overflow,
    QuantFormat,
    Rounding,
    Ternary,
)
from hwgen.numerics.scaled import ScaledInt
from hwgen.sim import integer_kernels, winograd_kernels
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


def value_format(graph: Graph, value: str) -> FixedPoint | ScaledInt:
    """The quantized format of a value (fixed point or an imported scaled integer)."""
    fmt = graph.value(value).type.format
    if not isinstance(fmt, (FixedPoint, ScaledInt)):
        raise GraphError(f"value {value!r} has format {fmt}, not a quantized format: quantize the graph first")
    return fmt


def format_scales(fmt: NumberFormat, ndim: int = 1) -> np.ndarray:
    """Per-channel (or scalar) float64 scales of a quantized format; fixed point is 2**-frac."""
    if isinstance(fmt, FixedPoint):
        return np.asarray(math.ldexp(1.0, -fmt.frac))
    if isinstance(fmt, ScaledInt):
        return fmt.scales(ndim)
    raise GraphError(f"format {fmt} has no scale")


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
    if isinstance(graph.value(name).type.format, ScaledInt):
        imported = graph.value(name).type.format
        return imported.encode(x, rounding=Rounding.HALF_EVEN, overflow=Overflow.SATURATE)
    if is_format_value(graph.value(name).type.format):
        rounding = Rounding(graph.meta.get("input_rounding", Rounding.HALF_EVEN))
        return encode_format(graph.value(name).type.format, x, rounding, format_block_axis(x.ndim))  # type: ignore[return-value]
    fmt = fixed_format(graph, name)
    rounding = Rounding(graph.meta.get("input_rounding", Rounding.HALF_EVEN))
    return fmt.encode(x, rounding=rounding, overflow=Overflow.SATURATE)


def _conv(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    w, b = dense_codes(graph, node)
    r = dense_requant(graph, node)
    acc, out_shape = _conv_acc(node, x, w, b)
    y = integer_kernels.requantize(acc, r.shift, r.rounding, r.lo, r.hi)  # [N*P, M]
    return _conv_layout(y, out_shape)


def _conv_layout(y: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """[N*P, M] channel-last rows -> [N, M, *spatial]."""
    n, m, *out_sp = out_shape
    rank = len(out_sp)
    return y.reshape(n, *out_sp, m).transpose(0, rank + 1, *range(1, rank + 1))


def _conv_acc(node: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Exact accumulators [N*P, M] of a convolution on codes, and the output shape [N, M, *spatial]."""
    win, _ = windows(x, node, 0)  # [N, C, *out, *k]; zero padding is code 0 (value 0)
    n, c = x.shape[:2]
    rank = x.ndim - 2
    out_sp = tuple(win.shape[2 : 2 + rank])
    groups = node.attrs.get("group", 1)
    cg, mg = c // groups, w.shape[0] // groups
    positions = int(np.prod(out_sp))
    # [N, G, Cg, P, K] -> per group a [N*P, Cg*K] matrix times [Mg, Cg*K]
    win = win.reshape(n, groups, cg, positions, -1).transpose(1, 0, 3, 2, 4).reshape(groups, n * positions, -1)
    wg = w.reshape(groups, mg, -1)
    acc = np.concatenate([integer_kernels.matmul_exact(win[gi], wg[gi]) for gi in range(groups)], axis=1)
    acc = acc + (b.astype(object) if acc.dtype == object else b)
    return acc, (n, w.shape[0], *out_sp)


# -- imported quantization: integer multiplier + shift requantization ---------------------------
@dataclass(frozen=True)
class ScaledRequant:
    """acc -> output codes with an integer multiplier and shift per output channel.

    out[c] = clamp(round((acc[c] * multiplier[c] + offset[c]) / 2**shift[c]), lo, hi) with the
    named rounding (gemmlowp/TFLite's M = M0 * 2**-n); acc excludes the bias, which is `offset`
    in units of 2**-shift output codes (an integer bias at the accumulator scale is exactly
    bias * multiplier). One definition for sim.exact and the hardware plans.
    """

    multiplier: tuple[int, ...]
    shift: tuple[int, ...]
    offset: tuple[int, ...]
    rounding: Rounding
    lo: int
    hi: int
    #: "integer" (the exact multiply-shift above) or "float32": onnxruntime's float32 product then
    #: half-even (integer_kernels.requantize_float32), chosen by node.attrs["requant_arith"]
    arith: str = "integer"


def is_fixed_node(graph: Graph, node: Node) -> bool:
    """True when every quantized value a node touches is fixed point (the power-of-two datapath)."""
    return all(isinstance(graph.value(v).type.format, FixedPoint) for v in (*node.inputs, *node.outputs) if v)


def ratio_multipliers(in_scale: float, w_scales: np.ndarray, out_scales: np.ndarray) -> tuple[list[int], list[int]]:
    """(M0, n) per channel for acc scale in*w over out.

    The ratio is computed as onnxruntime's QLinearConv/QLinearMatMul compute it,
    float32(float32(in * w) / out), and held exactly in REQUANT_MULTIPLIER_BITS bits; an output
    whose scale is exactly the accumulator's gets (1, 0), no rounding at all.
    """
    w = np.asarray(w_scales, dtype=np.float64).reshape(-1)
    out = np.broadcast_to(np.asarray(out_scales, dtype=np.float64).reshape(-1), w.shape)
    ms, ns = [], []
    for wc, oc in zip(w, out, strict=True):
        if float(in_scale) * float(wc) == float(oc):
            ms.append(1)
            ns.append(0)
            continue
        real = np.float32(np.float32(in_scale) * np.float32(wc)) / np.float32(oc)
        m0, n = integer_kernels.fixed_multiplier(float(real))
        ms.append(m0)
        ns.append(n)
    return ms, ns


def code_bounds(node: Node, out_fmt: FixedPoint | ScaledInt) -> tuple[int, int]:
    """Output clamp [lo, hi] in codes of any quantized format: fused activation and saturation."""
    if isinstance(out_fmt, FixedPoint):
        return activation_bounds(node, out_fmt)
    lo, hi = out_fmt.lo, out_fmt.hi
    act = node.attrs.get("activation", "none")
    if act == "relu":
        lo = max(lo, 0)
    elif act == "clip":
        s = Fraction(float(format_scales(out_fmt)))
        c_lo, c_hi = node.attrs["clip_lo"], node.attrs["clip_hi"]
        if math.isfinite(c_lo):
            lo = max(lo, math.ceil(Fraction(c_lo) / s))
        if math.isfinite(c_hi):
            hi = min(hi, math.floor(Fraction(c_hi) / s))
        hi = max(hi, lo)
    return lo, hi


def _per_tensor_scale(graph: Graph, node: Node, value: str) -> float:
    s = np.asarray(format_scales(value_format(graph, value))).reshape(-1)
    if s.size != 1:
        raise UnsupportedOpError(f"{node.describe()}: value {value!r} has per-channel scales; only weights may")
    return float(s[0])


def scaled_requant(graph: Graph, node: Node) -> ScaledRequant:
    """Multiplier, shift, rounding and clamp of a Dense/Conv/Affine with imported scales."""
    sx = _per_tensor_scale(graph, node, node.inputs[0])
    w_fmt = value_format(graph, node.inputs[1])
    out_fmt = value_format(graph, node.outputs[0])
    n_out = int(graph.value(node.outputs[0]).type.shape[0 if node.op == "Conv" else -1])
    sw = np.broadcast_to(np.asarray(format_scales(w_fmt, 1), dtype=np.float64).reshape(-1), (n_out,))
    so = np.asarray(format_scales(out_fmt, 1), dtype=np.float64).reshape(-1)
    ms, ns = ratio_multipliers(sx, sw, so)
    lo, hi = code_bounds(node, out_fmt)
    offsets = _bias_offsets(graph, node, ms, ns, np.broadcast_to(so, (n_out,)))
    arith = str(node.attrs.get("requant_arith", "integer"))
    return ScaledRequant(tuple(ms), tuple(ns), offsets, Rounding(node.attrs["rounding"]), lo, hi, arith)


def _bias_offsets(graph: Graph, node: Node, ms: list[int], ns: list[int], out_scales: np.ndarray) -> tuple[int, ...]:
    """The bias in units of 2**-n output codes: codes * M0 for an integer bias at the accumulator
    scale; for a float bias (left unquantized by its exporter) round_half_even(b / s_out * 2**n)."""
    n_out = len(ms)
    if len(node.inputs) < 3 or not node.inputs[2]:
        return (0,) * n_out
    bv = graph.value(node.inputs[2])
    if isinstance(bv.type.format, (FixedPoint, ScaledInt)):
        codes = np.broadcast_to(bv.type.format.encode_exact(bv.const).reshape(-1), (n_out,))
        return tuple(int(c) * m for c, m in zip(codes, ms, strict=True))
    b = np.broadcast_to(np.asarray(bv.const, dtype=np.float64).reshape(-1), (n_out,))
    out: list[int] = []
    for bc, n, so in zip(b, ns, out_scales, strict=True):
        q = Fraction(float(bc)) * Fraction(2) ** int(n) / Fraction(float(so))
        out.append(round(q))  # Fraction rounds half to even
    return tuple(out)


def mac_codes(graph: Graph, node: Node) -> tuple[np.ndarray, np.ndarray]:
    """Weight codes [out, ...] and bias codes (accumulator units; zeros for a float bias)."""
    w = value_format(graph, node.inputs[1]).encode_exact(graph.const(node.inputs[1]))
    if len(node.inputs) > 2 and isinstance(graph.value(node.inputs[2]).type.format, (FixedPoint, ScaledInt)):
        b = value_format(graph, node.inputs[2]).encode_exact(graph.const(node.inputs[2]))
    else:
        b = np.zeros(w.shape[0], dtype=np.int64)
    return w, b


def _mac_scaled(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    w, b = mac_codes(graph, node)
    r = scaled_requant(graph, node)
    m, n, off = np.array(r.multiplier), np.array(r.shift), np.array(r.offset, dtype=object)
    if r.arith == "float32":
        if not isinstance(graph.value(node.inputs[2]).type.format, (FixedPoint, ScaledInt)):
            raise UnsupportedOpError(f"{node.describe()}: float32 requantization needs an integer bias")

        def requant(acc: np.ndarray) -> np.ndarray:
            return integer_kernels.requantize_float32(acc, m, n, r.lo, r.hi)

    else:
        b = np.zeros(w.shape[0], dtype=np.int64)  # the bias enters as the requantization offset

        def requant(acc: np.ndarray) -> np.ndarray:
            return integer_kernels.requantize_scaled(acc, m, n, r.rounding, r.lo, r.hi, off)

    if node.op == "Conv":
        acc, out_shape = _conv_acc(node, x, w, b)
        return _conv_layout(requant(acc), out_shape)
    acc = integer_kernels.matmul_exact(x.reshape(-1, x.shape[-1]), w)
    acc = acc + (b.astype(object) if acc.dtype == object else b)
    return requant(acc).reshape((*x.shape[:-1], w.shape[0]))


def _affine_scaled(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    """Element-wise requantization x * m + a with a per-tensor constant scale m (imported rescale)."""
    m = value_format(graph, node.inputs[1]).encode_exact(graph.const(node.inputs[1]))
    a = value_format(graph, node.inputs[2]).encode_exact(graph.const(node.inputs[2]))
    if m.size != 1 or a.size != 1:
        raise UnsupportedOpError(f"{node.describe()}: an imported rescale needs a scalar scale and offset")
    sx = _per_tensor_scale(graph, node, node.inputs[0])
    sm = float(np.asarray(format_scales(value_format(graph, node.inputs[1]))).reshape(-1)[0])
    out_fmt = value_format(graph, node.outputs[0])
    (m0,), (n,) = ratio_multipliers(sx, np.array([sm]), np.asarray(format_scales(out_fmt)))
    lo, hi = code_bounds(node, out_fmt)
    acc = x.astype(np.int64) * int(m.reshape(())) + int(a.reshape(()))
    flat = acc.reshape(-1, 1)
    y = integer_kernels.requantize_scaled(flat, m0, n, Rounding(node.attrs["rounding"]), lo, hi)
    return y.reshape(x.shape)


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
    first = codes if isinstance(codes, BlockCodes) else np.asarray(codes, dtype=np.int64)
    env: dict[str, np.ndarray] = {graph.inputs[0]: first}  # type: ignore[dict-item]
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
        elif op in ("Dense", "Conv") and is_format_node(graph, node):
            y = format_mac(graph, node, x)
        elif op in ("Dense", "Conv", "Affine") and not is_fixed_node(graph, node):
            y = _affine_scaled(graph, node, x) if op == "Affine" else _mac_scaled(graph, node, x)
        elif op == "Dense":
            w, b = dense_codes(graph, node)
            r = dense_requant(graph, node)
            flat = x.reshape(-1, x.shape[-1])
            y = integer_kernels.dense(flat, w, b, shift=r.shift, rounding=r.rounding, lo=r.lo, hi=r.hi)
            y = y.reshape((*x.shape[:-1], w.shape[0]))
        elif op == "Conv":
            y = _conv(graph, node, x)
        elif op == "WinogradConv":
            y = winograd_kernels.exact_kernel(graph, node, x)
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
    return {k: value_format(graph, k).to_float(v) for k, v in codes.items()}


# -- MAC layers in other number formats (mixed precision by configuration) -----------------------
#: formats whose encode takes `axis`: the blocked axis (block formats) or the channel axis (binary/ternary)
_BLOCKED = (BlockFloat, BlockMinifloat, BlockLog)
_SCALED = (Binary, Ternary)


def is_format_value(fmt: object) -> bool:
    """True for a quantized format other than fixed point / imported scales (minifloat, block, binary...)."""
    return isinstance(fmt, (Minifloat, *_BLOCKED, *_SCALED))


def is_format_node(graph: Graph, node: Node) -> bool:
    """A Dense/Conv whose weight, input or output is in a non-fixed number format (computed by `format_mac`)."""
    if node.op not in ("Dense", "Conv"):
        return False
    return any(is_format_value(graph.value(v).type.format) for v in (node.inputs[0], node.inputs[1], node.outputs[0]))


def format_block_axis(ndim: int) -> int:
    """The axis a batch-first activation's shared fields run along: channels (1) of a [N, C, *spatial]
    tensor (the reduction axis of the next Conv), else the last (the in-features of the next Dense)."""
    return 1 if ndim >= 3 else ndim - 1


def weight_matrix(w: np.ndarray) -> np.ndarray:
    """A MAC weight as the [out, reduction] matrix the format engines see: Conv [M, C, *k] -> [M, (*k, C)]
    (input channels moved last, so blocks run along the channels of each kernel tap)."""
    w = np.asarray(w)
    return w.reshape(w.shape[0], -1) if w.ndim <= 2 else np.moveaxis(w, 1, -1).reshape(w.shape[0], -1)


def weight_from_matrix(mat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `weight_matrix` for a weight of `shape`."""
    if len(shape) <= 2:
        return np.asarray(mat).reshape(shape)
    return np.moveaxis(np.asarray(mat).reshape(shape[0], *shape[2:], shape[1]), -1, 1)


def encode_format(fmt: NumberFormat, x: np.ndarray, rounding: Rounding, axis: int) -> Codes:
    """Codes of x in any quantized format, saturating; `axis` = blocked axis (block formats) or channel axis."""
    if isinstance(fmt, FixedPoint):
        return fmt.encode(x, rounding=rounding, overflow=Overflow.SATURATE)
    if isinstance(fmt, (*_BLOCKED, *_SCALED)):
        return fmt.encode(x, rounding=rounding, axis=axis)
    if isinstance(fmt, Minifloat):
        return fmt.encode(x, rounding=rounding)
    raise FormatError(f"format {fmt} is not a quantized number format")


def format_weight_codes(graph: Graph, node: Node) -> tuple[QuantFormat, Codes]:
    """Weight format and codes of the [out, reduction] weight matrix; FormatError if the stored values
    are not exactly the format's (the quantize pass and QAT export store exactly representable values)."""
    fmt = graph.value(node.inputs[1]).type.format
    mat = np.asarray(weight_matrix(graph.const(node.inputs[1])), dtype=np.float64)
    codes = encode_format(fmt, mat, Rounding.HALF_EVEN, 0 if isinstance(fmt, _SCALED) else -1)
    if not np.array_equal(fmt.to_float(codes), mat):
        raise FormatError(
            f"{node.describe()}: weight {node.inputs[1]!r} is not exactly representable in {fmt} "
            "(blocks along the reduction axis, Conv channels last); quantize it with hwgen.passes.quantize_formats"
        )
    return fmt, codes


def _per_element(codes: Codes) -> Codes:
    """Block codes with the shared field expanded per element (axis None), so they can be sliced freely."""
    if not isinstance(codes, BlockCodes):
        return np.asarray(codes)
    return BlockCodes(np.asarray(codes.elements), np.array(codes.shared_per_element()), None, 0)


def _map_codes(codes: Codes, fn: Callable[[np.ndarray], np.ndarray]) -> Codes:
    """Apply a layout function (reshape, window, slice) to the elements and the per-element shared field."""
    c = _per_element(codes)
    if isinstance(c, BlockCodes):
        return BlockCodes(fn(c.elements), fn(c.shared), None, 0)
    return fn(c)


def _float_round_to_odd(acc: np.ndarray, lsb: int) -> np.ndarray:
    """acc * 2**lsb as float64, rounded to odd at 53 bits: a later rounding to any format of at most
    51 significant bits gives the correctly rounded result of the exact value (Boldo-Melquiond)."""
    if acc.dtype != object and (acc.size == 0 or int(np.abs(acc).max()) < (1 << 53)):
        return np.ldexp(acc.astype(np.float64), lsb)
    out = []
    for v in acc.reshape(-1):
        a = abs(int(v))
        n = max(0, a.bit_length() - 53)
        q = a >> n
        if n and (q << n) != a:
            q |= 1
        out.append(math.copysign(math.ldexp(q, lsb + n), int(v)))
    return np.asarray(out, dtype=np.float64).reshape(acc.shape)


def format_mac(graph: Graph, node: Node, x: Codes) -> Codes:
    """A Dense/Conv in any formats: exact accumulator (`format_mac.dot_exact`, Conv by im2col) plus the
    fixed-point bias, then one requantization to the output format with the node's rounding.

    Fixed-point output: integer_kernels.requantize with the fused activation's clamp. Other output
    formats: ReLU on the exact accumulator, then the format's own encode of the exact value
    (round-to-odd float64 in between, so no double rounding), saturating; blocks along
    `format_block_axis`. A fused Clip is refused for non-fixed outputs.
    """
    from hwgen.sim.format_mac import accumulator_spec, dot_exact

    w_fmt, w_codes = format_weight_codes(graph, node)
    a_fmt = graph.value(node.inputs[0]).type.format
    out_fmt = graph.value(node.outputs[0]).type.format
    b_fmt = fixed_format(graph, node.inputs[2])
    b = b_fmt.encode_exact(graph.const(node.inputs[2])).reshape(-1)
    w_codes = _per_element(w_codes)
    k = int(np.prod(np.shape(w_codes.elements if isinstance(w_codes, BlockCodes) else w_codes)[1:]))
    lsb = min(accumulator_spec(w_fmt, a_fmt, k, w_codes=w_codes).lsb, -b_fmt.frac)
    if node.op == "Dense":
        lead = (x.elements if isinstance(x, BlockCodes) else x).shape[:-1]
        a = _map_codes(x, lambda t: np.asarray(t).reshape(-1, t.shape[-1]))
        acc = dot_exact(w_fmt, w_codes, a_fmt, a, lsb=lsb).acc
        shape = (*lead, acc.shape[-1])
    else:
        acc, shape = _format_conv_acc(node, w_fmt, w_codes, a_fmt, x, lsb)
    acc = acc + (b.astype(object) << (-b_fmt.frac - lsb)) if acc.dtype == object else acc + (b << (-b_fmt.frac - lsb))
    if isinstance(out_fmt, FixedPoint):
        lo, hi = activation_bounds(node, out_fmt)
        y = integer_kernels.requantize(acc, -lsb - out_fmt.frac, Rounding(node.attrs["rounding"]), lo, hi)
        return _conv_layout(y, shape) if node.op == "Conv" else y.reshape(shape)
    act = node.attrs.get("activation", "none")
    if act not in ("none", "relu"):
        raise UnsupportedOpError(f"{node.describe()}: a fused {act} before a {out_fmt} output; only ReLU is supported")
    if act == "relu":
        acc = np.maximum(acc, 0) if acc.dtype != object else np.where(acc > 0, acc, 0)
    v = _float_round_to_odd(np.asarray(acc), lsb)
    v = _conv_layout(v, shape) if node.op == "Conv" else v.reshape(shape)
    return encode_format(out_fmt, v, Rounding(node.attrs["rounding"]), format_block_axis(v.ndim))


def _format_conv_acc(
    node: Node, w_fmt: QuantFormat, w_codes: Codes, a_fmt: QuantFormat, x: Codes, lsb: int
) -> tuple[np.ndarray, tuple[int, ...]]:
    """im2col in (kernel tap, channel) order (as `weight_matrix`), one dot_exact per group: [N*P, M]."""
    from hwgen.sim.format_mac import dot_exact

    xe = x.elements if isinstance(x, BlockCodes) else np.asarray(x)
    pads = any(node.attrs.get("pads_begin", ())) or any(node.attrs.get("pads_end", ()))
    if pads and isinstance(a_fmt, Binary):
        raise UnsupportedOpError(f"{node.describe()}: zero padding has no code in {a_fmt} (binary is +-alpha)")
    n, c = xe.shape[:2]
    rank = xe.ndim - 2
    win_shape: list[tuple[int, ...]] = []

    def im2col(t: np.ndarray) -> np.ndarray:
        win, _ = windows(t, node, 0)  # [N, C, *out, *k]; element code 0 is the value 0 here
        win_shape.append(tuple(win.shape))
        return np.moveaxis(win, 1, -1)  # [N, *out, *k, C]

    cols = _map_codes(x, im2col)
    out_sp = win_shape[0][2 : 2 + rank]
    groups = node.attrs.get("group", 1)
    cg = c // groups
    m = (w_codes.elements if isinstance(w_codes, BlockCodes) else w_codes).shape[0]
    mg = m // groups
    p = n * int(np.prod(out_sp))
    parts = []
    for gi in range(groups):
        a_g = _map_codes(cols, lambda t, gi=gi: t[..., gi * cg : (gi + 1) * cg].reshape(p, -1))
        w_g = _map_codes(w_codes, lambda t, gi=gi: t[gi * mg : (gi + 1) * mg])
        parts.append(dot_exact(w_fmt, w_g, a_fmt, a_g, lsb=lsb).acc)
    if any(a.dtype == object for a in parts):
        parts = [a.astype(object) for a in parts]
    return np.concatenate(parts, axis=1), (n, m, *out_sp)
