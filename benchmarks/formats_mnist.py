"""PTQ and QAT top-1 per number format on MNIST (LeNet-300-100, LeNet-5), weight storage, one engine's Yosys figures.

Formats are set by configuration (`[quantize] weight_format / act_format`, hwgen.passes.quantize_formats):
weights and activations of every MAC layer as in the format engine table; activations that feed a
non-MAC op (pooling) or the graph output stay fixed point W8. PTQ: calibration on 256 of the bundled
training images; QAT: 1 epoch on the first TRAIN_LIMIT training images (short, not converged), Adam.
Top-1 of sim.exact over the first TEST_LIMIT test images. LUT/FF/DSP: the 64x64 single-layer
engine of the same formats from benchmarks/results/format_engines.json (not re-synthesized here).

    .venv/bin/python benchmarks/formats_mnist.py [--train-limit N] [--test-limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, provenance, save
from hwgen.config import config_from_dict
from hwgen.datasets import load_mnist
from hwgen.errors import HwgenError
from hwgen.frontend import import_onnx
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.passes.quantize_formats import weight_storage_bits
from hwgen.sim import exact, reference
from hwgen.train.loop import FitConfig
from hwgen.train.qat import qat

MODELS = {name: ROOT / "models" / name / f"{name}.onnx" for name in ("lenet300", "lenet5")}
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"
#: (label, weight format, activation format, row of format_engines.json); None = fixed point W8/A8
MF = "minifloat<e4m3,bias=7,nodenorm>"
FORMATS = [
    ("Fixed W8A8", None, None, "Fixed W8A8 (DSP)"),
    (
        "MiniFloat W8A8 E4M3",
        "minifloat<e4m3,bias=7,nodenorm>",
        "minifloat<e4m3,bias=7,nodenorm>",
        "MiniFloat W8A8 E4M3",
    ),
    (
        "MiniFloat W8A8 E4M3 denormal",
        "minifloat<e4m3,bias=7,denorm>",
        "minifloat<e4m3,bias=7,denorm>",
        "MiniFloat W8A8 E4M3 denormal",
    ),
    ("BFP W8A8", "bfp<m7,e5,block=8>", "bfp<m7,e5,block=8>", "BFP W8A8"),
    ("BFP W6A8", "bfp<m5,e5,block=8>", "bfp<m7,e5,block=8>", "BFP W6A8"),
    ("BFP W4A8", "bfp<m3,e5,block=8>", "bfp<m7,e5,block=8>", "BFP W4A8"),
    (
        "Block minifloat W8A8 block 8",
        "bminifloat<e4m3,b5,block=8,denorm>",
        "bminifloat<e4m3,b5,block=8,denorm>",
        "Block minifloat W8A8 block 8",
    ),
    ("Block log W8 block 8, A8 fixed", "blog<e7,b5,block=8>", None, "Block log W8 block 8, A8 fixed"),
    ("Binary W1, A8 fixed", "binary<channel>", None, "Binary W1, A8 fixed"),
    ("Ternary W2, A8 fixed", "ternary<channel>", None, "Ternary W2, A8 fixed"),
]
BATCH = 1000


def _top1(fn, x: np.ndarray, y: np.ndarray) -> float:
    return sum(int((fn(x[i : i + BATCH]).argmax(1) == y[i : i + BATCH]).sum()) for i in range(0, len(x), BATCH)) / len(
        x
    )


def _storage(q) -> int:
    return sum(
        weight_storage_bits(q.value(n.inputs[1]).type.format, q.const(n.inputs[1]).shape)
        for n in q.nodes
        if n.op in ("Dense", "Conv")
    )


def run(model: str, fmt: tuple, data: dict, args: argparse.Namespace, engines: dict) -> dict:
    label, w, a, engine = fmt
    g = canonicalize(import_onnx(MODELS[model])).graph
    quant = {k: v for k, v in (("weight_format", w), ("act_format", a)) if v}
    q = quantize_fixed(g, data["calib"], config_from_dict({"quantize": quant})).graph
    ptq = _top1(lambda xb: exact.run(q, xb)[q.outputs[0]], data["x_test"], data["y_test"])
    t = time.perf_counter()
    fit = FitConfig(epochs=1, batch_size=128, lr=args.lr, seed=0, progress=False)
    row = {"model": model, "format": label, "weight_format": w or "fixed W8", "act_format": a or "fixed A8"}
    try:
        res = qat(q, data["x_train"], data["y_train"], fit, float_graph=g)
        row["qat_top1"] = _top1(
            lambda xb: exact.run(res.graph, xb)[res.graph.outputs[0]], data["x_test"], data["y_test"]
        )
        row["qat_exact_mismatches"] = res.check_exact(data["x_test"][: args.check])
    except HwgenError as err:  # e.g. a QAT export sim.exact cannot re-encode (see the report)
        row["qat_top1"], row["qat_error"] = None, str(err)[:200]
    row["qat_seconds"] = round(time.perf_counter() - t, 1)
    e = engines.get(engine, {})
    row |= {
        "ptq_top1": ptq,
        "weight_storage_bits": _storage(q),
        "layer_formats": {
            n.name: [str(q.value(v).type.format) for v in (n.inputs[0], n.inputs[1], n.outputs[0])]
            for n in q.nodes
            if n.op in ("Dense", "Conv")
        },
        "engine": engine,
        "LUT": e.get("LUT"),
        "FF": e.get("FF"),
        "DSP": e.get("DSP"),
    }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), action="append")
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--test-limit", type=int, default=2000)
    ap.add_argument("--check", type=int, default=500, help="test images on which sim.torch == sim.exact is checked")
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x_train, y_train = load_mnist("train", limit=args.train_limit)
    x_test, y_test = load_mnist("test", limit=args.test_limit)
    with np.load(CALIB) as f:
        calib = f["x"][:256]
    data = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "calib": calib}
    engines = {r["format"]: r for r in json.loads((RESULTS / "format_engines.json").read_text())["rows"]}
    rows, floats = [], {}
    for m in args.model or ["lenet300", "lenet5"]:
        g = canonicalize(import_onnx(MODELS[m])).graph
        floats[m] = _top1(lambda xb, g=g: reference.run(g, xb)[g.outputs[0]], x_test, y_test)
        for fmt in FORMATS:
            rows.append(run(m, fmt, data, args, engines))
            r = rows[-1]
            print(f"{m} {fmt[0]}: ptq {r['ptq_top1']:.4f} qat {r['qat_top1']} ({r['qat_seconds']} s)", flush=True)
    md = [
        f"Number formats on MNIST by configuration (hwgen.passes.quantize_formats): top-1 of sim.exact over the "
        f"first {len(x_test)} test images; PTQ calibrated on 256 training images; QAT = 1 epoch on the first "
        f"{len(x_train)} training images (short), Adam lr {args.lr}, 1 thread. Activations feeding pooling or the "
        "output stay fixed W8. Weight storage: all MAC weights with their shared fields. LUT/FF/DSP: one 64x64 "
        "layer engine of that format from benchmarks/results/format_engines.json.",
        "",
        "| model | format | weights | activations | float | PTQ | QAT | weight storage (bits) | LUT | FF | DSP |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        qat_s = f"{100 * r['qat_top1']:.2f}%" if r["qat_top1"] is not None else "n/a (see json)"
        md.append(
            f"| {r['model']} | {r['format']} | {r['weight_format']} | {r['act_format']} "
            f"| {100 * floats[r['model']]:.2f}% | {100 * r['ptq_top1']:.2f}% | {qat_s} "
            f"| {r['weight_storage_bits']} | {r['LUT']} | {r['FF']} | {r['DSP']} |"
        )
    doc = {
        "provenance": provenance(0) | {"torch": torch.__version__},
        "args": vars(args),
        "float": floats,
        "rows": rows,
    }
    save("formats_mnist", doc, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
