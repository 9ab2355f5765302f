"""ONNX -> IR.

The batch dimension (axis 0 of every activation) is stripped: IR shapes are per sample.
Sub-graphs that only depend on constants (including `Shape` of an activation, whose per-sample
dimensions are static) are evaluated at import with onnx's reference evaluator, which removes
the shape arithmetic exporters emit around Reshape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwgen.errors import HwgenError, ModelFileError, UnsupportedOpError
from hwgen.frontend import qdq
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.ir.ops import infer_shapes
from hwgen.ir.windows import make_window

log = logging.getLogger(__name__)

MIN_OPSET = 7


@dataclass
class _Ctx:
    """Import state: the graph being built and the source file for messages."""

    graph: Graph
    path: str
    opset: int
    batch: int = 1  #: the model's static batch size, or 1 when the batch axis is dynamic
    names: set[str] = field(default_factory=set)

    def where(self, node: onnx.NodeProto) -> str:
        return f"{self.path}: node '{node.name or '?'}' ({node.op_type}, opset {self.opset})"

    def is_const(self, name: str) -> bool:
        return name in self.graph.values and self.graph.values[name].is_const

    def const(self, name: str) -> np.ndarray:
        return self.graph.values[name].const  # type: ignore[return-value]

    def act_shape(self, name: str) -> tuple[int, ...]:
        return self.graph.value(name).type.shape

    def add_const(self, name: str, array: np.ndarray) -> None:
        arr = np.asarray(array)
        self.graph.values[name] = Value(name, TensorType(tuple(int(d) for d in arr.shape)), arr)

    def emit(self, onnx_node: onnx.NodeProto, op: str, inputs: list[str], attrs: dict[str, Any] | None = None) -> None:
        base = onnx_node.name or f"{op.lower()}_{len(self.graph.nodes)}"
        name = base
        i = 1
        while name in self.names:
            name = f"{base}_{i}"
            i += 1
        self.names.add(name)
        node = Node(
            name,
            op,
            inputs,
            [onnx_node.output[0]],
            dict(attrs or {}),
            onnx_name=onnx_node.name,
            onnx_op=onnx_node.op_type,
        )
        self.graph.nodes.append(node)
        try:
            (shape,) = infer_shapes(self.graph, node)
        except HwgenError as e:
            raise UnsupportedOpError(f"{self.where(onnx_node)}: {e}") from e
        self.graph.values[node.outputs[0]] = Value(node.outputs[0], TensorType(shape))


Converter = Callable[[_Ctx, onnx.NodeProto, dict[str, Any]], None]


def _unsupported(ctx: _Ctx, node: onnx.NodeProto, why: str, fix: str = "") -> UnsupportedOpError:
    return UnsupportedOpError(f"{ctx.where(node)}: {why}." + (f" {fix}" if fix else ""))


def _need_const(ctx: _Ctx, node: onnx.NodeProto, idx: int, role: str) -> str:
    name = node.input[idx]
    if not ctx.is_const(name):
        raise _unsupported(ctx, node, f"the {role} (input {idx}, {name!r}) must be a constant initializer")
    return name


def _per_sample_const(ctx: _Ctx, node: onnx.NodeProto, name: str, act_rank: int) -> str:
    """Drop leading size-1 axes of a constant operand that reach into the batch axis."""
    arr = ctx.const(name)
    if arr.ndim <= act_rank:
        return name
    extra = arr.ndim - act_rank
    if any(d != 1 for d in arr.shape[:extra]):
        raise _unsupported(ctx, node, f"constant {name!r} of shape {list(arr.shape)} broadcasts over the batch axis")
    new = f"{name}__per_sample"
    if new not in ctx.graph.values:
        ctx.add_const(new, arr.reshape(arr.shape[extra:]))
    return new


def _conv_gemm(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    if attrs.get("transA", 0):
        raise _unsupported(ctx, node, "transA=1 transposes the batch axis", "Export the model with transA=0.")
    if len(ctx.act_shape(node.input[0])) != 1:
        raise _unsupported(ctx, node, f"input must be [batch, features], got per-sample {ctx.act_shape(node.input[0])}")
    inputs = [node.input[0], _need_const(ctx, node, 1, "weight B")]
    if len(node.input) > 2 and node.input[2]:
        c = _need_const(ctx, node, 2, "bias C")
        inputs.append(_per_sample_const(ctx, node, c, 1))
    kept = {k: attrs[k] for k in ("alpha", "beta", "transB") if k in attrs}
    ctx.emit(node, "Gemm", inputs, kept)


def _conv_matmul(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    w = _need_const(ctx, node, 1, "right operand")
    if ctx.const(w).ndim != 2:
        raise _unsupported(ctx, node, f"the constant operand must be a matrix, got shape {list(ctx.const(w).shape)}")
    ctx.emit(node, "MatMul", [node.input[0], w])


def _conv_binary(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    a, b = node.input[0], node.input[1]
    acts = [i for i in (a, b) if not ctx.is_const(i)]
    rank = max(len(ctx.act_shape(i)) for i in acts)
    ins = [i if not ctx.is_const(i) else _per_sample_const(ctx, node, i, rank) for i in (a, b)]
    ctx.emit(node, node.op_type, ins)


def _conv_unary(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    ctx.emit(node, node.op_type, [node.input[0]])


def _conv_identity(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    ctx.emit(node, "Identity", [node.input[0]])


def _conv_dropout(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    training = (
        len(node.input) > 2
        and node.input[2]
        and bool(np.asarray(ctx.const(_need_const(ctx, node, 2, "training_mode"))))
    )
    if training or attrs.get("is_test", 1) == 0:
        raise _unsupported(ctx, node, "training-mode dropout is random", "Export the model in eval() mode.")
    ctx.emit(node, "Identity", [node.input[0]])


def _conv_cast(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    if attrs.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        raise _unsupported(ctx, node, f"Cast to {onnx.TensorProto.DataType.Name(attrs.get('to', 0))} of an activation")
    ctx.emit(node, "Identity", [node.input[0]])


def _scalar_input(ctx: _Ctx, node: onnx.NodeProto, idx: int, role: str) -> float | None:
    if len(node.input) <= idx or not node.input[idx]:
        return None
    name = _need_const(ctx, node, idx, role)
    return float(np.asarray(ctx.const(name)).reshape(()))


def _conv_clip(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    lo = attrs.get("min") if ctx.opset < 11 else _scalar_input(ctx, node, 1, "min")
    hi = attrs.get("max") if ctx.opset < 11 else _scalar_input(ctx, node, 2, "max")
    kept = {}
    if lo is not None:
        kept["min"] = float(lo)
    if hi is not None:
        kept["max"] = float(hi)
    ctx.emit(node, "Clip", [node.input[0]], kept)


def _conv_flatten(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    axis = attrs.get("axis", 1)
    rank = len(ctx.act_shape(node.input[0])) + 1
    if axis < 0:
        axis += rank
    if axis != 1:
        raise _unsupported(ctx, node, f"axis={axis} merges the batch axis or keeps it split", "Use axis=1.")
    ctx.emit(node, "Flatten", [node.input[0]])


def _per_sample_target(ctx: _Ctx, node: onnx.NodeProto, full_target: list[int], allowzero: bool) -> tuple[int, ...]:
    """Resolve an ONNX reshape target against a batch of one; the batch axis must survive."""
    in_shape = (ctx.batch, *ctx.act_shape(node.input[0]))
    size = int(np.prod(in_shape))
    dims = [in_shape[i] if (d == 0 and not allowzero and i < len(in_shape)) else d for i, d in enumerate(full_target)]
    if dims.count(-1) > 1:
        raise _unsupported(ctx, node, f"target shape {full_target} has more than one -1")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        if known == 0 or size % known:
            raise _unsupported(ctx, node, f"cannot reshape {list(in_shape)} to {full_target}")
        dims[dims.index(-1)] = size // known
    if int(np.prod(dims)) != size or not dims or dims[0] != ctx.batch:
        raise _unsupported(
            ctx,
            node,
            f"reshape of per-sample {list(in_shape[1:])} to {full_target} merges the batch axis",
            "Keep the batch axis first (e.g. x.view(x.size(0), -1)).",
        )
    return tuple(int(d) for d in dims[1:])


def _conv_reshape(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    target = [int(d) for d in ctx.const(_need_const(ctx, node, 1, "target shape")).reshape(-1)]
    shape = _per_sample_target(ctx, node, target, bool(attrs.get("allowzero", 0)))
    ctx.emit(node, "Reshape", [node.input[0]], {"shape": shape})


def _axes(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> list[int] | None:
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(node.input) > 1 and node.input[1]:
        return [int(a) for a in ctx.const(_need_const(ctx, node, 1, "axes")).reshape(-1)]
    return None


def _conv_squeeze(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    full = [1, *ctx.act_shape(node.input[0])]
    axes = _axes(ctx, node, attrs)
    axes = (
        [a + len(full) if a < 0 else a for a in axes]
        if axes is not None
        else [i for i, d in enumerate(full) if d == 1 and i > 0]
    )
    if 0 in axes:
        raise _unsupported(ctx, node, "squeezing axis 0 removes the batch axis")
    shape = tuple(d for i, d in enumerate(full) if i not in axes)[1:]
    ctx.emit(node, "Reshape", [node.input[0]], {"shape": shape})


def _conv_unsqueeze(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    full = [1, *ctx.act_shape(node.input[0])]
    axes = _axes(ctx, node, attrs) or []
    out_rank = len(full) + len(axes)
    axes = sorted(a + out_rank if a < 0 else a for a in axes)
    if 0 in axes:
        raise _unsupported(ctx, node, "unsqueezing at axis 0 moves the batch axis")
    for a in axes:
        full.insert(a, 1)
    ctx.emit(node, "Reshape", [node.input[0]], {"shape": tuple(full[1:])})


def _conv_transpose(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    rank = len(ctx.act_shape(node.input[0])) + 1
    perm = [int(p) for p in attrs.get("perm", list(reversed(range(rank))))]
    if perm[0] != 0:
        raise _unsupported(ctx, node, f"perm={perm} moves the batch axis")
    ctx.emit(node, "Transpose", [node.input[0]], {"perm": tuple(p - 1 for p in perm[1:])})


def _conv_batchnorm(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    params = [_need_const(ctx, node, i, role) for i, role in enumerate(["scale", "bias", "mean", "var"], start=1)]
    if attrs.get("training_mode", 0):
        raise _unsupported(ctx, node, "training_mode=1", "Export the model in eval() mode.")
    ctx.emit(node, "BatchNormalization", [node.input[0], *params], {"epsilon": float(attrs.get("epsilon", 1e-5))})


def _window_attrs(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any], kernel: list[int]) -> dict[str, Any]:
    spatial = ctx.act_shape(node.input[0])[1:]
    if len(spatial) != len(kernel) or not spatial:
        raise _unsupported(
            ctx, node, f"kernel {kernel} does not match the per-sample input {ctx.act_shape(node.input[0])}"
        )
    w = make_window(attrs, spatial, kernel)
    if any(v < 1 for v in (*w.strides, *w.dilations, *w.kernel)) or any(p < 0 for p in (*w.pads_begin, *w.pads_end)):
        raise _unsupported(ctx, node, f"invalid window attributes {attrs}")
    return {
        "kernel": w.kernel,
        "strides": w.strides,
        "dilations": w.dilations,
        "pads_begin": w.pads_begin,
        "pads_end": w.pads_end,
        "ceil_mode": w.ceil_mode,
    }


def _conv_conv(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    w = _need_const(ctx, node, 1, "weight W")
    kernel = list(attrs.get("kernel_shape", ctx.const(w).shape[2:]))
    inputs = [node.input[0], w]
    if len(node.input) > 2 and node.input[2]:
        inputs.append(_need_const(ctx, node, 2, "bias B"))
    a = _window_attrs(ctx, node, attrs, kernel)
    a["group"] = int(attrs.get("group", 1))
    a["activation"] = "none"
    ctx.emit(node, "Conv", inputs, a)


def _conv_pool(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    if len([o for o in node.output if o]) > 1:
        raise _unsupported(ctx, node, "the Indices output of MaxPool is not supported")
    a = _window_attrs(ctx, node, attrs, list(attrs["kernel_shape"]))
    if node.op_type == "AveragePool":
        a["count_include_pad"] = int(attrs.get("count_include_pad", 0))
    ctx.emit(node, node.op_type, [node.input[0]], a)


def _sample_axis(ctx: _Ctx, node: onnx.NodeProto, axis: int) -> int:
    rank = len(ctx.act_shape(node.input[0])) + 1
    if not -rank <= axis < rank:
        raise _unsupported(ctx, node, f"axis {axis} is out of range for rank {rank}")
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise _unsupported(ctx, node, "axis 0 is the batch axis")
    return axis - 1


def _conv_concat(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    ins = [i for i in node.input if i]
    if any(ctx.is_const(i) for i in ins):
        raise _unsupported(ctx, node, "concatenating a constant with activations")
    ctx.emit(node, "Concat", ins, {"axis": _sample_axis(ctx, node, int(attrs["axis"]))})


def _conv_softmax(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    legacy = ctx.opset < 13
    axis = _sample_axis(ctx, node, int(attrs.get("axis", 1 if legacy else -1)))
    ctx.emit(node, "Softmax", [node.input[0]], {"axis": axis, "legacy": legacy})


def _conv_unary_attrs(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    kept = {k: float(v) for k, v in attrs.items() if k in ("alpha", "beta")}
    ctx.emit(node, node.op_type, [node.input[0]], kept)


def _conv_pad(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    rank = len(ctx.act_shape(node.input[0])) + 1
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if ctx.opset < 11:
        pads, value = list(attrs.get("pads", attrs.get("paddings", []))), float(attrs.get("value", 0.0))
        axes = list(range(rank))
    else:
        pads = [int(v) for v in ctx.const(_need_const(ctx, node, 1, "pads")).reshape(-1)]
        value = _scalar_input(ctx, node, 2, "constant_value") or 0.0
        axes = (
            [int(a) % rank for a in ctx.const(_need_const(ctx, node, 3, "axes")).reshape(-1)]
            if len(node.input) > 3 and node.input[3]
            else list(range(rank))
        )
    n = len(axes)
    if len(pads) != 2 * n:
        raise _unsupported(ctx, node, f"pads {pads} do not match {n} axes")
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[i + n]
    if begin[0] or end[0]:
        raise _unsupported(ctx, node, "padding the batch axis")
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise _unsupported(ctx, node, f"mode={mode!r}")
    ctx.emit(
        node,
        "Pad",
        [node.input[0]],
        {"pads_begin": tuple(begin[1:]), "pads_end": tuple(end[1:]), "mode": mode, "value": value},
    )


def _conv_reduce_mean(ctx: _Ctx, node: onnx.NodeProto, attrs: dict[str, Any]) -> None:
    """ReduceMean over every spatial axis is a global average pool (what torch's dynamo emits)."""
    rank = len(ctx.act_shape(node.input[0])) + 1
    axes = _axes(ctx, node, attrs)
    if axes is None or rank < 3 or sorted(a % rank for a in axes) != list(range(2, rank)):
        raise _unsupported(ctx, node, f"ReduceMean over axes {axes} (only all spatial axes 2..{rank - 1})")
    keep = bool(attrs.get("keepdims", 1))
    if keep:
        ctx.emit(node, "GlobalAveragePool", [node.input[0]])
        return
    pooled = f"{node.output[0]}__gap"
    gap = onnx.helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=f"{node.name or 'reducemean'}_gap")
    ctx.emit(gap, "GlobalAveragePool", [node.input[0]])
    ctx.emit(node, "Reshape", [pooled], {"shape": (ctx.act_shape(node.input[0])[0],)})


CONVERTERS: dict[str, Converter] = {
    "Gemm": _conv_gemm,
    "MatMul": _conv_matmul,
    "Add": _conv_binary,
    "Sub": _conv_binary,
    "Mul": _conv_binary,
    "Div": _conv_binary,
    "Relu": _conv_unary,
    "Clip": _conv_clip,
    "Flatten": _conv_flatten,
    "Reshape": _conv_reshape,
    "Squeeze": _conv_squeeze,
    "Unsqueeze": _conv_unsqueeze,
    "Transpose": _conv_transpose,
    "Identity": _conv_identity,
    "Dropout": _conv_dropout,
    "Cast": _conv_cast,
    "BatchNormalization": _conv_batchnorm,
    "Conv": _conv_conv,
    "MaxPool": _conv_pool,
    "AveragePool": _conv_pool,
    "GlobalAveragePool": _conv_unary,
    "GlobalMaxPool": _conv_unary,
    "Concat": _conv_concat,
    "Softmax": _conv_softmax,
    "Pad": _conv_pad,
    "Sigmoid": _conv_unary,
    "Tanh": _conv_unary,
    "LeakyRelu": _conv_unary_attrs,
    "HardSigmoid": _conv_unary_attrs,
    "HardSwish": _conv_unary,
    "ReduceMean": _conv_reduce_mean,
}

#: ops accepted on activations; any op whose inputs are all constants is also accepted (folded).
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*CONVERTERS, "Constant", "Shape"]))


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file; every failure becomes a one-line ModelFileError."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such model file")
    try:
        model = onnx.load(str(p))
    except Exception as e:  # protobuf raises DecodeError, truncated files raise various errors
        detail = str(e).strip().splitlines()[0] if str(e).strip() else "truncated or corrupt"
        raise ModelFileError(f"{p}: not a readable ONNX model ({type(e).__name__}: {detail})") from e
    if not model.graph.node and not model.graph.output:
        raise ModelFileError(f"{p}: the file parsed but holds no graph (truncated or not an ONNX model)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"{p}: invalid ONNX model: {first}") from e
    return model


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _eval_const(ctx: _Ctx, node: onnx.NodeProto) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all constants with onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    inputs = [i for i in node.input if i]
    feeds = {i: ctx.const(i) for i in inputs}
    vi_in = [
        helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(feeds[i].dtype), feeds[i].shape)
        for i in inputs
    ]
    vi_out = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output]
    g = helper.make_graph([node], "fold", vi_in, vi_out)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", ctx.opset)])
    try:
        outs = ReferenceEvaluator(m).run(None, feeds)
    except Exception as e:
        raise _unsupported(ctx, node, f"constant folding failed ({type(e).__name__}: {e})") from e
    return [np.asarray(o) for o in outs]


def import_onnx(model_or_path: onnx.ModelProto | str | Path, name: str | None = None) -> Graph:
    """Convert an ONNX model (or file) into an IR graph with per-sample shapes."""
    if isinstance(model_or_path, (str, Path)):
        path = str(model_or_path)
        model = load_onnx(path)
    else:
        path, model = "<model>", model_or_path
    opset = _opset(model)
    if opset < MIN_OPSET:
        raise ModelFileError(f"{path}: opset {opset} is too old; hwgen reads opset {MIN_OPSET} or later")
    gname = name or model.graph.name or Path(path).stem
    ctx = _Ctx(Graph(gname), path, opset)
    g = ctx.graph
    g.meta["source"] = path
    g.meta["opset"] = opset

    for init in model.graph.initializer:
        ctx.add_const(init.name, numpy_helper.to_array(init))
    for vi in model.graph.input:
        if vi.name in g.values:
            continue  # an initializer listed as input (old exporters)
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.elem_type not in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.DOUBLE,
            onnx.TensorProto.FLOAT16,
        ):
            raise ModelFileError(f"{path}: input {vi.name!r} is not a float tensor")
        if len(dims) < 1:
            raise ModelFileError(f"{path}: input {vi.name!r} needs a batch axis first (got a scalar)")
        per_sample = []
        for d in dims[1:]:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                raise ModelFileError(
                    f"{path}: input {vi.name!r} has a dynamic dimension {d.dim_param or '?'} after the batch axis; "
                    "hwgen needs static per-sample shapes (export with fixed sizes)"
                )
            per_sample.append(int(d.dim_value))
        if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            ctx.batch = int(dims[0].dim_value)
        g.values[vi.name] = Value(vi.name, TensorType(tuple(per_sample)))
        g.inputs.append(vi.name)
    if not g.inputs:
        raise ModelFileError(f"{path}: the model has no activation input")

    quant = qdq.QdqState() if qdq.uses_quantization(model) else None
    for node in model.graph.node:
        if quant is not None:
            node = qdq.resolve(quant, ctx, node)
            if qdq.handles(node, ctx):
                qdq.convert(ctx, quant, node, {a.name: helper.get_attribute_value(a) for a in node.attribute})
                continue
        if node.domain not in ("", "ai.onnx"):
            raise _unsupported(
                ctx, node, f"domain {node.domain!r} is not supported", f"Supported ops: {', '.join(SUPPORTED_OPS)}."
            )
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            ctx.add_const(node.output[0], _eval_const(ctx, node)[0])
            continue
        if node.op_type == "Shape" and not ctx.is_const(node.input[0]):
            full = np.array([ctx.batch, *ctx.act_shape(node.input[0])], dtype=np.int64)
            start, end = attrs.get("start", 0), attrs.get("end")
            ctx.add_const(node.output[0], full[start:end])
            continue
        inputs = [i for i in node.input if i]
        if (inputs and all(ctx.is_const(i) for i in inputs)) or (not inputs and node.op_type != "Constant"):
            for out, arr in zip(node.output, _eval_const(ctx, node), strict=False):
                ctx.add_const(out, arr)
            continue
        conv = CONVERTERS.get(node.op_type)
        if conv is None:
            raise _unsupported(
                ctx,
                node,
                f"op {node.op_type} is not supported",
                f"Supported ops: {', '.join(SUPPORTED_OPS)} (and any op on constants only).",
            )
        extra = [o for o in node.output[1:] if o]
        if extra and node.op_type not in ("Dropout",):
            raise _unsupported(ctx, node, f"outputs {extra} beyond the first are not supported")
        conv(ctx, node, attrs)

    for vi in model.graph.output:
        if quant is not None and vi.name in quant.pending:
            raise UnsupportedOpError(
                f"{path}: graph output {vi.name!r} is the integer output of a QuantizeLinear; "
                "end the model with a DequantizeLinear (float output)"
            )
        src = quant.alias.get(vi.name, vi.name) if quant is not None else vi.name
        if src not in g.values:
            raise ModelFileError(f"{path}: graph output {vi.name!r} is never computed")
        if g.values[src].is_const:
            raise UnsupportedOpError(
                f"{path}: graph output {vi.name!r} is a constant (it does not depend on the input)"
            )
        if src != vi.name:
            if src in g.inputs or src in g.outputs:
                raise UnsupportedOpError(f"{path}: graph output {vi.name!r} only re-quantizes {src!r}")
            qdq.rename_value(g, src, vi.name)
            quant.act = {vi.name if k == src else k: v for k, v in quant.act.items()}  # type: ignore[union-attr]
        g.outputs.append(vi.name)
    if quant is not None:
        qdq.finish(g, quant)
    g.remove_unused()
    g.verify()
    log.info("imported %s: %d nodes, opset %d", path, len(g.nodes), opset)
    return g
