"""The stage runners of a compression chain: each takes the current IR graph and returns the next.

A graph is in one of four states, read from its meta: float, float + shared (graph.meta
"weight_sharing"), quantized (meta "quantized"), quantized + shared. Fine-tuning adapts to it:
float -> masked fine-tuning (pruned zeros held), shared -> centroid fine-tuning (indices held),
quantized -> QAT with the pruning masks, quantized + shared -> centroid fine-tuning through fake
quantization (so the codebook the hardware holds is what was trained).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hwgen.compress.recipe import FinetuneStage, PruneStage, QuantizeStage, Recipe, ShareStage
from hwgen.config import BuildConfig, Calibration, LayerConfig, QuantConfig
from hwgen.errors import ConfigError
from hwgen.ir.graph import Graph
from hwgen.numerics import FixedPoint
from hwgen.passes.channel_prune import prune_channels
from hwgen.passes.prune import masks_from_zeros, prunable_weights, prune_nm
from hwgen.passes.quantize import quantize_fixed
from hwgen.passes.share import META_KEY, share_weights
from hwgen.sim.torch_exec import Mode, TorchExecutor
from hwgen.train.loop import FitConfig, evaluate
from hwgen.train.prune_schedule import fine_tune, iterative_prune
from hwgen.train.qat import qat
from hwgen.train.share_finetune import finetune_centroids

MAC_OPS = ("Dense", "Conv")


@dataclass
class Data:
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    calib: np.ndarray


@dataclass
class StageOutput:
    graph: Graph
    info: dict[str, Any] = field(default_factory=dict)  #: JSON-able facts for compress.json


def is_quantized(g: Graph) -> bool:
    return bool(g.meta.get("quantized"))


def is_shared(g: Graph) -> bool:
    return bool(g.meta.get(META_KEY))


def accuracy(g: Graph, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1: quantized graphs in float64 (sim.torch's quantized mode equals sim.exact), float ones in float32."""
    if is_quantized(g):
        return evaluate(TorchExecutor(g, Mode.QUANTIZED, dtype=torch.float64), x, y, batch_size=500)
    return evaluate(TorchExecutor(g, Mode.FLOAT, dtype=torch.float32), x, y, batch_size=1000)


def _fit(recipe: Recipe, epochs: int, lr: float, progress: bool) -> FitConfig:
    return FitConfig(epochs=epochs, batch_size=recipe.batch_size, lr=lr, seed=recipe.seed, progress=progress)


def _node_names(g: Graph) -> dict[str, str]:
    """Every name a MAC node answers to (IR and ONNX name) -> its IR name."""
    out = {}
    for n in g.nodes:
        if n.op in MAC_OPS:
            out[n.name] = n.name
            if n.onnx_name:
                out.setdefault(n.onnx_name, n.name)
    return out


def resolve_layers(g: Graph, layers: dict[str, Any], where: str) -> dict[str, Any]:
    """Per-layer settings keyed by IR node name; unknown names are an error naming the recipe key."""
    names = _node_names(g)
    bad = sorted(k for k in layers if k not in names)
    if bad:
        raise ConfigError(
            f"{where}: layers {bad} are not Dense/Conv nodes of the model; known: {sorted(set(names.values()))}"
        )
    return {names[k]: v for k, v in layers.items()}


def prune(g: Graph, st: PruneStage, data: Data, recipe: Recipe, where: str, progress: bool) -> StageOutput:
    if is_quantized(g) or is_shared(g):
        raise ConfigError(f"{where}: prune runs on the float model, before share/quantize")
    per = resolve_layers(g, st.layers, where)
    macs = [n.name for n in prunable_weights(g).values()]
    val = (data.x_val, data.y_val)
    info: dict[str, Any] = {"method": st.method}
    if st.method == "magnitude":
        target: float | dict[str, float]
        if st.scope == "global":
            assert st.sparsity is not None
            target = st.sparsity
        else:
            target = {n: per.get(n, st.sparsity or 0.0) for n in macs}
        final = st.final_epochs if st.final_epochs is not None else st.epochs
        res = iterative_prune(
            g,
            data.x,
            data.y,
            final_sparsity=target,
            rounds=st.rounds,
            config=_fit(recipe, st.epochs, st.lr, progress),
            final_config=_fit(recipe, final, st.lr, progress),
            scope=st.scope,
            val=val,
        )
        info["rounds"] = [vars(r) for r in res.rounds]
        return StageOutput(res.graph, info)
    if st.method == "n:m":
        pruned = prune_nm(g, n=st.n, m=st.m, layers=list(per) or None).graph
    else:
        ratio = {n: per.get(n, st.sparsity or 0.0) for n in macs} if per else st.sparsity
        pruned = prune_channels(g, ratio=ratio).graph  # type: ignore[arg-type]
    info["accuracy_before_finetune"] = accuracy(pruned, *val)
    if st.epochs:
        pruned, _ = fine_tune(
            pruned, data.x, data.y, _fit(recipe, st.epochs, st.lr, progress), masks=masks_from_zeros(pruned), val=val
        )
    return StageOutput(pruned, info)


def finetune(g: Graph, epochs: int, lr: float, data: Data, recipe: Recipe, progress: bool) -> Graph:
    """Fine-tune whatever the graph is now, keeping what earlier stages fixed (see module docstring)."""
    if epochs == 0:
        return g
    cfg = _fit(recipe, epochs, lr, progress)
    val = (data.x_val, data.y_val)
    if is_shared(g):
        mode = Mode.QUANTIZED if is_quantized(g) else Mode.FLOAT
        return finetune_centroids(g, data.x, data.y, cfg, mode=mode, val=val)[0]
    if is_quantized(g):
        return qat(g, data.x, data.y, cfg, masks=masks_from_zeros(g), val=val).graph
    return fine_tune(g, data.x, data.y, cfg, masks=masks_from_zeros(g), val=val)[0]


def run_finetune(g: Graph, st: FinetuneStage, data: Data, recipe: Recipe, where: str, progress: bool) -> StageOutput:
    return StageOutput(finetune(g, st.epochs, st.lr, data, recipe, progress))


def share(g: Graph, st: ShareStage, data: Data, recipe: Recipe, where: str, progress: bool) -> StageOutput:
    if is_quantized(g):
        raise ConfigError(f"{where}: share runs before quantize (on float weights)")
    per = resolve_layers(g, st.layers, where)
    q = recipe.quantize
    out = g
    bits_of = {n.name: per.get(n.name, st.bits) for n in g.nodes if n.op in MAC_OPS}
    groups: dict[int, list[str]] = {}
    for n in g.nodes:
        if n.op in MAC_OPS and bits_of[n.name] is not None:
            wb = q.weight_bits_of(n.name, n.onnx_name) if q is not None else 8
            groups.setdefault(wb, []).append(n.name)
    records = []
    for wb, names in groups.items():
        res = share_weights(out, bits={k: bits_of[k] for k in names}, weight_bits=wb, layers=names)
        out, records = res.graph, records + [r.__dict__ for r in res.records]
    before = accuracy(out, data.x_val, data.y_val)
    info: dict[str, Any] = {"records": _jsonable(records), "accuracy_before_finetune": before}
    return StageOutput(finetune(out, st.epochs, st.lr, data, recipe, progress), info)


def quantize(g: Graph, st: QuantizeStage, data: Data, recipe: Recipe, where: str, progress: bool) -> StageOutput:
    if is_quantized(g):
        raise ConfigError(f"{where}: the model is already quantized")
    per = resolve_layers(g, st.layers, where)
    cfg = BuildConfig(
        quantize=QuantConfig(weight_bits=st.weight_bits, act_bits=st.act_bits, calibration=Calibration(st.calibration)),
        layers={k: LayerConfig(**v) for k, v in per.items()},
    )
    res = quantize_fixed(g, data.calib, cfg)
    qg = res.graph
    _check_codebooks(qg, where)
    info: dict[str, Any] = {
        "records": _jsonable([r.__dict__ for r in res.records]),
        "accuracy_before_finetune": accuracy(qg, data.x_val, data.y_val),
    }
    if st.epochs and not is_shared(qg):
        qg = qat(
            qg,
            data.x,
            data.y,
            _fit(recipe, st.epochs, st.lr, progress),
            float_graph=g,
            masks=masks_from_zeros(g),
            val=(data.x_val, data.y_val),
        ).graph
    else:
        qg = finetune(qg, st.epochs, st.lr, data, recipe, progress)
    return StageOutput(qg, info)


def _check_codebooks(qg: Graph, where: str) -> None:
    """The quantize pass must keep every shared codebook's codes (same format as the codebook)."""
    meta = qg.meta.get(META_KEY, {})
    for n in qg.nodes:
        if n.name in meta:
            fmt = qg.values[n.inputs[1]].type.format
            if not isinstance(fmt, FixedPoint) or fmt.name != meta[n.name]["format"]:
                raise ConfigError(
                    f"{where}: layer {n.name}: quantize chose weights {fmt} but its shared codebook is "
                    f"{meta[n.name]['format']}; give the layer the codebook's weight_bits"
                )


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v


Runner = Callable[[Graph, Any, Data, Recipe, str, bool], StageOutput]
RUNNERS: dict[str, Runner] = {
    "prune": prune,
    "finetune": run_finetune,
    "share": share,
    "quantize": quantize,
}

__all__ = ["RUNNERS", "Data", "StageOutput", "accuracy", "finetune", "is_quantized", "is_shared", "resolve_layers"]
