"""Iterative prune -> fine-tune: exact per-round sparsity, masks held while training, BN-gamma L1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_mlp_onnx
from threadpoolctl import threadpool_limits

from hwgen.datasets import load_sklearn
from hwgen.errors import ConfigError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.prune import masks_from_zeros, prune_magnitude
from hwgen.sim import reference
from hwgen.train.loop import FitConfig
from hwgen.train.prune_schedule import fine_tune, iterative_prune, l1_penalty

FAST = FitConfig(epochs=1, batch_size=64, lr=3e-3, progress=False)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_sklearn("digits")
    return x.reshape(len(x), -1), y


def mlp(with_bn: bool = False) -> Graph:
    g = import_onnx(make_mlp_onnx([64, 48, 10], 0, with_bn=with_bn))
    return g if with_bn else canonicalize(g).graph


def accuracy(g: Graph, x: np.ndarray, y: np.ndarray) -> float:
    return float((reference.run(g, x)[g.outputs[0]].argmax(1) == y).mean())


def test_iterative_prune_reaches_exact_sparsity_and_recovers(digits) -> None:
    x, y = digits
    g = mlp()
    res = iterative_prune(g, x[:1400], y[:1400], final_sparsity=0.9, rounds=3, config=FAST, val=(x[1400:], y[1400:]))
    assert [round(r.sparsity, 6) for r in res.rounds] == sorted(round(r.sparsity, 6) for r in res.rounds)
    assert res.rounds[-1].sparsity == pytest.approx(0.9)
    for node in (n for n in res.graph.nodes if n.op == "Dense"):
        w = res.graph.const(node.inputs[1])
        assert (w == 0).sum() == round(0.9 * w.size)  # exactly the target in every layer
    masks = masks_from_zeros(res.graph)
    assert all(np.array_equal(masks[k], res.masks[k]) for k in masks)
    # fine-tuning recovers what one-shot pruning to 90% loses (the executor trained through the masks)
    one_shot = accuracy(prune_magnitude(g, sparsity=0.9).graph, x[1400:], y[1400:])
    final = accuracy(res.graph, x[1400:], y[1400:])
    assert final == pytest.approx(res.rounds[-1].accuracy, abs=1e-9)
    assert final > one_shot


def test_fine_tune_holds_masks(digits) -> None:
    x, y = digits
    g = prune_magnitude(mlp(), sparsity=0.5).graph
    masks = masks_from_zeros(g)
    tuned, hist = fine_tune(g, x, y, FAST, masks=masks)
    assert len(hist.epochs) == 1
    for k, m in masks.items():
        w0, w1 = g.const(k), tuned.const(k)
        assert not w1[~m].any()  # pruned weights are still exactly zero
        assert (w1[m] != w0[m]).mean() > 0.5  # the others trained (digits has always-blank pixels)


def test_l1_on_batchnorm_gammas_shrinks_them(digits) -> None:
    x, y = digits
    g = mlp(with_bn=True)
    gammas = [n.inputs[1] for n in g.nodes if n.op == "BatchNormalization"]
    trainable = gammas + [i for n in g.nodes if n.op == "Gemm" for i in n.inputs[1:3]]
    plain, _ = fine_tune(g, x, y, FAST, trainable=trainable)
    slim, _ = fine_tune(g, x, y, FAST, trainable=trainable, penalty=l1_penalty(gammas, lam=1e-2))
    l1 = [float(np.abs(h.const(k)).sum()) for h in (g, plain, slim) for k in gammas]
    assert l1[2] < l1[1] and l1[2] < l1[0]  # written back (Gemm/BN constants too), and shrunk by the penalty
    with pytest.raises(ConfigError, match="rounds"):
        iterative_prune(g, x, y, final_sparsity=0.5, rounds=0, config=FAST)
