"""QAT: fine-tuning a quantized graph improves it, and its export runs bit-exact in sim.exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hwgen.config import config_from_dict
from hwgen.errors import DataError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import exact
from hwgen.sim.torch_exec import Mode, TorchExecutor
from hwgen.train.loop import FitConfig, predict
from hwgen.train.qat import qat, quantize_and_train, require_exact

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    with np.load(REPO / "models" / "lenet300" / "mnist_test_1k.npz") as f:
        x, y = f["x"], f["y"]
    with np.load(REPO / "models" / "lenet300" / "mnist_calib.npz") as f:
        calib = f["x"]
    # train on calibration images + the second half of the test file, evaluate on the first half
    return {"calib": calib, "x_train": x[500:], "y_train": y[500:], "x_eval": x[:500], "y_eval": y[:500]}


def _graph(model: str) -> Graph:
    return canonicalize(import_onnx(REPO / "models" / model / f"{model}.onnx")).graph


def _top1(q: Graph, x: np.ndarray, y: np.ndarray) -> float:
    return float((exact.run(q, x)[q.outputs[0]].reshape(len(x), -1).argmax(1) == y).mean())


def _cfg(bits: int):
    return config_from_dict({"quantize": {"weight_bits": bits, "act_bits": bits}})


def test_qat_recovers_w3a3_accuracy_and_exports_bit_exact(data) -> None:
    """At 3 bits PTQ loses a lot; a short QAT run on 500 images wins most of it back, bit-exact after export."""
    g = _graph("lenet300")
    q = quantize_fixed(g, data["calib"], _cfg(3)).graph
    ptq = _top1(q, data["x_eval"], data["y_eval"])
    res = qat(
        q, data["x_train"], data["y_train"], FitConfig(epochs=3, batch_size=50, lr=1e-3, progress=False), float_graph=g
    )
    after = _top1(res.graph, data["x_eval"], data["y_eval"])
    assert after > ptq + 0.03, (ptq, after)
    # formats are kept; weights changed and sit on their grid
    for n in q.nodes:
        if n.op == "Dense":
            assert res.graph.value(n.inputs[1]).type.format == q.value(n.inputs[1]).type.format
            assert res.graph.value(n.outputs[0]).type.format == q.value(n.outputs[0]).type.format
            assert not np.array_equal(res.graph.const(n.inputs[1]), q.const(n.inputs[1]))
    # the trained executor itself (float64, eval) and a fresh one on the export agree with sim.exact
    want = exact.decode_outputs(res.graph, exact.run(res.graph, data["x_eval"]))[res.graph.outputs[0]]
    np.testing.assert_array_equal(predict(res.executor, data["x_eval"]), want)
    assert res.check_exact(data["x_eval"]) == 0
    require_exact(res, data["x_eval"][:50])
    assert (
        res.float_graph is not None
        and res.float_graph.value(g.nodes[1].inputs[1]).type.format == g.value(g.nodes[1].inputs[1]).type.format
    )


@pytest.mark.parametrize(("model", "bits"), [("lenet5", 4), ("rescnn", 8)])
def test_cnn_qat_export_is_bit_exact(model: str, bits: int, data) -> None:
    g = _graph(model)
    q = quantize_fixed(g, data["calib"][:128], _cfg(bits)).graph
    cfg = FitConfig(epochs=1, batch_size=32, lr=1e-3, progress=False)
    res = qat(q, data["x_train"][:64], data["y_train"][:64], cfg, float_graph=g)
    assert len(res.history.epochs) == 1
    assert res.check_exact(data["x_eval"][:50]) == 0
    macs = [n for n in q.nodes if n.op in ("Dense", "Conv")]
    moved = sum(not np.array_equal(res.graph.const(n.inputs[1]), q.const(n.inputs[1])) for n in macs)
    assert moved >= 2


def test_masks_by_float_name_keep_pruned_weights_zero(data) -> None:
    g = _graph("lenet300")
    fc1 = g.nodes[1]
    w = g.const(fc1.inputs[1])
    mask = (np.abs(w) > np.quantile(np.abs(w), 0.8)).astype(np.float64)  # keep the largest 20%
    res = quantize_and_train(
        g, data["calib"], _cfg(8), data["x_train"][:200], data["y_train"][:200],
        FitConfig(epochs=1, batch_size=50, progress=False), masks={fc1.inputs[1]: mask},
    )  # fmt: skip
    qw = res.graph.const(res.graph.node(fc1.name).inputs[1])
    assert (qw[mask == 0] == 0).all()
    assert (qw[mask == 1] != 0).mean() > 0.9
    assert res.check_exact(data["x_eval"][:100]) == 0
    with pytest.raises(DataError, match="no such constant"):
        quantize_and_train(g, data["calib"], _cfg(8), data["x_train"][:10], data["y_train"][:10], masks={"nope": mask})


def test_training_in_float64_keeps_the_executor_exact_throughout(data) -> None:
    """No export step needed when training in float64: the live executor is the quantized network."""
    g = _graph("lenet300")
    q = quantize_fixed(g, data["calib"], _cfg(4)).graph
    res = qat(
        q,
        data["x_train"][:100],
        data["y_train"][:100],
        FitConfig(epochs=1, batch_size=50, progress=False),
        dtype=torch.float64,
    )
    fresh = TorchExecutor(res.graph, Mode.QUANTIZED)
    np.testing.assert_array_equal(predict(fresh, data["x_eval"][:100]), predict(res.executor, data["x_eval"][:100]))
