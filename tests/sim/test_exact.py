"""sim.exact against an independent model written with fractions.Fraction.

The oracle reads only the quantized graph's formats and float constants (exact dyadic values) and
does the arithmetic of the numerical contract in rationals: dot product plus bias, rounding to
the output grid by the named mode, activation as a clamp on codes, saturation to the output format.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from conftest import make_mlp_onnx, quant_config, random_input

import hwgen.sim.integer_kernels as ik
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.numerics import FixedPoint, Rounding
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import exact


def ref_round(q: Fraction, rounding: Rounding) -> int:
    fl = math.floor(q)
    rest = q - fl
    if rounding is Rounding.FLOOR or rest < Fraction(1, 2):
        return fl
    if rest > Fraction(1, 2) or rounding is Rounding.HALF_UP:
        return fl + 1
    return fl + (fl % 2)  # tie, HALF_EVEN


def fmt(g: Graph, v: str) -> FixedPoint:
    f = g.value(v).type.format
    assert isinstance(f, FixedPoint)
    return f


def golden(g: Graph, x: np.ndarray) -> dict[str, list]:
    """Codes of every value, computed in Fractions (nested lists of Python ints, batch first)."""
    fin = fmt(g, g.inputs[0])
    in_round = Rounding(g.meta["input_rounding"])
    flat_in = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    env: dict[str, list[list[int]]] = {
        g.inputs[0]: [
            [
                min(max(ref_round(Fraction(float(v)) * Fraction(2) ** fin.frac, in_round), fin.min_code), fin.max_code)
                for v in row
            ]
            for row in flat_in
        ]
    }
    for node in g.nodes:
        xs = env[node.inputs[0]]
        if node.op in ("Flatten", "Reshape", "Identity"):
            env[node.outputs[0]] = xs  # flat C order is unchanged
            continue
        if node.op == "Relu":
            env[node.outputs[0]] = [[max(c, 0) for c in row] for row in xs]
            continue
        assert node.op == "Dense", node.op
        xf, wf, bf, of = (fmt(g, v) for v in (*node.inputs[:3], node.outputs[0]))
        w = [[Fraction(float(v)) for v in row] for row in g.const(node.inputs[1])]
        b = [Fraction(float(v)) for v in g.const(node.inputs[2])]
        # codes -> exact values, straight from the format definition value = code * 2**-frac
        assert all(v * Fraction(2) ** wf.frac == int(v * Fraction(2) ** wf.frac) for row in w for v in row)
        assert all(v * Fraction(2) ** bf.frac == int(v * Fraction(2) ** bf.frac) for v in b)
        lo, hi = of.min_code, of.max_code
        act = node.attrs["activation"]
        if act == "relu":
            lo = max(lo, 0)
        elif act == "clip":
            if math.isfinite(node.attrs["clip_lo"]):
                lo = max(lo, math.ceil(Fraction(node.attrs["clip_lo"]) * Fraction(2) ** of.frac))
            if math.isfinite(node.attrs["clip_hi"]):
                hi = min(hi, math.floor(Fraction(node.attrs["clip_hi"]) * Fraction(2) ** of.frac))
        rounding = Rounding(node.attrs["rounding"])
        out = []
        for row in xs:
            xv = [Fraction(c) * Fraction(2) ** -xf.frac for c in row]
            ys = [
                sum((a * wv for a, wv in zip(xv, wrow, strict=True)), Fraction(0)) + bv
                for wrow, bv in zip(w, b, strict=True)
            ]
            out.append([min(max(ref_round(yv * Fraction(2) ** of.frac, rounding), lo), hi) for yv in ys])
        env[node.outputs[0]] = out
    return env


def quantized(layers: list[int], seed: int, *, act: str, rounding: str, bits: tuple[int, int, int]) -> Graph:
    g = canonicalize(import_onnx(make_mlp_onnx(layers, seed, act=act))).graph
    calib = random_input((layers[0],), seed + 100, batch=64)
    wb, ab, ib = bits
    return quantize_fixed(g, calib, quant_config(weight_bits=wb, act_bits=ab, input_bits=ib, rounding=rounding)).graph


CASES = [
    (seed, act, rounding)
    for seed in range(4)
    for act in ("relu", "clip", "none")
    for rounding in ("floor", "half_up", "half_even")
]


@pytest.mark.parametrize(("seed", "act", "rounding"), CASES)
def test_exact_matches_fraction_model(seed: int, act: str, rounding: str) -> None:
    rng = np.random.default_rng(seed)
    layers = [int(v) for v in rng.integers(1, 9, 3)]
    bits = (int(rng.integers(2, 9)), int(rng.integers(2, 13)), int(rng.integers(2, 11)))
    g = quantized(layers, seed, act=act, rounding=rounding, bits=bits)
    x = random_input((layers[0],), seed, batch=24) * 1.5  # some inputs beyond the calibrated range: saturation
    got = exact.run_codes(g, exact.encode_input(g, x), keep=True)
    want = golden(g, x)
    for name, codes in want.items():
        assert np.asarray(got[name]).reshape(len(x), -1).tolist() == codes, name
    out = exact.run(g, x)[g.outputs[0]]
    assert out.dtype == np.int64 and out.shape == (len(x), layers[-1])


@pytest.mark.parametrize("rounding", ["floor", "half_up", "half_even"])
def test_ties_are_resolved_by_the_layer_rounding(rounding: str) -> None:
    """y = [0.5 x, -0.5 x] on the input's own grid: every odd input code is an exact tie."""
    g = quantized([1, 2], 0, act="none", rounding=rounding, bits=(4, 8, 8))
    node = g.nodes[0]
    xf = fmt(g, "x")
    set_value(g, node.inputs[1], FixedPoint(4, 1), np.array([[0.5], [-0.5]]))
    set_value(g, node.inputs[2], FixedPoint(2, xf.frac + 1), np.zeros(2))
    set_value(g, node.outputs[0], FixedPoint(8, xf.frac), None)
    codes = np.arange(-9, 10, dtype=np.int64)[:, None]
    got = exact.run_codes(g, codes)[node.outputs[0]]
    for c, pair in zip(codes[:, 0].tolist(), got.tolist(), strict=True):
        assert pair == [ref_round(Fraction(c, 2), Rounding(rounding)), ref_round(Fraction(-c, 2), Rounding(rounding))]
    odd = got[codes[:, 0] % 2 == 1, 0]
    if rounding == "half_even":
        assert np.all(odd % 2 == 0)


def set_value(g: Graph, name: str, f: FixedPoint, const: np.ndarray | None) -> None:
    from hwgen.ir.graph import TensorType, Value

    v = g.values[name]
    g.values[name] = Value(name, TensorType(v.type.shape, f), v.const if const is None else const)


@pytest.mark.parametrize(("seed", "act", "rounding"), CASES[::2])
def test_each_layer_within_one_lsb_of_float(seed: int, act: str, rounding: str) -> None:
    """Layer by layer: the decoded output is within one output LSB of the float layer (saturated)."""
    g = quantized([12, 9, 5], seed, act=act, rounding=rounding, bits=(6, 8, 8))
    x = random_input((12,), seed + 7, batch=50)
    env = exact.run_codes(g, exact.encode_input(g, x), keep=True)
    for node in g.nodes:
        xf, of = fmt(g, node.inputs[0]), fmt(g, node.outputs[0])
        xin = xf.to_float(env[node.inputs[0]])
        y = xin @ g.const(node.inputs[1]).T + g.const(node.inputs[2])
        if node.attrs["activation"] == "relu":
            y = np.maximum(y, 0)
        elif node.attrs["activation"] == "clip":
            y = np.clip(y, node.attrs["clip_lo"], node.attrs["clip_hi"])
        y = np.clip(y, of.min_value, of.max_value)
        err = np.abs(of.to_float(env[node.outputs[0]]) - y) / of.step
        nearest = rounding != "floor" and node.attrs["activation"] != "clip"
        assert err.max() <= (0.5 if nearest else 1.0) + 1e-9, (node.name, err.max())


def test_decode_outputs_is_exact() -> None:
    g = quantized([5, 4, 3], 1, act="relu", rounding="half_even", bits=(8, 8, 8))
    codes = exact.run(g, random_input((5,), 1, 10))
    dec = exact.decode_outputs(g, codes)
    f = fmt(g, "y")
    for a, c in zip(dec["y"].ravel(), codes["y"].ravel(), strict=True):
        assert Fraction(float(a)) == Fraction(int(c)) * Fraction(2) ** -f.frac


# -- int64 vs Python ints -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_object_path_equals_int64_path(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    g = quantized([10, 8, 4], seed, act="relu", rounding="half_even", bits=(8, 8, 8))
    x = random_input((10,), seed, 30)
    fast = exact.run(g, x)
    monkeypatch.setattr(ik, "_INT64_SAFE_BITS", 0)  # every product now goes through Python ints
    slow = exact.run(g, x)
    for k in fast:
        assert fast[k].tolist() == slow[k].tolist()


def test_wide_codes_at_fan_in_1000_use_exact_integers() -> None:
    """30-bit weights and inputs at fan-in 1000: sums near 2**68 would wrap in int64."""
    g = quantized([1000, 3], 5, act="none", rounding="half_even", bits=(30, 30, 30))
    node = g.nodes[0]
    assert fmt(g, node.inputs[1]).bits == 30 and fmt(g, "x").bits == 30
    x = random_input((1000,), 5, batch=3)
    x[0] = np.sign(g.const(node.inputs[1])[0]) * 1e6  # saturating inputs aligned with row 0: the largest sum
    codes = exact.encode_input(g, x)
    w, b = exact.dense_codes(g, node)
    acc0 = dot(codes[0], w[0]) + int(b[0])
    assert abs(acc0) > 2**63  # int64 could not hold this accumulator
    got = exact.run_codes(g, codes)["y"]
    assert got.tolist() == golden(g, x)["y"]


def dot(a: np.ndarray, b: np.ndarray) -> int:
    return sum(int(p) * int(q) for p, q in zip(a, b, strict=True))


def clamp(acc: int, shift: int, rounding: Rounding, bound: int = 2**40) -> int:
    return min(max(ref_round(Fraction(acc, 2**shift), rounding), -bound), bound)


@pytest.mark.parametrize("rounding", list(Rounding))
def test_dense_kernel_int64_and_object_inputs_agree(rounding: Rounding) -> None:
    rng = np.random.default_rng(3)
    k = 1000
    for lo_bits in (8, 20, 30):
        x = rng.integers(-(2 ** (lo_bits - 1)), 2 ** (lo_bits - 1), size=(4, k))
        w = rng.integers(-(2 ** (lo_bits - 1)), 2 ** (lo_bits - 1), size=(3, k))
        x[0] = 2 ** (lo_bits - 1) - 1
        w[0] = 2 ** (lo_bits - 1) - 1  # the all-max row: the widest possible sum
        b = rng.integers(-1000, 1000, size=3)
        shift = 2 * lo_bits - 4
        kw = {"shift": shift, "rounding": rounding, "lo": -(2**40), "hi": 2**40}
        a = ik.dense(x, w, b, **kw)
        o = ik.dense(x.astype(object), w.astype(object), b.astype(object), **kw)
        assert a.tolist() == o.tolist()
        want = [[clamp(dot(row, wr) + int(bb), shift, rounding) for wr, bb in zip(w, b, strict=True)] for row in x]
        assert a.tolist() == want


def test_matmul_exact_chooses_int64_only_when_safe() -> None:
    small = np.full((2, 4), 100, dtype=np.int64)
    assert ik.matmul_exact(small, small).dtype == np.int64
    wide = np.full((2, 1000), 2**29, dtype=np.int64)
    r = ik.matmul_exact(wide, wide)
    assert r.dtype == object and r[0, 0] == 1000 * 2**58


def test_exact_refuses_float_graphs_and_unknown_ops() -> None:
    from hwgen.errors import GraphError

    g = canonicalize(import_onnx(make_mlp_onnx([3, 2], 0))).graph
    with pytest.raises(GraphError, match="not fixed point: quantize the graph first"):
        exact.run(g, random_input((3,), 0, 2))
