"""`hwgen`: build, verify and synthesize FPGA accelerators from ONNX models.

Errors a user can fix print as one line (`error: ...`) with exit code 2; `--debug` shows the
traceback. `verify` exits 1 when any output bit differs from the golden model.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hwgen import __version__
from hwgen.errors import HwgenError

console = Console(stderr=True)
#: wide enough for the layer tables when stdout is a pipe or a CI log (rich defaults to 80 there)
out = Console(width=None if sys.stdout.isatty() else 160)


@contextmanager
def _progress(title: str) -> Iterator[object]:
    """A spinner naming the current step; each finished step is printed with its time."""
    status = console.status(f"{title}...")
    status.start()
    state = {"step": None, "t": time.perf_counter()}

    def step(name: str) -> None:
        if state["step"] is not None:
            console.print(f"  [green]✓[/] {state['step']} ({time.perf_counter() - state['t']:.2f} s)")
        state["step"], state["t"] = name, time.perf_counter()
        status.update(f"{title}: {name}...")

    try:
        yield step
        step("")  # close the last step
    finally:
        status.stop()


def _cmd_build(args: argparse.Namespace) -> int:
    from hwgen.build import build
    from hwgen.config import load_config, with_overrides

    cfg = with_overrides(load_config(args.config), weight_bits=args.weight_bits, act_bits=args.act_bits)
    with _progress(f"building {args.model}") as step:
        res = build(
            Path(args.model),
            Path(args.out),
            cfg,
            calib=args.calib and Path(args.calib),
            force=args.force,
            progress=step,
        )
    _print_build(res.report)
    console.print(f"wrote {res.out_dir} in {res.seconds['total']:.2f} s")
    return 0


def _print_build(report: dict) -> None:
    t = Table(
        title=f"{report['model']['name']}: {report['model']['params']:,} params, {report['model']['macs']:,} MACs"
    )
    for col in ("layer", "engine", "in->out", "weights", "acts", "PE x SIMD", "reuse", "acc", "latency"):
        t.add_column(col, justify="right" if col in ("reuse", "latency") else "left")
    for lay in report["layers"]:
        if "in_features" in lay:
            shape = f"{lay['in_features']}->{lay['out_features']}"
        elif "in_shape" in lay:
            shape = f"{'x'.join(map(str, lay['in_shape']))}->{'x'.join(map(str, lay['out_shape']))}"
        else:
            shape = ""
        fold = f"{lay['pe']} x {lay['simd']}" if "pe" in lay else ""
        t.add_row(
            lay["name"],
            lay["engine"],
            shape,
            lay.get("weight_format") or "",
            lay.get("act_format") or "",
            fold,
            str(lay["reuse"] or ""),
            lay["widths"]["accumulator"] if "widths" in lay else "",
            str(lay["latency_cycles"]),
        )
    out.print(t)
    hw, comp = report["hardware"], report["compression"]
    out.print(
        f"latency {hw['latency_cycles']} cycles, II {hw['ii_cycles']} cycles, {hw['multipliers']} multipliers; "
        f"weights {comp['compressed_bytes']:,} B vs {comp['fp32_bytes']:,} B float32 ({comp['ratio']}x)"
    )
    acc = report.get("accuracy")
    if acc:
        out.print(
            f"top-1 on {acc['dataset']} ({acc['samples']} samples): float {100 * acc['float']:.2f}%, "
            f"quantized {100 * acc['quantized']:.2f}%"
        )


def _cmd_verify(args: argparse.Namespace) -> int:
    from hwgen.build import load_build
    from hwgen.verify import run_verify

    csim, rtl = args.csim, args.rtl
    if not csim and not rtl:
        csim = rtl = True
    b = load_build(Path(args.out))
    with _progress(f"verifying {args.out}") as step:
        section = run_verify(
            b,
            csim=csim,
            rtl=rtl,
            n=args.vectors,
            data=args.data and Path(args.data),
            seed=args.seed,
            backpressure=args.backpressure,
            progress=step,
        )
    t = Table(title="golden model (sim.exact) vs simulation")
    for col in (
        "simulation",
        "vectors",
        "mismatching vectors",
        "mismatching bits",
        "latency (measured / model)",
        "time",
    ):
        t.add_column(col)
    failed = False
    for kind in ("csim", "rtl"):
        r = section.get(kind)
        if not r or (kind == "csim" and not csim) or (kind == "rtl" and not rtl):
            continue
        failed |= r["mismatches"] > 0
        lat = f"{r['latency_cycles']} / {r['latency_estimate']} cycles" if kind == "rtl" else "-"
        t.add_row(
            kind, str(r["vectors"]), str(r["mismatches"]), str(r["mismatched_bits"]), lat, f"{r['seconds']:.1f} s"
        )
    out.print(t)
    for kind in [k for k, ran in (("csim", csim), ("rtl", rtl)) if ran]:
        r = section.get(kind) or {}
        if r.get("first_mismatch"):
            console.print(f"[red]VerificationError[/]: {r['first_mismatch']}")
    if failed:
        return 1
    out.print("[green]PASS[/]: every output bit matches the golden model")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from hwgen.build import load_build
    from hwgen.hw.yosys_synth import synth_yosys
    from hwgen.report.summary import write_json

    b = load_build(Path(args.out))
    with _progress("synthesizing with Yosys (synth_xilinx)") as step:
        step("yosys")
        res = synth_yosys(b.out_dir / "rtl", b.schedule.top, b.out_dir / "synth")
    report = dict(b.report)
    report["hardware"]["resources"] = {k: res[k] for k in ("LUT", "FF", "DSP", "BRAM")}
    report["hardware"]["resources_source"] = "yosys synth_xilinx"
    write_json(b.out_dir / "report.json", report)
    t = Table(title=f"{b.schedule.top}: Yosys synth_xilinx")
    for k in ("LUT", "FF", "DSP", "BRAM"):
        t.add_column(k)
    t.add_row(*(str(res[k]) for k in ("LUT", "FF", "DSP", "BRAM")))
    out.print(t)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from hwgen.build import load_build

    _print_build(load_build(Path(args.out)).report)
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwgen", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"hwgen {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-v", "--verbose", action="store_true", help="log what each pass does")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="compile an ONNX model into HLS C++ and Verilog")
    b.add_argument("model", help="the ONNX model file")
    b.add_argument("-o", "--out", required=True, help="output directory (written atomically)")
    b.add_argument("--config", help="build configuration (TOML)")
    b.add_argument("--calib", help="calibration data (.npz with x, optionally y for accuracy)")
    b.add_argument("--weight-bits", type=int, help="default weight width (overrides the config)")
    b.add_argument("--act-bits", type=int, help="default activation width (overrides the config)")
    b.add_argument("--force", action="store_true", help="replace OUT if it exists")
    b.set_defaults(func=_cmd_build)

    v = sub.add_parser("verify", help="check C and RTL simulation against the golden model, bit for bit")
    v.add_argument("out", help="a build directory")
    v.add_argument("--csim", action="store_true", help="C simulation with g++ (default: both)")
    v.add_argument("--rtl", action="store_true", help="RTL simulation with Verilator + cocotb (default: both)")
    v.add_argument("--vectors", type=int, default=100, help="number of vectors (default 100)")
    v.add_argument("--data", help=".npz with x: real samples instead of random codes")
    v.add_argument("--seed", type=int, default=1234, help="seed of random vectors and back-pressure")
    v.add_argument(
        "--backpressure",
        choices=["none", "random", "periodic"],
        default="random",
        help="output stalls in RTL simulation (default random)",
    )
    v.set_defaults(func=_cmd_verify)

    s = sub.add_parser("synth", help="synthesize the Verilog with Yosys and record LUT/FF/DSP/BRAM")
    s.add_argument("out", help="a build directory")
    s.set_defaults(func=_cmd_synth)

    r = sub.add_parser("report", help="print the summary of a build directory")
    r.add_argument("out", help="a build directory")
    r.set_defaults(func=_cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if getattr(args, "vectors", 1) is not None and getattr(args, "vectors", 1) < 1:
        console.print("error: --vectors must be at least 1")
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except HwgenError as e:
        if args.debug:
            raise
        console.print(f"[red]error[/]: {type(e).__name__}: {e}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except Exception as e:  # a bug in hwgen, not in the user's input: say so, keep it to one line
        if args.debug:
            raise
        console.print(
            f"[red]internal error[/]: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
            "(a bug in hwgen; rerun with --debug for the traceback and report it)",
            highlight=False,
            soft_wrap=True,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
