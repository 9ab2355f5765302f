"""The HLS softmax engine in C simulation (g++): bit-exact against the golden model's integer softmax."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "rtl_tests"))  # the shared softmax designs
from softmax_cases import CASES, MAX_CASE, Case, vectors

from hwgen.hw.csim import run_csim
from hwgen.hw.hls_emit import emit_hls
from hwgen.hw.softmax import standalone_schedule

pytestmark = pytest.mark.gxx


def _csim(case: Case, tmp_path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    sched = standalone_schedule(case.plan(), "smtop")
    x, want = vectors(case)
    emit_hls(sched, tmp_path / "hls", inputs=x, expected=want)
    text = (tmp_path / "hls" / "sm.h").read_text()
    got = run_csim(tmp_path / "hls", x, tmp_path / "work").outputs
    return got, want, text


def _assert_equal(name: str, got: np.ndarray, want: np.ndarray) -> None:
    bad = np.argwhere(got != want)
    assert bad.size == 0, (
        f"{name}: {len(bad)} mismatching codes, first at vector {bad[0][0]} element {bad[0][1]}: "
        f"expected {want[tuple(bad[0])]}, got {got[tuple(bad[0])]}"
    )


@pytest.mark.parametrize("name", list(CASES))
def test_csim_bit_exact(name: str, tmp_path: Path) -> None:
    got, want, text = _csim(CASES[name], tmp_path)
    _assert_equal(name, got, want)
    assert "// sm (ONNX '/head/sm/Softmax'): softmax over" in text
    assert "#pragma HLS PIPELINE II=1" in text


def test_csim_longest_vector_all_equal(tmp_path: Path) -> None:
    """65,536 equal elements: S = 2**32 needs the sum type's 33rd bit; every output is round(128 / 65536) = 0."""
    got, want, _ = _csim(MAX_CASE, tmp_path)
    assert MAX_CASE.plan().sum.bits == 33
    _assert_equal("max length", got, want)
    assert np.all(want[0] == 0) and want[3].max() > 0  # all equal -> 0; one dominant element -> its share
