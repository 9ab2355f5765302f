"""hwgen vs hls4ml 1.3 on the bundled MNIST MLP (LeNet-300-100) at equal bit widths.

For each width W (W8A8 by default; `--bits 8 --bits 4` runs several):

* hwgen: `hwgen.build.build` in-process (import, canonicalize, calibrate on
  models/lenet300/mnist_calib.npz, quantize, schedule, emit HLS C++ and Verilog; all timed),
  then C simulation of the emitted HLS with `hwgen.hw.csim.run_csim` on the first N MNIST test
  images. Top-1 comes from the argmax of the csim output codes; the golden model
  (`hwgen.sim.exact`) is run on the same input codes and compared bit for bit.
* hls4ml: the ONNX front end (`config_from_onnx_model` + `convert_from_onnx_model`), Vivado
  backend, io_parallel, ap_fixed<W, I> weights and activations, ReuseFactor per layer equal to
  hwgen's default reuse of the same layer (Strategy Resource). Timed: convert (config + conversion
  + write), compile (g++ of the bridge library) and predict on the same N images. Two precision
  configurations: `uniform` (hls4ml's default fixed<16,6> scaled to W bits, everywhere) and
  `profiled` (integer bits per tensor from its range on the calibration images, round-to-nearest-
  even and saturation, as hwgen quantizes).

The float accuracy of the ONNX model (onnxruntime) on the same images is printed too. Results go
to benchmarks/results/hls4ml_compare.{json,md}; build trees to --out-dir.

    .venv/bin/python benchmarks/hls4ml_compare.py [--images 1000] [--bits 8 --bits 4] [--out-dir build/bench]

hls4ml's ONNX front end expects a model cleaned by qonnx (shape inference, readable tensor names,
Gemm -> MatMul + Add). qonnx is not a dependency of hls4ml (only of its test extra) and is not
installed here, so `prepare_for_hls4ml` performs those documented steps with the onnx package.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks.common` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, provenance  # noqa: E402

MODEL = ROOT / "models" / "lenet300" / "lenet300.onnx"
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"
TEST_1K = ROOT / "models" / "lenet300" / "mnist_test_1k.npz"
NAME = "hls4ml_compare"

Row = dict[str, Any]


def _error(stage: str, exc: BaseException) -> dict[str, str]:
    """What failed, for the results file (no numbers are made up for a failed stage)."""
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {"stage": stage, "error": f"{type(exc).__name__}: {exc}".strip(), "traceback_tail": "".join(tb[-3:])}


# ----------------------------------------------------------------------------------------------
# data and the float reference


def load_images(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The first n MNIST test images as float32 [n, 1, 28, 28] in [0, 1], labels, description."""
    if n <= 1000:
        with np.load(TEST_1K) as f:
            return f["x"][:n].astype(np.float32), f["y"][:n].astype(np.int64), f"{TEST_1K.name}[0:{n}]"
    from hwgen.datasets import load_mnist

    x, y = load_mnist("test", limit=n)
    if len(x) < n:
        raise SystemExit(f"--images {n}: the MNIST test set has only {len(x)} images")
    return x, y, f"MNIST test[0:{n}] (hwgen.datasets.load_mnist)"


def load_calib() -> np.ndarray:
    with np.load(CALIB) as f:
        return f["x"].astype(np.float32)


def onnx_float_top1(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    t = time.perf_counter()
    logits = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    return {
        "tool": "onnxruntime",
        "config": "float32",
        "predict_s": time.perf_counter() - t,
        "top1": float((logits.argmax(1) == y).mean()),
    }


# ----------------------------------------------------------------------------------------------
# hwgen (needs nothing from hls4ml)


def hwgen_config(bits: int) -> Any:
    """hwgen's default configuration at WbitsAbits (what `hwgen build --weight-bits W --act-bits W` means).

    Built with config_from_dict: hwgen.config.with_overrides (the CLI's path) rejects its own
    default input_bits = None ("command line.input_bits: expected an integer, got None").
    """
    from hwgen.config import config_from_dict

    return config_from_dict({"quantize": {"weight_bits": bits, "act_bits": bits}})


def hwgen_reuse_factors(bits: int) -> list[int]:
    """hwgen's default reuse (products per multiplier) of each Dense layer, in order."""
    from hwgen.build import compile_model

    cfg = hwgen_config(bits)
    _g, _qg, _sched, report = compile_model(MODEL, cfg, CALIB, lambda step: None)
    return [int(lay["reuse"]) for lay in report["layers"]]


def _signed(codes: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Codes as returned by a simulator (possibly raw bit patterns) -> their integer values."""
    c = np.asarray(codes).astype(np.int64) & ((1 << bits) - 1)
    if signed:
        c = np.where(c >= 1 << (bits - 1), c - (1 << bits), c)
    return c


def _ap_name(fmt: Any) -> str:
    """hwgen's fixed<bits, frac> as the equivalent ap_fixed<W, I> spelling."""
    return f"ap_{'' if fmt.signed else 'u'}fixed<{fmt.bits},{fmt.bits - fmt.frac}>"


def run_hwgen(bits: int, x: np.ndarray, y: np.ndarray, out_dir: Path) -> Row:
    """Build with hwgen at WbitsAbits, C-simulate on x, compare with the golden model."""
    from hwgen import __version__
    from hwgen.build import build
    from hwgen.ir.serialize import load_graph
    from hwgen.sim import exact

    row: Row = {"tool": "hwgen", "version": __version__, "bits": bits, "config": "default", "images": len(x)}
    out = out_dir / f"hwgen_w{bits}a{bits}"
    steps: dict[str, float] = {}
    state: dict[str, Any] = {"step": None, "t": 0.0}

    def progress(step: str) -> None:
        now = time.perf_counter()
        if state["step"] is not None:
            steps[state["step"]] = round(now - state["t"], 4)
        state["step"], state["t"] = step, now

    cfg = hwgen_config(bits)
    try:
        t = time.perf_counter()
        res = build(MODEL, out, cfg, calib=CALIB, force=True, progress=progress)
        row["build_s"] = time.perf_counter() - t
        progress("")  # close the last step (emission)
        row["build_steps_s"] = steps
        row["out_dir"] = str(out)
        row["layers"] = [
            {
                "name": lay["name"],
                "weights": lay["weight_format"],
                "acts": lay["act_format"],
                "reuse": lay["reuse"],
                "pe_x_simd": f"{lay['pe']} x {lay['simd']}",
                "multipliers": lay["multipliers"],
                "accumulator": lay["widths"]["accumulator"],
            }
            for lay in res.report["layers"]
        ]
        row["latency_cycles_estimate"] = res.report["hardware"]["latency_cycles"]
        row["ii_cycles_estimate"] = res.report["hardware"]["ii_cycles"]
    except Exception as e:
        row["failed"] = _error("hwgen build", e)
        return row

    try:
        qg = load_graph(out / "ir")
        codes = exact.encode_input(qg, x).reshape(len(x), -1)
        out_fmt = exact.fixed_format(qg, qg.outputs[0])
        row["input_format"] = _ap_name(exact.fixed_format(qg, qg.inputs[0]))
        row["output_format"] = _ap_name(out_fmt)
        shape = qg.value(qg.inputs[0]).type.shape
        t = time.perf_counter()
        golden = exact.run_codes(qg, codes.reshape(len(x), *shape))[qg.outputs[0]].reshape(len(x), -1)
        row["golden_s"] = time.perf_counter() - t
        row["golden_top1"] = float((golden.argmax(1) == y).mean())
    except Exception as e:
        row["failed"] = _error("hwgen golden model", e)
        return row

    try:
        from hwgen.hw.csim import run_csim
    except Exception as e:
        row["failed"] = _error("import hwgen.hw.csim", e)
        return row
    try:
        # a fresh work dir: run_csim caches binaries there, and a cached binary would time 0 s
        work = out_dir / f"hwgen_w{bits}a{bits}_csim"
        shutil.rmtree(work, ignore_errors=True)
        t = time.perf_counter()
        cres = run_csim(out / "hls", codes, work_dir=work)
        row["csim_total_s"] = time.perf_counter() - t  # compile + write inputs + run + read outputs
        row["compile_s"] = float(cres.compile_seconds)  # g++ of design and testbench, 2 jobs at once
        row["predict_s"] = float(cres.run_seconds)  # the testbench process on all N samples
        row["csim_cached"] = bool(cres.cached)
        got = np.asarray(cres.outputs).reshape(len(x), -1)
        got = _signed(got, out_fmt.bits, out_fmt.signed)
        gold = _signed(golden, out_fmt.bits, out_fmt.signed)
        bad = (got != gold).any(axis=1)
        row["mismatches"] = int(bad.sum())
        row["mismatched_elements"] = int((got != gold).sum())
        row["bit_exact"] = row["mismatches"] == 0
        row["top1"] = float((got.argmax(1) == y).mean())
    except Exception as e:
        row["failed"] = _error("hwgen C simulation", e)
    return row


# ----------------------------------------------------------------------------------------------
# hls4ml (needs nothing from hwgen but the per-layer reuse factors it is handed)


def prepare_for_hls4ml(path: Path) -> Any:
    """The cleaning hls4ml's ONNX docs ask of qonnx, with the onnx package only.

    Gemm (alpha = beta = 1, transA = 0) becomes MatMul + Add with a [in, out] weight (qonnx's
    GemmToMatMul); tensor names lose their dots and the graph input/output are renamed to
    global_in/global_out (hls4ml reserves the layer name 'input' and sanitizes constant names but
    not the references to them); the batch dimension is fixed to 1; shapes are inferred and every
    initializer gets a value_info (hls4ml looks its shapes up there).
    """
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    m = onnx.load(str(path))
    g = m.graph
    ren = {g.input[0].name: "global_in", g.output[0].name: "global_out"}

    def name(t: str) -> str:
        return ren.get(t, t.replace(".", "_").replace("/", "_").replace(":", "_"))

    inits = {i.name: i for i in g.initializer}
    nodes = []
    for k, n in enumerate(g.node):
        base = name(n.name or f"node{k}")
        if n.op_type == "Gemm":
            a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
            if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
                raise NotImplementedError(f"{n.name}: Gemm with alpha/beta != 1 or transA")
            if n.input[1] not in inits or len(n.input) < 3 or n.input[2] not in inits:
                raise NotImplementedError(f"{n.name}: Gemm whose weight or bias is not an initializer")
            w = inits[n.input[1]]
            if a.get("transB", 0):
                w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).T.copy(), w.name))
            mm = name(n.output[0]) + "_matmul"
            nodes.append(helper.make_node("MatMul", [name(n.input[0]), name(n.input[1])], [mm], name=f"{base}_MatMul"))
            nodes.append(helper.make_node("Add", [mm, name(n.input[2])], [name(n.output[0])], name=f"{base}_Add"))
        else:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = base
            c.input[:] = [name(t) for t in n.input]
            c.output[:] = [name(t) for t in n.output]
            nodes.append(c)
    del g.node[:]
    g.node.extend(nodes)
    for i in g.initializer:
        i.name = name(i.name)
    for vi in [*g.input, *g.output]:
        vi.name = name(vi.name)
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    del g.value_info[:]
    m = shape_inference.infer_shapes(m, strict_mode=True)
    known = {v.name for v in m.graph.value_info}
    for i in m.graph.initializer:
        if i.name not in known:
            m.graph.value_info.append(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)))
    onnx.checker.check_model(m)
    return m


def dense_layers(m: Any) -> list[dict[str, Any]]:
    """MatMul/Add/Relu names and tensors of each dense layer of a prepared model, in order."""
    consumers: dict[str, list[Any]] = {}
    for n in m.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    layers = []
    for n in m.graph.node:
        if n.op_type != "MatMul":
            continue
        (add,) = consumers[n.output[0]]
        nxt = consumers.get(add.output[0], [])
        relu = nxt[0] if len(nxt) == 1 and nxt[0].op_type == "Relu" else None
        layers.append(
            {
                "matmul": n.name,
                "add": add.name,
                "relu": relu.name if relu else None,
                "weight": n.input[1],
                "bias": add.input[1],
                "pre_act": add.output[0],
                "output": relu.output[0] if relu else add.output[0],
            }
        )
    return layers


def tensor_ranges(m: Any, x_calib: np.ndarray) -> dict[str, float]:
    """max |value| of the input, every layer output and every weight/bias (profiling)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    prof = onnx.ModelProto()
    prof.CopyFrom(m)
    layers = dense_layers(prof)
    outs = {o.name for o in prof.graph.output}
    for lay in layers:
        for t in (lay["pre_act"], lay["output"]):
            if t not in outs:
                prof.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
                outs.add(t)
    for vi in [*prof.graph.input, *prof.graph.output]:  # back to a free batch dimension
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    # the fixed batch of 1 was baked into value_info by shape inference; drop it for profiling
    keep = {i.name for i in prof.graph.initializer}
    vis = [v for v in prof.graph.value_info if v.name in keep]
    del prof.graph.value_info[:]
    prof.graph.value_info.extend(vis)
    sess = ort.InferenceSession(prof.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    vals = sess.run(None, {"global_in": x_calib.astype(np.float32)})
    ranges = {n: float(np.abs(v).max()) for n, v in zip(names, vals, strict=True)}
    ranges["global_in"] = float(np.abs(x_calib).max())
    for i in m.graph.initializer:
        ranges[i.name] = float(np.abs(numpy_helper.to_array(i)).max())
    return ranges


def int_bits(max_abs: float) -> int:
    """Integer bits (sign included) of a signed ap_fixed that holds +-max_abs."""
    return 1 if max_abs <= 0 else math.floor(math.log2(max_abs)) + 2


def uniform_int_bits(bits: int) -> int:
    """hls4ml's default precision fixed<16,6>, scaled to `bits` total bits."""
    return max(1, round(bits * 6 / 16))


OUTPUT_SUM = "fixed<48,24>"  #: exact for the last layer's sum (its accumulator needs < 24 + 24 bits here)


def hls4ml_config(
    hls4ml: Any, m: Any, bits: int, variant: str, reuse: list[int], ranges: dict[str, float] | None
) -> dict[str, Any]:
    """hls4ml's own per-layer config for `m`, with our precisions and reuse factors filled in."""
    k = uniform_int_bits(bits)
    default = f"fixed<{bits},{k}>"
    cfg = hls4ml.utils.config_from_onnx_model(
        m, granularity="name", backend="Vivado", default_precision=default, default_reuse_factor=1
    )
    cfg["Model"]["Strategy"] = "Resource" if max(reuse) > 1 else "Latency"
    names = cfg["LayerName"]
    layers = dense_layers(m)
    if len(reuse) != len(layers):
        raise ValueError(f"{len(reuse)} reuse factors for {len(layers)} dense layers")

    def fmt(max_abs: float) -> str:
        return f"fixed<{bits},{int_bits(max_abs)},RND_CONV,SAT>"

    if variant == "profiled":
        assert ranges is not None
        names["global_in"]["Precision"]["result"] = fmt(ranges["global_in"])
    for lay, rf in zip(layers, reuse, strict=True):
        mm, add = names[lay["matmul"]], names[lay["add"]]
        mm["ReuseFactor"] = rf
        mm["Strategy"] = cfg["Model"]["Strategy"]
        if variant == "profiled":
            assert ranges is not None
            mm["Precision"]["weight"] = fmt(ranges[lay["weight"]])
            mm["Precision"]["bias"] = fmt(ranges[lay["bias"]])
        # The accumulator and the pre-activation sum stay 'auto' (exact, as in hwgen): hls4ml then
        # fuses the bias Add into the Dense. The W-bit activation is the layer's output, after the ReLU.
        if lay["relu"] is not None:
            if variant == "profiled":
                names[lay["relu"]]["Precision"]["result"] = fmt(ranges[lay["output"]])
            continue
        # The network output must be W bits too, but hls4ml fuses the Add only into a Dense whose
        # result type is 'auto' and then keeps that (wide) type. So the last Dense gets an explicit
        # result type wide enough to be exact, which keeps the Add as an ApplyAlpha layer that adds
        # the bias and rounds to W bits: the same arithmetic as a fused Dense with a W-bit result.
        mm["Precision"]["result"] = OUTPUT_SUM
        add["Precision"]["result"] = fmt(ranges[lay["output"]]) if ranges is not None else default
        if variant == "profiled":
            add["Precision"]["bias"] = fmt(ranges[lay["bias"]])
    return cfg


def run_hls4ml(
    bits: int, variant: str, x: np.ndarray, y: np.ndarray, out_dir: Path, reuse: list[int], calib: np.ndarray
) -> Row:
    """Convert, compile and predict with hls4ml; a failing stage is recorded, not faked."""
    row: Row = {"tool": "hls4ml", "bits": bits, "config": variant, "images": len(x)}
    prj = out_dir / f"hls4ml_w{bits}a{bits}_{variant}"
    log = io.StringIO()
    try:
        t = time.perf_counter()
        import hls4ml

        row["import_s"] = time.perf_counter() - t
        row["version"] = hls4ml.__version__
    except Exception as e:
        row["failed"] = _error("import hls4ml", e)
        return row
    row.update(backend="Vivado", io_type="io_parallel", requested_reuse=list(reuse), project=str(prj))
    stage = "prepare ONNX (qonnx-style cleaning)"
    try:
        with contextlib.redirect_stdout(log):
            t0 = time.perf_counter()
            m = prepare_for_hls4ml(MODEL)
            t1 = time.perf_counter()
            ranges = None
            if variant == "profiled":
                stage = "profiling (onnxruntime on the calibration images)"
                ranges = tensor_ranges(m, calib)
            t2 = time.perf_counter()
            stage = "hls4ml convert"
            cfg = hls4ml_config(hls4ml, m, bits, variant, reuse, ranges)
            hm = hls4ml.converters.convert_from_onnx_model(
                m,
                output_dir=str(prj),
                project_name="lenet300",
                backend="Vivado",
                io_type="io_parallel",
                hls_config=cfg,
            )
            t3 = time.perf_counter()
            stage = "hls4ml write"
            hm.write()
            t4 = time.perf_counter()
            row["convert_s"] = t4 - t0
            row["convert_steps_s"] = {
                "clean ONNX": round(t1 - t0, 4),
                "profile": round(t2 - t1, 4),
                "config + convert": round(t3 - t2, 4),
                "write": round(t4 - t3, 4),
            }
            row["strategy"] = cfg["Model"]["Strategy"]
            row["layers"] = [
                {
                    "name": lay.name,
                    "class": lay.class_name,
                    "reuse": lay.get_attr("reuse_factor"),
                    "types": {k: str(v.precision) for k, v in lay.types.items() if k != "table_t"},
                }
                for lay in hm.get_layers()
            ]
            stage = "hls4ml compile (g++)"
            t = time.perf_counter()
            hm._compile()  # compile() = write() + _compile(); write() was timed with the conversion
            row["compile_s"] = time.perf_counter() - t
            stage = "hls4ml predict"
            xin = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)
            t = time.perf_counter()
            pred = np.asarray(hm.predict(xin)).reshape(len(x), -1)
            row["predict_s"] = time.perf_counter() - t
        row["top1"] = float((pred.argmax(1) == y).mean())
        row["bit_exact"] = None  # hls4ml has no golden model of its own to compare with
    except Exception as e:
        row["failed"] = _error(stage, e)
    finally:
        prj.mkdir(parents=True, exist_ok=True)
        (prj / "hls4ml_compare.log").write_text(log.getvalue())
    return row


# ----------------------------------------------------------------------------------------------
# report


COLUMNS = (
    "tool",
    "bits",
    "config",
    "build/convert s",
    "compile s",
    "predict/csim s",
    "top-1 %",
    "golden top-1 %",
    "bit-exact vs own golden",
)


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        if r["tool"] == "onnxruntime":
            cells = ["onnxruntime", "fp32", r["config"], "-", "-", _f(r["predict_s"]), _f(100 * r["top1"]), "-", "n/a"]
        else:
            exact = "n/a"
            if r["tool"] == "hwgen":
                exact = (
                    "-"
                    if "mismatches" not in r
                    else (f"{'yes' if r['bit_exact'] else 'NO'} ({r['mismatches']}/{r['images']} mismatching)")
                )
            cells = [
                r["tool"],
                f"W{r['bits']}A{r['bits']}",
                r["config"],
                _f(r.get("build_s", r.get("convert_s"))),
                _f(r.get("compile_s")),
                _f(r.get("predict_s")),
                _f(None if "top1" not in r else 100 * r["top1"]),
                _f(None if "golden_top1" not in r else 100 * r["golden_top1"]),
                exact,
            ]
            if "failed" in r:
                cells[-1] += f" FAILED at {r['failed']['stage']}"
        out.append(cells)
    return out


def text_table(rows: list[Row]) -> str:
    body = table_rows(rows)
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(COLUMNS)]
    line = "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line, sep, *("  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body)])


def markdown(doc: dict[str, Any]) -> str:
    p = doc["provenance"]
    n = doc["images"]
    md = [
        "# hwgen vs hls4ml on LeNet-300-100 (MNIST)",
        "",
        f"{n} images ({doc['images_source']}); git {p['git']}, {p['date']}; hwgen {p['hwgen']}, "
        f"hls4ml {p.get('hls4ml')}, numpy {p['numpy']}, onnxruntime {p.get('onnxruntime')}, {p['gxx']}; "
        f"nproc {p['nproc']}; seed {p['seed']}.",
        "",
        "| " + " | ".join(c if c != "predict/csim s" else f"predict/csim s ({n} images)" for c in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    md += ["| " + " | ".join(cells) + " |" for cells in table_rows(doc["rows"])]
    md.append("")
    for r in doc["rows"]:
        if r["tool"] == "hls4ml" and "layers" in r:
            desc = "; ".join(
                f"{lay['name']}"
                + (f" RF {lay['reuse']}" if lay["class"] == "Dense" else "")
                + " "
                + ", ".join(
                    f"{k[:-2]} {v.replace(',0>', '>')}"
                    for k, v in lay["types"].items()
                    if k.endswith("_t") and k != "index_t"
                )
                for lay in r["layers"]
                if lay["class"] != "Reshape"
            )
            md.append(f"- hls4ml W{r['bits']}A{r['bits']} {r['config']} ({r['strategy']}): {desc}")
        if r["tool"] == "hwgen" and "layers" in r:
            desc = "; ".join(
                f"{lay['name']} reuse {lay['reuse']} ({lay['pe_x_simd']}), w {lay['weights']}, "
                f"out {lay['acts']}, acc {lay['accumulator']}"
                for lay in r["layers"]
            )
            md.append(f"- hwgen W{r['bits']}A{r['bits']} (formats fixed<bits,frac>): {desc}")
        if "failed" in r:
            md.append(
                f"- **{r['tool']} W{r['bits']}A{r['bits']} {r['config']} failed** at {r['failed']['stage']}: "
                f"`{r['failed']['error'][:500]}`"
            )
    md.append("")
    return "\n".join(md)


def tool_provenance(seed: int) -> dict[str, Any]:
    p = provenance(seed=seed)
    p["nproc"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p["cpu_count"] = os.cpu_count()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    p["git_dirty"] = bool(dirty.strip())
    for mod in ("hls4ml", "onnx", "onnxruntime"):
        try:
            p[mod] = __import__(mod).__version__
        except Exception as e:
            p[mod] = f"unavailable ({type(e).__name__}: {e})"
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="first N MNIST test images (default 1000, max 10000)")
    ap.add_argument("--bits", type=int, action="append", help="W for WbitsAbits; repeat for several (default 8)")
    ap.add_argument("--out-dir", default="build/bench", help="where the builds go (default build/bench)")
    ap.add_argument("--results-dir", default=str(RESULTS), help="where hls4ml_compare.{json,md} go")
    ap.add_argument("--only", choices=("hwgen", "hls4ml"), help="run one side only")
    ap.add_argument(
        "--hls4ml-configs",
        nargs="+",
        default=["uniform", "profiled"],
        choices=("uniform", "profiled"),
        help="hls4ml precision configurations (default both)",
    )
    ap.add_argument("--reuse", default="hwgen", help="hls4ml ReuseFactor: 'hwgen' (hwgen's per layer) or an integer")
    ap.add_argument("--seed", type=int, default=0, help="seeds python/numpy RNGs (the image choice is fixed)")
    args = ap.parse_args(argv)
    if not 1 <= args.images <= 10000:
        ap.error("--images must be in 1..10000")
    bits_list = args.bits or [8]
    random.seed(args.seed)
    np.random.seed(args.seed)
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    x, y, source = load_images(args.images)
    rows: list[Row] = [onnx_float_top1(x, y)]
    calib = load_calib()
    for bits in bits_list:
        if args.only != "hls4ml":
            print(f"hwgen W{bits}A{bits} ...", file=sys.stderr)
            rows.append(run_hwgen(bits, x, y, out_dir))
        if args.only != "hwgen":
            if args.reuse == "hwgen":
                try:
                    reuse = hwgen_reuse_factors(bits)
                except Exception as e:
                    print(f"hwgen's reuse factors unavailable ({e}); using ReuseFactor 1", file=sys.stderr)
                    reuse = [1, 1, 1]
            else:
                reuse = [int(args.reuse)] * 3
            for variant in args.hls4ml_configs:
                print(f"hls4ml W{bits}A{bits} {variant} ...", file=sys.stderr)
                rows.append(run_hls4ml(bits, variant, x, y, out_dir, reuse, calib))

    doc = {
        "benchmark": NAME,
        "model": str(MODEL.relative_to(ROOT)),
        "calibration": str(CALIB.relative_to(ROOT)),
        "images": args.images,
        "images_source": source,
        "provenance": tool_provenance(args.seed),
        "rows": rows,
    }
    print(text_table(rows))
    for r in rows:
        if "failed" in r:
            print(
                f"{r['tool']} W{r['bits']}A{r['bits']} {r['config']}: failed at {r['failed']['stage']}: "
                f"{r['failed']['error']}",
                file=sys.stderr,
            )
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{NAME}.json").write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    (results / f"{NAME}.md").write_text(markdown(doc))
    print(f"wrote {results / NAME}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
