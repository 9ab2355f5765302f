"""The EIE-style sparse engine: RTL-measured cycles against the dense engine, resources, and a pruned MLP.

1. Layer sweep (784 -> 64, W8A8-like codes): for weight sparsities and PE counts, the sparse
   engine's RTL-measured latency on a vector with no zero activations and on one with 50 % zeros,
   beside the dense engine with the same number of multipliers (PE x SIMD = PEs, RTL-measured),
   and the cycle model's figures.
2. Yosys (synth_xilinx) resources of the sparse engine and of the dense engine, 90 % sparsity.
3. LeNet-300-100 with the smallest 90 % weights of each layer zeroed (no fine-tuning), W8A8: every
   Dense on the sparse engine; golden vs C simulation vs RTL simulation (random back-pressure)
   on N MNIST test images, measured latency of the first image beside the model.

    .venv/bin/python benchmarks/sparse_engine.py [--images 500] [--no-yosys] [--pes 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ROOT, provenance, save
from hwgen.hw.plan import DensePlan, IntType, Requant, StreamPort
from hwgen.hw.schedule import chain_schedule, plan_dense
from hwgen.hw.sparse import chain_beats, plan_sparse_dense, replace_layers, sparse_from_dense, sparse_run
from hwgen.numerics import Rounding

LENET = ROOT / "models" / "lenet300" / "lenet300.onnx"
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"
U8 = IntType(8, False)
SEED = 1


def _single(top: str, plan) -> object:
    """A one-engine Schedule (a dense stand-in wires it; a sparse plan replaces it)."""
    dense = plan if isinstance(plan, DensePlan) else None
    if dense is None:
        rq = plan.requant
        dense = plan_dense(plan.name, plan.source, plan.weights, plan.biases, plan.inp, plan.out, rq, pe=1, simd=1)
    s = chain_schedule(
        top,
        top,
        [dense],
        StreamPort("x", "x", dense.inp, dense.in_features, 0, (dense.in_features,)),
        StreamPort("y", "y", dense.out, dense.out_features, 0, (dense.out_features,)),
    )
    return s if isinstance(plan, DensePlan) else replace_layers(s, {0: plan})


def _rtl(s, x: np.ndarray, work: Path, **kw):
    from hwgen.hw.rtl_emit import emit_rtl
    from hwgen.hw.rtl_sim import run_rtl

    d = work / s.top
    emit_rtl(s, d / "rtl")
    return run_rtl(d / "rtl", s, x, work_dir=d / "sim", **kw)


def layer_sweep(work: Path, sparsities: list[float], pes_list: list[int], yosys: bool) -> list[dict]:
    from hwgen.sim.integer_kernels import dense as dense_kernel

    k, m = 784, 64
    rng = np.random.default_rng(SEED)
    w_full = rng.integers(-128, 128, size=(m, k))
    w_full[w_full == 0] = 1
    order = rng.permutation(w_full.size)
    b = rng.integers(-2000, 2001, size=m)
    rq = Requant(10, Rounding.HALF_EVEN, 0, 255)
    x_dense = rng.integers(1, 256, size=(1, k))
    x_half = np.where(rng.random((1, k)) < 0.5, x_dense, 0)
    x = np.vstack([x_dense, x_half])
    rows = []
    for pes in pes_list:
        dense_plan = plan_dense("fc", "/fc/Gemm", w_full, b, U8, U8, rq, pe=pes, simd=1)
        d = _single(f"dense_p{pes}", dense_plan)
        r = _rtl(d, x[:1], work)
        dense_cycles = r.latency_cycles
        dense_res = None
        if yosys:
            from hwgen.hw.yosys_synth import synth_yosys

            dense_res = synth_yosys(work / d.top / "rtl", d.top, work / d.top / "yosys")
        for sparsity in sparsities:
            w = w_full.copy().reshape(-1)
            w[order[: round(sparsity * w.size)]] = 0
            w = w.reshape(m, k)
            sp = plan_sparse_dense("fc", "/fc/Gemm", w, b, U8, U8, rq, pes=pes, index_bits=4)
            s = _single(f"sparse_p{pes}_s{int(sparsity * 100)}", sp)
            t = time.perf_counter()
            res = []
            for i in range(2):  # each vector alone: its latency
                ri = _rtl(s, x[i : i + 1], work)
                want = dense_kernel(x[i : i + 1], w, b, shift=rq.shift, rounding=rq.rounding, lo=rq.lo, hi=rq.hi)
                assert np.array_equal(ri.outputs, want), "sparse engine output differs from the golden model"
                res.append(ri.latency_cycles)
            model = [int(sparse_run(sp, x[i : i + 1]).latencies[0]) for i in range(2)]
            row = {
                "pes": pes,
                "sparsity": sparsity,
                "density": round(sp.density, 4),
                "entries": sp.csc.entries,
                "padding": sp.csc.padding,
                "storage_bits": sp.csc.storage(sp.w.bits).total_bits,
                "dense_bits": sp.csc.storage(sp.w.bits).dense_bits,
                "sparse_cycles": res[0],
                "sparse_cycles_half_zero_inputs": res[1],
                "model_cycles": model,
                "dense_cycles": dense_cycles,
                "ratio": round(res[0] / dense_cycles, 4),
                "seconds": round(time.perf_counter() - t, 1),
            }
            if yosys and sparsity == 0.9:
                from hwgen.hw.yosys_synth import synth_yosys

                sres = synth_yosys(work / s.top / "rtl", s.top, work / s.top / "yosys")
                row["yosys_sparse"] = {k_: sres[k_] for k_ in ("LUT", "FF", "DSP", "BRAM", "LUTRAM") if k_ in sres}
                row["yosys_dense"] = {
                    k_: dense_res[k_] for k_ in ("LUT", "FF", "DSP", "BRAM", "LUTRAM") if k_ in dense_res
                }
            print(row, flush=True)
            rows.append(row)
    return rows


def _folding(k: int, m: int, multipliers: int) -> tuple[int, int]:
    """(PE, SIMD) of the dense engine with `multipliers` = PE x SIMD (PE | m, SIMD | k), largest PE first."""
    for pe in range(min(multipliers, m), 0, -1):
        if multipliers % pe == 0 and m % pe == 0 and k % (multipliers // pe) == 0:
            return pe, multipliers // pe
    raise ValueError(f"no dense folding of {m}x{k} has {multipliers} multipliers")


def pruned_lenet(work: Path, sparsity: float) -> Path:
    """models/lenet300 with the smallest-|w| `sparsity` of each Gemm weight set to zero."""
    model = onnx.load(str(LENET))
    gemm_weights = {n.input[1] for n in model.graph.node if n.op_type in ("Gemm", "MatMul")}
    for init in model.graph.initializer:
        if init.name in gemm_weights:
            w = numpy_helper.to_array(init).copy()
            flat = np.abs(w).reshape(-1)
            cut = np.sort(flat)[int(sparsity * flat.size) - 1]
            w[np.abs(w) <= cut] = 0
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    path = work / "lenet300_pruned.onnx"
    onnx.save(model, str(path))
    return path


def lenet(work: Path, images: int, pes: int) -> dict:
    from hwgen.build import compile_model
    from hwgen.config import config_from_dict
    from hwgen.hw.csim import run_csim
    from hwgen.hw.hls_emit import emit_hls
    from hwgen.hw.rtl_emit import emit_rtl
    from hwgen.hw.rtl_sim import run_rtl
    from hwgen.sim.exact import encode_input, run_codes

    path = pruned_lenet(work, 0.9)
    cfg = config_from_dict({"quantize": {"weight_bits": 8, "act_bits": 8}})
    _g, qg, sched, _report = compile_model(path, cfg, CALIB, lambda _s: None)
    plans = {}
    for i, p in enumerate(sched.layers):
        n_pes = min(pes, p.out_features)
        plans[i] = sparse_from_dense(p, pes=n_pes)
    s = replace_layers(sched, plans)
    data = np.load(ROOT / "models" / "lenet300" / "mnist_test_1k.npz")
    x, y = data["x"][:images], data["y"][:images]
    codes = encode_input(qg, x).reshape(images, -1)
    golden = run_codes(qg, codes)[qg.outputs[0]].reshape(images, -1)
    emit_hls(s, work / "lenet_hls")
    t = time.perf_counter()
    c = run_csim(work / "lenet_hls", codes, work / "lenet_csim")
    csim_s = time.perf_counter() - t
    emit_rtl(s, work / "lenet_rtl")
    r = run_rtl(work / "lenet_rtl", s, codes, work_dir=work / "lenet_sim", backpressure="random", seed=SEED)
    from hwgen.hw.timing import chain_latency

    dense_lat = sched.latency
    same = chain_latency(
        [(p.in_features, p.out_features, *_folding(p.in_features, p.out_features, p.pes)) for p in s.layers]
    )
    return {
        "images": images,
        "pes": pes,
        "layers": [
            {
                "name": p.name,
                "shape": [p.out_features, p.in_features],
                "density": round(p.density, 4),
                "entries": p.csc.entries,
                "padding": p.csc.padding,
                "pes": p.pes,
            }
            for p in s.layers
        ],
        "golden_top1": round(float((golden.argmax(1) == y).mean()), 4),
        "csim_mismatches": int((c.outputs != golden).any(axis=1).sum()),
        "rtl_mismatches": int((r.outputs != golden).any(axis=1).sum()),
        "csim_seconds": round(csim_s, 1),
        "rtl_seconds": round(r.seconds, 1),
        "rtl_latency_image0": r.latency_cycles,
        "model_latency_image0": int(chain_beats(s, codes[0])[-1]),
        "schedule_latency_worst_case": s.latency,
        "dense_schedule_latency": dense_lat,
        "dense_schedule_multipliers": sum(p.multipliers for p in sched.layers),
        "dense_same_multipliers_latency": same,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--pes", type=int, default=4, help="PEs per layer of the pruned LeNet")
    ap.add_argument("--no-yosys", action="store_true")
    ap.add_argument("--no-sweep", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hwgen_sparse_") as tmp:
        work = Path(tmp)
        sweep = [] if args.no_sweep else layer_sweep(work, [0.5, 0.8, 0.9, 0.95], [4, 8], not args.no_yosys)
        net = lenet(work, args.images, args.pes)
    md = [
        "## Sparse engine vs dense engine, layer 784 -> 64 (RTL-measured latency, cycles)",
        "",
        "| PEs = multipliers | weight sparsity | entries (padding) | sparse, no zero inputs | "
        "sparse, 50 % zero inputs | dense engine | sparse / dense | storage bits (dense) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sweep:
        md.append(
            f"| {r['pes']} | {100 * r['sparsity']:.0f}% | {r['entries']} ({r['padding']}) | {r['sparse_cycles']} | "
            f"{r['sparse_cycles_half_zero_inputs']} | {r['dense_cycles']} | {r['ratio']:.3f} | "
            f"{r['storage_bits']} ({r['dense_bits']}) |"
        )
    ys = [r for r in sweep if "yosys_sparse" in r]
    if ys:
        md += [
            "",
            "## Yosys synth_xilinx, 90 % sparsity",
            "",
            "| PEs | engine | LUT | FF | DSP | BRAM | LUTRAM |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in ys:
            for kind in ("sparse", "dense"):
                q = r[f"yosys_{kind}"]
                md.append(
                    f"| {r['pes']} | {kind} | {q.get('LUT')} | {q.get('FF')} | {q.get('DSP')} | "
                    f"{q.get('BRAM')} | {q.get('LUTRAM')} |"
                )
    md += [
        "",
        f"## LeNet-300-100, smallest 90 % weights per layer zeroed (no fine-tuning), W8A8, sparse engines of "
        f"{args.pes} PEs",
        "",
        "| images | golden top-1 | csim mismatches | RTL mismatches (random back-pressure) | "
        "latency image 0 RTL / model | worst-case latency | dense engines, same multipliers | "
        "dense engines, default schedule |",
        "|---|---|---|---|---|---|---|---|",
        f"| {net['images']} | {100 * net['golden_top1']:.2f}% | {net['csim_mismatches']} | {net['rtl_mismatches']} | "
        f"{net['rtl_latency_image0']} / {net['model_latency_image0']} | {net['schedule_latency_worst_case']} | "
        f"{net['dense_same_multipliers_latency']} | {net['dense_schedule_latency']} "
        f"({net['dense_schedule_multipliers']} multipliers) |",
    ]
    save("sparse_engine", {"provenance": provenance(seed=SEED), "sweep": sweep, "lenet": net}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
