"""Bit-exactness and accuracy of the bundled MNIST models at several bit widths.

For each model and width: `hwgen build` with calibration on 512 training images, top-1 accuracy
of the float reference and the golden model on the full 10,000-image MNIST test set, then golden
vs C simulation vs RTL simulation (random back-pressure) on the first N test images, with the
RTL-measured latency next to the Schedule's estimate.

    .venv/bin/python benchmarks/verify_mnist.py [--model lenet300 --model lenet5 --model rescnn]
        [--images 1000] [--bits 8 --bits 4] [--no-rtl] [--config FILE.toml]

`--model lenet300_pruned` is LeNet-300-100 after iterative magnitude pruning (models/pruned); with
`--config` holding `[hardware] sparse_threshold = 0.5` its layers run on the sparse engine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ROOT, provenance, save
from hwgen.build import accuracy, build, load_build
from hwgen.config import config_from_dict
from hwgen.datasets import load_mnist, save_npz
from hwgen.verify import run_verify

MODELS = {name: ROOT / "models" / name / f"{name}.onnx" for name in ("lenet300", "lenet5", "rescnn")}
PRUNED = {"lenet300_pruned": ROOT / "models" / "pruned" / "lenet300_pruned.npz"}
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"


def model_file(model: str, work: Path) -> Path:
    """The ONNX file of a zoo model, or of a pruned one exported into `work`."""
    if model in MODELS:
        return MODELS[model]
    from models.pruned.export import export_onnx

    return export_onnx(PRUNED[model], work / f"{model}.onnx")


def run(
    model: str,
    bits: int,
    images: int,
    work: Path,
    x_test: np.ndarray,
    y_test: np.ndarray,
    data: Path,
    rtl: bool = True,
    extra: dict | None = None,
) -> dict:
    doc = dict(extra or {})
    doc["quantize"] = {**doc.get("quantize", {}), "weight_bits": bits, "act_bits": bits}
    cfg = config_from_dict(doc)
    out = work / f"{model}_w{bits}a{bits}"
    onnx_file = model_file(model, work)
    t = time.perf_counter()
    build(onnx_file, out, cfg, calib=CALIB, force=True)
    build_s = time.perf_counter() - t
    b = load_build(out)
    from hwgen.frontend import import_onnx
    from hwgen.passes.canonicalize import canonicalize

    float_graph = canonicalize(import_onnx(onnx_file)).graph
    acc = accuracy(float_graph, b.graph, x_test, y_test, "mnist test (10k)")
    sec = run_verify(b, csim=True, rtl=rtl, n=images, data=data, backpressure="random", seed=1)
    return {
        "model": model,
        "bits": bits,
        "build_seconds": round(build_s, 2),
        "accuracy": acc,
        "verification": sec,
        "latency_estimate": b.schedule.latency,
        "ii_estimate": b.schedule.ii,
        "engines": sorted({p.engine for p in b.schedule.layers}),
        "config": doc,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--bits", type=int, action="append")
    ap.add_argument("--model", choices=sorted({*MODELS, *PRUNED}), action="append")
    ap.add_argument("--config", type=Path, help="extra build configuration (TOML), e.g. a sparse_threshold")
    ap.add_argument("--no-rtl", action="store_true", help="C simulation only")
    ap.add_argument("--name", default="verify_mnist", help="results file stem")
    args = ap.parse_args()
    bits = args.bits or [8, 4]
    models = args.model or ["lenet300"]
    x, y = load_mnist("test")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "test.npz"
        save_npz(data, x[: args.images], y[: args.images])
        for m in models:
            for b in bits:
                extra = tomllib.loads(args.config.read_text()) if args.config else None
                rows.append(run(m, b, args.images, Path(tmp), x, y, data, rtl=not args.no_rtl, extra=extra))
                print(m, b, rows[-1]["accuracy"], flush=True)
    md = [
        "| model | engines | format | float top-1 | golden top-1 | csim mismatches | RTL mismatches "
        "| latency RTL/model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v, a = r["verification"], r["accuracy"]
        rtl = None if args.no_rtl else v.get("rtl")
        rtl_cells = (
            f"{rtl['mismatches']}/{rtl['vectors']} ({rtl['mismatched_bits']} bits) | "
            f"{rtl['latency_cycles']} / {rtl['latency_estimate']} cycles"
            if rtl
            else "not run | -"
        )
        md.append(
            f"| {r['model']} | {', '.join(r['engines'])} | W{r['bits']}A{r['bits']} | {100 * a['float']:.2f}% | "
            f"{100 * a['quantized']:.2f}% | "
            f"{v['csim']['mismatches']}/{v['csim']['vectors']} ({v['csim']['mismatched_bits']} bits) | {rtl_cells} |"
        )
    save(args.name, {"provenance": provenance(seed=1), "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
