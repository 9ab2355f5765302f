"""Weight pruning masks of every granularity, and the pass that applies them.

A mask is a numpy bool array shaped like a weight constant (True = keep), kept in a dict keyed by
the constant's name: the fine-tuning executor multiplies the same dict into the weights, and the
sparse engines read the zeros the pass leaves behind. Masks are computed on canonical graphs
(`Dense` weights [out, in], `Conv` weights [out, in/group, *kernel]); run `canonicalize` first.

Granularities (the seeds' 0-D ... 3-D ladder, plus input channels):
  element  one weight (|w|)
  vector   Conv: one kernel row w[o, i, kh, :]; Dense: `vector_len` consecutive inputs of one row
  kernel   Conv: one K x K kernel w[o, i]; a Dense weight is a 1x1 kernel, so this is `element` there
  filter   one output channel / neuron w[o] (zeroed here; `channel_prune` removes it)
  channel  one input channel / feature w[:, i]
N:M: in every M consecutive weights along the reduction axis keep the N largest |w|.

Scores of structured units are (mean |w|^p)^(1/p) so units of different sizes compare in a global
ranking. Sparsity targets are met exactly: ties break by position (stable sort), never by chance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from hwgen.errors import ConfigError, GraphError
from hwgen.ir.graph import Graph, Node
from hwgen.passes.base import NodeRecord, PassResult

if TYPE_CHECKING:  # torch is only needed by the regularizers, imported lazily there
    import torch

log = logging.getLogger(__name__)

Masks = dict[str, np.ndarray]
PRUNABLE_OPS = ("Dense", "Conv")


class Granularity(StrEnum):
    ELEMENT = "element"
    VECTOR = "vector"
    KERNEL = "kernel"
    FILTER = "filter"
    CHANNEL = "channel"


class Scope(StrEnum):
    LAYER = "layer"  #: every layer reaches the target sparsity
    GLOBAL = "global"  #: one threshold over all selected layers; the total reaches the target


# -- which weights -------------------------------------------------------------------------------
def prunable_weights(graph: Graph, layers: Iterable[str] | None = None) -> dict[str, Node]:
    """Weight constant name -> its MAC node, for every Dense/Conv (or only the nodes named in `layers`)."""
    wanted = None if layers is None else set(layers)
    out: dict[str, Node] = {}
    for n in graph.nodes:
        if wanted is not None and n.name not in wanted:
            continue
        if n.op in ("Gemm", "MatMul"):
            raise GraphError(f"{n.describe()}: prune works on canonical graphs; run passes.canonicalize first")
        if n.op in PRUNABLE_OPS:
            if not graph.values[n.inputs[1]].is_const:
                raise GraphError(f"{n.describe()}: weight {n.inputs[1]!r} is not a constant, so it cannot be pruned")
            out[n.inputs[1]] = n
            if wanted is not None:
                wanted.discard(n.name)
    if wanted:
        raise GraphError(f"graph '{graph.name}': no Dense/Conv node named {sorted(wanted)} to prune")
    return out


def _check_fraction(name: str, s: float) -> None:
    if not 0.0 <= s <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {s}")


# -- units of each granularity -------------------------------------------------------------------
def unit_ids(w: np.ndarray, granularity: Granularity, node: Node, vector_len: int = 4) -> np.ndarray:
    """An int array shaped like `w`: the pruning unit each weight belongs to (0 .. n_units-1)."""
    flat = np.arange(w.size).reshape(w.shape)
    g = Granularity(granularity)
    if g is Granularity.ELEMENT or (g is Granularity.KERNEL and w.ndim == 2):
        return flat
    if g is Granularity.FILTER:
        return np.broadcast_to(np.arange(w.shape[0]).reshape((-1,) + (1,) * (w.ndim - 1)), w.shape)
    if g is Granularity.CHANNEL:
        return np.broadcast_to(np.arange(w.shape[1]).reshape((1, -1) + (1,) * (w.ndim - 2)), w.shape)
    if g is Granularity.KERNEL:
        return flat // int(np.prod(w.shape[2:]))
    # vector
    if w.ndim > 2:
        return flat // w.shape[-1]
    if w.shape[1] % vector_len:
        raise ConfigError(
            f"{node.describe()}: {w.shape[1]} inputs do not split into vectors of {vector_len}; "
            "choose a vector_len that divides them or leave the layer out"
        )
    return flat // vector_len


def unit_scores(w: np.ndarray, ids: np.ndarray, p: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(score, size) per unit: score = (mean |w|^p)^(1/p) over the unit's weights."""
    n = int(ids.max()) + 1 if ids.size else 0
    size = np.bincount(ids.ravel(), minlength=n).astype(np.float64)
    acc = np.bincount(ids.ravel(), weights=np.abs(w).ravel().astype(np.float64) ** p, minlength=n)
    return (acc / np.maximum(size, 1.0)) ** (1.0 / p), size


def _smallest(scores: np.ndarray, sizes: np.ndarray, budget: float) -> np.ndarray:
    """Indices of the lowest-score units whose total size is the largest not above `budget` weights."""
    order = np.argsort(scores, kind="stable")
    cum = np.cumsum(sizes[order])
    k = int(np.searchsorted(cum, budget + 1e-9, side="right"))
    return order[:k]


def magnitude_masks(
    graph: Graph,
    sparsity: float | Mapping[str, float],
    *,
    granularity: Granularity | str = Granularity.ELEMENT,
    scope: Scope | str = Scope.LAYER,
    layers: Iterable[str] | None = None,
    p: float = 2.0,
    vector_len: int = 4,
    scores: Mapping[str, np.ndarray] | None = None,
) -> Masks:
    """Masks pruning the lowest-scoring units to the target sparsity (fraction of weights zeroed).

    `sparsity` is one fraction or one per node name (layer scope). `scores` replaces |w| with
    another per-weight saliency keyed by weight name (e.g. SNIP's |g * w|): units then rank by the
    norm of those scores. Layer scope prunes round(s * n_units) units of each layer; global scope
    prunes the lowest units over all layers until s of all their weights are gone.
    """
    gran, scope = Granularity(granularity), Scope(scope)
    targets = prunable_weights(graph, layers)
    if isinstance(sparsity, Mapping):
        if scope is Scope.GLOBAL:
            raise ConfigError("global pruning takes one sparsity, not one per layer")
        unknown = set(sparsity) - {n.name for n in targets.values()}
        if unknown:
            raise ConfigError(f"sparsity given for {sorted(unknown)}, which are not Dense/Conv nodes of the graph")
    for s in sparsity.values() if isinstance(sparsity, Mapping) else [sparsity]:
        _check_fraction("sparsity", s)
    units: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for wname, node in targets.items():
        w = graph.const(wname)
        sal = np.asarray(scores[wname]) if scores is not None and wname in scores else w
        ids = unit_ids(w, gran, node, vector_len)
        sc, size = unit_scores(sal, ids, p)
        units[wname] = (ids, sc, size)
    masks: Masks = {}
    if scope is Scope.GLOBAL:
        assert not isinstance(sparsity, Mapping)
        names = list(units)
        all_sc = np.concatenate([units[k][1] for k in names]) if names else np.zeros(0)
        all_sz = np.concatenate([units[k][2] for k in names]) if names else np.zeros(0)
        pruned = np.zeros(all_sc.size, dtype=bool)
        pruned[_smallest(all_sc, all_sz, sparsity * float(all_sz.sum()))] = True
        start = 0
        for k in names:
            ids, sc, _ = units[k]
            keep_unit = ~pruned[start : start + sc.size]
            masks[k] = keep_unit[ids]
            start += sc.size
        return masks
    for k, (ids, sc, _size) in units.items():
        s = sparsity.get(targets[k].name, 0.0) if isinstance(sparsity, Mapping) else sparsity
        keep_unit = np.ones(sc.size, dtype=bool)
        n_prune = round(s * sc.size)
        keep_unit[np.argsort(sc, kind="stable")[:n_prune]] = False
        masks[k] = keep_unit[ids]
    return masks


# -- N:M -----------------------------------------------------------------------------------------
def _to_groups(a: np.ndarray, conv_axis: str) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """`a` with the reduction axis last (Dense: inputs; Conv: input channels or all of Ci*K*K)."""
    if a.ndim == 2:
        return a, lambda r: r
    if conv_axis == "flat":
        return a.reshape(a.shape[0], -1), lambda r: r.reshape(a.shape)
    if conv_axis != "channel":
        raise ConfigError(f"N:M axis for convolutions is 'channel' or 'flat', not {conv_axis!r}")
    perm = (0, *range(2, a.ndim), 1)
    inv = tuple(np.argsort(perm))
    return a.transpose(perm), lambda r: r.transpose(inv)


def nm_mask(w: np.ndarray, n: int, m: int, conv_axis: str = "channel") -> np.ndarray:
    """Keep the n largest |w| of every m consecutive weights along the reduction axis.

    A trailing group shorter than m counts as zero-padded to m (as the hardware stores it), so it
    keeps min(n, its length) weights.
    """
    if not 0 < n <= m:
        raise ConfigError(f"N:M sparsity needs 0 < N <= M, got {n}:{m}")
    a, back = _to_groups(np.abs(np.asarray(w, dtype=np.float64)), conv_axis)
    length = a.shape[-1]
    pad = -length % m
    padded = np.concatenate([a, np.full((*a.shape[:-1], pad), -np.inf)], axis=-1)
    grp = padded.reshape(*a.shape[:-1], -1, m)
    # rank within each group, largest first; stable so equal magnitudes keep the earlier position
    order = np.argsort(-grp, axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(m).reshape((1,) * (grp.ndim - 1) + (m,)), axis=-1)
    keep = (rank < n).reshape(*a.shape[:-1], -1)[..., :length]
    return back(keep)


def satisfies_nm(mask: np.ndarray, n: int, m: int, conv_axis: str = "channel") -> bool:
    """True when every group of m along the reduction axis has at most n kept weights."""
    a, _ = _to_groups(np.asarray(mask, dtype=bool), conv_axis)
    pad = -a.shape[-1] % m
    padded = np.concatenate([a, np.zeros((*a.shape[:-1], pad), dtype=bool)], axis=-1)
    return bool((padded.reshape(*a.shape[:-1], -1, m).sum(-1) <= n).all())


def nm_masks(graph: Graph, n: int, m: int, *, layers: Iterable[str] | None = None, conv_axis: str = "channel") -> Masks:
    """N:M masks (e.g. 2:4, 1:4) for every Dense/Conv weight, or those of `layers`."""
    return {k: nm_mask(graph.const(k), n, m, conv_axis) for k in prunable_weights(graph, layers)}


# -- applying masks ------------------------------------------------------------------------------
def masks_from_zeros(graph: Graph, layers: Iterable[str] | None = None) -> Masks:
    """The masks a pruned graph carries implicitly: True where a weight is non-zero."""
    return {k: graph.const(k) != 0 for k in prunable_weights(graph, layers)}


def sparsity_of(masks: Mapping[str, np.ndarray]) -> float:
    """Fraction of weights the masks remove, over all of them."""
    total = sum(m.size for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total if total else 0.0


def apply_masks(graph: Graph, masks: Mapping[str, np.ndarray], *, pattern: str = "mask") -> PassResult:
    """Zero the masked-out weights (functional). Records per node: sparsity before/after, non-zeros, pattern."""
    g = graph.copy()
    targets = prunable_weights(g)
    records: list[NodeRecord] = []
    changed = False
    for wname, mask in masks.items():
        node = targets.get(wname)
        if node is None:
            raise GraphError(f"graph '{g.name}': mask for {wname!r}, which is not a Dense/Conv weight")
        v = g.values[wname]
        assert v.const is not None
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != v.const.shape:
            raise GraphError(f"{node.describe()}: mask shape {mask.shape} does not match weight {v.const.shape}")
        before = float((v.const == 0).mean())
        new = np.where(mask, v.const, 0.0).astype(v.const.dtype)
        changed |= bool((new != v.const).any())
        v.const = new
        after = float((new == 0).mean())
        records.append(
            NodeRecord(
                node.name,
                node.onnx_name,
                "prune",
                {
                    "pattern": pattern,
                    "sparsity_before": round(before, 6),
                    "sparsity_after": round(after, 6),
                    "nonzeros": int(np.count_nonzero(new)),
                    "params": int(new.size),
                },
            )
        )
        log.debug("prune %s: %s sparsity %.4f -> %.4f", node.name, pattern, before, after)
    log.info("prune (%s): %d layers, overall sparsity %.4f", pattern, len(masks), sparsity_of(masks))
    return PassResult(g, changed, records)


def prune_magnitude(
    graph: Graph,
    *,
    sparsity: float | Mapping[str, float],
    granularity: Granularity | str = Granularity.ELEMENT,
    scope: Scope | str = Scope.LAYER,
    layers: Iterable[str] | None = None,
    p: float = 2.0,
    vector_len: int = 4,
) -> PassResult:
    """Zero the smallest weights (or weight vectors/kernels/filters/channels) of every Dense/Conv.

    Rewrites: constant weight tensors only; never touches activations, biases or formats.
    Refuses:  Gemm/MatMul (canonicalize first), non-constant weights, vectors that do not tile a row.
    Records:  per node: pattern, sparsity_before, sparsity_after, nonzeros, params.
    """
    masks = magnitude_masks(
        graph, sparsity, granularity=granularity, scope=scope, layers=layers, p=p, vector_len=vector_len
    )
    return apply_masks(graph, masks, pattern=f"{Granularity(granularity)}/{Scope(scope)}")


def prune_nm(
    graph: Graph, *, n: int, m: int, layers: Iterable[str] | None = None, conv_axis: str = "channel"
) -> PassResult:
    """N:M structured sparsity (keep n of every m weights along the reduction axis).

    Rewrites: constant weight tensors only.
    Refuses:  N > M or N < 1; Gemm/MatMul (canonicalize first).
    Records:  per node: pattern "N:M", sparsity_before, sparsity_after, nonzeros, params.
    """
    return apply_masks(graph, nm_masks(graph, n, m, layers=layers, conv_axis=conv_axis), pattern=f"{n}:{m}")


# -- schedules -----------------------------------------------------------------------------------
def polynomial_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0, power: float = 3.0) -> float:
    """Gradual pruning (Zhu & Gupta 2017): s_t = s_f + (s_i - s_f) (1 - t/T)^power, held at s_f after T."""
    _check_fraction("final sparsity", final)
    _check_fraction("initial sparsity", initial)
    if total_steps <= 0:
        return final
    t = min(max(step, 0), total_steps) / total_steps
    return final + (initial - final) * (1.0 - t) ** power


def sparsity_steps(final: float, steps: int, initial: float = 0.0, power: float = 3.0) -> list[float]:
    """The sparsity after each of `steps` prune rounds of the polynomial schedule (last = final)."""
    return [polynomial_sparsity(i, steps, final, initial, power) for i in range(1, steps + 1)]


# -- sparsity regularizers (torch loss terms) ----------------------------------------------------
def ln_penalty(weights: Sequence[torch.Tensor], lam: float, p: float = 1.0) -> torch.Tensor:
    """lam * sum_i ||w_i||_p^p (p = 1: lasso, drives weights to exactly prunable zeros; p = 2: weight decay)."""
    import torch

    if not weights:
        return torch.zeros(())
    return lam * sum(w.abs().pow(p).sum() for w in weights)  # type: ignore[return-value]


def group_lasso_penalty(weights: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
    """lam * sum over output filters of ||w[o]||_2: drives whole filters to zero (structured sparsity)."""
    import torch

    if not weights:
        return torch.zeros(())
    return lam * sum(w.reshape(w.shape[0], -1).norm(dim=1).sum() for w in weights)  # type: ignore[return-value]


def sparsity_regularizer(
    names: Iterable[str], lam: float, p: float = 1.0, *, kind: str = "ln"
) -> Callable[[Mapping[str, Any]], torch.Tensor]:
    """A loss callback `params -> penalty` over the named tensors (weight consts or BN gammas).

    `params` maps tensor names to torch tensors (the executor's parameters). kind "ln" is
    lam * sum ||w||_p^p; kind "group" is the group lasso over output filters.
    """
    keys = list(names)
    if kind not in ("ln", "group"):
        raise ConfigError(f"regularizer kind is 'ln' or 'group', not {kind!r}")

    def penalty(params: Mapping[str, Any]) -> torch.Tensor:
        missing = [k for k in keys if k not in params]
        if missing:
            raise ConfigError(f"sparsity regularizer: no parameter named {missing} in the model being trained")
        ws = [params[k] for k in keys]
        return ln_penalty(ws, lam, p) if kind == "ln" else group_lasso_penalty(ws, lam)

    return penalty


__all__ = [
    "Granularity",
    "Masks",
    "Scope",
    "apply_masks",
    "group_lasso_penalty",
    "ln_penalty",
    "magnitude_masks",
    "masks_from_zeros",
    "nm_mask",
    "nm_masks",
    "polynomial_sparsity",
    "prunable_weights",
    "prune_magnitude",
    "prune_nm",
    "satisfies_nm",
    "sparsity_of",
    "sparsity_regularizer",
    "sparsity_steps",
    "unit_ids",
    "unit_scores",
]
