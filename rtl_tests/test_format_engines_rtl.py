"""The format MAC engines in RTL (Verilator + cocotb): bit-exact for every format, cycle-exact.

The cases, weights and activation codes are those of tests/hw/test_format_engines.py (the C
simulation checks the same vectors); expected codes come from hwgen.sim.format_mac.dot_exact via
format_engines.golden, expected cycles from the plan. Each engine is one Verilator build (cached
in pytest's cache folder, keyed by the sources) run through the generic bench
rtl_tests/model_bench.py by hwgen.hw.rtl_sim.run_rtl, with source idles and sink back-pressure.
(This file is not named test_format_engines.py: pytest imports test files by basename, and the
unit tests own that name.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hwgen.hw.format_engines import activation_beats, emit_rtl_engine, golden, run_shape
from hwgen.hw.rtl_sim import lint_verilator, run_rtl

pytestmark = pytest.mark.rtl


def _cases():
    path = Path(__file__).resolve().parents[1] / "tests" / "hw" / "test_format_engines.py"
    spec = importlib.util.spec_from_file_location("fmac_cases", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CASES = _cases()
#: (sink back-pressure, source idle) per run; sample 0 always runs alone without stalls
STALLS = {"fixed_dsp": [("none", "none"), ("random", "periodic"), ("periodic", "random")]}


@pytest.mark.parametrize("name", list(CASES.CASES))
def test_rtl_bit_exact(name: str, tmp_path: Path, build_root: Path) -> None:
    """Golden vs RTL on the extreme and random codes, latency exactly the plan's; free-flowing,
    one vector leaves every II cycles."""
    plan, a = CASES.case_plan(name)
    x = activation_beats(plan, a)
    want = golden(plan, a)
    emit_rtl_engine(plan, tmp_path / name)
    assert lint_verilator(tmp_path / name, plan.name) == []  # verilator -Wall: no warning
    for seed, (bp, idle) in enumerate(STALLS.get(name, [("random", "random")])):
        r = run_rtl(
            tmp_path / name, run_shape(plan), x, work_dir=build_root / name, backpressure=bp, idle=idle, seed=seed
        )
        bad = np.argwhere(r.outputs != want)
        assert not bad.size, (
            f"{name} backpressure={bp} idle={idle} seed={seed}: {len(bad)} mismatching codes, first at "
            f"{bad[0].tolist()}: expected {want[tuple(bad[0])]}, got {r.outputs[tuple(bad[0])]}"
        )
        assert r.latency_cycles == plan.latency, f"measured latency {r.latency_cycles}, plan {plan.latency}"
        if bp == idle == "none":
            last = r.out_cycles.reshape(len(x), -1)[:, -1]
            assert set(np.diff(last[1:]).tolist()) == {plan.ii}, (np.diff(last).tolist(), plan.ii)
