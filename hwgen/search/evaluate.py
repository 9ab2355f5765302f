"""One search point: PTQ accuracy (golden model) and estimated hardware cost of a BuildConfig.

The float graph is imported and canonicalized once; each evaluation quantizes it with the
config (`quantize_fixed`, the build's own PTQ), runs the quantized graph on the validation
subset and schedules it for the cost model. `engine="exact"` runs the golden model
(`hwgen.sim.exact`); `engine="torch"` runs `hwgen.sim.torch_exec` in float64, which its module
documents (and tests/search/test_search.py checks) to be bit-identical to it, about 3x faster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.config import BuildConfig
from hwgen.data import load_data
from hwgen.errors import DataError
from hwgen.frontend import import_onnx
from hwgen.hw.lower import schedule_graph
from hwgen.ir.graph import Graph
from hwgen.passes.base import run_pipeline
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.search.cost import CostModel
from hwgen.sim import exact


def top1(graph: Graph, x: np.ndarray, y: np.ndarray, engine: str = "exact") -> float:
    """Top-1 accuracy of a quantized graph on (x, y)."""
    if engine == "torch":
        import torch

        from hwgen.sim.torch_exec import Mode, TorchExecutor

        ex = TorchExecutor(graph, Mode.QUANTIZED, dtype=torch.float64).eval()
        with torch.no_grad():
            out = ex(x).numpy()
    elif engine == "exact":
        out = exact.run(graph, x)[graph.outputs[0]]
    else:
        raise ValueError(f"accuracy engine {engine!r}: use 'exact' or 'torch'")
    return float((out.reshape(len(x), -1).argmax(1) == y).mean())


@dataclass
class Evaluator:
    """Accuracy and cost of configurations of one model (see module docstring)."""

    graph: Graph  #: canonical float graph
    x_calib: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    base: BuildConfig = field(default_factory=BuildConfig)
    cost_model: CostModel = field(default_factory=CostModel.load)
    engine: str = "exact"

    @classmethod
    def from_files(
        cls,
        model: Path,
        data: Path,
        *,
        calib: int = 128,
        val: int = 500,
        base: BuildConfig | None = None,
        engine: str = "exact",
    ) -> Evaluator:
        """Calibrate on the first `calib` samples of `data`, validate on the next `val` (labels needed)."""
        g = import_onnx(Path(model), name=Path(model).stem)
        g, _ = run_pipeline(g, [canonicalize])
        x, y = load_data(Path(data), g)
        if y is None:
            raise DataError(f"{data}: the search needs labels ('y') to measure accuracy")
        if len(x) < calib + 1:
            raise DataError(f"{data}: {len(x)} samples; need more than the {calib} used for calibration")
        return cls(g, x[:calib], x[calib : calib + val], y[calib : calib + val], base or BuildConfig(), engine=engine)

    def evaluate(self, config: BuildConfig) -> dict[str, Any]:
        q = quantize_fixed(self.graph, self.x_calib, config).graph
        acc = top1(q, self.x_val, self.y_val, self.engine)
        est = self.cost_model.schedule(schedule_graph(q, config))
        return {"accuracy": acc, **est["total"], "latency": est["latency"], "ii": est["ii"], "layers": est["layers"]}


__all__ = ["Evaluator", "top1"]
