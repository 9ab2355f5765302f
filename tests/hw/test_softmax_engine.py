"""hwgen.hw.softmax without tools: plan widths, the cycle model, layouts, lowering and refusals.

Bit-exactness of the engine itself: tests/hw/test_softmax_hls.py (C sim) and
rtl_tests/test_softmax_rtl.py (RTL, which also holds the cycle model to the measured cycles).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper

from hwgen.config import config_from_dict
from hwgen.errors import ScheduleError, UnsupportedOpError
from hwgen.frontend import import_onnx
from hwgen.hw import softmax as sm
from hwgen.hw.engine_timing import engine_beats, engine_timing
from hwgen.hw.lower import schedule_graph
from hwgen.hw.plan import IntType, SoftmaxPlan
from hwgen.hw.resources import engine_resources
from hwgen.ir.graph import Node
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import exact
from hwgen.sim.integer_kernels import softmax_exp_table

S8, U8 = IntType(8, True), IntType(8, False)


def plan(length: int = 10, vectors: int = 1, in_frac: int = 4, **kw: object) -> SoftmaxPlan:
    args = {"inp": S8, "out": U8, "in_frac": in_frac, "out_frac": 7, "hi": 255, "length": length, "vectors": vectors}
    return sm.plan_softmax("sm", "/sm/Softmax", **{**args, **kw})


def test_exp_table_cut_after_last_nonzero() -> None:
    full = softmax_exp_table(0, 256)
    t = sm.exp_table(0, 8)
    assert np.array_equal(t, full[: len(t)]) and t.min() > 0
    assert not full[len(t) :].any() and len(t) < 256  # exp(-d) * 2**16 < 1/2 for d >= 12
    assert len(sm.exp_table(6, 8)) == 256  # a fine input scale keeps every entry


@pytest.mark.parametrize(("length", "bits"), [(1, 17), (2, 18), (10, 20), (sm.MAX_LENGTH, 33)])
def test_sum_type_holds_length_times_first_entry(length: int, bits: int) -> None:
    p = plan(length)
    assert p.sum == IntType(bits, False)
    assert length * int(p.table[0]) < 1 << p.sum.bits  # S of equal elements: N * 2**16
    assert sm.remainder_bits(p) >= p.sum.bits + p.quotient_bits


def test_timing_model_one_vector() -> None:
    p = plan(10)  # QB = 8: 10 loads, 10 sums, 80 divider steps
    t = engine_timing(p)
    assert (t.latency, t.ii, t.first_out, t.tail) == (100, 100, 28, 91)
    assert (p.latency, p.ii) == (100, 100)


def test_beats_agree_with_timing() -> None:
    p = plan(6, vectors=3)
    t = engine_timing(p)
    free = engine_beats(p, [np.zeros(p.count, dtype=np.int64)])
    assert free[0] == t.first_out and free[-1] == t.latency == 3 * 6 * (8 + 2)
    assert np.all(np.diff(free) >= 1)
    # the last input beat held back: the outputs follow it by the tail
    late = np.zeros(p.count, dtype=np.int64)
    late[-1] = 10_000
    assert engine_beats(p, [late])[-1] == 10_000 + t.tail


def test_layouts() -> None:
    node = Node("sm", "Softmax", ["x"], ["y"], {"axis": 0, "legacy": False})
    assert sm.softmax_layout(node, (10,), "here") == (10, 1)
    assert sm.softmax_layout(node, (4, 3, 5), "here") == (4, 15)  # per pixel, over the channels
    legacy = Node("sm", "Softmax", ["x"], ["y"], {"axis": 0, "legacy": True})
    assert sm.softmax_layout(legacy, (4, 3, 5), "here") == (60, 1)  # the whole sample
    spatial = Node("sm", "Softmax", ["x"], ["y"], {"axis": 2, "legacy": False})
    with pytest.raises(UnsupportedOpError, match=r"node 'sm'.*axis 3.*channels \(axis 1\)"):
        sm.softmax_layout(spatial, (4, 3, 5), "node 'sm'")


def test_plan_refusals() -> None:
    with pytest.raises(ScheduleError, match=r"1\.\.65536"):
        plan(0)
    with pytest.raises(ScheduleError, match="at most 16-bit"):
        plan(4, inp=IntType(17, True))
    with pytest.raises(ScheduleError, match="clamp 300"):
        plan(4, hi=300)
    bad = SoftmaxPlan("sm", "s", 4, 1, S8, U8, np.array([65536]), 8, 255, IntType(18, False))
    with pytest.raises(ScheduleError, match="does not hold 4 x 65536"):
        sm.check_plan(bad)


def test_resources_count_buffer_and_table() -> None:
    r = engine_resources(plan(10))
    mems = {m.what: (m.depth, m.width) for m in r.memories}
    assert mems == {"vector buffer": (10, 8), "exp table": (189, 17)}


def _softmax_graph(shape: tuple[int, ...], axis: int, opset: int = 17):
    """x [N, *shape] -> Softmax(axis), imported, canonicalized and quantized (W8A8) on seeded data."""
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], name="head_softmax", axis=axis)],
        "sm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *shape])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = canonicalize(import_onnx(model)).graph
    calib = np.random.default_rng(0).normal(0, 2, (32, *shape))
    return quantize_fixed(g, calib, config_from_dict({})).graph


def test_lowering_a_vector_softmax() -> None:
    g = _softmax_graph((10,), -1)
    s = schedule_graph(g, config_from_dict({}))
    (p,) = s.layers
    fi, fo = exact.fixed_format(g, "x"), exact.fixed_format(g, "y")
    assert isinstance(p, SoftmaxPlan) and (p.length, p.vectors, p.hi) == (10, 1, fo.max_code)
    assert p.quotient_bits == fo.frac + 1 and np.array_equal(p.table, sm.exp_table(fi.frac, fi.bits))
    assert s.latency == p.latency == 10 * (fo.frac + 3)


def test_lowering_refuses_a_spatial_axis_naming_the_node() -> None:
    g = _softmax_graph((3, 4, 5), 3)
    with pytest.raises(UnsupportedOpError, match=r"head_softmax.*Softmax.*axis 3"):
        schedule_graph(g, config_from_dict({}))
