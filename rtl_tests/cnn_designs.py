"""Small CNNs for the RTL tests: torch modules and onnx.helper graphs, built through the real flow.

`build_design` exports (or writes) the model, calibrates on seeded random samples (or the
MNIST file given), and runs `hwgen.build.build`; the tests then verify the build with
`hwgen.verify.run_verify` / `hwgen.hw.rtl_sim.run_rtl`. Expected outputs only ever come from
`hwgen.sim.exact` (inside hwgen.verify). Torch is imported lazily: the onnx.helper designs
need none.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwgen.build import LoadedBuild, build, load_build
from hwgen.config import config_from_dict
from hwgen.hw.plan import Schedule

REPO = Path(__file__).resolve().parents[1]
#: 1000 MNIST test digits [N, 1, 28, 28] with labels (models/lenet300), real data for LeNet-5
MNIST_TEST = REPO / "models" / "lenet300" / "mnist_test_1k.npz"


# -- onnx.helper graphs ----------------------------------------------------------------------------
def onnx_model(
    nodes: list[onnx.NodeProto],
    shape: tuple[int, ...],
    inits: dict[str, np.ndarray],
    name: str,
    *,
    x: str = "x",
    y: str = "y",
) -> onnx.ModelProto:
    """A float model with input `x` [N, *shape] and output `y` (shape inferred), checked."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()],
    )
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.checker.check_model(model)
    return model


def conv_onnx(
    c: int,
    m: int,
    hw: tuple[int, int],
    kernel: tuple[int, int],
    *,
    stride: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    group: int = 1,
    act: str | None = None,
    seed: int = 0,
) -> Callable[[Path], onnx.ModelProto]:
    """One Conv (pads top, left, bottom, right), optionally followed by an activation node."""

    def make(_path: Path) -> onnx.ModelProto:
        rng = np.random.default_rng(seed)
        inits = {"w": rng.normal(0, 0.3, (m, c // group, *kernel)), "b": rng.normal(0, 0.3, m)}
        onnx_pads = [pads[0], pads[1], pads[2], pads[3]]
        out = "c" if act else "y"
        nodes = [
            helper.make_node(
                "Conv", ["x", "w", "b"], [out], name="conv", strides=list(stride), pads=onnx_pads, group=group
            )
        ]
        if act:
            nodes.append(helper.make_node(act, ["c"], ["y"], name="act"))
        return onnx_model(nodes, (c, *hw), inits, "conv")

    return make


def pool_onnx(
    op: str,
    c: int,
    hw: tuple[int, int],
    kernel: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> Callable[[Path], onnx.ModelProto]:
    """One pooling node; AveragePool counts its padding (count_include_pad=1, what the engine does)."""

    def make(_path: Path) -> onnx.ModelProto:
        attrs: dict[str, Any] = {}
        if not op.startswith("Global"):
            attrs = {"kernel_shape": list(kernel or ()), "strides": list(stride or ()), "pads": list(pads)}
            if op == "AveragePool":
                attrs["count_include_pad"] = 1
        return onnx_model([helper.make_node(op, ["x"], ["y"], name="pool", **attrs)], (c, *hw), {}, "pool")

    return make


def unary_onnx(op: str, c: int, hw: tuple[int, int]) -> Callable[[Path], onnx.ModelProto]:
    """One element-wise node (a lookup-table engine)."""
    return lambda _path: onnx_model([helper.make_node(op, ["x"], ["y"], name="act")], (c, *hw), {}, "unary")


def self_join_onnx(op: str, c: int, hw: tuple[int, int], seed: int = 0) -> Callable[[Path], onnx.ModelProto]:
    """x -> 1x1 conv -> (Add or channel Concat) with x itself: a fork and a join of two streams."""

    def make(_path: Path) -> onnx.ModelProto:
        rng = np.random.default_rng(seed)
        inits = {"w": rng.normal(0, 0.4, (c, c, 1, 1)), "b": rng.normal(0, 0.2, c)}
        join = (
            helper.make_node("Add", ["x", "c"], ["y"], name="join")
            if op == "Add"
            else helper.make_node("Concat", ["c", "x"], ["y"], name="join", axis=1)
        )
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"), join]
        return onnx_model(nodes, (c, *hw), inits, "join")

    return make


def asymmetric_onnx(seed: int = 0) -> Callable[[Path], onnx.ModelProto]:
    """Padding no torch layer exports: conv 3x3/2 pads (t,l,b,r) = (1,0,2,1), maxpool 3x3/2 pads
    (0,1,1,0) over signed codes (a padding tap must never win), global max pool, fc."""

    def make(_path: Path) -> onnx.ModelProto:
        rng = np.random.default_rng(seed)
        inits = {
            "w1": rng.normal(0, 0.3, (6, 3, 3, 3)),
            "b1": rng.normal(0, 0.2, 6),
            "wf": rng.normal(0, 0.4, (4, 6)),
            "bf": rng.normal(0, 0.1, 4),
        }
        nodes = [
            helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv_s2", strides=[2, 2], pads=[1, 0, 2, 1]),
            helper.make_node(
                "MaxPool", ["c1"], ["p1"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0]
            ),
            helper.make_node("GlobalMaxPool", ["p1"], ["g"], name="gmp"),
            helper.make_node("Flatten", ["g"], ["f"], name="flat"),
            helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
        ]
        return onnx_model(nodes, (3, 11, 10), inits, "asym")

    return make


# -- torch modules -------------------------------------------------------------------------------
def torch_modules() -> dict[str, Any]:
    """The torch test networks by name (torch imported here, not at module import)."""
    import torch

    nn = torch.nn
    f = torch.nn.functional

    class Plain(nn.Module):
        """conv 3x3 pad 1 -> ReLU -> maxpool 2x2 -> conv 1x1 -> ReLU -> global average pool -> fc."""

        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = nn.Conv2d(8, 6, 1)
            self.fc = nn.Linear(6, 5)

        def forward(self, x: Any) -> Any:
            x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.relu(self.c2(x))
            return self.fc(torch.flatten(f.adaptive_avg_pool2d(x, 1), 1))

    class Windows(nn.Module):
        """conv 5x5 no pad -> maxpool 3x3/2 pad 1 -> avgpool 2x2/1 pad 1 (padding counted) -> flatten -> fc."""

        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(2, 4, 5)
            self.fc = nn.Linear(4 * 5 * 5, 6)

        def forward(self, x: Any) -> Any:
            x = torch.max_pool2d(torch.relu(self.c1(x)), 3, stride=2, padding=1)
            x = f.avg_pool2d(x, 2, stride=1, padding=1, count_include_pad=True)
            return self.fc(torch.flatten(x, 1))  # the fc's weight columns follow the stream's HWC order

    class Groups(nn.Module):
        """grouped conv (2 groups) -> depthwise 3x3/2 -> 4x4 'same' conv (asymmetric pads) -> global max pool -> fc."""

        def __init__(self) -> None:
            super().__init__()
            self.grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2)
            self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
            self.same = nn.Conv2d(8, 6, 4, padding="same")
            self.fc = nn.Linear(6, 4)

        def forward(self, x: Any) -> Any:
            x = torch.relu(self.grouped(x))
            x = torch.relu(self.depthwise(x))
            x = self.same(x)
            return self.fc(torch.flatten(f.adaptive_max_pool2d(x, 1), 1))

    class Branches(nn.Module):
        """Residual adds (one fused with ReLU, one not) and a two-branch channel concat."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.res = nn.Conv2d(4, 4, 3, padding=1)
            self.res2 = nn.Conv2d(4, 4, 1)
            self.left = nn.Conv2d(4, 4, 1)
            self.right = nn.Conv2d(4, 2, 3, padding=1)
            self.mix = nn.Conv2d(6, 4, 1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: Any) -> Any:
            x = torch.relu(self.stem(x))
            x = torch.relu(x + self.res(x))  # Add + ReLU, fused
            x = x + self.res2(x)  # Add alone
            x = torch.cat([torch.relu(self.left(x)), self.right(x)], dim=1)
            x = torch.relu(self.mix(x))
            return self.fc(torch.flatten(f.adaptive_avg_pool2d(x, 1), 1))

    class Activations(nn.Module):
        """Element-wise functions as lookup tables: Sigmoid, Tanh, HardSwish; flatten -> fc."""

        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(2, 4, 3, padding=1)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1)
            self.c3 = nn.Conv2d(4, 4, 1)
            self.fc = nn.Linear(4 * 4 * 4, 3)

        def forward(self, x: Any) -> Any:
            x = torch.sigmoid(self.c1(x))
            x = torch.tanh(self.c2(x))
            x = torch.max_pool2d(f.hardswish(self.c3(x)), 2)
            return self.fc(torch.flatten(x, 1))

    class LeNet5(nn.Module):
        """MNIST-sized LeNet-5-like: conv 20@5x5 -> maxpool -> conv 50@5x5 -> maxpool -> fc 500 -> fc 10."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 20, 5)
            self.conv2 = nn.Conv2d(20, 50, 5)
            self.fc1 = nn.Linear(800, 500)
            self.fc2 = nn.Linear(500, 10)

        def forward(self, x: Any) -> Any:
            x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))

    return {c.__name__: c for c in (Plain, Windows, Groups, Branches, Activations, LeNet5)}


def torch_onnx(module: str, shape: tuple[int, ...], seed: int = 0) -> Callable[[Path], Path]:
    """Export a torch module with seeded random weights (TorchScript exporter: fast), dynamic batch."""

    def make(path: Path) -> Path:
        import torch

        torch.manual_seed(seed)
        net = torch_modules()[module]()
        for p in net.parameters():
            if p.ndim == 1:  # default init leaves biases tiny; spread them so they matter
                torch.nn.init.uniform_(p, -0.5, 0.5)
        net.eval()
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


# -- building ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Design:
    make: Callable[[Path], onnx.ModelProto | Path]  #: writes/returns the model for a path
    shape: tuple[int, ...]  #: per-sample input shape (C, H, W)
    config: dict[str, Any] = field(default_factory=dict)  #: hwgen build configuration
    calib: Path | None = None  #: calibration data; None = seeded normal samples
    covers: tuple[Callable[[Schedule], bool], ...] = ()  #: what its Schedule must hold


def build_design(design: Design, root: Path) -> LoadedBuild:
    """ONNX -> `hwgen.build.build` into root/build -> the loaded build."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "model.onnx"
    model = design.make(path)
    if isinstance(model, onnx.ModelProto):
        onnx.save(model, str(path))
    calib = design.calib
    if calib is None:
        calib = root / "calib.npz"
        x = np.random.default_rng(1).normal(0.0, 1.0, size=(64, *design.shape)).astype(np.float32)
        np.savez(calib, x=x)
    build(path, root / "build", config_from_dict(design.config), calib=calib)
    return load_build(root / "build")


def has(engine: type, /, **want: Any) -> Callable[[Schedule], bool]:
    """A Schedule holds an `engine` plan whose attributes (or properties) equal `want`."""

    def check(s: Schedule) -> bool:
        return any(isinstance(p, engine) and all(getattr(p, k) == v for k, v in want.items()) for p in s.layers)

    check.__name__ = f"{engine.__name__}({', '.join(f'{k}={v!r}' for k, v in want.items())})"
    return check


def missing_coverage(design: Design, schedule: Schedule) -> list[str]:
    return [c.__name__ for c in design.covers if not c(schedule)]
