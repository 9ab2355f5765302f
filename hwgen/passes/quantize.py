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
from enum import StrEnum

import numpy as np

from hwgen.config import BuildConfig
from hwgen.errors import FormatError, UnsupportedOpError
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.numerics import FixedPoint, Overflow, Rounding
from hwgen.passes.base import NodeRecord, PassResult
from hwgen.passes.calibrate import Range, calibrate
from hwgen.sim.exact import LUT_OPS, ScaledInt

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
    if graph.meta.get("imported_quant"):
        return quantize_imported(graph, requant_arith=RequantArith(config.quantize.requant_arith))
    from hwgen.passes.quantize_formats import formats_requested, quantize_formats

    if formats_requested(config):  # per-layer number formats (mixed precision by configuration)
        return quantize_formats(graph, calib_x, config)
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
        if consts and node.op in ("Add", "Sub", "Mul", "Div", "BatchNormalization"):
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
    """Rewrite x (+|-|*|/) constant, or a BatchNormalization no Conv/Gemm absorbed, as
    Affine(x, m, a): y = requant(x * m + a), per-sample broadcast.

    m is a 16-bit fixed-point scale (1 for Add/Sub), a an offset on the accumulator grid.
    """
    x_name = next(i for i in node.inputs if not g.values[i].is_const)
    if node.op == "BatchNormalization":
        m, a = _batchnorm_affine(g, node)
    else:
        m, a = _constant_affine(g, node, x_name)
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


def _constant_affine(g: Graph, node: Node, x_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(m, a) of x (+|-|*|/) c."""
    c_name = next(i for i in node.inputs if g.values[i].is_const)
    c = np.asarray(g.const(c_name), dtype=np.float64)
    first = node.inputs[0] == x_name
    one, zero = np.ones_like(c), np.zeros_like(c)
    if node.op == "Div" and (not first or np.any(c == 0)):
        raise UnsupportedOpError(f"{node.describe()}: only division of an activation by a non-zero constant")
    return {
        "Add": (one, c),
        "Sub": (one, -c) if first else (-one, c),
        "Mul": (c, zero),
        "Div": (1.0 / c, zero),
    }[node.op]


def _batchnorm_affine(g: Graph, node: Node) -> tuple[np.ndarray, np.ndarray]:
    """(m, a) of an inference BatchNormalization: m = gamma / sqrt(var + eps), a = beta - mean * m,
    shaped [C, 1, ...] to broadcast over the channel axis of a sample (axis 1 of the batch, as sim.reference)."""
    x, gamma, beta, mean, var = (node.inputs[0], *(np.asarray(g.const(i), dtype=np.float64) for i in node.inputs[1:]))
    if np.any(var + node.attrs.get("epsilon", 1e-5) <= 0):
        raise UnsupportedOpError(f"{node.describe()}: variance + epsilon must be positive")
    m = gamma / np.sqrt(var + node.attrs.get("epsilon", 1e-5))
    shape = (-1,) + (1,) * (len(g.values[x].type.shape) - 1)  # per-sample shape: channels first
    return m.reshape(shape), (beta - mean * m).reshape(shape)


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


# -- models quantized by their exporter (QDQ / QONNX import) ------------------------------------
#: pass-through ops allowed on imported scaled-integer formats (their codes need no scale)
IMPORTED_PASS_THROUGH = ("Flatten", "Reshape", "Transpose", "Identity", "Relu", "MaxPool", "GlobalMaxPool")
#: widest bias code: the bias is added to the accumulator as an integer
_BIAS_MAX_BITS = 62


def _is_quantized(fmt: object) -> bool:
    return isinstance(fmt, (FixedPoint, ScaledInt))


def _scales(fmt: FixedPoint | ScaledInt, n: int) -> np.ndarray:
    if isinstance(fmt, FixedPoint):
        return np.full(n, math.ldexp(1.0, -fmt.frac))
    return np.broadcast_to(np.asarray(fmt.scale, dtype=np.float64), (n,)).copy()


class FloatBias(StrEnum):
    """Where a float bias (left unquantized by the exporter) enters an imported layer."""

    EXACT = "exact"  #: added after the multiplier at 2**-shift output codes (brevitas / qonnx execution)
    ACCUMULATOR = "accumulator"  #: rounded half-even onto the accumulator grid (onnxruntime's fused kernels)


class RequantArith(StrEnum):
    """How an imported layer's accumulator is scaled to its output codes."""

    INTEGER = "integer"  #: exact integer multiplier + shift (the hardware's arithmetic)
    FLOAT32 = "float32"  #: onnxruntime's float32 product then half-even (integer logic in hardware)


def quantize_imported(
    graph: Graph, *, float_bias: FloatBias = FloatBias.EXACT, requant_arith: RequantArith = RequantArith.INTEGER
) -> PassResult:
    """Keep the formats an exporter chose (see hwgen.frontend.qdq); fill in only what they imply.

    Rewrites: pass-through outputs take their input's format; each Dense/Conv bias becomes codes
              in accumulator units (kept as the exporter's codes when its scale is the
              accumulator's, as onnxruntime's int32 bias is; rounded half-even onto that grid when the
              exporter left it in float); a Dense/Conv output the exporter left unquantized gets the
              exact accumulator format (no rounding). Every node gets the rounding of the quantizer
              of its output (`rounding` attr). Formats the exporter set are never changed.
    Refuses:  unquantized weights or inputs, and ops with no integer form for imported scales
              -> UnsupportedOpError naming the node.
    Records:  per Dense/Conv: weight/input/output formats and how the bias was placed.
    """
    g = graph.copy()
    meta = g.meta["imported_quant"]
    rounding: dict[str, str] = meta.get("rounding", {})
    records: list[NodeRecord] = []
    for name in g.inputs:
        if not _is_quantized(g.value(name).type.format):
            raise UnsupportedOpError(
                f"model input {name!r} is not quantized by the model (no QuantizeLinear/Quant on it); "
                "hwgen does not mix imported and re-chosen quantization"
            )
    for node in g.nodes:
        x_in = next((i for i in node.inputs if not g.values[i].is_const), node.inputs[0])
        x_fmt = g.values[x_in].type.format
        out_fmt = g.values[node.outputs[0]].type.format
        if not _is_quantized(x_fmt):
            raise UnsupportedOpError(f"{node.describe()}: its input {x_in!r} is not quantized by the model")
        node.attrs["rounding"] = rounding.get(node.outputs[0], node.attrs.get("rounding", str(Rounding.HALF_EVEN)))
        all_fixed = isinstance(x_fmt, FixedPoint) and not isinstance(out_fmt, ScaledInt)
        if node.op in IMPORTED_PASS_THROUGH or (all_fixed and node.op in PASS_THROUGH):
            if _is_quantized(out_fmt) and out_fmt != x_fmt:
                raise UnsupportedOpError(
                    f"{node.describe()}: output format {out_fmt} differs from its input's {x_fmt}; "
                    "a pass-through op cannot rescale"
                )
            _set_format(g, node.outputs[0], x_fmt)
        elif node.op in ("Dense", "Conv"):
            records.append(_imported_mac(g, node, x_fmt, FloatBias(float_bias)))
            node.attrs["requant_arith"] = str(RequantArith(requant_arith))
        elif node.op == "Affine" and node.attrs.get("imported_rescale") and _is_quantized(out_fmt):
            continue
        else:
            raise UnsupportedOpError(
                f"{node.describe()}: no integer implementation of {node.op} with imported scales "
                f"({x_fmt} -> {out_fmt}); supported: Dense/Conv, {', '.join(IMPORTED_PASS_THROUGH)}"
            )
    for name in g.outputs:
        if not _is_quantized(g.value(name).type.format):
            raise UnsupportedOpError(f"graph output {name!r} is not quantized")
    g.meta["quantized"] = "imported"
    g.meta["input_rounding"] = str(Rounding.HALF_EVEN)
    return PassResult(g, True, records)


def _imported_mac(g: Graph, node: Node, x_fmt: FixedPoint | ScaledInt, float_bias: FloatBias) -> NodeRecord:
    w_fmt = g.values[node.inputs[1]].type.format
    if not _is_quantized(w_fmt):
        raise UnsupportedOpError(
            f"{node.describe()}: its weight {node.inputs[1]!r} is not quantized by the model; "
            "export it with a weight quantizer (or quantize the whole model with hwgen instead)"
        )
    if isinstance(x_fmt, ScaledInt) and not x_fmt.per_tensor:
        raise UnsupportedOpError(f"{node.describe()}: per-channel input scales")
    w = g.const(node.inputs[1])
    n_out = w.shape[0]
    sx = float(_scales(x_fmt, 1)[0])
    acc_scale = sx * _scales(w_fmt, n_out)  # exact: two float32-representable scales
    all_fixed = isinstance(x_fmt, FixedPoint) and isinstance(w_fmt, FixedPoint)
    bias_how = _imported_bias(g, node, x_fmt, w_fmt, acc_scale, all_fixed, float_bias)
    out = node.outputs[0]
    out_fmt = g.values[out].type.format
    if not _is_quantized(out_fmt):
        out_fmt = _accumulator_format(g, node, x_fmt, acc_scale, all_fixed)
        _set_format(g, out, out_fmt)
        bias_how += ", output = accumulator (no requantization)"
    return NodeRecord(
        node.name,
        node.onnx_name,
        "quantize_imported",
        {"weight_format": w_fmt.name, "input_format": x_fmt.name, "act_format": out_fmt.name, "bias": bias_how},
    )


def _imported_bias(
    g: Graph,
    node: Node,
    x_fmt: FixedPoint | ScaledInt,
    w_fmt: object,
    acc_scale: np.ndarray,
    all_fixed: bool,
    float_bias: FloatBias,
) -> str:
    """Give the bias integer codes at the accumulator scale when the exporter put it there; returns how.

    onnxruntime stores the bias at float32(x_scale * w_scale) and adds its codes to the accumulator
    as they are: within float32 rounding of the accumulator scale hwgen does the same. A bias on
    the exact power-of-two accumulator grid becomes fixed point. Any other bias (a float bias the
    exporter left unquantized, or codes at another scale) stays a float constant of its exact
    value: sim.exact adds it after the multiplier, at 2**-shift output codes (ScaledRequant.offset).
    """
    n_out = len(acc_scale)
    if len(node.inputs) > 2:
        bv = g.values[node.inputs[2]]
        b = np.broadcast_to(np.asarray(bv.const, dtype=np.float64).reshape(-1), (n_out,)).copy()
        b_fmt = bv.type.format
    else:
        b, b_fmt = np.zeros(n_out), None
    fmt: FixedPoint | ScaledInt | None = None
    codes = np.rint(b / acc_scale)
    if isinstance(b_fmt, (FixedPoint, ScaledInt)) and np.all(np.abs(_scales(b_fmt, n_out) / acc_scale - 1) <= 2.0**-22):
        codes = np.broadcast_to(b_fmt.encode_exact(np.asarray(bv.const)).reshape(-1), (n_out,)).astype(np.float64)
        how = "exporter's integer codes at the accumulator scale"
    elif not np.any(b):
        how = "none (zero)"
    elif all_fixed and np.all(codes * acc_scale == b):
        how = "on the accumulator grid"
    elif float_bias is FloatBias.ACCUMULATOR:
        how = "float bias rounded half-even onto the accumulator grid"
    else:
        name = g.unique_name(f"{node.name}.bias_f")
        g.add_value(Value(name, TensorType((n_out,)), b))
        node.inputs = [node.inputs[0], node.inputs[1], name]
        return "float bias, added exactly after the multiplier (2**-shift output codes)"
    peak = int(np.abs(codes).max(initial=0))
    if peak.bit_length() > _BIAS_MAX_BITS:
        raise FormatError(f"{node.describe()}: the bias needs {peak.bit_length() + 1} bits at the accumulator scale")
    bits = max(2, peak.bit_length() + 1)
    int_codes = codes.astype(np.int64)
    if all_fixed:
        fmt = FixedPoint(bits, x_fmt.frac + w_fmt.frac, signed=True)  # type: ignore[union-attr]
    else:
        nominal = tuple(float(np.float32(s)) for s in acc_scale)  # the accumulator scale as a float32
        fmt = ScaledInt.for_range(-peak, peak, nominal, 0)
    values = fmt.to_float(int_codes)
    if np.any(fmt.encode_exact(values) != int_codes):
        raise FormatError(f"{node.describe()}: bias codes do not round-trip through {fmt.name}")
    name = g.unique_name(f"{node.name}.bias_q")
    g.add_value(Value(name, TensorType((n_out,), fmt), values))
    node.inputs = [node.inputs[0], node.inputs[1], name]
    return how


def _accumulator_format(
    g: Graph, node: Node, x_fmt: FixedPoint | ScaledInt, acc_scale: np.ndarray, all_fixed: bool
) -> FixedPoint | ScaledInt:
    """The exact format of a Dense/Conv accumulator: bound from the weight codes and input range."""
    w_fmt = g.values[node.inputs[1]].type.format
    w_codes = w_fmt.encode_exact(g.const(node.inputs[1]))  # type: ignore[union-attr]
    bv = g.values[node.inputs[2]]
    if isinstance(bv.type.format, (FixedPoint, ScaledInt)):
        b_codes = bv.type.format.encode_exact(bv.const)
    else:  # a float bias enters as a requantization offset, at most ceil(|b| / acc scale) codes
        b_codes = np.ceil(np.abs(np.asarray(bv.const, dtype=np.float64)) / acc_scale).astype(np.int64)
    x_peak = max(abs(x_fmt.min_code), abs(x_fmt.max_code))
    per_out = np.abs(w_codes.reshape(w_codes.shape[0], -1).astype(object)).sum(axis=1) * x_peak
    bound = int(max(per_out + np.abs(b_codes.astype(object)))) if len(per_out) else 0
    bits = max(2, bound.bit_length() + 1)
    if all_fixed:
        return FixedPoint(bits, x_fmt.frac + w_fmt.frac, signed=True)  # type: ignore[union-attr]
    return ScaledInt.for_range(-bound, bound, tuple(float(s) for s in acc_scale), 0)
