"""The generic fine-tuning loop: it learns, reports history, honours extra losses and hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.console import Console

from hwgen.errors import ConfigError, DataError
from hwgen.train.loop import FitConfig, evaluate, fit, predict


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _blobs(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 2-D: separable, so a few epochs reach high accuracy."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    return (centers[y] + rng.normal(0, 0.5, (n, 2))).astype(np.float32), y.astype(np.int64)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def test_fit_learns_and_records_history() -> None:
    x, y = _blobs()
    model = _net()
    before = evaluate(model, x, y)
    cfg = FitConfig(epochs=4, batch_size=32, lr=1e-2, progress=False)
    hist = fit(model, x, y, cfg, val=_blobs(200, seed=1))
    assert [e.epoch for e in hist.epochs] == [1, 2, 3, 4]
    assert hist.epochs[-1].loss < hist.epochs[0].loss
    assert hist.last is not None and hist.last.val_accuracy is not None and hist.last.val_accuracy > 0.95
    assert before < 0.8
    assert hist.last.lr == pytest.approx(0.0, abs=1e-9)  # cosine schedule ends at zero
    assert not model.training


def test_fit_is_deterministic_for_a_seed() -> None:
    x, y = _blobs()
    cfg = FitConfig(epochs=2, batch_size=50, lr=1e-2, progress=False, seed=3)
    a, b = _net(), _net()
    fit(a, x, y, cfg)
    fit(b, x, y, cfg)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_extra_loss_and_hooks_are_called() -> None:
    """An L1 penalty through extra_loss shrinks the weights; on_step/on_epoch_end see every step/epoch."""
    x, y = _blobs()
    cfg = FitConfig(epochs=3, batch_size=100, lr=1e-2, progress=False)
    steps: list[int] = []
    epochs: list[int] = []

    def l1(model: torch.nn.Module, xb: torch.Tensor, out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        assert out.shape == (len(xb), 3) and len(yb) == len(xb)
        return 1.0 * model[0].weight.abs().sum()

    plain, sparse = _net(), _net()
    fit(plain, x, y, cfg)
    fit(
        sparse,
        x,
        y,
        cfg,
        extra_loss=l1,
        on_step=lambda s, m: steps.append(s),
        on_epoch_end=lambda e, m: epochs.append(e.epoch),
    )
    assert steps == list(range(1, 13)) and epochs == [1, 2, 3]
    assert sparse[0].weight.abs().sum() < 0.85 * plain[0].weight.abs().sum()


def test_soft_targets_and_params_subset() -> None:
    """Soft labels (distillation-style loss) give no accuracy; frozen parameters do not move."""
    x, y = _blobs(120)
    soft = np.eye(3, dtype=np.float32)[y] * 0.9 + 0.1 / 3
    model = _net()
    frozen = model[0].weight.detach().clone()
    hist = fit(
        model, x, soft, FitConfig(epochs=1, batch_size=40, progress=False),
        loss_fn=lambda out, t: torch.nn.functional.cross_entropy(out, t), params=model[2].parameters(),
    )  # fmt: skip
    assert hist.epochs[0].accuracy is None
    assert torch.equal(model[0].weight, frozen)


def test_progress_bar_shows_loss_and_accuracy() -> None:
    x, y = _blobs(64)
    console = Console(record=True, width=120, force_terminal=False)
    fit(_net(), x, y, FitConfig(epochs=1, batch_size=32, progress=True), console=console)
    text = console.export_text()
    assert "epoch 1/1" in text and "loss" in text and "acc 0." in text


def test_predict_restores_training_mode_and_batches() -> None:
    x, _ = _blobs(10)
    model = _net().train()
    out = predict(model, x, batch_size=3)
    assert out.shape == (10, 3) and model.training
    # float32 sums of a different batch split: agree to rounding
    np.testing.assert_allclose(out, model(torch.as_tensor(x)).detach().numpy(), rtol=0, atol=1e-6)


def test_bad_arguments_are_user_errors() -> None:
    x, y = _blobs(10)
    with pytest.raises(DataError, match="10 samples but 9 labels"):
        fit(_net(), x, y[:9], FitConfig(progress=False))
    with pytest.raises(ConfigError, match="optimizer"):
        FitConfig(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="lr"):
        FitConfig(lr=0.0)
