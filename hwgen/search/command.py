"""`hwgen search MODEL.onnx --data DATA.npz --trials N [--storage URL] [--objectives ...] [-o OUT]`.

The lead wires `add_parser` into hwgen/cli.py. Several processes with the same --storage and
--study share one study (see hwgen.search.search); each writes the report of the whole study.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hwgen.config import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("search", help="mixed-precision search (Optuna) over per-layer bit widths")
    p.add_argument("model", type=Path, help="the ONNX model")
    p.add_argument("--data", type=Path, required=True, help=".npz with x and y: calibration, then validation")
    p.add_argument("--trials", type=int, required=True, help="completed trials the study should hold")
    p.add_argument("-o", "--out", type=Path, default=Path("search_out"), help="report folder (and default storage)")
    p.add_argument("--storage", default=None, help="Optuna RDB URL (default sqlite:///OUT/study.db)")
    p.add_argument("--study", default="hwgen", help="study name shared by the workers")
    p.add_argument("--objectives", default="cost", help="comma list of accuracy, cost, latency (default: cost)")
    p.add_argument("--config", type=Path, default=None, help="base build config (TOML)")
    p.add_argument("--max-loss", type=float, default=0.5, help="accuracy loss allowed vs W8A8, in points")
    p.add_argument("--calib", type=int, default=128, help="samples of --data used for calibration")
    p.add_argument("--val", type=int, default=500, help="samples after those used for accuracy")
    p.add_argument("--reuse", default="", help="comma list of reuse factors to search (default: scheduler's)")
    p.add_argument("--sensitivity", action="store_true", help="run the per-layer sensitivity and seed the search")
    p.add_argument("--engine", choices=("exact", "torch"), default="exact", help="accuracy: golden model or torch f64")
    p.add_argument("--seed", type=int, default=None, help="sampler seed")
    p.add_argument("--grace", type=int, default=30, help="seconds before a silent worker's trial is retried")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from hwgen.search.evaluate import Evaluator
    from hwgen.search.search import SearchOptions, run_search, write_report
    from hwgen.search.sensitivity import seed_choices, sensitivity, write_sensitivity
    from hwgen.search.space import FixedPointSpace, mac_layers

    ev = Evaluator.from_files(
        args.model, args.data, calib=args.calib, val=args.val, base=load_config(args.config), engine=args.engine
    )
    reuse = tuple(int(r) for r in args.reuse.split(",") if r.strip())
    space = FixedPointSpace(mac_layers(ev.graph), reuse=reuse)
    max_loss = args.max_loss / 100.0
    seeds: tuple = ()
    if args.sensitivity:
        sens = sensitivity(ev, space)
        write_sensitivity(sens, args.out)
        seeds = tuple(seed_choices(sens, max_loss))
    opts = SearchOptions(
        trials=args.trials,
        objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
        study=args.study,
        storage=args.storage,
        max_loss=max_loss,
        seed=args.seed,
        seeds=seeds,
        grace=args.grace,
    )
    study = run_search(ev, space, opts, args.out)
    doc = write_report(study, ev, space, opts, args.out)
    chosen = doc.get("chosen")
    print((args.out / "pareto.md").read_text(), end="")
    if chosen is not None:
        print(
            f"chosen trial {chosen['number']}: area {doc['chosen_area_vs_w8a8']:.3f} x W8A8 -> {args.out / 'best.toml'}"
        )
    return 0


__all__ = ["add_parser", "run"]
