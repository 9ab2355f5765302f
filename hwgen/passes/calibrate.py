"""Calibration: observe activation ranges on real data with the float reference executor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwgen.config import Calibration
from hwgen.ir.graph import Graph
from hwgen.sim import reference


@dataclass(frozen=True)
class Range:
    """What calibration saw of one value: its extremes and the |x| bound it chose."""

    lo: float
    hi: float
    bound: float  #: max |x| (minmax) or the percentile of |x|


def calibrate(graph: Graph, x: np.ndarray, method: Calibration, percentile: float = 99.99) -> dict[str, Range]:
    """Ranges of every activation value (graph inputs included) over the batch `x`."""
    env = reference.run(graph, x, keep=True)
    out: dict[str, Range] = {}
    for name, arr in env.items():
        if graph.values[name].is_const:
            continue
        a = np.asarray(arr, dtype=np.float64)
        mag = np.abs(a)
        if method is Calibration.PERCENTILE:
            bound = float(np.percentile(mag, percentile))
        else:
            bound = float(mag.max()) if mag.size else 0.0
        out[name] = Range(float(a.min()), float(a.max()), bound)
    return out
