"""`hwgen compress MODEL.onnx --recipe RECIPE.toml --data DATA.npz -o OUT [--resume | --force]`.

The lead wires it into hwgen/cli.py with `compress_command.add_parser(sub)`; the parser's default
`func` is `run`, so `args.func(args)` works as for the other commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hwgen.errors import HwgenError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compress",
        help="prune, share, quantize, fine-tune and Huffman-code a model by a recipe (resumable)",
        description="Run a compression recipe (TOML) on an ONNX model; writes OUT/compress.json, "
        "OUT/compressed.onnx (QDQ) and OUT/hwgen.toml, checkpointing each stage in OUT/stages.",
    )
    p.add_argument("model", type=Path, help="float ONNX model")
    p.add_argument("--recipe", type=Path, required=True, help="recipe TOML (see recipes/)")
    p.add_argument("--data", type=Path, required=True, help=".npz with x, y (and optionally x_val, y_val)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="require an earlier run in OUT and continue it")
    mode.add_argument("--force", action="store_true", help="discard earlier stages in OUT and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the chain; 0 on success. Errors are HwgenError (the CLI prints them and exits 2)."""
    from rich.console import Console

    from hwgen.compress.chain import compress
    from hwgen.compress.recipe import load_recipe

    console = Console(stderr=True)
    recipe = load_recipe(args.recipe)
    out: Path = args.out
    if getattr(args, "resume", False) and not (out / "state.json").is_file():
        raise HwgenError(f"{out}: nothing to resume (no state.json); run without --resume")
    if out.exists() and any(out.iterdir()) and not (out / "state.json").is_file() and not args.force:
        raise HwgenError(f"{out}: exists and is not a `hwgen compress` output; choose another -o or pass --force")
    doc = compress(
        args.model,
        recipe,
        args.data,
        out,
        force=bool(args.force),
        progress=not getattr(args, "no_progress", False),
        log=lambda msg: console.print(msg, highlight=False),
    )
    t = doc.get("totals")
    if t:
        console.print(
            f"[bold]{out / 'compress.json'}[/]: {t['compression_vs_float32']:.1f}x vs float32, "
            f"top-1 {doc['float_accuracy']:.4f} -> {doc['final_accuracy']:.4f}"
        )
    return 0


__all__ = ["add_parser", "run"]
