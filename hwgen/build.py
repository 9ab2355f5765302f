"""`hwgen build`: ONNX -> IR -> canonical -> quantized -> Schedule -> HLS C++ + Verilog + report.

The build is a list of named steps, each a small function. Output is written to a temporary
directory beside OUT and moved into place only when every step succeeded, so a failed build
never leaves a half-written OUT. Everything written is deterministic (no times, no paths).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.config import BuildConfig
from hwgen.data import load_data
from hwgen.errors import DataError, HwgenError
from hwgen.frontend import import_onnx
from hwgen.hw.devices import get_device
from hwgen.hw.lower import schedule_graph
from hwgen.hw.plan import Schedule
from hwgen.hw.winograd import ENGINE_TILE
from hwgen.ir.graph import Graph
from hwgen.ir.serialize import load_graph, save_graph
from hwgen.passes.base import PassResult, run_pipeline
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.passes.winograd import winograd
from hwgen.report.summary import build_report, read_json, write_json
from hwgen.sim import exact, reference

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
CALIB_RANDOM_SAMPLES = 256


@dataclass
class BuildResult:
    out_dir: Path
    report: dict[str, Any]
    schedule: Schedule
    seconds: dict[str, float] = field(default_factory=dict)


def _calibration_data(graph: Graph, calib: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The --calib samples (and labels), else random normal samples. A model quantized by its exporter
    (QDQ/QONNX) keeps its own quantization and is not calibrated, so only a float model is warned about."""
    if calib is not None:
        return load_data(calib, graph)
    if not graph.meta.get("imported_quant"):
        log.warning(
            "no --calib data: calibrating on %d random normal samples; pass --calib for accuracy", CALIB_RANDOM_SAMPLES
        )
    rng = np.random.default_rng(0)
    return rng.standard_normal((CALIB_RANDOM_SAMPLES, *graph.value(graph.inputs[0]).type.shape)), None


def accuracy(float_graph: Graph, quant_graph: Graph, x: np.ndarray, y: np.ndarray, dataset: str) -> dict[str, Any]:
    """Top-1 of the float reference and of the golden model over every sample."""
    ref = reference.run(float_graph, x)[float_graph.outputs[0]].reshape(len(x), -1)
    q = exact.run(quant_graph, x)[quant_graph.outputs[0]].reshape(len(x), -1)
    if y.min() < 0 or y.max() >= ref.shape[1]:
        raise DataError(f"{dataset}: labels span [{y.min()}, {y.max()}] but the model has {ref.shape[1]} outputs")
    return {
        "dataset": dataset,
        "samples": len(x),
        "float": round(float((ref.argmax(1) == y).mean()), 6),
        "quantized": round(float((q.argmax(1) == y).mean()), 6),
    }


def _hardware_tile(request: str | None, where: str) -> int | None:
    """The Winograd tile a hardware build applies for a config request (None: direct conv).

    The engine implements F(2x2,3x3) only (hwgen.hw.winograd.ENGINE_TILE), so "auto" means that
    tile, and "4" builds it too, with a warning: F(4x4,3x3) exists in the golden model only.
    """
    if request in (None, "off"):
        return None
    if request == "4":
        log.warning(
            '%s: winograd = "4": F(4x4,3x3) has no hardware engine yet; building F(2x2,3x3) '
            '(set winograd = "2" to silence this)',
            where,
        )
    return ENGINE_TILE


def _winograd_step(qg: Graph, config: BuildConfig) -> PassResult | None:
    """The Winograd rewrite of the quantized graph per `hardware.winograd` / `[layers.NAME] winograd`.

    Runs after quantization: the integer Winograd datapath is exact, so the golden outputs do not change.
    """
    tiles = {}
    for node in qg.nodes:
        if node.op == "Conv":
            request = config.layer(node.name, node.onnx_name).winograd or config.hardware.winograd
            tiles[node.name] = _hardware_tile(request, node.describe())
    if not any(tiles.values()):
        return None
    return winograd(qg, tile=ENGINE_TILE, layers=tiles)


def compile_model(
    model: Path, config: BuildConfig, calib: Path | None, progress: Progress
) -> tuple[Graph, Graph, Schedule, dict[str, Any]]:
    """The front half of the build (no files written): graphs, schedule and report."""
    progress("import ONNX")
    g = import_onnx(model, name=model.stem)
    progress("canonicalize")
    g, records = run_pipeline(g, [canonicalize])
    progress("calibrate + quantize")
    x, y = _calibration_data(g, calib)
    qres = quantize_fixed(g, x, config)
    records += qres.records
    qg = qres.graph
    wres = _winograd_step(qg, config)
    if wres is not None:
        progress("winograd")
        qg = wres.graph
        records += wres.records
    acc = None
    if y is not None:
        progress("accuracy (float vs golden)")
        acc = accuracy(g, qg, x, y, Path(calib).name if calib else "")
    progress("schedule")
    sched = schedule_graph(qg, config, top=model.stem)
    device = get_device(config.hardware.device) if config.hardware.device else None
    report = build_report(g, qg, sched, records, acc, str(model), device)
    return g, qg, sched, report


def write_build(
    out_tmp: Path, qg: Graph, sched: Schedule, config: BuildConfig, report: dict[str, Any], progress: Progress
) -> None:
    from hwgen.hw.hls_emit import emit_hls
    from hwgen.hw.rtl_emit import emit_rtl
    from hwgen.hw.vendor import emit_vendor_scripts

    progress("emit HLS C++")
    emit_hls(sched, out_tmp / "hls", part=config.hardware.part, clock_mhz=config.hardware.clock_mhz)
    progress("emit Verilog")
    emit_rtl(sched, out_tmp / "rtl")
    emit_vendor_scripts(sched, out_tmp, part=config.hardware.part, clock_mhz=config.hardware.clock_mhz)
    save_graph(qg, out_tmp / "ir")
    (out_tmp / "build.json").write_text(
        json.dumps({"top": sched.top, "config": _config_doc(config)}, indent=2, sort_keys=True) + "\n"
    )
    write_json(out_tmp / "report.json", report)


def _config_doc(config: BuildConfig) -> dict[str, Any]:
    doc = asdict(config)
    return json.loads(json.dumps(doc, default=str))


def build(
    model: Path,
    out: Path,
    config: BuildConfig,
    *,
    calib: Path | None = None,
    force: bool = False,
    progress: Progress = lambda step: None,
    html: bool = False,
) -> BuildResult:
    """Build `model` into `out` atomically (see module docstring); `html` adds OUT/report.html."""
    t0 = time.perf_counter()
    if out.exists() and not force:
        raise HwgenError(f"{out}: already exists; pass --force to replace it")
    _float_graph, qg, sched, report = compile_model(model, config, calib, progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write_build(tmp, qg, sched, config, report, progress)
        if html:
            from hwgen.report.html import write_html_report

            progress("write report.html")
            write_html_report(tmp)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.replace(trash / "old")
            tmp.replace(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out, report, sched, {"total": time.perf_counter() - t0})


@dataclass
class LoadedBuild:
    """A build directory read back for verify/synth: the quantized graph, schedule and report."""

    out_dir: Path
    graph: Graph
    schedule: Schedule
    config: BuildConfig
    report: dict[str, Any]


def load_build(out: Path) -> LoadedBuild:
    from hwgen.config import config_from_dict

    if not (out / "build.json").is_file():
        raise HwgenError(f"{out}: not a hwgen build directory (no build.json); run `hwgen build MODEL -o {out}` first")
    meta = json.loads((out / "build.json").read_text())
    cfg_doc = meta["config"]
    cfg_doc["layers"] = {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in cfg_doc["layers"].items()}
    cfg_doc["quantize"] = {k: v for k, v in cfg_doc["quantize"].items() if v is not None}
    config = config_from_dict(cfg_doc, str(out / "build.json"))
    graph = load_graph(out / "ir")
    sched = schedule_graph(graph, config, top=meta["top"])
    return LoadedBuild(out, graph, sched, config, read_json(out / "report.json"))


__all__ = ["BuildResult", "LoadedBuild", "accuracy", "build", "compile_model", "load_build"]
