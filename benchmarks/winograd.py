"""Winograd F(2x2,3x3): multipliers and cycles against the direct conv engine, and MNIST accuracy.

Hardware table: for each layer, the Winograd engine at a chosen (PE, SIMD) and the direct
line-buffer engine with the fewest multipliers whose interval (II) is no longer, both emitted as
Verilog and counted by Yosys (inferred `$mul` cells, hwgen.hw.winograd.yosys_multipliers; with
--xilinx also synth_xilinx DSP48 cells for the first layer). Cycles are the engines' cycle models
(held equal to RTL simulation by rtl_tests/test_winograd_conv.py and rtl_tests/test_engines.py); with
--rtl the first layer's two designs also run in RTL simulation on MNIST-independent random codes,
checked bit for bit against sim.exact.

Accuracy table: LeNet-5 and the residual CNN on the 10,000 MNIST test images, float reference and
golden model, with every eligible conv rewritten (F(2x2,3x3), and "auto" per layer). The integer
datapath is exact, so the golden model's top-1 (indeed every output code) must equal the direct
one; the float reference differs by rounding only (max |logit difference| reported).

    .venv/bin/python benchmarks/winograd.py [--images 10000] [--rtl] [--xilinx]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ROOT, provenance, save
from hwgen.config import config_from_dict
from hwgen.datasets import load_mnist
from hwgen.frontend import import_onnx
from hwgen.hw import winograd as hw
from hwgen.hw.engine_timing import conv_timing
from hwgen.hw.rtl_emit import emit_rtl
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.passes.winograd import winograd
from hwgen.sim import exact, reference

CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"
MODELS = {name: ROOT / "models" / name / f"{name}.onnx" for name in ("lenet5", "rescnn")}
SEED = 0


def synthetic_layer() -> Graph:
    """A 9 -> 8 channel 3x3 conv (pad 1) on 8x8 with ReLU, quantized at W8A8: the equal-throughput pair."""
    rng = np.random.default_rng(SEED)
    from onnx import TensorProto, numpy_helper

    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 9, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.3, 8).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 9, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = canonicalize(import_onnx(model)).graph
    calib = np.abs(rng.normal(0, 1, (64, 9, 8, 8)))
    return quantize_fixed(g, calib, config_from_dict({})).graph


def quantized_model(name: str) -> tuple[Graph, Graph]:
    """(float canonical graph, W8A8 quantized graph) of a bundled model, calibrated on MNIST."""
    g = canonicalize(import_onnx(MODELS[name], name=name)).graph
    with np.load(CALIB) as f:
        calib = f["x"]
    return g, quantize_fixed(g, calib, config_from_dict({})).graph


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def fewest_direct(p: hw.WinogradConvPlan) -> tuple[int, int]:
    """(PE, SIMD) of the direct engine with the fewest multipliers whose II is at most the Winograd engine's."""
    options = sorted(
        ((pe * simd, -pe, pe, simd) for pe in divisors(p.channels_out) for simd in divisors(p.channels_in)),
    )
    for _n, _neg, pe, simd in options:
        if conv_timing(hw.direct_counterpart(p, pe=pe, simd=simd)).ii <= p.ii:
            return pe, simd
    return options[-1][2], options[-1][3]


def hardware_row(label: str, p: hw.WinogradConvPlan, work: Path, xilinx: bool) -> dict:
    pe, simd = fewest_direct(p)
    d = hw.direct_counterpart(p, pe=pe, simd=simd)
    emit_rtl(hw.standalone_schedule(d, "dtop"), work / "direct")
    hw.emit_standalone_rtl(p, work / "wino", "wtop")
    t = time.perf_counter()
    row = {
        "layer": label,
        "shape": f"{p.channels_in}->{p.channels_out} on {p.in_h}x{p.in_w}, pads {p.pads_begin + p.pads_end}",
        "winograd": {
            "pe": p.pe,
            "simd": p.simd,
            "multipliers_plan": p.multipliers,
            "multipliers_yosys": hw.yosys_multipliers(work / "wino", "wtop", work / "ys_wino"),
            "ii": p.ii,
            "latency": p.latency,
        },
        "direct": {
            "pe": pe,
            "simd": simd,
            "multipliers_plan": d.multipliers,
            "multipliers_yosys": hw.yosys_multipliers(work / "direct", "dtop", work / "ys_direct"),
            "ii": d.ii,
            "latency": d.latency,
        },
    }
    if xilinx:
        from hwgen.hw.yosys_synth import synth_yosys

        for key, top, folder in (("winograd", "wtop", "wino"), ("direct", "dtop", "direct")):
            res = synth_yosys(work / folder, top, work / f"xil_{folder}")
            row[key]["xilinx"] = {k: res[k] for k in ("LUT", "FF", "DSP", "BRAM", "LUTRAM")}
    row["yosys_seconds"] = round(time.perf_counter() - t, 1)
    w, d_ = row["winograd"], row["direct"]
    row["multiplier_ratio"] = round(d_["multipliers_yosys"] / w["multipliers_yosys"], 3)
    row["multiplier_ii_ratio"] = round(d_["multipliers_yosys"] * d_["ii"] / (w["multipliers_yosys"] * w["ii"]), 3)
    return row


def rtl_check(p: hw.WinogradConvPlan, graph_w: Graph, graph_d: Graph, work: Path, n: int) -> dict:
    """Both engines of the pair in RTL simulation (random back-pressure) against sim.exact."""
    from hwgen.hw.rtl_sim import run_rtl

    rng = np.random.default_rng(SEED + 1)
    fmt = exact.fixed_format(graph_w, graph_w.inputs[0])
    shape = graph_w.value(graph_w.inputs[0]).type.shape
    codes = rng.integers(fmt.min_code, fmt.max_code + 1, size=(n, *shape))
    want_w = exact.run_codes(graph_w, codes)[graph_w.outputs[0]]
    want_d = exact.run_codes(graph_d, codes)[graph_d.outputs[0]]
    x = codes.transpose(0, 2, 3, 1).reshape(n, -1)
    want = want_w.transpose(0, 2, 3, 1).reshape(n, -1)
    out = {"vectors": n, "golden_winograd_equals_direct": bool(np.array_equal(want_w, want_d))}
    d = hw.direct_counterpart(p, pe=fewest_direct(p)[0], simd=fewest_direct(p)[1])
    for key, top, folder, plan in (("winograd", "wtop", "wino", p), ("direct", "dtop", "direct", d)):
        sched = hw.standalone_schedule(plan, top)
        r = run_rtl(work / folder, sched, x, work_dir=work / f"sim_{folder}", backpressure="random", idle="random")
        out[key] = {
            "mismatching_codes": int((r.outputs != want).sum()),
            "latency_rtl": r.latency_cycles,
            "latency_model": plan.latency,
        }
    return out


def accuracy_rows(images: int) -> list[dict]:
    x, y = load_mnist("test")
    x, y = x[:images], y[:images]
    rows = []
    for name in MODELS:
        g, q = quantized_model(name)
        ref = reference.run(g, x)[g.outputs[0]].reshape(len(x), -1)
        gold = exact.run(q, x)[q.outputs[0]].reshape(len(x), -1)
        for tile in (2, "auto"):
            res_f, res_q = winograd(g, tile=tile), winograd(q, tile=tile)
            tiles = sorted({r.values["tile"] for r in res_q.records if r.values["rewritten"]})
            ref_w = reference.run(res_f.graph, x)[g.outputs[0]].reshape(len(x), -1)
            gold_w = exact.run(res_q.graph, x)[q.outputs[0]].reshape(len(x), -1)
            rows.append(
                {
                    "model": name,
                    "tile": str(tile),
                    "rewritten": sum(r.values["rewritten"] for r in res_q.records),
                    "convs": len(res_q.records),
                    "tiles": tiles,
                    "kept": sorted({r.values["reason"] for r in res_q.records if not r.values["rewritten"]}),
                    "float_top1_direct": float((ref.argmax(1) == y).mean()),
                    "float_top1_winograd": float((ref_w.argmax(1) == y).mean()),
                    "float_max_abs_logit_diff": float(np.abs(ref_w - ref).max()),
                    "golden_top1_direct": float((gold.argmax(1) == y).mean()),
                    "golden_top1_winograd": float((gold_w.argmax(1) == y).mean()),
                    "golden_codes_identical": bool(np.array_equal(gold, gold_w)),
                }
            )
            print(name, tile, rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--rtl", action="store_true", help="RTL-simulate the first layer's two engines")
    ap.add_argument("--rtl-vectors", type=int, default=8)
    ap.add_argument("--xilinx", action="store_true", help="also synth_xilinx the first layer's engines (slow)")
    args = ap.parse_args()

    synth = synthetic_layer()
    synth_w = winograd(synth, tile=2).graph
    _g, rq = quantized_model("rescnn")
    rq_w = winograd(rq, tile=2).graph
    node = lambda g, name: next(n for n in g.nodes if n.name == name)  # noqa: E731
    convs = [n for n in rq_w.nodes if n.op == "WinogradConv"]
    layers = [
        ("synthetic conv (equal-throughput pair)", hw.plan_from_node(synth_w, node(synth_w, "conv"), pe=1, simd=1)),
        (f"rescnn {convs[0].onnx_name}", hw.plan_from_node(rq_w, convs[0], pe=1, simd=1)),
        (f"rescnn {convs[1].onnx_name}", hw.plan_from_node(rq_w, convs[1], pe=1, simd=1)),
        (f"rescnn {convs[1].onnx_name}", hw.plan_from_node(rq_w, convs[1], pe=2, simd=2)),
    ]
    hw_rows, rtl = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, p) in enumerate(layers):
            work = Path(tmp) / f"layer{i}"
            hw_rows.append(hardware_row(label, p, work, xilinx=args.xilinx and i == 0))
            print(hw_rows[-1], flush=True)
            if i == 0 and args.rtl:
                synth_d = synth  # the same quantized graph with the direct Conv
                rtl = rtl_check(p, synth_w, synth_d, work, args.rtl_vectors)
                print(rtl, flush=True)
    acc_rows = accuracy_rows(args.images)

    md = [
        "# Winograd F(2x2,3x3) vs the direct conv engine",
        "",
        "Multipliers: Yosys-inferred `$mul` cells of each engine's Verilog. Direct engine: the fewest multipliers",
        "whose II is at most the Winograd engine's. Cycles from the engines' cycle models (RTL-exact, see the tests).",
        "Foldings come in divisors of the channel counts, so the direct engine found is often faster than needed:",
        "the last column normalizes by throughput, (direct mults x direct II) / (Winograd mults x Winograd II).",
        "",
        "| layer | shape | Winograd PE x SIMD | Winograd mults | Winograd II / latency | direct PE x SIMD "
        "| direct mults | direct II / latency | mult ratio | mult x II ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in hw_rows:
        w, d = r["winograd"], r["direct"]
        md.append(
            f"| {r['layer']} | {r['shape']} | {w['pe']} x {w['simd']} | {w['multipliers_yosys']} | {w['ii']} / "
            f"{w['latency']} | {d['pe']} x {d['simd']} | {d['multipliers_yosys']} | {d['ii']} / {d['latency']} | "
            f"{r['multiplier_ratio']}x | {r['multiplier_ii_ratio']}x |"
        )
    if hw_rows and "xilinx" in hw_rows[0]["winograd"]:
        w, d = hw_rows[0]["winograd"]["xilinx"], hw_rows[0]["direct"]["xilinx"]
        md += ["", f"synth_xilinx, first layer: Winograd {w}; direct {d}."]
    if rtl:
        md += [
            "",
            f"RTL simulation, first layer, {rtl['vectors']} random vectors with random back-pressure: Winograd "
            f"{rtl['winograd']['mismatching_codes']} mismatching codes, latency RTL/model "
            f"{rtl['winograd']['latency_rtl']}/{rtl['winograd']['latency_model']}; direct "
            f"{rtl['direct']['mismatching_codes']} mismatching codes, latency "
            f"{rtl['direct']['latency_rtl']}/{rtl['direct']['latency_model']}; golden Winograd == direct: "
            f"{rtl['golden_winograd_equals_direct']}.",
        ]
    md += [
        "",
        f"## MNIST ({args.images} test images, W8A8)",
        "",
        "| model | tile | convs rewritten | float top-1 direct / Winograd | float max abs logit diff "
        "| golden top-1 direct / Winograd | golden codes identical |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in acc_rows:
        md.append(
            f"| {r['model']} | {r['tile']} ({', '.join(r['tiles']) or '-'}) | {r['rewritten']} of {r['convs']} "
            f"| {r['float_top1_direct']:.2%} / {r['float_top1_winograd']:.2%} | {r['float_max_abs_logit_diff']:.2e} "
            f"| {r['golden_top1_direct']:.2%} / {r['golden_top1_winograd']:.2%} | {r['golden_codes_identical']} |"
        )
    kept = sorted({k for r in acc_rows for k in r["kept"]})
    md += ["", f"Convolutions kept direct, by reason: {'; '.join(kept)}.", ""]
    doc = {"provenance": provenance(SEED), "hardware": hw_rows, "rtl": rtl, "accuracy": acc_rows}
    save("winograd", doc, "\n".join(md))


if __name__ == "__main__":
    main()
