"""CNNs through the real flow, HLS C simulation bit for bit against the golden model.

Each case is a small torch (or onnx.helper) model: export -> `hwgen.build.build` -> `run_verify`
with csim on extreme + random input codes, whose expected outputs come only from
`hwgen.sim.exact`. A case also asserts that its Schedule holds the engines it is meant to cover,
so a change in lowering cannot turn a test vacuous. Builds and binaries are made once per session.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_model, save_model
from onnx import helper
from test_hls_emit import code_part

from hwgen.build import LoadedBuild, build, load_build
from hwgen.config import config_from_dict
from hwgen.hw.plan import AddPlan, ConcatPlan, ConvPlan, DensePlan, ForkPlan, LutPlan, PoolPlan, Schedule
from hwgen.verify import run_verify

torch = pytest.importorskip("torch")

HAVE_TOOLS = shutil.which(os.environ.get("CXX", "g++")) is not None and importlib.util.find_spec("hls4ml") is not None
pytestmark = [pytest.mark.gxx, pytest.mark.skipif(not HAVE_TOOLS, reason="needs g++ and hls4ml's ap_types")]

log = logging.getLogger(__name__)
nn = torch.nn

#: input codes per small case: the 4 extreme vectors, then random codes (hwgen.verify's choice)
VECTORS = 24


# -- the models ----------------------------------------------------------------------------------
class Plain(nn.Module):
    """conv 3x3 pad 1 -> maxpool 2x2 -> conv 1x1 -> global average pool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: Any) -> Any:
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.relu(self.c2(x))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Windows(nn.Module):
    """conv 5x5 no pad -> maxpool 3x3/2 pad 1 -> avgpool 2x2/1 pad 1 (padding counted) -> flatten -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 5)
        self.fc = nn.Linear(4 * 5 * 5, 6)

    def forward(self, x: Any) -> Any:
        x = torch.max_pool2d(torch.relu(self.c1(x)), 3, stride=2, padding=1)
        x = torch.nn.functional.avg_pool2d(x, 2, stride=1, padding=1, count_include_pad=True)
        return self.fc(torch.flatten(x, 1))  # the fc's weight columns follow the stream's HWC order


class Groups(nn.Module):
    """grouped conv (2 groups) -> depthwise 3x3/2 -> even 4x4 'same' conv (asymmetric pads) -> global max pool."""

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
        return self.fc(torch.flatten(torch.nn.functional.adaptive_max_pool2d(x, 1), 1))


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
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Activations(nn.Module):
    """Element-wise functions as lookup tables: Sigmoid, Tanh, HardSwish, LeakyRelu."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: Any) -> Any:
        x = torch.sigmoid(self.c1(x))
        x = torch.tanh(self.c2(x))
        x = torch.nn.functional.hardswish(self.c3(x))
        x = torch.max_pool2d(torch.nn.functional.leaky_relu(x, 0.1), 2)
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


def export(module: nn.Module, shape: tuple[int, ...], path: Path, seed: int) -> Path:
    """Seeded random weights, exported with a dynamic batch axis (TorchScript exporter: fast)."""
    torch.manual_seed(seed)
    for p in module.parameters():
        if p.ndim == 1:  # default init leaves biases tiny; spread them so they matter
            nn.init.uniform_(p, -0.5, 0.5)
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamo=False is deprecated, and the fastest here
        torch.onnx.export(
            module,
            torch.zeros(1, *shape),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
        )
    return path


def asymmetric_onnx(path: Path, seed: int) -> Path:
    """Asymmetric padding no torch layer exports: conv 3x3/2 pads (t,l,b,r) = (1,0,2,1), maxpool 3x3/2
    pads (0,1,1,0) over signed codes (a padding tap must never win), global max pool, fc."""
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
    # 11x10 input: conv -> 6x5 (rows (11+3-3)/2+1, cols (10+1-3)/2+1), pool -> 3x3 (rows (6+1-3)/2+1, cols (5+1-3)/2+1)
    return save_model(
        make_model(nodes, {"x": ["N", 3, 11, 10]}, {"y": ["N", 4]}, inits, name="asym"), path.parent, path.name
    )


#: node names: hostile strings, or names of generated locals, types and the top's ports
HOSTILE_NODES = ['a"; system("x"); //', "in", "out", "x_out", "int8_t", "W", "1x", "Ü-層"]
#: tensor names: two streams would be called `in` and `out` like the top's ports
HOSTILE_VALUES = ["in", "out", "x_out", "acc", "W", "win */ x", 'main"']


def hostile_onnx(path: Path, seed: int) -> Path:
    """A residual CNN whose node, tensor and graph names are hostile or collide with generated code."""
    rng = np.random.default_rng(seed)
    n, v = HOSTILE_NODES, HOSTILE_VALUES
    inits = {
        "w1": rng.normal(0, 0.3, (4, 2, 3, 3)),
        "b1": rng.normal(0, 0.2, 4),
        "w2": rng.normal(0, 0.3, (4, 4, 1, 1)),
        "b2": rng.normal(0, 0.2, 4),
        "wf": rng.normal(0, 0.4, (3, 4)),
        "bf": rng.normal(0, 0.1, 3),
    }
    nodes = [
        helper.make_node("Conv", ["in/put", "w1", "b1"], [v[0]], name=n[0], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", [v[0]], [v[1]], name=n[1]),
        helper.make_node("Conv", [v[1], "w2", "b2"], [v[2]], name=n[2]),
        helper.make_node("Add", [v[1], v[2]], [v[3]], name=n[3]),
        helper.make_node("GlobalAveragePool", [v[3]], [v[4]], name=n[4]),
        helper.make_node("Flatten", [v[4]], [v[5]], name=n[5]),
        helper.make_node("Gemm", [v[5], "wf", "bf"], [v[6]], name=n[6], transB=1),
    ]
    model = make_model(nodes, {"in/put": ["N", 2, 6, 6]}, {v[6]: ["N", 3]}, inits, name='g */ "; \\')
    return save_model(model, path.parent, path.name)


# -- the cases -----------------------------------------------------------------------------------
def has(engine: type, /, **want: Any) -> Callable[[Schedule], bool]:
    """A Schedule holds an `engine` plan whose attributes (or properties) equal `want`."""

    def check(s: Schedule) -> bool:
        return any(isinstance(p, engine) and all(getattr(p, k) == v for k, v in want.items()) for p in s.layers)

    check.__name__ = f"{engine.__name__}({', '.join(f'{k}={v!r}' for k, v in want.items())})"
    return check


def folded(s: Schedule) -> bool:
    """A conv engine with PE > 1, SIMD > 1, several output folds and several input-channel folds."""
    return any(
        isinstance(p, ConvPlan) and p.pe > 1 and p.simd > 1 and p.channels_out > p.pe and p.cg > p.simd
        for p in s.layers
    )


def fused_relu_add(s: Schedule) -> bool:
    """An Add with its ReLU fused (clamped at 0) and one without."""
    adds = [p.requant.lo for p in s.layers if isinstance(p, AddPlan)]
    return any(lo == 0 for lo in adds) and any(lo < 0 for lo in adds)


def wide_accumulator(s: Schedule) -> bool:
    """Some engine accumulates in more than 32 bits (ap_int beyond a C int)."""
    return any(p.acc.bits > 32 for p in s.layers if isinstance(p, ConvPlan | DensePlan | PoolPlan))


def signed_padded_maxpool(s: Schedule) -> bool:
    return any(
        isinstance(p, PoolPlan) and p.kind == "max" and p.inp.signed and any(p.pads_begin + p.pads_end)
        for p in s.layers
    )


@dataclass(frozen=True)
class Case:
    make: Callable[[Path, int], Path]  #: writes the ONNX file, returns its path
    shape: tuple[int, ...]  #: per-sample input shape
    config: dict[str, Any] = field(default_factory=dict)
    covers: tuple[Callable[[Schedule], bool], ...] = ()
    vectors: int = VECTORS


def torch_case(cls: type[nn.Module], shape: tuple[int, ...]) -> Callable[[Path, int], Path]:
    return lambda path, seed: export(cls(), shape, path, seed)


W4A4 = {"quantize": {"weight_bits": 4, "act_bits": 4}}
#: accumulators and requantization wider than 32 bits
W16A16 = {"quantize": {"weight_bits": 16, "act_bits": 16}}
#: conv foldings of every shape: c1 PE=2 SIMD=3 (4 output folds), c2 PE=2 SIMD=4 (3 output x 2 input folds)
FOLDED = {"layers": {"/c1/Conv": {"reuse": 36}, "/c2/Conv": {"reuse": 6}}}

CASES: dict[str, Case] = {
    "plain": Case(
        torch_case(Plain, (3, 8, 8)),
        (3, 8, 8),
        covers=(
            has(ConvPlan, kernel=(3, 3), pads_begin=(1, 1), stride=(1, 1)),
            has(ConvPlan, kernel=(1, 1)),
            has(PoolPlan, kind="max", kernel=(2, 2), stride=(2, 2)),
            has(PoolPlan, kind="avg", kernel=(4, 4), out_h=1),
        ),
    ),
    "plain_folded": Case(torch_case(Plain, (3, 8, 8)), (3, 8, 8), FOLDED, covers=(folded, has(ConvPlan, pe=2, simd=3))),
    "windows": Case(
        torch_case(Windows, (2, 12, 12)),
        (2, 12, 12),
        covers=(
            has(ConvPlan, kernel=(5, 5), pads_begin=(0, 0), pads_end=(0, 0)),
            has(PoolPlan, kind="max", kernel=(3, 3), stride=(2, 2), pads_begin=(1, 1)),
            has(PoolPlan, kind="avg", kernel=(2, 2), pads_end=(1, 1)),
            has(DensePlan, in_features=100),
        ),
    ),
    "windows_w16a16": Case(
        torch_case(Windows, (2, 12, 12)),
        (2, 12, 12),
        W16A16,
        covers=(wide_accumulator,),
    ),
    "asymmetric": Case(
        asymmetric_onnx,
        (3, 11, 10),
        covers=(
            has(ConvPlan, stride=(2, 2), pads_begin=(1, 0), pads_end=(2, 1)),
            has(PoolPlan, kind="max", pads_begin=(0, 1), pads_end=(1, 0)),
            signed_padded_maxpool,
            has(PoolPlan, kind="max", kernel=(3, 2), out_h=1, out_w=1),
        ),
    ),
    "groups": Case(
        torch_case(Groups, (4, 8, 8)),
        (4, 8, 8),
        {"layers": {"/grouped/Conv": {"reuse": 18}, "/depthwise/Conv": {"reuse": 36}}},
        covers=(
            has(ConvPlan, groups=2, depthwise=False, pe=4),  # two output folds, one per group
            has(ConvPlan, depthwise=True, stride=(2, 2), pe=2),  # four output folds over 8 channels
            has(ConvPlan, kernel=(4, 4), pads_begin=(1, 1), pads_end=(2, 2)),
            has(PoolPlan, kind="max", kernel=(4, 4), out_h=1),
        ),
    ),
    "branches": Case(
        torch_case(Branches, (3, 6, 6)),
        (3, 6, 6),
        covers=(has(ForkPlan), has(AddPlan), fused_relu_add, has(ConcatPlan)),
    ),
    "branches_w4a4": Case(torch_case(Branches, (3, 6, 6)), (3, 6, 6), W4A4, covers=(has(AddPlan), has(ConcatPlan))),
    "activations": Case(
        torch_case(Activations, (2, 8, 8)),
        (2, 8, 8),
        covers=tuple(has(LutPlan, source=f"/{op}") for op in ("Sigmoid", "Tanh", "HardSwish", "LeakyRelu")),
    ),
    "activations_w4a4": Case(torch_case(Activations, (2, 8, 8)), (2, 8, 8), W4A4, covers=(has(LutPlan),)),
    "lenet5": Case(
        torch_case(LeNet5, (1, 28, 28)),
        (1, 28, 28),
        covers=(has(ConvPlan, channels_out=20), has(ConvPlan, channels_out=50), has(DensePlan, in_features=800)),
        vectors=40,
    ),
    "hostile": Case(hostile_onnx, (2, 6, 6), covers=(has(ForkPlan), has(AddPlan))),
}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], LoadedBuild]:
    """Build each case once (calibrated on seeded random samples)."""
    done: dict[str, LoadedBuild] = {}

    def get(name: str) -> LoadedBuild:
        if name not in done:
            case = CASES[name]
            root = tmp_path_factory.mktemp(name)
            model = case.make(root / f"{name}.onnx", 0)
            calib = root / "calib.npz"
            x = np.random.default_rng(1).normal(0.0, 1.0, size=(64, *case.shape)).astype(np.float32)
            np.savez(calib, x=x)
            build(model, root / "build", config_from_dict(case.config), calib=calib)
            done[name] = load_build(root / "build")
        return done[name]

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_csim_bit_exact(name: str, builds: Callable[[str], LoadedBuild]) -> None:
    case = CASES[name]
    b = builds(name)
    missing = [c.__name__ for c in case.covers if not c(b.schedule)]
    assert not missing, f"{name}: the Schedule does not cover {missing}: {[p.name for p in b.schedule.layers]}"
    t = time.perf_counter()
    sec = run_verify(b, csim=True, rtl=False, n=case.vectors, data=None)["csim"]
    print(f"{name}: {sec['vectors']} vectors, csim {time.perf_counter() - t:.2f} s")
    assert sec["vectors"] == case.vectors
    assert sec["mismatches"] == 0 and sec["mismatched_bits"] == 0, sec.get("first_mismatch")


def test_hostile_names_stay_in_comments(builds: Callable[[str], LoadedBuild]) -> None:
    """Hostile names reach C++ only legalized (csim above compiled them under -Wall -Wextra -Werror);
    the streams named `in` and `out` do not shadow the top's ports."""
    b = builds("hostile")
    hls = b.out_dir / "hls"
    for path in sorted(hls.glob("*.h")) + sorted(hls.glob("*.cpp")):
        data = path.read_bytes()
        assert all(32 <= c < 127 or c == 10 for c in data), f"{path.name}: non-printable or non-ASCII byte"
        code = "\n".join(code_part(line) for line in data.decode().splitlines())
        assert "/*" not in code and "*/" not in code and "system(" not in code, path.name
    top = (hls / f"{b.schedule.top}.cpp").read_text()
    fifos = re.findall(r"^    hls::stream<[^;]*> (\w+)\(", top, re.MULTILINE)
    assert len(fifos) == len(set(fifos)) == len(b.schedule.streams) - 2
    assert {"in", "out"} <= {s.name for s in b.schedule.streams} - {b.schedule.input.name, b.schedule.output.name}
    assert not {"in", "out"} & set(fifos)
