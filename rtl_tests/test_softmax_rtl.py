"""The Verilog softmax engine: bit-exact against the golden model, cycle-exact against its timing model.

Each design is one SoftmaxPlan (rtl_tests/softmax_cases.py) emitted by hwgen.hw.rtl_emit with the
usual AXI4-Stream top. Sample 0 runs alone and free-flowing: its latency and first output must
equal hwgen.hw.engine_timing's; the other samples cross source idles with sink back-pressure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from softmax_cases import CASES, MAX_CASE, vectors

from hwgen.hw.engine_timing import engine_timing
from hwgen.hw.rtl_emit import emit_rtl
from hwgen.hw.rtl_sim import lint_verilator, run_rtl
from hwgen.hw.softmax import standalone_schedule

pytestmark = pytest.mark.rtl

#: name -> (sink back-pressure, source idle) for the samples after the first
STALLS = {
    "s8_n10": ("random", "random"),
    "u4_n7_short_table": ("periodic", "random"),
    "s6_clamped": ("random", "none"),
    "s8_n1": ("random", "periodic"),
    "s8_u16_out": ("periodic", "periodic"),
    "s8_per_pixel": ("random", "random"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_softmax_bit_and_cycle_exact(name: str, build_root: Path, tmp_path: Path) -> None:
    sched = standalone_schedule(CASES[name].plan(), "smtop")
    emit_rtl(sched, tmp_path / "rtl")
    assert lint_verilator(tmp_path / "rtl", sched.top) == []
    x, want = vectors(CASES[name])
    backpressure, idle = STALLS[name]
    r = run_rtl(
        tmp_path / "rtl", sched, x, work_dir=build_root / f"softmax_{name}", backpressure=backpressure, idle=idle
    )
    bad = np.argwhere(r.outputs != want)
    assert bad.size == 0, (
        f"{name}: {len(bad)} mismatching codes, first at vector {bad[0][0]} element {bad[0][1]}: "
        f"expected {want[tuple(bad[0])]}, got {r.outputs[tuple(bad[0])]}"
    )
    t = engine_timing(sched.layers[0])
    first_out = int(r.out_cycles[0] - r.in_cycles[0])
    print(f"{name}: latency {r.latency_cycles} (model {t.latency}), first output {first_out} (model {t.first_out})")
    assert (r.latency_cycles, first_out) == (t.latency, t.first_out)


@pytest.mark.slow
def test_softmax_longest_vector(build_root: Path, tmp_path: Path) -> None:
    """65,536 elements: all equal (S = 2**32) and one dominant; about 40 s of simulation."""
    sched = standalone_schedule(MAX_CASE.plan(), "smtop")
    emit_rtl(sched, tmp_path / "rtl")
    x, want = vectors(MAX_CASE)
    r = run_rtl(tmp_path / "rtl", sched, x[[0, 3]], work_dir=build_root / "softmax_max")
    assert np.array_equal(r.outputs, want[[0, 3]])
    assert r.latency_cycles == sched.latency == MAX_CASE.length * (MAX_CASE.out_frac + 3)
