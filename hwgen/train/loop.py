"""A generic fine-tuning loop: numpy arrays in, a torch module trained, a history out.

Used by QAT, pruning fine-tuning, centroid fine-tuning and distillation: the task loss is a
parameter, and `extra_loss` adds terms that need the model, the batch or its outputs (an L1
penalty on BatchNorm gammas, a distillation loss against a teacher). `on_step` runs after every
optimizer step (e.g. to re-apply a pruning schedule's masks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from hwgen.errors import ConfigError, DataError

#: extra_loss(model, x_batch, outputs, y_batch) -> a scalar added to the task loss
ExtraLoss = Callable[[torch.nn.Module, Tensor, Tensor, Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 1  #: passes over the training data
    batch_size: int = 128
    lr: float = 1e-3  #: initial learning rate
    optimizer: str = "adam"  #: "adam" or "sgd" (with `momentum`)
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"  #: "cosine" (to 0 over all steps) or "constant"
    seed: int = 0  #: shuffling and torch's RNG
    eval_batch_size: int = 1000
    progress: bool = True  #: a rich progress bar with loss and accuracy

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"fit: epochs >= 0 and batch sizes >= 1 needed, got {self}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"fit: optimizer {self.optimizer!r} is not 'adam' or 'sgd'")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"fit: schedule {self.schedule!r} is not 'cosine' or 'constant'")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"fit: lr must be a positive number, got {self.lr}")


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float  #: mean total loss over the epoch's batches
    accuracy: float | None  #: running top-1 on the training batches (None for soft targets)
    val_accuracy: float | None
    lr: float  #: learning rate at the end of the epoch
    seconds: float


@dataclass
class History:
    epochs: list[EpochStats] = field(default_factory=list)

    @property
    def last(self) -> EpochStats | None:
        return self.epochs[-1] if self.epochs else None


def _dtype(model: torch.nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _check(x: np.ndarray, y: np.ndarray, what: str) -> None:
    if len(x) != len(y):
        raise DataError(f"{what}: {len(x)} samples but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{what}: no samples")


def predict(model: torch.nn.Module, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Outputs of `model` in eval mode, batch by batch (the training mode is restored after)."""
    was_training = model.training
    model.eval()
    dtype = _dtype(model)
    outs = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                outs.append(model(torch.as_tensor(np.asarray(x[i : i + batch_size])).to(dtype)).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0,))


def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` on (x, y)."""
    _check(x, y, "evaluate")
    out = predict(model, x, batch_size)
    return float((out.reshape(len(x), -1).argmax(1) == np.asarray(y)).mean())


def make_optimizer(params: Iterable[torch.nn.Parameter], config: FitConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def fit(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    config: FitConfig | None = None,
    *,
    loss_fn: LossFn = torch.nn.functional.cross_entropy,
    extra_loss: ExtraLoss | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    params: Iterable[torch.nn.Parameter] | None = None,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
    on_epoch_end: Callable[[EpochStats, torch.nn.Module], None] | None = None,
    console: Console | None = None,
) -> History:
    """Train `model` on (x, y) with mini-batches; returns the per-epoch history.

    `params` defaults to every parameter of `model`. Integer labels give a running accuracy;
    other targets (e.g. soft labels) leave it None.
    """
    config = config or FitConfig()
    _check(x, y, "fit")
    if val is not None:
        _check(*val, "fit (validation data)")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    opt = make_optimizer(model.parameters() if params is None else params, config)
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    total = max(1, steps_per_epoch * config.epochs)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        if config.schedule == "cosine"
        else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    )
    dtype = _dtype(model)
    labels = np.issubdtype(np.asarray(y).dtype, np.integer)
    history = History()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not config.progress,
    )
    step = 0
    with progress:
        for epoch in range(config.epochs):
            t0 = time.perf_counter()
            task = progress.add_task(f"epoch {epoch + 1}/{config.epochs}", total=steps_per_epoch, loss=0.0, acc="-")
            model.train()
            order = rng.permutation(len(x))
            loss_sum, correct, seen = 0.0, 0, 0
            for b in range(steps_per_epoch):
                idx = order[b * config.batch_size : (b + 1) * config.batch_size]
                xb = torch.as_tensor(np.asarray(x[idx])).to(dtype)
                yb = torch.as_tensor(np.asarray(y[idx]))
                if not labels:
                    yb = yb.to(dtype)
                out = model(xb)
                loss = loss_fn(out, yb)
                if extra_loss is not None:
                    loss = loss + extra_loss(model, xb, out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if on_step is not None:
                    on_step(step, model)
                loss_sum += float(loss.detach()) * len(idx)
                seen += len(idx)
                if labels:
                    correct += int((out.detach().reshape(len(idx), -1).argmax(1) == yb).sum())
                acc = f"{correct / seen:.4f}" if labels else "-"
                progress.update(task, advance=1, loss=loss_sum / seen, acc=acc)
            val_acc = evaluate(model, val[0], val[1], config.eval_batch_size) if val is not None else None
            stats = EpochStats(
                epoch=epoch + 1,
                loss=loss_sum / seen,
                accuracy=correct / seen if labels else None,
                val_accuracy=val_acc,
                lr=float(opt.param_groups[0]["lr"]),
                seconds=time.perf_counter() - t0,
            )
            if val_acc is not None:
                progress.update(task, description=f"epoch {epoch + 1}/{config.epochs} val {val_acc:.4f}")
            history.epochs.append(stats)
            if on_epoch_end is not None:
                on_epoch_end(stats, model)
    model.eval()
    return history


__all__ = ["EpochStats", "ExtraLoss", "FitConfig", "History", "evaluate", "fit", "make_optimizer", "predict"]
