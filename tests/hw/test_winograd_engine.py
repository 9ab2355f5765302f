"""hw.winograd: the plan's widths and tables, its refusals, the cycle model, the rendered engine.

Bit-exactness of the engine is checked by C simulation (test_winograd_hls.py) and RTL simulation
(rtl_tests/test_winograd_conv.py); here, the multiplier count of the Verilog (Yosys, marked yosys).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model, quant_config, random_input
from onnx import helper

from hwgen.errors import ScheduleError
from hwgen.frontend import import_onnx
from hwgen.hw import winograd as hw
from hwgen.hw.engine_timing import conv_timing
from hwgen.hw.plan import IntType, Requant
from hwgen.hw.schedule import mac_types, signed_bits_for
from hwgen.ir.graph import Graph
from hwgen.numerics import Rounding
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.passes.winograd import winograd

U8, S8 = IntType(8, False), IntType(8, True)


def quantized_conv(
    c: int,
    m: int,
    hw_: tuple[int, int],
    pads: tuple[int, int, int, int],
    *,
    act: str | None = None,
    bits: int = 8,
    rounding: str = "half_even",
    signed_input: bool = False,
    seed: int = 0,
) -> Graph:
    """A quantized graph x -> Conv 3x3 (pads t,l,b,r) [-> act], rewritten to WinogradConv F(2x2,3x3)."""
    rng = np.random.default_rng(seed)
    inits = {"w": rng.normal(0, 0.3, (m, c, 3, 3)), "b": rng.normal(0, 0.3, m)}
    out = "c" if act else "y"
    nodes = [helper.make_node("Conv", ["x", "w", "b"], [out], name="conv", pads=[pads[0], pads[1], pads[2], pads[3]])]
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="act"))
    elif act == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="act"))
        inits.update(lo=np.array(-0.5), hi=np.array(0.75))
    model = make_model(nodes, {"x": ["N", c, *hw_]}, {"y": None}, inits)
    g = canonicalize(import_onnx(model)).graph
    calib = random_input((c, *hw_), seed + 1, batch=64)
    calib = calib if signed_input else np.abs(calib)
    cfg = quant_config(weight_bits=bits, act_bits=bits, rounding=rounding)
    return winograd(quantize_fixed(g, calib, cfg).graph, tile=2).graph


def conv_node(g: Graph):
    return next(n for n in g.nodes if n.op == "WinogradConv")


@pytest.fixture(scope="module")
def graph() -> Graph:
    return quantized_conv(3, 4, (7, 9), (1, 1, 1, 1), act="Relu")


def test_plan_from_node_widths(graph: Graph) -> None:
    p = hw.plan_from_node(graph, conv_node(graph), pe=2, simd=1)
    assert (p.out_h, p.out_w, p.tiles, p.multipliers) == (7, 9, (4, 5), 32)
    g2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]])
    assert np.array_equal(p.u_weights, np.einsum("ik,mckl,jl->mcij", g2, p.weights, g2))
    # the accumulator, bias and requantization are the direct conv's
    w_t, b_t, acc = mac_types(p.weights, p.biases, p.inp)
    assert (p.w, p.bias, p.acc) == (w_t, b_t, acc)
    # V = B^T d B: the extremes of each element come from the corner inputs its coefficients pick
    bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
    lo = hi = 0
    for i in range(4):
        for j in range(4):
            coef = np.outer(bt[i], bt[j])
            hi = max(hi, int(np.where(coef > 0, p.inp.hi, p.inp.lo).ravel() @ coef.ravel()))
            lo = min(lo, int(np.where(coef > 0, p.inp.lo, p.inp.hi).ravel() @ coef.ravel()))
    assert p.v == IntType(signed_bits_for(lo, hi), True)
    ends = [a * b for a in (p.v.lo, p.v.hi) for b in (p.u.lo, p.u.hi)]
    assert p.prod.bits == signed_bits_for(min(ends), max(ends))
    # A^T M A is 4 x the direct sum without bias
    plain = mac_types(p.weights, np.zeros_like(p.biases), p.inp)[2]
    assert p.yacc == IntType(signed_bits_for(4 * plain.lo, 4 * plain.hi), True)


def test_tables_of_a_padded_layer(graph: Graph) -> None:
    p = hw.plan_from_node(graph, conv_node(graph), pe=1, simd=1)
    rows = hw.row_tables(p)  # 7 rows, pads 1/1: tile rows start at input rows -1, 1, 3, 5
    assert [(r["first"], r["span"], r["advance"], r["rows_out"]) for r in rows] == [
        (0, 3, 1, 2),
        (1, 4, 2, 2),
        (3, 4, 2, 2),
        (5, 2, 2, 1),
    ]
    assert rows[0]["valid"] == [0, 1, 1, 1] and rows[0]["offset"] == [0, 0, 1, 2]
    assert rows[3]["valid"] == [1, 1, 0, 0]
    cols = hw.col_tables(p)  # 9 columns: tiles start at -1, 1, ..., 7
    assert cols[0] == {"rot": 3, "valid": [0, 1, 1, 1], "word": [0, 0, 0, 0]}
    assert cols[1] == {"rot": 1, "valid": [1, 1, 1, 1], "word": [1, 0, 0, 0]}
    assert cols[4]["valid"] == [1, 1, 0, 0]


def test_refusals(graph: Graph) -> None:
    node = conv_node(graph)
    with pytest.raises(ScheduleError, match="PE=3"):
        hw.plan_from_node(graph, node, pe=3, simd=1)
    node4 = dataclasses.replace(node, attrs={**node.attrs, "tile": 4})
    with pytest.raises(ScheduleError, match=r"F\(2x2,3x3\)"):
        hw.plan_from_node(graph, node4, pe=1, simd=1)
    p = hw.plan_from_node(graph, node, pe=1, simd=1)
    with pytest.raises(ScheduleError, match="padding"):
        hw.plan_winograd(
            "c",
            "/c",
            p.weights,
            p.biases,
            p.inp,
            p.out,
            p.requant,
            in_hw=(7, 9),
            pads_begin=(3, 0),
            pads_end=(0, 0),
            pe=1,
            simd=1,
        )
    bad = dataclasses.replace(p, u_weights=p.u_weights + 1)
    with pytest.raises(ScheduleError, match="transformed filters"):
        hw.rtl_context(bad, "top")


def test_cycle_model_compute_bound_interval() -> None:
    """C=9, M=8, 8x8 with PE=SIMD=1: 4 tile rows of 4 tiles x 8 folds x 9 steps, back to back."""
    g = quantized_conv(9, 8, (8, 8), (1, 1, 1, 1))
    p = hw.plan_from_node(g, conv_node(g), pe=1, simd=1)
    assert p.steps_per_tile_row == 288
    t = hw.winograd_timing(p)
    assert t.ii == 4 * 288  # compute-bound: the steps of a sample, nothing else
    assert t.latency > 8 * 8 * 9 + hw.PIPELINE and t.first_out < t.latency
    # a source that offers the input slower delays the outputs, never advances them
    free = hw.winograd_beats(p, np.zeros(8 * 8 * 9, dtype=np.int64))
    slow = hw.winograd_beats(p, np.arange(8 * 8 * 9, dtype=np.int64) * 3)
    assert len(free) == len(slow) == 8 * 8 * 8 and np.all(slow >= free) and np.all(np.diff(free) >= 1)


def test_equal_throughput_needs_2_25x_fewer_multipliers() -> None:
    """Same layer, same throughput: the direct engine needs 36 multipliers (PE=4, SIMD=9), Winograd 16."""
    g = quantized_conv(9, 8, (8, 8), (1, 1, 1, 1))
    p = hw.plan_from_node(g, conv_node(g), pe=1, simd=1)
    d = hw.direct_counterpart(p, pe=4, simd=9)
    assert hw.winograd_timing(p).ii <= conv_timing(d).ii
    assert d.multipliers / p.multipliers == 2.25


def test_rendered_engine_names_its_layer(graph: Graph, tmp_path: Path) -> None:
    p = dataclasses.replace(hw.plan_from_node(graph, conv_node(graph), pe=2, simd=1), source="/odd */ name\n")
    sched = hw.emit_standalone_rtl(p, tmp_path, "wtop")
    text = (tmp_path / "wtop_conv.sv").read_text()
    assert "// conv (ONNX '/odd * / name?'): winograd F(2x2,3x3)" in text
    assert "*/ name" not in text and text.count("endmodule") == 1
    assert (tmp_path / "filelist.f").read_text() == "wtop_conv.sv\nwtop.sv\n"
    assert sched.latency == p.latency and sched.input.count == 7 * 9 * 3
    again = tmp_path / "again"
    hw.emit_standalone_rtl(p, again, "wtop")
    assert (again / "wtop_conv.sv").read_text() == text  # deterministic


@pytest.mark.yosys
def test_yosys_multipliers_at_equal_throughput(tmp_path: Path) -> None:
    """Inferred $mul cells of the two Verilog engines: 36 direct, 16 Winograd (2.25x), same cycles."""
    from hwgen.hw.rtl_emit import emit_rtl

    g = quantized_conv(9, 8, (8, 8), (1, 1, 1, 1))
    p = hw.plan_from_node(g, conv_node(g), pe=1, simd=1)
    d = hw.direct_counterpart(p, pe=4, simd=9)
    sched = hw.standalone_schedule(d, "dtop")
    emit_rtl(sched, tmp_path / "direct")
    hw.emit_standalone_rtl(p, tmp_path / "wino", "wtop")
    direct = hw.yosys_multipliers(tmp_path / "direct", "dtop", tmp_path / "ys_direct")
    wino = hw.yosys_multipliers(tmp_path / "wino", "wtop", tmp_path / "ys_wino")
    assert direct == 36 and wino == 16
    assert direct / wino >= 2.25


def test_requant_is_the_direct_one(graph: Graph) -> None:
    p = hw.plan_from_node(graph, conv_node(graph), pe=1, simd=1)
    assert p.requant.lo == 0 and p.requant.rounding == Rounding.HALF_EVEN  # the fused ReLU, the config's mode
    assert isinstance(p.requant, Requant)
