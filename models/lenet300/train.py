"""Train LeNet-300-100 on MNIST and export the bundled ``lenet300.onnx`` plus its data files.

This is hwgen's reference "real" model: a small fully connected network whose accuracy is a
meaningful check of the compiler's quantization and code generation. Training, export and checks are
shared by the zoo (``models/zoo.py``): offline, seeded and deterministic on CPU.

Outputs (next to this file unless ``--out-dir`` is given):

* ``lenet300.onnx``       input ``input`` float32 [batch, 1, 28, 28] in [0, 1], output ``logits`` [batch, 10]
* ``mnist_test_1k.npz``   first 1000 MNIST test images (``x``, ``y``) for verification (shared by the zoo)
* ``mnist_calib.npz``     512 seeded-random MNIST training images (``x``, ``y``) for calibration (shared)
* ``metrics.json``        full 10k test accuracy (torch and onnxruntime), epochs, seed, versions, time

Usage::

    .venv/bin/python models/lenet300/train.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hwgen.datasets import load_mnist, save_npz
from models.zoo import N_VERIFY, ZooModel, zoo_main

HERE = Path(__file__).resolve().parent
N_CALIB = 512


class LeNet300(nn.Module):
    """LeNet-300-100: Flatten -> 784x300 -> ReLU -> 300x100 -> ReLU -> 100x10 (logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def write_data_files(out: Path, seed: int) -> None:
    """The verification and calibration sets every zoo model shares."""
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    save_npz(out / "mnist_test_1k.npz", x_test[:N_VERIFY], y_test[:N_VERIFY])
    calib_idx = np.sort(np.random.default_rng(seed).choice(len(x_train), size=N_CALIB, replace=False))
    save_npz(out / "mnist_calib.npz", x_train[calib_idx], y_train[calib_idx])
    for name in ("mnist_test_1k.npz", "mnist_calib.npz"):
        print(f"      {out / name} {(out / name).stat().st_size / 1e6:.2f} MB")


SPEC = ZooModel(
    name="lenet300",
    title="LeNet-300-100",
    build=LeNet300,
    epochs=20,
    lr=1e-3,
    doc="LeNet-300-100 MNIST classifier; input float32 [batch,1,28,28] = pixel/255.",
    extra_metrics={"calib_indices_seed": 0},
    after=write_data_files,
)


if __name__ == "__main__":
    sys.exit(zoo_main(SPEC, HERE, __doc__))
