"""Import of already-quantized ONNX models: QDQ (QuantizeLinear/DequantizeLinear) and QONNX Quant.

The quantization a model carries is kept exactly, never re-chosen. Rewrite rules at import:
  1. DequantizeLinear / Quant / BipolarQuant of a constant -> that constant's exact values
     (code * scale in float64) with the format its codes and scales define. Weights must have a
     zero point of 0.
  2. QuantizeLinear -> DequantizeLinear on an activation, or Quant on an activation -> no node: the
     activation they round gets the format (the layer producing it requantizes into it), and the
     quantizer's rounding is remembered in graph.meta["imported_quant"]["rounding"].
  3. Gemm/MatMul with a quantized weight -> Dense at once (canonicalize would rebuild it in float).
  4. A pass-through op (Relu, MaxPool, Flatten, ...) whose output format differs from its input's
     -> the op at its input format, then an Affine rescale (x * 1 + 0) into the output format.
Formats: a single power-of-two scale with zero point 0 and a full two's-complement (or unsigned)
range becomes FixedPoint, so the existing fixed-point datapath runs it unchanged; anything else
is a `ScaledInt` with centred codes (q - zero_point).
Refuses (UnsupportedOpError naming the node and op): a non-constant scale or zero point, a zero
point on weights, per-channel activation scales, a QuantizeLinear output used by anything but
DequantizeLinear, BipolarQuant on activations, rounding modes with no integer form here, and
arithmetic with constants (or BatchNormalization) right after a quantized layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import onnx

from hwgen.errors import UnsupportedOpError
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.numerics import FixedPoint, NumberFormat, Rounding
from hwgen.sim.exact import ScaledInt

#: ops this module converts (QONNX ops may come in any of the QONNX/FINN/brevitas domains)
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "Quant", "BipolarQuant")
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas", "")
#: ops whose output codes are a selection of their input codes (format passes through)
PASS_THROUGH = ("Relu", "MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Identity")
#: QONNX rounding_mode -> hwgen rounding (ROUND is numpy's round: half to even)
QONNX_ROUNDING = {"ROUND": Rounding.HALF_EVEN, "HALF_EVEN": Rounding.HALF_EVEN, "FLOOR": Rounding.FLOOR}


class ImportCtx(Protocol):
    """What the ONNX importer's context offers (onnx_import._Ctx)."""

    graph: Graph

    def where(self, node: onnx.NodeProto) -> str: ...
    def is_const(self, name: str) -> bool: ...
    def const(self, name: str) -> np.ndarray: ...


@dataclass
class QdqState:
    """What the quantization nodes seen so far imply for the rest of the import."""

    #: removed node outputs -> the tensor they stand for (DequantizeLinear/Quant outputs)
    alias: dict[str, str] = field(default_factory=dict)
    #: QuantizeLinear outputs (integer tensors) -> (source tensor, format, node name)
    pending: dict[str, tuple[str, NumberFormat, str]] = field(default_factory=dict)
    #: activation -> (format, rounding, quantizer node name)
    act: dict[str, tuple[NumberFormat, Rounding, str]] = field(default_factory=dict)
    exporters: set[str] = field(default_factory=set)


def uses_quantization(model: onnx.ModelProto) -> bool:
    """True when the model holds QDQ or QONNX quantization nodes."""
    return any(n.op_type in QUANT_OPS for n in model.graph.node)


def handles(node: onnx.NodeProto, ctx: ImportCtx) -> bool:
    """Whether `convert` takes this node (a QuantizeLinear of a constant is left to constant folding)."""
    if node.op_type not in QUANT_OPS or node.domain not in (*QONNX_DOMAINS, "ai.onnx"):
        return False
    return not (node.op_type == "QuantizeLinear" and ctx.is_const(node.input[0]))


def _err(ctx: ImportCtx, node: onnx.NodeProto, why: str, fix: str = "") -> UnsupportedOpError:
    return UnsupportedOpError(f"{ctx.where(node)}: {why}." + (f" {fix}" if fix else ""))


def resolve(state: QdqState, ctx: ImportCtx, node: onnx.NodeProto) -> onnx.NodeProto:
    """The node with inputs renamed through removed quantizers; integer tensors may only feed DQ."""
    if node.op_type != "DequantizeLinear":
        for i in node.input:
            if i in state.pending:
                raise _err(
                    ctx,
                    node,
                    f"input {i!r} is the integer output of QuantizeLinear '{state.pending[i][2]}'",
                    "hwgen imports QDQ models where every QuantizeLinear feeds a DequantizeLinear.",
                )
    if not any(i in state.alias for i in node.input):
        return node
    out = onnx.NodeProto()
    out.CopyFrom(node)
    del out.input[:]
    out.input.extend(state.alias.get(i, i) for i in node.input)
    return out


# -- scales, zero points and formats ----------------------------------------------------------
def _const_input(ctx: ImportCtx, node: onnx.NodeProto, idx: int, role: str) -> np.ndarray | None:
    if len(node.input) <= idx or not node.input[idx]:
        return None
    name = node.input[idx]
    if not ctx.is_const(name):
        raise _err(
            ctx,
            node,
            f"the {role} (input {idx}, {name!r}) is not a constant",
            "hwgen imports fixed quantization only: scales, zero points and bit widths must be initializers.",
        )
    return np.asarray(ctx.const(name))


def _int_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _is_pow2(s: float) -> bool:
    m, _ = math.frexp(s)
    return s > 0 and m == 0.5


def make_format(
    scale: np.ndarray, zero_point: int, lo: int, hi: int, axis: int = 0, *, const: bool = False
) -> NumberFormat:
    """FixedPoint for one power-of-two scale, zero point 0 and a full container range; else ScaledInt.

    [lo, hi] is the exporter's code range (qmin, qmax); codes are centred by the zero point. A
    constant's codes already exist, so its range need not fill the container (narrow weights).
    """
    s = tuple(float(v) for v in np.asarray(scale, dtype=np.float64).reshape(-1))
    if len(s) == 1 and _is_pow2(s[0]) and zero_point == 0:
        frac = -math.frexp(s[0])[1] + 1
        bits = max(int(hi).bit_length(), (-lo - 1).bit_length() if lo < 0 else 0) + (1 if lo < 0 else 0)
        full = (lo, hi) == ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if lo < 0 else (0, (1 << bits) - 1))
        if (full or const) and bits >= (2 if lo < 0 else 1):
            return FixedPoint(bits, frac, signed=lo < 0)
    return ScaledInt.for_range(lo - zero_point, hi - zero_point, s, axis, zero_point)


def _scale_axis(ctx: ImportCtx, node: onnx.NodeProto, scale: np.ndarray, rank: int, axis: int | None) -> int:
    """The axis per-channel scales run along (ONNX `axis` attribute, or the one non-1 axis of QONNX's)."""
    if scale.size <= 1:
        return 0
    if axis is not None and scale.ndim <= 1:
        return axis % rank
    shape = (1,) * (rank - scale.ndim) + tuple(scale.shape)
    axes = [a for a, d in enumerate(shape) if d != 1]
    if len(axes) != 1:
        raise _err(ctx, node, f"scale of shape {list(scale.shape)} varies along more than one axis")
    return axes[0]


def _const_quant(ctx: ImportCtx, node: onnx.NodeProto, out: str, codes: np.ndarray, fmt: NumberFormat) -> None:
    values = (
        fmt.to_float(codes) if isinstance(fmt, ScaledInt) else np.ldexp(codes.astype(np.float64), -fmt.frac)  # type: ignore[union-attr]
    )
    ctx.graph.values[out] = Value(out, TensorType(tuple(int(d) for d in codes.shape), fmt), values)


def _weight_zero_point(ctx: ImportCtx, node: onnx.NodeProto, zp: np.ndarray | None) -> None:
    if zp is not None and np.any(zp != 0):
        raise _err(
            ctx,
            node,
            f"zero point {np.unique(zp)[:4].tolist()} on the constant {node.input[0]!r}",
            "hwgen needs symmetric weights: quantize them with zero point 0 (onnxruntime: WeightSymmetric=True).",
        )


# -- converters -------------------------------------------------------------------------------
def _dequantize(ctx: ImportCtx, state: QdqState, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    state.exporters.add("qdq")
    x, out = node.input[0], node.output[0]
    scale = _const_input(ctx, node, 1, "scale")
    zp = _const_input(ctx, node, 2, "zero point")
    assert scale is not None  # DequantizeLinear's scale input is required by the ONNX checker
    if ctx.is_const(x):
        q = np.asarray(ctx.const(x))
        if q.dtype.kind not in "iu":
            raise _err(ctx, node, f"constant {x!r} has dtype {q.dtype}, not an integer type")
        _weight_zero_point(ctx, node, zp)
        axis = _scale_axis(ctx, node, scale, q.ndim, int(attrs.get("axis", 1)))
        lo, hi = _int_range(q.dtype)
        _const_quant(ctx, node, out, q.astype(np.int64), make_format(scale, 0, lo, hi, axis, const=True))
        return
    if x not in state.pending:
        raise _err(
            ctx,
            node,
            f"its input {x!r} is neither a constant nor the output of a QuantizeLinear",
            "Integer model inputs are not supported: quantize the float input inside the model.",
        )
    src, fmt, qname = state.pending[x]
    mine = _activation_format(ctx, node, scale, zp)
    if mine != fmt:
        raise _err(ctx, node, f"its scale/zero point ({mine}) differ from QuantizeLinear '{qname}' ({fmt})")
    _bind(ctx, state, node, src, fmt, Rounding.HALF_EVEN, qname)
    state.alias[out] = src


def _activation_format(ctx: ImportCtx, node: onnx.NodeProto, scale: np.ndarray, zp: np.ndarray | None) -> NumberFormat:
    if scale.size != 1:
        raise _err(ctx, node, f"per-channel activation scales ({scale.size} values)", "Quantize them per tensor.")
    dtype = zp.dtype if zp is not None else np.dtype(np.uint8)
    if dtype.kind not in "iu":
        raise _err(ctx, node, f"zero point dtype {dtype} is not an integer type (float8 QDQ is not supported)")
    lo, hi = _int_range(dtype)
    return make_format(scale, int(zp.reshape(-1)[0]) if zp is not None else 0, lo, hi)


def _bind(
    ctx: ImportCtx, state: QdqState, node: onnx.NodeProto, src: str, fmt: NumberFormat, rnd: Rounding, qname: str
) -> None:
    """Record that activation `src` is quantized to `fmt`; two different quantizers on one tensor are refused."""
    old = state.act.get(src)
    if old is not None and (old[0] != fmt or old[1] != rnd):
        raise _err(ctx, node, f"tensor {src!r} is quantized twice, differently ({old[0]} by '{old[2]}' and {fmt})")
    state.act[src] = (fmt, rnd, qname)


def _quantize_linear(ctx: ImportCtx, state: QdqState, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    state.exporters.add("qdq")
    scale = _const_input(ctx, node, 1, "scale")
    zp = _const_input(ctx, node, 2, "zero point")
    assert scale is not None
    if "output_dtype" in attrs and attrs["output_dtype"] and zp is None:
        zp = np.zeros((), dtype=onnx.helper.tensor_dtype_to_np_dtype(attrs["output_dtype"]))
    fmt = _activation_format(ctx, node, scale, zp)
    state.pending[node.output[0]] = (node.input[0], fmt, node.name or node.output[0])


QonnxParams = tuple[np.ndarray, int, int, int, Rounding]


def _qonnx_params(ctx: ImportCtx, node: onnx.NodeProto, attrs: dict[str, Any]) -> QonnxParams:
    """(scale, zero point, qmin, qmax, rounding) of a QONNX Quant node, per qonnx's int_quant."""
    scale = _const_input(ctx, node, 1, "scale")
    zp = _const_input(ctx, node, 2, "zero point")
    bw = _const_input(ctx, node, 3, "bit width")
    assert scale is not None and zp is not None and bw is not None
    if bw.size != 1 or float(bw.reshape(())) != int(bw.reshape(())) or int(bw.reshape(())) < 1:
        raise _err(ctx, node, f"bit width {bw.reshape(-1)[:4].tolist()} is not one positive integer")
    if zp.size != 1 or float(zp.reshape(())) != round(float(zp.reshape(()))):
        raise _err(ctx, node, f"zero point {zp.reshape(-1)[:4].tolist()} is not one integer")
    bits, signed, narrow = int(bw.reshape(())), bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
    mode = attrs.get("rounding_mode", b"ROUND")
    mode = (mode.decode() if isinstance(mode, bytes) else str(mode)).upper()
    if mode not in QONNX_ROUNDING:
        raise _err(ctx, node, f"rounding_mode {mode!r} has no integer form in hwgen", "Use ROUND or FLOOR.")
    if signed:
        qmin, qmax = -(1 << (bits - 1)) + (1 if narrow else 0), (1 << (bits - 1)) - 1
    else:
        qmin, qmax = 0, (1 << bits) - 1 - (1 if narrow else 0)
    return scale, round(float(zp.reshape(()))), qmin, qmax, QONNX_ROUNDING[mode]


def _quant(ctx: ImportCtx, state: QdqState, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    """QONNX Quant: q = clamp(round(x / scale + zp), qmin, qmax); y = (q - zp) * scale (qonnx int_quant)."""
    state.exporters.add("qonnx")
    scale, zp, qmin, qmax, rnd = _qonnx_params(ctx, node, attrs)
    x, out = node.input[0], node.output[0]
    bipolar = qmax - qmin == 0 or (qmin == -1 and qmax == 0)  # signed 1-bit: qonnx maps it to +-1
    if ctx.is_const(x):
        w = np.asarray(ctx.const(x), dtype=np.float32)
        _weight_zero_point(ctx, node, np.asarray(zp))
        axis = _scale_axis(ctx, node, scale, w.ndim, None)
        y = w / _broadcast(scale, w.ndim, axis).astype(np.float32)  # float32 division, as qonnx computes it
        if bipolar:
            codes = np.where(y >= 0, 1, -1).astype(np.int64)
            fmt: NumberFormat = ScaledInt.for_range(-1, 1, tuple(np.asarray(scale, np.float64).reshape(-1)), axis)
        else:
            codes = np.clip(_round(y, rnd), qmin, qmax).astype(np.int64)
            fmt = make_format(scale.reshape(-1), 0, qmin, qmax, axis, const=True)
        _const_quant(ctx, node, out, codes, fmt)
        return
    if bipolar:
        raise _err(ctx, node, "a 1-bit signed (bipolar) activation quantizer", "Bipolar quantization of weights only.")
    _activation_format(ctx, node, scale, None)  # per-tensor check
    fmt = make_format(scale, zp, qmin, qmax)
    _bind(ctx, state, node, x, fmt, rnd, node.name or out)
    state.alias[out] = x


def _bipolar_quant(ctx: ImportCtx, state: QdqState, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    """QONNX BipolarQuant: y = (x >= 0 ? +1 : -1) * scale. Weights only."""
    state.exporters.add("qonnx")
    scale = _const_input(ctx, node, 1, "scale")
    assert scale is not None
    x = node.input[0]
    if not ctx.is_const(x):
        raise _err(ctx, node, "BipolarQuant of an activation has no integer engine", "Binarize weights only.")
    w = np.asarray(ctx.const(x), dtype=np.float32)
    axis = _scale_axis(ctx, node, scale, w.ndim, None)
    codes = np.where(w >= 0, 1, -1).astype(np.int64)
    fmt = ScaledInt.for_range(-1, 1, tuple(np.asarray(scale, np.float64).reshape(-1)), axis)
    _const_quant(ctx, node, node.output[0], codes, fmt)


def _broadcast(scale: np.ndarray, rank: int, axis: int) -> np.ndarray:
    s = np.asarray(scale).reshape(-1)
    if s.size == 1:
        return s.reshape(())
    shape = [1] * rank
    shape[axis] = s.size
    return s.reshape(shape)


def _round(y: np.ndarray, rnd: Rounding) -> np.ndarray:
    return np.floor(y) if rnd is Rounding.FLOOR else np.round(y)


CONVERTERS = {
    "DequantizeLinear": _dequantize,
    "QuantizeLinear": _quantize_linear,
    "Quant": _quant,
    "BipolarQuant": _bipolar_quant,
}


def convert(ctx: ImportCtx, state: QdqState, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    """Apply rule 1 or 2 to one quantization node."""
    CONVERTERS[node.op_type](ctx, state, node, attrs)


# -- after the node loop ----------------------------------------------------------------------
def rename_value(graph: Graph, old: str, new: str) -> None:
    """Give value `old` the name `new` everywhere (the public name of a graph output)."""
    v = graph.values.pop(old)
    graph.values[new] = Value(new, v.type, v.const)
    for n in graph.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
        n.outputs = [new if o == old else o for o in n.outputs]
    graph.outputs = [new if o == old else o for o in graph.outputs]


def _fmt(graph: Graph, name: str) -> NumberFormat:
    return graph.value(name).type.format


def _quantized(fmt: NumberFormat) -> bool:
    return isinstance(fmt, (FixedPoint, ScaledInt))


def _to_dense(graph: Graph, node: Node) -> None:
    """Rule 3: Gemm/MatMul with a quantized constant weight -> Dense with W [out, in] and its format."""
    b_name = node.inputs[1]
    fmt = _fmt(graph, b_name)
    trans = bool(node.attrs.get("transB", 0)) if node.op == "Gemm" else False
    if node.op == "Gemm" and (node.attrs.get("alpha", 1.0) != 1.0 or node.attrs.get("beta", 1.0) != 1.0):
        raise UnsupportedOpError(
            f"{node.describe()}: alpha/beta != 1 on a quantized Gemm would rescale the weight codes; export with 1"
        )
    out_axis = 0 if trans else 1
    if isinstance(fmt, ScaledInt) and not fmt.per_tensor and fmt.axis != out_axis:
        raise UnsupportedOpError(f"{node.describe()}: per-channel weight scales along the input axis")
    w = graph.const(b_name)
    w = w if trans else w.T
    if isinstance(fmt, ScaledInt):
        fmt = ScaledInt(fmt.bits, fmt.signed, fmt.lo, fmt.hi, fmt.scale, 0, fmt.zero_point)
    w_name = graph.unique_name(f"{node.name}.weight")
    graph.add_value(Value(w_name, TensorType(tuple(w.shape), fmt), np.ascontiguousarray(w)))
    ins = [node.inputs[0], w_name]
    if len(node.inputs) > 2:
        c = graph.value(node.inputs[2])
        n_out = w.shape[0]
        if c.const is None:
            raise UnsupportedOpError(f"{node.describe()}: the bias must be a constant")
        arr = np.broadcast_to(np.asarray(c.const).reshape(-1), (n_out,)).copy()
        cf = c.type.format
        if isinstance(cf, ScaledInt) and cf.per_tensor and n_out > 1:
            cf = ScaledInt(cf.bits, cf.signed, cf.lo, cf.hi, cf.scale * n_out, 0, cf.zero_point)
        b_name2 = graph.unique_name(f"{node.name}.bias")
        graph.add_value(Value(b_name2, TensorType((n_out,), cf), arr))
        ins.append(b_name2)
    node.op, node.inputs, node.attrs = "Dense", ins, {"activation": "none"}


def _rescale_after(graph: Graph, node: Node, in_fmt: NumberFormat, rnd: Rounding) -> None:
    """Rule 4: node keeps its input format; an Affine (x * 1 + 0) requantizes into the output's."""
    out = node.outputs[0]
    mid = graph.unique_name(f"{out}__unscaled")
    graph.add_value(Value(mid, TensorType(graph.value(out).type.shape, in_fmt)))
    node.outputs = [mid]
    one, zero = graph.unique_name(f"{node.name}.rescale_one"), graph.unique_name(f"{node.name}.rescale_zero")
    graph.add_value(Value(one, TensorType((), FixedPoint(2, 0)), np.array(1.0)))
    graph.add_value(Value(zero, TensorType((), FixedPoint(2, 0)), np.array(0.0)))
    resc = Node(
        graph.unique_name(f"{node.name}_rescale"),
        "Affine",
        [mid, one, zero],
        [out],
        {"rounding": str(rnd), "imported_rescale": True},
        onnx_name=node.onnx_name,
        onnx_op=f"{node.onnx_op or node.op} (rescale)",
    )
    graph.nodes.insert(graph.nodes.index(node) + 1, resc)


def finish(graph: Graph, state: QdqState) -> None:
    """Attach activation formats and apply rules 3-4 on the imported IR; marks graph.meta."""
    rounding: dict[str, str] = {}
    for src, (fmt, rnd, _q) in state.act.items():
        if src in graph.values and not graph.values[src].is_const:
            v = graph.values[src]
            graph.values[src] = Value(src, TensorType(v.type.shape, fmt))
            rounding[src] = str(rnd)
    _quantize_inputs_before_reshape(graph, rounding)
    for node in list(graph.nodes):
        if node.op in ("Gemm", "MatMul") and _quantized(_fmt(graph, node.inputs[1])):
            _to_dense(graph, node)
    for node in list(graph.nodes):
        if node.op in PASS_THROUGH:
            fi, fo = _fmt(graph, node.inputs[0]), _fmt(graph, node.outputs[0])
            if _quantized(fi) and _quantized(fo) and fi != fo:
                _rescale_after(graph, node, fi, Rounding(rounding.get(node.outputs[0], Rounding.HALF_EVEN)))
    _refuse_folds(graph)
    graph.meta["imported_quant"] = {"exporters": sorted(state.exporters), "rounding": rounding}


#: ops that only move elements: quantizing before or after them is the same
_RESHAPES = ("Flatten", "Reshape", "Transpose", "Identity")


def _quantize_inputs_before_reshape(graph: Graph, rounding: dict[str, str]) -> None:
    """A float model input reshaped (e.g. flattened) before its first quantizer gets that quantizer's
    format: element-wise rounding commutes with moving elements, so the codes are the same."""
    for name in graph.inputs:
        if _quantized(_fmt(graph, name)):
            continue
        users = graph.consumers(name)
        fmts = {_fmt(graph, u.outputs[0]) for u in users if u.op in _RESHAPES}
        if users and all(u.op in _RESHAPES for u in users) and len(fmts) == 1 and _quantized(next(iter(fmts))):
            v = graph.values[name]
            graph.values[name] = Value(name, TensorType(v.type.shape, next(iter(fmts))))
            rounding[name] = rounding.get(users[0].outputs[0], str(Rounding.HALF_EVEN))


def _refuse_folds(graph: Graph) -> None:
    """Constant arithmetic or BatchNormalization right after a quantized layer would be folded into
    its weights by canonicalize, moving them off the exporter's grid."""
    for node in graph.nodes:
        if node.op not in ("Dense", "Conv") or not _quantized(_fmt(graph, node.inputs[1])):
            continue
        for user in graph.consumers(node.outputs[0]):
            consts = [i for i in user.inputs if i and graph.values[i].is_const]
            if user.op == "BatchNormalization" or (user.op in ("Add", "Sub", "Mul", "Div") and consts):
                raise UnsupportedOpError(
                    f"{user.describe()}: {user.op} with a constant right after the quantized layer "
                    f"'{node.name}' would be folded into its quantized weights. Fold it before quantizing "
                    "(e.g. brevitas merge_bn, or quantize a model whose BatchNorm is already folded)."
                )
