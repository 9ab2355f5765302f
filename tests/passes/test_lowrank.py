"""Low-rank rewrites: full rank reproduces the layer, rank rules, Eckart-Young errors, Tucker-2."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import REPO, make_model
from onnx import helper
from threadpoolctl import threadpool_limits

from hwgen.errors import ConfigError, GraphError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.lowrank import RankRule, lowrank_conv, lowrank_dense, lowrank_tucker, tucker2
from hwgen.sim import reference


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """OpenBLAS threads spin against each other on a loaded 2-core machine (a 300x784 SVD: 15 s vs 0.08 s)."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def mlp() -> Graph:
    return canonicalize(import_onnx(REPO / "models" / "lenet300" / "lenet300.onnx")).graph


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    with np.load(REPO / "models" / "lenet300" / "mnist_calib.npz") as f:
        return f["x"][:32].astype(np.float64)


def out(g: Graph, x: np.ndarray) -> np.ndarray:
    return reference.run(g, x)[g.outputs[0]]


def conv_graph(seed: int, co: int = 12, ci: int = 10, act: str = "Relu", stride: int = 1) -> Graph:
    rng = np.random.default_rng(seed)
    inits = {"W": rng.normal(size=(co, ci, 3, 3)), "B": rng.normal(size=co)}
    node = helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1] * 4)
    node.attribute.extend([helper.make_attribute("strides", [stride, stride])])
    nodes = [node, helper.make_node(act, ["c"], ["y"], name="act")]
    side = 9 // stride + (1 if stride > 1 else 0)
    model = make_model(nodes, {"x": ["N", ci, 9, 9]}, {"y": ["N", co, side, side]}, inits)
    return canonicalize(import_onnx(model)).graph


# -- Dense ---------------------------------------------------------------------------------------------
def test_full_rank_svd_reproduces_the_mlp(mlp: Graph, x: np.ndarray) -> None:
    res = lowrank_dense(mlp, ratio=1.0)
    g = res.graph
    g.verify()
    assert [n.op for n in g.nodes].count("Dense") == 6
    np.testing.assert_allclose(out(g, x), out(mlp, x), rtol=0, atol=1e-9)
    for r in res.records:
        assert r.values["rank"] == r.values["full_rank"] and r.values["rel_error"] < 1e-12
    # the original node keeps its name, activation and output; the first factor is linear
    fc1 = g.node("node_linear")
    assert fc1.attrs["activation"] == "relu" and fc1.outputs == ["relu"]
    assert g.node("node_linear_lr1").attrs["activation"] == "none"


def test_truncated_svd_error_is_eckart_young(mlp: Graph) -> None:
    w = mlp.const("node_linear.weight")
    s = np.linalg.svd(w, compute_uv=False)
    res = lowrank_dense(mlp, layers=["node_linear"], rank=20)
    g = res.graph
    a = g.const(g.node("node_linear").inputs[1])
    b = g.const(g.node("node_linear_lr1").inputs[1])
    assert a.shape == (300, 20) and b.shape == (20, 784)
    approx = a @ b
    assert np.linalg.norm(w - approx, 2) == pytest.approx(s[20], rel=1e-9)  # spectral error = sigma_{r+1}
    rec = res.records[0].values
    assert rec["next_singular_value"] == pytest.approx(s[20])
    assert rec["rel_error"] == pytest.approx(np.linalg.norm(w - approx) / np.linalg.norm(w), rel=1e-6)
    assert (rec["params_before"], rec["params_after"]) == (300 * 784, 20 * (300 + 784))
    # balanced factors: both carry sqrt(S)
    assert np.allclose(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=1))


def test_rank_rules() -> None:
    s = np.array([4.0, 2.0, 1.0, 1.0, 0.5])
    assert RankRule(ratio=0.4).choose(s, 5, 8) == 2
    assert RankRule(energy=0.8).choose(s, 5, 8) == 2  # 16 / 22.25 = 0.72 < 0.8 <= 20 / 22.25
    assert RankRule(energy=0.9).choose(s, 5, 8) == 3  # 20 / 22.25 = 0.899 falls just short with 2
    e = np.cumsum(s**2) / np.sum(s**2)
    for target in (0.5, 0.72, 0.9, 0.95, 0.99, 1.0):
        r = RankRule(energy=target).choose(s, 5, 8)
        assert e[r - 1] >= target - 1e-12 and (r == 1 or e[r - 2] < target)
    # compression: largest r with m n / (r (m + n)) >= c
    r = RankRule(compression=4.0).choose(np.ones(100), 300, 784)
    assert 300 * 784 / (r * 1084) >= 4.0 > 300 * 784 / ((r + 1) * 1084)
    assert RankRule(rank=50).choose(s, 5, 8) == 5  # clipped to min(m, n)
    with pytest.raises(ConfigError, match="exactly one"):
        RankRule(rank=2, ratio=0.5)
    with pytest.raises(ConfigError, match="exactly one"):
        RankRule()


# -- convolutions --------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_svd_full_rank_and_truncated(stride: int) -> None:
    g = conv_graph(0, stride=stride)
    x = np.random.default_rng(1).normal(size=(3, 10, 9, 9))
    full = lowrank_conv(g, ratio=1.0).graph
    np.testing.assert_allclose(out(full, x), out(g, x), rtol=0, atol=1e-9)
    first, last = full.node("conv_lr1"), full.node("conv")
    assert full.const(first.inputs[1]).shape == (12, 10, 3, 3) and first.attrs["strides"] == (stride, stride)
    assert full.const(last.inputs[1]).shape == (12, 12, 1, 1) and last.attrs["activation"] == "relu"
    res = lowrank_conv(g, rank=4)
    w = g.const(g.node("conv").inputs[1]).reshape(12, -1)
    s = np.linalg.svd(w, compute_uv=False)
    assert res.records[0].values["rel_error"] == pytest.approx(np.sqrt((s[4:] ** 2).sum() / (s**2).sum()))
    assert res.records[0].values["params_after"] == 4 * (12 + 90)


def test_tucker_full_rank_reproduces_and_error_decreases() -> None:
    g = conv_graph(2, co=8, ci=6)
    x = np.random.default_rng(3).normal(size=(2, 6, 9, 9))
    full = lowrank_tucker(g, ranks=(8, 6))
    np.testing.assert_allclose(out(full.graph, x), out(g, x), rtol=0, atol=1e-9)
    assert [n.op for n in full.graph.nodes] == ["Conv", "Conv", "Conv"]
    assert full.graph.const(full.graph.node("conv_lr1").inputs[1]).shape == (6, 6, 1, 1)
    assert full.graph.const(full.graph.node("conv_lr2").inputs[1]).shape == (8, 6, 3, 3)
    w = g.const(g.node("conv").inputs[1]).astype(np.float64)
    errs = [tucker2(w, r, r, hooi_iters=0)[3]["rel_error"] for r in range(1, 7)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(errs)) and errs[-1] < errs[0]
    # the recorded error is the true reconstruction error of the three factors
    res = lowrank_tucker(g, ranks=(3, 2), hooi_iters=0)
    gg = res.graph
    u2t = gg.const(gg.node("conv_lr1").inputs[1])[:, :, 0, 0]  # [r_in, Ci]
    core = gg.const(gg.node("conv_lr2").inputs[1])
    u1 = gg.const(gg.node("conv").inputs[1])[:, :, 0, 0]  # [Co, r_out]
    approx = np.einsum("rskl,or,si->oikl", core, u1, u2t)
    rec = res.records[0].values
    assert rec["rel_error"] == pytest.approx(np.linalg.norm(w - approx) / np.linalg.norm(w), abs=1e-8)
    assert rec["params_after"] == 6 * 2 + 3 * 2 * 9 + 8 * 3
    # HOOI never does worse than plain HOSVD
    assert tucker2(w, 3, 2, hooi_iters=3)[3]["rel_error"] <= rec["rel_error"] + 1e-12


def test_tucker_by_energy_and_refusals() -> None:
    g = conv_graph(4, co=8, ci=6)
    res = lowrank_tucker(g, energy=0.999)
    assert res.records[0].values["rank_out"] <= 8 and res.records[0].values["rank_in"] <= 6
    with pytest.raises(ConfigError, match="exactly one"):
        lowrank_tucker(g)
    with pytest.raises(ConfigError, match="within"):
        lowrank_tucker(g, ranks=(9, 2))
    with pytest.raises(GraphError, match="Dense nodes only"):
        lowrank_dense(g, layers=["conv"], rank=2)


def test_skip_if_larger_leaves_unprofitable_layers(mlp: Graph) -> None:
    # rank 9 of the 10 x 100 classifier: 9 * 110 = 990 < 1000 weights, factored; rank 10 would be larger
    res = lowrank_dense(mlp, layers=["node_linear_2"], rank=10, skip_if_larger=True)
    assert not res.changed and res.records[0].values["skipped"] is True
    assert [n.name for n in res.graph.nodes] == [n.name for n in mlp.nodes]
    res = lowrank_dense(mlp, layers=["node_linear_2"], rank=9, skip_if_larger=True)
    assert res.changed and res.graph.const(res.graph.node("node_linear_2").inputs[1]).shape == (10, 9)
