"""Dependency-aware channel pruning, channel scores, and kernel pruning into grouped convolutions.

Removing output channel c of a layer is only legal together with everything that channel flows
into: the BatchNorm and per-channel constants after it, a depthwise convolution (which passes
channels through), the matching input columns of every consuming Conv/Dense (after a flatten,
channel c is the block of features [c*S, (c+1)*S) in CHW order), and, across a residual Add or a
Concat, the channels it is summed or stacked with. `analyze` finds these couplings with a
union-find over (value, channel) slots:

  links   Relu/Clip/pools/activations/BatchNorm/depthwise Conv/Pad (not on channels)/Identity:
          in[c] ~ out[c]; Add/Sub/Mul/Div of activations: a[c] ~ b[c] ~ out[c]; Concat on the
          channel axis: in_k[c] ~ out[offset_k + c] (on another axis: like Add); Flatten/Reshape
          of [C, ...] to a vector: in[c] ~ out block c.
  sources Conv (group 1) and Dense produce channels: they lose rows.
  sinks   Conv (group 1) and Dense consume channels: they lose input columns.
  blocked graph inputs/outputs and any op not listed (Transpose, Softmax, grouped non-depthwise
          Conv, other Reshapes, ...): their channels are never removed.

A channel class (one slot per value it appears in) is removed as a whole, so residual branches
stay consistent by construction. Works on imported graphs (BatchNorm still present, its gamma
scores channels: network slimming) and canonical ones (BN folded: pass gammas kept from import).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from hwgen.errors import ConfigError, GraphError
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.ir.ops import infer_shapes
from hwgen.passes.base import NodeRecord, PassResult

log = logging.getLogger(__name__)

#: ops that pass every channel through unchanged (in[c] -> out[c])
CHANNELWISE_OPS = frozenset(
    {
        "Relu",
        "Clip",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "BatchNormalization",
    }
)
ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Affine"})


@dataclass(frozen=True)
class Channels:
    """How a value's channels lie in its per-sample tensor: n channels on axis 0, `block` elements each."""

    n: int
    block: int = 1  #: > 1 only for flattened vectors: channel c is elements [c*block, (c+1)*block)


@dataclass
class ChannelClass:
    """One prunable channel as it appears in every value it flows through."""

    id: int
    slots: list[tuple[str, int]] = field(default_factory=list)  #: (value, channel index)
    sources: list[tuple[str, int]] = field(default_factory=list)  #: (node producing it, output row)
    blocked: str = ""  #: why it can never be removed ("" if it can)


@dataclass
class Coupling:
    """Values whose channels are tied (pass-through ops, residual Add, Concat): pruned as one group."""

    name: str  #: the first source node (in graph order), how ratios and records name the group
    sources: list[str]
    values: list[str]
    classes: list[int]


@dataclass
class ChannelGraph:
    """The result of `analyze`: channel layout per value, channel classes and couplings."""

    channels: dict[str, Channels]
    classes: list[ChannelClass]
    slot_class: dict[tuple[str, int], int]
    couplings: list[Coupling]

    def coupling_of(self, name: str) -> Coupling:
        """The coupling named `name` or containing the source node `name`."""
        for c in self.couplings:
            if c.name == name or name in c.sources:
                return c
        raise ConfigError(f"no prunable channel group has a source node named {name!r}")

    def prunable(self, coupling: Coupling) -> list[int]:
        return [k for k in coupling.classes if not self.classes[k].blocked]


# -- analysis ------------------------------------------------------------------------------------
class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def is_depthwise(g: Graph, node: Node) -> bool:
    """Conv with one filter per input channel (group == C_in == C_out)."""
    w = g.const(node.inputs[1])
    groups = node.attrs.get("group", 1)
    return node.op == "Conv" and groups > 1 and groups == w.shape[0] and w.shape[1] == 1


def _is_mac(g: Graph, node: Node) -> bool:
    """Conv (group 1) or Dense/Gemm/MatMul on a vector: a node that produces and consumes channels."""
    if node.op == "Conv":
        return node.attrs.get("group", 1) == 1
    if node.op in ("Dense", "Gemm", "MatMul"):
        return len(g.value(node.inputs[0]).type.shape) == 1 and g.values[node.inputs[1]].is_const
    return False


def _transposed(node: Node) -> bool:
    """Whether the stored weight is [in, out] (MatMul, Gemm without transB) rather than [out, in]."""
    return node.op == "MatMul" or (node.op == "Gemm" and not node.attrs.get("transB", 0))


def weight_oi(g: Graph, node: Node) -> np.ndarray:
    """A MAC node's weight with output channels first: [out, in] or [out, in/group, *kernel]."""
    w = np.asarray(g.const(node.inputs[1]))
    return w.T if _transposed(node) else w


def _channel_layout(g: Graph) -> dict[str, Channels]:
    out: dict[str, Channels] = {}
    for name in g.inputs:
        shape = g.value(name).type.shape
        if shape:
            out[name] = Channels(shape[0])
    for node in g.nodes:
        for o in node.outputs:
            shape = g.value(o).type.shape
            if not shape:
                continue
            src = g.activations(node)
            if node.op in ("Flatten", "Reshape") and len(shape) == 1 and src and src[0] in out:
                inp = out[src[0]]
                if len(g.value(src[0]).type.shape) > 1 and inp.block == 1:
                    out[o] = Channels(inp.n, shape[0] // inp.n)
                    continue
            out[o] = Channels(shape[0])
    return out


def analyze(graph: Graph) -> ChannelGraph:
    """Find channel classes and couplings (see the module docstring for the rules)."""
    chans = _channel_layout(graph)
    offset: dict[str, int] = {}
    total = 0
    for v, c in chans.items():
        offset[v] = total
        total += c.n
    uf = _UnionFind(total)
    blocked: dict[int, str] = {}

    def slot(v: str, c: int) -> int:
        return offset[v] + c

    def block(v: str, why: str) -> None:
        if v in chans:
            for c in range(chans[v].n):
                blocked.setdefault(slot(v, c), why)

    def link(a: str, b: str, b_offset: int = 0) -> None:
        for c in range(chans[a].n):
            uf.union(slot(a, c), slot(b, b_offset + c))

    sources: list[tuple[str, str]] = []
    for v in graph.inputs:
        block(v, "graph input")
    for v in graph.outputs:
        block(v, "graph output")
    for node in graph.nodes:
        acts = graph.activations(node)
        out = node.outputs[0]
        if any(a not in chans for a in acts) or out not in chans:
            for a in [*acts, *node.outputs]:
                block(a, f"{node.describe()} has a scalar operand")
            continue
        same_n = all(chans[a].n == chans[out].n and chans[a].block == chans[out].block for a in acts)
        if _is_mac(graph, node):
            sources.append((node.name, out))
            continue
        if node.op == "Conv" and is_depthwise(graph, node):
            link(acts[0], out)
            continue
        if node.op in CHANNELWISE_OPS and same_n:
            link(acts[0], out)
            continue
        if node.op == "Pad" and node.attrs["pads_begin"][0] == 0 and node.attrs["pads_end"][0] == 0 and same_n:
            link(acts[0], out)
            continue
        if node.op in ELEMENTWISE_OPS and same_n and all(_const_axis(graph, node, i, chans) for i in node.inputs):
            for a in acts:
                link(a, out)
            continue
        if node.op in ("Flatten", "Reshape") and len(acts) == 1:
            a_shape, o_shape = graph.value(acts[0]).type.shape, graph.value(out).type.shape
            flat = len(o_shape) == 1 and chans[out].n == chans[acts[0]].n
            keeps_axis0 = len(o_shape) > 1 and len(a_shape) > 1 and a_shape[0] == o_shape[0]
            if (flat or keeps_axis0) and chans[acts[0]].block == 1:
                link(acts[0], out)
                continue
        if node.op == "Concat" and all(chans[a].block == chans[out].block for a in acts):
            if node.attrs["axis"] == 0:
                off = 0
                for a in acts:
                    link(a, out, off)
                    off += chans[a].n
                continue
            if same_n:
                for a in acts:
                    link(a, out)
                continue
        for a in [*acts, *node.outputs]:
            block(a, f"{node.describe()} does not let channels be removed")

    roots: dict[int, int] = {}
    classes: list[ChannelClass] = []
    slot_class: dict[tuple[str, int], int] = {}
    for v, c in chans.items():
        for i in range(c.n):
            r = uf.find(slot(v, i))
            if r not in roots:
                roots[r] = len(classes)
                classes.append(ChannelClass(len(classes)))
            k = roots[r]
            classes[k].slots.append((v, i))
            slot_class[(v, i)] = k
            if slot(v, i) in blocked and not classes[k].blocked:
                classes[k].blocked = blocked[slot(v, i)]
    for node_name, out in sources:
        for i in range(chans[out].n):
            classes[slot_class[(out, i)]].sources.append((node_name, i))
    for cl in classes:
        if not cl.blocked and not cl.sources:
            cl.blocked = "no Conv/Dense produces it"
    return ChannelGraph(chans, classes, slot_class, _couplings(graph, chans, classes, slot_class, sources))


def _couplings(
    graph: Graph,
    chans: dict[str, Channels],
    classes: list[ChannelClass],
    slot_class: dict[tuple[str, int], int],
    sources: list[tuple[str, str]],
) -> list[Coupling]:
    names = list(chans)
    index = {v: i for i, v in enumerate(names)}
    uf = _UnionFind(len(names))
    for cl in classes:
        for v, _ in cl.slots[1:]:
            uf.union(index[cl.slots[0][0]], index[v])
    groups: dict[int, Coupling] = {}
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    for node_name, out in sorted(sources, key=lambda s: order[s[0]]):
        r = uf.find(index[out])
        if r not in groups:
            groups[r] = Coupling(node_name, [], [], [])
        groups[r].sources.append(node_name)
    for v in names:
        r = uf.find(index[v])
        if r in groups:
            groups[r].values.append(v)
    for cl in classes:
        r = uf.find(index[cl.slots[0][0]])
        if r in groups:
            groups[r].classes.append(cl.id)
    return list(groups.values())


def _const_axis(graph: Graph, node: Node, name: str, chans: dict[str, Channels]) -> bool:
    """True if constant operand `name` broadcasts over channels or varies exactly per channel element."""
    if not name or not graph.values[name].is_const:
        return True
    c = graph.const(name)
    out = graph.value(node.outputs[0]).type.shape
    axis = c.ndim - len(out)
    if axis < 0 or c.shape[axis] == 1:
        return True
    ch = chans[node.outputs[0]]
    return c.shape[axis] == ch.n * ch.block


# -- scores --------------------------------------------------------------------------------------
def _source_rows(graph: Graph, node_name: str, row: int) -> np.ndarray:
    return np.asarray(weight_oi(graph, graph.node(node_name))[row], dtype=np.float64).ravel()


def weight_scores(graph: Graph, cg: ChannelGraph, p: float = 1.0) -> dict[int, float]:
    """s_w(c) = ||W[c]||_p over the output rows of every layer producing channel class c."""
    out: dict[int, float] = {}
    for cl in cg.classes:
        if cl.sources:
            rows = np.concatenate([_source_rows(graph, n, r) for n, r in cl.sources])
            out[cl.id] = float(np.sum(np.abs(rows) ** p) ** (1.0 / p))
    return out


def activation_scores(graph: Graph, cg: ChannelGraph, x: np.ndarray, p: float = 1.0) -> dict[int, float]:
    """s_a(c) = mean over samples of ||a[c]||_p, a = what the consuming layers read (calibration data x)."""
    from hwgen.sim import reference

    env = reference.run(graph, x, keep=True)
    read = {i for n in graph.nodes if _is_mac(graph, n) for i in graph.activations(n)}
    out: dict[int, float] = {}
    for cl in cg.classes:
        slots = [s for s in cl.slots if s[0] in read] or cl.slots
        norms = []
        for v, c in slots:
            a = env[v]
            ch = cg.channels[v]
            part = a[:, c] if a.ndim > 2 else a[:, c * ch.block : (c + 1) * ch.block]
            flat = np.abs(part.reshape(len(a), -1))
            norms.append(float(np.mean(np.sum(flat**p, axis=1) ** (1.0 / p))))
        out[cl.id] = float(np.mean(norms))
    return out


def combined_scores(
    cg: ChannelGraph, s_w: Mapping[int, float], s_a: Mapping[int, float], alpha: float, beta: float
) -> dict[int, float]:
    """alpha * s_w + beta * s_a, each first divided by its mean over the coupling so alpha/beta are unitless."""
    out: dict[int, float] = {}
    for cp in cg.couplings:
        ks = [k for k in cp.classes if k in s_w and k in s_a]
        if not ks:
            continue
        mw = float(np.mean([s_w[k] for k in ks])) or 1.0
        ma = float(np.mean([s_a[k] for k in ks])) or 1.0
        for k in ks:
            out[k] = alpha * s_w[k] / mw + beta * s_a[k] / ma
    return out


def bn_gammas(graph: Graph) -> dict[str, np.ndarray]:
    """Source node name -> gamma of the BatchNorm right after it (read on the imported graph).

    Canonicalization folds BN away but keeps node names, so these gammas score the canonical graph.
    """
    out: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        if node.op != "BatchNormalization":
            continue
        prod = graph.producer(node.inputs[0])
        if prod is not None and prod.op in ("Conv", "Dense", "Gemm", "MatMul"):
            out[prod.name] = np.asarray(graph.const(node.inputs[1]), dtype=np.float64)
    return out


def gamma_scores(graph: Graph, cg: ChannelGraph, gammas: Mapping[str, np.ndarray] | None = None) -> dict[int, float]:
    """Network slimming: s(c) = sum of |gamma[c]| of the BatchNorms after the layers producing c.

    Classes with no BatchNorm behind any of their sources get no score and are never pruned.
    """
    gammas = bn_gammas(graph) if gammas is None else gammas
    out: dict[int, float] = {}
    for cl in cg.classes:
        vals = [abs(float(gammas[n][r])) for n, r in cl.sources if n in gammas]
        if vals:
            out[cl.id] = float(sum(vals))
    return out


# -- selection -----------------------------------------------------------------------------------
def select_lowest(
    cg: ChannelGraph, scores: Mapping[int, float], ratio: float | Mapping[str, float], min_keep: int = 1
) -> set[int]:
    """The lowest-scoring round(ratio * channels) classes of each coupling (ratio per coupling/source name).

    Only unblocked, scored classes are candidates; at least `min_keep` channels stay in each coupling.
    """
    if isinstance(ratio, Mapping):
        per = {cg.coupling_of(k).name: v for k, v in ratio.items()}
    out: set[int] = set()
    for cp in cg.couplings:
        r = per.get(cp.name, 0.0) if isinstance(ratio, Mapping) else ratio
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"channel pruning ratio for {cp.name!r} must be in [0, 1], got {r}")
        cand = [k for k in cg.prunable(cp) if k in scores]
        n = min(round(r * len(cp.classes)), len(cp.classes) - min_keep, len(cand))
        ordered = sorted(cand, key=lambda k: (scores[k], k))
        out.update(ordered[: max(n, 0)])
    return out


# -- rewriting -----------------------------------------------------------------------------------
def _expand(idx: np.ndarray, block: int) -> np.ndarray:
    return (idx[:, None] * block + np.arange(block)[None, :]).ravel()


def _set_const(g: Graph, node: Node, pos: int, arr: np.ndarray) -> None:
    """Give `node` input `pos` the new array (in place unless another node shares the constant)."""
    name = node.inputs[pos]
    shared = sum(name in n.inputs for n in g.nodes) > 1 or name in g.outputs
    v = g.values[name]
    arr = np.ascontiguousarray(arr, dtype=v.const.dtype if v.const is not None else np.float64)
    if shared:
        new = g.unique_name(f"{node.name}.{name}")
        g.add_value(Value(new, TensorType(arr.shape, v.type.format), arr))
        node.inputs[pos] = new
    else:
        v.const = arr
        v.type = TensorType(arr.shape, v.type.format)


def _reorder(g: Graph, cg: ChannelGraph, order: Mapping[str, np.ndarray]) -> list[Node]:
    """Keep (and reorder) the channels `order[v]` of each value; shrink every weight accordingly."""
    changed: list[Node] = []
    ident = {v: np.arange(c.n) for v, c in cg.channels.items()}

    def idx(v: str) -> np.ndarray:
        return np.asarray(order.get(v, ident[v]))

    def moved(v: str) -> bool:
        return v in order and not np.array_equal(order[v], ident[v])

    for node in g.nodes:
        acts = g.activations(node)
        out = node.outputs[0]
        if not any(moved(v) for v in [*acts, out] if v in cg.channels):
            continue
        changed.append(node)
        if _is_mac(g, node):
            keep_in = _expand(idx(acts[0]), cg.channels[acts[0]].block)
            w = weight_oi(g, node)[idx(out)][:, keep_in]
            _set_const(g, node, 1, w.T if _transposed(node) else w)
            if len(node.inputs) > 2 and node.inputs[2]:
                b = g.const(node.inputs[2])
                if b.size > 1:
                    _set_const(g, node, 2, np.take(b, idx(out), axis=-1))
        elif node.op == "Conv":  # depthwise
            _set_const(g, node, 1, g.const(node.inputs[1])[idx(out)])
            if len(node.inputs) > 2 and node.inputs[2]:
                _set_const(g, node, 2, g.const(node.inputs[2])[idx(out)])
            node.attrs = {**node.attrs, "group": len(idx(out))}
        elif node.op == "BatchNormalization":
            for pos in range(1, 5):
                _set_const(g, node, pos, g.const(node.inputs[pos])[idx(out)])
        elif node.op in ELEMENTWISE_OPS:
            shape = g.value(out).type.shape
            for pos, name in enumerate(node.inputs):
                if not name or not g.values[name].is_const:
                    continue
                c = g.const(name)
                axis = c.ndim - len(shape)
                if axis >= 0 and c.shape[axis] > 1:
                    _set_const(g, node, pos, np.take(c, _expand(idx(out), cg.channels[out].block), axis=axis))
        elif node.op == "Reshape":
            node.attrs = {**node.attrs, "shape": None}  # filled below from the new shape
    for v, c in cg.channels.items():
        t = g.values[v].type
        n = len(idx(v))
        shape = (n * c.block,) if len(t.shape) == 1 else (n, *t.shape[1:])
        g.values[v].type = TensorType(shape, t.format)
    for node in g.nodes:
        if node.op == "Reshape" and node.attrs.get("shape", ()) is None:
            node.attrs["shape"] = g.value(node.outputs[0]).type.shape
    for node in g.nodes:
        want = infer_shapes(g, node)
        have = [g.value(o).type.shape for o in node.outputs]
        if [tuple(s) for s in want] != have:
            raise GraphError(f"{node.describe()}: channel rewrite left shapes {have}, the op computes {want}")
    return changed


def remove_channels(graph: Graph, cg: ChannelGraph, classes: Iterable[int], *, why: str = "") -> PassResult:
    """Delete the channel classes `classes` everywhere they appear (functional).

    Refuses:  blocked classes, and removing every channel of a value.
    Records:  per source node: channels_before, channels_after, removed (indices), score (why).
    """
    drop = set(classes)
    for k in drop:
        if cg.classes[k].blocked:
            raise GraphError(f"channel class {k} ({cg.classes[k].slots[0]}) cannot be removed: {cg.classes[k].blocked}")
    g = graph.copy()
    order: dict[str, np.ndarray] = {}
    for v, c in cg.channels.items():
        keep = np.array([i for i in range(c.n) if cg.slot_class[(v, i)] not in drop], dtype=np.int64)
        if keep.size == c.n:
            continue
        if keep.size == 0:
            raise GraphError(f"graph '{g.name}': pruning would remove every channel of value {v!r}")
        order[v] = keep
    _reorder(g, cg, order)
    records = []
    for cp in cg.couplings:
        for src in cp.sources:
            node = g.node(src)
            removed = sorted(r for n, r in (s for k in drop for s in cg.classes[k].sources) if n == src)
            n0 = cg.channels[node.outputs[0]].n
            if removed:
                vals = {"channels_before": n0, "channels_after": n0 - len(removed), "removed": removed}
                vals.update(group=cp.name, score=why)
                records.append(NodeRecord(src, node.onnx_name, "channel_prune", vals))
    log.info("channel_prune: removed %d channel classes", len(drop))
    return PassResult(g, bool(drop), records)


SCORES = ("l1", "l2", "activation", "combined", "bn_gamma")


def prune_channels(
    graph: Graph,
    *,
    ratio: float | Mapping[str, float],
    score: str = "l1",
    x: np.ndarray | None = None,
    alpha: float = 0.5,
    beta: float = 0.5,
    p: float = 1.0,
    gammas: Mapping[str, np.ndarray] | None = None,
) -> PassResult:
    """Remove the lowest-scoring fraction `ratio` of the channels of every coupling (or per source name).

    score: l1 / l2 (filter weight norm), activation (needs calibration data `x`), combined
    (alpha * s_w + beta * s_a, normalized per coupling), bn_gamma (|gamma|: BatchNorm in the graph,
    or `gammas` from `bn_gammas(imported_graph)` for a canonical graph).
    Rewrites: producers' rows, consumers' columns (flatten blocks included), BatchNorm, depthwise convs.
    Refuses:  unknown score; activation scores without data.
    Records:  per source node: channels_before, channels_after, removed, group, score.
    """
    cg = analyze(graph)
    if score not in SCORES:
        raise ConfigError(f"channel score {score!r} is not one of {', '.join(SCORES)}")
    if score in ("activation", "combined") and x is None:
        raise ConfigError(f"channel score {score!r} needs calibration data x")
    if score in ("l1", "l2"):
        s = weight_scores(graph, cg, 1.0 if score == "l1" else 2.0)
    elif score == "activation":
        assert x is not None
        s = activation_scores(graph, cg, x, p)
    elif score == "combined":
        assert x is not None
        s = combined_scores(cg, weight_scores(graph, cg, p), activation_scores(graph, cg, x, p), alpha, beta)
    else:
        s = gamma_scores(graph, cg, gammas)
    return remove_channels(graph, cg, select_lowest(cg, s, ratio), why=score)


def dead_channels(graph: Graph, cg: ChannelGraph | None = None, atol: float = 0.0) -> set[int]:
    """Classes whose every producing row (weights and bias) is zero: removing them changes nothing
    when each producer's activation maps 0 to 0 (ReLU, none), which `remove_channels` then preserves."""
    cg = analyze(graph) if cg is None else cg
    out: set[int] = set()
    for cl in cg.classes:
        if cl.blocked or not cl.sources:
            continue
        ok = True
        for n, r in cl.sources:
            node = graph.node(n)
            b = graph.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else np.zeros(r + 1)
            ok &= bool(np.all(np.abs(_source_rows(graph, n, r)) <= atol) and abs(np.ravel(b)[r]) <= atol)
        if ok:
            out.add(cl.id)
    return out


# -- kernel pruning into grouped convolutions ----------------------------------------------------
def _balanced_assign(gain: np.ndarray, groups: int) -> np.ndarray:
    """Assign each row to one of `groups` groups (equal sizes) maximizing the summed gain[row, group]."""
    from scipy.optimize import linear_sum_assignment

    n = gain.shape[0]
    cols = np.repeat(np.arange(groups), n // groups)
    rows, c = linear_sum_assignment(-gain[:, cols])
    out = np.empty(n, dtype=np.int64)
    out[rows] = cols[c]
    return out


def _permutable(cg: ChannelGraph, cp: Coupling) -> bool:
    """A coupling's channels can be reordered when every value in it holds all its classes (no Concat)."""
    n = len(cp.classes)
    return all(cg.channels[v].n == n for v in cp.values) and not any(cg.classes[k].blocked for k in cp.classes)


def group_kernels(graph: Graph, node_name: str, groups: int, *, iterations: int = 8) -> PassResult:
    """Kernel pruning in equal-sized groups: turn a Conv into a grouped Conv with `groups` groups.

    Chooses which output and input channels share a group to keep the most kernel energy
    (sum of ||w[o, i]||^2 in the kept diagonal blocks), reordering channels of the couplings
    around the node (producers, consumers, BatchNorms follow) when they allow it; the kernels
    outside the blocks are pruned. Output equals the dense conv with those kernels zeroed.
    Refuses:  non-Conv or already grouped nodes; channel counts not divisible by `groups`.
    Records:  groups, kernels_kept, energy_kept, permuted_in, permuted_out.
    """
    node = graph.node(node_name)
    if node.op != "Conv" or node.attrs.get("group", 1) != 1:
        raise GraphError(f"{node.describe()}: kernel grouping needs an ungrouped Conv")
    w = graph.const(node.inputs[1])
    co, ci = w.shape[:2]
    if groups < 1 or co % groups or ci % groups:
        raise ConfigError(f"{node.describe()}: {co} outputs / {ci} inputs do not split into {groups} equal groups")
    cg = analyze(graph)
    in_v, out_v = graph.activations(node)[0], node.outputs[0]
    cp_in = next((c for c in cg.couplings if in_v in c.values), None)
    cp_out = next(c for c in cg.couplings if out_v in c.values)
    perm_out = _permutable(cg, cp_out) and cp_out is not cp_in
    perm_in = cp_in is not None and _permutable(cg, cp_in) and cp_out is not cp_in
    energy = (np.asarray(w, dtype=np.float64) ** 2).reshape(co, ci, -1).sum(-1)
    a_out = np.arange(co) // (co // groups)
    a_in = np.arange(ci) // (ci // groups)

    def kept(ao: np.ndarray, ai: np.ndarray) -> float:
        return float(energy[ao[:, None] == ai[None, :]].sum())

    for _ in range(iterations if (perm_in or perm_out) else 0):
        before = kept(a_out, a_in)
        if perm_out:
            a_out = _balanced_assign(np.stack([energy[:, a_in == k].sum(1) for k in range(groups)], 1), groups)
        if perm_in:
            a_in = _balanced_assign(np.stack([energy[a_out == k].sum(0) for k in range(groups)], 1), groups)
        if kept(a_out, a_in) <= before + 1e-15:
            break
    energy_kept = kept(a_out, a_in) / max(float(energy.sum()), 1e-300)
    order: dict[str, np.ndarray] = {}
    for cp, assign, v in ((cp_out, a_out, out_v), (cp_in, a_in, in_v)):
        p = np.argsort(assign, kind="stable")
        if cp is None or np.array_equal(p, np.arange(len(p))):
            continue
        cls = [cg.slot_class[(v, i)] for i in p]  # new position j holds class cls[j]
        for val in cp.values:
            pos = {cg.slot_class[(val, i)]: i for i in range(cg.channels[val].n)}
            order[val] = np.array([pos[k] for k in cls], dtype=np.int64)
    g = graph.copy()
    _reorder(g, cg, order)
    node = g.node(node_name)
    w = g.const(node.inputs[1])
    cog, cig = co // groups, ci // groups
    blocks = [w[k * cog : (k + 1) * cog, k * cig : (k + 1) * cig] for k in range(groups)]
    _set_const(g, node, 1, np.concatenate(blocks, axis=0))
    node.attrs = {**node.attrs, "group": groups}
    for n in g.nodes:
        if [tuple(s) for s in infer_shapes(g, n)] != [g.value(o).type.shape for o in n.outputs]:
            raise GraphError(f"{n.describe()}: kernel grouping broke its shapes")
    vals = {
        "groups": groups,
        "kernels_kept": 1.0 / groups,
        "energy_kept": round(energy_kept, 6),
        "permuted_in": in_v in order,
        "permuted_out": out_v in order,
    }
    return PassResult(g, True, [NodeRecord(node_name, node.onnx_name, "group_kernels", vals)])


# -- cost ----------------------------------------------------------------------------------------
def mac_count(graph: Graph) -> dict[str, int]:
    """Multiply-accumulates per sample of each Dense/Conv node (the figure channel pruning cuts)."""
    out: dict[str, int] = {}
    for n in graph.nodes:
        if n.op not in ("Dense", "Conv", "Gemm", "MatMul") or not graph.values[n.inputs[1]].is_const:
            continue
        w = weight_oi(graph, n)
        y = graph.value(n.outputs[0]).type.shape
        if n.op != "Conv":
            out[n.name] = int(np.prod(y, dtype=np.int64)) * int(w.shape[1])
        else:
            out[n.name] = int(np.prod(y, dtype=np.int64)) * int(np.prod(w.shape[1:], dtype=np.int64))
    return out


__all__ = [
    "ChannelClass",
    "ChannelGraph",
    "Channels",
    "Coupling",
    "activation_scores",
    "analyze",
    "bn_gammas",
    "combined_scores",
    "dead_channels",
    "gamma_scores",
    "group_kernels",
    "is_depthwise",
    "mac_count",
    "prune_channels",
    "remove_channels",
    "select_lowest",
    "weight_oi",
    "weight_scores",
]
