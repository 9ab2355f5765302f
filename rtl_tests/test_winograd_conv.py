"""The Verilog Winograd F(2x2,3x3) engine: bit-exact against sim.exact, cycle-exact against its model.

Each design is one quantized 3x3 conv (onnx.helper graph -> canonicalize -> quantize ->
passes.winograd), planned with hwgen.hw.winograd.plan_from_node and emitted standalone (the
engine and the usual AXI4-Stream top). Vectors: extreme codes (all min, all max, zero,
alternating, a single max), then seeded random codes; expected outputs from hwgen.sim.exact.
Sample 0 runs alone and free-flowing: its latency must equal the plan's; the others cross source
idles with sink back-pressure.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from hwgen.config import config_from_dict
from hwgen.frontend import import_onnx
from hwgen.hw import winograd as hw
from hwgen.hw.rtl_sim import lint_verilator, run_rtl
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.passes.winograd import winograd
from hwgen.sim import exact

pytestmark = pytest.mark.rtl

SEED = 21


def quantized_conv(c: int, m: int, hw_: tuple[int, int], pads: tuple[int, ...], act: str | None, **q: object) -> Graph:
    """x -> Conv 3x3 [-> act], quantized on seeded calibration data, rewritten to WinogradConv F(2x2,3x3)."""
    from cnn_designs import onnx_model

    rng = np.random.default_rng(0)
    inits = {"w": rng.normal(0, 0.3, (m, c, 3, 3)), "b": rng.normal(0, 0.3, m)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if act else "y"], name="conv", pads=list(pads))]
    if act:
        nodes.append(helper.make_node(act, ["c"], ["y"], name="act"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = canonicalize(import_onnx(onnx_model(nodes, (c, *hw_), inits, "wconv"))).graph
    calib = rng.normal(0, 1, (64, c, *hw_))
    if q.pop("unsigned_input", False):
        calib = np.abs(calib)
    return winograd(quantize_fixed(g, calib, config_from_dict({"quantize": q})).graph, tile=2).graph


def vectors(graph: Graph, n_random: int) -> tuple[np.ndarray, np.ndarray]:
    """Stream-order input codes and the golden model's output codes (see the module docstring)."""
    fmt = exact.fixed_format(graph, graph.inputs[0])
    shape = graph.value(graph.inputs[0]).type.shape
    rng = np.random.default_rng(SEED)
    alt = np.where(np.indices(shape).sum(axis=0) % 2 == 0, fmt.min_code, fmt.max_code)
    one = np.zeros(shape, dtype=np.int64)
    one[-1, shape[1] - 1, 0] = fmt.max_code
    fixed = [np.full(shape, fmt.min_code), np.full(shape, fmt.max_code), np.zeros(shape, np.int64), alt, one]
    codes = np.stack(fixed + [rng.integers(fmt.min_code, fmt.max_code + 1, size=shape) for _ in range(n_random)])
    y = exact.run_codes(graph, codes)[graph.outputs[0]]
    return codes.transpose(0, 2, 3, 1).reshape(len(codes), -1), y.transpose(0, 2, 3, 1).reshape(len(codes), -1)


#: name -> (graph arguments, (PE, SIMD), [(sink back-pressure, source idle), ...])
DESIGNS = {
    # unsigned input + ReLU, pads 1, partial edge tiles (7x9 outputs), two output channels per fold
    "relu_pad1": (
        ((3, 4, (7, 9), (1, 1, 1, 1), "Relu"), {"unsigned_input": True, "rounding": "half_even"}),
        (2, 1),
        [("random", "random"), ("periodic", "none")],
    ),
    # signed input and output, asymmetric pads, SIMD lanes, 6-bit codes, half-up rounding
    "signed_asym_simd": (
        ((4, 6, (6, 8), (2, 0, 1, 2), None), {"weight_bits": 6, "act_bits": 6, "rounding": "half_up"}),
        (3, 2),
        [("none", "periodic"), ("random", "none")],
    ),
}


@pytest.mark.parametrize("name", list(DESIGNS))
def test_winograd_bit_and_cycle_exact(name: str, tmp_path: Path, build_root: Path) -> None:
    (args, q), (pe, simd), stalls = DESIGNS[name]
    graph = quantized_conv(*args, **dict(q))
    p = hw.plan_from_node(graph, exact_node(graph), pe=pe, simd=simd)
    rtl = tmp_path / "rtl"
    sched = hw.emit_standalone_rtl(p, rtl, "wtop")
    assert lint_verilator(rtl, "wtop") == []
    x, want = vectors(graph, 7)
    print(f"{name}: seed {SEED}, {len(x)} vectors, PE={pe} SIMD={simd}, {p.multipliers} multipliers")
    for backpressure, idle in stalls:
        r = run_rtl(rtl, sched, x, work_dir=build_root / f"winograd_{name}", backpressure=backpressure, idle=idle)
        bad = np.argwhere(r.outputs != want)
        assert bad.size == 0, (
            f"{name} ({backpressure}/{idle}): {len(bad)} mismatching codes, first at vector {bad[0][0]} element "
            f"{bad[0][1]}: expected {want[tuple(bad[0])]}, got {r.outputs[tuple(bad[0])]}"
        )
        print(f"{name} ({backpressure}/{idle}): latency {r.latency_cycles} (model {p.latency})")
        assert r.latency_cycles == p.latency


def exact_node(graph: Graph):
    return next(n for n in graph.nodes if n.op == "WinogradConv")
