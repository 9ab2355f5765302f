"""Winograd rewrite: 3x3 stride-1 convolutions become WinogradConv nodes of F(2x2,3x3) or F(4x4,3x3).

Rewrites: each Conv with a 2-D 3x3 kernel, stride 1, dilation 1 and group 1 (any padding) becomes a
          WinogradConv with the same inputs (x, weights, bias), attributes and name, plus `tile`
          (m of F(m x m, 3x3)). Weights stay as they are: the filter transform is done offline by
          the golden model and the hardware plan (hwgen.sim.winograd_kernels). Works on float and on
          quantized graphs: on a quantized one the integer datapath is exact, so the golden model's
          outputs do not change at all.
Tile:     per layer from `layers` (node or ONNX name -> 2, 4, or None to keep the direct conv), else
          `tile`: 2, 4, or "auto" (the tile with the fewest multiplications over the layer's tile
          grid, partial edge tiles counted in full).
Refuses:  (records, never raises) other kernels, strides, dilations, groups and ranks, each with the
          reason in the record; an invalid tile request raises ConfigError naming the layer.
Records:  per Conv: rewritten, and tile, transform_scale (s: Gs = diag(d) G, As^T = s A^T diag(d)^-1),
          divisor (s^2, the exact division after the output transform), multiplications of the
          direct and the Winograd form per sample, their ratio; or the reason it was kept.
Float error: the float reference (float64) equals the direct convolution within 1e-5 on unit-range
          data for both tiles. In float32, relative to sum |w||x|: F(2x2,3x3) <= 1e-6 and
          F(4x4,3x3) <= 1e-5 (measured 9e-8 and 1.1e-6; direct 5e-8), tests/sim/test_winograd_kernels.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hwgen.errors import ConfigError
from hwgen.ir.graph import Graph, Node
from hwgen.ir.ops import window_of
from hwgen.passes.base import NodeRecord, PassResult
from hwgen.sim.winograd_kernels import TILES, tile_grid, transform

log = logging.getLogger(__name__)

PASS_NAME = "winograd"


def refusal(graph: Graph, node: Node) -> str | None:
    """Why `node` (a Conv) cannot become a WinogradConv, or None when it can."""
    w_shape = graph.value(node.inputs[1]).type.shape
    if len(w_shape) != 4:
        return f"{len(w_shape) - 2}-D convolution (only 2-D)"
    win = window_of(node)
    if win.kernel != (3, 3):
        return f"kernel {win.kernel[0]}x{win.kernel[1]} (only 3x3)"
    if win.strides != (1, 1):
        return f"stride {win.strides[0]}x{win.strides[1]} (only 1)"
    if win.dilations != (1, 1):
        return f"dilation {win.dilations[0]}x{win.dilations[1]} (only 1)"
    if win.ceil_mode:
        return "ceil_mode"
    groups = node.attrs.get("group", 1)
    if groups != 1:
        return f"group={groups} (only group 1)"
    return None


def products(out_hw: tuple[int, int], channels: int, tile: int | None) -> int:
    """Multiplications per sample per output channel: direct (tile None) 9 per output, Winograd alpha^2 per tile."""
    if tile is None:
        return 9 * out_hw[0] * out_hw[1] * channels
    th, tw = tile_grid(*out_hw, tile)
    return th * tw * transform(tile).products_per_tile * channels


def _choose(node: Node, out_hw: tuple[int, int], channels: int, tile: int | str, layers: Mapping[str, Any]) -> Any:
    for key in (node.name, node.onnx_name):
        if key and key in layers:
            want = layers[key]
            break
    else:
        want = tile
    if want == "auto":
        return min(TILES, key=lambda m: (products(out_hw, channels, m), m))
    if want is not None and want not in TILES:
        raise ConfigError(f"{node.describe()}: Winograd tile {want!r} is not one of {TILES}, 'auto' or None")
    return want


def winograd(graph: Graph, *, tile: int | str = 2, layers: Mapping[str, int | str | None] | None = None) -> PassResult:
    """Rewrite eligible 3x3 convolutions into WinogradConv (see the module docstring). Functional."""
    layers = dict(layers or {})
    if tile != "auto" and tile not in TILES:
        raise ConfigError(f"Winograd tile {tile!r} is not one of {TILES} or 'auto'")
    g = graph.copy()
    records: list[NodeRecord] = []
    changed = False
    for node in g.nodes:
        if node.op != "Conv":
            continue
        reason = refusal(g, node)
        if reason is not None:
            records.append(NodeRecord(node.name, node.onnx_name, PASS_NAME, {"rewritten": False, "reason": reason}))
            log.debug("%s: kept as Conv: %s", node.name, reason)
            continue
        out_shape = g.value(node.outputs[0]).type.shape
        channels = g.value(node.inputs[1]).type.shape[1]
        out_hw = (out_shape[1], out_shape[2])
        m = _choose(node, out_hw, channels, tile, layers)
        if m is None:
            records.append(
                NodeRecord(node.name, node.onnx_name, PASS_NAME, {"rewritten": False, "reason": "kept by request"})
            )
            continue
        t = transform(m)
        node.op = "WinogradConv"
        node.attrs["tile"] = m
        direct, wino = products(out_hw, channels, None), products(out_hw, channels, m)
        records.append(
            NodeRecord(
                node.name,
                node.onnx_name,
                PASS_NAME,
                {
                    "rewritten": True,
                    "tile": t.name,
                    "transform_scale": t.scale,
                    "divisor": t.divisor,
                    "products_direct": direct * out_shape[0],
                    "products_winograd": wino * out_shape[0],
                    "reduction": round(direct / wino, 3),
                },
            )
        )
        log.debug("%s: %s", node.name, t.name)
        changed = True
    log.info("winograd: %d of %d convolutions rewritten", sum(r.values["rewritten"] for r in records), len(records))
    return PassResult(g, changed, records)


__all__ = ["PASS_NAME", "products", "refusal", "winograd"]
