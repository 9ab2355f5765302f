"""Weight sharing: k-means from linear initialisation, the zero symbol, exact codebooks, the gradient rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import LENET_CALIB, LENET_ONNX, quant_config

from hwgen.errors import ConfigError
from hwgen.frontend import import_onnx
from hwgen.numerics import FixedPoint
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.passes.share import (
    META_KEY,
    centroid_gradients,
    kmeans_1d,
    linear_init,
    share_tensor,
    share_weights,
    shared_from_values,
)


def pruned_weights(seed: int, shape: tuple[int, int] = (40, 60), density: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.1, shape)
    return np.where(rng.random(shape) < density, w, 0.0)


def test_linear_init_spans_min_to_max() -> None:
    w = np.array([-0.3, 0.1, 0.9, 0.2])
    assert np.allclose(linear_init(w, 5), [-0.3, 0.0, 0.3, 0.6, 0.9])


def test_kmeans_finds_separated_groups_and_keeps_every_weight_nearest() -> None:
    rng = np.random.default_rng(0)
    groups = [-1.0, 0.2, 3.0]
    w = np.concatenate([g + rng.normal(0, 0.01, 50) for g in groups])
    c, _, iters = kmeans_1d(w, 3)
    assert np.allclose(c, [w[:50].mean(), w[50:100].mean(), w[100:].mean()])
    assert iters >= 1
    w2 = rng.normal(0, 1, 500)
    c2, l2, _ = kmeans_1d(w2, 8)
    dist = np.abs(w2[:, None] - c2[None, :])
    assert np.all(dist[np.arange(500), l2] <= dist.min(axis=1))  # Lloyd's fixed point: nearest centroid
    for j in np.unique(l2):  # and every centroid the mean of its members
        assert np.isclose(c2[j], w2[l2 == j].mean())


@pytest.mark.parametrize("bits", [1, 3, 5])
def test_share_tensor_zero_symbol_and_exact_codebook(bits: int) -> None:
    w = pruned_weights(bits)
    st = share_tensor(w, bits, weight_bits=8)
    assert st.codebook[0] == 0 and np.all(np.diff(st.codebook[1:]) > 0) and 0 not in st.codebook[1:]
    assert st.symbols <= (1 << bits) + 1
    assert np.array_equal(st.indices == 0, w == 0)  # zeros (and only zeros) take the zero symbol here
    assert np.all(st.values()[w == 0] == 0)
    codes = st.codes()
    assert codes.min() >= st.fmt.min_code and codes.max() <= st.fmt.max_code
    # the codebook entry of each symbol is its k-means centroid rounded half-even onto the format
    c, labels, _ = kmeans_1d(w[w != 0], 1 << bits)
    want = np.rint(np.ldexp(c[labels], st.fmt.frac)).astype(np.int64)
    assert np.array_equal(codes[w != 0], want)


def test_centroids_rounding_to_zero_merge_into_the_zero_symbol() -> None:
    w = np.array([[0.0, 1e-4, -1e-4, 0.5, 0.5, -0.7]])
    st = share_tensor(w, 2, weight_bits=4)
    assert st.fmt == FixedPoint(4, 3)
    assert list(st.indices[0, :3]) == [0, 0, 0] and np.all(st.indices[0, 3:] > 0)


def test_shared_from_values_recovers_indices() -> None:
    st = share_tensor(pruned_weights(9), 4)
    back = shared_from_values(st.values(), st.fmt, 4)
    assert np.array_equal(back.codebook, st.codebook) and np.array_equal(back.indices, st.indices)


def test_bad_bits_are_refused() -> None:
    with pytest.raises(ConfigError, match="weight sharing with 0 bits"):
        share_tensor(np.ones((2, 2)), 0)


def test_centroid_gradients_sum_per_centroid_numpy_and_torch() -> None:
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 6, size=(7, 9))
    grad = rng.normal(size=(7, 9))
    got = centroid_gradients(grad, idx, 7)
    for k in range(7):
        assert np.isclose(got[k], grad[idx == k].sum())
    assert got[6] == 0.0
    # torch: the same numbers, and what autograd gives for codebook[indices]
    cb = torch.tensor(rng.normal(size=7), requires_grad=True)
    ti = torch.as_tensor(idx)
    w = cb[ti]
    (w * torch.as_tensor(grad)).sum().backward()
    tg = centroid_gradients(torch.as_tensor(grad), ti, 7)
    assert torch.allclose(tg, cb.grad) and np.allclose(tg.numpy(), got)


def test_share_weights_pass_on_lenet_then_quantize_keeps_the_codes() -> None:
    g = canonicalize(import_onnx(LENET_ONNX)).graph
    with np.load(LENET_CALIB) as d:
        x = d["x"][:64]
    names = [n.name for n in g.mac_nodes()]
    r = share_weights(g, bits=dict(zip(names, (5, 5, 4), strict=True)), weight_bits=8)
    assert r.changed and [rec.node for rec in r.records] == names
    sg = r.graph
    for n in sg.mac_nodes():
        w = sg.const(n.inputs[1])
        meta = sg.meta[META_KEY][n.name]
        assert len(np.unique(w[w != 0])) <= (1 << meta["bits"])
        assert not np.array_equal(w, g.const(n.inputs[1]))
    q = quantize_fixed(sg, x, quant_config(weight_bits=8)).graph
    for n in q.mac_nodes():
        meta = sg.meta[META_KEY][n.name]
        fmt = q.value(n.inputs[1]).type.format
        assert fmt.name == meta["format"]  # the quantizer picks the codebook's format
        codes = fmt.encode_exact(q.const(n.inputs[1]))
        assert set(np.unique(codes).tolist()) <= set(meta["codebook"])
    assert g.meta.get(META_KEY) is None  # functional: the input graph is untouched
