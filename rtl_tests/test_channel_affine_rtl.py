"""The Verilog per-channel affine engine: bit-exact against the golden kernel, cycle-exact against its model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine_cases import CASES, vectors

from hwgen.hw.channel_affine import standalone_schedule
from hwgen.hw.engine_timing import engine_timing
from hwgen.hw.rtl_emit import emit_rtl
from hwgen.hw.rtl_sim import lint_verilator, run_rtl

pytestmark = pytest.mark.rtl

STALLS = {
    "s8_c4_half_even": ("random", "random"),
    "u6_k7_floor": ("periodic", "random"),
    "s4_c3_left_shift": ("random", "periodic"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_channel_affine_bit_and_cycle_exact(name: str, build_root: Path, tmp_path: Path) -> None:
    case = CASES[name]
    sched = standalone_schedule(case.plan(), "atop")
    emit_rtl(sched, tmp_path / "rtl")
    assert lint_verilator(tmp_path / "rtl", sched.top) == []
    x, want = vectors(case)
    assert (want == case.out.lo).any() or (want == case.out.hi).any() or name == "s4_c3_left_shift"  # saturates
    backpressure, idle = STALLS[name]
    r = run_rtl(
        tmp_path / "rtl", sched, x, work_dir=build_root / f"affine_{name}", backpressure=backpressure, idle=idle
    )
    bad = np.argwhere(r.outputs != want)
    assert bad.size == 0, (
        f"{name}: first mismatch at {bad[0]}: expected {want[tuple(bad[0])]}, got {r.outputs[tuple(bad[0])]}"
    )
    t = engine_timing(sched.layers[0])
    assert (r.latency_cycles, int(r.out_cycles[0] - r.in_cycles[0])) == (t.latency, t.first_out)
