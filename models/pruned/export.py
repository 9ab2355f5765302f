"""Pruned zoo models: store trained weights compactly, and write them back into their ONNX file.

`benchmarks/prune_mnist.py` prunes and fine-tunes the bundled MNIST models and saves each result
here as `<name>.npz`: the float32 weights and biases of every Conv/Gemm, keyed by the source ONNX
initializer names (zeros compress to almost nothing, so a 90%-sparse LeNet-300-100 is ~0.1 MB
instead of 1 MB), plus `base` (the zoo model it came from). This script turns such a file into an
ONNX model that `hwgen build` reads, by replacing the base model's initializers (channel-pruned
models get their new shapes and the Reshape before the first Gemm is resized):

    .venv/bin/python models/pruned/export.py lenet300_pruned -o lenet300_pruned.onnx
    hwgen build lenet300_pruned.onnx -o out --calib models/lenet300/mnist_calib.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # allow running without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from hwgen.ir.graph import Graph  # noqa: E402


def weights_from_graph(graph: Graph, base: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The Dense/Conv constants of a canonical IR graph, keyed by the base ONNX initializer names.

    IR nodes keep their ONNX node names through import and canonicalization, so node `n`'s weight
    and bias go to the initializers the ONNX node `n` reads (Gemm transB=0 weights are transposed).
    """
    onnx_nodes = {n.name: n for n in base.graph.node}
    out: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        if node.op not in ("Dense", "Conv"):
            continue
        src = onnx_nodes.get(node.name)
        if src is None or src.op_type not in ("Gemm", "Conv"):
            raise ValueError(f"IR node {node.name!r} has no Gemm/Conv node of that name in the base ONNX model")
        w = np.asarray(graph.const(node.inputs[1]), dtype=np.float32)
        if src.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in src.attribute):
            w = w.T
        out[src.input[1]] = w
        if len(src.input) > 2 and src.input[2]:
            out[src.input[2]] = np.asarray(graph.const(node.inputs[2]), dtype=np.float32)
    return out


def save_pruned(path: Path, base: str, weights: dict[str, np.ndarray]) -> Path:
    """Write `weights` (initializer name -> array) and the base model name to a compressed npz."""
    np.savez_compressed(path, __base__=np.array(base), **{k: np.asarray(v, np.float32) for k, v in weights.items()})
    return path


def export_onnx(npz: Path, out: Path) -> Path:
    """The base ONNX model with the pruned weights of `npz` (shapes and the flatten Reshape adjusted)."""
    with np.load(npz) as f:
        base = str(f["__base__"])
        weights = {k: f[k] for k in f.files if k != "__base__"}
    model = onnx.load(str(ROOT / "models" / base / f"{base}.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    for name, w in weights.items():
        if name not in inits:
            raise ValueError(f"{npz}: {name!r} is not an initializer of models/{base}/{base}.onnx")
        inits[name].CopyFrom(numpy_helper.from_array(w, name))
    # a Reshape feeding a Gemm flattens [C, H, W]: its size follows the Gemm's (possibly pruned) inputs
    consumers = {i: n for n in model.graph.node for i in n.input}
    for n in model.graph.node:
        nxt = consumers.get(n.output[0])
        if n.op_type == "Reshape" and nxt is not None and nxt.op_type == "Gemm" and n.input[1] in inits:
            w = numpy_helper.to_array(inits[nxt.input[1]])
            trans_b = any(a.name == "transB" and a.i for a in nxt.attribute)
            k = w.shape[1] if trans_b else w.shape[0]
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(np.array([-1, k], dtype=np.int64), n.input[1]))
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    model.producer_name = "hwgen/models/pruned/export.py"
    onnx.save_model(model, str(out))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="a pruned model in this folder, e.g. lenet300_pruned")
    ap.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    args = ap.parse_args()
    export_onnx(HERE / f"{args.name}.npz", args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
