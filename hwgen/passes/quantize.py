"""Fixed-point post-training quantization with power-of-two scales.

Rewrites: every activation value gets a FixedPoint format from calibration; every Dense/Conv weight
is replaced by its quantized values (exactly representable in its per-tensor format) and its
bias by codes at the accumulator's scale (frac_in + frac_w), so `sim.exact` is exact integer
arithmetic. Dense nodes get `rounding` (the requantization mode).
Refuses:  ops with no fixed-point implementation -> UnsupportedOpError naming the node.
Records:  per Dense: weight/act formats, weight SQNR (dB), calibration clip rate.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from hwgen.config import BuildConfig
from hwgen.errors import FormatError, UnsupportedOpError
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.numerics import FixedPoint, Overflow, Rounding
from hwgen.passes.base import NodeRecord, PassResult
from hwgen.passes.calibrate import Range, calibrate
from hwgen.sim.exact import LUT_OPS

log = logging.getLogger(__name__)

#: ops whose output codes are (a selection of) their input codes: the format passes through
PASS_THROUGH = (
    "Flatten",
    "Reshape",
    "Transpose",
    "Identity",
    "Relu",
    "MaxPool",
    "GlobalMaxPool",
    "Clip",
    "Pad",
    "AveragePool",
    "GlobalAveragePool",
)
#: the widest input code a lookup table may be indexed by
LUT_MAX_INPUT_BITS = 16
_FRAC_LIMIT = 64


def fixed_for_bound(bound: float, bits: int, signed: bool) -> FixedPoint:
    """The finest power-of-two scale whose range still holds `bound` once rounded to nearest.

    `bound` may exceed the largest code by less than half a step: it then rounds onto the
    largest code instead of costing a whole bit of resolution (0.887 at 4 bits -> fixed<4,3>).
    """
    max_code = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    if not math.isfinite(bound) or bound <= 0.0:
        return FixedPoint(bits, bits - 1 if signed else bits, signed)
    frac = math.floor(math.log2(max_code / bound))
    if math.ldexp(bound, frac + 1) < max_code + 0.5:
        frac += 1
    return FixedPoint(bits, max(-_FRAC_LIMIT, min(_FRAC_LIMIT, frac)), signed)


def _nonnegative_output(node: Node) -> bool:
    act = node.attrs.get("activation", "none")
    return act == "relu" or (act == "clip" and node.attrs.get("clip_lo", -1.0) >= 0.0)


def _sqnr_db(ref: np.ndarray, q: np.ndarray) -> float:
    noise = float(np.sum((ref - q) ** 2))
    signal = float(np.sum(ref**2))
    return float("inf") if noise == 0 else 10.0 * math.log10(max(signal, 1e-300) / noise)


def _set_format(g: Graph, name: str, fmt: FixedPoint) -> None:
    v = g.values[name]
    g.values[name] = Value(v.name, TensorType(v.type.shape, fmt), v.const)


def quantize_fixed(graph: Graph, calib_x: np.ndarray, config: BuildConfig) -> PassResult:
    """Quantize a canonical graph to fixed point (see module docstring). Functional."""
    q = config.quantize
    ranges = calibrate(graph, calib_x, q.calibration, q.percentile)
    g = graph.copy()
    records: list[NodeRecord] = []
    for name in g.inputs:
        r = ranges[name]
        _set_format(g, name, fixed_for_bound(r.bound, q.input_bits or q.act_bits, signed=r.lo < 0))
    for node in g.nodes:
        x_in = next((i for i in node.inputs if not g.values[i].is_const), node.inputs[0])
        x_fmt = g.values[x_in].type.format
        if not isinstance(x_fmt, FixedPoint):
            raise UnsupportedOpError(f"{node.describe()}: its input {x_in!r} was not quantized")
        layer = config.layer(node.name, node.onnx_name)
        a_bits = layer.act_bits or q.act_bits
        out_range = ranges[node.outputs[0]]
        node.attrs["rounding"] = str(q.rounding)
        consts = [i for i in node.inputs if g.values[i].is_const]
        if consts and node.op in ("Add", "Sub", "Mul", "Div"):
            records.append(_quantize_affine(g, node, x_fmt, out_range, a_bits))
            continue
        if consts and node.op not in ("Dense", "Conv", "Pad"):
            raise UnsupportedOpError(
                f"{node.describe()}: no fixed-point implementation of {node.op} with a constant operand; "
                "fold it into a neighbouring Conv/Gemm or remove it"
            )
        if node.op in PASS_THROUGH:
            _set_format(g, node.outputs[0], x_fmt)
        elif node.op in ("Dense", "Conv"):
            records.append(_quantize_dense(g, node, x_fmt, out_range, config))
        elif node.op in ("Add", "Concat") or node.op in LUT_OPS:
            nonneg = node.attrs.get("activation") == "relu" or node.op in ("Sigmoid", "HardSigmoid")
            if node.op in LUT_OPS and x_fmt.bits > LUT_MAX_INPUT_BITS:
                raise UnsupportedOpError(
                    f"{node.describe()}: {node.op} is a lookup table over {x_fmt.bits}-bit input codes; "
                    f"at most {LUT_MAX_INPUT_BITS} bits are supported: lower act_bits of the layer before it"
                )
            _set_format(g, node.outputs[0], fixed_for_bound(out_range.bound, a_bits, signed=not nonneg))
        elif node.op == "Softmax":
            _set_format(g, node.outputs[0], fixed_for_bound(1.0, a_bits, signed=False))
        else:
            raise UnsupportedOpError(f"{node.describe()}: no fixed-point implementation of {node.op} yet")
    g.meta["quantized"] = "fixed"
    g.meta["input_rounding"] = str(q.input_rounding)
    return PassResult(g, True, records)


#: width of the multiplier of a standalone scale (Mul/Div by a constant)
AFFINE_SCALE_BITS = 16


def _quantize_affine(g: Graph, node: Node, x_fmt: FixedPoint, out_range: Range, a_bits: int) -> NodeRecord:
    """Rewrite x (+|-|*|/) constant as Affine(x, m, a): y = requant(x * m + a), per-sample broadcast.

    m is a 16-bit fixed-point scale (1 for Add/Sub), a an offset on the accumulator grid.
    """
    x_name = next(i for i in node.inputs if not g.values[i].is_const)
    c_name = next(i for i in node.inputs if g.values[i].is_const)
    c = np.asarray(g.const(c_name), dtype=np.float64)
    first = node.inputs[0] == x_name
    one, zero = np.ones_like(c), np.zeros_like(c)
    if node.op == "Div" and (not first or np.any(c == 0)):
        raise UnsupportedOpError(f"{node.describe()}: only division of an activation by a non-zero constant")
    m, a = {
        "Add": (one, c),
        "Sub": (one, -c) if first else (-one, c),
        "Mul": (c, zero),
        "Div": (1.0 / c, zero),
    }[node.op]
    m_fmt = fixed_for_bound(float(np.abs(m).max()), AFFINE_SCALE_BITS, signed=True)
    m_codes = m_fmt.encode(m, rounding=Rounding.HALF_EVEN, overflow=Overflow.SATURATE)
    acc_frac = x_fmt.frac + m_fmt.frac
    a_scaled = np.rint(np.ldexp(a, acc_frac))
    a_max = int(np.abs(a_scaled).max()) if a_scaled.size else 0
    if a_max.bit_length() > 62:
        raise FormatError(f"{node.describe()}: the constant offset does not fit 62 bits at the accumulator scale")
    a_fmt = FixedPoint(max(2, a_max.bit_length() + 1), acc_frac, signed=True)
    out_fmt = fixed_for_bound(out_range.bound, a_bits, signed=True)
    m_name, a_name = g.unique_name(f"{node.name}.scale_q"), g.unique_name(f"{node.name}.offset_q")
    g.add_value(Value(m_name, TensorType(m.shape, m_fmt), m_fmt.to_float(m_codes)))
    g.add_value(Value(a_name, TensorType(a.shape, a_fmt), a_fmt.to_float(a_scaled.astype(np.int64))))
    node.op, node.inputs = "Affine", [x_name, m_name, a_name]
    _set_format(g, node.outputs[0], out_fmt)
    return NodeRecord(
        node.name,
        node.onnx_name,
        "quantize_fixed",
        {"scale_format": m_fmt.name, "input_format": x_fmt.name, "act_format": out_fmt.name},
    )


def _quantize_dense(g: Graph, node: Node, x_fmt: FixedPoint, out_range: Range, config: BuildConfig) -> NodeRecord:
    q = config.quantize
    layer = config.layer(node.name, node.onnx_name)
    w_bits = layer.weight_bits or q.weight_bits
    a_bits = layer.act_bits or q.act_bits
    w = np.asarray(g.const(node.inputs[1]), dtype=np.float64)
    b = np.asarray(g.const(node.inputs[2]), dtype=np.float64) if len(node.inputs) > 2 else np.zeros(w.shape[0])
    w_fmt = fixed_for_bound(float(np.abs(w).max()), w_bits, signed=True)
    w_codes = w_fmt.encode(w, rounding=Rounding.HALF_EVEN, overflow=Overflow.SATURATE)
    acc_frac = x_fmt.frac + w_fmt.frac
    b_scaled = np.rint(np.ldexp(b, acc_frac))  # half-even onto the accumulator grid
    b_max = int(np.abs(b_scaled).max()) if b_scaled.size else 0
    if b_max.bit_length() > 62:
        raise FormatError(
            f"{node.describe()}: the bias needs {b_max.bit_length() + 1} bits at the accumulator scale "
            f"({x_fmt.name} x {w_fmt.name}); lower weight_bits/act_bits for this layer"
        )
    b_fmt = FixedPoint(max(2, b_max.bit_length() + 1), acc_frac, signed=True)
    b_codes = b_scaled.astype(np.int64)
    out_fmt = fixed_for_bound(out_range.bound, a_bits, signed=not _nonnegative_output(node))

    w_name = g.unique_name(f"{node.name}.weight_q")
    b_name = g.unique_name(f"{node.name}.bias_q")
    g.add_value(Value(w_name, TensorType(w.shape, w_fmt), w_fmt.to_float(w_codes)))
    g.add_value(Value(b_name, TensorType(b.shape, b_fmt), b_fmt.to_float(b_codes)))
    node.inputs = [node.inputs[0], w_name, b_name]
    node.attrs["rounding"] = str(q.rounding)
    _set_format(g, node.outputs[0], out_fmt)
    clip = out_range.hi >= (out_fmt.max_code + 0.5) * out_fmt.step or (
        out_fmt.signed and out_range.lo < (out_fmt.min_code - 0.5) * out_fmt.step
    )
    log.debug("%s: w=%s in=%s out=%s", node.name, w_fmt, x_fmt, out_fmt)
    return NodeRecord(
        node.name,
        node.onnx_name,
        "quantize_fixed",
        {
            "weight_format": w_fmt.name,
            "input_format": x_fmt.name,
            "act_format": out_fmt.name,
            "bias_format": b_fmt.name,
            "weight_sqnr_db": round(_sqnr_db(w, w_fmt.to_float(w_codes)), 3),
            "calibration_clips": bool(clip),
        },
    )
