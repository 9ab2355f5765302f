"""Import of already-quantized MNIST models: hwgen's golden model against each exporter's execution.

Models: an MLP (784-128-10) and a small CNN (two 5x5 convolutions, max pooling, one dense layer),
trained briefly on MNIST (one thread). Exporters:
  - onnxruntime's static quantizer (QDQ; uint8 or symmetric int8 activations, int8 weights, per
    tensor or per channel; calibrated on 512 training images), executed by onnxruntime;
  - brevitas (QuantLinear/QuantConv2d/QuantReLU, float scales, trained with QAT) exported with
    export_qonnx (executed by brevitas' torch forward and by qonnx's executor) and export_onnx_qcdq
    (brevitas' forward; onnxruntime);
  - brevitas with power-of-two scales and an int32 bias (QONNX): imported as plain fixed point, so
    `hwgen build` runs it and C simulation is checked against the golden model.
For each: the fraction of output codes where hwgen's golden model (integer multiplier + shift, the
hardware's arithmetic) equals the exporter, the fraction of images with every code equal, the same
with the onnxruntime-compatible float32 requantization, and top-1 of exporter and hwgen.
Hardware: every onnxruntime QDQ model (u8 act, s8 weights) and the brevitas QONNX models go through
`hwgen build` (integer multiplier requant), then C simulation and RTL simulation (random
back-pressure) against the golden model on MNIST test images; the onnxruntime models also in the
float32-requant mode (scheduled and emitted from the graph, so that the C sim and RTL output codes
themselves can be compared with onnxruntime's; `hwgen build` with `[quantize] requant_arith =
"float32"` makes the same design, tests/frontend/test_qdq.py), checked against the golden model and
against onnxruntime's own output codes; a model hwgen refuses is
listed with the reason.

    .venv/bin/python benchmarks/qdq_import.py [--train 10000] [--test 10000] [--qonnx-images 200] [--csim 200]
                                              [--rtl 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import provenance, save
from hwgen.datasets import load_mnist
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import FloatBias, RequantArith, quantize_imported
from hwgen.sim import exact

SEED = 0


def hwgen_graph(path: Path, bias: FloatBias = FloatBias.EXACT, arith: RequantArith = RequantArith.INTEGER) -> Graph:
    return quantize_imported(canonicalize(import_onnx(path)).graph, float_bias=bias, requant_arith=arith).graph


def golden(q: Graph, x: np.ndarray) -> np.ndarray:
    return np.concatenate([exact.run(q, x[i : i + 1000])[q.outputs[0]] for i in range(0, len(x), 1000)])


def to_codes(q: Graph, y: np.ndarray) -> np.ndarray:
    scale = float(np.asarray(exact.format_scales(exact.value_format(q, q.outputs[0]))).reshape(-1)[0])
    return np.rint(np.asarray(y, dtype=np.float64) / scale).astype(np.int64)


def compare(q: Graph, ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    ref = to_codes(q, theirs)
    eq = ours == ref
    return float(eq.mean()), float(eq.all(axis=1).mean())


# -- models -----------------------------------------------------------------------------------
def float_model(kind: str):
    import torch

    class Mlp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(784, 128), torch.nn.Linear(128, 10)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    class Cnn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = torch.nn.Conv2d(1, 8, 5), torch.nn.Conv2d(8, 16, 5)
            self.fc = torch.nn.Linear(256, 10)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
            return self.fc(x.flatten(1))

    return Mlp() if kind == "mlp" else Cnn()


def brevitas_model(kind: str, pow2: bool):
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Int8WeightPerTensorFixedPoint,
        Int32Bias,
        Uint8ActPerTensorFixedPoint,
    )

    w = {"weight_quant": Int8WeightPerTensorFixedPoint, "bias_quant": Int32Bias} if pow2 else {}
    a = {"act_quant": Int8ActPerTensorFixedPoint} if pow2 else {}
    r = {"act_quant": Uint8ActPerTensorFixedPoint} if pow2 else {}

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = qnn.QuantIdentity(return_quant_tensor=True, **a)
            if kind == "mlp":
                self.l1 = qnn.QuantLinear(784, 128, bias=True, return_quant_tensor=True, **w)
                self.r1 = qnn.QuantReLU(return_quant_tensor=True, **r)
                n_in = 128
            else:
                self.l1 = qnn.QuantConv2d(1, 8, 5, return_quant_tensor=True, **w)
                self.r1 = qnn.QuantReLU(return_quant_tensor=True, **r)
                self.l2 = qnn.QuantConv2d(8, 16, 5, return_quant_tensor=True, **w)
                self.r2 = qnn.QuantReLU(return_quant_tensor=True, **r)
                n_in = 256
            self.fc = qnn.QuantLinear(n_in, 10, bias=True, return_quant_tensor=True, **w)
            self.out = qnn.QuantIdentity(return_quant_tensor=False, **a)

        def forward(self, x):
            if kind == "mlp":
                x = self.r1(self.l1(self.inp(x.flatten(1))))
            else:
                x = torch.nn.functional.max_pool2d(self.r1(self.l1(self.inp(x))), 2)
                x = torch.nn.functional.max_pool2d(self.r2(self.l2(x)), 2)
            return self.out(self.fc(x.flatten(1)))

    return Net()


def train(model, x: np.ndarray, y: np.ndarray, epochs: int):
    import torch

    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            idx = perm[i : i + 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


# -- exporters --------------------------------------------------------------------------------
def ort_rows(
    kind: str, net, work: Path, calib: np.ndarray, x: np.ndarray, y: np.ndarray, hw: tuple[int, int]
) -> list[dict[str, Any]]:
    import onnxruntime as ort
    import torch
    from onnxruntime import quantization as oq

    fp = work / f"{kind}.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 1, 28, 28),),
        str(fp),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
        dynamo=False,
        opset_version=17,
    )

    class Reader(oq.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": calib[i : i + 64]} for i in range(0, len(calib), 64)])

        def get_next(self):
            return next(self.it, None)

    rows = []
    for label, per_channel, act in [
        ("u8 act, s8 weights per tensor", False, "u8"),
        ("u8 act, s8 weights per channel", True, "u8"),
        ("s8 symmetric act, s8 weights per channel", True, "s8"),
    ]:
        qp = work / f"{kind}_{per_channel}_{act}.onnx"
        oq.quantize_static(
            str(fp),
            str(qp),
            Reader(),
            quant_format=oq.QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=oq.QuantType.QUInt8 if act == "u8" else oq.QuantType.QInt8,
            weight_type=oq.QuantType.QInt8,
            extra_options={"ActivationSymmetric": act == "s8"},
        )
        ref = ort.InferenceSession(str(qp), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        q = hwgen_graph(qp)
        ours = golden(q, x)
        q32 = hwgen_graph(qp, arith=RequantArith.FLOAT32)
        ours32 = golden(q32, x)
        rows.append(
            row(
                kind,
                "onnxruntime quantize_static (QDQ)",
                label,
                "onnxruntime",
                q,
                ours,
                ref,
                y,
                compare(q32, ours32, ref),
            )
        )
        if act == "u8" and max(hw):
            rows[-1]["hw"] = build_and_verify(qp, work, x, *hw)
            rows[-1]["hw_float32"] = verify_float32(q32, work / f"{qp.stem}_f32", x, ref, *hw)
    return rows


def row(
    kind: str,
    exporter: str,
    fmt: str,
    executor: str,
    q: Graph,
    ours: np.ndarray,
    theirs: np.ndarray,
    y: np.ndarray,
    f32: tuple[float, float] | None = None,
) -> dict[str, Any]:
    n = len(theirs)
    codes, images = compare(q, ours[:n], theirs)
    return {
        "model": kind,
        "exporter": exporter,
        "format": fmt,
        "executor": executor,
        "images": n,
        "codes_equal": codes,
        "images_equal": images,
        "codes_equal_float32_requant": None if f32 is None else f32[0],
        "images_equal_float32_requant": None if f32 is None else f32[1],
        "top1_exporter": float((np.asarray(theirs).argmax(1) == y[:n]).mean()),
        "top1_hwgen": float((ours[:n].argmax(1) == y[:n]).mean()),
    }


def qonnx_exec(path: Path, x: np.ndarray) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    mw = ModelWrapper(str(path))
    i, o = mw.graph.input[0].name, mw.graph.output[0].name
    return np.concatenate([execute_onnx(mw, {i: x[k : k + 1]})[o] for k in range(len(x))])


def brevitas_rows(
    kind: str, pow2: bool, net, work: Path, x: np.ndarray, y: np.ndarray, n_qonnx: int, hw: tuple[int, int]
) -> list[dict[str, Any]]:
    import onnxruntime as ort
    import torch
    from brevitas.export import export_onnx_qcdq, export_qonnx

    fmt = "pow2 scales, int32 bias" if pow2 else "float scales, float bias"
    with torch.no_grad():
        fwd = np.concatenate([net(torch.from_numpy(x[i : i + 1000])).numpy() for i in range(0, len(x), 1000)])
    rows = []
    qp = work / f"b_{kind}_{pow2}.qonnx.onnx"
    export_qonnx(net, torch.from_numpy(x[:1]), str(qp))
    q = hwgen_graph(qp)
    ours = golden(q, x)
    rows.append(row(kind, "brevitas export_qonnx", fmt, "brevitas torch forward", q, ours, fwd, y))
    rows.append(row(kind, "brevitas export_qonnx", fmt, "qonnx execute_onnx", q, ours, qonnx_exec(qp, x[:n_qonnx]), y))
    if max(hw):
        rows[-1]["hw"] = build_and_verify(qp, work, x, *hw)
    if not pow2:
        cp = work / f"b_{kind}.qcdq.onnx"
        export_onnx_qcdq(net, torch.from_numpy(x[:1]), str(cp))
        q = hwgen_graph(cp)
        ours = golden(q, x)
        rows.append(row(kind, "brevitas export_onnx_qcdq", fmt, "brevitas torch forward", q, ours, fwd, y))
        sess = ort.InferenceSession(str(cp), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        ref = np.concatenate([sess.run(None, {name: x[k : k + 1]})[0] for k in range(n_qonnx)])
        qa = hwgen_graph(cp, FloatBias.ACCUMULATOR)
        rows.append(
            row(
                kind, "brevitas export_onnx_qcdq", fmt + " (bias on acc grid)", "onnxruntime", qa, golden(qa, x), ref, y
            )
        )
    return rows


def build_and_verify(model: Path, work: Path, x: np.ndarray, n_csim: int, n_rtl: int) -> dict[str, Any]:
    """`hwgen build` of an import (reloaded from disk, as `hwgen verify` does), then C simulation and RTL
    simulation (random back-pressure) against the golden model; {"refused": message} when hwgen refuses."""
    from hwgen.build import build, load_build
    from hwgen.config import BuildConfig
    from hwgen.errors import HwgenError
    from hwgen.verify import run_verify

    out = work / f"{model.stem}_build"
    try:
        build(model, out, BuildConfig(), force=True)
    except HwgenError as e:
        return {"refused": f"{type(e).__name__}: {e}"}
    res: dict[str, Any] = {}
    for what, n in (("csim", n_csim), ("rtl", n_rtl)):
        if n:
            data = work / f"{what}.npz"
            np.savez(data, x=x[:n])
            sec = run_verify(load_build(out), csim=what == "csim", rtl=what == "rtl", n=n, data=data, seed=SEED)
            res[what] = sec[what]
    return res


def verify_float32(q: Graph, out: Path, x: np.ndarray, ref: np.ndarray, n_csim: int, n_rtl: int) -> dict[str, Any]:
    """The float32-requant graph (onnxruntime's arithmetic) in hardware, scheduled and emitted as `hwgen
    build` with requant_arith = "float32" does; here directly, because the C simulation's and RTL
    simulation's (random back-pressure) output codes are compared with onnxruntime's own, not only
    with the golden model's."""
    from hwgen.config import BuildConfig
    from hwgen.errors import HwgenError
    from hwgen.hw.csim import run_csim
    from hwgen.hw.hls_emit import emit_hls
    from hwgen.hw.lower import schedule_graph
    from hwgen.hw.rtl_emit import emit_rtl
    from hwgen.hw.rtl_sim import run_rtl

    try:
        sched = schedule_graph(q, BuildConfig())
    except HwgenError as e:
        return {"refused": f"{type(e).__name__}: {e}"}
    n = max(n_csim, n_rtl)
    codes = exact.encode_input(q, x[:n]).reshape(n, -1)  # one input channel: NCHW is the stream order
    gold = golden(q, x[:n])
    ort_codes = to_codes(q, ref[:n])
    res: dict[str, Any] = {"golden_vs_onnxruntime_mismatches": int((gold != ort_codes).sum()), "images": n}
    emit_hls(sched, out / "hls", inputs=codes[:1], expected=gold[:1])
    emit_rtl(sched, out / "rtl")
    for what, k in (("csim", n_csim), ("rtl", n_rtl)):
        if not k:
            continue
        if what == "csim":
            got = run_csim(out / "hls", codes[:k], work_dir=out / "csim").outputs
            sec: dict[str, Any] = {}
        else:
            r = run_rtl(out / "rtl", sched, codes[:k], work_dir=out / "rtl_work", backpressure="random", seed=SEED)
            got = r.outputs
            sec = {"latency_cycles": r.latency_cycles, "latency_estimate": sched.latency}
        got = np.asarray(got).reshape(k, -1)
        bits = sched.output.elem.bits
        diff = (got.astype(np.int64) ^ gold[:k].astype(np.int64)) & ((1 << bits) - 1)
        res[what] = {
            "vectors": k,
            "mismatched_bits": int(sum(bin(int(v)).count("1") for v in diff.reshape(-1))),
            "codes_unequal_golden": int((got != gold[:k]).sum()),
            "codes_unequal_onnxruntime": int((got != ort_codes[:k]).sum()),
            **sec,
        }
    return res


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.3f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=10000, help="MNIST training images")
    p.add_argument("--test", type=int, default=10000, help="MNIST test images compared")
    p.add_argument("--qonnx-images", type=int, default=200, help="images run one by one in qonnx/ORT(QCDQ)")
    p.add_argument("--csim", type=int, default=200, help="images in C simulation of each built model")
    p.add_argument("--rtl", type=int, default=200, help="images in RTL simulation of each built model")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    xtr, ytr = load_mnist("train", limit=args.train)
    xte, yte = load_mnist("test", limit=args.test)
    calib = xtr[:512]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind in ("mlp", "cnn"):
            hw = (args.csim, args.rtl)
            torch.manual_seed(SEED)  # initial weights: the run is deterministic, model by model
            rows += ort_rows(kind, train(float_model(kind), xtr, ytr, 2), work, calib, xte, yte, hw)
            for pow2 in (False, True):
                torch.manual_seed(SEED)
                net = train(brevitas_model(kind, pow2), xtr, ytr, 2)
                rows += brevitas_rows(kind, pow2, net, work, xte, yte, args.qonnx_images, hw)
    lines = [
        "| model | exporter | format | executed by | images | codes equal (integer requant) | images all equal "
        "| codes equal (float32 requant) | top-1 exporter | top-1 hwgen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['exporter']} | {r['format']} | {r['executor']} | {r['images']} | "
            f"{pct(r['codes_equal'])} | {pct(r['images_equal'])} | {pct(r['codes_equal_float32_requant'])} | "
            f"{pct(r['top1_exporter'])} | {pct(r['top1_hwgen'])} |"
        )
    lines += [
        "",
        "Columns above: hwgen's golden model (`sim.exact` on the imported graph) against the exporter's own "
        "execution (the 'executed by' column), output codes compared one by one over the first 'images' MNIST "
        "test images; 'integer requant' is hwgen's exact multiplier + shift, 'float32 requant' the mode that "
        "reproduces onnxruntime's float32 product (onnxruntime rows only).",
        "",
        "Hardware, integer requant: `hwgen build` of the model file, then `hwgen verify`'s C simulation and RTL "
        "simulation (random back-pressure), each compared bit by bit with the golden model (integer requant) on "
        "the first MNIST test images:",
        "",
        "| model | exporter | format | C sim vs golden: mismatching bits / images | RTL vs golden: mismatching bits "
        "/ images | latency RTL / model (cycles) |",
        "|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if "hw" in r):
        h = r["hw"]
        if "refused" in h:
            lines.append(f"| {r['model']} | {r['exporter']} | {r['format']} | refused: {h['refused']} | | |")
            continue
        c, t = h.get("csim"), h.get("rtl")
        cs = f"{c['mismatched_bits']} / {c['vectors']}" if c else "-"
        rs = f"{t['mismatched_bits']} / {t['vectors']}" if t else "-"
        lat = f"{t['latency_cycles']} / {t['latency_estimate']}" if t else "-"
        lines.append(f"| {r['model']} | {r['exporter']} | {r['format']} | {cs} | {rs} | {lat} |")
    lines += [
        "",
        "Hardware, float32 requant (onnxruntime's arithmetic in integer logic), onnxruntime QDQ models: the "
        "same engines scheduled and emitted from the float32-mode graph; C simulation and RTL simulation (random "
        "back-pressure) compared with the golden model (mismatching bits) and with onnxruntime's output codes "
        "(unequal codes); 'golden vs onnxruntime' counts unequal codes over the same images:",
        "",
        "| model | format | images | golden vs onnxruntime: unequal codes | C sim vs golden: mismatching bits "
        "| C sim vs onnxruntime: unequal codes | RTL vs golden: mismatching bits | RTL vs onnxruntime: unequal "
        "codes | latency RTL / model (cycles) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if "hw_float32" in r):
        h = r["hw_float32"]
        if "refused" in h:
            lines.append(f"| {r['model']} | {r['format']} | refused: {h['refused']} | | | | | | |")
            continue
        c, t = h.get("csim"), h.get("rtl")
        cells = [
            f"{c['mismatched_bits']} / {c['vectors']}" if c else "-",
            f"{c['codes_unequal_onnxruntime']}" if c else "-",
            f"{t['mismatched_bits']} / {t['vectors']}" if t else "-",
            f"{t['codes_unequal_onnxruntime']}" if t else "-",
            f"{t['latency_cycles']} / {t['latency_estimate']}" if t else "-",
        ]
        lines.append(
            f"| {r['model']} | {r['format']} | {h['images']} | {h['golden_vs_onnxruntime_mismatches']} | "
            + " | ".join(cells)
            + " |"
        )
    md = "# QDQ / QONNX import: hwgen golden model vs the exporters' execution\n\n" + "\n".join(lines) + "\n"
    doc = {"provenance": provenance(SEED), "args": vars(args), "rows": rows, "seconds": time.perf_counter() - t0}
    save("qdq_import", doc, md)


if __name__ == "__main__":
    main()
