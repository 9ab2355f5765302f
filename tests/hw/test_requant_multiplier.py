"""Imported (QDQ) models with non-power-of-two scales in hardware: the multiplier + shift requant.

onnxruntime's static quantizer gives every layer float scales; hwgen's golden model requantizes
with an integer multiplier M0 and a shift per output channel (integer_kernels.requantize_scaled).
These tests check that the Schedule carries exactly that arithmetic (one shift per layer, the bias
as the offset, a product type that holds every acc * M0 + offset) and that the generated HLS
computes it bit for bit in C simulation, on an MLP and a CNN trained on sklearn's digits.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontend"))  # the QDQ model builders
from test_qdq import _Cnn, _export, _Mlp, _train, ort_qdq

from hwgen.config import config_from_dict
from hwgen.frontend import import_onnx
from hwgen.hw.lower import schedule_graph
from hwgen.hw.plan import ConvPlan, DensePlan, IntType, Requant
from hwgen.hw.schedule import unify_shift, with_product_type
from hwgen.ir.graph import Graph
from hwgen.numerics import Rounding
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import RequantArith, quantize_imported
from hwgen.sim import exact, integer_kernels

HAVE_GXX = shutil.which(os.environ.get("CXX", "g++")) is not None and importlib.util.find_spec("hls4ml") is not None


# -- the models: onnxruntime QDQ of an MLP and a CNN trained briefly on digits ---------------------
@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)


@pytest.fixture(scope="module")
def qdq_models(tmp_path_factory: pytest.TempPathFactory, digits) -> dict[str, Path]:
    x, y = digits
    d = tmp_path_factory.mktemp("qdq")
    out = {}
    for kind, cls in (("mlp", _Mlp), ("cnn", _Cnn)):
        f = _export(_train(cls(), x[:600], y[:600], epochs=4), d / f"{kind}.onnx")
        for pc in (False, True):
            name = f"{kind}_{'per_channel' if pc else 'per_tensor'}"
            out[name] = ort_qdq(f, d / f"{name}.onnx", x[:128], pc, "uint8")
    return out


def imported(path: Path, arith: RequantArith = RequantArith.INTEGER) -> Graph:
    return quantize_imported(canonicalize(import_onnx(path)).graph, requant_arith=arith).graph


def mac_plans(sched) -> list[DensePlan | ConvPlan]:
    return [p for p in sched.layers if isinstance(p, DensePlan | ConvPlan)]


# -- plan arithmetic ------------------------------------------------------------------------------
def test_unify_shift_keeps_every_result() -> None:
    """One shift per layer (M0 and offset scaled up) rounds every accumulator as per-channel shifts do."""
    rng = np.random.default_rng(0)
    ms = (12_345_678, 9_000_001, 1, 16_777_215)
    ns = (30, 27, 0, 35)
    offs = (-5_000, 77, 3, 1 << 34)
    acc = rng.integers(-(1 << 20), 1 << 20, size=(2000, 4))
    acc[:4] = [[-(1 << 20)] * 4, [(1 << 20) - 1] * 4, [0] * 4, [1] * 4]
    for mode in Rounding:
        want = integer_kernels.requantize_scaled(acc, np.array(ms), np.array(ns), mode, -128, 127, np.array(offs))
        rq = unify_shift(ms, ns, offs, Requant(0, mode, -128, 127))
        assert rq.shift == 35 and rq.multiplier[2] == 1 << 35 and rq.offset[0] == -5_000 << 5
        got = integer_kernels.requantize_scaled(
            acc, np.array(rq.multiplier), rq.shift, mode, -128, 127, np.array(rq.offset, dtype=object)
        )
        np.testing.assert_array_equal(got, want)


def test_product_type_is_tight() -> None:
    rq = with_product_type(Requant(20, Rounding.HALF_EVEN, 0, 255, (1 << 23, 3), (-(1 << 10), 5)), -1000, 999)
    ends = [-1000 * (1 << 23) - (1 << 10), 999 * (1 << 23) - (1 << 10), -3000 + 5, 2997 + 5]
    t = rq.prod_type
    assert t is not None and t.signed and all(t.lo <= e <= t.hi for e in ends)
    smaller = IntType(t.bits - 1, True)
    assert not all(smaller.lo <= e <= smaller.hi for e in ends)


def test_fixed_point_requant_unchanged() -> None:
    """Designs without imported scales keep their Requant (and so their hashes and files)."""
    rq = Requant(3, Rounding.FLOOR, -8, 7)
    assert not rq.scaled and rq.prod_type is None
    assert repr(rq) == "Requant(shift=3, rounding=<Rounding.FLOOR: 'floor'>, lo=-8, hi=7)"


# -- lowering -------------------------------------------------------------------------------------
def _plan_outputs(plan: DensePlan, x: np.ndarray) -> np.ndarray:
    """What the plan's numbers compute: acc = x @ W.T + B, then acc * M0 + offset shift-rounded."""
    acc = x.astype(object) @ plan.weights.T.astype(object) + plan.biases.astype(object)
    rq = plan.requant
    m, off = np.array(rq.multiplier, dtype=object), np.array(rq.offset, dtype=object)
    return integer_kernels.requantize_scaled(acc, m, rq.shift, rq.rounding, rq.lo, rq.hi, off)


@pytest.mark.parametrize("name", ["mlp_per_tensor", "mlp_per_channel"])
def test_mlp_plan_computes_the_golden_model(qdq_models, digits, name) -> None:
    """The dense plans' multiplier, shift and offset reproduce sim.exact layer by layer."""
    g = imported(qdq_models[name])
    sched = schedule_graph(g, config_from_dict({}))
    plans = mac_plans(sched)
    assert len(plans) == 2 and all(p.requant.scaled for p in plans)
    for p in plans:
        assert len(p.requant.multiplier) == p.out_features and not p.biases.any()  # bias moved to the offset
        assert p.requant.prod_type is not None and p.requant.prod_type.bits <= 64
    x = exact.encode_input(g, digits[0][1200:1400])
    h = x.reshape(len(x), -1)
    for p in plans:
        h = _plan_outputs(p, h)
    np.testing.assert_array_equal(h, exact.run_codes(g, x)[g.outputs[0]])


@pytest.mark.parametrize("name", ["mlp_per_tensor", "mlp_per_channel"])
def test_float32_plan_computes_the_golden_model(qdq_models, digits, name) -> None:
    """requant_arith='float32': (M, n) per channel as the golden model has them, the bias left in the
    accumulator, and the plans' integer algorithm equal to sim.exact's float32 arithmetic."""
    g = imported(qdq_models[name], RequantArith.FLOAT32)
    plans = mac_plans(schedule_graph(g, config_from_dict({})))
    assert len(plans) == 2
    x = exact.encode_input(g, digits[0][1200:1400])
    h = x.reshape(len(x), -1)
    for p, node in zip(plans, [n for n in g.nodes if n.op == "Dense"], strict=True):
        rq, sr = p.requant, exact.scaled_requant(g, node)
        assert rq.float32 and "arith='float32'" in repr(rq) and rq.shifts == sr.shift and rq.multiplier == sr.multiplier
        assert p.biases.any() and not any(rq.offset)
        acc = h @ p.weights.T + p.biases
        h = integer_kernels.requantize_float32(acc, np.array(rq.multiplier), np.array(rq.shifts), rq.lo, rq.hi)
        by_int = [[integer_kernels.requantize_float32_integer(a, m, n, rq.lo, rq.hi) for a, m, n in
                   zip(row, rq.multiplier, rq.shifts, strict=True)] for row in acc[:20]]  # fmt: skip
        np.testing.assert_array_equal(by_int, h[:20])
    np.testing.assert_array_equal(h, exact.run_codes(g, x)[g.outputs[0]])


# -- HLS C simulation -----------------------------------------------------------------------------
def _vectors(g: Graph, real: np.ndarray, n_random: int = 16) -> np.ndarray:
    """Input codes [N, count] (stream order; channels = 1): extremes of the imported range, random
    codes, and real digits."""
    fmt = exact.value_format(g, g.inputs[0])
    shape = g.value(g.inputs[0]).type.shape
    count = int(np.prod(shape))
    rng = np.random.default_rng(1)
    ext = np.stack([np.full(count, fmt.lo), np.full(count, fmt.hi), np.zeros(count, np.int64)])
    alt = np.where(np.arange(count) % 2, fmt.hi, fmt.lo)[None]
    rand = rng.integers(fmt.lo, fmt.hi + 1, size=(n_random, count))
    data = exact.encode_input(g, real).reshape(len(real), -1)
    return np.concatenate([ext, alt, rand, data]).astype(np.int64)


@pytest.mark.gxx
@pytest.mark.skipif(not HAVE_GXX, reason="needs g++ and hls4ml's ap_types")
@pytest.mark.parametrize(
    ("name", "arith"),
    [
        ("mlp_per_tensor", RequantArith.INTEGER),
        ("mlp_per_channel", RequantArith.INTEGER),
        ("cnn_per_tensor", RequantArith.INTEGER),
        ("cnn_per_channel", RequantArith.INTEGER),
        ("mlp_per_channel", RequantArith.FLOAT32),
        ("cnn_per_tensor", RequantArith.FLOAT32),
    ],
)
def test_hls_csim_bit_exact(qdq_models, digits, tmp_path, name, arith) -> None:
    from hwgen.hw.csim import run_csim
    from hwgen.hw.hls_emit import emit_hls

    g = imported(qdq_models[name], arith)
    sched = schedule_graph(g, config_from_dict({}))
    plans = mac_plans(sched)
    assert plans and all(p.requant.scaled for p in plans), [type(p).__name__ for p in sched.layers]
    if name.startswith("cnn"):
        assert any(isinstance(p, ConvPlan) for p in plans)
    x = _vectors(g, digits[0][1200:1208])
    shape = g.value(g.inputs[0]).type.shape
    expected = exact.run_codes(g, x.reshape(len(x), *shape))[g.outputs[0]].reshape(len(x), -1)
    emit_hls(sched, tmp_path / "hls", inputs=x, expected=expected)
    header = (tmp_path / "hls" / f"{plans[0].name}.h").read_text()
    assert "RQ_M[nf][pe]" in header
    got = run_csim(tmp_path / "hls", x, work_dir=tmp_path / "work").outputs
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(expected, axis=0)) > 4  # the vectors exercise the layers


@pytest.mark.parametrize("arith", [RequantArith.INTEGER, RequantArith.FLOAT32])
def test_rtl_emits_multiplier_requant(qdq_models, tmp_path, arith) -> None:
    """Both requant arithmetics have RTL (simulated in rtl_tests/test_scaled_requant_rtl.py): the
    per-channel constants are in the Verilog, and a float32 layer rounds in integers only."""
    from hwgen.hw.rtl_emit import emit_rtl

    sched = schedule_graph(imported(qdq_models["mlp_per_channel"], arith), config_from_dict({}))
    emit_rtl(sched, tmp_path / "rtl")
    text = "".join(f.read_text() for f in sorted((tmp_path / "rtl").glob("*.sv")))
    assert text.count("localparam logic [NF*PE*RQ_M_W-1:0] RQ_M") == len(mac_plans(sched))  # once per engine
    assert ("rqf_pr" in text) == (arith is RequantArith.FLOAT32)
