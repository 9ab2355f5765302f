"""`hwgen build` wall time and peak memory on generated CNNs from ~10 k to > 5 M parameters.

The family is generated with onnx.helper (random weights, seeded): plain conv stacks and a
MobileNet-style depthwise-separable stack, each widened until it reaches the target size. Each
build runs in its own process pinned to one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1) so time and
peak RSS are per build.

    .venv/bin/python benchmarks/scaling.py [--sizes 1e4 1e5 1e6 5e6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import provenance, save

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from hwgen.build import build
from hwgen.config import BuildConfig
res = build(Path(sys.argv[1]), Path(sys.argv[2]), BuildConfig(), calib=Path(sys.argv[3]), force=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": peak,
                  "params": res.report["model"]["params"], "macs": res.report["model"]["macs"]}))
"""


def _conv(
    name: str,
    x: str,
    cin: int,
    cout: int,
    k: int,
    rng: np.random.Generator,
    inits: list,
    nodes: list,
    groups: int = 1,
    stride: int = 1,
) -> str:
    w = numpy_helper.from_array(
        (rng.normal(0, 1, (cout, cin // groups, k, k)) / np.sqrt(k * k * cin / groups)).astype(np.float32), f"{name}.w"
    )
    b = numpy_helper.from_array(rng.normal(0, 0.05, cout).astype(np.float32), f"{name}.b")
    inits += [w, b]
    nodes.append(
        helper.make_node(
            "Conv",
            [x, w.name, b.name],
            [f"{name}.y"],
            name=name,
            kernel_shape=[k, k],
            pads=[k // 2] * 4,
            strides=[stride, stride],
            group=groups,
        )
    )
    nodes.append(helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"], name=f"{name}.relu"))
    return f"{name}.r"


def make_cnn(kind: str, width: int, seed: int = 0) -> onnx.ModelProto:
    """A 16x16x3 -> 10 classifier; `width` scales every layer's channels."""
    rng = np.random.default_rng(seed)
    inits: list = []
    nodes: list = []
    x = _conv("stem", "input", 3, width, 3, rng, inits, nodes)
    c = width
    if kind == "plain":
        for i, (mult, stride) in enumerate([(1, 1), (2, 2), (2, 1), (2, 2)]):
            x = _conv(f"conv{i}", x, c, c * mult, 3, rng, inits, nodes, stride=stride)
            c *= mult
    else:  # MobileNet-style depthwise-separable stack
        for i, (mult, stride) in enumerate([(2, 1), (2, 2), (2, 1), (2, 2), (1, 1)]):
            x = _conv(f"dw{i}", x, c, c, 3, rng, inits, nodes, groups=c, stride=stride)
            x = _conv(f"pw{i}", x, c, c * mult, 1, rng, inits, nodes)
            c *= mult
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    w = numpy_helper.from_array((rng.normal(0, 1, (10, c)) / np.sqrt(c)).astype(np.float32), "fc.w")
    inits.append(w)
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w"], ["logits"], name="fc", transB=1))
    g = helper.make_graph(
        nodes,
        f"{kind}_{width}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(i.dims)) for i in model.graph.initializer)


def width_for(kind: str, target: float) -> int:
    w = 2
    while params(make_cnn(kind, w + 1)) <= target:
        w += 1
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6, 5.2e6])
    args = ap.parse_args()
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib.npz"
        np.savez(calib, x=np.random.default_rng(0).random((16, 3, 16, 16)).astype(np.float32))
        for kind in ("plain", "mobilenet"):
            for size in args.sizes:
                model = make_cnn(kind, width_for(kind, size))
                path = Path(tmp) / f"{kind}_{int(size)}.onnx"
                onnx.save(model, path)
                t = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, str(path), str(Path(tmp) / "out"), str(calib)],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if proc.returncode != 0:
                    rows.append(
                        {
                            "kind": kind,
                            "target": size,
                            "params": params(model),
                            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed",
                        }
                    )
                    print(rows[-1], flush=True)
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                r.update({"kind": kind, "target": size, "wall_seconds": time.perf_counter() - t})
                rows.append(r)
                print(r, flush=True)
    md = ["| family | params | MACs | build s (1 thread) | peak RSS MB | s per M params |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['kind']} | {r['params']:,} | - | failed: {r['error']} | - | - |")
        else:
            md.append(
                f"| {r['kind']} | {r['params']:,} | {r['macs']:,} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | "
                f"{r['seconds'] / (r['params'] / 1e6):.2f} |"
            )
    save("scaling", {"provenance": provenance(seed=0), "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
