"""Yosys synthesis figures: the cell mapping (fast) and one small design through synth_xilinx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwgen.errors import ToolError
from hwgen.hw.plan import IntType, Requant, StreamPort
from hwgen.hw.rtl_emit import emit_rtl
from hwgen.hw.schedule import chain_schedule, plan_dense
from hwgen.hw.yosys_synth import count_resources, synth_yosys
from hwgen.numerics import Rounding


def test_cell_mapping() -> None:
    cells = {
        "LUT1": 1, "LUT2": 2, "LUT6": 3, "LUT6_2": 4, "INV": 7, "CARRY4": 5,
        "FDRE": 10, "FDSE": 1, "FDCE": 2, "FDPE": 3,
        "DSP48E1": 6, "DSP48E2": 1,
        "RAMB36E1": 2, "RAMB18E1": 3,
        "RAM64M": 4, "RAM32X1D": 1, "SRL16E": 2,
        "IBUF": 9, "OBUF": 9, "BUFG": 1, "MUXF7": 2,
    }  # fmt: skip
    r = count_resources(cells)
    assert r == {"LUT": 10, "FF": 16, "DSP": 7, "BRAM": 3.5, "LUTRAM": 7}


@pytest.fixture(scope="module")
def small_design(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    rng = np.random.default_rng(3)
    u8, s8 = IntType(8, False), IntType(8, True)
    a = plan_dense(
        "fc1",
        "/fc1/Gemm",
        rng.integers(-100, 101, (8, 16)),
        rng.integers(-99, 100, 8),
        u8,
        u8,
        Requant(6, Rounding.HALF_EVEN, 0, 255),
        pe=2,
        simd=4,
    )
    b = plan_dense(
        "fc2",
        "/fc2/Gemm",
        rng.integers(-100, 101, (4, 8)),
        rng.integers(-99, 100, 4),
        u8,
        s8,
        Requant(7, Rounding.HALF_UP, -128, 127),
        pe=1,
        simd=1,
    )
    s = chain_schedule(
        "syn", "yosys test", [a, b], StreamPort("x", "x", u8, 16, 0, (16,)), StreamPort("y", "y", s8, 4, 0, (4,))
    )
    rtl = tmp_path_factory.mktemp("rtl")
    emit_rtl(s, rtl)
    return rtl, s.top, sum(p.pe * p.simd for p in s.layers)


@pytest.mark.yosys
def test_synth_xilinx_small_chain(small_design: tuple[Path, str, int], tmp_path: Path) -> None:
    rtl, top, multipliers = small_design
    r = synth_yosys(rtl, top, tmp_path)
    # every 8x8 product of the PE x SIMD arrays lands in a DSP48E1; nothing is big enough for a BRAM
    assert r["DSP"] == multipliers
    assert r["cells"]["DSP48E1"] == multipliers
    assert r["BRAM"] == 0
    assert 100 < r["FF"] < 2000 and 100 < r["LUT"] < 3000
    assert r["seconds"] > 0
    assert (tmp_path / "stat.json").is_file()


@pytest.mark.yosys
def test_synth_failure_is_a_tool_error_with_the_log(small_design: tuple[Path, str, int], tmp_path: Path) -> None:
    rtl, _top, _ = small_design
    with pytest.raises(ToolError, match=r"yosys exited 1 .*'no_such_top'(.|\n)*no_such_top"):
        synth_yosys(rtl, "no_such_top", tmp_path)
    with pytest.raises(ToolError, match="not supported"):
        synth_yosys(rtl, "syn", tmp_path, target="asic")
