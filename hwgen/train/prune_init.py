"""Pruning at initialization (or from gradients anywhere): SNIP, gradient norm, magnitude, FORCE.

Saliencies per weight, from a few mini-batches of data through `sim.torch` (float mode):
  magnitude      |w|
  gradient norm  |dL/dw|
  SNIP           |dL/dw * w| (connection sensitivity, Lee et al. 2019)
Masks keep the top (1 - sparsity) over all layers (global scope, as SNIP does) or per layer.

Iterative variants prune to the target over several steps with an exponential density schedule
d_t = d_final^(t/T), recomputing SNIP scores on the pruned network at each step:
  iterative SNIP  pruned weights score 0: masks only shrink (nested);
  FORCE           gradients are taken at the pruned network w.r.t. every weight (de Jorge et al.
                  2021), so a pruned weight whose |g * w| becomes large enough comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import torch

from hwgen.errors import ConfigError
from hwgen.ir.graph import Graph
from hwgen.passes.prune import Masks, Scope, magnitude_masks, prunable_weights
from hwgen.sim.torch_exec import Mode, TorchExecutor

log = logging.getLogger(__name__)


class Saliency(StrEnum):
    MAGNITUDE = "magnitude"
    GRADIENT = "gradient"
    SNIP = "snip"


def mean_gradients(
    graph: Graph, x: np.ndarray, y: np.ndarray, *, batch_size: int = 128, batches: int = 4, seed: int = 0
) -> dict[str, np.ndarray]:
    """dL/dw (cross-entropy, mean over `batches` random mini-batches) for every Dense/Conv weight of `graph`.

    Gradients are taken at the graph's weights as stored: zeroed (pruned) weights get a gradient too.
    """
    names = list(prunable_weights(graph))
    ex = TorchExecutor(graph, Mode.FLOAT, trainable=names, dtype=torch.float32)
    rng = np.random.default_rng(seed)
    ex.train()
    for _ in range(batches):
        idx = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
        out = ex(torch.as_tensor(np.asarray(x[idx]), dtype=torch.float32))
        loss = torch.nn.functional.cross_entropy(out, torch.as_tensor(np.asarray(y[idx])))
        (loss / batches).backward()
    return {k: ex.param(k).grad.detach().double().numpy().copy() for k in names}


def saliencies(
    graph: Graph,
    x: np.ndarray,
    y: np.ndarray,
    method: Saliency | str,
    *,
    weights: Mapping[str, np.ndarray] | None = None,
    **grad_kwargs: int,
) -> dict[str, np.ndarray]:
    """Per-weight saliency of every Dense/Conv weight; `weights` overrides the w in |g * w| (FORCE)."""
    method = Saliency(method)
    w = {k: np.asarray(graph.const(k), dtype=np.float64) for k in prunable_weights(graph)}
    if weights is not None:
        w.update({k: np.asarray(v, dtype=np.float64) for k, v in weights.items()})
    if method is Saliency.MAGNITUDE:
        return {k: np.abs(v) for k, v in w.items()}
    g = mean_gradients(graph, x, y, **grad_kwargs)
    if method is Saliency.GRADIENT:
        return {k: np.abs(v) for k, v in g.items()}
    return {k: np.abs(g[k] * w[k]) for k in w}


def prune_at_init(
    graph: Graph,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sparsity: float,
    method: Saliency | str = Saliency.SNIP,
    scope: Scope | str = Scope.GLOBAL,
    **grad_kwargs: int,
) -> Masks:
    """One-shot masks keeping the most salient weights (SNIP, gradient norm or magnitude)."""
    sal = saliencies(graph, x, y, method, **grad_kwargs)
    return magnitude_masks(graph, sparsity, scope=scope, scores=sal, p=1.0)


def _masked(graph: Graph, masks: Mapping[str, np.ndarray]) -> Graph:
    g = graph.copy()
    for k, m in masks.items():
        v = g.values[k]
        assert v.const is not None
        v.const = np.where(m, v.const, 0.0).astype(v.const.dtype)
    return g


@dataclass
class IterativeResult:
    masks: Masks
    densities: list[float] = field(default_factory=list)  #: target density after each step
    regrown: list[int] = field(default_factory=list)  #: weights pruned before and kept again at each step


def iterative_snip(
    graph: Graph,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sparsity: float,
    steps: int = 5,
    regrow: bool = True,
    **grad_kwargs: int,
) -> IterativeResult:
    """FORCE (`regrow=True`) or iterative SNIP (`regrow=False`) to `sparsity` in `steps` steps (global)."""
    if steps < 1:
        raise ConfigError(f"iterative SNIP needs steps >= 1, got {steps}")
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"iterative SNIP sparsity must be in [0, 1), got {sparsity}")
    w0 = {k: np.asarray(graph.const(k), dtype=np.float64) for k in prunable_weights(graph)}
    masks: Masks = {k: np.ones(v.shape, dtype=bool) for k, v in w0.items()}
    result = IterativeResult(masks)
    for t in range(1, steps + 1):
        density = (1.0 - sparsity) ** (t / steps)
        # gradients at the pruned network; |g * w| uses the original weights, so pruned ones can score
        sal = saliencies(_masked(graph, masks), x, y, Saliency.SNIP, weights=w0, **grad_kwargs)
        if not regrow:
            sal = {k: np.where(masks[k], s, 0.0) for k, s in sal.items()}
        new = magnitude_masks(graph, 1.0 - density, scope=Scope.GLOBAL, scores=sal, p=1.0)
        result.regrown.append(int(sum(int((new[k] & ~masks[k]).sum()) for k in new)))
        result.densities.append(density)
        masks = new
        log.debug("iterative SNIP step %d: density %.4f, regrown %d", t, density, result.regrown[-1])
    result.masks = masks
    return result


def reinitialize(graph: Graph, seed: int = 0) -> Graph:
    """A copy with fresh Kaiming-normal Dense/Conv weights and zero biases (a network 'at initialization')."""
    g = graph.copy()
    rng = np.random.default_rng(seed)
    for k, node in prunable_weights(g).items():
        v = g.values[k]
        assert v.const is not None
        fan_in = int(np.prod(v.const.shape[1:]))
        v.const = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=v.const.shape).astype(v.const.dtype)
        if len(node.inputs) > 2 and node.inputs[2]:
            b = g.values[node.inputs[2]]
            assert b.const is not None
            b.const = np.zeros_like(b.const)
    return g


__all__ = [
    "IterativeResult",
    "Saliency",
    "iterative_snip",
    "mean_gradients",
    "prune_at_init",
    "reinitialize",
    "saliencies",
]
