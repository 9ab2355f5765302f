"""Iterative prune -> fine-tune schedules, and fine-tuning of a pruned graph with its masks held.

Deep Compression's recipe: prune a little, retrain, prune more. Each round raises the sparsity
along the polynomial schedule (`passes.prune.sparsity_steps`), recomputes the masks from the
current (trained) weights, and fine-tunes with `train.loop.fit` through `sim.torch`, whose
executor multiplies the masks into the weights in every forward pass, so pruned weights stay
exactly zero. The graph written back holds weight * mask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hwgen.errors import ConfigError
from hwgen.ir.graph import Graph
from hwgen.passes.prune import (
    Granularity,
    Masks,
    Scope,
    magnitude_masks,
    masks_from_zeros,
    sparsity_of,
    sparsity_regularizer,
    sparsity_steps,
)
from hwgen.sim.torch_exec import Mode, TorchExecutor
from hwgen.train.loop import FitConfig, History, evaluate, fit

log = logging.getLogger(__name__)


def write_back_all(ex: TorchExecutor, graph: Graph) -> Graph:
    """`ex.write_back(graph)` plus the trainable constants it does not cover (BatchNorm gammas, Gemm weights)."""
    g = ex.write_back(graph)
    mac = {i for n in g.nodes if n.op in ("Dense", "Conv") for i in n.inputs[1:3]}
    for name in ex.trainable_names:
        if name in mac or name not in g.values:
            continue
        v = g.values[name]
        assert v.const is not None
        v.const = ex.effective(name).astype(v.const.dtype)
    return g


def fine_tune(
    graph: Graph,
    x: np.ndarray,
    y: np.ndarray,
    config: FitConfig,
    *,
    masks: Mapping[str, np.ndarray] | None = None,
    trainable: Iterable[str] | None = None,
    penalty: Callable[[TorchExecutor], torch.Tensor] | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    **fit_kwargs: Any,
) -> tuple[Graph, History]:
    """Train `graph` (float) with `masks` held, an optional penalty (e.g. L1 on BN gammas); returns the new graph."""
    ex = TorchExecutor(graph, Mode.FLOAT, masks=masks, trainable=trainable, dtype=torch.float32)
    extra = None
    if penalty is not None:

        def extra(model: torch.nn.Module, _x: torch.Tensor, _out: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
            return penalty(ex)

    hist = fit(ex, x, y, config, extra_loss=extra, val=val, **fit_kwargs)
    return write_back_all(ex, graph), hist


def l1_penalty(names: Iterable[str], lam: float, p: float = 1.0) -> Callable[[TorchExecutor], torch.Tensor]:
    """lam * sum ||t||_p^p over the named trainable constants of an executor (network slimming: BN gammas)."""
    keys = list(names)
    reg = sparsity_regularizer(keys, lam, p)

    def penalty(ex: TorchExecutor) -> torch.Tensor:
        return reg({k: ex.param(k) for k in keys})

    return penalty


@dataclass
class Round:
    sparsity: float  #: target of this round
    achieved: float  #: fraction of zero weights after the round
    accuracy_pruned: float | None  #: validation top-1 right after pruning, before fine-tuning
    accuracy: float | None  #: validation top-1 after fine-tuning


@dataclass
class ScheduleResult:
    graph: Graph
    masks: Masks
    rounds: list[Round] = field(default_factory=list)


def iterative_prune(
    graph: Graph,
    x: np.ndarray,
    y: np.ndarray,
    *,
    final_sparsity: float | Mapping[str, float],
    rounds: int,
    config: FitConfig,
    granularity: Granularity | str = Granularity.ELEMENT,
    scope: Scope | str = Scope.LAYER,
    initial_sparsity: float = 0.0,
    power: float = 3.0,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    penalty: Callable[[TorchExecutor], torch.Tensor] | None = None,
    final_config: FitConfig | None = None,
    **fit_kwargs: Any,
) -> ScheduleResult:
    """Prune to `final_sparsity` in `rounds` rounds of prune -> fine-tune (`config` per round).

    `final_sparsity` may be per layer (layer scope); each layer follows its own polynomial ramp.
    `final_config` replaces `config` for the last round (a longer final retraining).
    """
    if rounds < 1:
        raise ConfigError(f"iterative pruning needs rounds >= 1, got {rounds}")
    per_layer = isinstance(final_sparsity, Mapping)
    ramps = (
        {k: sparsity_steps(v, rounds, initial_sparsity, power) for k, v in final_sparsity.items()}
        if isinstance(final_sparsity, Mapping)
        else {"": sparsity_steps(final_sparsity, rounds, initial_sparsity, power)}
    )
    g = graph
    masks: Masks = masks_from_zeros(g)
    result = ScheduleResult(g, masks)
    for r in range(rounds):
        target: float | dict[str, float] = {k: v[r] for k, v in ramps.items()} if per_layer else ramps[""][r]
        masks = magnitude_masks(g, target, granularity=granularity, scope=scope)
        acc0 = None
        if val is not None:
            probe = TorchExecutor(g, Mode.FLOAT, masks=masks, dtype=torch.float32)
            acc0 = evaluate(probe, *val)
        cfg = final_config if (final_config is not None and r == rounds - 1) else config
        g, hist = fine_tune(g, x, y, cfg, masks=masks, penalty=penalty, val=val, **fit_kwargs)
        last = hist.last
        rnd = Round(
            sparsity=float(np.mean(list(target.values()))) if isinstance(target, dict) else float(target),
            achieved=sparsity_of(masks_from_zeros(g)),
            accuracy_pruned=acc0,
            accuracy=last.val_accuracy if last is not None else acc0,
        )
        result.rounds.append(rnd)
        log.info("prune round %d/%d: %s", r + 1, rounds, rnd)
    result.graph, result.masks = g, masks
    return result


__all__ = ["Round", "ScheduleResult", "fine_tune", "iterative_prune", "l1_penalty", "write_back_all"]
