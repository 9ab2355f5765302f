"""The op registry: which ops the IR knows, and the per-sample shape rule of each.

Shapes here exclude the batch dimension. Kernels live in `hwgen.sim`; engines in `hwgen.hw`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hwgen.errors import GraphError
from hwgen.ir.graph import Graph, Node

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


OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in [
        OpSpec("Dense", _dense, "y = act(x W^T + b): W [out, in], the canonical fully-connected layer"),
        OpSpec("Gemm", _gemm, "ONNX Gemm on a [batch, in] activation (normalized into Dense)"),
        OpSpec("MatMul", _matmul, "activation times a constant matrix (fused into Dense)"),
        OpSpec("Add", _elementwise, "element-wise sum with numpy broadcasting"),
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
    ]
}


def infer_shapes(graph: Graph, node: Node) -> list[Shape]:
    """Output shapes of `node` from the shapes of its inputs."""
    spec = OPS.get(node.op)
    if spec is None:
        raise GraphError(f"{node.describe()}: op {node.op!r} is not an IR op")
    shapes = [graph.value(i).type.shape for i in node.inputs if i]
    return spec.shape(graph, node, shapes)
