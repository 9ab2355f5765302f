"""Mixed-precision search on LeNet-5 / MNIST: the cheapest config within 0.5 point of uniform W8A8.

Calibrates on 256 MNIST test images, measures accuracy on the next N (torch float64 executor,
bit-identical to the golden model; the chosen point is re-measured with hwgen.sim.exact), seeds
the study from the per-layer sensitivity, runs <= 100 TPE trials, then builds the chosen config
with hwgen.build and verifies it bit-exact in C simulation and RTL simulation on MNIST images.

    .venv/bin/python benchmarks/search_lenet5.py [--trials 100] [--val 1000] [--images 20]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, provenance, save  # noqa: E402
from hwgen.build import build, load_build  # noqa: E402
from hwgen.config import load_config  # noqa: E402
from hwgen.datasets import load_mnist  # noqa: E402
from hwgen.search.evaluate import Evaluator, top1  # noqa: E402
from hwgen.search.search import SearchOptions, run_search, write_report  # noqa: E402
from hwgen.search.sensitivity import seed_choices, sensitivity, write_sensitivity  # noqa: E402
from hwgen.search.space import FixedPointSpace, mac_layers  # noqa: E402
from hwgen.verify import run_verify  # noqa: E402

MODEL = ROOT / "models" / "lenet5" / "lenet5.onnx"
CALIB = 256
MAX_LOSS = 0.005


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--images", type=int, default=20, help="images verified in C simulation and RTL simulation")
    ap.add_argument("--no-rtl", action="store_true", help="verify in C simulation only")
    args = ap.parse_args()
    out = RESULTS / "search_lenet5"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    x, y = load_mnist("test", limit=CALIB + args.val)
    work = Path(tempfile.mkdtemp(prefix="search_lenet5_"))
    data = work / "mnist.npz"
    np.savez(data, x=x, y=y)
    ev = Evaluator.from_files(MODEL, data, calib=CALIB, val=args.val, engine="torch")
    space = FixedPointSpace(mac_layers(ev.graph))
    sens = sensitivity(ev, space, bits=(2, 3, 4, 5))
    write_sensitivity(sens, out)
    opts = SearchOptions(
        trials=args.trials,
        seed=0,
        max_loss=MAX_LOSS,
        seeds=tuple(seed_choices(sens, MAX_LOSS)),
        storage=f"sqlite:///{work / 'study.db'}",
    )
    study = run_search(ev, space, opts, out)
    doc = write_report(study, ev, space, opts, out)
    t_search = time.perf_counter() - t0
    result = {
        "provenance": provenance(0),
        "trials": args.trials,
        "val_images": args.val,
        "search": doc,
        "search_seconds": round(t_search, 1),
    }
    chosen = doc["chosen"]
    lines = [
        "# LeNet-5 mixed-precision search",
        "",
        (out / "sensitivity.md").read_text(),
        (out / "pareto.md").read_text(),
    ]
    if chosen is not None:
        cfg = load_config(out / "best.toml")
        from hwgen.passes.quantize import quantize_fixed

        golden = top1(quantize_fixed(ev.graph, ev.x_calib, cfg).graph, ev.x_val, ev.y_val, "exact")
        calib = work / "calib.npz"
        np.savez(calib, x=x[:CALIB], y=y[:CALIB])
        b = build(MODEL, work / "build", cfg, calib=calib)
        ver = run_verify(load_build(b.out_dir), csim=True, rtl=not args.no_rtl, n=args.images, data=data, seed=0)
        result.update({"chosen_golden_accuracy": golden, "csim": ver["csim"], "rtl": ver.get("rtl")})
        rtl = ver.get("rtl")
        rtl_text = (
            f"; RTL simulation: {rtl['mismatches']} / {rtl['vectors']} mismatching images, "
            f"{rtl['mismatched_bits']} bits, latency {rtl['latency_cycles']} cycles "
            f"(model {rtl['latency_estimate']})"
            if rtl
            else ""
        )
        ref = doc["reference_w8a8"]
        lines += [
            f"Chosen: area {doc['chosen_area_vs_w8a8']:.3f} x W8A8 ({1 - doc['chosen_area_vs_w8a8']:.1%} lower), "
            f"golden-model accuracy {100 * golden:.2f}% vs W8A8 {100 * ref['accuracy']:.2f}% "
            f"({args.val} images); C simulation: {ver['csim']['mismatches']} / {ver['csim']['vectors']} "
            f"mismatching images, {ver['csim']['mismatched_bits']} bits{rtl_text}. Search {t_search:.0f} s.",
        ]
    shutil.rmtree(work, ignore_errors=True)
    save("search_lenet5", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
