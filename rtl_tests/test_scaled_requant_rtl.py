"""The dense and conv engines' multiplier requantization (imported QDQ scales) in RTL simulation.

Worst cases on hand-built dense layers whose accumulator the input sets directly (weight row
[1, 0]): multipliers with a full 24-bit mantissa, per-channel shifts unified to one, ties at the
rounding step, offsets of both signs, saturation at both ends, every rounding mode, several tiles
per fold. Folds finishing on consecutive cycles (one tile per fold, dense and 1x1 conv) with
back-pressure: the per-channel constants change every cycle there. onnxruntime's float32
requantization in integer logic (rtl_tests/float32_requant_cases.py). Then an onnxruntime QDQ CNN
(per channel) end to end. Expected codes come from hwgen.sim.integer_kernels / sim.exact.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hwgen.hw.plan import DensePlan, IntType, Requant, Schedule, StreamPort
from hwgen.hw.rtl_emit import emit_rtl
from hwgen.hw.rtl_sim import lint_verilator, run_rtl
from hwgen.hw.schedule import chain_schedule, plan_dense, unify_shift
from hwgen.numerics import Rounding
from hwgen.sim import integer_kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared float32 cases
from float32_requant_cases import f32_expected, f32_plan, f32_vectors

pytestmark = pytest.mark.rtl

S16, S8, U8 = IntType(16, True), IntType(8, True), IntType(8, False)

#: (M0, n, offset) per channel: ratio 0.75 (a tie whenever acc = 2 mod 4), a full mantissa, the
#: smallest normalized mantissa + 1 with a negative offset, 1.0 exactly (n = 0), a ratio > 1,
#: a ratio near 2**-7 with a positive offset, and two plain float32 ratios
CHANNELS = (
    (0xC00000, 24, 0),
    (0xFFFFFF, 30, 0),
    (0x800001, 26, -(1 << 25)),
    (1, 0, 0),
    (0xB504F3, 22, 3),
    (0x80000F, 31, 1 << 29),
    (0xA3D70A, 27, -7),
    (0x9D89D9, 29, 1 << 20),
)


def _plan(name: str, rounding: Rounding, pe: int, simd: int, out: IntType) -> DensePlan:
    """acc[c] = x0 + bias[c]: the input drives the accumulator directly, channel by channel."""
    ms, ns, offs = zip(*CHANNELS, strict=True)
    m = len(CHANNELS)
    k = 2 * simd
    w = np.zeros((m, k), dtype=np.int64)
    w[:, 0] = 1
    w[::2, 1] = -1  # even channels: acc = x0 - x1 + bias, so x1 widens the accumulator range
    b = np.array([0, 1, -1, 5, 0, -3, 2, 0], dtype=np.int64)
    lo, hi = (0, out.hi) if not out.signed else (out.lo, out.hi)
    rq = unify_shift(ms, ns, offs, Requant(0, rounding, lo, hi))
    return plan_dense(name, f"/{name}/Gemm", w, b, S16, out, rq, pe=pe, simd=simd)


def _design(top: str, p: DensePlan) -> Schedule:
    return chain_schedule(
        top,
        "scaled",
        [p],
        StreamPort("x", "input", p.inp, p.in_features, 0, (p.in_features,)),
        StreamPort("y", "output", p.out, p.out_features, 0, (p.out_features,)),
    )


def _vectors(k: int) -> np.ndarray:
    """Accumulators around 0 step by step (every tie of every channel), the input extremes, random."""
    rng = np.random.default_rng(7)
    x = np.zeros((0, k), dtype=np.int64)
    sweep = np.arange(-300, 301)
    x = np.concatenate([x, np.stack([sweep] + [np.zeros_like(sweep)] * (k - 1), axis=1)])
    ext = [S16.lo, S16.hi]
    corners = np.array([[a, c] + [0] * (k - 2) for a in ext for c in ext], dtype=np.int64)
    rand = rng.integers(S16.lo, S16.hi + 1, size=(200, k))
    return np.concatenate([x, corners, rand])


def _expected(p: DensePlan, x: np.ndarray) -> np.ndarray:
    acc = x @ p.weights.T + p.biases
    rq = p.requant
    m, off = np.array(rq.multiplier, dtype=np.int64), np.array(rq.offset, dtype=object)
    return integer_kernels.requantize_scaled(acc, m, rq.shift, rq.rounding, rq.lo, rq.hi, off)


@pytest.mark.parametrize(
    ("rounding", "pe", "simd", "out"),
    [
        (Rounding.HALF_EVEN, 2, 1, S8),  # SF = 2, NF = 4
        (Rounding.HALF_UP, 1, 2, U8),  # SF = 2, NF = 8 folds per vector
        (Rounding.FLOOR, 8, 2, S8),  # one fold per vector
    ],
    ids=["half_even_pe2", "half_up_pe1", "floor_pe8"],
)
def test_dense_scaled_requant_worst_cases(tmp_path: Path, rounding: Rounding, pe: int, simd: int, out) -> None:
    p = _plan("fc", rounding, pe, simd, out)
    assert p.requant.scaled and p.requant.shift == 31
    s = _design(f"sq_{rounding.value}", p)
    x = _vectors(p.in_features)
    want = _expected(p, x)
    # the vectors reach both clamp bounds and hit exact ties of the 0.75 channel
    assert (want == p.requant.lo).any() and (want == p.requant.hi).any()
    acc0 = x[:, 0] - x[:, 1] + p.biases[0]
    assert ((acc0 * 3) % 4 == 2).any()
    emit_rtl(s, tmp_path / "rtl")
    assert lint_verilator(tmp_path / "rtl", s.top) == []
    res = run_rtl(tmp_path / "rtl", s, x, work_dir=tmp_path / "work", backpressure="random", seed=3)
    np.testing.assert_array_equal(res.outputs, want)
    assert res.latency_cycles == s.latency


def test_qdq_cnn_per_channel_bit_exact(tmp_path: Path) -> None:
    """An onnxruntime QDQ CNN (per-channel weights) folded so both convs and the dense run several
    folds, against sim.exact on digits and extreme inputs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "frontend"))
    import torch
    from sklearn.datasets import load_digits
    from test_qdq import _Cnn, _export, _train, ort_qdq

    from hwgen.config import config_from_dict
    from hwgen.frontend import import_onnx
    from hwgen.hw.lower import schedule_graph
    from hwgen.hw.plan import ConvPlan
    from hwgen.passes.canonicalize import canonicalize
    from hwgen.passes.quantize import quantize_imported
    from hwgen.sim import exact

    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = load_digits()
    xs, ys = (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)
    f = _export(_train(_Cnn(), xs[:400], ys[:400], epochs=2), tmp_path / "cnn.onnx")
    q = ort_qdq(f, tmp_path / "cnn_qdq.onnx", xs[:64], True, "uint8")
    g = quantize_imported(canonicalize(import_onnx(q)).graph).graph
    sched = schedule_graph(g, config_from_dict({}))
    convs = [p for p in sched.layers if isinstance(p, ConvPlan)]
    assert convs and all(p.requant.scaled for p in convs)
    fmt = exact.value_format(g, g.inputs[0])
    shape = g.value(g.inputs[0]).type.shape
    count = int(np.prod(shape))
    ext = np.stack([np.full(count, fmt.lo), np.full(count, fmt.hi)])
    x = np.concatenate([ext, exact.encode_input(g, xs[1500:1512]).reshape(12, -1)]).astype(np.int64)
    want = exact.run_codes(g, x.reshape(len(x), *shape))[g.outputs[0]].reshape(len(x), -1)
    emit_rtl(sched, tmp_path / "rtl")
    res = run_rtl(tmp_path / "rtl", sched, x, work_dir=tmp_path / "work", backpressure="random", seed=5)
    np.testing.assert_array_equal(res.outputs, want)
    assert res.latency_cycles == sched.latency


# -- folds finishing on consecutive cycles (SF = 1: one tile per fold) -------------------------------
@pytest.mark.parametrize(("pe", "bp"), [(1, "random"), (2, "periodic")], ids=["pe1_random", "pe2_periodic"])
def test_dense_consecutive_folds(tmp_path: Path, pe: int, bp: str) -> None:
    """SIMD = in_features: every fold is one tile, so a fold finishes on every cycle and the
    per-channel constants must change every cycle (a pair read one fold late fails here)."""
    ms, ns, offs = zip(*CHANNELS, strict=True)
    w = np.array([[1, -1] if c % 2 else [1, 0] for c in range(len(CHANNELS))], dtype=np.int64)
    b = np.array([0, 1, -1, 5, 0, -3, 2, 0], dtype=np.int64)
    rq = unify_shift(ms, ns, offs, Requant(0, Rounding.HALF_EVEN, S8.lo, S8.hi))
    p = plan_dense("fc", "/fc/Gemm", w, b, S16, S8, rq, pe=pe, simd=2)
    assert p.sf == 1 and p.nf == len(CHANNELS) // pe
    s = _design(f"sq_consec_{pe}", p)
    x = _vectors(2)
    want = _expected(p, x)
    emit_rtl(s, tmp_path / "rtl")
    res = run_rtl(tmp_path / "rtl", s, x, work_dir=tmp_path / "work", backpressure=bp, seed=11)
    np.testing.assert_array_equal(res.outputs, want)
    assert res.latency_cycles == s.latency


def _qdq_conv1x1(path: Path, arith_bias: bool = True) -> Path:
    """x (u8, 4 channels, 3x3) -> Conv 1x1 4->6 (s8 weights per channel, int32 bias) -> u8 output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    n = helper.make_node
    sw = np.array([0.011, 0.023, 0.0071, 0.019, 0.0133, 0.0291], np.float32)
    sx = np.float32(0.0213)
    nodes = [
        n("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        n("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        n("DequantizeLinear", ["wq", "sw", "zw"], ["w"], axis=0),
        n("DequantizeLinear", ["bq", "sb"], ["b"], axis=0),
        n("Conv", ["xd", "w", "b"], ["h"]),
        n("QuantizeLinear", ["h", "sy", "zy"], ["hq"]),
        n("DequantizeLinear", ["hq", "sy", "zy"], ["y"]),
    ]
    inits = {
        "sx": np.array(sx, np.float32),
        "zx": np.array(128, np.uint8),
        "wq": rng.integers(-127, 128, (6, 4, 1, 1)).astype(np.int8),
        "sw": sw,
        "zw": np.zeros(6, np.int8),
        "bq": rng.integers(-3000, 3000, 6).astype(np.int32),
        "sb": (sx * sw).astype(np.float32),
        "sy": np.array(0.0419, np.float32),
        "zy": np.array(120, np.uint8),
    }
    g = helper.make_graph(
        nodes,
        "qdq_conv1x1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 3, 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("arith", ["integer", "float32"])
def test_conv_consecutive_folds(tmp_path: Path, arith: str) -> None:
    """A 1x1 conv with SIMD = input channels: one tile per fold (TF = 1), NF = 3 folds per pixel
    finishing on consecutive cycles, channel constants wrapping from pixel to pixel."""
    from hwgen.config import config_from_dict
    from hwgen.frontend import import_onnx
    from hwgen.hw.lower import schedule_graph
    from hwgen.hw.plan import ConvPlan
    from hwgen.passes.canonicalize import canonicalize
    from hwgen.passes.quantize import RequantArith, quantize_imported
    from hwgen.sim import exact

    model = _qdq_conv1x1(tmp_path / "c.onnx")
    g = quantize_imported(canonicalize(import_onnx(model)).graph, requant_arith=RequantArith(arith)).graph
    conv = next(n for n in g.nodes if n.op == "Conv")
    sched = schedule_graph(g, config_from_dict({"layers": {conv.name: {"reuse": 3}}}))
    (p,) = [q for q in sched.layers if isinstance(q, ConvPlan)]
    assert (p.pe, p.simd, p.cg, p.kernel, p.channels_out) == (2, 4, 4, (1, 1), 6)  # TF = 1, NF = 3
    assert p.requant.float32 == (arith == "float32")
    fmt = exact.value_format(g, g.inputs[0])
    shape = g.value(g.inputs[0]).type.shape
    rng = np.random.default_rng(4)
    x = rng.integers(fmt.lo, fmt.hi + 1, size=(40, int(np.prod(shape))))  # channels-last pixel streams
    x[:2] = [[fmt.lo], [fmt.hi]]
    c, h, w = shape[-3:]
    nchw = x.reshape(len(x), h, w, c).transpose(0, 3, 1, 2)
    want = exact.run_codes(g, nchw)[g.outputs[0]].transpose(0, 2, 3, 1).reshape(len(x), -1)
    emit_rtl(sched, tmp_path / "rtl")
    res = run_rtl(tmp_path / "rtl", sched, x, work_dir=tmp_path / "work", backpressure="random", seed=9)
    np.testing.assert_array_equal(res.outputs, want)
    assert res.latency_cycles == sched.latency


@pytest.mark.parametrize(
    ("pe", "simd", "out"), [(1, 1, S16), (2, 2, U8), (8, 1, S8)], ids=["pe1_sf2_s16", "pe2_sf2_u8", "pe8_s8"]
)
def test_dense_float32_requant_worst_cases(tmp_path: Path, pe: int, simd: int, out: IntType) -> None:
    """onnxruntime's float32 requantization in integer logic (golden vs RTL; C sim: tests/hw/test_scaled_requant.py)."""
    p = f32_plan(pe, simd, out)
    x = f32_vectors(p)
    want = f32_expected(p, x)
    s = _design(f"sq_f32_{pe}_{simd}", p)
    emit_rtl(s, tmp_path / "rtl")
    assert lint_verilator(tmp_path / "rtl", s.top) == []
    res = run_rtl(tmp_path / "rtl", s, x, work_dir=tmp_path / "work", backpressure="random", seed=13)
    np.testing.assert_array_equal(res.outputs, want)
    assert res.latency_cycles == s.latency
