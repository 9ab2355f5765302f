"""Torch-exported classifiers with the ops exporters emit: Softmax heads and explicit F.pad.

Each model is exported with torch.onnx (TorchScript exporter), built by `hwgen build` (through
hwgen.build.build, calibrated on seeded samples) and verified by `hwgen verify`'s code path
(hwgen.verify.run_verify: golden model vs C simulation vs RTL simulation with random
back-pressure, extreme then random input codes). The explicit Pads must fold into the windows
(no Pad left in the quantized graph) and the float graph must match onnxruntime.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cnn_designs import Design, build_design, onnx_model
from onnx import helper

from hwgen.frontend import import_onnx
from hwgen.hw.plan import ChannelAffinePlan, ConvPlan, PoolPlan, SoftmaxPlan
from hwgen.passes.canonicalize import canonicalize
from hwgen.sim import reference
from hwgen.verify import run_verify

pytestmark = [pytest.mark.rtl, pytest.mark.gxx]


def _modules() -> dict[str, Any]:
    import torch

    nn, f = torch.nn, torch.nn.functional

    class SoftmaxMLP(nn.Module):
        """16 -> 24 -> ReLU -> 10 -> Softmax: a classifier that outputs probabilities."""

        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(16, 24)
            self.fc2 = nn.Linear(24, 10)

        def forward(self, x: Any) -> Any:
            return torch.softmax(self.fc2(torch.relu(self.fc1(x))), dim=1)

    class PaddedCNN(nn.Module):
        """Explicit F.pad before a conv (zeros), a max pool (after ReLU) and an average pool; softmax head."""

        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 6, 3)
            self.fc = nn.Linear(6 * 4 * 4, 5)

        def forward(self, x: Any) -> Any:
            x = torch.relu(self.c1(f.pad(x, (1, 1, 1, 1))))  # 'same' 3x3 conv as keras exports it: 8x8
            x = f.max_pool2d(f.pad(x, (0, 1, 0, 1)), 2)  # 9x9 -> 4x4
            x = f.avg_pool2d(f.pad(x, (1, 0, 1, 0)), 2, stride=1)  # 5x5 -> 4x4, the zeros counted
            return torch.softmax(self.fc(torch.flatten(x, 1)), dim=1)

    return {"SoftmaxMLP": SoftmaxMLP, "PaddedCNN": PaddedCNN}


def export(module: str, shape: tuple[int, ...]) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
        net = _modules()[module]().eval()
        for p in net.parameters():
            if p.ndim == 1:  # spread the biases so they matter
                torch.nn.init.uniform_(p, -0.5, 0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dynamo=False is deprecated, and the fastest here
            torch.onnx.export(
                net,
                torch.zeros(1, *shape),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
            )
        return path

    return make


DESIGNS = {
    "softmax_mlp": Design(export("SoftmaxMLP", (16,)), (16,)),
    "padded_cnn": Design(export("PaddedCNN", (3, 8, 8)), (3, 8, 8)),
}


@pytest.mark.parametrize("name", list(DESIGNS))
def test_build_and_verify(name: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    design = DESIGNS[name]
    b = build_design(design, tmp_path)
    s = b.schedule
    assert isinstance(s.layers[-1], SoftmaxPlan), [type(p).__name__ for p in s.layers]
    assert all(n.op != "Pad" for n in b.graph.nodes), "an explicit Pad was not folded"
    if name == "padded_cnn":
        conv = next(p for p in s.layers if isinstance(p, ConvPlan))
        pools = {p.kind: p for p in s.layers if isinstance(p, PoolPlan)}
        assert (conv.pads_begin, conv.pads_end) == ((1, 1), (1, 1))
        assert (pools["max"].pads_end, pools["avg"].pads_begin) == ((1, 1), (1, 1))
    # the float graph hwgen quantized equals onnxruntime on the exported (explicit Pad) model
    x = np.random.default_rng(2).normal(0, 1, (8, *design.shape)).astype(np.float32)
    float_graph = canonicalize(import_onnx(tmp_path / "model.onnx")).graph
    got = reference.run(float_graph, x)[float_graph.outputs[0]]
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # onnxruntime computes in float32

    v = run_verify(b, csim=True, rtl=True, n=24, data=None, seed=9, backpressure="random")
    for kind in ("csim", "rtl"):
        assert (v[kind]["mismatches"], v[kind]["mismatched_bits"]) == (0, 0), v[kind]
    print(f"{name}: RTL latency {v['rtl']['latency_cycles']} cycles, model {v['rtl']['latency_estimate']}")
    assert v["rtl"]["latency_cycles"] == v["rtl"]["latency_estimate"]


def _unfolded_batchnorm(_path: Path) -> object:
    """conv -> ReLU -> max pool -> Mul/Add by per-channel constants (a BatchNorm no MAC precedes) -> GAP -> fc."""
    rng = np.random.default_rng(4)
    inits = {
        "w": rng.normal(0, 0.4, (4, 2, 3, 3)),
        "b": rng.normal(0, 0.2, 4),
        "g": rng.normal(1, 0.4, (4, 1, 1)),
        "beta": rng.normal(0, 0.4, (4, 1, 1)),
        "wf": rng.normal(0, 0.5, (3, 4)),
        "bf": rng.normal(0, 0.1, 3),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Mul", ["p", "g"], ["s"], name="bn_mul"),
        helper.make_node("Add", ["s", "beta"], ["t"], name="bn_add"),
        helper.make_node("GlobalAveragePool", ["t"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    return onnx_model(nodes, (2, 6, 6), inits, "bn_affine")


def test_per_channel_affine_builds_and_verifies(tmp_path: Path) -> None:
    b = build_design(Design(_unfolded_batchnorm, (2, 6, 6)), tmp_path)
    affine = [p for p in b.schedule.layers if isinstance(p, ChannelAffinePlan)]
    assert [p.period for p in affine] == [4, 4], [type(p).__name__ for p in b.schedule.layers]
    v = run_verify(b, csim=True, rtl=True, n=24, data=None, seed=9, backpressure="random")
    for kind in ("csim", "rtl"):
        assert (v[kind]["mismatches"], v[kind]["mismatched_bits"]) == (0, 0), v[kind]
    print(f"per-channel affine: RTL latency {v['rtl']['latency_cycles']} cycles, model {v['rtl']['latency_estimate']}")
    assert v["rtl"]["latency_cycles"] == v["rtl"]["latency_estimate"]
