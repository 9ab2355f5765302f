"""C simulation of an emitted HLS project with g++ and Xilinx's ap_types headers (no Vitis needed).

The project's own testbench runs the top function once per sample, exactly as `csim_design`
does; the sources compiled are those run_hls.tcl adds, so g++ checks what Vitis will read.
Binaries are cached by a hash of the sources, flags and compiler, so a re-run only simulates.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE, STDOUT

import numpy as np

from hwgen.errors import DataError, ToolError
from hwgen.hw.hls_emit import codes_text

#: warnings are errors in our files (the ap_types headers come in with -isystem); g++ does not
#: know the `#pragma HLS` lines, which are for Vitis only
CXXFLAGS = ("-O2", "-std=c++14", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas")
#: lines of a compiler or testbench log quoted in a ToolError
LOG_TAIL = 40
_ADD_FILES = re.compile(r"^add_files\s+(-tb\s+)?(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class CsimResult:
    """Outputs of one C simulation run, with where the time went."""

    outputs: np.ndarray  #: int64 codes [N, output count]
    compile_seconds: float  #: g++ wall time; 0.0 when the cached binary was reused
    run_seconds: float  #: testbench wall time (file I/O included)
    command: tuple[str, ...]  #: the testbench command line (its input/output files are removed after the run)
    cached: bool  #: the binary came from the cache


def ap_types_dir() -> Path:
    """Xilinx's Apache-2.0 ap_types headers, shipped inside the hls4ml wheel (found without importing it)."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise ToolError("C simulation needs the ap_types headers from the hls4ml package: pip install hls4ml==1.3.0")
    for root in spec.submodule_search_locations:
        cand = Path(root) / "templates" / "vivado" / "ap_types"
        if (cand / "ap_int.h").is_file() and (cand / "hls_stream.h").is_file():
            return cand
    raise ToolError(
        f"hls4ml is installed at {list(spec.submodule_search_locations)} but has no "
        "templates/vivado/ap_types/ap_int.h; reinstall it: pip install --force-reinstall hls4ml==1.3.0"
    )


def gxx() -> str:
    """The g++ executable ($CXX if set)."""
    exe = shutil.which(os.environ.get("CXX", "g++"))
    if exe is None:
        raise ToolError("C simulation needs g++ on PATH (Debian/Ubuntu: apt-get install g++), or set CXX")
    return exe


def project_sources(hls_dir: Path) -> tuple[list[str], str]:
    """The C++ files run_hls.tcl adds (design and testbench), and the testbench's name."""
    tcl = hls_dir / "run_hls.tcl"
    if not tcl.is_file():
        raise ToolError(f"{hls_dir}: no run_hls.tcl; is this a folder written by hw.hls_emit.emit_hls?")
    added = _ADD_FILES.findall(tcl.read_text())
    sources = [name for _, name in added if name.endswith(".cpp")]
    tbs = [name for tb, name in added if tb and name.endswith(".cpp")]
    if len(tbs) != 1 or not sources:
        raise ToolError(f"{tcl}: expected design sources and one testbench .cpp in add_files, found {sources}")
    missing = [s for s in sources if not (hls_dir / s).is_file()]
    if missing:
        raise ToolError(f"{hls_dir}: files listed in run_hls.tcl are missing: {missing}")
    return sources, tbs[0]


def _tail(text: str, n: int = LOG_TAIL) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _source_key(hls_dir: Path, sources: list[str], compiler: str, include: Path) -> str:
    """Hash of everything the binary depends on: our sources and headers, flags, compiler, ap_types."""
    h = hashlib.sha256()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    h.update(repr((CXXFLAGS, version, str(include), sources)).encode())
    for path in sorted(p for p in hls_dir.iterdir() if p.suffix in (".h", ".cpp", ".tcl")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def build(hls_dir: Path, work_dir: Path) -> tuple[Path, float, bool]:
    """Compile the project's design and testbench into work_dir (cached); (binary, seconds, cached)."""
    compiler, include = gxx(), ap_types_dir()
    sources, tb = project_sources(hls_dir)
    binary = work_dir / f"{Path(tb).stem}_{_source_key(hls_dir, sources, compiler, include)}"
    if binary.is_file():
        return binary, 0.0, True
    work_dir.mkdir(parents=True, exist_ok=True)
    obj_dir = Path(tempfile.mkdtemp(prefix="obj_", dir=work_dir))
    log = binary.with_suffix(".log")
    objects = [str(obj_dir / f"{i}.o") for i in range(len(sources))]
    flags = [*CXXFLAGS, "-isystem", str(include), "-I", "."]
    t0 = time.perf_counter()
    try:
        # one g++ per source at once (the design and the testbench take about as long), then link
        procs = [(src, [compiler, *flags, "-c", src, "-o", obj]) for src, obj in zip(sources, objects, strict=True)]
        running = [subprocess.Popen(cmd, cwd=hls_dir, stdout=PIPE, stderr=STDOUT, text=True) for _, cmd in procs]
        steps: list[tuple[str, list[str], str, int]] = []
        for (what, cmd), proc in zip(procs, running, strict=True):
            out, _ = proc.communicate()
            steps.append((what, cmd, out, proc.returncode))
        if all(rc == 0 for *_, rc in steps):
            cmd = [compiler, *objects, "-o", str(obj_dir / "a.out")]
            done = subprocess.run(cmd, stdout=PIPE, stderr=STDOUT, text=True, check=False)
            steps.append(("linking", cmd, done.stdout, done.returncode))
        seconds = time.perf_counter() - t0
        log.write_text("".join(" ".join(cmd) + "\n" + out for _, cmd, out, _ in steps))
        for what, _, out, rc in steps:
            if rc != 0:
                raise ToolError(
                    f"g++ exited {rc} on {what} for the C simulation of {hls_dir}; "
                    f"the last {LOG_TAIL} lines of {log} follow:\n{_tail(out)}"
                )
        os.replace(obj_dir / "a.out", binary)  # atomic: a concurrent run never sees half a binary
    finally:
        shutil.rmtree(obj_dir, ignore_errors=True)
    return binary, seconds, False


def run_csim(hls_dir: Path, x_codes: np.ndarray, work_dir: Path | None = None) -> CsimResult:
    """Compile (or reuse) the project's testbench and run it on `x_codes` [N, input count].

    `work_dir` holds the cached binaries and the run's files; without it a temporary folder is
    used and removed (so nothing is cached).
    """
    hls_dir = Path(hls_dir).resolve()
    x = np.asarray(x_codes)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer) or x.shape[0] == 0:
        raise DataError(f"csim inputs: expected integer codes of shape [N, count], N >= 1; got {x.dtype} {x.shape}")
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="hwgen_csim_") as tmp:
            return run_csim(hls_dir, x, Path(tmp))
    work_dir = Path(work_dir).resolve()
    binary, compile_seconds, cached = build(hls_dir, work_dir)

    run_dir = Path(tempfile.mkdtemp(prefix="run_", dir=work_dir))
    try:
        inputs, outputs = run_dir / "inputs.txt", run_dir / "outputs.txt"
        inputs.write_text(codes_text(x))
        cmd = (str(binary), str(inputs), str(outputs))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        run_seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise ToolError(
                f"the C simulation of {hls_dir} exited {proc.returncode}; its last {LOG_TAIL} lines follow:\n"
                + _tail(proc.stdout + proc.stderr)
            )
        y = np.loadtxt(outputs, dtype=np.int64, ndmin=2)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if y.shape[0] != x.shape[0]:
        raise ToolError(f"the C simulation of {hls_dir} wrote {y.shape[0]} output lines for {x.shape[0]} samples")
    return CsimResult(outputs=y, compile_seconds=compile_seconds, run_seconds=run_seconds, command=cmd, cached=cached)


__all__ = ["CXXFLAGS", "CsimResult", "ap_types_dir", "build", "gxx", "run_csim"]
