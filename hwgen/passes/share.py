"""Weight sharing (Deep Compression): per-layer k-means codebooks with exact fixed-point entries.

Why: after pruning, a layer's surviving weights take few distinct values without losing accuracy.
Storing a small codebook plus a short index per weight (then Huffman-coding the indices) is where
most of Deep Compression's 35-49x comes from.

Per weight tensor:
1. The non-zero weights are clustered into k = 2**bits clusters by 1-D k-means (Lloyd's
   algorithm), initialised linearly between the smallest and the largest weight (Deep Compression
   found linear initialisation best: it keeps centroids for the rare large weights).
2. Pruned zeros are no cluster's member: they get the dedicated symbol 0 (codebook entry 0 is the
   value 0), so they stay exactly zero and the CSC padding zeros have a symbol.
3. The centroids are rounded half-even onto one fixed-point format (the finest whose range holds
   the largest |centroid|, as `quantize_fixed` picks for weights), so every codebook entry is an
   integer code the hardware holds exactly. Entries that round onto the same code merge; one that
   rounds to 0 merges into the zero symbol; clusters left without members get no entry.

Symbols: 0 (zero) and 1..n-1 (codebook entries in increasing code order): n <= k + 1 symbols.
Centroid fine-tuning uses `centroid_gradients`: the gradient of a centroid is the sum of the
gradients of the weights that share it (hwgen.train.share_finetune).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwgen.errors import ConfigError, GraphError
from hwgen.ir.graph import Graph
from hwgen.numerics import FixedPoint, Overflow, Rounding
from hwgen.passes.base import NodeRecord, PassResult
from hwgen.passes.quantize import fixed_for_bound

log = logging.getLogger(__name__)

#: ops whose weight constant (input 1) is shared
SHARED_OPS = ("Dense", "Conv")
#: graph.meta key holding, per node, the codebook the pass chose (JSON-able)
META_KEY = "weight_sharing"
MAX_BITS = 12


@dataclass(frozen=True, eq=False)
class SharedTensor:
    """A weight tensor as codebook + indices: weight code = codebook[indices]."""

    codebook: np.ndarray = field(repr=False)  #: int64 [n]: codebook[0] = 0 (zero symbol), then increasing codes
    indices: np.ndarray = field(repr=False)  #: int64, the weight's shape, values in [0, n)
    fmt: FixedPoint  #: the codebook's number format
    centroids: np.ndarray = field(repr=False)  #: float64 [k]: the k-means centroids before rounding (sorted)
    iterations: int  #: Lloyd iterations run
    bits: int  #: log2 of the cluster count asked for

    @property
    def symbols(self) -> int:
        """Alphabet size n: the zero symbol plus the distinct non-zero codebook codes."""
        return int(self.codebook.size)

    def codes(self) -> np.ndarray:
        """int64 weight codes, the tensor's shape."""
        return self.codebook[self.indices]

    def values(self) -> np.ndarray:
        """float64 weight values (exact: codes times a power of two)."""
        return self.fmt.to_float(self.codes())


def linear_init(w: np.ndarray, k: int) -> np.ndarray:
    """k centroids evenly spaced over [min w, max w] (Deep Compression's linear initialisation)."""
    lo, hi = float(np.min(w)), float(np.max(w))
    return np.linspace(lo, hi, k) if k > 1 else np.array([(lo + hi) / 2])


def _assign(w: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid of each w (centroids sorted; ties go to the lower one)."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(mids, w, side="left")


def kmeans_1d(w: np.ndarray, k: int, *, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray, int]:
    """Lloyd's k-means on a 1-D sample from linear initialisation: (sorted centroids, labels, iterations).

    Deterministic. An empty cluster keeps its centroid (it may win members later). Stops when no
    label changes or after max_iter iterations.
    """
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    c = linear_init(w, k) if w.size else np.zeros(k)
    labels = _assign(w, c)
    iters = 0
    for _ in range(max_iter):
        iters += 1
        sums = np.bincount(labels, weights=w, minlength=k)
        counts = np.bincount(labels, minlength=k)
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        c = np.sort(c)  # 1-D Lloyd keeps the order; sorting guards the empty-cluster case
        new = _assign(w, c)
        if np.array_equal(new, labels):
            break
        labels = new
    return c, labels, iters


def share_tensor(
    w: np.ndarray, bits: int, *, weight_bits: int = 8, max_iter: int = 100, where: str = "weights"
) -> SharedTensor:
    """Share one weight tensor's non-zeros among 2**bits clusters; codebook in `weight_bits`-bit fixed point."""
    if not 1 <= bits <= MAX_BITS:
        raise ConfigError(
            f"{where}: weight sharing with {bits} bits; use 1..{MAX_BITS} (Deep Compression: 5 fc, 8 conv)"
        )
    if weight_bits < 2:
        raise ConfigError(f"{where}: codebook entries of {weight_bits} bits; use at least 2")
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise GraphError(f"{where}: weights hold NaN or infinity; clean the model first")
    nz = w != 0
    k = 1 << bits
    centroids, labels, iters = kmeans_1d(w[nz], k, max_iter=max_iter)
    bound = float(np.abs(centroids).max()) if nz.any() else 0.0
    fmt = fixed_for_bound(bound, weight_bits, signed=True)
    cent_codes = fmt.encode(centroids, rounding=Rounding.HALF_EVEN, overflow=Overflow.SATURATE)
    # symbol 0 is zero; the distinct non-zero codes of clusters with members follow, increasing
    used = np.zeros(k, dtype=bool)
    used[labels] = True
    distinct = np.unique(cent_codes[used & (cent_codes != 0)])
    codebook = np.concatenate([[0], distinct]).astype(np.int64)
    symbol_of_code = {int(c): i for i, c in enumerate(codebook)}
    cluster_symbol = np.array([symbol_of_code.get(int(c), 0) for c in cent_codes], dtype=np.int64)  # 0: unused
    indices = np.zeros(w.shape, dtype=np.int64)
    indices[nz] = cluster_symbol[labels]
    return SharedTensor(codebook=codebook, indices=indices, fmt=fmt, centroids=centroids, iterations=iters, bits=bits)


def shared_from_values(values: np.ndarray, fmt: FixedPoint, bits: int) -> SharedTensor:
    """The SharedTensor of weights already on a codebook (values on `fmt`'s grid, few distinct codes)."""
    codes = fmt.encode_exact(np.asarray(values, dtype=np.float64))
    distinct = np.unique(codes[codes != 0])
    codebook = np.concatenate([[0], distinct]).astype(np.int64)
    indices = np.searchsorted(codebook[1:], codes) + 1
    indices = np.where(codes == 0, 0, indices).astype(np.int64)
    return SharedTensor(codebook, indices, fmt, fmt.to_float(distinct), 0, bits)


def centroid_gradients(weight_grad: Any, indices: Any, k: int) -> Any:
    """Gradient of each of k codebook entries: the sum of the gradients of the weights sharing it.

    Deep Compression's rule dL/dC_k = sum_{i: I_i = k} dL/dW_i. Works on numpy arrays and on torch
    tensors (returned in the same kind). The zero symbol's entry is returned too; callers that keep
    pruned weights at zero ignore it.
    """
    if type(weight_grad).__module__.startswith("torch"):
        g = weight_grad.reshape(-1)
        out = g.new_zeros(k)
        return out.index_add(0, indices.reshape(-1).long(), g)
    g = np.asarray(weight_grad, dtype=np.float64).reshape(-1)
    idx = np.asarray(indices).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= k):
        raise GraphError(f"centroid_gradients: indices span [{idx.min()}, {idx.max()}], outside [0, {k})")
    return np.bincount(idx, weights=g, minlength=k)


def _sqnr_db(ref: np.ndarray, q: np.ndarray) -> float:
    err = float(np.sum((ref - q) ** 2))
    sig = float(np.sum(ref**2))
    return float("inf") if err == 0 else 10 * np.log10(sig / err) if sig > 0 else float("-inf")


def share_weights(
    graph: Graph,
    *,
    bits: int | Mapping[str, int],
    weight_bits: int = 8,
    layers: Iterable[str] | None = None,
    max_iter: int = 100,
) -> PassResult:
    """Replace the weights of every Dense/Conv by their k-means shared values (functional).

    `bits` is one width for all layers or {node name or ONNX name: bits}; a node missing from the
    mapping is left alone. The new weights are exactly representable in the codebook's format,
    so `quantize_fixed` with the same `weight_bits` keeps their codes. The codebook of each node goes
    to graph.meta["weight_sharing"][node] (format, codes, bits) for the encoder and the report.

    Rewrites: weight constants only (float values on the codebook); zeros stay zero.
    Refuses:  non-constant weights, bits outside 1..12 -> GraphError / ConfigError naming the node.
    Records:  per node: bits, clusters, symbols, codebook_format, iterations, nonzeros, weight_sqnr_db.
    """
    g = graph.copy()
    wanted = None if layers is None else set(layers)
    meta: dict[str, Any] = dict(g.meta.get(META_KEY, {}))
    records: list[NodeRecord] = []
    for node in g.nodes:
        if node.op not in SHARED_OPS or (wanted is not None and not {node.name, node.onnx_name} & wanted):
            continue
        if isinstance(bits, Mapping):
            b = bits.get(node.name, bits.get(node.onnx_name))
            if b is None:
                continue
        else:
            b = bits
        v = g.value(node.inputs[1])
        if v.const is None:
            raise GraphError(f"{node.describe()}: weight {node.inputs[1]!r} is not a constant; cannot share it")
        w = np.asarray(v.const, dtype=np.float64)
        st = share_tensor(w, int(b), weight_bits=weight_bits, max_iter=max_iter, where=node.describe())
        new = st.values()
        v.const = new.astype(v.const.dtype)
        if not np.array_equal(v.const.astype(np.float64), new):
            raise GraphError(f"{node.describe()}: shared weights do not fit the constant's dtype {v.const.dtype}")
        meta[node.name] = {"bits": int(b), "format": st.fmt.name, "codebook": st.codebook.tolist()}
        records.append(
            NodeRecord(
                node.name,
                node.onnx_name,
                "share_weights",
                {
                    "bits": int(b),
                    "clusters": 1 << int(b),
                    "symbols": st.symbols,
                    "codebook_format": st.fmt.name,
                    "iterations": st.iterations,
                    "nonzeros": int(np.count_nonzero(st.indices)),
                    "weight_sqnr_db": round(_sqnr_db(w, new), 3),
                },
            )
        )
        log.debug("share %s: %d bits, %d symbols, %s", node.name, b, st.symbols, st.fmt.name)
    g.meta[META_KEY] = meta
    log.info("share_weights: %d layers", len(records))
    return PassResult(g, bool(records), records)


__all__ = [
    "META_KEY",
    "SHARED_OPS",
    "SharedTensor",
    "centroid_gradients",
    "kmeans_1d",
    "linear_init",
    "share_tensor",
    "share_weights",
    "shared_from_values",
]
