"""The op registry: which ops the IR knows, and the per-sample shape rule of each.

Shapes here exclude the batch dimension. Kernels live in `hwgen.sim`; engines in `hwgen.hw`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hwgen.errors import GraphError
from hwgen.ir.graph import Graph, Node
from hwgen.ir.windows import Window

Shape = tuple[int, ...]
ShapeRule = Callable[[Graph, Node, list[Shape]], list[Shape]]


@dataclass(frozen=True)
class OpSpec:
    """An IR op: its shape rule and a one-line description for docs and error messages."""

    name: str
    shape: ShapeRule
    doc: str


def _broadcast(node: Node, shapes: list[Shape]) -> Shape:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError as e:
        raise GraphError(f"{node.describe()}: shapes {shapes} do not broadcast") from e


def _same(_g: Graph, _n: Node, shapes: list[Shape]) -> list[Shape]:
    return [shapes[0]]


def _elementwise(_g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    return [_broadcast(n, [s for s in shapes])]


def _dense(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    x, w = shapes[0], shapes[1]
    if len(w) != 2 or not x or x[-1] != w[1]:
        raise GraphError(f"{n.describe()}: input {x} does not match weight {w} (expected [..., {w[-1]}])")
    if len(shapes) > 2 and shapes[2] not in ((w[0],), ()):
        raise GraphError(f"{n.describe()}: bias shape {shapes[2]} does not match {w[0]} outputs")
    return [(*x[:-1], w[0])]


def _matmul(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    x, w = shapes
    if len(w) != 2 or x[-1] != w[0]:
        raise GraphError(f"{n.describe()}: MatMul of {x} by {w} is not defined")
    return [(*x[:-1], w[1])]


def _gemm(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    w = shapes[1]
    m = w[0] if n.attrs.get("transB", 0) else w[1]
    return [(m,)]


def _flatten(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    return [(int(np.prod(shapes[0], dtype=np.int64)),)]


def _reshape(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    target = tuple(int(d) for d in n.attrs["shape"])
    if int(np.prod(target, dtype=np.int64)) != int(np.prod(shapes[0], dtype=np.int64)):
        raise GraphError(f"{n.describe()}: cannot reshape {shapes[0]} to {target}")
    return [target]


def _transpose(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    perm = n.attrs["perm"]
    return [tuple(shapes[0][p] for p in perm)]


def window_of(node: Node) -> Window:
    """The sliding-window geometry stored on a Conv/pool node at import."""
    a = node.attrs
    return Window(
        tuple(a["kernel"]),
        tuple(a["strides"]),
        tuple(a["dilations"]),
        tuple(a["pads_begin"]),
        tuple(a["pads_end"]),
        bool(a.get("ceil_mode", False)),
    )


def _conv(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    x, w = shapes[0], shapes[1]
    groups = n.attrs.get("group", 1)
    if len(x) != len(w) - 1 or x[0] != w[1] * groups or w[0] % groups:
        raise GraphError(f"{n.describe()}: input {x} does not match weight {w} with group={groups}")
    out = window_of(n).out_size(x[1:])
    if any(o < 1 for o in out):
        raise GraphError(f"{n.describe()}: the window does not fit the input {x}")
    return [(w[0], *out)]


def _winograd_conv(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    """A Conv's shape rule, for the 3x3 stride-1 group-1 convolutions the Winograd pass rewrites."""
    w = window_of(n)
    if w.kernel != (3, 3) or w.strides != (1, 1) or w.dilations != (1, 1) or n.attrs.get("group", 1) != 1:
        raise GraphError(f"{n.describe()}: WinogradConv needs a 3x3 kernel, stride 1, dilation 1 and group 1")
    if n.attrs.get("tile") not in (2, 4):
        raise GraphError(f"{n.describe()}: WinogradConv tile {n.attrs.get('tile')!r} is not 2 or 4")
    return _conv(g, n, shapes)


def _pool(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    x = shapes[0]
    out = window_of(n).out_size(x[1:])
    if any(o < 1 for o in out):
        raise GraphError(f"{n.describe()}: the window does not fit the input {x}")
    return [(x[0], *out)]


def _global_pool(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    x = shapes[0]
    return [(x[0], *(1 for _ in x[1:]))]


def _concat(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    axis = n.attrs["axis"]
    first = shapes[0]
    for s in shapes[1:]:
        if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first, strict=True)) if i != axis):
            raise GraphError(f"{n.describe()}: cannot concatenate {shapes} on axis {axis}")
    return [(*first[:axis], sum(s[axis] for s in shapes), *first[axis + 1 :])]


def _pad(g: Graph, n: Node, shapes: list[Shape]) -> list[Shape]:
    x = shapes[0]
    begin, end = n.attrs["pads_begin"], n.attrs["pads_end"]
    out = tuple(d + b + e for d, b, e in zip(x, begin, end, strict=True))
    if any(o < 1 for o in out):
        raise GraphError(f"{n.describe()}: padding {begin}/{end} empties {x}")
    return [out]


OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in [
        OpSpec("Dense", _dense, "y = act(x W^T + b): W [out, in], the canonical fully-connected layer"),
        OpSpec("Gemm", _gemm, "ONNX Gemm on a [batch, in] activation (normalized into Dense)"),
        OpSpec("MatMul", _matmul, "activation times a constant matrix (fused into Dense)"),
        OpSpec("Add", _elementwise, "element-wise sum with numpy broadcasting"),
        OpSpec("Affine", _elementwise, "x * scale + offset with constant scale/offset (quantized Mul/Add/Sub/Div)"),
        OpSpec("Sub", _elementwise, "element-wise difference"),
        OpSpec("Mul", _elementwise, "element-wise product"),
        OpSpec("Div", _elementwise, "element-wise quotient"),
        OpSpec("Relu", _same, "max(x, 0)"),
        OpSpec("Clip", _same, "min(max(x, min), max)"),
        OpSpec("BatchNormalization", _same, "inference batch norm over axis 0 (folded away)"),
        OpSpec("Flatten", _flatten, "per-sample flatten (ONNX Flatten axis=1)"),
        OpSpec("Reshape", _reshape, "static per-sample reshape"),
        OpSpec("Transpose", _transpose, "static per-sample permutation of axes"),
        OpSpec("Identity", _same, "pass-through (removed by canonicalization)"),
        OpSpec("Conv", _conv, "N-d convolution (any kernel, stride, padding, dilation, groups incl. depthwise)"),
        OpSpec("WinogradConv", _winograd_conv, "3x3 stride-1 Conv computed as Winograd F(tile x tile, 3x3)"),
        OpSpec("MaxPool", _pool, "max over sliding windows"),
        OpSpec("AveragePool", _pool, "mean over sliding windows"),
        OpSpec("GlobalAveragePool", _global_pool, "mean over all spatial positions"),
        OpSpec("GlobalMaxPool", _global_pool, "max over all spatial positions"),
        OpSpec("Concat", _concat, "concatenation along a per-sample axis"),
        OpSpec("Pad", _pad, "constant/edge/reflect padding of per-sample axes"),
        OpSpec("Softmax", _same, "softmax along one axis (legacy: over the flattened trailing axes)"),
        OpSpec("Sigmoid", _same, "1 / (1 + exp(-x))"),
        OpSpec("Tanh", _same, "tanh(x)"),
        OpSpec("LeakyRelu", _same, "x if x >= 0 else alpha * x"),
        OpSpec("HardSigmoid", _same, "max(0, min(1, alpha * x + beta))"),
        OpSpec("HardSwish", _same, "x * max(0, min(1, x / 6 + 1 / 2))"),
    ]
}


def infer_shapes(graph: Graph, node: Node) -> list[Shape]:
    """Output shapes of `node` from the shapes of its inputs."""
    spec = OPS.get(node.op)
    if spec is None:
        raise GraphError(f"{node.describe()}: op {node.op!r} is not an IR op")
    shapes = [graph.value(i).type.shape for i in node.inputs if i]
    return spec.shape(graph, node, shapes)
