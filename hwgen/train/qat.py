"""Quantization-aware training of a quantized graph, exported back to IR that sim.exact runs.

The formats stay those of the quantized graph (chosen by the quantize pass from calibration):
QAT trains latent float weights through fake quantization with a straight-through estimator,
starting from the float graph's weights when it is given (else from the quantized weights).
Export is `TorchExecutor.write_back` of the quantized graph: weights are their fake-quantized
values (formats kept), biases are rounded onto their accumulator grid with their width
re-derived. The exported graph's `sim.exact` output equals the executor's float64 quantized
forward bit for bit (the guarantee stated in `hwgen.sim.torch_exec`); `QATResult.check_exact`
re-checks it on data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hwgen.config import BuildConfig
from hwgen.errors import DataError, VerificationError
from hwgen.ir.graph import Graph
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import exact
from hwgen.sim.torch_exec import Mode, TorchExecutor, latent_from, mac_constants
from hwgen.train.loop import FitConfig, History, fit, predict


@dataclass
class QATResult:
    graph: Graph  #: the exported quantized graph (run it with sim.exact, build hardware from it)
    float_graph: Graph | None  #: the float graph with the trained latent weights (when one was given)
    executor: (
        TorchExecutor  #: the trained executor, left in float64 and eval mode: its forward equals sim.exact on `graph`
    )
    history: History

    def check_exact(self, x: np.ndarray, batch_size: int = 1000) -> int:
        """Samples whose float64 torch output differs from sim.exact on the exported graph (0 expected)."""
        ex = TorchExecutor(self.graph, Mode.QUANTIZED)
        got = predict(ex, x, batch_size)
        want = exact.decode_outputs(self.graph, exact.run(self.graph, x))[self.graph.outputs[0]]
        return int((got.reshape(len(x), -1) != want.reshape(len(x), -1)).any(axis=1).sum())


def _masks_for(quant_graph: Graph, float_graph: Graph | None, masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Masks keyed by the quantized graph's constant names; float-graph names are translated by node and slot."""
    out: dict[str, np.ndarray] = {}
    q_names = mac_constants(quant_graph)
    f_keys = {name: key for key, name in mac_constants(float_graph).items()} if float_graph is not None else {}
    for name, m in masks.items():
        if name in q_names.values():
            out[name] = m
        elif name in f_keys and f_keys[name] in q_names:
            out[q_names[f_keys[name]]] = m
        else:
            raise DataError(f"mask for {name!r}: no such constant in the quantized (or float) graph")
    return out


def qat(
    quant_graph: Graph,
    x: np.ndarray,
    y: np.ndarray,
    config: FitConfig | None = None,
    *,
    float_graph: Graph | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
    dtype: torch.dtype = torch.float32,
    **fit_kwargs: Any,
) -> QATResult:
    """Fine-tune `quant_graph` with fake quantization, then export it (see module docstring).

    `masks` may use the float or the quantized graph's constant names. `fit_kwargs` go to
    `hwgen.train.loop.fit` (extra_loss, val, on_step, ...). Training runs in `dtype` (float32 by
    default, for speed); export is computed in float64.
    """
    ex = TorchExecutor(
        quant_graph, Mode.QUANTIZED, masks=_masks_for(quant_graph, float_graph, masks or {}), dtype=dtype
    )
    if float_graph is not None:
        ex.load_latent(latent_from(quant_graph, float_graph))
    history = fit(ex, x, y, config or FitConfig(), **fit_kwargs)
    ex.double().eval()
    return QATResult(ex.write_back(), ex.write_back(float_graph) if float_graph is not None else None, ex, history)


def quantize_and_train(
    float_graph: Graph,
    calib_x: np.ndarray,
    build_config: BuildConfig,
    x: np.ndarray,
    y: np.ndarray,
    config: FitConfig | None = None,
    **kwargs: Any,
) -> QATResult:
    """PTQ (the quantize pass, calibrated on `calib_x`) followed by QAT from the float weights."""
    qg = quantize_fixed(float_graph, calib_x, build_config).graph
    return qat(qg, x, y, config, float_graph=float_graph, **kwargs)


def require_exact(result: QATResult, x: np.ndarray) -> None:
    """Raise VerificationError if the exported graph's sim.exact output differs from the torch forward."""
    bad = result.check_exact(x)
    if bad:
        raise VerificationError(
            f"QAT export of graph '{result.graph.name}': {bad} of {len(x)} samples differ between "
            "sim.torch (float64) and sim.exact; check that every accumulator stays below 2**53"
        )


__all__ = ["QATResult", "qat", "quantize_and_train", "require_exact"]
