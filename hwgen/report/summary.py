"""report.json: the build's figures under keys that downstream tools rely on (extend, never rename)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.hw.devices import Device
from hwgen.hw.plan import ConvPlan, DensePlan, Schedule, WinogradConvPlan
from hwgen.hw.resources import estimate_report
from hwgen.hw.sparse import SparseDensePlan
from hwgen.hw.sparse import storage as sparse_storage
from hwgen.ir.graph import Graph
from hwgen.passes.base import NodeRecord
from hwgen.report.storage import compression_section

#: the plans with weights, MACs and a requantized accumulator
MAC_PLANS = (DensePlan, ConvPlan, SparseDensePlan, WinogradConvPlan)


def _float_params(graph: Graph) -> int:
    return sum(int(np.prod(v.const.shape)) for v in graph.values.values() if v.const is not None)


def _macs(graph: Graph) -> int:
    """Multiply-accumulates per sample of every Dense and Conv."""
    total = 0
    for n in graph.nodes:
        if n.op == "Dense":
            total += int(np.prod(graph.const(n.inputs[1]).shape))
        elif n.op == "Conv":
            out = graph.value(n.outputs[0]).type.shape
            total += int(np.prod(graph.const(n.inputs[1]).shape)) * int(np.prod(out[1:]))
    return total


def _value_format(graph: Graph, node: Any) -> str | None:
    if node is None:
        return None
    return graph.value(node.outputs[0]).type.format.name


def build_report(
    float_graph: Graph,
    quant_graph: Graph,
    schedule: Schedule,
    records: list[NodeRecord],
    accuracy: dict[str, Any] | None,
    source: str,
    device: Device | None = None,
) -> dict[str, Any]:
    """The report of a fresh build (verification and synthesis sections start empty).

    Each layer carries its resource estimate (`resources`: multipliers, memory bits, block RAMs
    and rough LUT/FF, hwgen.hw.resources), and `hardware.estimate` the totals against `device`.
    """
    estimate = estimate_report(schedule, device)
    by_source = {(n.onnx_name or n.name): n for n in quant_graph.nodes}
    quant_rec = {r.node: r.values for r in records if r.pass_name == "quantize_fixed"}
    layers = []
    for plan in schedule.layers:
        node = by_source.get(plan.source)
        rec = quant_rec.get(node.name, {}) if node is not None else {}
        entry: dict[str, Any] = {
            "name": plan.name,
            "onnx_name": plan.source,
            "op": node.op if node is not None else plan.engine,
            "engine": plan.engine,
            "inputs": list(plan.inputs),
            "outputs": list(plan.outputs),
            "latency_cycles": plan.latency,
            "ii_cycles": plan.ii,
            "act_format": rec.get("act_format") or _value_format(quant_graph, node),
            "weight_format": rec.get("weight_format"),
            "params": 0,
            "nonzeros": 0,
            "weight_bits": 0,
            "macs": 0,
            "reuse": None,
            "resources": estimate["layers"][plan.name],
        }
        if isinstance(plan, MAC_PLANS):
            params = int(plan.weights.size + plan.biases.size)
            weight_bits = int(plan.weights.size * plan.w.bits + plan.biases.size * plan.bias.bits)
            macs, reuse = _macs_reuse(plan)
            entry.update(
                {
                    "input_format": rec.get("input_format"),
                    "bias_format": rec.get("bias_format"),
                    "weight_sqnr_db": rec.get("weight_sqnr_db"),
                    "params": params,
                    "nonzeros": int(np.count_nonzero(plan.weights)),
                    "weight_bits": weight_bits,
                    "macs": macs,
                    "reuse": reuse,
                    "pe": plan.pes if isinstance(plan, SparseDensePlan) else plan.pe,
                    "simd": 1 if isinstance(plan, SparseDensePlan) else plan.simd,
                    "multipliers": plan.multipliers,
                    "widths": {
                        "input": str(plan.inp),
                        "weight": str(plan.w),
                        "product": str(plan.prod),
                        "accumulator": str(plan.acc),
                        "output": str(plan.out),
                        "bias": str(plan.bias),
                    },
                    "requant": {
                        "shift": plan.requant.shift,
                        "rounding": str(plan.requant.rounding),
                        "lo": plan.requant.lo,
                        "hi": plan.requant.hi,
                    },
                }
            )
            if isinstance(plan, SparseDensePlan):
                entry["sparse"] = {
                    "density": round(plan.density, 6),
                    "pes": plan.pes,
                    "index_bits": plan.index_bits,
                    "csc_entries": plan.csc.entries,
                    "padding_entries": plan.csc.padding,
                    "weight_coding": plan.weight_coding,
                    # weight memory by part; Huffman-coded: stream bits against the entropy bound
                    "storage": sparse_storage(plan),
                }
            if isinstance(plan, WinogradConvPlan):
                entry["winograd"] = {"tile": plan.tile, "tiles": list(plan.tiles)}
                entry.update(
                    {
                        "in_shape": [plan.channels_in, plan.in_h, plan.in_w],
                        "out_shape": [plan.channels_out, plan.out_h, plan.out_w],
                        "kernel": [3, 3],
                        "stride": [1, 1],
                        "groups": 1,
                    }
                )
            elif isinstance(plan, DensePlan | SparseDensePlan):
                entry.update({"in_features": plan.in_features, "out_features": plan.out_features})
            else:
                entry.update(
                    {
                        "in_shape": [plan.channels_in, plan.in_h, plan.in_w],
                        "out_shape": [plan.channels_out, plan.out_h, plan.out_w],
                        "kernel": list(plan.kernel),
                        "stride": list(plan.stride),
                        "groups": plan.groups,
                    }
                )
        layers.append(entry)
    return {
        "hwgen_report_version": 1,
        "model": {
            "name": float_graph.name,
            "source": Path(source).name,
            "top": schedule.top,
            "hash": schedule.model_hash,
            "params": _float_params(float_graph),
            "macs": _macs(quant_graph),
            "input": {
                "name": schedule.input.source,
                "shape": list(schedule.input.shape),
                "format": _fmt(schedule.input),
            },
            "output": {
                "name": schedule.output.source,
                "shape": list(schedule.output.shape),
                "format": _fmt(schedule.output),
            },
        },
        "layers": layers,
        # what each engine stores (sparse: CSC or Huffman parts), by part, against float32
        "compression": compression_section(
            [p for p in schedule.layers if isinstance(p, MAC_PLANS)], _float_params(float_graph)
        ),
        "hardware": {
            "latency_cycles": schedule.latency,
            "ii_cycles": schedule.ii,
            "multipliers": sum(p.multipliers for p in schedule.layers if isinstance(p, MAC_PLANS)),
            "resources": {"LUT": None, "FF": None, "DSP": None, "BRAM": None},
            "resources_source": None,
            "estimate": {k: v for k, v in estimate.items() if k != "layers"},
        },
        "verification": {"csim": None, "rtl": None},
        "accuracy": accuracy,
    }


def _macs_reuse(plan: Any) -> tuple[int, int]:
    """(MACs per sample of the layer, cycles per multiplier: per sample for dense engines, per output
    pixel for conv, per tile for Winograd, worst-case non-zeros per PE for sparse)."""
    if isinstance(plan, DensePlan):
        return int(plan.weights.size), plan.reuse
    if isinstance(plan, SparseDensePlan):
        return int(plan.weights.size), int(plan.csc.counts().sum(axis=1).max())
    if isinstance(plan, WinogradConvPlan):
        return int(plan.weights.size) * plan.out_h * plan.out_w, plan.nf * plan.sf
    return plan.macs, plan.macs // max(1, plan.multipliers) // (plan.out_h * plan.out_w)


def _fmt(port: Any) -> str:
    return f"{'' if port.elem.signed else 'u'}fixed<{port.elem.bits},{port.frac}>"


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Deterministic JSON (sorted keys), written atomically via a temporary file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
