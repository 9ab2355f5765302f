"""Pruning masks: exact sparsity, the right weights removed, every granularity's unit shape, N:M patterns."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import REPO
from threadpoolctl import threadpool_limits

from hwgen.errors import ConfigError, GraphError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.prune import (
    Granularity,
    apply_masks,
    magnitude_masks,
    masks_from_zeros,
    nm_mask,
    polynomial_sparsity,
    prune_magnitude,
    prune_nm,
    satisfies_nm,
    sparsity_of,
    sparsity_regularizer,
    sparsity_steps,
)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """OpenBLAS threads spin against each other on a loaded 2-core machine (a 300x784 SVD: 15 s vs 0.08 s)."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def mlp() -> Graph:
    return canonicalize(import_onnx(REPO / "models" / "lenet300" / "lenet300.onnx")).graph


@pytest.fixture(scope="module")
def cnn() -> Graph:
    return canonicalize(import_onnx(REPO / "models" / "lenet5" / "lenet5.onnx")).graph


def weights(g: Graph) -> dict[str, np.ndarray]:
    return {n.inputs[1]: g.const(n.inputs[1]) for n in g.nodes if n.op in ("Dense", "Conv")}


# -- fine-grained ----------------------------------------------------------------------------------
@pytest.mark.parametrize("s", [0.0, 0.5, 0.9, 0.97, 1.0])
def test_layer_scope_exact_sparsity_and_smallest_removed(mlp: Graph, s: float) -> None:
    masks = magnitude_masks(mlp, s)
    for k, w in weights(mlp).items():
        m = masks[k]
        assert m.shape == w.shape and m.dtype == bool
        assert (~m).sum() == round(s * w.size)
        if 0 < s < 1:
            assert np.abs(w[~m]).max() <= np.abs(w[m]).min()


def test_global_scope_one_threshold(mlp: Graph) -> None:
    masks = magnitude_masks(mlp, 0.9, scope="global")
    total = sum(m.size for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == int(0.9 * total)
    pruned = np.concatenate([np.abs(w[~masks[k]]) for k, w in weights(mlp).items()])
    kept = np.concatenate([np.abs(w[masks[k]]) for k, w in weights(mlp).items()])
    assert pruned.max() <= kept.min()
    # one threshold means layers end up with different sparsities (the 784-input layer has the most slack)
    per_layer = [1 - m.mean() for m in masks.values()]
    assert max(per_layer) - min(per_layer) > 0.05


def test_per_layer_targets(mlp: Graph) -> None:
    names = [n.name for n in mlp.nodes if n.op == "Dense"]
    masks = magnitude_masks(mlp, {names[0]: 0.95, names[1]: 0.5})
    by_node = {n.name: masks[n.inputs[1]] for n in mlp.nodes if n.op == "Dense"}
    assert (~by_node[names[0]]).sum() == round(0.95 * by_node[names[0]].size)
    assert (~by_node[names[1]]).sum() == round(0.5 * by_node[names[1]].size)
    assert by_node[names[2]].all()


def test_custom_scores_rank_instead_of_magnitude(mlp: Graph) -> None:
    k, w = next(iter(weights(mlp).items()))
    sal = np.arange(w.size, dtype=float).reshape(w.shape)  # lowest scores = first positions
    m = magnitude_masks(mlp, 0.25, scores={k: sal})[k]
    assert not m.ravel()[: w.size // 4].any() and m.ravel()[w.size // 4 :].all()


# -- structured units ------------------------------------------------------------------------------
def _constant_within(mask: np.ndarray, ids: np.ndarray) -> bool:
    n = ids.max() + 1
    lo = np.full(n, True)
    hi = np.full(n, False)
    np.logical_and.at(lo, ids.ravel(), mask.ravel())
    np.logical_or.at(hi, ids.ravel(), mask.ravel())
    return bool((lo == hi).all())


@pytest.mark.parametrize(
    ("gran", "unit"),
    [
        ("vector", lambda w: np.arange(w.size).reshape(w.shape) // w.shape[-1]),  # one kernel row
        ("kernel", lambda w: np.arange(w.size).reshape(w.shape) // (w.shape[2] * w.shape[3])),
        ("filter", lambda w: np.broadcast_to(np.arange(w.shape[0])[:, None, None, None], w.shape)),
        ("channel", lambda w: np.broadcast_to(np.arange(w.shape[1])[None, :, None, None], w.shape)),
    ],
)
def test_conv_structured_units(cnn: Graph, gran: str, unit) -> None:
    conv2 = next(n for n in cnn.nodes if n.op == "Conv" and cnn.const(n.inputs[1]).shape[1] == 20)
    w = cnn.const(conv2.inputs[1])
    m = magnitude_masks(cnn, 0.5, granularity=gran, layers=[conv2.name])[conv2.inputs[1]]
    ids = unit(w)
    assert _constant_within(m, ids)
    n_units = ids.max() + 1
    unit_keep = np.zeros(n_units, bool)
    unit_keep[ids[m]] = True
    assert (~unit_keep).sum() == round(0.5 * n_units)
    norms = np.sqrt(np.bincount(ids.ravel(), weights=(w**2).ravel()))
    assert norms[~unit_keep].max() <= norms[unit_keep].min()


def test_dense_vectors_and_kernel_equals_element(mlp: Graph) -> None:
    k, w = next(iter(weights(mlp).items()))
    m = magnitude_masks(mlp, 0.75, granularity="vector", vector_len=4)[k]
    blocks = m.reshape(w.shape[0], -1, 4)
    assert (blocks.all(-1) | ~blocks.any(-1)).all()  # each 4-vector is wholly kept or wholly pruned
    assert (~blocks.any(-1)).sum() == round(0.75 * w.size / 4)
    assert np.array_equal(magnitude_masks(mlp, 0.6, granularity="kernel")[k], magnitude_masks(mlp, 0.6)[k])
    with pytest.raises(ConfigError, match="vectors of 7"):
        magnitude_masks(mlp, 0.5, granularity="vector", vector_len=7)


def test_global_structured_prunes_fraction_of_weights(cnn: Graph) -> None:
    masks = magnitude_masks(cnn, 0.6, granularity=Granularity.FILTER, scope="global")
    removed = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.size for m in masks.values())
    largest_filter = max(m[0].size for m in masks.values())
    assert 0.6 * total - largest_filter < removed <= 0.6 * total  # the budget is filled to within one filter
    # filters rank by RMS |w| across layers: every pruned filter scores below every kept one
    rms = {k: np.sqrt((w.reshape(w.shape[0], -1) ** 2).mean(1)) for k, w in weights(cnn).items()}
    pruned = np.concatenate([rms[k][~m.reshape(m.shape[0], -1).any(1)] for k, m in masks.items()])
    kept = np.concatenate([rms[k][m.reshape(m.shape[0], -1).all(1)] for k, m in masks.items()])
    assert pruned.max() <= kept.min()


# -- N:M -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 8), (4, 4)])
def test_nm_dense_keeps_largest_of_each_group(mlp: Graph, n: int, m: int) -> None:
    res = prune_nm(mlp, n=n, m=m)
    for k, w in weights(mlp).items():
        mask = res.graph.const(k) != 0
        assert satisfies_nm(mask, n, m)
        full, tail = divmod(w.shape[1], m)  # a short trailing group keeps min(n, its length)
        assert mask.sum() == w.shape[0] * (full * n + min(n, tail))
        grp = np.abs(w[:, : full * m]).reshape(w.shape[0], -1, m)
        kept = mask[:, : full * m].reshape(grp.shape)
        # kept entries are the n largest of their group: smallest kept >= largest pruned
        lo = np.where(kept, grp, np.inf).min(-1)
        hi = np.where(~kept, grp, -np.inf).max(-1)
        assert (lo >= hi).all()
    assert [r.values["pattern"] for r in res.records] == [f"{n}:{m}"] * 3


def test_nm_conv_channel_axis_and_short_trailing_group() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 10, 3, 3))  # 10 input channels: groups of 4, 4 and a trailing 2
    mask = nm_mask(w, 2, 4)
    assert satisfies_nm(mask, 2, 4)
    per_pos = mask.sum(axis=1)  # at each (o, kh, kw): 2 + 2 + min(2, 2) kept
    assert (per_pos == 6).all()
    for o, i0, kh, kw in itertools.product(range(6), (0, 4), range(3), range(3)):
        g = np.abs(w[o, i0 : i0 + 4, kh, kw])
        assert set(np.nonzero(mask[o, i0 : i0 + 4, kh, kw])[0]) == set(np.argsort(-g)[:2])
    flat = nm_mask(w, 1, 4, conv_axis="flat")  # 90 weights per filter: 22 groups of 4 and one of 2
    assert satisfies_nm(flat, 1, 4, conv_axis="flat") and (flat.reshape(6, -1).sum(1) == 23).all()
    assert not satisfies_nm(np.ones_like(mask), 2, 4)
    with pytest.raises(ConfigError, match="0 < N <= M"):
        nm_mask(w, 5, 4)


# -- applying --------------------------------------------------------------------------------------
def test_apply_masks_is_functional_and_recorded(mlp: Graph) -> None:
    before = {k: v.copy() for k, v in weights(mlp).items()}
    res = prune_magnitude(mlp, sparsity=0.8)
    assert res.changed
    assert all(np.array_equal(before[k], v) for k, v in weights(mlp).items())  # input untouched
    masks = masks_from_zeros(res.graph)
    assert abs(sparsity_of(masks) - 0.8) < 1e-3
    for r in res.records:
        assert r.pass_name == "prune" and r.values["pattern"] == "element/layer"
        assert abs(r.values["sparsity_after"] - 0.8) < 1e-3 and r.values["sparsity_before"] == 0.0
    again = apply_masks(res.graph, masks)
    assert not again.changed


def test_refusals(mlp: Graph) -> None:
    raw = import_onnx(REPO / "models" / "lenet300" / "lenet300.onnx")
    with pytest.raises(GraphError, match="canonicalize"):
        magnitude_masks(raw, 0.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        magnitude_masks(mlp, 1.5)
    with pytest.raises(GraphError, match="no Dense/Conv node named"):
        magnitude_masks(mlp, 0.5, layers=["nope"])
    k = next(iter(weights(mlp)))
    with pytest.raises(GraphError, match="does not match"):
        apply_masks(mlp, {k: np.ones((2, 2), bool)})


# -- schedules and regularizers --------------------------------------------------------------------
def test_polynomial_schedule() -> None:
    assert polynomial_sparsity(0, 10, 0.9) == 0.0
    assert polynomial_sparsity(10, 10, 0.9) == pytest.approx(0.9)
    assert polynomial_sparsity(50, 10, 0.9) == pytest.approx(0.9)
    steps = sparsity_steps(0.9, 5)
    assert steps[-1] == pytest.approx(0.9) and all(a < b for a, b in itertools.pairwise(steps))
    # cubic: prunes fast early, slowly late
    assert steps[1] - steps[0] > steps[-1] - steps[-2]


def test_regularizer_gradients() -> None:
    w = torch.tensor([[1.5, -2.0], [0.0, 0.25]], requires_grad=True)
    sparsity_regularizer(["w"], lam=0.1, p=1.0)({"w": w}).backward()
    assert torch.allclose(w.grad, 0.1 * torch.sign(w.detach()))
    w.grad = None
    loss = sparsity_regularizer(["w"], lam=0.5, kind="group")({"w": w})
    assert loss.item() == pytest.approx(0.5 * (2.5 + 0.25))
    with pytest.raises(ConfigError, match="no parameter named"):
        sparsity_regularizer(["v"], lam=0.1)({"w": w})
