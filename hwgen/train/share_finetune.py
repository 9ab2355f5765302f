"""Centroid fine-tuning of shared weights (Deep Compression's retraining after quantization).

Why: k-means moves every weight to its centroid; training the centroids (not the weights) recovers
the accuracy lost while keeping the codebook, so the indices and their Huffman code do not change.

Each shared weight constant is computed in the executor (`TorchExecutor.set_source`) as
`[0, c_1, ..., c_n-1][indices]`: the zero symbol is pinned at 0 (pruned weights stay zero) and the
centroids c are the parameters. Autograd of that gather sums the weight gradients per centroid,
which is exactly `hwgen.passes.share.centroid_gradients` (tests/train/test_share_finetune.py
checks the two agree). In quantized mode the executor fake-quantizes the weights onto their
format (STE), so the forward pass sees the codebook the hardware will hold. After training, the
centroids are rounded half-even onto the codebook's format and written back with the biases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from hwgen.errors import GraphError
from hwgen.ir.graph import Graph, Value
from hwgen.numerics import FixedPoint, Overflow, Rounding
from hwgen.numerics.spec import parse_format
from hwgen.passes.share import META_KEY, SharedTensor, shared_from_values
from hwgen.sim.torch_exec import Mode, TorchExecutor
from hwgen.train.loop import FitConfig, History, fit

log = logging.getLogger(__name__)


class CodebookSource(torch.nn.Module):
    """A weight as codebook[indices], the zero symbol pinned at 0; `centroids` is the parameter."""

    def __init__(self, centroids: np.ndarray, indices: np.ndarray) -> None:
        super().__init__()
        self.centroids = torch.nn.Parameter(torch.tensor(np.asarray(centroids, dtype=np.float64)))
        self.register_buffer("indices", torch.as_tensor(np.asarray(indices, dtype=np.int64)))

    def table(self) -> torch.Tensor:
        return torch.cat([self.centroids.new_zeros(1), self.centroids])

    def forward(self) -> torch.Tensor:
        return self.table()[self.indices]


@dataclass(frozen=True)
class SharedLayer:
    """Where one shared weight lives in the graph, its codebook and the module that trains it."""

    node: str
    weight: str  #: the weight constant's name
    fmt: FixedPoint  #: the codebook's format
    shared: SharedTensor
    source: CodebookSource


def shared_layers(graph: Graph) -> list[tuple[str, str, FixedPoint, SharedTensor]]:
    """(node, weight constant, codebook format, SharedTensor) of every node `share_weights` shared."""
    meta = graph.meta.get(META_KEY, {})
    out = []
    for node in graph.nodes:
        if node.name not in meta:
            continue
        fmt = parse_format(meta[node.name]["format"])
        if not isinstance(fmt, FixedPoint):
            raise GraphError(f"{node.describe()}: codebook format {fmt} is not fixed point")
        w = node.inputs[1]
        out.append((node.name, w, fmt, shared_from_values(graph.const(w), fmt, int(meta[node.name]["bits"]))))
    if not out:
        raise GraphError(f"graph '{graph.name}': no shared weights (run hwgen.passes.share.share_weights first)")
    return out


def attach_codebooks(executor: TorchExecutor, graph: Graph) -> list[SharedLayer]:
    """Make every shared weight of `graph` a CodebookSource of `executor` (started at its codebook values)."""
    layers = []
    for node, w, fmt, st in shared_layers(graph):
        src = CodebookSource(fmt.to_float(st.codebook[1:]), st.indices).to(executor._dtype())
        executor.set_source(w, src)
        layers.append(SharedLayer(node, w, fmt, st, src))
    return layers


def finetune_centroids(
    graph: Graph,
    x: np.ndarray,
    y: np.ndarray,
    config: FitConfig | None = None,
    *,
    mode: Mode | str = Mode.QUANTIZED,
    train_biases: bool = True,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Graph, History]:
    """Fine-tune the centroids of `graph`'s shared weights (and its MAC biases) on (x, y).

    `graph` is float (after share_weights; mode FLOAT) or quantized (after quantize_fixed; mode
    QUANTIZED). Returns a copy with the trained codebooks (same indices, entries rounded half-even
    onto the codebook format) and biases, and the training history.
    """
    mode = Mode(mode)
    biases = [n.inputs[2] for n in graph.nodes if n.op in ("Dense", "Conv") and len(n.inputs) > 2]
    ex = TorchExecutor(graph, mode, trainable=biases if train_biases else [], dtype=dtype)
    layers = attach_codebooks(ex, graph)
    params = [p for p in ex.parameters() if p.requires_grad]
    history = fit(ex, x, y, config, val=val, params=params)
    out = ex.write_back(graph)
    meta = dict(out.meta.get(META_KEY, {}))
    for layer in layers:
        with torch.no_grad():
            cents = layer.source.centroids.detach().double().cpu().numpy()
        codes = layer.fmt.encode(cents, rounding=Rounding.HALF_EVEN, overflow=Overflow.SATURATE)
        table = np.concatenate([[0], codes]).astype(np.int64)
        dst = out.value(layer.weight)
        new = layer.fmt.to_float(table[layer.shared.indices]).astype(dst.const.dtype)
        out.values[layer.weight] = Value(layer.weight, dst.type, new)
        meta[layer.node] = {**meta[layer.node], "codebook": np.unique(np.concatenate([[0], codes])).tolist()}
        log.debug("centroids of %s: %s", layer.node, codes.tolist())
    out.meta[META_KEY] = meta
    return out, history


__all__ = ["CodebookSource", "SharedLayer", "attach_codebooks", "finetune_centroids", "shared_layers"]
