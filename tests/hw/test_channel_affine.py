"""hwgen.hw.channel_affine: stream layout of the constants, widths, lowering; C simulation bit-exact (gxx).

The RTL engine: rtl_tests/test_channel_affine_rtl.py.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "rtl_tests"))  # the shared affine designs
from affine_cases import CASES, vectors

from hwgen.config import config_from_dict
from hwgen.frontend import import_onnx
from hwgen.hw import channel_affine as ca
from hwgen.hw.lower import schedule_graph
from hwgen.hw.plan import ChannelAffinePlan, IntType, Requant
from hwgen.numerics import Rounding
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import exact


def test_stream_order_and_period() -> None:
    m = np.arange(3).reshape(3, 1, 1) * np.ones((3, 2, 4))  # per channel of a [3, 2, 4] image
    seq = ca.stream_order(m, (3, 2, 4), None)
    assert seq.tolist() == [0, 1, 2] * 8 and ca.period_of(seq) == 3
    perm = np.array([2, 0, 1])
    assert ca.stream_order(np.array([5, 6, 7]), (3,), perm).tolist() == [7, 5, 6]
    assert ca.period_of(np.array([1, 2, 1, 3])) == 4 and ca.period_of(np.full(6, 9)) == 1


def test_accumulator_holds_every_product() -> None:
    s8, s16 = IntType(8, True), IntType(16, True)
    p = ca.plan_channel_affine(
        "a", "src", scales=np.array([-32768, 5]), offsets=np.array([1000, -7]), inp=s8, m=s16, out=s8,
        requant=Requant(8, Rounding.HALF_EVEN, -128, 127),
    )  # fmt: skip
    assert p.period == 2 and p.acc.lo <= -128 * 5 - 7 and p.acc.hi >= -128 * -32768 + 1000
    assert p.acc.bits == 24  # 2**22 + 1000 < 2**23: 23 magnitude bits and a sign
    assert (p.latency, p.ii) == (2 - 1 + ca.AFFINE_STAGES, 2)


def _per_channel_graph():
    """x [N, 3, 4, 5] -> MaxPool 2x2 -> Mul by a per-channel constant -> Add a per-channel constant."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(1, 0.5, (1, 3, 1, 1)).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.normal(0, 0.5, (3, 1, 1)).astype(np.float32), "shift"),
    ]
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Mul", ["p", "scale"], ["s"], name="bn_scale"),
        helper.make_node("Add", ["s", "shift"], ["y"], name="bn_shift"),
    ]
    graph = helper.make_graph(
        nodes, "aff", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 2, 2])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = canonicalize(import_onnx(model)).graph
    return quantize_fixed(g, rng.normal(0, 1, (32, 3, 4, 5)), config_from_dict({})).graph


def test_lowering_per_channel_affine_matches_the_golden_model() -> None:
    g = _per_channel_graph()
    s = schedule_graph(g, config_from_dict({}))
    plans = [p for p in s.layers if isinstance(p, ChannelAffinePlan)]
    assert [p.period for p in plans] == [3, 3] and all(p.count == 12 for p in plans)
    # the plan's arithmetic on the stream equals sim.exact on the node, for every input code
    node = g.node("bn_scale")
    fx = exact.fixed_format(g, node.inputs[0])
    x = np.arange(fx.min_code, fx.max_code + 1)
    n = len(x) // 12
    xs = x[: n * 12].reshape(n, 2, 2, 3)  # every input code, as channels-last samples
    chw = xs.transpose(0, 3, 1, 2)
    want = exact.affine_codes(g, node, chw).transpose(0, 2, 3, 1).reshape(len(xs), -1)
    p = plans[0]
    from hwgen.sim.integer_kernels import requantize

    acc = xs.reshape(len(xs), -1) * np.tile(p.scales, 4) + np.tile(p.offsets, 4)
    rq = p.requant
    assert np.array_equal(requantize(acc, rq.shift, rq.rounding, rq.lo, rq.hi), want)


@pytest.mark.gxx
@pytest.mark.parametrize("name", list(CASES))
def test_csim_bit_exact(name: str, tmp_path: Path) -> None:
    from hwgen.hw.csim import run_csim
    from hwgen.hw.hls_emit import emit_hls

    sched = ca.standalone_schedule(CASES[name].plan(), "atop")
    x, want = vectors(CASES[name])
    emit_hls(sched, tmp_path / "hls", inputs=x, expected=want)
    got = run_csim(tmp_path / "hls", x, tmp_path / "work").outputs
    bad = np.argwhere(got != want)
    assert bad.size == 0, (
        f"{name}: first mismatch at {bad[0]}: expected {want[tuple(bad[0])]}, got {got[tuple(bad[0])]}"
    )
