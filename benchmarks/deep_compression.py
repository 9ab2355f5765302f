"""Deep Compression on MNIST through `hwgen compress`: LeNet-300-100 and LeNet-5 (Caffe form, 431k weights).

Runs recipes/deep_compression_lenet300.toml and recipes/deep_compression_lenet5.toml (prune ->
retrain -> k-means sharing -> centroid retraining -> 8-bit activations with centroid fine-tuning
through fake quantization -> CSC + Huffman) on the 60k MNIST training images; the 10k test images are
the chain's validation split, used only to report accuracy (no stage selects on it). Storage counts
every stored bit of the weights (Huffman value and relative-index streams, word fill, code tables,
codebooks, column entry counts) plus the biases at their quantized width, against float32 weights and
biases of our float baseline (the zoo models). The exported QDQ ONNX model is run in onnxruntime on the
test set and compared with the golden model (sim.exact) on the first 1000 test images.
Goals (issue 7): LeNet-300-100 >= 40x, LeNet-5 >= 39x, each with <= 0.3 point top-1 drop.

    .venv/bin/python benchmarks/deep_compression.py [--model lenet300 --model lenet5] [--out /tmp/dc] [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch

from benchmarks.common import ROOT, provenance, save
from hwgen.compress.chain import compress
from hwgen.compress.recipe import load_recipe
from hwgen.datasets import load_mnist
from hwgen.ir.serialize import load_graph
from hwgen.sim import exact

GOALS = {"lenet300": 40.0, "lenet5": 39.0}
MAX_DROP_POINTS = 0.3


def ort_check(out: Path, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(out / "compressed.onnx"), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {name: x[i : i + 1000]})[0] for i in range(0, len(x), 1000)])
    g = load_graph(out / "ir")
    n = 1000
    gold = exact.decode_outputs(g, exact.run(g, x[:n].astype(np.float64)))[g.outputs[0]].reshape(n, -1)
    return {
        "onnxruntime_top1": float((logits.argmax(1) == y).mean()),
        "golden_samples": n,
        "onnxruntime_equals_golden": int(np.all(logits[:n] == gold, axis=1).sum()),
    }


def run_model(name: str, data: Path, out_root: Path, force: bool, x_te: np.ndarray, y_te: np.ndarray) -> dict[str, Any]:
    recipe = load_recipe(ROOT / "recipes" / f"deep_compression_{name}.toml")
    out = out_root / name
    t = time.perf_counter()
    doc = compress(ROOT / "models" / name / f"{name}.onnx", recipe, data, out, force=force, progress=False)
    seconds = time.perf_counter() - t
    tot = doc["totals"]
    drop = 100 * (doc["float_accuracy"] - doc["final_accuracy"])
    res = {
        "model": name,
        "recipe": str(Path(recipe.path).relative_to(ROOT)),
        "float_top1": doc["float_accuracy"],
        "compressed_top1": doc["final_accuracy"],
        "drop_points": round(drop, 3),
        "stages": doc["stages"],
        "layers": doc["layers"],
        "totals": tot,
        "seconds": round(seconds, 1),
        "goal_compression": GOALS[name],
        "meets_goal": bool(tot["compression_vs_float32"] >= GOALS[name] and drop <= MAX_DROP_POINTS),
        **ort_check(out, x_te, y_te),
    }
    return res


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Deep Compression on MNIST (`hwgen compress`)",
        "",
        "Recipes `recipes/deep_compression_*.toml`; 60k training images, top-1 on the 10k test images. Storage: "
        "every stored bit of the weights (Huffman codes and relative indices, word fill, code tables, codebooks, "
        "column entry counts) plus biases at their quantized width, against float32 weights + biases of our float "
        f"baseline. Git {doc['provenance']['git']}.",
    ]
    for r in doc["models"]:
        t = r["totals"]
        lines += [
            "",
            f"## {r['model']}: {t['compression_vs_float32']:.1f}x "
            f"(weights only {t['weights_only_compression_vs_float32']:.1f}x), "
            f"top-1 {r['float_top1']:.2%} -> {r['compressed_top1']:.2%} (drop {r['drop_points']:.2f} points; "
            f"goal >= {r['goal_compression']:.0f}x, <= {MAX_DROP_POINTS} points: "
            f"{'met' if r['meets_goal'] else 'NOT met'})",
            "",
            "| layer | shape | density | weight bits | share bits | codebook | value entropy / Huffman (bits/symbol) | "
            "index entropy / Huffman | codes | indices | codebook | tables | pointers | fill | bias | bits/weight | "
            "x vs float32 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for L in r["layers"]:
            s = L["storage_bits"]
            lines.append(
                f"| {L['layer']} | {'x'.join(map(str, L['shape']))} | {L['density']:.2%} | {L['weight_bits']} | "
                f"{L['share_bits'] or '-'} | {L['codebook_size']} | {L['value_entropy_bits_per_symbol']:.3f} / "
                f"{L['value_huffman_bits_per_symbol']:.3f} | {L['index_entropy_bits_per_symbol']:.3f} / "
                f"{L['index_huffman_bits_per_symbol']:.3f} | {s['codes']} | {s['indices']} | {s['codebook']} | "
                f"{s['code_tables']} | {s['pointers']} | {s['padding']} | {s['bias']} | {L['bits_per_weight']:.3f} | "
                f"{L['compression_vs_float32']:.1f} |"
            )
        lines.append(
            f"| **total** | {t['weights']} weights + {t['biases']} biases | {t['density']:.2%} | | | | | | "
            f"{t['storage_bits']['codes']} | {t['storage_bits']['indices']} | {t['storage_bits']['codebook']} | "
            f"{t['storage_bits']['code_tables']} | {t['storage_bits']['pointers']} | {t['storage_bits']['padding']} | "
            f"{t['storage_bits']['bias']} | {t['total_bits'] / t['weights']:.3f} | "
            f"**{t['compression_vs_float32']:.1f}** |"
        )
        lines += ["", "| stage | top-1 | density | seconds |", "|---|---|---|---|"]
        lines.append(f"| float baseline | {r['float_top1']:.2%} | 100% | |")
        for s in r["stages"]:
            lines.append(
                f"| {s['index']}. {s['kind']} | {s['accuracy']:.2%} | {s['density']:.2%} | {s['seconds']:.0f} |"
            )
        lines += [
            "",
            f"QDQ ONNX in onnxruntime: top-1 {r['onnxruntime_top1']:.2%}; logits equal to the golden model's on "
            f"{r['onnxruntime_equals_golden']}/{r['golden_samples']} test images. Chain time {r['seconds']:.0f} s.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", choices=sorted(GOALS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/hwgen_deep_compression"))
    ap.add_argument("--force", action="store_true", help="rerun every stage (default: resume finished ones)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x_tr, y_tr = load_mnist("train")
    x_te, y_te = load_mnist("test")
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "mnist.npz"
    if not data.is_file():
        np.savez(data, x=x_tr, y=y_tr, x_val=x_te, y_val=y_te)
    models = [run_model(m, data, args.out, args.force, x_te, y_te) for m in (args.model or ["lenet300", "lenet5"])]
    doc = {"provenance": provenance(seed=0), "models": models}
    name = "deep_compression" if not args.model or len(args.model) == 2 else f"deep_compression_{args.model[0]}"
    save(name, json.loads(json.dumps(doc, default=str)), markdown(doc))


if __name__ == "__main__":
    main()
