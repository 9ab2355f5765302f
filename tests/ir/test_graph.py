"""The IR graph: queries, edits, integrity checks, and the per-sample shape rules of every op."""

from __future__ import annotations

import numpy as np
import pytest

from hwgen.errors import GraphError
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.ir.ops import OPS, infer_shapes
from hwgen.numerics import FixedPoint, Float32


def small_graph() -> Graph:
    """x[4] -> Dense(W[3,4], b[3]) -> h[3] -> Relu -> y[3]."""
    g = Graph("small")
    g.add_value(Value("x", TensorType((4,))))
    g.add_value(Value("W", TensorType((3, 4)), np.arange(12.0).reshape(3, 4)))
    g.add_value(Value("b", TensorType((3,)), np.zeros(3)))
    g.add_value(Value("h", TensorType((3,))))
    g.add_value(Value("y", TensorType((3,))))
    g.inputs, g.outputs = ["x"], ["y"]
    g.nodes = [
        Node("fc", "Dense", ["x", "W", "b"], ["h"], {"activation": "none"}, onnx_name="/fc/Gemm", onnx_op="Gemm"),
        Node("act", "Relu", ["h"], ["y"]),
    ]
    return g


def test_tensor_type() -> None:
    t = TensorType((2, 3, 4))
    assert t.size == 24 and t.format == Float32()
    assert TensorType(()).size == 1
    q = t.with_format(FixedPoint(8, 4))
    assert q.format == FixedPoint(8, 4) and q.shape == (2, 3, 4) and t.format == Float32()


def test_describe_names_the_node_and_its_origin() -> None:
    g = small_graph()
    assert g.node("fc").describe() == "node 'fc' (ONNX '/fc/Gemm', Gemm)"
    assert g.node("act").describe() == "node 'act' (Relu)"


def test_queries() -> None:
    g = small_graph()
    assert g.value("W").is_const and not g.value("x").is_const
    assert g.producer("h") is g.node("fc") and g.producer("x") is None
    assert [n.name for n in g.consumers("h")] == ["act"] and g.consumers("y") == []
    assert g.activations(g.node("fc")) == ["x"]
    assert [n.name for n in g.mac_nodes()] == ["fc"]
    np.testing.assert_array_equal(g.const("W"), np.arange(12.0).reshape(3, 4))
    with pytest.raises(GraphError, match=r"graph 'small': no value named 'nope'"):
        g.value("nope")
    with pytest.raises(GraphError, match=r"no node named 'nope'"):
        g.node("nope")
    with pytest.raises(GraphError, match=r"'x' is not a constant"):
        g.const("x")


def test_edits() -> None:
    g = small_graph()
    with pytest.raises(GraphError, match="defined twice"):
        g.add_value(Value("W", TensorType((1,))))
    assert g.unique_name("fresh") == "fresh"
    assert g.unique_name("W") == "W_1"
    assert g.unique_name("fc") == "fc_1"  # node names are taken too
    g.add_value(Value("W_1", TensorType((1,)), np.zeros(1)))
    assert g.unique_name("W") == "W_2"
    g.replace_uses("h", "x")
    assert g.node("act").inputs == ["x"]
    g.replace_uses("y", "z")
    assert g.outputs == ["z"]
    g.remove_unused()
    assert "W_1" not in g.values and "W" in g.values


def test_copy_is_deep() -> None:
    g = small_graph()
    c = g.copy()
    c.const("W")[0, 0] = 99.0
    c.node("fc").inputs.append("extra")
    c.meta["k"] = 1
    assert g.const("W")[0, 0] == 0.0
    assert g.node("fc").inputs == ["x", "W", "b"]
    assert g.meta == {}


def test_verify_accepts_a_good_graph() -> None:
    small_graph().verify()


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda g: g.nodes.append(Node("fc", "Relu", ["y"], ["z"])), r"node name 'fc' used twice"),
        (lambda g: g.nodes.reverse(), r"node 'act' \(Relu\): input 'h' is used before it is defined"),
        (lambda g: setattr(g.nodes[1], "outputs", ["h"]), r"output 'h' is defined twice"),
        (lambda g: setattr(g.nodes[1], "outputs", ["untyped"]), r"output 'untyped' has no type"),
        (lambda g: setattr(g, "outputs", ["ghost"]), r"output 'ghost' is never computed"),
        (lambda g: setattr(g.nodes[0], "outputs", ["W"]), r"output 'W' is defined twice"),
    ],
)
def test_verify_names_each_breakage(breakage, message: str) -> None:
    g = small_graph()
    breakage(g)
    with pytest.raises(GraphError, match=message):
        g.verify()


# -- shape rules -----------------------------------------------------------------------------
def shape_of(op: str, in_shapes: list[tuple[int, ...]], attrs: dict | None = None, consts: int = 0) -> tuple:
    """Output shape of a one-node graph; the last `consts` inputs are constants."""
    g = Graph("s")
    names = []
    for i, s in enumerate(in_shapes):
        const = np.zeros(s) if i >= len(in_shapes) - consts else None
        g.add_value(Value(f"i{i}", TensorType(s), const))
        names.append(f"i{i}")
    node = Node("n", op, names, ["o"], attrs or {})
    (out,) = infer_shapes(g, node)
    return out


def test_shape_rules() -> None:
    assert shape_of("Dense", [(4,), (3, 4), (3,)], consts=2) == (3,)
    assert shape_of("Dense", [(5, 4), (3, 4)], consts=1) == (5, 3)
    assert shape_of("Dense", [(4,), (3, 4), ()], consts=2) == (3,)
    assert shape_of("MatMul", [(2, 4), (4, 6)], consts=1) == (2, 6)
    assert shape_of("Gemm", [(4,), (4, 6)], consts=1) == (6,)
    assert shape_of("Gemm", [(4,), (6, 4)], {"transB": 1}, consts=1) == (6,)
    assert shape_of("Add", [(3, 1), (4,)]) == (3, 4)
    assert shape_of("Mul", [(3,), ()]) == (3,)
    for op in ("Relu", "Clip", "Identity", "BatchNormalization"):
        assert shape_of(op, [(2, 5)]) == (2, 5)
    assert shape_of("Flatten", [(2, 3, 4)]) == (24,)
    assert shape_of("Reshape", [(2, 3, 4)], {"shape": (6, 4)}) == (6, 4)
    assert shape_of("Transpose", [(2, 3, 4)], {"perm": (2, 0, 1)}) == (4, 2, 3)


@pytest.mark.parametrize(
    ("op", "shapes", "attrs", "consts", "message"),
    [
        ("Dense", [(5,), (3, 4)], {}, 1, r"input \(5,\) does not match weight \(3, 4\)"),
        ("Dense", [(4,), (3, 4), (2,)], {}, 2, r"bias shape \(2,\) does not match 3 outputs"),
        ("MatMul", [(4,), (5, 6)], {}, 1, r"MatMul of \(4,\) by \(5, 6\) is not defined"),
        ("Add", [(3,), (4,)], {}, 0, r"do not broadcast"),
        ("Reshape", [(2, 3)], {"shape": (5,)}, 0, r"cannot reshape \(2, 3\) to \(5,\)"),
        ("LSTM", [(3,)], {}, 0, r"op 'LSTM' is not an IR op"),
    ],
)
def test_shape_rule_errors(op: str, shapes: list, attrs: dict, consts: int, message: str) -> None:
    with pytest.raises(GraphError, match=message):
        shape_of(op, shapes, attrs, consts)


def test_every_op_has_a_doc_line() -> None:
    for name, spec in OPS.items():
        assert spec.name == name and spec.doc and "\n" not in spec.doc
