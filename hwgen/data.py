"""Data files the CLI takes (`--calib`, `--data`): `.npz` with `x` (batch first) and optional `y`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from hwgen.errors import DataError
from hwgen.ir.graph import Graph


def load_data(path: str | Path, graph: Graph) -> tuple[np.ndarray, np.ndarray | None]:
    """x (float64, shape [N, *input shape]) and y (int64 labels or None), validated against `graph`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such data file")
    try:
        with np.load(p, allow_pickle=False) as f:
            if "x" not in f.files:
                raise DataError(
                    f"{p}: no array named 'x' (found {sorted(f.files)}); save inputs as x=..., labels as y=..."
                )
            x = np.asarray(f["x"])
            y = np.asarray(f["y"]) if "y" in f.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{p}: not a readable .npz file ({type(e).__name__}: {e})") from e
    shape = graph.value(graph.inputs[0]).type.shape
    if x.ndim == len(shape) and x.shape == shape:
        x = x[None]  # a single sample without its batch axis
    if x.shape[1:] != shape:
        raise DataError(f"{p}: x has shape {list(x.shape)}; the model takes [N, {', '.join(map(str, shape))}]")
    if x.shape[0] == 0:
        raise DataError(f"{p}: x holds no samples")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{p}: x must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{p}: x contains NaN or infinity")
    if y is not None:
        y = y.reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{p}: y has {y.shape[0]} labels for {x.shape[0]} samples")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{p}: y must hold integer class labels, got dtype {y.dtype}")
        y = y.astype(np.int64)
    return x, y
