"""Fixed-point PTQ: formats from calibration, exact weights and biases, overrides, accuracy.

Expected formats are found by brute force over every fractional length, in exact rationals: the
finest power-of-two scale on which the bound still rounds to nearest onto a code, that is
bound * 2**frac < max_code + 1/2 (a bound up to half a step above the largest code costs no bit).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from conftest import LENET_ONNX, make_mlp_onnx, make_model, quant_config, random_input, run_ort
from hypothesis import example, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from hwgen.config import LayerConfig
from hwgen.errors import UnsupportedOpError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.numerics import FixedPoint
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import fixed_for_bound, quantize_fixed
from hwgen.sim import exact, reference


def max_code(bits: int, signed: bool) -> int:
    return (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1


def brute_frac(bound: float, bits: int, signed: bool) -> int:
    """The largest frac in [-64, 64] with bound * 2**frac < max_code + 1/2, by exact search."""
    mc = max_code(bits, signed)
    ok = [f for f in range(-64, 65) if Fraction(bound) * Fraction(2) ** f < mc + Fraction(1, 2)]
    return max(ok) if ok else -64


def fmt(g: Graph, value: str) -> FixedPoint:
    f = g.value(value).type.format
    assert isinstance(f, FixedPoint), (value, f)
    return f


def canonical(model) -> Graph:
    return canonicalize(import_onnx(model)).graph


# -- fixed_for_bound -----------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 5, 8, 12, 16])
def test_bound_at_the_ends_of_the_top_code(bits: int, signed: bool) -> None:
    mc = max_code(bits, signed)
    for k in range(-12, 30):
        at = math.ldexp(mc, -k)
        assert fixed_for_bound(at, bits, signed) == FixedPoint(bits, k, signed)  # max code == bound
        assert fixed_for_bound(at * (1 - 2**-30), bits, signed).frac == k
        assert fixed_for_bound(at * (1 + 2**-30), bits, signed).frac == k  # rounds onto the max code
        half = math.ldexp(mc + 0.5, -k)  # exactly half a step above: would round past the max code
        assert fixed_for_bound(half * (1 - 2**-40), bits, signed).frac == k
        assert fixed_for_bound(half, bits, signed).frac == k - 1
        assert fixed_for_bound(half * (1 + 2**-40), bits, signed).frac == k - 1
        # and the chosen format really does round the bound onto a code (saturation never needed)
        f = fixed_for_bound(half * (1 - 2**-40), bits, signed)
        assert f.max_code * f.step <= half <= (f.max_code + 0.5) * f.step


def test_degenerate_bounds() -> None:
    assert fixed_for_bound(0.0, 8, True) == FixedPoint(8, 7, True)
    assert fixed_for_bound(0.0, 8, False) == FixedPoint(8, 8, False)
    assert fixed_for_bound(float("nan"), 6, True) == FixedPoint(6, 5, True)
    assert fixed_for_bound(float("inf"), 6, False) == FixedPoint(6, 6, False)
    assert fixed_for_bound(1e-40, 8, True).frac == 64  # clamped
    assert fixed_for_bound(1e40, 8, True).frac == -64


def near_boundaries() -> st.SearchStrategy[float]:
    """Bounds within a few ulps of max_code * 2**-k or (max_code + 1/2) * 2**-k, where log2 is fragile."""

    def build(bits: int, signed: bool, k: int, half: bool, ulps: int) -> tuple[float, int, bool]:
        b = math.ldexp(max_code(bits, signed) + (0.5 if half else 0.0), -k)
        for _ in range(abs(ulps)):
            b = math.nextafter(b, math.inf if ulps > 0 else -math.inf)
        return b, bits, signed

    return st.builds(build, st.integers(2, 24), st.booleans(), st.integers(-30, 30), st.booleans(), st.integers(-3, 3))


@settings(max_examples=400)
@given(case=near_boundaries())
@example(case=(math.nextafter(127 / 16, math.inf), 8, True))
def test_fixed_for_bound_near_boundaries(case: tuple[float, int, bool]) -> None:
    bound, bits, signed = case
    assert fixed_for_bound(bound, bits, signed).frac == brute_frac(bound, bits, signed)


@settings(max_examples=300)
@given(
    bound=st.floats(min_value=1e-15, max_value=1e15, allow_nan=False),
    bits=st.integers(2, 24),
    signed=st.booleans(),
)
def test_fixed_for_bound_property(bound: float, bits: int, signed: bool) -> None:
    assert fixed_for_bound(bound, bits, signed).frac == brute_frac(bound, bits, signed)


# -- formats from calibration ---------------------------------------------------------------------
def two_layer(act: str = "relu", seed: int = 0) -> Graph:
    """x[6] -> fc0 (+act) -> fc1 -> y[3], canonical."""
    return canonical(make_mlp_onnx([6, 5, 3], seed, act=act))


def test_input_format_from_exact_bound() -> None:
    g = two_layer()
    x = random_input((6,), 0, batch=40)
    x = x / np.abs(x).max() * (127 / 16)  # max |x| exactly at fixed<8,4>'s largest code
    x[0, 0] = 127.5 / 16  # half a step above: the next coarser format
    q = quantize_fixed(g, x, quant_config()).graph
    assert fmt(q, "x") == FixedPoint(8, 3, signed=True)
    x[0, 0] = 127.49 / 16  # rounds onto the largest code of fixed<8,4>
    assert fmt(quantize_fixed(g, x, quant_config()).graph, "x") == FixedPoint(8, 4, signed=True)
    assert q.meta["input_rounding"] == "half_even" and q.meta["quantized"] == "fixed"


@pytest.mark.parametrize("input_bits", [None, 5, 12])
def test_unsigned_input_when_calibration_data_is_nonnegative(input_bits: int | None) -> None:
    x = np.abs(random_input((6,), 1, batch=40))
    x[0, 0] = 1.0
    x = np.minimum(x, 1.0)
    q = quantize_fixed(two_layer(), x, quant_config(input_bits=input_bits)).graph
    bits = input_bits or 8
    assert fmt(q, "x") == FixedPoint(bits, brute_frac(1.0, bits, False), signed=False)


@pytest.mark.parametrize(("act", "signed_hidden"), [("relu", False), ("none", True), ("clip", True)])
def test_activation_formats(act: str, signed_hidden: bool) -> None:
    """ReLU (and Clip with lo >= 0) outputs are unsigned; everything else is signed; bounds from data."""
    model = make_mlp_onnx([6, 5, 3], 2, act=act)
    g = canonical(model)
    x = random_input((6,), 2, batch=64)
    q = quantize_fixed(g, x, quant_config(act_bits=7)).graph
    fc0, fc1 = q.nodes
    # the hidden activation, recomputed here from the ONNX initializers
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    h = x.astype(np.float64) @ init["w0"].T + init["b0"]
    if act == "relu":
        h = np.maximum(h, 0)
    elif act == "clip":
        h = np.clip(h, -0.5, 0.75)
    hf = fmt(q, fc0.outputs[0])
    assert hf.signed == signed_hidden and hf.bits == 7
    assert hf.frac == brute_frac(float(np.abs(h).max()), 7, signed_hidden)
    y = run_ort(model, x)[0]
    yf = fmt(q, fc1.outputs[0])
    assert yf.signed
    # float32 ORT vs float64 calibration can only matter within 1e-5 of a boundary; not the case here
    assert yf.frac == brute_frac(float(np.abs(y).max()), 7, True)


def test_clip_with_nonnegative_lower_bound_is_unsigned() -> None:
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc", transB=1),
        helper.make_node("Clip", ["h"], ["y"], name="clip", min=0.0, max=0.5),
    ]
    inits = {"W": rng.normal(size=(4, 5)), "b": rng.normal(size=4)}
    g = canonical(make_model(nodes, {"x": ["N", 5]}, {"y": ["N", 4]}, inits, opset=10))
    q = quantize_fixed(g, random_input((5,), 3, 50), quant_config()).graph
    assert fmt(q, "y") == FixedPoint(8, brute_frac(0.5, 8, False), signed=False)


def test_unfused_relu_and_reshape_pass_formats_through() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="act"),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "W"], ["y"], name="fc", transB=1),
    ]
    g = canonical(make_model(nodes, {"x": ["N", 2, 3]}, {"y": ["N", 2]}, {"W": np.ones((2, 6))}))
    q = quantize_fixed(g, random_input((2, 3), 4, 30), quant_config()).graph
    assert fmt(q, "r") == fmt(q, "f") == fmt(q, "x")


# -- weights and biases -----------------------------------------------------------------------------
@pytest.mark.parametrize("w_bits", [2, 4, 8, 13])
def test_weights_exactly_representable_and_nearest(w_bits: int) -> None:
    g = canonical(make_mlp_onnx([9, 7, 5, 3], 5, with_bn=True))
    x = random_input((9,), 5, batch=30)
    res = quantize_fixed(g, x, quant_config(weight_bits=w_bits))
    q = res.graph
    for orig, node in zip(g.nodes, q.nodes, strict=True):
        w = g.const(orig.inputs[1])
        wq = q.const(node.inputs[1])
        wf = fmt(q, node.inputs[1])
        assert wf.bits == w_bits and wf.signed
        assert wf.frac == brute_frac(float(np.abs(w).max()), w_bits, True)
        codes = wf.encode_exact(wq)  # raises unless every value is on the grid and in range
        assert codes.min() >= wf.min_code and codes.max() <= wf.max_code
        assert np.all(np.abs(wq - w) <= wf.step / 2)  # nearest grid point (no clipping: bound holds max |w|)
        # ties go to even codes: every exact tie in the float weights lands on an even code
        scaled = np.ldexp(w, wf.frac)
        ties = scaled - np.floor(scaled) == 0.5
        assert np.all(codes[ties] % 2 == 0)


def test_bias_on_the_accumulator_scale() -> None:
    g = canonical(make_mlp_onnx([9, 7, 3], 6, bias_scale=2.0))
    q = quantize_fixed(g, random_input((9,), 6, batch=30), quant_config(weight_bits=5, act_bits=6)).graph
    for orig, node in zip(g.nodes, q.nodes, strict=True):
        acc_frac = fmt(q, node.inputs[0]).frac + fmt(q, node.inputs[1]).frac
        bf = fmt(q, node.inputs[2])
        assert bf.frac == acc_frac and bf.signed
        b, bq = g.const(orig.inputs[2]), q.const(node.inputs[2])
        codes = bf.encode_exact(bq)
        want = [round(Fraction(float(v)) * 2**acc_frac) for v in b]  # nearest, ties to even
        assert codes.tolist() == want
        assert max(abs(c) for c in want) <= bf.max_code


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_bias_too_wide_for_exact_codes_is_refused() -> None:
    """At 32-bit weights and inputs the bias needs > 62 bits on the accumulator grid: refuse clearly."""
    from hwgen.errors import FormatError

    g = canonical(make_mlp_onnx([50, 4], 0, bias_scale=3.0))
    with pytest.raises(FormatError, match=r"bias needs \d+ bits.*lower weight_bits"):
        quantize_fixed(g, random_input((50,), 0, 64), quant_config(weight_bits=32, act_bits=32))


def test_bias_exact_at_wide_formats() -> None:
    g = canonical(make_mlp_onnx([50, 4], 0, bias_scale=3.0))
    q = quantize_fixed(g, random_input((50,), 0, 64), quant_config(weight_bits=24, act_bits=24)).graph
    node = q.nodes[0]
    acc_frac = fmt(q, node.inputs[0]).frac + fmt(q, node.inputs[1]).frac
    b, bq = g.const(g.nodes[0].inputs[2]), q.const(node.inputs[2])
    assert np.all(np.abs(bq - b) <= math.ldexp(1.0, -acc_frac - 1))


def test_records_and_rounding_attribute() -> None:
    g = two_layer()
    res = quantize_fixed(g, random_input((6,), 8, 30), quant_config(rounding="floor", weight_bits=6))
    q = res.graph
    assert res.changed
    assert [r.node for r in res.records] == ["fc0", "fc1"]
    for rec, node in zip(res.records, q.nodes, strict=True):
        assert rec.pass_name == "quantize_fixed"
        assert rec.onnx_name == node.onnx_name == node.name
        assert rec.values["weight_format"] == fmt(q, node.inputs[1]).name
        assert rec.values["input_format"] == fmt(q, node.inputs[0]).name
        assert rec.values["act_format"] == fmt(q, node.outputs[0]).name
        assert rec.values["bias_format"] == fmt(q, node.inputs[2]).name
        assert rec.values["weight_sqnr_db"] > 20  # 6-bit weights: ~6 dB per bit
        assert rec.values["calibration_clips"] is False  # minmax never clips its own data
        assert node.attrs["rounding"] == "floor"
    assert g.nodes[0].attrs.get("rounding") is None  # functional: the float graph is untouched
    exact.run(q, random_input((6,), 9, 4))  # the golden model accepts the result


# -- overrides and calibration methods ----------------------------------------------------------------
def unnamed_mlp() -> Graph:
    """Two Gemm layers: the first has no ONNX name (IR name 'gemm_0'), both named the same otherwise."""
    rng = np.random.default_rng(9)
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "b0"], ["h"], transB=1),  # unnamed
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("Gemm", ["r", "W1", "b1"], ["y"], name="/head/Gemm", transB=1),
    ]
    inits = {
        "W0": rng.normal(size=(5, 6)),
        "b0": rng.normal(size=5),
        "W1": rng.normal(size=(3, 5)),
        "b1": rng.normal(size=3),
    }
    return canonical(make_model(nodes, {"x": ["N", 6]}, {"y": ["N", 3]}, inits))


def test_per_layer_override_by_ir_name_and_by_onnx_name() -> None:
    g = unnamed_mlp()
    assert [(n.name, n.onnx_name) for n in g.nodes] == [("gemm_0", ""), ("/head/Gemm", "/head/Gemm")]
    layers = {"gemm_0": LayerConfig(weight_bits=3, act_bits=5), "/head/Gemm": LayerConfig(weight_bits=4)}
    q = quantize_fixed(g, random_input((6,), 10, 30), quant_config(layers=layers)).graph
    fc0, fc1 = q.nodes
    assert (fmt(q, fc0.inputs[1]).bits, fmt(q, fc0.outputs[0]).bits) == (3, 5)
    assert (fmt(q, fc1.inputs[1]).bits, fmt(q, fc1.outputs[0]).bits) == (4, 8)  # act_bits falls back to default


def test_override_by_onnx_name_when_the_ir_name_differs() -> None:
    """Duplicate ONNX names: the IR renames the second node; the ONNX name still reaches both."""
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Gemm", ["x", "W0"], ["h"], name="dense", transB=1),
        helper.make_node("Gemm", ["h", "W1"], ["y"], name="dense", transB=1),
    ]
    g = canonical(
        make_model(
            nodes, {"x": ["N", 4]}, {"y": ["N", 2]}, {"W0": rng.normal(size=(3, 4)), "W1": rng.normal(size=(2, 3))}
        )
    )
    assert [(n.name, n.onnx_name) for n in g.nodes] == [("dense", "dense"), ("dense_1", "dense")]
    x = random_input((4,), 11, 20)
    q = quantize_fixed(g, x, quant_config(layers={"dense": LayerConfig(weight_bits=3)})).graph
    assert [fmt(q, n.inputs[1]).bits for n in q.nodes] == [3, 3]
    both = {"dense": LayerConfig(weight_bits=3), "dense_1": LayerConfig(weight_bits=6)}
    q = quantize_fixed(g, x, quant_config(layers=both)).graph
    assert [fmt(q, n.inputs[1]).bits for n in q.nodes] == [3, 6]  # the IR name wins over the ONNX name


def test_percentile_ignores_an_outlier_minmax_does_not() -> None:
    g = two_layer()
    rng = np.random.default_rng(12)
    x = rng.uniform(-1.0, 1.0, size=(2000, 6))
    x[17, 3] = 1000.0
    mm = quantize_fixed(g, x, quant_config(calibration="minmax")).graph
    pc = quantize_fixed(g, x, quant_config(calibration="percentile", percentile=99.0)).graph
    assert fmt(mm, "x") == FixedPoint(8, brute_frac(1000.0, 8, True))
    bound = float(np.sort(np.abs(x).ravel())[int(0.99 * x.size)])  # ~0.99, the 99th percentile of |x|
    assert fmt(pc, "x") == FixedPoint(8, brute_frac(bound, 8, True))
    assert fmt(pc, "x").frac > fmt(mm, "x").frac + 8


def mirror(act: str) -> Graph:
    """y = act([x, -x]) for a scalar x: an outlier in x is an outlier at both ends of y."""
    nodes = [helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=1)]
    if act == "relu":
        nodes = [
            helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
            helper.make_node("Relu", ["h"], ["y"], name="act"),
        ]
    return canonical(make_model(nodes, {"x": ["N", 1]}, {"y": ["N", 2]}, {"W": np.array([[1.0], [-1.0]])}))


def outlier_data() -> np.ndarray:
    x = np.random.default_rng(13).uniform(-1.0, 1.0, size=(1000, 1))
    x[500, 0] = 1000.0
    return x


def test_percentile_records_clipping_of_a_signed_layer() -> None:
    x = outlier_data()
    clipped = quantize_fixed(mirror("none"), x, quant_config(calibration="percentile", percentile=99.0))
    assert clipped.records[0].values["calibration_clips"] is True
    full = quantize_fixed(mirror("none"), x, quant_config(calibration="minmax"))
    assert full.records[0].values["calibration_clips"] is False


def test_percentile_records_clipping_of_a_relu_layer() -> None:
    res = quantize_fixed(mirror("relu"), outlier_data(), quant_config(calibration="percentile", percentile=99.0))
    assert res.graph.value("y").type.format.signed is False
    assert res.records[0].values["calibration_clips"] is True


def test_w8a8_accuracy_on_the_bundled_model(lenet_model, mnist_test, mnist_calib) -> None:
    x, y = mnist_test
    float_acc = float(np.mean(run_ort(LENET_ONNX, x)[0].argmax(axis=1) == y))
    q = quantize_fixed(canonical(lenet_model), mnist_calib, quant_config()).graph
    dense = [n for n in q.nodes if n.op == "Dense"]
    assert len(dense) == 3
    assert all(fmt(q, n.inputs[1]).bits == 8 and fmt(q, n.outputs[0]).bits == 8 for n in dense)
    assert fmt(q, "input") == FixedPoint(8, 7, signed=False)  # pixels in [0, 1]: 255 codes of 1/128 hold 1.0
    codes = exact.run(q, x)["logits"]
    q_acc = float(np.mean(codes.argmax(axis=1) == y))
    assert abs(q_acc - float_acc) <= 0.005, (q_acc, float_acc)


# -- refusals -----------------------------------------------------------------------------------
def test_unsupported_op_after_canonicalization() -> None:
    """A Mul of two activations survives canonicalization and has no fixed-point kernel."""
    rng = np.random.default_rng(14)
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
        helper.make_node("Mul", ["h", "x"], ["y"], name="/block/residual"),
    ]
    g = canonical(make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 4]}, {"W": rng.normal(size=(4, 4))}))
    with pytest.raises(UnsupportedOpError, match=r"node '/block/residual' \(ONNX '/block/residual', Mul\).*Mul"):
        quantize_fixed(g, random_input((4,), 14, 10), quant_config())


@pytest.mark.parametrize("op", ["Mul", "Div", "Add", "Sub"])
@pytest.mark.parametrize("const_first", [False, True])
def test_arithmetic_with_a_constant_becomes_affine(op: str, const_first: bool) -> None:
    """x op c (per-channel c, e.g. input normalization) quantizes to y = requant(x*m + a)."""
    if op == "Div" and const_first:
        pytest.skip("c / x is not affine")
    rng = np.random.default_rng(15)
    c = rng.uniform(0.5, 2.0, 4)
    ins = ["c", "x"] if const_first else ["x", "c"]
    nodes = [helper.make_node(op, ins, ["y"], name="norm")]
    g = canonical(make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 4]}, {"c": c}))
    x = random_input((4,), 15, 64)
    q = quantize_fixed(g, x, quant_config(act_bits=12)).graph
    assert [n.op for n in q.nodes] == ["Affine"]
    ref = reference.run(g, x)[g.outputs[0]]
    out_fmt = fmt(q, q.outputs[0])
    got = out_fmt.to_float(exact.run(q, x)[q.outputs[0]])
    # input rounding (half an input step, scaled by |m| <= 2) + scale rounding + output rounding
    in_step = fmt(q, q.inputs[0]).step
    assert np.abs(got - ref).max() <= 2 * in_step + out_fmt.step + 1e-3 * np.abs(ref).max()


@pytest.mark.parametrize("shape", [(3,), (3, 4, 4)])
def test_standalone_batchnorm_becomes_a_per_channel_affine(shape: tuple[int, ...]) -> None:
    """A BatchNormalization no Conv/Gemm absorbs (here after a ReLU) quantizes to a per-channel Affine
    that follows the float BatchNorm, for vectors and for images (channels on axis 1), and lowers."""
    from hwgen.hw.lower import schedule_graph

    rng = np.random.default_rng(21)
    c = shape[0]
    params = {
        "gamma": rng.uniform(0.5, 2.0, c),
        "beta": rng.normal(size=c),
        "mean": rng.normal(size=c),
        "var": rng.uniform(0.2, 3.0, c),
    }
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="act"),
        helper.make_node("BatchNormalization", ["r", "gamma", "beta", "mean", "var"], ["y"], name="bn", epsilon=1e-3),
    ]
    g = canonical(make_model(nodes, {"x": ["N", *shape]}, {"y": ["N", *shape]}, params))
    x = random_input(shape, 21, 64)
    q = quantize_fixed(g, x, quant_config(act_bits=12)).graph
    assert [n.op for n in q.nodes][-1] == "Affine"
    ref = reference.run(g, x)[g.outputs[0]]
    out_fmt = fmt(q, q.outputs[0])
    got = out_fmt.to_float(exact.run(q, x)[q.outputs[0]])
    in_step = fmt(q, q.inputs[0]).step
    m_max = float((params["gamma"] / np.sqrt(params["var"] + 1e-3)).max())
    assert np.abs(got - ref).max() <= m_max * in_step + out_fmt.step + 1e-3 * np.abs(ref).max()
    schedule_graph(q, quant_config(act_bits=12))  # the per-channel Affine has a hardware engine


def test_div_of_a_constant_by_an_activation_is_unsupported() -> None:
    nodes = [helper.make_node("Div", ["s", "x"], ["y"], name="inv")]
    g = canonical(make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 4]}, {"s": np.array(2.0)}))
    with pytest.raises(UnsupportedOpError, match=r"only division of an activation"):
        quantize_fixed(g, random_input((4,), 15, 10), quant_config())
