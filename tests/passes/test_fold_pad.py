"""hwgen.passes.fold_pad (canonicalize rule 10): one test per rewrite rule, plus the Pads that must stay.

Every folded model is checked against onnxruntime on the original (explicit Pad) model, and the
float reference before and after the fold must agree to rounding (the fold changes no value).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from conftest import make_model, random_input, run_ort
from onnx import helper

from hwgen.config import config_from_dict
from hwgen.errors import UnsupportedOpError
from hwgen.frontend import import_onnx
from hwgen.hw.lower import schedule_graph
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.fold_pad import fold_pads, lower_bound
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import reference

SHAPE = (3, 6, 7)
#: onnxruntime computes in float32, the reference in float64
ORT_TOL = {"rtol": 1e-5, "atol": 1e-5}


def pad_model(
    consumer: str,
    pad: list[int],
    *,
    value: float = 0.0,
    mode: str = "constant",
    relu: bool = False,
    extra_reader: bool = False,
    **attrs: object,
) -> onnx.ModelProto:
    """x [-> Relu] -> Pad(pads, value, mode) -> consumer (Conv 3x3 / MaxPool / AveragePool 2x2) -> y."""
    rng = np.random.default_rng(0)
    inits: dict[str, np.ndarray] = {"pads": np.array(pad, dtype=np.int64), "v": np.array(value, dtype=np.float32)}
    nodes = []
    src = "x"
    if relu:
        nodes.append(helper.make_node("Relu", ["x"], ["r"], name="relu"))
        src = "r"
    pad_in = [src, "pads"] + (["v"] if mode == "constant" else [])
    nodes.append(helper.make_node("Pad", pad_in, ["p"], name="explicit_pad", mode=mode))
    if consumer == "Conv":
        inits |= {"w": rng.normal(0, 0.3, (4, 3, 3, 3)), "b": rng.normal(0, 0.1, 4)}
        nodes.append(helper.make_node("Conv", ["p", "w", "b"], ["y"], name="conv", **attrs))
    else:
        nodes.append(helper.make_node(consumer, ["p"], ["y"], name="pool", kernel_shape=[2, 2], **attrs))
    outputs: dict[str, None] = {"y": None}
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["p"], ["z"], name="other"))
        outputs["z"] = None
    return make_model(nodes, {"x": ["N", *SHAPE]}, outputs, inits)


def folded(model: onnx.ModelProto) -> Graph:
    """Import + canonicalize; the float reference must equal onnxruntime on the original model."""
    g = canonicalize(import_onnx(model)).graph
    x = random_input(SHAPE, 3, batch=4)
    for got, want in zip(reference.run(g, x).values(), run_ort(model, x), strict=True):
        np.testing.assert_allclose(got, want, **ORT_TOL)
    return g


def pad_nodes(g: Graph) -> list[str]:
    return [n.name for n in g.nodes if n.op == "Pad"]


def test_rule1_zero_pad_folds_into_conv_pads() -> None:
    # ONNX pads: begin (N, C, H, W) then end; the Conv keeps its own pads and adds the Pad's
    g = folded(pad_model("Conv", [0, 0, 1, 2, 0, 0, 2, 0], pads=[1, 0, 0, 1]))
    assert pad_nodes(g) == []
    conv = g.node("conv")
    assert conv.inputs[0] == "x" and (conv.attrs["pads_begin"], conv.attrs["pads_end"]) == ((2, 2), (2, 1))


def test_rule2_zero_pad_folds_into_average_pool_counting_the_padding() -> None:
    g = folded(pad_model("AveragePool", [0, 0, 1, 1, 0, 0, 1, 1]))  # count_include_pad defaults to 0
    assert pad_nodes(g) == []
    pool = g.node("pool")
    assert pool.attrs["count_include_pad"] == 1 and pool.attrs["pads_begin"] == (1, 1)


def test_rule2_stays_when_the_pool_excludes_its_own_padding() -> None:
    g = folded(pad_model("AveragePool", [0, 0, 1, 0, 0, 0, 0, 0], pads=[0, 1, 0, 0], count_include_pad=0))
    assert pad_nodes(g) == ["explicit_pad"]


def test_rule3_zero_pad_after_relu_folds_into_max_pool() -> None:
    g = folded(pad_model("MaxPool", [0, 0, 1, 1, 0, 0, 1, 1], relu=True))
    assert pad_nodes(g) == [] and g.node("pool").inputs[0] == "r"


def test_rule3_minus_infinity_folds_into_max_pool() -> None:
    g = folded(pad_model("MaxPool", [0, 0, 1, 0, 0, 0, 0, 1], value=-math.inf))
    assert pad_nodes(g) == []


@pytest.mark.parametrize(
    ("consumer", "pad", "kwargs"),
    [
        ("MaxPool", [0, 0, 1, 1, 0, 0, 1, 1], {}),  # 0 may exceed a signed input: it could win a window
        ("MaxPool", [0, 0, 0, 0, 0, 0, 0, 0], {"value": 0.5, "relu": True}),  # 0.5 > the ReLU's bound 0
        ("MaxPool", [0, 0, 2, 0, 0, 0, 0, 0], {"relu": True}),  # 2 + 0 pads reach the 2x2 kernel
        ("Conv", [0, 0, 1, 1, 0, 0, 1, 1], {"value": 0.25}),  # a Conv pads with 0
        ("MaxPool", [0, 1, 1, 0, 0, 0, 0, 0], {"value": -math.inf}),  # the channel axis
        ("Conv", [0, 0, 1, 1, 0, 0, 1, 1], {"mode": "reflect"}),
        ("Conv", [0, 0, 1, 1, 0, 0, 1, 1], {"mode": "edge"}),
        ("Conv", [0, 0, 1, 1, 0, 0, 1, 1], {"extra_reader": True}),  # a second consumer
        ("AveragePool", [0, 0, 1, 1, 0, 0, 1, 1], {"ceil_mode": 1}),
    ],
)
def test_pads_that_must_stay(consumer: str, pad: list[int], kwargs: dict) -> None:
    g = folded(pad_model(consumer, pad, **kwargs))
    assert pad_nodes(g) == ["explicit_pad"]


def test_lower_bound_follows_fused_activations() -> None:
    g = canonicalize(import_onnx(pad_model("Conv", [0, 0, 0, 0, 0, 0, 0, 0], relu=True))).graph
    assert lower_bound(g, "r") == 0.0 and lower_bound(g, "x") == -math.inf


def test_standalone_pass_is_functional_and_records() -> None:
    g = import_onnx(pad_model("Conv", [0, 0, 1, 1, 0, 0, 1, 1]))
    res = fold_pads(g)
    assert res.changed and pad_nodes(g) == ["explicit_pad"] and pad_nodes(res.graph) == []
    (rec,) = res.records
    assert rec.node == "explicit_pad" and rec.values["into"] == "conv" and rec.values["pads_begin"] == (1, 1)


def test_a_pad_that_stays_is_refused_by_the_hardware_naming_it() -> None:
    g = canonicalize(import_onnx(pad_model("Conv", [0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"))).graph
    q = quantize_fixed(g, random_input(SHAPE, 0, batch=16).astype(np.float64), config_from_dict({})).graph
    with pytest.raises(UnsupportedOpError, match=r"explicit_pad.*no hardware engine for Pad"):
        schedule_graph(q, config_from_dict({}))
