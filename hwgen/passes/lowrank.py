"""Low-rank rewrites: SVD of Dense layers, reshape-SVD and Tucker-2 of convolutions.

Dense  y = act(W x + b), W [m, n] ~ U_r S_r V_r^T  ->  h = (S_r^1/2 V_r^T) x;  y = act((U_r S_r^1/2) h + b)
Conv   W [Co, Ci, K, K] reshaped to [Co, Ci K K] and factored the same way -> a K x K conv with r
       filters (the original stride/padding) then a 1x1 conv Co <- r (bias, activation).
Tucker W ~ G x1 U1 x2 U2 (HOSVD on the two channel modes, optional HOOI sweeps) -> a 1x1 conv
       r2 <- Ci (U2^T), the K x K core conv r1 <- r2 (G, original stride/padding), a 1x1 conv
       Co <- r1 (U1, bias, activation). The first 1x1 conv has no bias, so padding its zeros is
       the same as padding the input: at full rank the output is unchanged.
S^1/2 goes to both factors so they have similar ranges (friendlier to the quantizer).

The rank comes from exactly one of: `rank`, `ratio` (of min(m, n)), `energy` (smallest r whose
sum s_i^2 reaches that fraction), `compression` (largest r with m n / (r (m + n)) >= it).
The original node keeps its name, output, bias and activation (it becomes the last factor); the
new factors are named `<node>_lr1`, `<node>_lr2`. Records: rank, full rank, next singular value
sigma_{r+1} (the spectral-norm error of the matrix), relative Frobenius error, energy kept,
params before/after.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from hwgen.errors import ConfigError, GraphError
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.passes.base import NodeRecord, PassResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankRule:
    """Exactly one way to choose a rank from a singular-value spectrum."""

    rank: int | None = None
    ratio: float | None = None
    energy: float | None = None
    compression: float | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("rank", "ratio", "energy", "compression") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"low-rank: give exactly one of rank, ratio, energy, compression (got {given or 'none'})")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise ConfigError(f"low-rank ratio must be in (0, 1], got {self.ratio}")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise ConfigError(f"low-rank energy must be in (0, 1], got {self.energy}")
        if self.compression is not None and self.compression <= 0:
            raise ConfigError(f"low-rank compression must be > 0, got {self.compression}")
        if self.rank is not None and self.rank < 1:
            raise ConfigError(f"low-rank rank must be >= 1, got {self.rank}")

    def choose(self, s: np.ndarray, m: int, n: int) -> int:
        """The rank for singular values `s` (descending) of an m x n matrix, in [1, min(m, n)]."""
        full = min(m, n)
        if self.rank is not None:
            r = self.rank
        elif self.ratio is not None:
            r = round(self.ratio * full)
        elif self.energy is not None:
            e = np.cumsum(s.astype(np.float64) ** 2)
            r = int(np.searchsorted(e, self.energy * e[-1] * (1 - 1e-12))) + 1 if e[-1] > 0 else 1
        else:
            assert self.compression is not None
            r = int(m * n // (self.compression * (m + n)))
        return int(min(max(r, 1), full))


def _stats(s: np.ndarray, r: int) -> dict[str, float]:
    total = float(np.sum(s**2))
    tail = float(np.sum(s[r:] ** 2))
    return {
        "next_singular_value": float(s[r]) if r < s.size else 0.0,
        "rel_error": float(np.sqrt(tail / total)) if total > 0 else 0.0,
        "energy_kept": 1.0 - tail / total if total > 0 else 1.0,
    }


def svd_factors(w: np.ndarray, rule: RankRule) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(A [m, r], B [r, n], stats) with A B the best rank-r approximation of w [m, n]."""
    u, s, vt = np.linalg.svd(np.asarray(w, dtype=np.float64), full_matrices=False)
    r = rule.choose(s, *w.shape)
    root = np.sqrt(s[:r])
    stats = {"rank": r, "full_rank": int(s.size), **_stats(s, r)}
    return u[:, :r] * root, root[:, None] * vt[:r], stats


def _const(g: Graph, base: str, arr: np.ndarray) -> str:
    name = g.unique_name(base)
    g.add_value(Value(name, TensorType(tuple(arr.shape)), np.ascontiguousarray(arr, dtype=np.float64)))
    return name


def _insert_before(g: Graph, node: Node, new: Node, out_shape: tuple[int, ...]) -> None:
    """Put `new` (reading node's input) before `node` and make `node` read its output."""
    g.add_value(Value(new.outputs[0], TensorType(out_shape)))
    g.nodes.insert(g.nodes.index(node), new)
    node.inputs = [new.outputs[0], *node.inputs[1:]]


def _targets(g: Graph, op: str, layers: Iterable[str] | None) -> list[Node]:
    nodes = [n for n in g.nodes if n.op == op] if layers is None else [g.node(name) for name in layers]
    for n in nodes:
        if n.op != op:
            raise GraphError(f"{n.describe()}: this low-rank rewrite applies to {op} nodes only")
        if not g.values[n.inputs[1]].is_const:
            raise GraphError(f"{n.describe()}: weight {n.inputs[1]!r} is not a constant")
    return nodes


def _bias(g: Graph, node: Node, n_out: int) -> np.ndarray:
    if len(node.inputs) > 2 and node.inputs[2]:
        return np.broadcast_to(np.asarray(g.const(node.inputs[2]), dtype=np.float64), (n_out,)).copy()
    return np.zeros(n_out)


def _record(node: Node, pass_name: str, stats: dict[str, object], before: int, after: int) -> NodeRecord:
    vals = {k: (round(v, 9) if isinstance(v, float) else v) for k, v in stats.items()}
    return NodeRecord(node.name, node.onnx_name, pass_name, {**vals, "params_before": before, "params_after": after})


def lowrank_dense(
    graph: Graph,
    *,
    layers: Iterable[str] | None = None,
    rank: int | None = None,
    ratio: float | None = None,
    energy: float | None = None,
    compression: float | None = None,
    skip_if_larger: bool = False,
) -> PassResult:
    """Split Dense layers into two by truncated SVD (functional).

    Rewrites: each target Dense into Dense(r <- n, no bias) -> Dense(m <- r, bias, activation);
              with `skip_if_larger`, layers whose factors would hold more weights stay as they are
              (recorded with skipped=True).
    Refuses:  non-Dense targets, non-constant weights, zero or several rank rules.
    Records:  rank, full_rank, next_singular_value, rel_error, energy_kept, params_before/after.
    """
    rule = RankRule(rank, ratio, energy, compression)
    g = graph.copy()
    records = []
    for node in _targets(g, "Dense", layers):
        w = g.const(node.inputs[1])
        m, n = w.shape
        a, b, stats = svd_factors(w, rule)
        r = a.shape[1]
        if skip_if_larger and r * (m + n) >= m * n:
            records.append(_record(node, "lowrank_svd", {**stats, "skipped": True}, m * n, m * n))
            continue
        in_shape = g.value(node.inputs[0]).type.shape
        first = Node(
            g.unique_name(f"{node.name}_lr1"),
            "Dense",
            [node.inputs[0], _const(g, f"{node.name}_lr1.weight", b), _const(g, f"{node.name}_lr1.bias", np.zeros(r))],
            [g.unique_name(f"{node.name}_lr1_out")],
            {"activation": "none"},
            node.onnx_name,
            node.onnx_op,
        )
        _insert_before(g, node, first, (*in_shape[:-1], r))
        node.inputs = [
            node.inputs[0],
            _const(g, f"{node.name}.weight_lr", a),
            _const(g, f"{node.name}.bias_lr", _bias(g, node, m)),
        ]
        records.append(_record(node, "lowrank_svd", stats, m * n, r * (m + n)))
        log.debug("lowrank_dense %s: rank %d of %d", node.name, r, min(m, n))
    g.remove_unused()
    return PassResult(g, any(not r.values.get("skipped") for r in records), records)


def _conv_attrs(node: Node, kernel: tuple[int, ...] | None) -> dict[str, object]:
    """The node's window attributes, or a 1x1 stride-1 unpadded window when `kernel` is given."""
    a = dict(node.attrs)
    if kernel is not None:
        rank = len(kernel)
        a.update(
            kernel=kernel, strides=(1,) * rank, dilations=(1,) * rank, pads_begin=(0,) * rank, pads_end=(0,) * rank
        )
        a["ceil_mode"] = False
    a["activation"] = "none"
    a.pop("clip_lo", None)
    a.pop("clip_hi", None)
    a["group"] = 1
    return a


def _conv_factor(
    g: Graph, node: Node, suffix: str, src: str, w: np.ndarray, attrs: dict[str, object], out_shape: tuple[int, ...]
) -> Node:
    new = Node(
        g.unique_name(f"{node.name}_{suffix}"),
        "Conv",
        [
            src,
            _const(g, f"{node.name}_{suffix}.weight", w),
            _const(g, f"{node.name}_{suffix}.bias", np.zeros(w.shape[0])),
        ],
        [g.unique_name(f"{node.name}_{suffix}_out")],
        attrs,
        node.onnx_name,
        node.onnx_op,
    )
    _insert_before(g, node, new, out_shape)
    return new


def _check_conv(g: Graph, node: Node) -> None:
    if node.attrs.get("group", 1) != 1:
        raise GraphError(f"{node.describe()}: low-rank factoring of grouped convolutions is not supported")


def lowrank_conv(
    graph: Graph,
    *,
    layers: Iterable[str] | None = None,
    rank: int | None = None,
    ratio: float | None = None,
    energy: float | None = None,
    compression: float | None = None,
) -> PassResult:
    """Reshape-SVD of convolutions: KxK conv (r filters, original window) -> 1x1 conv (functional).

    Refuses:  grouped convolutions, non-Conv targets, zero or several rank rules.
    Records:  rank, full_rank, next_singular_value, rel_error, energy_kept, params_before/after.
    """
    rule = RankRule(rank, ratio, energy, compression)
    g = graph.copy()
    records = []
    for node in _targets(g, "Conv", layers):
        _check_conv(g, node)
        w = g.const(node.inputs[1])
        co, kernel = w.shape[0], tuple(w.shape[2:])
        a, b, stats = svd_factors(w.reshape(co, -1), rule)
        r = a.shape[1]
        out_shape = g.value(node.outputs[0]).type.shape
        _conv_factor(
            g, node, "lr1", node.inputs[0], b.reshape(r, *w.shape[1:]), _conv_attrs(node, None), (r, *out_shape[1:])
        )
        ones = (1,) * len(kernel)
        act = {k: node.attrs[k] for k in ("activation", "clip_lo", "clip_hi") if k in node.attrs}
        node.attrs = {**_conv_attrs(node, ones), **act}
        node.inputs = [
            node.inputs[0],
            _const(g, f"{node.name}.weight_lr", a.reshape(co, r, *ones)),
            _const(g, f"{node.name}.bias_lr", _bias(g, node, co)),
        ]
        records.append(_record(node, "lowrank_conv_svd", stats, w.size, r * (co + b.shape[1])))
    g.remove_unused()
    return PassResult(g, bool(records), records)


def _leading(unfolded: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    u, s, _ = np.linalg.svd(unfolded, full_matrices=False)
    return u[:, :r], s


def tucker2(
    w: np.ndarray, r_out: int, r_in: int, hooi_iters: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, object]]:
    """(U1 [Co, r_out], core [r_out, r_in, *k], U2 [Ci, r_in], stats): HOSVD (+ HOOI sweeps) of w."""
    w = np.asarray(w, dtype=np.float64)
    co, ci = w.shape[:2]
    if not (1 <= r_out <= co and 1 <= r_in <= ci):
        raise ConfigError(f"Tucker-2 ranks ({r_out}, {r_in}) must be within [1, {co}] x [1, {ci}]")
    u1, s1 = _leading(w.reshape(co, -1), r_out)
    u2, s2 = _leading(w.transpose(1, 0, *range(2, w.ndim)).reshape(ci, -1), r_in)
    for _ in range(hooi_iters):  # higher-order orthogonal iteration: each factor given the other
        y = np.einsum("oi...,is->os...", w, u2)
        u1, _ = _leading(y.reshape(co, -1), r_out)
        y = np.einsum("oi...,or->ir...", w, u1)
        u2, _ = _leading(y.reshape(ci, -1), r_in)
    core = np.einsum("oi...,or,is->rs...", w, u1, u2)
    approx = np.einsum("rs...,or,is->oi...", core, u1, u2)
    norm = float(np.linalg.norm(w))
    stats: dict[str, object] = {
        "rank_out": r_out,
        "rank_in": r_in,
        "next_singular_value_out": float(s1[r_out]) if r_out < s1.size else 0.0,
        "next_singular_value_in": float(s2[r_in]) if r_in < s2.size else 0.0,
        "rel_error": float(np.linalg.norm(w - approx)) / norm if norm > 0 else 0.0,
    }
    return u1, core, u2, stats


def tucker_ranks(w: np.ndarray, rule: RankRule) -> tuple[int, int]:
    """Ranks of the output- and input-channel modes chosen by `rule` on each mode's spectrum."""
    co, ci = w.shape[:2]
    s1 = np.linalg.svd(w.reshape(co, -1), compute_uv=False)
    s2 = np.linalg.svd(w.transpose(1, 0, *range(2, w.ndim)).reshape(ci, -1), compute_uv=False)
    return rule.choose(s1, co, co), rule.choose(s2, ci, ci)


def lowrank_tucker(
    graph: Graph,
    *,
    layers: Iterable[str] | None = None,
    ranks: tuple[int, int] | None = None,
    ratio: float | None = None,
    energy: float | None = None,
    hooi_iters: int = 2,
) -> PassResult:
    """Tucker-2 of convolutions: 1x1 (r_in <- Ci) -> KxK core (r_out <- r_in) -> 1x1 (Co <- r_out).

    Ranks: `ranks` = (r_out, r_in), or `ratio`/`energy` applied to each channel mode's spectrum.
    Refuses:  grouped convolutions, non-Conv targets, no or several rank rules.
    Records:  rank_out, rank_in, next singular value of each mode, rel_error, params_before/after.
    """
    if (ranks is None) == (ratio is None and energy is None) or (ratio is not None and energy is not None):
        raise ConfigError("Tucker-2: give exactly one of ranks, ratio, energy")
    g = graph.copy()
    records = []
    for node in _targets(g, "Conv", layers):
        _check_conv(g, node)
        w = g.const(node.inputs[1])
        co, ci, kernel = w.shape[0], w.shape[1], tuple(w.shape[2:])
        r_out, r_in = ranks if ranks is not None else tucker_ranks(w, RankRule(ratio=ratio, energy=energy))
        u1, core, u2, stats = tucker2(w, r_out, r_in, hooi_iters)
        ones = (1,) * len(kernel)
        in_shape = g.value(node.inputs[0]).type.shape
        out_shape = g.value(node.outputs[0]).type.shape
        first = _conv_factor(
            g,
            node,
            "lr1",
            node.inputs[0],
            u2.T.reshape(r_in, ci, *ones),
            _conv_attrs(node, ones),
            (r_in, *in_shape[1:]),
        )
        _conv_factor(g, node, "lr2", first.outputs[0], core, _conv_attrs(node, None), (r_out, *out_shape[1:]))
        act = {k: node.attrs[k] for k in ("activation", "clip_lo", "clip_hi") if k in node.attrs}
        node.attrs = {**_conv_attrs(node, ones), **act}
        node.inputs = [
            node.inputs[0],
            _const(g, f"{node.name}.weight_lr", u1.reshape(co, r_out, *ones)),
            _const(g, f"{node.name}.bias_lr", _bias(g, node, co)),
        ]
        after = ci * r_in + core.size + co * r_out
        records.append(_record(node, "lowrank_tucker2", stats, w.size, after))
    g.remove_unused()
    return PassResult(g, bool(records), records)


__all__ = [
    "RankRule",
    "lowrank_conv",
    "lowrank_dense",
    "lowrank_tucker",
    "svd_factors",
    "tucker2",
    "tucker_ranks",
]
