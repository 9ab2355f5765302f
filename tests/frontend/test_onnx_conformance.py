"""ONNX backend node tests: every case inside hwgen's supported set passes through import + sim.reference."""

from __future__ import annotations

from collections import Counter

import pytest

from hwgen.frontend.conformance import run_all


@pytest.fixture(scope="module")
def results():
    return run_all()


def test_every_supported_case_passes(results) -> None:
    failed = [f"{r.name}: {r.detail}" for r in results if r.status == "fail"]
    assert not failed, "\n".join(failed)


def test_core_ops_are_exercised(results) -> None:
    """Guard against the supported set silently shrinking (e.g. an importer regression)."""
    passed = Counter(op for r in results if r.status == "pass" for op in r.ops)
    for op in (
        "Conv",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Gemm",
        "MatMul",
        "Relu",
        "Softmax",
        "Concat",
        "Pad",
        "Reshape",
        "Transpose",
        "Sigmoid",
        "Tanh",
        "LeakyRelu",
        "HardSigmoid",
        "HardSwish",
        "BatchNormalization",
        "Flatten",
        "Clip",
        "Add",
    ):
        assert passed[op] >= 1, f"no passing conformance case for {op}"
