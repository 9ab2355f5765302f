"""Pruning at initialization: saliencies against an independent torch model, exact budgets, FORCE regrowth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_mlp_onnx
from threadpoolctl import threadpool_limits

from hwgen.errors import ConfigError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.train.prune_init import iterative_snip, mean_gradients, prune_at_init, reinitialize, saliencies


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield


def mlp(seed: int = 0, layers: tuple[int, ...] = (12, 16, 5)) -> Graph:
    return canonicalize(import_onnx(make_mlp_onnx(list(layers), seed))).graph


def data(seed: int = 0, n: int = 64, d: int = 12, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, k, size=n)


def torch_grads(g: Graph, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """dL/dW of the same MLP written directly in torch (an independent oracle)."""
    dense = [n for n in g.nodes if n.op == "Dense"]
    ws = [torch.tensor(np.asarray(g.const(n.inputs[1]), dtype=np.float64), requires_grad=True) for n in dense]
    bs = [torch.tensor(np.asarray(g.const(n.inputs[2]), dtype=np.float64)) for n in dense]
    h = torch.tensor(x, dtype=torch.float64)
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        h = h @ w.T + b
        if i < len(ws) - 1:
            h = torch.relu(h)
    torch.nn.functional.cross_entropy(h, torch.tensor(y)).backward()
    return {n.inputs[1]: w.grad.numpy() for n, w in zip(dense, ws, strict=True)}


def test_saliencies_match_an_independent_torch_model() -> None:
    g = mlp()
    x, y = data()
    want = torch_grads(g, x, y)
    full = {"batch_size": len(x), "batches": 1}  # one batch holding every sample: the loss is order-free
    got = mean_gradients(g, x, y, **full)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-6)
    snip = saliencies(g, x, y, "snip", **full)
    grad = saliencies(g, x, y, "gradient", **full)
    mag = saliencies(g, x, y, "magnitude")
    for k in want:
        w = np.asarray(g.const(k), dtype=np.float64)
        np.testing.assert_allclose(snip[k], np.abs(want[k] * w), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(grad[k], np.abs(want[k]), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(mag[k], np.abs(w))


@pytest.mark.parametrize("method", ["snip", "gradient", "magnitude"])
def test_prune_at_init_global_budget(method: str) -> None:
    g = mlp(1)
    x, y = data(1)
    masks = prune_at_init(g, x, y, sparsity=0.8, method=method, batch_size=32, batches=2)
    total = sum(m.size for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == int(0.8 * total)
    sal = saliencies(g, x, y, method, batch_size=32, batches=2)
    kept = np.concatenate([sal[k][m] for k, m in masks.items()])
    pruned = np.concatenate([sal[k][~m] for k, m in masks.items()])
    assert pruned.max() <= kept.min()


def test_iterative_snip_one_step_is_snip_and_nested_without_regrowth() -> None:
    g = mlp(2)
    x, y = data(2)
    kw = {"batch_size": 32, "batches": 2}
    one = iterative_snip(g, x, y, sparsity=0.7, steps=1, **kw)
    snip = prune_at_init(g, x, y, sparsity=0.7, **kw)
    assert all(np.array_equal(one.masks[k], snip[k]) for k in snip)
    it = iterative_snip(g, x, y, sparsity=0.9, steps=4, regrow=False, **kw)
    assert it.regrown == [0, 0, 0, 0]
    assert it.densities[-1] == pytest.approx(0.1) and it.densities == sorted(it.densities, reverse=True)
    total = sum(m.size for m in it.masks.values())
    assert sum(int(m.sum()) for m in it.masks.values()) == total - int(0.9 * total)


def test_force_lets_pruned_weights_come_back() -> None:
    g = reinitialize(mlp(3, (12, 32, 32, 5)), seed=3)
    x, y = data(3, n=128)
    res = iterative_snip(g, x, y, sparsity=0.95, steps=5, regrow=True, batch_size=64, batches=2)
    assert res.regrown[0] == 0 and sum(res.regrown) > 0
    total = sum(m.size for m in res.masks.values())
    assert sum(int(m.sum()) for m in res.masks.values()) == total - int(0.95 * total)
    with pytest.raises(ConfigError, match="steps"):
        iterative_snip(g, x, y, sparsity=0.5, steps=0)


def test_reinitialize_kaiming() -> None:
    g = reinitialize(mlp(4, (400, 300, 5)), seed=0)
    w = g.const(g.node("fc0").inputs[1])
    assert w.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert all(not g.const(n.inputs[2]).any() for n in g.nodes if n.op == "Dense")
