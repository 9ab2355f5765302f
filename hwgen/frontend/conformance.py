"""Run the official ONNX backend node test cases through the importer and `sim.reference`.

The `onnx` wheel ships the generators of its node tests (`onnx.backend.test.case.node`). A case is
*inside the supported set* when every op in it is one hwgen imports and the importer accepts the
case (weights constant; batch axis first). Graph inputs after the first are taken as constants,
because hwgen compiles models with fixed weights. Every case inside the set must match the
expected outputs.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from hwgen.errors import HwgenError
from hwgen.frontend.onnx_import import CONVERTERS, import_onnx
from hwgen.sim import reference

#: relative/absolute tolerance: the expected outputs were computed in float32 by numpy
RTOL, ATOL = 1e-4, 1e-5
#: cases whose expected outputs onnx's generator writes by hand with 4 decimals
HAND_ROUNDED = {"test_averagepool_2d_ceil_last_window_starts_on_pad": 1e-4}


@dataclass(frozen=True)
class CaseResult:
    name: str
    ops: tuple[str, ...]
    status: str  #: "pass", "fail", "unsupported" (outside the supported set)
    detail: str = ""


def collect_cases() -> list:
    """All node test cases of the installed onnx (their generators print warnings; silence them)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return collect_testcases("")


def _freeze_inputs(model: onnx.ModelProto, inputs: list[np.ndarray]) -> onnx.ModelProto:
    """Turn graph inputs 1.. into initializers holding the test data."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    graph_inputs = list(m.graph.input)
    del m.graph.input[1:]
    for vi, arr in zip(graph_inputs[1:], inputs[1:], strict=False):
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), vi.name))
    return m


def run_case(case) -> CaseResult:
    ops = tuple(sorted({n.op_type for n in case.model.graph.node}))
    if not set(ops) <= set(CONVERTERS):
        return CaseResult(case.name, ops, "unsupported", "op outside hwgen's op set")
    inputs, expected = case.data_sets[0]
    if not inputs or np.asarray(inputs[0]).dtype.kind != "f":
        return CaseResult(case.name, ops, "unsupported", "first input is not a float activation")
    # first try every input as an activation (Add, Concat, ...), then inputs 1.. as constants (weights)
    feeds = {vi.name: np.asarray(a) for vi, a in zip(case.model.graph.input, inputs, strict=False)}
    try:
        if not all(a.dtype.kind == "f" and a.ndim >= 1 for a in feeds.values()):
            raise HwgenError("not all inputs are float tensors")
        g = import_onnx(case.model)
    except HwgenError:
        try:
            g = import_onnx(_freeze_inputs(case.model, list(inputs)))
        except HwgenError as e:
            return CaseResult(case.name, ops, "unsupported", str(e).splitlines()[0])
    try:
        outs = reference.run(g, {name: feeds[name] for name in g.inputs})
    except HwgenError as e:
        return CaseResult(case.name, ops, "fail", f"reference failed: {e}")
    for name, want in zip(g.outputs, expected, strict=False):
        got = outs[name]
        want = np.asarray(want)
        if got.shape != want.shape:
            return CaseResult(case.name, ops, "fail", f"output {name}: shape {got.shape} != {want.shape}")
        atol = HAND_ROUNDED.get(case.name, ATOL)
        if not np.allclose(got, want.astype(np.float64), rtol=RTOL, atol=atol, equal_nan=True):
            err = float(np.nanmax(np.abs(got - want)))
            return CaseResult(case.name, ops, "fail", f"output {name}: max abs error {err:.3g}")
    return CaseResult(case.name, ops, "pass")


def run_all() -> list[CaseResult]:
    return [run_case(c) for c in collect_cases() if c.kind == "node"]
