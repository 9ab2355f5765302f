"""Channel pruning: couplings, exactness when removed channels are dead, scores, kernel grouping."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, make_model
from onnx import helper
from threadpoolctl import threadpool_limits

from hwgen.errors import ConfigError, GraphError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.channel_prune import (
    activation_scores,
    analyze,
    bn_gammas,
    combined_scores,
    dead_channels,
    gamma_scores,
    group_kernels,
    mac_count,
    prune_channels,
    remove_channels,
    select_lowest,
    weight_scores,
)
from hwgen.sim import reference

EXACT = {"rtol": 0, "atol": 1e-12}


def lenet5() -> Graph:
    return canonicalize(import_onnx(REPO / "models" / "lenet5" / "lenet5.onnx")).graph


def rescnn_imported() -> Graph:
    return import_onnx(REPO / "models" / "rescnn" / "rescnn.onnx")


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """OpenBLAS threads spin against each other on a loaded 2-core machine (a 300x784 SVD: 15 s vs 0.08 s)."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    with np.load(REPO / "models" / "lenet300" / "mnist_calib.npz") as f:
        return f["x"][:16].astype(np.float64)


def out(g: Graph, x: np.ndarray) -> np.ndarray:
    return reference.run(g, x)[g.outputs[0]]


def setc(g: Graph, name: str, idx: object, value: float) -> None:
    """Write into a constant (imported constants are read-only views)."""
    a = np.array(g.values[name].const)
    a[idx] = value
    g.values[name].const = a


def conv(name: str, x: str, y: str, k: int = 3, pad: int = 1, group: int = 1) -> object:
    return helper.make_node(
        "Conv", [x, f"{name}_W", f"{name}_b"], [y], name=name, kernel_shape=[k, k], pads=[pad] * 4, group=group
    )


def conv_init(name: str, co: int, ci: int, seed: int, k: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{name}_W": rng.normal(size=(co, ci, k, k)) / np.sqrt(ci * k * k), f"{name}_b": rng.normal(size=co) * 0.1}


# -- couplings ---------------------------------------------------------------------------------------
def test_lenet5_couplings_and_flatten_blocks() -> None:
    g = lenet5()
    cg = analyze(g)
    assert [(c.name, len(c.classes), len(cg.prunable(c))) for c in cg.couplings] == [
        ("node_conv2d", 20, 20),
        ("node_conv2d_1", 50, 50),
        ("node_linear", 500, 500),
        ("node_linear_1", 10, 0),  # the logits are a graph output
    ]
    assert cg.channels["view"].n == 50 and cg.channels["view"].block == 16  # 800 = 50 channels x 4x4


def test_rescnn_residual_couplings_on_imported_graph() -> None:
    cg = analyze(rescnn_imported())
    by_name = {c.name: c for c in cg.couplings}
    # the stem and block A's second conv are summed by the identity skip; block B's projection, its
    # pointwise conv and block C's pointwise conv all meet in the two later Adds
    assert sorted(by_name["/stem/stem.0/Conv"].sources) == ["/block_a/conv2/conv2.0/Conv", "/stem/stem.0/Conv"]
    assert len(by_name["/block_b/skip/skip.0/Conv"].sources) == 3
    assert by_name["/block_a/conv1/conv1.0/Conv"].sources == ["/block_a/conv1/conv1.0/Conv"]
    # each class of a residual coupling holds exactly one channel of every tied value
    for cp in cg.couplings:
        for k in cp.classes:
            vals = [v for v, _ in cg.classes[k].slots]
            assert sorted(vals) == sorted(cp.values)


# -- exactness: removing dead channels changes nothing ------------------------------------------------
def test_dead_channels_removed_exactly_lenet5(x: np.ndarray) -> None:
    g = lenet5()
    conv1, conv2, fc1 = (n for n in g.nodes if n.op in ("Conv", "Dense") and n.name != "node_linear_1")
    for node, rows in ((conv1, [3, 7, 19]), (conv2, [0, 11, 49])):
        setc(g, node.inputs[1], rows, 0.0)
        setc(g, node.inputs[2], rows, 0.0)
    setc(g, fc1.inputs[1], [5, 6], 0.0)
    setc(g, fc1.inputs[2], [5, 6], 0.0)
    cg = analyze(g)
    dead = dead_channels(g, cg)
    assert len(dead) == 8
    res = remove_channels(g, cg, dead)
    p = res.graph
    p.verify()
    np.testing.assert_allclose(out(p, x), out(g, x), **EXACT)
    w2 = p.const(p.node(conv2.name).inputs[1])
    assert w2.shape == (47, 17, 5, 5)
    wf = p.const(p.node(fc1.name).inputs[1])
    assert wf.shape == (498, 47 * 16)
    # conv2 channel c fed fc1 columns [16c, 16c + 16): the kept columns are those blocks, in order
    kept = [c for c in range(50) if c not in (0, 11, 49)]
    cols = np.concatenate([np.arange(16 * c, 16 * c + 16) for c in kept])
    rows = [r for r in range(500) if r not in (5, 6)]
    np.testing.assert_array_equal(wf, g.const(fc1.inputs[1])[np.ix_(rows, cols)])
    recs = {r.node: r.values for r in res.records}
    assert recs[conv1.name]["removed"] == [3, 7, 19] and recs[conv1.name]["channels_after"] == 17
    macs_before, macs_after = sum(mac_count(g).values()), sum(mac_count(p).values())
    assert macs_before == 288000 + 1600000 + 400000 + 5000
    assert macs_after == 17 * 24 * 24 * 25 + 47 * 64 * 17 * 25 + 498 * 47 * 16 + 10 * 498


def test_dead_residual_channel_with_batchnorm(x: np.ndarray) -> None:
    """A channel zeroed in every BatchNorm of a residual group (gamma = beta = 0) leaves with all of it."""
    g = rescnn_imported()
    cg = analyze(g)
    cp = next(c for c in cg.couplings if c.name == "/block_b/skip/skip.0/Conv")
    k = cp.classes[5]
    for v, c in cg.classes[k].slots:
        prod = g.producer(v)
        if prod is not None and prod.op == "BatchNormalization":
            setc(g, prod.inputs[1], c, 0.0)
            setc(g, prod.inputs[2], c, 0.0)
    res = remove_channels(g, cg, [k])
    p = res.graph
    np.testing.assert_allclose(out(p, x), out(g, x), rtol=0, atol=1e-9)
    assert p.const(p.node("/fc/Gemm").inputs[1]).shape == (10, 31)
    for name in ("/block_b/skip/skip.0/Conv", "/block_b/pw/pw.0/Conv", "/block_c/pw/pw.0/Conv"):
        assert p.const(p.node(name).inputs[1]).shape[0] == 31
    dw = p.node("/block_c/dw/dw.0/Conv")
    assert dw.attrs["group"] == 31 and p.const(dw.inputs[1]).shape == (31, 1, 3, 3)
    # the pruned graph still canonicalizes and computes the same
    np.testing.assert_allclose(out(canonicalize(p).graph, x), out(p, x), rtol=0, atol=1e-9)


def test_concat_maps_channel_offsets_and_unions_with_add(x: np.ndarray) -> None:
    """Add(Concat(a, b), c): channel j of b is channel 4 + j of c, so they go together."""
    nodes = [
        conv("a", "x", "ya"),
        conv("b", "x", "yb"),
        helper.make_node("Concat", ["ya", "yb"], ["cat"], name="cat", axis=1),
        conv("c", "x", "yc"),
        helper.make_node("Add", ["cat", "yc"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        conv("d", "r", "y"),
    ]
    inits = {**conv_init("a", 4, 1, 1), **conv_init("b", 3, 1, 2), **conv_init("c", 7, 1, 3), **conv_init("d", 2, 7, 4)}
    g = import_onnx(make_model(nodes, {"x": ["N", 1, 28, 28]}, {"y": ["N", 2, 28, 28]}, inits))
    cg = analyze(g)
    k = cg.slot_class[("yb", 1)]
    assert cg.slot_class[("yc", 5)] == k == cg.slot_class[("cat", 5)]
    assert sorted(cg.classes[k].sources) == [("b", 1), ("c", 5)]
    for name, row in (("b", 1), ("c", 5)):
        node = g.node(name)
        setc(g, node.inputs[1], row, 0.0)
        setc(g, node.inputs[2], row, 0.0)
    assert dead_channels(g, cg) == {k}
    p = remove_channels(g, cg, [k]).graph
    np.testing.assert_allclose(out(p, x), out(g, x), **EXACT)
    assert p.value("cat").type.shape == (6, 28, 28) and p.const(p.node("d").inputs[1]).shape == (2, 6, 3, 3)


def test_blocked_channels_are_refused() -> None:
    g = lenet5()
    cg = analyze(g)
    logits = cg.slot_class[("logits", 0)]
    assert "graph output" in cg.classes[logits].blocked
    with pytest.raises(GraphError, match="cannot be removed"):
        remove_channels(g, cg, [logits])
    nodes = [conv("a", "x", "ya"), helper.make_node("Transpose", ["ya"], ["t"], name="tr", perm=[0, 1, 3, 2])]
    nodes.append(conv("b", "t", "y"))
    inits = {**conv_init("a", 3, 1, 1), **conv_init("b", 2, 3, 2)}
    tg = import_onnx(make_model(nodes, {"x": ["N", 1, 8, 8]}, {"y": ["N", 2, 8, 8]}, inits))
    tcg = analyze(tg)
    assert "Transpose" in tcg.classes[tcg.slot_class[("ya", 0)]].blocked
    assert select_lowest(tcg, weight_scores(tg, tcg), 0.5) == set()


def test_removing_every_channel_is_refused() -> None:
    g = lenet5()
    cg = analyze(g)
    with pytest.raises(GraphError, match="every channel"):
        remove_channels(g, cg, cg.couplings[0].classes)


# -- scores --------------------------------------------------------------------------------------------
def test_weight_and_activation_scores(x: np.ndarray) -> None:
    g = lenet5()
    cg = analyze(g)
    conv1 = g.node("node_conv2d")
    w = g.const(conv1.inputs[1])
    k3 = cg.slot_class[("relu", 3)]
    assert weight_scores(g, cg, 1.0)[k3] == pytest.approx(np.abs(w[3]).sum())
    assert weight_scores(g, cg, 2.0)[k3] == pytest.approx(np.sqrt((w[3] ** 2).sum()))
    env = reference.run(g, x, keep=True)
    sa = activation_scores(g, cg, x, p=1.0)
    # conv2 reads the pooled map: mean over samples of its L1 norm
    assert sa[k3] == pytest.approx(np.abs(env["max_pool2d"][:, 3]).sum(axis=(1, 2)).mean())
    k_fc = cg.slot_class[("view", 2)]  # conv2 channel 2 is fc1 features 32..47
    assert sa[k_fc] == pytest.approx(np.abs(env["view"][:, 32:48]).sum(1).mean())
    sw = weight_scores(g, cg)
    comb = combined_scores(cg, sw, sa, alpha=0.3, beta=0.7)
    ks = cg.couplings[0].classes
    mw, ma = np.mean([sw[k] for k in ks]), np.mean([sa[k] for k in ks])
    assert comb[k3] == pytest.approx(0.3 * sw[k3] / mw + 0.7 * sa[k3] / ma)


def test_prune_channels_picks_lowest_and_ratio_per_layer(x: np.ndarray) -> None:
    g = lenet5()
    res = prune_channels(g, ratio={"node_conv2d": 0.5, "node_conv2d_1": 0.2}, score="l2")
    p = res.graph
    w1 = g.const(g.node("node_conv2d").inputs[1])
    norms = np.sqrt((w1.reshape(20, -1) ** 2).sum(1))
    rec = next(r.values for r in res.records if r.node == "node_conv2d")
    assert rec["removed"] == sorted(np.argsort(norms, kind="stable")[:10].tolist())
    assert p.const(p.node("node_conv2d_1").inputs[1]).shape == (40, 10, 5, 5)
    assert p.const(p.node("node_linear").inputs[1]).shape == (500, 640)
    for score in ("activation", "combined"):
        q = prune_channels(g, ratio=0.25, score=score, x=x).graph
        assert q.const(q.node("node_linear").inputs[1]).shape == (375, 38 * 16)
    with pytest.raises(ConfigError, match="needs calibration data"):
        prune_channels(g, ratio=0.5, score="activation")
    with pytest.raises(ConfigError, match="not one of"):
        prune_channels(g, ratio=0.5, score="taylor")


def test_network_slimming_gamma_scores_on_import_and_canonical() -> None:
    g = rescnn_imported()
    bn = g.node("/block_a/conv1/conv1.1/BatchNormalization")
    setc(g, bn.inputs[1], [2, 9, 13], 1e-4)  # what an L1 penalty on gamma leaves for unimportant channels
    gamma = g.const(bn.inputs[1])
    gammas = bn_gammas(g)
    assert np.array_equal(gammas["/block_a/conv1/conv1.0/Conv"], gamma)
    res = prune_channels(g, ratio={"/block_a/conv1/conv1.0/Conv": 3 / 16}, score="bn_gamma")
    assert next(r.values["removed"] for r in res.records) == [2, 9, 13]
    assert res.graph.const(bn.inputs[1]).shape == (13,)
    canon = canonicalize(g).graph
    cres = prune_channels(canon, ratio={"/block_a/conv1/conv1.0/Conv": 3 / 16}, score="bn_gamma", gammas=gammas)
    assert next(r.values["removed"] for r in cres.records) == [2, 9, 13]
    cg = analyze(canon)
    scored = gamma_scores(canon, cg, gammas)
    assert all(cg.classes[k].sources[0][0] != "/fc/Gemm" for k in scored)  # no BN after fc: never scored


# -- kernel pruning -> grouped convolution ---------------------------------------------------------------
def _grouped_model(seed: int) -> tuple[Graph, np.ndarray, np.ndarray]:
    """a (1->8) -> relu -> b (8->6, hidden 2-group block structure) -> relu -> c (6->2)."""
    inits = {**conv_init("a", 8, 1, seed), **conv_init("b", 6, 8, seed + 1), **conv_init("c", 2, 6, seed + 2)}
    rng = np.random.default_rng(seed)
    out_perm, in_perm = rng.permutation(6), rng.permutation(8)
    wb = inits["b_W"]
    for o in range(6):
        for i in range(8):
            if (np.where(out_perm == o)[0][0] < 3) != (np.where(in_perm == i)[0][0] < 4):
                wb[o, i] = 0.0  # only the kernels of two hidden 3x4 blocks are non-zero
    nodes = [
        conv("a", "x", "ya"),
        helper.make_node("Relu", ["ya"], ["ra"], name="ra"),
        conv("b", "ra", "yb"),
        helper.make_node("Relu", ["yb"], ["rb"], name="rb"),
        conv("c", "rb", "y"),
    ]
    g = canonicalize(import_onnx(make_model(nodes, {"x": ["N", 1, 10, 10]}, {"y": ["N", 2, 10, 10]}, inits))).graph
    return g, out_perm, in_perm


def test_group_kernels_finds_hidden_blocks_exactly() -> None:
    g, _, _ = _grouped_model(3)
    x = np.random.default_rng(0).normal(size=(4, 1, 10, 10))
    res = group_kernels(g, "b", 2)
    p = res.graph
    node = p.node("b")
    assert node.attrs["group"] == 2 and p.const(node.inputs[1]).shape == (6, 4, 3, 3)
    assert res.records[0].values["energy_kept"] == pytest.approx(1.0)
    np.testing.assert_allclose(out(p, x), out(g, x), rtol=0, atol=1e-12)
    assert sum(mac_count(p).values()) < sum(mac_count(g).values())


def test_group_kernels_without_reordering_equals_masked_dense() -> None:
    """Input is the graph input (cannot be reordered) and output feeds the graph output: contiguous groups."""
    nodes = [conv("b", "x", "y")]
    inits = conv_init("b", 6, 4, 7)
    g = import_onnx(make_model(nodes, {"x": ["N", 4, 6, 6]}, {"y": ["N", 6, 6, 6]}, inits))
    x = np.random.default_rng(1).normal(size=(3, 4, 6, 6))
    p = group_kernels(g, "b", 2)
    assert not p.records[0].values["permuted_in"] and not p.records[0].values["permuted_out"]
    masked = g.copy()
    setc(masked, "b_W", (slice(0, 3), slice(2, 4)), 0.0)
    setc(masked, "b_W", (slice(3, 6), slice(0, 2)), 0.0)
    np.testing.assert_allclose(out(p.graph, x), out(masked, x), rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="equal groups"):
        group_kernels(g, "b", 4)
