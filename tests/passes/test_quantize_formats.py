"""Mixed precision by configuration: formats land on the right values, the golden model computes the
decoded values exactly, and the float64 QAT forward equals sim.exact for element formats."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from hwgen.config import config_from_dict
from hwgen.errors import ConfigError
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.numerics import BlockCodes, FixedPoint, Minifloat, Rounding
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import exact
from hwgen.sim.reference import windows
from hwgen.sim.torch_exec import Mode, TorchExecutor

FAMILIES = [
    ("minifloat<e4m3,bias=7,denorm>", "minifloat<e4m3,bias=7,nodenorm>"),
    ("bfp<m5,e5,block=4>", "bfp<m7,e5,block=4>"),
    ("bminifloat<e4m3,b5,block=4,denorm>", "bminifloat<e4m3,b5,block=4,denorm>"),
    ("blog<e5,b5,block=4>", None),
    ("binary<channel>", None),
    ("ternary<channel>", "ternary"),
]


def _mlp(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("mlp")
    g.add_value(Value("x", TensorType((12,))))
    shapes = [(12, 10), (10, 8), (8, 4)]
    prev = "x"
    for i, (k, m) in enumerate(shapes):
        g.add_value(Value(f"w{i}", TensorType((m, k)), rng.normal(0, 0.5, (m, k))))
        g.add_value(Value(f"b{i}", TensorType((m,)), rng.normal(0, 0.1, m)))
        g.add_value(Value(f"y{i}", TensorType((m,))))
        act = "relu" if i < len(shapes) - 1 else "none"
        g.nodes.append(Node(f"fc{i}", "Dense", [prev, f"w{i}", f"b{i}"], [f"y{i}"], {"activation": act}))
        prev = f"y{i}"
    g.inputs, g.outputs = ["x"], [prev]
    g.verify()
    return g


def _cnn(seed: int = 1) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("cnn")
    g.add_value(Value("x", TensorType((3, 6, 6))))
    conv = {"kernel": [3, 3], "strides": [1, 1], "pads_begin": [1, 1], "pads_end": [1, 1], "dilations": [1, 1]}
    g.add_value(Value("w0", TensorType((5, 3, 3, 3)), rng.normal(0, 0.4, (5, 3, 3, 3))))
    g.add_value(Value("b0", TensorType((5,)), rng.normal(0, 0.1, 5)))
    g.add_value(Value("c0", TensorType((5, 6, 6))))
    g.nodes.append(Node("conv0", "Conv", ["x", "w0", "b0"], ["c0"], {**conv, "group": 1, "activation": "relu"}))
    g.add_value(Value("w1", TensorType((4, 5, 3, 3)), rng.normal(0, 0.3, (4, 5, 3, 3))))
    g.add_value(Value("b1", TensorType((4,)), rng.normal(0, 0.1, 4)))
    g.add_value(Value("c1", TensorType((4, 6, 6))))
    g.nodes.append(Node("conv1", "Conv", ["c0", "w1", "b1"], ["c1"], {**conv, "group": 1, "activation": "relu"}))
    g.add_value(Value("f", TensorType((144,))))
    g.nodes.append(Node("flat", "Flatten", ["c1"], ["f"], {"axis": 1}))
    g.add_value(Value("w2", TensorType((3, 144)), rng.normal(0, 0.2, (3, 144))))
    g.add_value(Value("b2", TensorType((3,)), rng.normal(0, 0.1, 3)))
    g.add_value(Value("y", TensorType((3,))))
    g.nodes.append(Node("fc", "Dense", ["f", "w2", "b2"], ["y"], {"activation": "none"}))
    g.inputs, g.outputs = ["x"], ["y"]
    g.verify()
    return g


def _quantize(g: Graph, x: np.ndarray, w: str | None, a: str | None, **layers: dict) -> Graph:
    quant = {k: v for k, v in (("weight_format", w), ("act_format", a)) if v}
    return quantize_fixed(g, x, config_from_dict({"quantize": quant, "layers": layers})).graph


def _decoded(g: Graph, value: str, codes: object) -> np.ndarray:
    fmt = g.value(value).type.format
    return np.asarray(fmt.to_float(codes), dtype=np.float64)


def _rational_requant(node: Node, g: Graph, exact_sum: np.ndarray) -> np.ndarray:
    """Independent requantization: relu on exact rationals, then the output format's encode of the float
    (exact: the sums here are far below 2**53 units)."""
    fmt = g.value(node.outputs[0]).type.format
    v = np.vectorize(float)(exact_sum)
    if node.attrs.get("activation") == "relu":
        v = np.maximum(v, 0.0)
    rnd = Rounding(node.attrs["rounding"])
    if isinstance(fmt, FixedPoint):
        lo, hi = exact.activation_bounds(node, fmt)
        return np.clip(fmt.encode(v, rounding=rnd), lo, hi)
    return exact.encode_format(fmt, v, rnd, exact.format_block_axis(v.ndim))


def _independent(g: Graph, x: np.ndarray) -> dict[str, object]:
    """A float64/Fraction evaluation of decoded values, node by node, from sim.exact's own inputs per node."""
    env = exact.run_codes(g, exact.encode_input(g, x), keep=True)
    out: dict[str, object] = {}
    for node in g.nodes:
        if node.op not in ("Dense", "Conv"):
            continue
        a = _decoded(g, node.inputs[0], env[node.inputs[0]])
        w = np.asarray(g.const(node.inputs[1]), dtype=np.float64)
        b = np.asarray(g.const(node.inputs[2]), dtype=np.float64)
        fr = np.vectorize(Fraction, otypes=[object])
        if node.op == "Dense":
            s = fr(a) @ fr(w).T + fr(b)
        else:
            win, _ = windows(a, node, 0.0)  # [N, C, H, W, kh, kw]
            s = np.einsum("nchwij,mcij->nmhw", fr(win), fr(w)) + fr(b)[None, :, None, None]
        out[node.outputs[0]] = (_rational_requant(node, g, s), env[node.outputs[0]])
    return out


def _same(want: object, got: object) -> bool:
    if isinstance(got, BlockCodes):
        return (
            isinstance(want, BlockCodes)
            and np.array_equal(want.elements, got.elements)
            and np.array_equal(want.shared_per_element(), got.shared_per_element())
        )
    return np.array_equal(np.asarray(want), np.asarray(got))


@pytest.mark.parametrize(("w", "a"), FAMILIES)
@pytest.mark.parametrize("make", [_mlp, _cnn])
def test_golden_model_equals_independent_evaluation(make, w: str, a: str | None) -> None:
    g = make()
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (16, *g.value("x").type.shape))
    q = _quantize(g, x, w, a)
    checked = _independent(q, x[:6])
    assert checked
    for value, (want, got) in checked.items():
        assert _same(want, got), value


def test_config_puts_formats_on_the_right_values() -> None:
    g = _mlp()
    x = np.random.default_rng(0).uniform(-1, 1, (32, 12))
    q = _quantize(g, x, None, None, fc1={"weight_format": "bfp<m3,e5,block=4>", "act_format": "minifloat<e4m3>"})
    fmt = {v: q.value(v).type.format for v in ("x", "y0", "y1", "y2")}
    assert isinstance(fmt["x"], FixedPoint) and isinstance(fmt["y0"], FixedPoint)  # fc0 untouched
    assert isinstance(fmt["y1"], Minifloat)  # fc1's output feeds fc2 (a MAC)
    assert isinstance(fmt["y2"], FixedPoint)  # graph output stays fixed
    assert str(q.value(q.nodes[1].inputs[1]).type.format) == "bfp<m3,e5,block=4>"
    assert isinstance(q.value(q.nodes[0].inputs[1]).type.format, FixedPoint)
    assert isinstance(q.value(q.nodes[2].inputs[1]).type.format, FixedPoint)
    # the minifloat bias was re-chosen by calibration: the largest activation does not saturate by more than a step
    y1 = np.maximum(0, q.value("y1").type.format.max_value)
    assert y1 > 0
    # weights in fc1 are exactly representable in 4-bit BFP blocks along in-features
    _, codes = exact.format_weight_codes(q, q.nodes[1])
    assert np.abs(codes.elements).max() <= 7


def test_default_config_is_unchanged_fixed_point() -> None:
    g = _mlp()
    x = np.random.default_rng(0).uniform(-1, 1, (32, 12))
    a = quantize_fixed(g, x, config_from_dict({})).graph
    b = _quantize(g, x, "fixed<8,0>", "fixed<8,0>")  # fixed specs mean W8A8 fixed, scale re-chosen as today
    for v in a.values:
        assert str(a.value(v).type.format) == str(b.value(v).type.format)
        if a.value(v).is_const:
            np.testing.assert_array_equal(a.const(v), b.const(v))
    assert a.meta["quantized"] == "fixed"


def test_act_format_before_pooling_stays_fixed_and_refusals_are_clear() -> None:
    g = _cnn()
    x = np.random.default_rng(0).uniform(-1, 1, (8, 3, 6, 6))
    q = _quantize(g, x, None, "bfp<m7,e5,block=4>")
    assert isinstance(q.value("c1").type.format, FixedPoint)  # conv1 -> flatten: block formats may not pass
    assert str(q.value("c0").type.format) == "bfp<m7,e5,block=4>"  # conv0 feeds conv1 directly
    q = _quantize(g, x, None, "minifloat<e4m3>")
    assert isinstance(q.value("c1").type.format, Minifloat) and isinstance(q.value("f").type.format, Minifloat)
    with pytest.raises(ConfigError, match="flat"):
        _quantize(g, x, None, None, flat={"act_format": "minifloat<e4m3>"})
    with pytest.raises(ConfigError, match="not a quantized"):
        _quantize(g, x, "float32", None)


@pytest.mark.parametrize(
    ("w", "a"),
    [
        ("minifloat<e4m3,bias=7,denorm>", "minifloat<e4m3,bias=7,nodenorm>"),
        ("binary<channel>", None),
        ("ternary", "fixed<6,0>"),
    ],
)
def test_qat_forward_equals_golden_model_for_element_formats(w: str, a: str | None) -> None:
    torch.set_num_threads(1)
    g = _mlp()
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (64, 12))
    q = _quantize(g, x, w, a)
    from hwgen.train.loop import FitConfig
    from hwgen.train.qat import qat

    y = rng.integers(0, 4, 64)
    res = qat(q, x, y, FitConfig(epochs=1, batch_size=16, lr=1e-2, seed=0, progress=False), float_graph=g)
    assert res.check_exact(x) == 0
    ex = TorchExecutor(res.graph, Mode.QUANTIZED)
    want = exact.decode_outputs(res.graph, exact.run(res.graph, x))[res.graph.outputs[0]]
    np.testing.assert_array_equal(ex(x).detach().numpy(), want)
