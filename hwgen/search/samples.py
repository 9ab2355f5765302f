"""Single-engine designs for calibrating the cost model: one Gemm or one Conv, built by hwgen itself.

Each sample is a small ONNX model made here (random weights, fixed seed), quantized and scheduled
with the real build path (`hwgen.build.compile_model`), so the features the cost model reads are
exactly what a real build plans, and the Verilog Yosys synthesizes is what a real build emits.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwgen.config import BuildConfig, LayerConfig, QuantConfig
from hwgen.hw.plan import Schedule

LAYER = "layer0"  #: the ONNX node name of the one layer (its [layers.*] key)


@dataclass(frozen=True)
class Sample:
    """One calibration design: a dense (in -> out) or conv (c x hw x hw, k x k -> oc) layer."""

    kind: str  #: "dense" | "conv"
    dims: tuple[int, ...]  #: dense: (in, out); conv: (c, hw, oc, k)
    weight_bits: int
    act_bits: int
    reuse: int
    seed: int = 0
    signed_input: bool = True  #: False: non-negative calibration data, so the input codes are unsigned

    @property
    def key(self) -> str:
        d = "x".join(map(str, self.dims))
        sign = "" if self.signed_input else "u"
        return f"{self.kind}_{d}_w{self.weight_bits}a{self.act_bits}{sign}_r{self.reuse}_s{self.seed}"


def _model(sample: Sample) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    rng = np.random.default_rng(sample.seed)
    if sample.kind == "dense":
        k, m = sample.dims
        w = rng.standard_normal((m, k)).astype(np.float32) / np.sqrt(k)
        b = rng.standard_normal(m).astype(np.float32) * 0.1
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name=LAYER, transB=1)
        shape_in: tuple[int, ...] = (k,)
        shape_out: list[int | str] = ["N", m]
    elif sample.kind == "conv":
        c, hw, oc, kk = sample.dims
        w = rng.standard_normal((oc, c, kk, kk)).astype(np.float32) / np.sqrt(c * kk * kk)
        b = rng.standard_normal(oc).astype(np.float32) * 0.1
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name=LAYER, kernel_shape=[kk, kk])
        shape_in = (c, hw, hw)
        shape_out = ["N", oc, hw - kk + 1, hw - kk + 1]
    else:
        raise ValueError(f"sample kind {sample.kind!r}: use 'dense' or 'conv'")
    graph = helper.make_graph(
        [node],
        sample.key,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model, shape_in


def sample_config(sample: Sample) -> BuildConfig:
    return BuildConfig(
        quantize=QuantConfig(weight_bits=sample.weight_bits, act_bits=sample.act_bits),
        layers={LAYER: LayerConfig(reuse=sample.reuse)},
    )


def sample_schedule(sample: Sample, work: Path | None = None) -> Schedule:
    """Quantize and schedule the sample's one-layer model (calibrated on seeded normal data)."""
    from hwgen.build import compile_model

    model, shape_in = _model(sample)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        onnx_path = Path(tmp) / f"{sample.key}.onnx"
        onnx.save(model, onnx_path)
        calib = Path(tmp) / "calib.npz"
        x = np.random.default_rng(sample.seed + 1).standard_normal((64, *shape_in)).astype(np.float32)
        if not sample.signed_input:
            x = np.abs(x)
        np.savez(calib, x=x)
        _g, _qg, sched, _report = compile_model(onnx_path, sample_config(sample), calib, lambda step: None)
    return sched


__all__ = ["LAYER", "Sample", "sample_config", "sample_schedule"]
