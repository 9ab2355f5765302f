"""Vendor projects for the Verilog view: a Vivado non-project script and a FuseSoC core.

A user with Vivado should get utilization and timing of the generated design with one command,
and an HDL user should drop the design into an existing project without reading our file layout.
`emit_vendor_scripts` (called by every build) writes, beside OUT/rtl and OUT/hls:

- `OUT/vivado/build.tcl`: Vivado non-project flow, out of context (the accelerator is an IP inside
  a larger design, so its ports get no pins or I/O buffers): read_verilog -sv of every file of
  rtl/filelist.f, read_xdc, synth_design, opt/place/phys_opt/route, utilization and timing reports,
  checkpoints, and reports/summary.txt (worst setup slack, machine-readable);
- `OUT/vivado/clock.xdc`: `create_clock` on ap_clk at the build's clock;
- `OUT/rtl/<top>.core`: a FuseSoC CAPI2 core (targets default, lint with Verilator, synth with
  Yosys or Vivado), so `fusesoc run --target synth --tool vivado` drives Vivado through edalize.

The Vitis HLS script of the C++ view is OUT/hls/run_hls.tcl (written by hls_emit), not repeated
here. Every file is deterministic and names paths relative to itself, so OUT can be moved.
`run_vivado` / `run_vitis_hls` run those scripts where the tool is installed and parse their
reports; `vendor_commands` says what to type on such a machine when it is not.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hwgen import __version__
from hwgen.config import HardwareConfig
from hwgen.errors import ConfigError, ToolError
from hwgen.hw.devices import get_device
from hwgen.hw.names import comment_safe
from hwgen.hw.plan import Schedule
from hwgen.hw.rtl_emit import read_filelist

VIVADO_DIR = "vivado"
VIVADO_SCRIPT = "build.tcl"
CLOCK_XDC = "clock.xdc"
#: the clock port of every generated top level
CLOCK_PORT = "ap_clk"
#: the part used for Vivado when the build's part is a Lattice device (no Vivado part to use)
DEFAULT_XILINX_PART = HardwareConfig().part
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _xilinx_part(part: str) -> tuple[str, str | None]:
    """(part for Vivado, note) : a Lattice part cannot go to Vivado, so the default part stands in."""
    if not _PART.match(part):
        raise ConfigError(f"hardware.part = {part!r}: a part name is letters, digits, '-', '_' and '.' only")
    try:
        family = get_device(part).family
    except ConfigError:
        family = "xilinx"  # an unknown part: trust the user, Vivado checks it
    if family == "xilinx":
        return part, None
    note = f"hardware.part {part} is a Lattice ({family}) part: Vivado targets {DEFAULT_XILINX_PART}"
    return DEFAULT_XILINX_PART, note


def clock_period_ns(clock_mhz: float) -> str:
    """The clock period as the constraint files write it (ns, 3 decimals: 125 MHz -> '8.000')."""
    if not clock_mhz > 0:
        raise ConfigError(f"clock {clock_mhz} MHz: must be positive")
    return f"{1000.0 / clock_mhz:.3f}"


def _header(schedule: Schedule, leader: str) -> list[str]:
    return [
        f"{leader} hwgen {__version__}: model '{comment_safe(schedule.model)}', hash {schedule.model_hash}",
        f"{leader} generated, do not edit",
    ]


def vivado_tcl(schedule: Schedule, sources: list[str], *, part: str, clock_mhz: float) -> str:
    """The Vivado non-project script; `sources` are paths relative to the script's folder."""
    top = schedule.top
    vpart, note = _xilinx_part(part)
    lines = [
        *_header(schedule, "#"),
        "#",
        f"# Vivado non-project flow of '{top}' (the Verilog view), out of context: synthesis,",
        "# implementation, utilization and timing reports, checkpoints. No pins, no bitstream.",
        f"# Run from anywhere: vivado -mode batch -source {VIVADO_SCRIPT}",
        "# Writes reports/ and checkpoints/ beside this script; reports/summary.txt holds the worst",
        f"# setup slack of {CLOCK_PORT} (ns) for `hwgen synth OUT --flow vivado`.",
        f"# Clock: {clock_mhz:g} MHz ({CLOCK_XDC}).",
        *([f"# Note: {note}."] if note else []),
        "",
        "cd [file dirname [file normalize [info script]]]",
        "file mkdir reports checkpoints",
        "",
        *(f"read_verilog -sv {s}" for s in sources),
        f"read_xdc {CLOCK_XDC}",
        "",
        f"synth_design -top {top} -part {vpart} -mode out_of_context",
        "write_checkpoint -force checkpoints/post_synth.dcp",
        "report_utilization -file reports/post_synth_utilization.rpt",
        "",
        "opt_design",
        "place_design",
        "phys_opt_design",
        "route_design",
        "write_checkpoint -force checkpoints/post_route.dcp",
        "",
        "report_utilization -file reports/utilization.rpt",
        "report_timing_summary -max_paths 10 -file reports/timing_summary.rpt",
        "set wns [get_property SLACK [get_timing_paths -delay_type max -max_paths 1]]",
        "set fh [open reports/summary.txt w]",
        f'puts $fh "top {top}"',
        f'puts $fh "part {vpart}"',
        f'puts $fh "period_ns {clock_period_ns(clock_mhz)}"',
        'puts $fh "wns_ns $wns"',
        "close $fh",
        "",
    ]
    return "\n".join(lines)


def clock_xdc(schedule: Schedule, clock_mhz: float) -> str:
    """The clock constraint of the top level's ap_clk."""
    return "\n".join(
        [
            *_header(schedule, "#"),
            f"# {clock_mhz:g} MHz",
            f"create_clock -period {clock_period_ns(clock_mhz)} -name {CLOCK_PORT} [get_ports {CLOCK_PORT}]",
            "",
        ]
    )


def fusesoc_core(schedule: Schedule, sources: list[str], *, part: str) -> str:
    """A FuseSoC CAPI2 core: the sources as one systemVerilogSource fileset, three targets.

    YAML written by hand (every string JSON-quoted, which YAML reads as a double-quoted scalar),
    so the text is deterministic and needs no YAML library.
    """
    q = json.dumps
    top = schedule.top
    vpart, _ = _xilinx_part(part)
    try:
        family = get_device(part).family
    except ConfigError:
        family = "xilinx"
    about = f"{top}: accelerator of model {comment_safe(schedule.model)} (hwgen, hash {schedule.model_hash})"
    lines = [
        "CAPI=2:",
        *_header(schedule, "#"),
        f"name: {q(f'hwgen:generated:{top}:{__version__}')}",
        f"description: {q(about)}",
        "",
        "filesets:",
        "  rtl:",
        f"    file_type: {q('systemVerilogSource')}",
        "    files:",
        *(f"      - {q(s)}" for s in sources),
        "",
        "targets:",
        "  default:",
        f"    filesets: [{q('rtl')}]",
        f"    toplevel: {q(top)}",
        "  lint:",
        f"    description: {q('verilator --lint-only -Wall (hwgen lints every template this way)')}",
        f"    default_tool: {q('verilator')}",
        f"    filesets: [{q('rtl')}]",
        f"    toplevel: {q(top)}",
        "    tools:",
        "      verilator:",
        f"        mode: {q('lint-only')}",
        f"        verilator_options: [{q('-Wall')}]",
        "  synth:",
        f"    description: {q('synthesis: Yosys by default, --tool vivado for Vivado')}",
        f"    default_tool: {q('yosys')}",
        f"    filesets: [{q('rtl')}]",
        f"    toplevel: {q(top)}",
        "    tools:",
        "      yosys:",
        f"        arch: {q(family)}",
        "      vivado:",
        f"        part: {q(vpart)}",
        "",
    ]
    return "\n".join(lines)


def emit_vendor_scripts(schedule: Schedule, out_dir: Path, *, part: str, clock_mhz: float) -> list[Path]:
    """Write OUT/vivado/{build.tcl, clock.xdc} and OUT/rtl/<top>.core; needs OUT/rtl/filelist.f."""
    out = Path(out_dir)
    rtl = out / "rtl"
    names = [p.name for p in read_filelist(rtl)]
    vdir = out / VIVADO_DIR
    vdir.mkdir(parents=True, exist_ok=True)
    written = {
        vdir / VIVADO_SCRIPT: vivado_tcl(schedule, [f"../rtl/{n}" for n in names], part=part, clock_mhz=clock_mhz),
        vdir / CLOCK_XDC: clock_xdc(schedule, clock_mhz),
        rtl / f"{schedule.top}.core": fusesoc_core(schedule, names, part=part),
    }
    for path, text in written.items():
        path.write_text(text)
    return list(written)


# -- running the vendor tools where they are installed -------------------------------------------

_VIVADO_ROWS = {
    "LUT": re.compile(r"^\|\s*(?:Slice|CLB) LUTs\*?\s*\|\s*([\d.]+)\s*\|"),
    "FF": re.compile(r"^\|\s*(?:Slice|CLB) Registers\s*\|\s*([\d.]+)\s*\|"),
    "DSP": re.compile(r"^\|\s*DSPs\s*\|\s*([\d.]+)\s*\|"),
    "BRAM": re.compile(r"^\|\s*Block RAM Tile\s*\|\s*([\d.]+)\s*\|"),
    "URAM": re.compile(r"^\|\s*URAM\s*\|\s*([\d.]+)\s*\|"),
}


def parse_vivado_utilization(text: str) -> dict[str, float]:
    """Used LUT/FF/DSP/BRAM(36K tiles)/URAM from `report_utilization` text (first table row of each)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        for key, rx in _VIVADO_ROWS.items():
            m = rx.match(line.strip())
            if m and key not in found:
                v = float(m.group(1))
                found[key] = int(v) if v.is_integer() else v
    return found


def parse_vivado_summary(text: str) -> dict[str, Any]:
    """reports/summary.txt (written by build.tcl) -> period, worst slack and the Fmax they imply."""
    kv = dict(line.split(None, 1) for line in text.splitlines() if len(line.split(None, 1)) == 2)
    period, wns = float(kv["period_ns"]), float(kv["wns_ns"])
    return {
        "period_ns": period,
        "wns_ns": wns,
        "fmax_mhz": round(1000.0 / (period - wns), 2),
        "timing_met": wns >= 0,
    }


def parse_csynth_xml(text: str) -> dict[str, Any]:
    """Vitis HLS csynth.xml -> estimated resources, clock period and latency (cycles)."""
    root = ET.fromstring(text)

    def num(path: str) -> float | None:
        node = root.find(path)
        if node is None or node.text is None:
            return None
        try:
            return float(node.text)
        except ValueError:
            return None

    res = {}
    for key, tags in {"LUT": ("LUT",), "FF": ("FF",), "DSP": ("DSP", "DSP48E"), "BRAM_18K": ("BRAM_18K",),
                      "URAM": ("URAM",)}.items():  # fmt: skip
        for tag in tags:
            v = num(f"AreaEstimates/Resources/{tag}")
            if v is not None:
                res[key] = int(v)
                break
    period = num("PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod")
    latency = num("PerformanceEstimates/SummaryOfOverallLatency/Worst-caseLatency")
    return {
        "resources": {
            "LUT": res.get("LUT"),
            "FF": res.get("FF"),
            "DSP": res.get("DSP"),
            # Vivado counts 36 Kbit tiles, HLS 18 Kbit halves: report tiles like every other flow
            "BRAM": res["BRAM_18K"] / 2 if "BRAM_18K" in res else None,
            **({"URAM": res["URAM"]} if "URAM" in res else {}),
        },
        "estimated_period_ns": period,
        "fmax_mhz": round(1000.0 / period, 2) if period else None,
        "latency_cycles": int(latency) if latency is not None else None,
    }


def vendor_commands(flow: str, out_dir: Path) -> list[str]:
    """The shell commands that run `flow`'s script of build directory out_dir on a machine with the tool."""
    if flow == "vivado":
        return [f"cd {out_dir / VIVADO_DIR} && vivado -mode batch -source {VIVADO_SCRIPT} -nojournal -log vivado.log"]
    if flow == "vitis":
        return [f"cd {out_dir / 'hls'} && vitis_hls -f run_hls.tcl"]
    raise ConfigError(f"flow '{flow}' has no vendor script: use vivado or vitis")


def vendor_tool(flow: str) -> str | None:
    """The vendor executable of `flow` on PATH, or None."""
    return shutil.which({"vivado": "vivado", "vitis": "vitis_hls"}[flow])


def _run_tool(cmd: list[str], cwd: Path, log: Path, what: str) -> None:
    try:
        with log.open("w") as f:
            proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, check=False)
    except OSError as e:
        raise ToolError(f"{what} could not be started ({e})") from e
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise ToolError(f"{what} exited {proc.returncode}; the last 40 lines of {log} follow:\n{tail}")


def run_vivado(out_dir: Path) -> dict[str, Any]:
    """Run OUT/vivado/build.tcl with the vivado on PATH; return resources and timing from its reports."""
    exe = vendor_tool("vivado")
    if exe is None:
        raise ToolError("vivado is not on PATH: " + "; ".join(vendor_commands("vivado", out_dir)))
    vdir = Path(out_dir) / VIVADO_DIR
    _run_tool([exe, "-mode", "batch", "-source", VIVADO_SCRIPT, "-nojournal", "-log", "vivado.log"], vdir,
              vdir / "vivado.out", "vivado")  # fmt: skip
    util = parse_vivado_utilization((vdir / "reports" / "utilization.rpt").read_text())
    return {"resources": util, **parse_vivado_summary((vdir / "reports" / "summary.txt").read_text())}


def run_vitis_hls(out_dir: Path, top: str) -> dict[str, Any]:
    """Run OUT/hls/run_hls.tcl with the vitis_hls on PATH; return csynth's estimates."""
    exe = vendor_tool("vitis")
    if exe is None:
        raise ToolError("vitis_hls is not on PATH: " + "; ".join(vendor_commands("vitis", out_dir)))
    hdir = Path(out_dir) / "hls"
    _run_tool([exe, "-f", "run_hls.tcl"], hdir, hdir / "vitis_hls.out", "vitis_hls")
    xml = hdir / f"{top}_prj" / "solution1" / "syn" / "report" / "csynth.xml"
    if not xml.is_file():
        raise ToolError(f"vitis_hls finished but wrote no {xml}; see {hdir / 'vitis_hls.out'}")
    return parse_csynth_xml(xml.read_text())


__all__ = [
    "CLOCK_XDC",
    "VIVADO_DIR",
    "VIVADO_SCRIPT",
    "clock_period_ns",
    "clock_xdc",
    "emit_vendor_scripts",
    "fusesoc_core",
    "parse_csynth_xml",
    "parse_vivado_summary",
    "parse_vivado_utilization",
    "run_vitis_hls",
    "run_vivado",
    "vendor_commands",
    "vendor_tool",
    "vivado_tcl",
]
