"""Float vs PTQ vs QAT top-1 on the full MNIST test set (fixed point), with the QAT export checked bit-exact.

For each model and width: the quantize pass picks power-of-two formats from calibration on the
512 bundled training images (PTQ); QAT then fine-tunes the float weights through sim.torch's
fake quantization on the 60,000 training images with those formats kept, and exports the graph.
Top-1 of the float reference (sim.reference), of PTQ and of the QAT export (both sim.exact) over
the 10,000 test images; the exported graph's sim.exact output is compared with the torch float64
forward on every test image (the exact equivalence guarantee).

    .venv/bin/python benchmarks/qat_mnist.py [--model lenet300 --model lenet5] [--bits 8 --bits 4]
        [--epochs N] [--lr LR] [--calibration minmax|percentile] [--train-limit N] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ROOT, provenance, save
from hwgen.config import config_from_dict
from hwgen.datasets import load_mnist
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import exact, reference
from hwgen.train.loop import FitConfig
from hwgen.train.qat import qat

MODELS = {name: ROOT / "models" / name / f"{name}.onnx" for name in ("lenet300", "lenet5")}
#: QAT epochs and Adam learning rate per model: the MLP is cheap and gains from longer training at a
#: higher rate; LeNet-5 takes ~2 min per epoch on one thread and is close to float after two
RECIPES = {"lenet300": (6, 1e-3), "lenet5": (2, 3e-4)}
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"
EVAL_BATCH = 2000


def _float_top1(g: Graph, x: np.ndarray, y: np.ndarray) -> float:
    hits = sum(
        int((reference.run(g, x[i : i + EVAL_BATCH])[g.outputs[0]].argmax(1) == y[i : i + EVAL_BATCH]).sum())
        for i in range(0, len(x), EVAL_BATCH)
    )
    return hits / len(x)


def _exact_top1(q: Graph, x: np.ndarray, y: np.ndarray) -> float:
    hits = sum(
        int((exact.run(q, x[i : i + EVAL_BATCH])[q.outputs[0]].argmax(1) == y[i : i + EVAL_BATCH]).sum())
        for i in range(0, len(x), EVAL_BATCH)
    )
    return hits / len(x)


def run(model: str, bits: int, args: argparse.Namespace, data: dict[str, np.ndarray], float_top1: float) -> dict:
    g = canonicalize(import_onnx(MODELS[model])).graph
    cfg = config_from_dict({"quantize": {"weight_bits": bits, "act_bits": bits, "calibration": args.calibration}})
    q = quantize_fixed(g, data["calib"], cfg).graph
    ptq = _exact_top1(q, data["x_test"], data["y_test"])
    epochs = args.epochs if args.epochs is not None else RECIPES[model][0]
    lr = args.lr if args.lr is not None else RECIPES[model][1]
    fit_cfg = FitConfig(epochs=epochs, batch_size=args.batch_size, lr=lr, seed=args.seed, progress=True)
    t = time.perf_counter()
    res = qat(q, data["x_train"], data["y_train"], fit_cfg, float_graph=g)
    train_s = time.perf_counter() - t
    qat_top1 = _exact_top1(res.graph, data["x_test"], data["y_test"])
    mismatches = res.check_exact(data["x_test"])
    formats = {
        n.name: {
            "weight": str(res.graph.value(n.inputs[1]).type.format),
            "out": str(res.graph.value(n.outputs[0]).type.format),
        }
        for n in res.graph.nodes
        if n.op in ("Dense", "Conv")
    }
    return {
        "model": model,
        "bits": bits,
        "float_top1": float_top1,
        "ptq_top1": ptq,
        "qat_top1": qat_top1,
        "qat_minus_float_points": round(100 * (qat_top1 - float_top1), 3),
        "train_seconds": round(train_s, 1),
        "qat_epochs": epochs,
        "qat_lr": lr,
        "epochs": [
            {"epoch": e.epoch, "loss": round(e.loss, 5), "train_acc": e.accuracy, "seconds": round(e.seconds, 1)}
            for e in res.history.epochs
        ],
        "exact_mismatching_samples": mismatches,
        "test_samples": len(data["x_test"]),
        "formats": formats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), action="append")
    ap.add_argument("--bits", type=int, action="append")
    ap.add_argument("--epochs", type=int, default=None, help="QAT epochs (default: per model, RECIPES)")
    ap.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: per model, RECIPES)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--calibration", choices=("minmax", "percentile"), default="minmax")
    ap.add_argument("--train-limit", type=int, default=None, help="first N training images (default: all 60k)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing shared cores)")
    ap.add_argument("--name", default="qat_mnist", help="results file stem")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = args.model or ["lenet300", "lenet5"]
    bits = args.bits or [8, 4]
    x_train, y_train = load_mnist("train", limit=args.train_limit)
    x_test, y_test = load_mnist("test")
    with np.load(CALIB) as f:
        calib = f["x"]
    data = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "calib": calib}
    rows = []
    for m in models:
        float_top1 = _float_top1(canonicalize(import_onnx(MODELS[m])).graph, x_test, y_test)
        for b in bits:
            rows.append(run(m, b, args, data, float_top1))
            r = rows[-1]
            print(
                f"{m} W{b}A{b}: float {r['float_top1']:.4f} ptq {r['ptq_top1']:.4f} qat {r['qat_top1']:.4f}", flush=True
            )
    md = [
        f"QAT on MNIST (fixed point, power-of-two formats from {args.calibration} calibration on 512 training images; "
        f"QAT on {len(x_train)} training images with those formats kept, Adam with cosine decay, batch "
        f"{args.batch_size}, {args.threads} thread(s)); top-1 over the {len(x_test)} test images.",
        "",
        "| model | format | float top-1 | PTQ top-1 | QAT top-1 | QAT - float (points) | QAT epochs, lr | "
        "QAT train s | sim.exact vs sim.torch mismatching samples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['model']} | fixed W{r['bits']}A{r['bits']} | {100 * r['float_top1']:.2f}% | "
            f"{100 * r['ptq_top1']:.2f}% | {100 * r['qat_top1']:.2f}% | {r['qat_minus_float_points']:+.2f} | "
            f"{r['qat_epochs']}, {r['qat_lr']:g} | {r['train_seconds']:.0f} | "
            f"{r['exact_mismatching_samples']} / {r['test_samples']} |"
        )
    floor = [r for r in rows if r["model"] == "lenet5" and r["bits"] == 4]
    if floor:
        ok = floor[0]["qat_minus_float_points"] >= -1.0
        md += ["", f"Floor (fixed W4A4 after QAT within 1 point of float on LeNet-5): {'met' if ok else 'NOT met'}."]
    doc = {
        "provenance": provenance(args.seed) | {"torch": torch.__version__, "threads": args.threads},
        "args": vars(args),
        "rows": rows,
    }
    save(args.name, doc, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
