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
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from hwgen import __version__
from hwgen.compress import command as compress_command
from hwgen.errors import HwgenError
from hwgen.search import command as search_command

if TYPE_CHECKING:
    from hwgen.build import LoadedBuild
    from hwgen.hw.devices import Device

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
    from hwgen.config import load_config, with_hardware, with_overrides

    cfg = with_overrides(load_config(args.config), weight_bits=args.weight_bits, act_bits=args.act_bits)
    cfg = with_hardware(cfg, device=args.device)
    if args.device is not None:
        from hwgen.hw.devices import get_device

        dev = get_device(args.device)
        if dev.family == "xilinx":  # the vendor scripts target the device's part
            cfg = with_hardware(cfg, part=dev.part)
    with _progress(f"building {args.model}") as step:
        res = build(
            Path(args.model),
            Path(args.out),
            cfg,
            calib=args.calib and Path(args.calib),
            force=args.force,
            progress=step,
            html=True,
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


SYNTH_FLOWS = ("yosys-xilinx", "ecp5", "ice40", "vivado", "vitis")
#: the device of a place-and-route flow when neither --device nor the build's part names one
DEFAULT_DEVICE = {"ecp5": "lfe5u-85f", "ice40": "ice40hx8k"}
_SYNTH_KEYS = ("utilization", "fmax_mhz", "latency_ns", "device", "clock_mhz", "timing_met", "critical_path")


def _synth_device(flow: str, name: str | None, build_part: str) -> Device | None:
    """The Device a flow targets: --device, else the build's part if it is of the flow's family."""
    from hwgen.errors import ConfigError
    from hwgen.hw.devices import get_device

    family = {"ecp5": "ecp5", "ice40": "ice40"}.get(flow, "xilinx")
    if name is not None:
        dev = get_device(name)
        if dev.family != family:
            raise ConfigError(f"--device {name} is an {dev.family} part; --flow {flow} needs an {family} device")
        return dev
    try:
        dev = get_device(build_part)
    except ConfigError:
        dev = None
    if dev is not None and dev.family == family:
        return dev
    return get_device(DEFAULT_DEVICE[flow]) if flow in DEFAULT_DEVICE else None


def _record_synth(report: dict, source: str, resources: dict, **fields: object) -> dict:
    """report.json's hardware section after one synthesis flow: figures of earlier flows are cleared."""
    hw = dict(report["hardware"])
    for k in _SYNTH_KEYS:
        hw.pop(k, None)
    hw["resources"] = resources
    hw["resources_source"] = source
    hw.update({k: v for k, v in fields.items() if v is not None})
    if hw.get("fmax_mhz"):
        hw["latency_ns"] = round(hw["latency_cycles"] / hw["fmax_mhz"] * 1000.0, 1)
    return {**report, "hardware": hw}


def _utilization_table(title: str, util: dict) -> Table:
    t = Table(title=title)
    for col in ("resource", "used", "available", "%"):
        t.add_column(col, justify="left" if col == "resource" else "right")
    for res, u in util.items():
        pct = "" if u["percent"] is None else f"{u['percent']:.1f}"
        t.add_row(res, str(u["used"]), f"{u['available']:,}", pct)
    return t


def _utilization(resources: dict, device: Device | None) -> dict | None:
    """Used / available / percent of each resource the device has (None without a device)."""
    if device is None:
        return None
    cap = device.capacity()
    return {
        r: {"used": used, "available": cap[r], "percent": round(100.0 * used / cap[r], 2) if cap[r] else None}
        for r, used in resources.items()
        if r in cap and used is not None
    }


def _refuse_if_short(b: LoadedBuild, device: Device) -> None:
    """Refuse a place and route that cannot fit, before minutes of synthesis: the multiplier and
    block-RAM estimates are exact for the generated RTL (LUT/FF ones are rough and never refuse)."""
    from hwgen.errors import ScheduleError
    from hwgen.hw.resources import describe_short, estimate

    short = [s for s in estimate(b.schedule).shortfalls(device) if s[0] in ("DSP", "BRAM")]
    if short:
        raise ScheduleError(
            f"'{b.schedule.top}' in {b.out_dir} {describe_short(short, device)}, so it cannot be placed; "
            f"rebuild it with `hwgen build MODEL -o {b.out_dir} --device {device.name} --force` to choose "
            "foldings that fit, or choose a larger device"
        )


def _cmd_synth(args: argparse.Namespace) -> int:
    from hwgen.build import load_build
    from hwgen.report.summary import write_json

    b = load_build(Path(args.out))
    flow = args.flow
    hw_cfg = b.config.hardware
    clock = args.clock_mhz if args.clock_mhz is not None else hw_cfg.clock_mhz
    if not clock > 0:
        from hwgen.errors import ConfigError

        raise ConfigError(f"--clock-mhz {clock}: the clock must be a positive number of MHz")
    device = _synth_device(flow, args.device, hw_cfg.part)
    top = b.schedule.top

    if flow == "yosys-xilinx":
        from hwgen.hw.yosys_synth import synth_yosys

        with _progress("synthesizing with Yosys (synth_xilinx)") as step:
            step("yosys")
            res = synth_yosys(b.out_dir / "rtl", top, b.out_dir / "synth")
        resources = {k: res[k] for k in ("LUT", "FF", "DSP", "BRAM")}
        util = _utilization(resources, device)
        report = _record_synth(
            b.report, "yosys synth_xilinx", resources, utilization=util, device=device.name if device else None
        )
        write_json(b.out_dir / "report.json", report)
        t = Table(title=f"{top}: Yosys synth_xilinx")
        for k in ("LUT", "FF", "DSP", "BRAM"):
            t.add_column(k)
        t.add_row(*(str(res[k]) for k in ("LUT", "FF", "DSP", "BRAM")))
        out.print(t)
        if util and device is not None:
            out.print(_utilization_table(f"against {device.name} ({device.part})", util))
        return 0

    if flow in ("ecp5", "ice40") and device is not None:  # _synth_device always finds one for these
        from hwgen.hw.pnr import run_nextpnr

        _refuse_if_short(b, device)

        with _progress(f"place and route on {device.name} at {clock:g} MHz") as step:
            step(f"yosys synth_{flow} + nextpnr-{flow}")
            res = run_nextpnr(
                b.out_dir / "rtl", top, device, clock, b.out_dir / "pnr" / device.name, router=args.router
            )
        report = _record_synth(
            b.report,
            f"nextpnr-{flow} {device.name} (yosys synth_{flow})",
            res["resources"],
            utilization=res["utilization"],
            fmax_mhz=res["fmax_mhz"],
            device=device.name,
            clock_mhz=clock,
            timing_met=res["timing_met"],
            critical_path=res["critical_path"],
        )
        write_json(b.out_dir / "report.json", report)
        out.print(_utilization_table(f"{top} on {device.name} (nextpnr-{flow})", res["utilization"]))
        hw = report["hardware"]
        if res["fmax_mhz"] is None:
            out.print(f"no clocked path: timing met at {clock:g} MHz")
        else:
            verdict = "[green]met[/]" if res["timing_met"] else "[red]MISSED[/]"
            out.print(
                f"Fmax {res['fmax_mhz']:.1f} MHz (target {clock:g} MHz: {verdict}); latency "
                f"{hw['latency_cycles']} cycles = {hw['latency_ns']:,} ns at Fmax; "
                f"synth {res['seconds']['synth']:.1f} s, place and route {res['seconds']['pnr']:.1f} s"
            )
            cp = res["critical_path"]
            if cp and not res["timing_met"]:
                out.print(
                    f"critical path {cp['delay_ns']} ns ({cp['logic_ns']} logic, {cp['routing_ns']} routing): "
                    f"{cp['from']} -> {cp['to']}",
                    highlight=False,
                    soft_wrap=True,
                )
        return 0

    # vivado / vitis: the scripts are in OUT already; run them where the tool is installed
    from hwgen.hw.vendor import emit_vendor_scripts, run_vitis_hls, run_vivado, vendor_commands, vendor_tool

    if flow == "vivado" and (args.device is not None or args.clock_mhz is not None):
        part = device.part if device is not None else hw_cfg.part
        emit_vendor_scripts(b.schedule, b.out_dir, part=part, clock_mhz=clock)
        console.print(f"rewrote {b.out_dir / 'vivado'} for {part} at {clock:g} MHz")
    if flow == "vitis" and (args.device is not None or args.clock_mhz is not None):
        console.print(
            "note: hls/run_hls.tcl keeps the build's part and clock; set [hardware] part / clock_mhz "
            "in the build config and rebuild to change them"
        )
    if vendor_tool(flow) is None:
        tool = "vivado" if flow == "vivado" else "vitis_hls"
        out.print(f"{tool} is not on PATH; on a machine that has it, run:")
        for cmd in vendor_commands(flow, b.out_dir):
            out.print(f"  {cmd}", highlight=False, soft_wrap=True)
        out.print(f"report.json was not updated (it still holds {b.report['hardware'].get('resources_source')}).")
        return 0
    with _progress(f"running {flow}") as step:
        step(flow)
        res = run_vivado(b.out_dir) if flow == "vivado" else run_vitis_hls(b.out_dir, top)
    resources = res["resources"]
    report = _record_synth(
        b.report,
        "vivado (post-route)" if flow == "vivado" else "vitis_hls csynth (estimate)",
        resources,
        utilization=_utilization(resources, device),
        fmax_mhz=res["fmax_mhz"],
        device=device.name if device else None,
        clock_mhz=clock,
        timing_met=res.get("timing_met"),
    )
    write_json(b.out_dir / "report.json", report)
    t = Table(title=f"{top}: {report['hardware']['resources_source']}")
    for k in resources:
        t.add_column(k)
    t.add_row(*(str(v) for v in resources.values()))
    out.print(t)
    if res["fmax_mhz"]:
        out.print(f"Fmax {res['fmax_mhz']:.1f} MHz; latency {report['hardware']['latency_ns']:,} ns")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from hwgen.build import load_build
    from hwgen.report.html import run_from_args

    if (html := run_from_args(args)) is not None:
        console.print(f"wrote {html}")
    if not (Path(args.out) / "build.json").is_file():  # a `hwgen compress` directory has only the HTML
        if html is None:
            raise HwgenError(f"{args.out}: not a build directory (no build.json); for a compress output use --html")
        return 0
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
    b.add_argument(
        "--device",
        help="choose foldings that fit this FPGA (e.g. lfe5u-85f, xc7a100t): fastest first; "
        "a model that cannot fit is refused before anything is written",
    )
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

    s = sub.add_parser(
        "synth", help="synthesize (and place and route) the design; record resources, Fmax and latency in ns"
    )
    s.add_argument("out", help="a build directory")
    s.add_argument(
        "--flow",
        choices=SYNTH_FLOWS,
        default="yosys-xilinx",
        help="yosys-xilinx: Yosys resource counts (default); ecp5/ice40: Yosys + nextpnr place and route "
        "(utilization, Fmax); vivado/vitis: the vendor scripts in OUT (run if the tool is on PATH)",
    )
    s.add_argument(
        "--device",
        help="target device, e.g. lfe5u-85f, ice40up5k, xc7a35t (default: the build's part, else "
        + ", ".join(f"{d} for {f}" for f, d in DEFAULT_DEVICE.items())
        + ")",
    )
    s.add_argument("--clock-mhz", type=float, help="clock constraint in MHz (default: the build's clock_mhz)")
    s.add_argument(
        "--router",
        choices=("router1", "router2"),
        default="router1",
        help="nextpnr router (ecp5/ice40): router1 (default) gives the better Fmax; router2 is much faster "
        "on large, congested designs",
    )
    s.set_defaults(func=_cmd_synth)

    r = sub.add_parser("report", help="print the summary of a build directory; --html writes OUT/report.html")
    r.add_argument("out", help="a build directory (or a `hwgen compress` output directory, with --html)")
    r.add_argument("--html", action="store_true", help="also write OUT/report.html (tables and plots, one file)")
    r.set_defaults(func=_cmd_report)

    compress_command.add_parser(sub)
    search_command.add_parser(sub)
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
