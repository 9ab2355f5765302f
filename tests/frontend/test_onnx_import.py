"""ONNX import: sim.reference must match onnxruntime on every construct the importer accepts,
and every construct it refuses must fail with a one-line error that names the place and the fix.

onnxruntime computes in float32 and the reference in float64, so outputs are compared with
rtol = atol = 1e-5 (activations are O(1): float32 rounding over a few hundred terms stays well below).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import (
    LENET_ONNX,
    make_mlp_onnx,
    make_model,
    random_input,
    run_ort,
    run_reference,
    save_model,
)
from onnx import TensorProto, helper

from hwgen.errors import ModelFileError, UnsupportedOpError
from hwgen.frontend import SUPPORTED_OPS, import_onnx, load_onnx
from hwgen.ir.graph import Graph
from hwgen.sim import reference

TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32 (onnxruntime) vs float64 (reference), see module docstring

Case = tuple[onnx.ModelProto, tuple[int, ...]]


def assert_matches_ort(model: onnx.ModelProto, in_shape: tuple[int, ...], seed: int, batch: int = 5) -> Graph:
    g = import_onnx(model)
    x = random_input(in_shape, seed, batch)
    (want,) = run_ort(model, x)[:1]
    got = run_reference(g, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, **TOL)
    return g


def w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(0.0, 1.0 / np.sqrt(shape[0] if len(shape) else 1), size=shape).astype(np.float32)


# -- the bundled model -----------------------------------------------------------------------
def test_lenet300_matches_onnxruntime(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = mnist_test
    g = import_onnx(LENET_ONNX)
    assert g.inputs == ["input"] and g.outputs == ["logits"]
    assert g.value("input").type.shape == (1, 28, 28)
    assert [n.op for n in g.nodes] == ["Reshape", "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    (want,) = run_ort(LENET_ONNX, x)
    got = run_reference(g, x)
    np.testing.assert_allclose(got, want, **TOL)
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
    assert float(np.mean(want.argmax(axis=1) == y)) == pytest.approx(0.98)  # models/lenet300/metrics.json


def test_import_from_path_and_from_proto_agree(lenet_model: onnx.ModelProto) -> None:
    a, b = import_onnx(LENET_ONNX), import_onnx(lenet_model)
    assert [(n.name, n.op, n.inputs, n.outputs, n.attrs) for n in a.nodes] == [
        (n.name, n.op, n.inputs, n.outputs, n.attrs) for n in b.nodes
    ]
    assert a.meta["source"] == str(LENET_ONNX) and b.meta["source"] == "<model>"
    assert a.meta["opset"] == 18


# -- randomly generated graphs ---------------------------------------------------------------
@pytest.mark.parametrize("seed", range(16))
def test_random_mlp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 5))
    layers = [int(v) for v in rng.integers(1, 21, depth + 1)]
    model = make_mlp_onnx(
        layers,
        seed,
        with_bn=bool(rng.integers(2)),
        act=str(rng.choice(["relu", "clip", "none"])),
        use_matmul=bool(rng.integers(2)),
        trans_b=bool(rng.integers(2)),
    )
    assert_matches_ort(model, (layers[0],), seed)


def gemm_case(seed: int) -> Case:
    """Gemm with random transB, alpha, beta and bias C of every allowed per-sample shape (or none)."""
    rng = np.random.default_rng(seed)
    k, m = int(rng.integers(1, 12)), int(rng.integers(1, 12))
    trans_b = int(rng.integers(2))
    alpha, beta = float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2))
    b = w(rng, m, k) if trans_b else w(rng, k, m)
    c_kind = seed % 4
    inits = {"B": b}
    ins = ["x", "B"]
    if c_kind < 3:
        inits["C"] = [rng.normal(size=m), rng.normal(size=(1, m)), rng.normal(size=1)][c_kind]
        ins.append("C")
    node = helper.make_node("Gemm", ins, ["y"], name="gemm", transB=trans_b, alpha=alpha, beta=beta)
    return make_model([node], {"x": ["N", k]}, {"y": ["N", m]}, inits, opset=13), (k,)


@pytest.mark.parametrize("seed", range(12))
def test_gemm_variants(seed: int) -> None:
    model, shape = gemm_case(seed)
    assert_matches_ort(model, shape, seed)


@pytest.mark.parametrize("seed", range(6))
def test_matmul_add_sub_mul_div(seed: int) -> None:
    """MatMul by a constant, then element-wise ops with constants on either side and of several shapes."""
    rng = np.random.default_rng(seed)
    k, m = int(rng.integers(2, 10)), int(rng.integers(2, 10))
    inits = {
        "W": w(rng, k, m),
        "b": rng.normal(size=(1, m) if seed % 2 else (m,)),
        "s": rng.uniform(0.5, 2.0, size=()),
        "d": rng.uniform(0.5, 2.0, size=m),
        "c": rng.normal(size=(m,)),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"),
        helper.make_node("Add", ["b", "mm"] if seed % 3 == 0 else ["mm", "b"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "s"], ["p"], name="mul"),
        helper.make_node("Div", ["p", "d"], ["q"], name="div"),
        helper.make_node("Sub", ["c", "q"] if seed % 2 else ["q", "c"], ["r"], name="sub"),
        helper.make_node("Cast", ["r"], ["y"], name="cast", to=TensorProto.FLOAT),
    ]
    assert_matches_ort(make_model(nodes, {"x": ["N", k]}, {"y": ["N", m]}, inits, opset=13), (k,), seed)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rank", [1, 2])
def test_batchnorm(seed: int, rank: int) -> None:
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 8))
    shape = (c,) if rank == 1 else (c, int(rng.integers(1, 6)))
    inits = {
        "g": rng.uniform(0.5, 1.5, c),
        "be": rng.normal(size=c),
        "mu": rng.normal(size=c),
        "v": rng.uniform(0.1, 2.0, c),
    }
    eps = float(rng.choice([1e-5, 1e-3, 0.5]))
    node = helper.make_node("BatchNormalization", ["x", "g", "be", "mu", "v"], ["y"], name="bn", epsilon=eps)
    model = make_model([node], {"x": ["N", *shape]}, {"y": ["N", *shape]}, inits, opset=15)
    assert_matches_ort(model, shape, seed)


@pytest.mark.parametrize("which", ["both", "min", "max", "none"])
def test_clip_opset11_inputs(which: str) -> None:
    inits = {"lo": np.array(-0.3, np.float32), "hi": np.array(0.6, np.float32)}
    ins = {"both": ["x", "lo", "hi"], "min": ["x", "lo"], "max": ["x", "", "hi"], "none": ["x"]}[which]
    node = helper.make_node("Clip", ins, ["y"], name="clip")
    g = assert_matches_ort(make_model([node], {"x": ["N", 7]}, {"y": ["N", 7]}, inits, opset=13), (7,), 1)
    want = {"both": {"min": -0.3, "max": 0.6}, "min": {"min": -0.3}, "max": {"max": 0.6}, "none": {}}[which]
    assert g.node("clip").attrs == pytest.approx(want)  # the bounds went through float32


def test_clip_from_constant_nodes() -> None:
    nodes = [
        helper.make_node("Constant", [], ["lo"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [-0.25])),
        helper.make_node("Constant", [], ["hi"], value_float=0.5),
        helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip"),
    ]
    assert_matches_ort(make_model(nodes, {"x": ["N", 9]}, {"y": ["N", 9]}, opset=13), (9,), 2)


@pytest.mark.parametrize("attrs", [{"min": -0.5, "max": 0.25}, {"min": 0.0}, {"max": 1.0}, {}])
def test_clip_opset6_attributes(attrs: dict[str, float]) -> None:
    node = helper.make_node("Clip", ["x"], ["y"], name="clip", **attrs)
    g = assert_matches_ort(make_model([node], {"x": ["N", 6]}, {"y": ["N", 6]}, opset=10), (6,), 3)
    assert g.node("clip").attrs == attrs


@pytest.mark.parametrize("axis", [1, -3])
def test_flatten(axis: int) -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], name="flat", axis=axis),
        helper.make_node("Gemm", ["f", "W"], ["y"], name="fc", transB=1),
    ]
    model = make_model(nodes, {"x": ["N", 2, 3, 4]}, {"y": ["N", 5]}, {"W": w(rng, 5, 24)})
    g = assert_matches_ort(model, (2, 3, 4), 0)
    assert g.value("f").type.shape == (24,)


@pytest.mark.parametrize(
    ("target", "per_sample"),
    [([-1, 24], (24,)), ([0, -1], (24,)), ([0, 0, -1], (2, 12)), ([0, 6, -1], (6, 4)), ([0, 4, 3, 2], (4, 3, 2))],
)
def test_reshape(target: list[int], per_sample: tuple[int, ...]) -> None:
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="rs")]
    model = make_model(nodes, {"x": ["N", 2, 3, 4]}, {"y": None}, {"shape": np.array(target)})
    g = assert_matches_ort(model, (2, 3, 4), 4)
    assert g.value("y").type.shape == per_sample


def test_reshape_with_static_batch() -> None:
    """A static batch of 3: a target that spells the batch out keeps it as the batch."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="rs")]
    model = make_model(nodes, {"x": [3, 2, 6]}, {"y": [3, 12]}, {"shape": np.array([3, 12])})
    g = assert_matches_ort(model, (2, 6), 5, batch=3)
    assert g.value("y").type.shape == (12,)


@pytest.mark.parametrize("opset", [10, 13])
def test_identity_and_dropout(opset: int) -> None:
    rng = np.random.default_rng(opset)
    inits = {"W": w(rng, 5, 4), "b": rng.normal(size=5)}
    if opset >= 13:
        inits["ratio"] = np.array(0.5, np.float32)
        drop = helper.make_node("Dropout", ["h", "ratio"], ["d", "mask"], name="drop")
    else:
        drop = helper.make_node("Dropout", ["h"], ["d", "mask"], name="drop", ratio=0.5)
    nodes = [
        helper.make_node("Identity", ["x"], ["i"], name="id"),
        helper.make_node("Gemm", ["i", "W", "b"], ["h"], name="fc", transB=1),
        drop,
        helper.make_node("Relu", ["d"], ["y"], name="act"),
    ]
    g = assert_matches_ort(make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 5]}, inits, opset=opset), (4,), 6)
    assert [n.op for n in g.nodes] == ["Identity", "Gemm", "Identity", "Relu"]


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset: int) -> None:
    """[N,3,1,4] -squeeze(2)-> [N,3,4] -unsqueeze(-1, 1)-> [N,1,3,4,1] -squeeze()-> [N,3,4]."""

    def axes_node(op: str, inp: str, out: str, axes: list[int] | None, name: str) -> list[onnx.NodeProto]:
        if axes is None:
            return [helper.make_node(op, [inp], [out], name=name)]
        if opset < 13:
            return [helper.make_node(op, [inp], [out], name=name, axes=axes)]
        c = helper.make_node("Constant", [], [f"{name}_axes"], value=onnx.numpy_helper.from_array(np.array(axes)))
        return [c, helper.make_node(op, [inp, f"{name}_axes"], [out], name=name)]

    nodes = [
        *axes_node("Squeeze", "x", "s", [2], "sq"),
        *axes_node("Unsqueeze", "s", "u", [-1, 1], "unsq"),
        *axes_node("Squeeze", "u", "y", None, "sq_all"),
    ]
    model = make_model(nodes, {"x": ["N", 3, 1, 4]}, {"y": ["N", 3, 4]}, opset=opset)
    g = assert_matches_ort(model, (3, 1, 4), 7)
    assert [g.value(v).type.shape for v in ("s", "u", "y")] == [(3, 4), (1, 3, 4, 1), (3, 4)]


@pytest.mark.parametrize("perm", [[0, 1, 2, 3], [0, 3, 1, 2], [0, 2, 3, 1]])
def test_transpose(perm: list[int]) -> None:
    rng = np.random.default_rng(8)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="tr", perm=perm),
        helper.make_node("MatMul", ["t", "W"], ["y"], name="mm"),
    ]
    shape = (2, 3, 4)
    last = (1, *shape)[perm[-1]]
    model = make_model(nodes, {"x": ["N", *shape]}, {"y": None}, {"W": w(rng, last, 5)})
    assert_matches_ort(model, shape, 8)


def test_constant_nodes_as_weights() -> None:
    rng = np.random.default_rng(9)
    wt, b = w(rng, 6, 4), rng.normal(size=4).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["W"], value=onnx.numpy_helper.from_array(wt)),
        helper.make_node("Constant", [], ["b"], value_floats=b.tolist()),
        helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc"),
    ]
    assert_matches_ort(make_model(nodes, {"x": ["N", 6]}, {"y": ["N", 4]}, opset=13), (6,), 9)


def test_ops_on_constants_only_are_folded() -> None:
    """A weight computed from constants (Transpose, Mul, Neg: not IR ops) is evaluated at import."""
    rng = np.random.default_rng(10)
    nodes = [
        helper.make_node("Transpose", ["Wt"], ["W0"], perm=[1, 0]),
        helper.make_node("Neg", ["W0"], ["W1"]),
        helper.make_node("Mul", ["W1", "two"], ["W"]),
        helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
    ]
    inits = {"Wt": w(rng, 3, 7), "two": np.array(2.0, np.float32)}
    g = assert_matches_ort(make_model(nodes, {"x": ["N", 7]}, {"y": ["N", 3]}, inits), (7,), 10)
    assert [n.op for n in g.nodes] == ["MatMul"]


@pytest.mark.parametrize("opset", [13, 18])
def test_exporter_style_shape_chain(opset: int) -> None:
    """x.view(x.size(0), -1) as old exporters write it: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    rng = np.random.default_rng(opset)
    axes = onnx.numpy_helper.from_array(np.array([0]))
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"], name="shape"),
        helper.make_node("Constant", [], ["zero"], value=onnx.numpy_helper.from_array(np.array(0))),
        helper.make_node("Gather", ["shp", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Constant", [], ["ax"], value=axes),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"], name="unsq"),
        helper.make_node("Constant", [], ["minus1"], value=onnx.numpy_helper.from_array(np.array([-1]))),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "W", "b"], ["y"], name="fc", transB=1),
    ]
    inits = {"W": w(rng, 10, 24), "b": rng.normal(size=10)}
    model = make_model(nodes, {"x": ["N", 2, 3, 4]}, {"y": ["N", 10]}, inits, opset=opset)
    g = assert_matches_ort(model, (2, 3, 4), 11)
    assert [n.op for n in g.nodes] == ["Reshape", "Gemm"]


def test_shape_with_start_and_end() -> None:
    """Shape(start=1) of [N,2,3,4] is [2,3,4]; ReduceProd folds it to 24 at import."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape", start=1),
        helper.make_node("ReduceProd", ["s"], ["p"], name="prod", keepdims=1),
        helper.make_node("Constant", [], ["m1"], value=onnx.numpy_helper.from_array(np.array([-1]))),
        helper.make_node("Concat", ["m1", "p"], ["t"], name="cat", axis=0),
        helper.make_node("Reshape", ["x", "t"], ["y"], name="rs"),
    ]
    g = assert_matches_ort(make_model(nodes, {"x": ["N", 2, 3, 4]}, {"y": None}, opset=18), (2, 3, 4), 12)
    assert g.value("y").type.shape == (24,)


def test_residual_add_of_two_activations() -> None:
    rng = np.random.default_rng(13)
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
        helper.make_node("Add", ["h", "x"], ["y"], name="res"),
    ]
    assert_matches_ort(make_model(nodes, {"x": ["N", 5]}, {"y": ["N", 5]}, {"W": w(rng, 5, 5)}), (5,), 13)


def test_reference_input_errors() -> None:
    from hwgen.errors import DataError, GraphError
    from hwgen.ir.graph import Node
    from hwgen.sim import reference

    g = import_onnx(make_mlp_onnx([4, 3], 0))
    with pytest.raises(DataError, match=r"input 'x' expects samples of shape \[4\] \(batch first\), got .*\[2, 5\]"):
        reference.run(g, np.zeros((2, 5)))
    with pytest.raises(DataError, match=r"no data given for graph input 'x'"):
        reference.run(g, {"other": np.zeros((2, 4))})
    g.nodes.append(Node("odd", "Softmax2", [g.outputs[0]], ["z"]))
    with pytest.raises(GraphError, match=r"node 'odd' \(Softmax2\): sim.reference has no kernel for op 'Softmax2'"):
        reference.run(g, np.zeros((2, 4)))


# -- torch exports ---------------------------------------------------------------------------
def torch_models() -> list[Callable[[], object]]:
    import torch

    def mlp() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(12, 8),
            torch.nn.BatchNorm1d(8),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.3),
            torch.nn.Linear(8, 6),
            torch.nn.Hardtanh(-0.5, 0.5),
            torch.nn.Linear(6, 3),
        )

    class ViewNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(1)
            self.fc1 = torch.nn.Linear(12, 7)
            self.fc2 = torch.nn.Linear(7, 4, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x.view(x.size(0), -1)))
            return self.fc2(h) * 0.5 + 1.0

    return [mlp, ViewNet]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # torch's own exporter notices
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("which", [0, 1], ids=["mlp", "viewnet"])
def test_torch_export(tmp_path: Path, dynamo: bool, which: int) -> None:
    torch = pytest.importorskip("torch")
    model = torch_models()[which]().eval()
    for mod in model.modules():  # non-trivial BN statistics
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 4)
    path = tmp_path / "m.onnx"
    kwargs: dict = {"input_names": ["x"], "output_names": ["y"]}
    if dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("N")},)
    else:
        kwargs["dynamic_axes"] = {"x": {0: "N"}, "y": {0: "N"}}
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo, **kwargs)
    g = import_onnx(path)
    xs = random_input((3, 4), which, batch=7)
    (want,) = run_ort(path, xs)
    np.testing.assert_allclose(run_reference(g, xs), want, **TOL)
    with torch.no_grad():
        np.testing.assert_allclose(run_reference(g, xs), model(torch.from_numpy(xs)).numpy(), **TOL)


# -- refusals --------------------------------------------------------------------------------
def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def mlp_then(op_node: onnx.NodeProto, out_shape: list, opset: int = 17, **inits: np.ndarray) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1), op_node]
    return make_model(nodes, {"x": ["N", 4]}, {"y": out_shape}, {"W": w(rng, 4, 4), **inits}, opset=opset)


@pytest.mark.parametrize(
    ("op", "attrs"), [("Hardmax", {"axis": 1}), ("LpNormalization", {"axis": 1}), ("TopK", {})], ids=str
)
def test_unsupported_op_names_node_op_opset_and_the_supported_ops(op: str, attrs: dict) -> None:
    rng = np.random.default_rng(0)
    ins = ["h", "k"] if op == "TopK" else ["h"]
    outs = ["y", "idx"] if op == "TopK" else ["y"]
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
        helper.make_node(op, ins, outs, name="odd_one", **attrs),
    ]
    inits = {"W": w(rng, 4, 4), "k": np.array([2])}
    model = make_model(nodes, {"x": ["N", 4]}, {"y": None}, inits, opset=17)
    assert op not in SUPPORTED_OPS
    with pytest.raises(UnsupportedOpError) as e:
        import_onnx(model)
    msg = one_line(e)
    assert f"node 'odd_one' ({op}, opset 17)" in msg
    assert f"op {op} is not supported" in msg
    assert f"Supported ops: {', '.join(SUPPORTED_OPS)}" in msg
    assert set(SUPPORTED_OPS) >= {"Gemm", "MatMul", "Relu", "Flatten", "Reshape", "BatchNormalization", "Constant"}


def test_unsupported_lstm() -> None:
    rng = np.random.default_rng(0)
    hidden = 3
    inits = {"W": rng.normal(size=(1, 4 * hidden, 4)), "R": rng.normal(size=(1, 4 * hidden, hidden))}
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="lstm", hidden_size=hidden)
    model = make_model([node], {"x": [5, 2, 4]}, {"y": None}, inits, opset=14)
    with pytest.raises(UnsupportedOpError, match=r"node 'lstm' \(LSTM, opset 14\): op LSTM is not supported") as e:
        import_onnx(model)
    assert "Supported ops:" in one_line(e)


def test_training_mode_dropout_is_refused() -> None:
    inits = {"ratio": np.array(0.5, np.float32), "train": np.array(True)}
    node = helper.make_node("Dropout", ["x", "ratio", "train"], ["y"], name="drop")
    model = make_model([node], {"x": ["N", 3]}, {"y": ["N", 3]}, inits, opset=13)
    with pytest.raises(UnsupportedOpError, match=r"node 'drop'"):
        import_onnx(model)


def test_foreign_domain() -> None:
    node = helper.make_node("MultiThreshold", ["h"], ["y"], name="mt", domain="qonnx.custom_op.general")
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1), node]
    model = make_model(nodes, {"x": ["N", 4]}, {"y": ["N", 4]}, {"W": w(rng, 4, 4)}, check=False)
    model.opset_import.append(helper.make_opsetid("qonnx.custom_op.general", 1))
    onnx.checker.check_model(model)
    with pytest.raises(UnsupportedOpError, match=r"node 'mt'.*domain 'qonnx\.custom_op\.general' is not supported"):
        import_onnx(model)


@pytest.mark.parametrize(
    ("model_fn", "message"),
    [
        (
            lambda: make_model(
                [helper.make_node("Flatten", ["x"], ["y"], name="fl", axis=0)], {"x": ["N", 2, 3]}, {"y": None}
            ),
            r"node 'fl' \(Flatten, opset 17\): axis=0 merges the batch axis.*Use axis=1",
        ),
        (
            lambda: make_model(
                [helper.make_node("Flatten", ["x"], ["y"], name="fl", axis=2)], {"x": ["N", 2, 3]}, {"y": None}
            ),
            r"axis=2",
        ),
        (
            lambda: make_model(
                [helper.make_node("Gemm", ["x", "W"], ["y"], name="g", transA=1)],
                {"x": ["N", 4]},
                {"y": None},
                {"W": np.ones((4, 4))},
            ),
            r"node 'g' \(Gemm, opset 17\): transA=1 transposes the batch axis",
        ),
        (
            lambda: make_model(
                [helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                {"x": ["N", 2, 3]},
                {"y": None},
                {"s": np.array([-1])},
            ),
            r"node 'rs' \(Reshape, opset 17\): reshape of per-sample \[2, 3\] to \[-1\] merges the batch axis",
        ),
        (
            lambda: make_model(
                [helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                {"x": ["N", 2, 3]},
                {"y": None},
                {"s": np.array([-1, 3])},
            ),
            r"merges the batch axis",
        ),
        (
            lambda: make_model(
                [helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                {"x": ["N", 2, 3]},
                {"y": ["N", 2, 3]},
                {"s": np.array([0, -1, -1])},
            ),
            r"more than one -1",
        ),
        (
            lambda: make_model(
                [helper.make_node("Gemm", ["x", "Wact"], ["y"], name="g")],
                {"x": ["N", 4], "Wact": [4, 4]},
                {"y": None},
            ),
            r"node 'g' \(Gemm, opset 17\): the weight B \(input 1, 'Wact'\) must be a constant initializer",
        ),
        (
            lambda: make_model(
                [helper.make_node("MatMul", ["W", "x"], ["y"], name="mm")],
                {"x": ["N", 4, 4]},
                {"y": None},
                {"W": np.ones((4, 4))},
            ),
            r"node 'mm'.*right operand \(input 1, 'x'\) must be a constant",
        ),
        (
            lambda: make_model(
                [helper.make_node("Squeeze", ["x"], ["y"], name="sq", axes=[0])], {"x": [1, 3]}, {"y": None}, opset=11
            ),
            r"squeezing axis 0 removes the batch axis",
        ),
        (
            lambda: make_model(
                [helper.make_node("Unsqueeze", ["x"], ["y"], name="us", axes=[0])],
                {"x": ["N", 3]},
                {"y": None},
                opset=11,
            ),
            r"unsqueezing at axis 0 moves the batch axis",
        ),
        (
            lambda: make_model(
                [helper.make_node("Transpose", ["x"], ["y"], name="tr", perm=[1, 0, 2])],
                {"x": ["N", 3, 2]},
                {"y": None},
            ),
            r"perm=\[1, 0, 2\] moves the batch axis",
        ),
        (
            lambda: make_model(
                [helper.make_node("Cast", ["x"], ["y"], name="c", to=TensorProto.INT32)],
                {"x": ["N", 3]},
                {"y": ["N", 3]},
                check=False,
            ),
            r"Cast to INT32",
        ),
        (
            lambda: make_model(
                [helper.make_node("Gemm", ["x", "W", "C"], ["y"], name="g")],
                {"x": [3, 4]},
                {"y": None},
                {"W": np.ones((4, 2)), "C": np.ones((3, 2))},
            ),
            r"constant 'C' of shape \[3, 2\] broadcasts over the batch axis",
        ),
    ],
    ids=[
        "flatten-axis0",
        "flatten-axis2",
        "gemm-transA",
        "reshape-merge",
        "reshape-merge2",
        "reshape-two-minus1",
        "gemm-dynamic-weight",
        "matmul-const-left",
        "squeeze-batch",
        "unsqueeze-batch",
        "transpose-batch",
        "cast-int",
        "bias-over-batch",
    ],
)
def test_unsupported_attributes(model_fn: Callable[[], onnx.ModelProto], message: str) -> None:
    with pytest.raises(UnsupportedOpError, match=message) as e:
        import_onnx(model_fn())
    one_line(e)


def test_batchnorm_training_mode() -> None:
    inits = {k: np.ones(3) for k in ("g", "b", "m", "v")}
    node = helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], name="bn", training_mode=1)
    model = make_model([node], {"x": ["N", 3]}, {"y": None}, inits, opset=15, check=False)
    with pytest.raises(UnsupportedOpError, match=r"node 'bn'.*training_mode=1.*eval\(\)"):
        import_onnx(model)


def test_constant_output_is_refused() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="r"),
        helper.make_node("Constant", [], ["k"], value_float=1.0),
    ]
    model = make_model(nodes, {"x": ["N", 3]}, {"y": None, "k": None})
    with pytest.raises(UnsupportedOpError, match=r"graph output 'k' is a constant"):
        import_onnx(model)


# -- unreadable files ------------------------------------------------------------------------
def assert_model_file_error(path: Path, *fragments: str, at_load: bool = True) -> str:
    """import_onnx(path) fails with a one-line ModelFileError naming the file (and load_onnx too if `at_load`)."""
    with pytest.raises(ModelFileError) as e:
        import_onnx(path)
    msg = one_line(e)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    if at_load:
        with pytest.raises(ModelFileError):
            load_onnx(path)
    return msg


def test_missing_file(tmp_path: Path) -> None:
    assert_model_file_error(tmp_path / "nope.onnx", "no such model file")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert_model_file_error(tmp_path, "no such model file")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    assert_model_file_error(p)


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    p = tmp_path / "noise.onnx"
    p.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_model_file_error(p)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.01])
def test_truncated_model(tmp_path: Path, fraction: float) -> None:
    data = LENET_ONNX.read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: int(len(data) * fraction)])
    assert_model_file_error(p)


def test_text_file(tmp_path: Path) -> None:
    p = tmp_path / "readme.onnx"
    p.write_text("this is not a model\nsecond line\n")
    assert_model_file_error(p)


def test_dynamic_non_batch_dim(tmp_path: Path) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], {"x": ["N", "features"]}, {"y": None})
    msg = assert_model_file_error(save_model(model, tmp_path), "'x'", "dynamic dimension features", at_load=False)
    assert "static" in msg


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [({"x": []}, "needs a batch axis first")],
)
def test_input_without_batch_axis(tmp_path: Path, inputs: dict, fragment: str) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], inputs, {"y": None})
    assert_model_file_error(save_model(model, tmp_path), fragment, at_load=False)


def test_integer_input(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 3])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert_model_file_error(save_model(model, tmp_path), "is not a float tensor", at_load=False)


def test_opset_too_old(tmp_path: Path) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], {"x": ["N", 3]}, {"y": None}, opset=6)
    assert_model_file_error(save_model(model, tmp_path), "opset 6 is too old", at_load=False)


def test_checker_failure(tmp_path: Path) -> None:
    """A model that parses but violates the ONNX spec (an undefined input) is reported, in one line."""
    model = make_model(
        [helper.make_node("Relu", ["ghost"], ["y"], name="r")], {"x": ["N", 3]}, {"y": None}, check=False
    )
    assert_model_file_error(save_model(model, tmp_path), "invalid ONNX model")


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_over_spatial_axes_is_a_global_average_pool(tmp_path, keepdims: int) -> None:
    """torch's dynamo exporter writes AdaptiveAvgPool2d(1) / x.mean((2, 3)) as ReduceMean."""
    from onnx import helper as h

    axes = h.make_tensor("axes", onnx.TensorProto.INT64, [2], [2, 3])
    node = h.make_node("ReduceMean", ["x", "axes"], ["y"], name="rm", keepdims=keepdims)
    out_shape = ["N", 3, 1, 1] if keepdims else ["N", 3]
    g = h.make_graph(
        [node],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 4, 5])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_shape)],
        [axes],
    )
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    ir = import_onnx(model)
    assert "GlobalAveragePool" in [n.op for n in ir.nodes]
    np.testing.assert_allclose(reference.run(ir, x)["y"], x.mean(axis=(2, 3), keepdims=bool(keepdims)), atol=1e-6)


def test_reduce_mean_over_channels_is_refused() -> None:
    from onnx import helper as h

    node = h.make_node("ReduceMean", ["x"], ["y"], name="rm_c", axes=[1], keepdims=1)
    g = h.make_graph(
        [node],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 4, 5])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, 4, 5])],
    )
    with pytest.raises(UnsupportedOpError, match=r"'rm_c' \(ReduceMean, opset 13\).*all spatial axes"):
        import_onnx(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]))
