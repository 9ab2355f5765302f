"""Canonicalization: one test per rewrite rule of the module docstring, plus the cases it must leave alone.

Every test checks the op list after the pass and that sim.reference gives the same outputs before and
after within 1e-9 (folding re-associates float64 arithmetic: W*s then x@W' vs (x@W)*s).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_mlp_onnx, make_model, random_input, run_ort
from onnx import TensorProto, helper

import hwgen.passes.canonicalize as canon_mod
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.passes.base import PassResult
from hwgen.passes.canonicalize import canonicalize
from hwgen.sim import reference

FOLD_TOL = {"rtol": 1e-9, "atol": 1e-9}  # see module docstring


def ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


def canon(model: onnx.ModelProto, in_shape: tuple[int, ...], seed: int = 0) -> tuple[Graph, PassResult]:
    """Import, canonicalize, and check that every graph output is unchanged; returns (before, result)."""
    before = import_onnx(model)
    snapshot = before.copy()
    res = canonicalize(before)
    res.graph.verify()
    x = random_input(in_shape, seed, batch=6)
    want, got = reference.run(before, x), reference.run(res.graph, x)
    assert list(got) == list(want) == before.outputs == res.graph.outputs  # the public names are kept
    for k in want:
        np.testing.assert_allclose(got[k], want[k], **FOLD_TOL)
    # functional: the input graph is untouched
    assert ops(before) == ops(snapshot) and list(before.values) == list(snapshot.values)
    return before, res


def rules(res: PassResult) -> list[str]:
    assert all(r.pass_name == "canonicalize" for r in res.records)
    return [r.values["rule"] for r in res.records]


def gemm(name: str, x: str, out: str, **attrs: float) -> onnx.NodeProto:
    return helper.make_node("Gemm", [x, f"{name}_W", f"{name}_b"], [out], name=name, **attrs)


def gemm_inits(name: str, k: int, m: int, seed: int, trans_b: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(m, k)) / np.sqrt(k)
    return {f"{name}_W": w if trans_b else w.T, f"{name}_b": rng.normal(size=m)}


# -- rule 1: Identity ------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [10, 13])
def test_rule1_identity_dropout_cast_removed(opset: int) -> None:
    nodes = [
        helper.make_node("Identity", ["x"], ["i0"], name="id0"),
        gemm("fc", "i0", "h", transB=1),
        helper.make_node("Dropout", ["h"], ["d"], name="drop"),
        helper.make_node("Cast", ["d"], ["c"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Relu", ["c"], ["r"], name="act"),
        helper.make_node("Identity", ["r"], ["y"], name="id_out"),
    ]
    model = make_model(nodes, {"x": ["N", 5]}, {"y": ["N", 4]}, gemm_inits("fc", 5, 4, 0), opset=opset)
    before, res = canon(model, (5,))
    assert ops(before) == ["Identity", "Gemm", "Identity", "Identity", "Relu", "Identity"]
    assert res.changed
    assert ops(res.graph) == ["Dense"]
    assert res.graph.nodes[0].attrs["activation"] == "relu"
    assert res.graph.nodes[0].outputs == ["y"]
    assert rules(res).count("remove_identity") == 4


def test_rule1_identity_from_input_to_output_is_kept() -> None:
    """x -> Identity -> y is the whole public interface: nothing to remove."""
    model = make_model([helper.make_node("Identity", ["x"], ["y"], name="id")], {"x": ["N", 3]}, {"y": ["N", 3]})
    _, res = canon(model, (3,))
    assert not res.changed and res.records == []
    assert ops(res.graph) == ["Identity"]


@pytest.mark.parametrize("op", ["Identity", "Flatten"])
def test_rule1_identity_between_two_graph_outputs_terminates(op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = canon_mod._rewrite_once
    calls = {"n": 0}

    def bounded(g: Graph, records: list) -> bool:
        calls["n"] += 1
        if calls["n"] > 100:
            raise RuntimeError("canonicalize did not reach a fixed point in 100 rewrites")
        return real(g, records)

    monkeypatch.setattr(canon_mod, "_rewrite_once", bounded)
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="act"), helper.make_node(op, ["y"], ["z"], name="copy")]
    model = make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 4], "z": ["N", 4]})
    _, res = canon(model, (4,))
    assert res.graph.outputs == ["y", "z"]


# -- rule 2: Gemm -> Dense -------------------------------------------------------------------
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.5, -2.0), (-1.25, 0.0)])
def test_rule2_gemm_becomes_dense(trans_b: int, alpha: float, beta: float) -> None:
    inits = gemm_inits("fc", 6, 3, 1, trans_b=bool(trans_b))
    model = make_model(
        [gemm("fc", "x", "y", transB=trans_b, alpha=alpha, beta=beta)], {"x": ["N", 6]}, {"y": ["N", 3]}, inits
    )
    _, res = canon(model, (6,))
    assert ops(res.graph) == ["Dense"] and rules(res) == ["gemm_to_dense"]
    d = res.graph.nodes[0]
    assert d.attrs == {"activation": "none"}
    b32 = inits["fc_W"].astype(np.float32).astype(np.float64)
    w_expected = alpha * (b32 if trans_b else b32.T)  # stored [out, in]
    np.testing.assert_array_equal(res.graph.const(d.inputs[1]), w_expected)
    np.testing.assert_array_equal(res.graph.const(d.inputs[2]), beta * inits["fc_b"].astype(np.float32))


def test_rule2_gemm_without_bias_and_with_row_bias() -> None:
    rng = np.random.default_rng(2)
    inits = {"W": rng.normal(size=(4, 6)), "C": rng.normal(size=(1, 6))}
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["h"], name="g0"),
        helper.make_node("Gemm", ["h", "W2", "C"], ["y"], name="g1", transB=1),
    ]
    inits["W2"] = rng.normal(size=(6, 6))
    model = make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 6]}, inits, opset=13)
    _, res = canon(model, (4,))
    assert ops(res.graph) == ["Dense", "Dense"]
    np.testing.assert_array_equal(res.graph.const(res.graph.nodes[0].inputs[2]), np.zeros(6))


# -- rule 3: MatMul -> Dense -----------------------------------------------------------------
def test_rule3_matmul_becomes_dense() -> None:
    rng = np.random.default_rng(3)
    wt = rng.normal(size=(5, 2))
    model = make_model(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], {"x": ["N", 5]}, {"y": ["N", 2]}, {"W": wt}
    )
    _, res = canon(model, (5,))
    assert ops(res.graph) == ["Dense"] and rules(res) == ["matmul_to_dense"]
    d = res.graph.nodes[0]
    np.testing.assert_array_equal(res.graph.const(d.inputs[1]), wt.astype(np.float32).T)
    np.testing.assert_array_equal(res.graph.const(d.inputs[2]), np.zeros(2))


def test_rule3_matmul_on_a_matrix_per_sample() -> None:
    """[N, 3, 5] @ [5, 2]: a Dense applied to every row of the sample."""
    rng = np.random.default_rng(4)
    model = make_model(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        {"x": ["N", 3, 5]},
        {"y": ["N", 3, 2]},
        {"W": rng.normal(size=(5, 2))},
    )
    _, res = canon(model, (3, 5))
    assert ops(res.graph) == ["Dense"]


# -- rule 4: Add/Sub fold into the bias --------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "const_first", "shape"),
    [("Add", False, (4,)), ("Add", True, (1, 4)), ("Add", False, ()), ("Sub", False, (4,)), ("Sub", True, (4,))],
)
def test_rule4_add_sub_fold(op: str, const_first: bool, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(5)
    ins = ["c", "mm"] if const_first else ["mm", "c"]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"), helper.make_node(op, ins, ["y"], name="op")]
    inits = {"W": rng.normal(size=(3, 4)), "c": rng.normal(size=shape)}
    _, res = canon(make_model(nodes, {"x": ["N", 3]}, {"y": ["N", 4]}, inits), (3,))
    assert ops(res.graph) == ["Dense"]
    assert rules(res) == ["matmul_to_dense", f"fold_{op.lower()}"]


def test_rule4_mlp_with_matmul_add() -> None:
    _, res = canon(make_mlp_onnx([6, 5, 4], 6, use_matmul=True), (6,))
    assert ops(res.graph) == ["Dense", "Dense"]
    assert [n.attrs["activation"] for n in res.graph.nodes] == ["relu", "none"]


def test_rule4_refuses_a_constant_that_is_not_per_output() -> None:
    """[3, 4] per sample + a [3, 1] constant broadcasts along rows: not a bias, so the Add stays."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"), helper.make_node("Add", ["mm", "c"], ["y"])]
    inits = {"W": rng.normal(size=(5, 4)), "c": rng.normal(size=(3, 1))}
    _, res = canon(make_model(nodes, {"x": ["N", 3, 5]}, {"y": ["N", 3, 4]}, inits), (3, 5))
    assert ops(res.graph) == ["Dense", "Add"]


# -- rule 5: Mul/Div fold into W and the bias ------------------------------------------------------
@pytest.mark.parametrize(("op", "shape"), [("Mul", (4,)), ("Mul", ()), ("Div", (4,)), ("Div", (1, 4)), ("Mul", (1,))])
def test_rule5_mul_div_fold(op: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(8)
    nodes = [gemm("fc", "x", "h", transB=1), helper.make_node(op, ["h", "c"], ["y"], name="scale")]
    inits = {**gemm_inits("fc", 3, 4, 8), "c": rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1, 1], size=shape)}
    _, res = canon(make_model(nodes, {"x": ["N", 3]}, {"y": ["N", 4]}, inits), (3,))
    assert ops(res.graph) == ["Dense"]
    assert rules(res) == ["gemm_to_dense", f"fold_{op.lower()}"]


def test_rule5_mul_with_constant_first() -> None:
    nodes = [gemm("fc", "x", "h", transB=1), helper.make_node("Mul", ["c", "h"], ["y"], name="scale")]
    inits = {**gemm_inits("fc", 3, 4, 9), "c": np.array([1.0, -2.0, 0.5, 3.0])}
    _, res = canon(make_model(nodes, {"x": ["N", 3]}, {"y": ["N", 4]}, inits), (3,))
    assert ops(res.graph) == ["Dense"]


@pytest.mark.parametrize(
    ("ins", "c"),
    [(["c", "h"], np.full(4, 2.0)), (["h", "c"], np.array([1.0, 0.0, 2.0, 3.0]))],
    ids=["const-over-dense", "divide-by-zero"],
)
def test_rule5_refuses_divisions_it_cannot_fold(ins: list[str], c: np.ndarray) -> None:
    nodes = [gemm("fc", "x", "h", transB=1), helper.make_node("Div", ins, ["y"], name="div")]
    model = make_model(nodes, {"x": ["N", 3]}, {"y": ["N", 4]}, {**gemm_inits("fc", 3, 4, 10), "c": c})
    before = import_onnx(model)
    res = canonicalize(before)
    assert ops(res.graph) == ["Dense", "Div"]
    x = random_input((3,), 10)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_allclose(reference.run(res.graph, x)["y"], reference.run(before, x)["y"], **FOLD_TOL)


# -- rule 6: BatchNormalization fold -------------------------------------------------------------
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_rule6_batchnorm_fold_numerics(eps: float) -> None:
    rng = np.random.default_rng(11)
    bn = {"g": rng.uniform(0.5, 1.5, 4), "be": rng.normal(size=4), "mu": rng.normal(size=4)}
    bn["v"] = rng.uniform(0.1, 2, 4)
    inits = {**gemm_inits("fc", 3, 4, 11), **bn}
    nodes = [
        gemm("fc", "x", "h", transB=1),
        helper.make_node("BatchNormalization", ["h", "g", "be", "mu", "v"], ["y"], name="bn", epsilon=eps),
    ]
    model = make_model(nodes, {"x": ["N", 3]}, {"y": ["N", 4]}, inits)
    _, res = canon(model, (3,))
    assert ops(res.graph) == ["Dense"] and rules(res) == ["gemm_to_dense", "fold_batchnorm"]
    # the folded parameters, from the ONNX initializers (as float32, like the file holds them)
    f32 = {k: v.astype(np.float32).astype(np.float64) for k, v in inits.items()}
    s = f32["g"] / np.sqrt(f32["v"] + np.float64(np.float32(eps)))
    d = res.graph.nodes[0]
    np.testing.assert_allclose(res.graph.const(d.inputs[1]), f32["fc_W"] * s[:, None], rtol=1e-12)
    np.testing.assert_allclose(res.graph.const(d.inputs[2]), (f32["fc_b"] - f32["mu"]) * s + f32["be"], rtol=1e-12)
    # and the folded graph still computes what onnxruntime computes for the unfolded model
    x = random_input((3,), 12, batch=8)
    np.testing.assert_allclose(reference.run(res.graph, x)["y"], run_ort(model, x)[0], rtol=1e-5, atol=1e-5)


def test_rule6_mlp_with_bn() -> None:
    _, res = canon(make_mlp_onnx([8, 6, 5, 3], 13, with_bn=True), (8,))
    assert ops(res.graph) == ["Dense", "Dense", "Dense"]
    assert rules(res).count("fold_batchnorm") == 2


def test_rule6_refuses_batchnorm_on_a_matrix_sample() -> None:
    """BN on [N, C, L] normalizes axis 1 (C); a Dense on [C, L] rows has L outputs: no fold."""
    rng = np.random.default_rng(14)
    bn = {"g": rng.uniform(0.5, 1.5, 3), "be": rng.normal(size=3), "mu": rng.normal(size=3), "v": np.ones(3)}
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        helper.make_node("BatchNormalization", ["h", "g", "be", "mu", "v"], ["y"], name="bn"),
    ]
    model = make_model(nodes, {"x": ["N", 3, 5]}, {"y": ["N", 3, 3]}, {"W": rng.normal(size=(5, 3)), **bn})
    _, res = canon(model, (3, 5))
    assert ops(res.graph) == ["Dense", "BatchNormalization"]


# -- rule 7: Relu / Clip fuse ----------------------------------------------------------------------
def test_rule7_relu_fuses() -> None:
    _, res = canon(make_mlp_onnx([5, 4, 3], 15), (5,))
    assert ops(res.graph) == ["Dense", "Dense"]
    assert [n.attrs for n in res.graph.nodes] == [{"activation": "relu"}, {"activation": "none"}]
    assert "fuse_relu" in rules(res)


@pytest.mark.parametrize(("lo", "hi"), [(-0.5, 0.75), (0.0, None), (None, 1.0)])
def test_rule7_clip_fuses(lo: float | None, hi: float | None) -> None:
    inits = gemm_inits("fc", 4, 5, 16)
    ins = ["h", "lo" if lo is not None else "", "hi" if hi is not None else ""]
    if lo is not None:
        inits["lo"] = np.array(lo, np.float32)
    if hi is not None:
        inits["hi"] = np.array(hi, np.float32)
    nodes = [gemm("fc", "x", "h", transB=1), helper.make_node("Clip", ins, ["y"], name="clip")]
    _, res = canon(make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 5]}, inits, opset=13), (4,))
    assert ops(res.graph) == ["Dense"]
    assert res.graph.nodes[0].attrs == {
        "activation": "clip",
        "clip_lo": lo if lo is not None else -np.inf,
        "clip_hi": hi if hi is not None else np.inf,
    }


def test_rule7_only_one_activation_fuses() -> None:
    nodes = [
        gemm("fc", "x", "h", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("Clip", ["r"], ["y"], name="clip", min=0.0, max=0.5),
    ]
    _, res = canon(make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 5]}, gemm_inits("fc", 4, 5, 17), opset=10), (4,))
    assert ops(res.graph) == ["Dense", "Clip"]


def test_rules_4_to_7_chain_in_one_layer() -> None:
    """Gemm -> Add -> Mul -> BN -> Relu all fold into one Dense."""
    rng = np.random.default_rng(18)
    inits = {
        **gemm_inits("fc", 4, 3, 18),
        "a": rng.normal(size=3),
        "m": rng.uniform(0.5, 2, size=3),
        "g": rng.uniform(0.5, 1.5, 3),
        "be": rng.normal(size=3),
        "mu": rng.normal(size=3),
        "v": rng.uniform(0.5, 2, 3),
    }
    nodes = [
        gemm("fc", "x", "h", transB=1),
        helper.make_node("Add", ["h", "a"], ["h1"]),
        helper.make_node("Mul", ["h1", "m"], ["h2"]),
        helper.make_node("BatchNormalization", ["h2", "g", "be", "mu", "v"], ["h3"], name="bn"),
        helper.make_node("Relu", ["h3"], ["y"], name="act"),
    ]
    _, res = canon(make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 3]}, inits), (4,))
    assert ops(res.graph) == ["Dense"]
    assert rules(res) == ["gemm_to_dense", "fold_add", "fold_mul", "fold_batchnorm", "fuse_relu"]


# -- rule 8: no-op Reshape/Flatten -------------------------------------------------------------
def test_rule8_noop_reshape_and_flatten_removed() -> None:
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], name="flat"),  # [N, 5] -> [N, 5]
        gemm("fc", "f", "h", transB=1),
        helper.make_node("Reshape", ["h", "shape"], ["y"], name="rs"),  # [N, 4] -> [N, 4]
    ]
    inits = {**gemm_inits("fc", 5, 4, 19), "shape": np.array([0, -1])}
    _, res = canon(make_model(nodes, {"x": ["N", 5]}, {"y": ["N", 4]}, inits), (5,))
    assert ops(res.graph) == ["Dense"]
    assert sorted(rules(res)) == ["gemm_to_dense", "remove_noop_reshape", "remove_noop_reshape"]


def test_rule8_keeps_real_reshapes() -> None:
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"), gemm("fc", "f", "y", transB=1)]
    _, res = canon(make_model(nodes, {"x": ["N", 2, 3]}, {"y": ["N", 4]}, gemm_inits("fc", 6, 4, 20)), (2, 3))
    assert ops(res.graph) == ["Flatten", "Dense"]


def test_rule8_noop_reshape_from_input_to_output_is_kept() -> None:
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")]
    _, res = canon(make_model(nodes, {"x": ["N", 3]}, {"y": ["N", 3]}, {"s": np.array([0, 3])}), (3,))
    assert not res.changed and ops(res.graph) == ["Reshape"]


# -- what it must not touch --------------------------------------------------------------------
def test_nothing_to_rewrite() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="act"),
        helper.make_node("Transpose", ["r"], ["y"], name="tr", perm=[0, 2, 1]),
    ]
    before, res = canon(make_model(nodes, {"x": ["N", 2, 3]}, {"y": ["N", 3, 2]}), (2, 3))
    assert not res.changed and res.records == []
    assert ops(res.graph) == ["Relu", "Transpose"]
    assert res.graph is not before  # functional even when nothing changes
    assert set(res.graph.values) == set(before.values)


def test_canonical_graph_is_a_fixed_point() -> None:
    first = canonicalize(import_onnx(make_mlp_onnx([7, 6, 5, 4], 21, with_bn=True, act="clip")))
    assert first.changed
    second = canonicalize(first.graph)
    assert not second.changed and second.records == []
    assert ops(second.graph) == ops(first.graph) == ["Dense", "Dense", "Dense"]


def test_dense_feeding_two_consumers_is_not_fused() -> None:
    inits = {**gemm_inits("fc", 4, 3, 22), "c": np.array([1.0, 2.0, 3.0])}
    nodes = [
        gemm("fc", "x", "h", transB=1),
        helper.make_node("Relu", ["h"], ["y1"], name="act"),
        helper.make_node("Add", ["h", "c"], ["y2"], name="add"),
    ]
    _, res = canon(make_model(nodes, {"x": ["N", 4]}, {"y1": ["N", 3], "y2": ["N", 3]}, inits), (4,))
    assert ops(res.graph) == ["Dense", "Relu", "Add"]
    assert res.graph.nodes[0].attrs == {"activation": "none"}
    assert rules(res) == ["gemm_to_dense"]


def test_dense_that_is_a_graph_output_is_not_fused() -> None:
    nodes = [gemm("fc", "x", "h", transB=1), helper.make_node("Relu", ["h"], ["y"], name="act")]
    _, res = canon(make_model(nodes, {"x": ["N", 4]}, {"h": ["N", 3], "y": ["N", 3]}, gemm_inits("fc", 4, 3, 23)), (4,))
    assert ops(res.graph) == ["Dense", "Relu"]


def test_add_of_two_activations_is_not_a_bias() -> None:
    nodes = [gemm("fc", "x", "h", transB=1), helper.make_node("Add", ["h", "x"], ["y"], name="res")]
    _, res = canon(make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 4]}, gemm_inits("fc", 4, 4, 24)), (4,))
    assert ops(res.graph) == ["Dense", "Add"]


@pytest.mark.parametrize("seed", range(8))
def test_random_mlps_canonicalize_to_dense_chains(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layers = [int(v) for v in rng.integers(1, 12, int(rng.integers(2, 5)))]
    act = str(rng.choice(["relu", "clip", "none"]))
    model = make_mlp_onnx(layers, seed, with_bn=bool(seed % 2), act=act, use_matmul=bool(seed % 3 == 0))
    _, res = canon(model, (layers[0],), seed)
    assert ops(res.graph) == ["Dense"] * (len(layers) - 1)


# -- the pipeline runner -----------------------------------------------------------------------------
def test_run_pipeline_verifies_and_names_the_breaking_pass() -> None:
    from hwgen.errors import GraphError
    from hwgen.passes.base import run_pipeline

    g = import_onnx(make_mlp_onnx([4, 3, 2], 0))
    out, records = run_pipeline(g, [canonicalize])
    assert ops(out) == ["Dense", "Dense"]
    assert records == canonicalize(g).records

    def breaker(graph: Graph) -> PassResult:
        broken = graph.copy()
        broken.outputs = ["ghost"]
        return PassResult(broken, True)

    with pytest.raises(GraphError, match=r"pass breaker \(after canonicalize\) broke the graph: .*'ghost' is never"):
        run_pipeline(g, [canonicalize, breaker])
    with pytest.raises(GraphError, match=r"pass breaker \(after none\)"):
        run_pipeline(g, [breaker])
