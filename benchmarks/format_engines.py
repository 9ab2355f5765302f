"""The low-precision MAC engine of every number format: resources, cycles, weight storage, bit-exactness.

One layer engine per format of issue 5: a 64 x 64 slice of LeNet-300-100's fc2 weights (real
trained weights, encoded by the format), LANES lanes, the accumulator requantized to s8
(HALF_EVEN, the top 8 bits). Activations: post-ReLU-like data (|N(0, 1)| * 2, seeded); block
formats' shared fields are 5 bits wide (not 8) and their activation range is the one observed on
that data (format_mac.accumulator_spec's width then stays near the data, not the field's worst case).

For each engine: Yosys synth_xilinx LUT/FF/DSP (hwgen.hw.yosys_synth), cycles (latency and II of
the plan; the RTL tests check they are exact), weight storage bits (format.storage_bits) and the
accumulator; with --verify, golden vs C simulation vs RTL simulation (random back-pressure) on
extreme + random activation codes.

    .venv/bin/python benchmarks/format_engines.py [--no-verify] [--no-yosys] [--lanes 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ROOT, provenance, save
from hwgen.hw.format_engines import (
    activation_beats,
    activation_codes,
    datapath_text,
    emit_hls_engine,
    emit_rtl_engine,
    golden,
    plan_format_engine,
    run_shape,
)
from hwgen.hw.plan import IntType, Requant
from hwgen.numerics import Binary, BlockCodes, BlockFloat, BlockLog, BlockMinifloat, Rounding, Ternary, parse_format

LENET = ROOT / "models" / "lenet300" / "lenet300.onnx"
SEED = 5
M = K = 64

#: label -> (weight format, activation format, how integer products are built: None = the plan's default)
FORMATS: dict[str, tuple[str, str, str]] = {
    "Fixed W8A8 (DSP)": ("fixed<8,8>", "fixed<8,4>", "dsp"),
    "Fixed W8A8 (LUT)": ("fixed<8,8>", "fixed<8,4>", "lut"),
    "MiniFloat W8A8 E4M3": ("minifloat<e4m3,bias=7,nodenorm>", "minifloat<e4m3,bias=7,nodenorm>", None),
    "MiniFloat W8A8 E4M3 denormal": ("minifloat<e4m3,bias=7,denorm>", "minifloat<e4m3,bias=7,denorm>", None),
    "BFP W8A8": ("bfp<m7,e5,block=8>", "bfp<m7,e5,block=8>", "dsp"),
    "BFP W6A8": ("bfp<m5,e5,block=8>", "bfp<m7,e5,block=8>", "dsp"),
    "BFP W4A8": ("bfp<m3,e5,block=8>", "bfp<m7,e5,block=8>", "dsp"),
    "Block minifloat W8A8 block 8": (
        "bminifloat<e4m3,b5,block=8,denorm>",
        "bminifloat<e4m3,b5,block=8,denorm>",
        None,
    ),
    "Block log W8 block 8, A8 fixed": ("blog<e7,b5,block=8>", "fixed<8,4>", "dsp"),
    "Binary W1, A8 fixed": ("binary<channel>", "fixed<8,4>", "dsp"),
    "Binary W1A1 (XNOR)": ("binary<channel>", "binary<alpha=1.0>", "dsp"),
    "Ternary W2, A8 fixed": ("ternary<channel>", "fixed<8,4>", "dsp"),
}


def lenet_fc2() -> np.ndarray:
    """A 64 x 64 slice of the trained fc2 weights of LeNet-300-100 ([out, in])."""
    model = onnx.load(str(LENET))
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 2]
    w = sorted(weights, key=lambda a: a.size)[-2]  # fc1 784x300 is the largest, then fc2 300x100
    w = w if w.shape[0] < w.shape[1] else w.T  # [out, in]
    return np.asarray(w[:M, :K], dtype=np.float64)


def _encode(fmt, x: np.ndarray):
    """Codes of x: binary/ternary alphas per output channel, block formats blocked along K."""
    if isinstance(fmt, Binary | Ternary):
        return fmt.encode(x, rounding=Rounding.HALF_EVEN, axis=0)
    if isinstance(fmt, BlockFloat | BlockMinifloat | BlockLog):
        return fmt.encode(x, rounding=Rounding.HALF_EVEN, axis=-1)
    return fmt.encode(x, rounding=Rounding.HALF_EVEN)


def plan_for(label: str, w_float: np.ndarray, a_float: np.ndarray, lanes: int):
    wf, af, mul = FORMATS[label]
    w_fmt, a_fmt = parse_format(wf), parse_format(af)
    w_codes = _encode(w_fmt, w_float)
    a_codes = _encode(a_fmt, a_float)
    a_shared = None
    if isinstance(a_codes, BlockCodes) and a_codes.axis is not None:
        a_shared = (int(a_codes.shared.min()), int(a_codes.shared.max()))
    probe = plan_format_engine("probe", w_fmt, w_codes, a_fmt, lanes=lanes, a_shared=a_shared, mul=mul)
    shift = probe.acc.width - 8
    rq = Requant(shift, Rounding.HALF_EVEN, -128, 127)
    name = "fmac_" + "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")
    plan = plan_format_engine(
        name, w_fmt, w_codes, a_fmt, lanes=lanes, a_shared=a_shared, mul=mul, requant=rq, out=IntType(8, True),
        source=f"{label}: LeNet-300-100 fc2[:{M}, :{K}]",
    )  # fmt: skip
    return plan, a_codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--no-yosys", action="store_true")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--random", type=int, default=8, help="random activation vectors beside the extreme ones")
    ap.add_argument("--only", action="append", help="run only these labels")
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    w_float = lenet_fc2()
    a_float = np.abs(rng.normal(size=(64, K))) * 2.0
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwgen_fmac_bench_") as tmp:
        for label in FORMATS:
            if args.only and label not in args.only:
                continue
            plan, _ = plan_for(label, w_float, a_float, args.lanes)
            row = {
                "format": label,
                "weights": plan.w_fmt.name,
                "activations": plan.a_fmt.name,
                "a_shared": plan.a_shared,
                "datapath": datapath_text(plan),
                "acc_bits": plan.acc.width,
                "acc_hw_bits": plan.acc_hw_bits,
                "latency_cycles": plan.latency,
                "ii_cycles": plan.ii,
                "weight_storage_bits": plan.weight_storage_bits(),
            }
            work = Path(tmp) / plan.name
            emit_rtl_engine(plan, work / "rtl")
            if not args.no_yosys:
                from hwgen.hw.yosys_synth import synth_yosys

                res = synth_yosys(work / "rtl", plan.name, work / "yosys")
                row.update(
                    LUT=res["LUT"], FF=res["FF"], DSP=res["DSP"], BRAM=res["BRAM"], yosys_s=round(res["seconds"], 1)
                )
            if not args.no_verify:
                from hwgen.hw.csim import run_csim
                from hwgen.hw.rtl_sim import run_rtl

                a_ver = activation_codes(plan, np.random.default_rng(SEED), args.random)
                x = activation_beats(plan, a_ver)
                want = golden(plan, a_ver)
                emit_hls_engine(plan, work / "hls")
                c = run_csim(work / "hls", x, work_dir=work / "csim")
                r = run_rtl(work / "rtl", run_shape(plan), x, work_dir=work / "sim", backpressure="random", seed=SEED)
                row.update(
                    vectors=int(x.shape[0]),
                    csim_mismatches=int((c.outputs != want).sum()),
                    rtl_mismatches=int((r.outputs != want).sum()),
                    rtl_latency=int(r.latency_cycles),
                )
            rows.append(row)
            print(row, flush=True)
    doc = {"provenance": provenance(SEED), "m": M, "k": K, "lanes": args.lanes, "rows": rows}
    save("format_engines", doc, markdown(rows, args.lanes))


def markdown(rows: list[dict], lanes: int) -> str:
    head = (
        f"# Format MAC engines: one {M}x{K} layer (LeNet-300-100 fc2 slice), {lanes} lanes, "
        "output requantized to s8\n\n"
        "| format | weights x activations | datapath | LUT | FF | DSP | cycles (latency / II) | weight bits | acc bits "
        "| csim / RTL mismatches |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        ver = f"{r['csim_mismatches']} / {r['rtl_mismatches']} of {r['vectors'] * M}" if "vectors" in r else "-"
        lines.append(
            f"| {r['format']} | `{r['weights']}` x `{r['activations']}` | {r['datapath']} | {r.get('LUT', '-')} "
            f"| {r.get('FF', '-')} | {r.get('DSP', '-')} | {r['latency_cycles']} / {r['ii_cycles']} "
            f"| {r['weight_storage_bits']} | {r['acc_bits']} | {ver} |"
        )
    notes = (
        "\n\nYosys 0.70 `synth_xilinx -flatten -abc9` (hwgen.hw.yosys_synth). Block formats use 5-bit shared fields; "
        "activation shared ranges are the ones observed on the benchmark data. Weight bits: `format.storage_bits` "
        "(elements + shared fields + alpha scales). Cycles from the plan (the RTL tests check them exactly; "
        "`rtl_latency` in the JSON is the measured one).\n"
    )
    return head + "\n".join(lines) + notes


if __name__ == "__main__":
    main()
