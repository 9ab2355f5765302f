"""Train LeNet-5 (Caffe / Deep Compression form) on MNIST and export the bundled ``lenet5.onnx``.

The architecture is the Caffe LeNet that Deep Compression (Han et al., 2016) pruned and quantized:
conv 20@5x5 -> max-pool 2x2/2 -> conv 50@5x5 -> max-pool 2x2/2 -> flatten -> fc 500 -> ReLU -> fc 10
(431,080 float32 parameters). Caffe's prototxt has no activation after the convolutions; like most
re-implementations we add a ReLU after each of them (conv -> ReLU -> pool).

Training, export and checks are shared by the zoo (``models/zoo.py``): offline, seeded and
deterministic on CPU. Verification and calibration data are shared with LeNet-300-100: use
``models/lenet300/mnist_test_1k.npz`` and ``models/lenet300/mnist_calib.npz``.

Outputs (next to this file unless ``--out-dir`` is given):

* ``lenet5.onnx``   input ``input`` float32 [batch, 1, 28, 28] in [0, 1], output ``logits`` [batch, 10]
* ``metrics.json``  full 10k test accuracy (torch and onnxruntime), params, epochs, seed, ops, time

Usage::

    .venv/bin/python models/lenet5/train.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from models.zoo import ZooModel, zoo_main

HERE = Path(__file__).resolve().parent


class LeNet5(nn.Module):
    """Caffe LeNet-5 with ReLU after each conv: 20c5 -> p2 -> 50c5 -> p2 -> fc500 -> fc10 (logits).

    ``width`` scales every hidden layer (0.5 gives the half-width student used by distillation).
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, f1 = round(20 * width), round(50 * width), round(500 * width)
        self.conv1 = nn.Conv2d(1, c1, kernel_size=5)  # 28x28 -> 24x24
        self.pool1 = nn.MaxPool2d(2, 2)  # -> 12x12
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)  # -> 8x8
        self.pool2 = nn.MaxPool2d(2, 2)  # -> 4x4
        self.flatten = nn.Flatten()  # -> c2 * 16
        self.fc1 = nn.Linear(c2 * 4 * 4, f1)
        self.fc2 = nn.Linear(f1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(self.flatten(x)))
        return self.fc2(x)


SPEC = ZooModel(
    name="lenet5",
    title="LeNet-5 (Caffe form as in Deep Compression; ReLU after conv1, conv2 and fc1)",
    build=LeNet5,
    epochs=6,
    lr=1e-3,
    doc="LeNet-5 (Caffe form, ReLU after convs) MNIST classifier; input [batch,1,28,28] = pixel/255.",
)


if __name__ == "__main__":
    sys.exit(zoo_main(SPEC, HERE, __doc__))
