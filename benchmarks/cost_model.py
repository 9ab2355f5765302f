"""Calibrate the search's cost model against Yosys `synth_xilinx` of single-engine designs.

For every sample (a dense or conv layer at some weight/activation width and folding) the script
builds the layer with hwgen, emits its Verilog and synthesizes it with Yosys (results cached in
benchmarks/results/cost_model_synth.json with the hash of the RTL templates used), fits the
per-engine-kind coefficients by non-negative least squares on the training samples, writes
hwgen/search/cost_coefficients.json, and prints the mean absolute percentage error per resource
on the training and the held-out samples (every 4th sample is held out).

    .venv/bin/python benchmarks/cost_model.py [--refit-only] [--resynth]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, provenance, save  # noqa: E402
from hwgen.search import cost  # noqa: E402
from hwgen.search.samples import Sample, sample_schedule  # noqa: E402

CACHE = RESULTS / "cost_model_synth.json"
HELD_OUT_EVERY = 4


def samples() -> list[Sample]:
    """The calibration set: dense and conv layers over widths (2..8) and foldings."""
    widths = [(8, 8), (4, 4), (6, 3), (2, 8), (8, 4), (3, 6), (5, 5), (7, 2), (4, 8), (8, 2)]
    out: list[Sample] = []
    dense = [((16, 8), (1, 16, 128)), ((32, 16), (4, 64, 512)), ((64, 10), (8, 64, 640)), ((48, 24), (2, 96, 1152))]
    for i, (dims, reuses) in enumerate(dense):
        for j, reuse in enumerate(reuses):
            wb, ab = widths[(3 * i + j) % len(widths)]
            out.append(Sample("dense", dims, wb, ab, reuse, seed=i, signed_input=(i + j) % 2 == 0))
            wb, ab = widths[(3 * i + j + 5) % len(widths)]
            out.append(Sample("dense", dims, wb, ab, reuse, seed=i + 10, signed_input=(i + j) % 2 == 1))
    conv = [((1, 8, 4, 3), (9, 36)), ((2, 8, 4, 3), (9, 18, 72)), ((4, 6, 8, 3), (36, 144)), ((3, 9, 6, 5), (75, 450))]
    for i, (dims, reuses) in enumerate(conv):
        for j, reuse in enumerate(reuses):
            wb, ab = widths[(2 * i + j + 1) % len(widths)]
            out.append(Sample("conv", dims, wb, ab, reuse, seed=20 + i, signed_input=(i + j) % 2 == 0))
            wb, ab = widths[(2 * i + j + 6) % len(widths)]
            out.append(Sample("conv", dims, wb, ab, reuse, seed=30 + i, signed_input=(i + j) % 2 == 1))
    # deep weight ROMs (LeNet-5's fc1 has 400k weights): where Yosys moves a ROM into block RAM
    for dims, wb, reuse, seed in [
        ((256, 64), 8, 16384, 40),
        ((256, 64), 4, 4096, 41),
        ((128, 32), 6, 256, 42),
        ((256, 32), 5, 2048, 43),
    ]:
        out.append(Sample("dense", dims, wb, 8, reuse, seed=seed, signed_input=False))
    return out


def _templates_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "templates" / "rtl").glob("*.j2")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def synthesize(sample: Sample, work: Path) -> dict[str, Any]:
    from hwgen.hw.rtl_emit import emit_rtl
    from hwgen.hw.yosys_synth import synth_yosys

    sched = sample_schedule(sample)
    d = work / sample.key
    emit_rtl(sched, d / "rtl")
    res = synth_yosys(d / "rtl", sched.top, d / "syn")
    return {k: res[k] for k in ("LUT", "FF", "DSP", "BRAM", "LUTRAM", "cells", "seconds")}


def collect(all_samples: list[Sample], refit_only: bool, resynth: bool = False) -> dict[str, dict[str, Any]]:
    """Yosys figures per sample key; each records the template hash it was synthesized with."""
    cache: dict[str, Any] = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    tag = _templates_hash()
    done = cache.setdefault("samples", {})
    default_tag = cache.pop("templates", None)
    for v in done.values():
        v.setdefault("templates", default_tag)
    with tempfile.TemporaryDirectory(prefix="cost_model_") as tmp:
        for i, s in enumerate(all_samples):
            if refit_only or (s.key in done and not (resynth and done[s.key]["templates"] != tag)):
                continue
            t = time.perf_counter()
            done[s.key] = {**synthesize(s, Path(tmp)), "templates": tag}
            print(
                f"[{i + 1}/{len(all_samples)}] {s.key}: {done[s.key]['LUT']} LUT, {done[s.key]['DSP']} DSP, "
                f"{done[s.key]['BRAM']} BRAM ({time.perf_counter() - t:.1f} s)",
                flush=True,
            )
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    stale = sum(v["templates"] != tag for v in done.values())
    if stale:
        print(f"note: {stale} cached results come from other RTL templates; --resynth redoes them", flush=True)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refit-only", action="store_true", help="fit from the cached synthesis results only")
    ap.add_argument("--resynth", action="store_true", help="synthesize again samples cached from older templates")
    args = ap.parse_args()
    all_samples = samples()
    synth = collect(all_samples, args.refit_only, args.resynth)
    rows = []
    for i, s in enumerate(all_samples):
        if s.key not in synth:
            continue
        sched = sample_schedule(s)
        rows.append(
            {
                "sample": s.key,
                "kind": s.kind,
                "held_out": i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1,
                "features": cost.engine_features(sched.layers[0], sched),
                "measured": synth[s.key],
            }
        )
    coeffs = cost.fit([r for r in rows if not r["held_out"]])
    cost.save_coefficients(coeffs, cost.COEFFICIENTS_PATH)
    model = cost.CostModel(coeffs)
    for r in rows:
        r["estimated"] = model.predict_features(r["kind"], r["features"])
    table: dict[str, dict[str, Any]] = {}
    md = ["| resource | MAPE train | MAPE held-out | max APE | exact (all) |", "|---|---|---|---|---|"]
    for res in cost.RESOURCES:
        entry: dict[str, Any] = {}
        for split, sel in (("train", False), ("held_out", True)):
            errs = [cost.ape(r["estimated"][res], r["measured"][res]) for r in rows if r["held_out"] == sel]
            entry[split] = round(100 * sum(errs) / len(errs), 2) if errs else None
        all_errs = [cost.ape(r["estimated"][res], r["measured"][res]) for r in rows]
        entry["max"] = round(100 * max(all_errs), 2)
        entry["exact"] = sum(abs(r["estimated"][res] - r["measured"][res]) < 1e-9 for r in rows)
        table[res] = entry
        md.append(
            f"| {res} | {entry['train']}% | {entry['held_out']}% | {entry['max']}% | {entry['exact']} / {len(rows)} |"
        )
    n_train = sum(not r["held_out"] for r in rows)
    text = (
        "# Cost model calibration (Yosys synth_xilinx, single-engine designs)\n\n"
        f"{len(rows)} designs ({n_train} fitted, {len(rows) - n_train} held out); APE of a resource whose measured "
        "value is 0 counts the absolute error relative to 1.\n\n" + "\n".join(md) + "\n"
    )
    save("cost_model", {"provenance": provenance(), "table": table, "rows": rows, "coefficients": coeffs}, text)


if __name__ == "__main__":
    main()
