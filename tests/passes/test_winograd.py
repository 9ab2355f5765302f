"""passes.winograd: which convolutions it rewrites, its records, and that outputs do not change."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_model, quant_config, random_input
from onnx import helper

from hwgen.errors import ConfigError, GraphError
from hwgen.frontend import import_onnx
from hwgen.ir.ops import infer_shapes
from hwgen.passes.base import run_pipeline
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.passes.winograd import products, winograd
from hwgen.sim import exact, reference

SHAPE = (3, 9, 9)


def net() -> object:
    """x -> c3 (3x3 pad 1, relu) -> c5 (5x5 pad 2) -> cs (3x3 stride 2) -> cg (3x3 group 2) -> ca (3x3 pads 2,0,1,1)."""
    rng = np.random.default_rng(0)
    inits = {
        "w3": rng.normal(0, 0.3, (4, 3, 3, 3)),
        "b3": rng.normal(0, 0.1, 4),
        "w5": rng.normal(0, 0.2, (4, 4, 5, 5)),
        "ws": rng.normal(0, 0.3, (4, 4, 3, 3)),
        "wg": rng.normal(0, 0.3, (4, 2, 3, 3)),
        "wa": rng.normal(0, 0.3, (5, 4, 3, 3)),
        "ba": rng.normal(0, 0.1, 5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w3", "b3"], ["a"], name="c3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="r3"),
        helper.make_node("Conv", ["ar", "w5"], ["b"], name="c5", pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["b", "ws"], ["c"], name="cs", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c", "wg"], ["d"], name="cg", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d", "wa", "ba"], ["y"], name="ca", pads=[2, 0, 1, 1]),
    ]
    return make_model(nodes, {"x": ["N", *SHAPE]}, {"y": None}, inits)


@pytest.fixture(scope="module")
def float_graph():
    return canonicalize(import_onnx(net())).graph


@pytest.fixture(scope="module")
def quant_graph(float_graph):
    return quantize_fixed(float_graph, random_input(SHAPE, 1, batch=64), quant_config()).graph


def by_node(result) -> dict[str, dict]:
    return {r.node: r.values for r in result.records}


def test_rewrites_only_3x3_stride1_group1(float_graph) -> None:
    result = winograd(float_graph)
    ops = {n.name: n.op for n in result.graph.nodes}
    assert ops["c3"] == ops["ca"] == "WinogradConv"
    assert ops["c5"] == ops["cs"] == ops["cg"] == "Conv"
    rec = by_node(result)
    assert rec["c5"] == {"rewritten": False, "reason": "kernel 5x5 (only 3x3)"}
    assert rec["cs"]["reason"] == "stride 2x2 (only 1)"
    assert rec["cg"]["reason"] == "group=2 (only group 1)"
    assert result.changed
    # functional: the input graph is untouched
    assert all(n.op != "WinogradConv" for n in float_graph.nodes)


def test_records_tile_scale_and_products(float_graph) -> None:
    rec = by_node(winograd(float_graph, tile=2))["c3"]
    # 9x9 outputs: 5x5 tiles of 16 products vs 81 pixels x 9 taps, per (3 in, 4 out) channel pair
    assert rec["tile"] == "F(2x2,3x3)" and rec["transform_scale"] == 2 and rec["divisor"] == 4
    assert rec["products_direct"] == 81 * 9 * 12 and rec["products_winograd"] == 25 * 16 * 12
    rec4 = by_node(winograd(float_graph, tile=4))["c3"]
    assert rec4["divisor"] == 576 and rec4["products_winograd"] == 9 * 36 * 12


def test_per_layer_tiles_and_auto(float_graph) -> None:
    result = winograd(float_graph, tile=2, layers={"ca": 4, "c3": None})
    nodes = {n.name: n for n in result.graph.nodes}
    assert nodes["c3"].op == "Conv" and by_node(result)["c3"]["reason"] == "kept by request"
    assert nodes["ca"].attrs["tile"] == 4
    auto = {n.name: n.attrs.get("tile") for n in winograd(float_graph, tile="auto").graph.nodes}
    # 9x9: F(4) needs 9 tiles x 36 = 324 products per pair, F(2) 25 x 16 = 400
    assert auto["c3"] == 4 and products((9, 9), 1, 4) < products((9, 9), 1, 2)
    # 2x2 outputs: one F(2) tile (16) beats one F(4) tile (36)
    assert min((2, 4), key=lambda m: products((2, 2), 1, m)) == 2


def test_bad_tile_is_a_config_error(float_graph) -> None:
    with pytest.raises(ConfigError, match="tile 3"):
        winograd(float_graph, tile=3)
    with pytest.raises(ConfigError, match="node 'ca'"):
        winograd(float_graph, layers={"ca": 8})


def test_shape_rule_refuses_a_bad_node(float_graph) -> None:
    g = winograd(float_graph).graph
    node = g.node("c3")
    node.attrs["tile"] = 3
    with pytest.raises(GraphError, match="tile 3"):
        infer_shapes(g, node)


@pytest.mark.parametrize("tile", [2, 4])
def test_float_outputs_match_direct(float_graph, tile: int) -> None:
    x = random_input(SHAPE, 2, batch=4).astype(np.float64) * 0.5
    want = reference.run(float_graph, x, keep=True)
    got = reference.run(winograd(float_graph, tile=tile).graph, x, keep=True)
    for name in ("c3", "ca"):  # the outputs of the two rewritten convs (c3 with its ReLU fused)
        v = float_graph.node(name).outputs[0]
        assert np.abs(got[v] - want[v]).max() < 1e-5


@pytest.mark.parametrize("tile", [2, 4])
def test_quantized_golden_model_is_bit_identical(quant_graph, tile: int) -> None:
    """The integer datapath is exact: every code of every value equals the direct conv's."""
    g = winograd(quant_graph, tile=tile).graph
    assert sum(n.op == "WinogradConv" for n in g.nodes) == 2
    x = random_input(SHAPE, 3, batch=16) * 2.0  # past the calibration range: saturating codes too
    codes = exact.encode_input(quant_graph, x)
    codes[0] = fixed_min = exact.fixed_format(quant_graph, "x").min_code
    codes[1] = exact.fixed_format(quant_graph, "x").max_code
    assert fixed_min < 0
    want = exact.run_codes(quant_graph, codes, keep=True)
    got = exact.run_codes(g, codes, keep=True)
    for v in want:
        assert np.array_equal(got[v], want[v]), v


def test_runs_in_a_pipeline(float_graph) -> None:
    g, records = run_pipeline(float_graph, [lambda g: winograd(g, tile="auto")])
    assert sum(r.values["rewritten"] for r in records) == 2
    assert [n.op for n in g.nodes].count("WinogradConv") == 2
