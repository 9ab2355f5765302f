"""Train a small residual CNN ("ResCNN") on MNIST and export the bundled ``rescnn.onnx``.

A deliberately small (7,946 parameters) network that exercises the CNN features of hwgen's
frontend and backends: BatchNorm (folded into the convs by hwgen), residual ``Add`` of two
activation branches (identity and 1x1-projection skips), a depthwise convolution
(``group == channels``), MaxPool, GlobalAveragePool, Flatten and Gemm::

    stem   conv3x3 1->16 + BN + ReLU                                  28x28
    pool   max 2x2/2                                                  -> 14x14
    A      [conv3x3 16->16 + BN + ReLU, conv3x3 16->16 + BN] + x, ReLU
    pool   max 2x2/2                                                  -> 7x7
    B      [dw3x3 16 + BN + ReLU, pw1x1 16->32 + BN] + (conv1x1 16->32 + BN)(x), ReLU
    C      [dw3x3 32 + BN + ReLU, pw1x1 32->32 + BN] + x, ReLU
    head   global average pool -> flatten -> fc 32->10

Training, export and checks are shared by the zoo (``models/zoo.py``): offline, seeded and
deterministic on CPU. Verification and calibration data are shared with LeNet-300-100: use
``models/lenet300/mnist_test_1k.npz`` and ``models/lenet300/mnist_calib.npz``.

Outputs (next to this file unless ``--out-dir`` is given):

* ``rescnn.onnx``   input ``input`` float32 [batch, 1, 28, 28] in [0, 1], output ``logits`` [batch, 10]
* ``metrics.json``  full 10k test accuracy (torch and onnxruntime), params, epochs, seed, ops, time

Usage::

    .venv/bin/python models/rescnn/train.py
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from models.zoo import ZooModel, zoo_main

HERE = Path(__file__).resolve().parent


def conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    """Conv (no bias; "same" padding, stride 1) + BatchNorm; hwgen folds the BN into the conv."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet basic block with identity skip: relu(x + bn(conv3x3(relu(bn(conv3x3(x))))))."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(ch, ch, 3)
        self.conv2 = conv_bn(ch, ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class SeparableBlock(nn.Module):
    """Depthwise-separable residual block: relu(skip(x) + bn(pw1x1(relu(bn(dw3x3(x)))))).

    The depthwise conv has ``groups == cin == channels``; ``skip`` is the identity when ``cin == cout``
    and a 1x1 conv + BN projection otherwise.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw = conv_bn(cin, cin, 3, groups=cin)
        self.pw = conv_bn(cin, cout, 1)
        self.skip: nn.Module = nn.Identity() if cin == cout else conv_bn(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.skip(x) + self.pw(torch.relu(self.dw(x))))


class ResCNN(nn.Module):
    """stem 3x3 1->16 -> pool -> A (16) -> pool -> B (dw 16, 16->32 projection) -> C (dw 32) -> GAP -> fc."""

    def __init__(self, c1: int = 16, c2: int = 32) -> None:
        super().__init__()
        self.stem = conv_bn(1, c1, 3)  # 28x28
        self.pool1 = nn.MaxPool2d(2, 2)  # -> 14x14
        self.block_a = BasicBlock(c1)
        self.pool2 = nn.MaxPool2d(2, 2)  # -> 7x7
        self.block_b = SeparableBlock(c1, c2)  # 1x1 conv projection skip
        self.block_c = SeparableBlock(c2, c2)  # identity skip
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.stem(x)))
        x = self.pool2(self.block_a(x))
        x = self.block_c(self.block_b(x))
        return self.fc(self.flatten(self.gap(x)))


#: ops hwgen's CNN path is meant to see; a dynamo export with anything else falls back to TorchScript.
ALLOWED_OPS = frozenset(
    {
        *("Conv", "Relu", "MaxPool", "Add", "BatchNormalization", "GlobalAveragePool", "Reshape", "Flatten"),
        *("Gemm", "MatMul", "Identity", "Constant", "Shape", "Gather", "Unsqueeze", "Concat"),
    }
)


def check_structure(proto: onnx.ModelProto) -> dict[str, object]:
    """Assert the graph has the features this model exists to exercise; returns a summary."""
    consts = {t.name for t in proto.graph.initializer}
    consts |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    shapes = {t.name: list(t.dims) for t in proto.graph.initializer}
    ops = Counter(n.op_type for n in proto.graph.node)
    residual_adds = [n.name for n in proto.graph.node if n.op_type == "Add" and not any(i in consts for i in n.input)]
    depthwise = []
    for n in proto.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "Conv" and group > 1 and shapes[n.input[1]][:2] == [group, 1]:
            depthwise.append(f"{n.name}: group={group}, weight {shapes[n.input[1]]}")
    summary = {"residual_adds": len(residual_adds), "depthwise_convs": depthwise}
    assert len(residual_adds) >= 2, summary
    assert depthwise, summary
    for op in ("BatchNormalization", "MaxPool", "GlobalAveragePool", "Gemm"):
        assert ops[op] > 0, f"no {op} in the exported graph"
    assert ops["Flatten"] + ops["Reshape"] > 0, "no Flatten/Reshape in the exported graph"
    return summary


SPEC = ZooModel(
    name="rescnn",
    title="ResCNN: stem conv+BN+ReLU, residual blocks A (identity), B (dw-separable, 1x1 projection), "
    "C (dw-separable, identity), GAP, fc",
    build=ResCNN,
    epochs=8,
    lr=3e-3,
    doc="ResCNN (residual + depthwise, BN) MNIST classifier; input [batch,1,28,28] = pixel/255.",
    allowed_ops=ALLOWED_OPS,
    check=check_structure,
)


if __name__ == "__main__":
    sys.exit(zoo_main(SPEC, HERE, __doc__))
