"""hwgen.hw.sparse: the sparse engine's plan (widths, encoding) and cycle model; its RTL emission.

The cycle model is held equal to RTL-measured cycles in rtl_tests/test_sparse_engine.py; here it is
checked against what the engine promises: cycles follow the non-zero weights of the non-zero
activations (the most loaded PE), never fewer than the input takes to arrive.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from hwgen.errors import ScheduleError
from hwgen.hw.plan import IntType, Requant, StreamPort
from hwgen.hw.rtl_emit import emit_rtl, sparse_context
from hwgen.hw.schedule import chain_schedule, plan_dense
from hwgen.hw.sparse import (
    DRAIN_STAGES,
    SPARSE_PIPELINE,
    chain_beats,
    dense_equivalent_cycles,
    plan_sparse_dense,
    replace_layers,
    sparse_run,
)
from hwgen.numerics import Rounding
from hwgen.passes.encode_sparse import decode_csc

U8, S8 = IntType(8, False), IntType(8, True)
RQ = Requant(8, Rounding.HALF_EVEN, -128, 127)


def sparse_matrix(rng: np.random.Generator, m: int, k: int, density: float) -> np.ndarray:
    w = rng.integers(-128, 128, size=(m, k))
    w[w == 0] = 1
    return np.where(rng.random((m, k)) < density, w, 0)


def test_widths_are_the_dense_engines() -> None:
    rng = np.random.default_rng(0)
    w = sparse_matrix(rng, 12, 30, 0.2)
    w[0] = 127  # a full row reaches the accumulator's end
    b = rng.integers(-999, 999, size=12)
    sp = plan_sparse_dense("fc", "/fc", w, b, U8, S8, RQ, pes=5, index_bits=3)
    d = plan_dense("fc", "/fc", w, b, U8, S8, RQ, pe=1, simd=1)
    assert (sp.w, sp.bias, sp.acc, sp.prod) == (d.w, d.bias, d.acc, d.prod)
    assert np.array_equal(decode_csc(sp.csc), w) and sp.csc.pes == 5 and sp.rows == 3


def _one_hot_row(k: int, j: int, value: int = 1) -> np.ndarray:
    x = np.zeros((1, k), dtype=np.int64)
    x[0, j] = value
    return x


def test_zero_activations_cost_nothing() -> None:
    """All-zero input: the drain starts the edge after the last element, whatever the weights."""
    k, m = 50, 8
    sp = plan_sparse_dense("fc", "/fc", np.ones((m, k), dtype=np.int64), np.zeros(m, dtype=np.int64), U8, S8, RQ, pes=2)
    r = sparse_run(sp, np.zeros((1, k), dtype=np.int64))
    assert r.drain_start[0] == k  # last element at edge k-1
    assert r.latencies[0] == k + m + DRAIN_STAGES
    assert r.pe_cycles[0].tolist() == [0, 0]


def test_cycles_follow_the_most_loaded_pe() -> None:
    """One activation at the end of the vector; PE 0 holds 30 entries of its column, PE 1 one."""
    k, m = 10, 60
    w = np.zeros((m, k), dtype=np.int64)
    w[0::2, 9] = 3  # PE 0 (even rows): 30 entries in column 9
    w[1, 9] = 5  # PE 1: one entry
    sp = plan_sparse_dense("fc", "/fc", w, np.zeros(m, dtype=np.int64), U8, S8, RQ, pes=2, index_bits=4)
    r = sparse_run(sp, _one_hot_row(k, 9))
    # loaded at edge (k-1)+1, entries issue at the next 30 edges, the last product lands
    # SPARSE_PIPELINE edges later and the drain starts the edge after
    assert r.drain_start[0] == k + 30 + SPARSE_PIPELINE + 1
    assert r.pe_cycles[0].tolist() == [30, 1]


def test_pes_overlap_columns_independently() -> None:
    """PE 0 is loaded in column 0, PE 1 in column 1: the work overlaps (max, not sum, over PEs)."""
    k, m = 2, 40
    w = np.zeros((m, k), dtype=np.int64)
    w[0::2, 0] = 1  # 20 entries for PE 0 in column 0
    w[1::2, 1] = 1  # 20 entries for PE 1 in column 1
    sp = plan_sparse_dense("fc", "/fc", w, np.zeros(m, dtype=np.int64), U8, S8, RQ, pes=2, index_bits=4)
    r = sparse_run(sp, np.ones((1, k), dtype=np.int64))
    lockstep = 20 + 20  # a design that waits for every PE per column
    assert r.drain_start[0] - 1 < lockstep + SPARSE_PIPELINE + 1
    assert r.pe_cycles[0].tolist() == [21, 21]  # each: 20 entries + one cycle for its empty column


def test_worst_case_bounds_every_input() -> None:
    rng = np.random.default_rng(3)
    sp = plan_sparse_dense(
        "fc", "/fc", sparse_matrix(rng, 20, 64, 0.15), np.zeros(20, dtype=np.int64), U8, S8, RQ, pes=3
    )
    x = np.where(rng.random((40, 64)) < 0.5, rng.integers(1, 256, size=(40, 64)), 0)
    lat = [int(sparse_run(sp, x[i : i + 1]).latencies[0]) for i in range(40)]
    assert max(lat) <= sp.latency and sp.latency == int(sparse_run(sp, np.ones((1, 64))).latencies[0])
    # a stream of vectors: each starts loading the edge after the previous drain starts
    run = sparse_run(sp, x[:5])
    assert (run.in_edges[1:, 0] == run.drain_start[:-1] + 1).all()


def test_ninety_percent_sparsity_model_beats_a_sixth_of_dense() -> None:
    """The issue's floor in the model (the RTL test measures it): 784 -> 300, 4 PEs, no zero inputs."""
    rng = np.random.default_rng(4)
    w = sparse_matrix(rng, 300, 784, 0.1)
    sp = plan_sparse_dense("fc", "/fc", w, np.zeros(300, dtype=np.int64), U8, S8, RQ, pes=4)
    assert 6 * sp.latency <= dense_equivalent_cycles(784, 300, 4)


def test_refusals() -> None:
    w = np.ones((4, 6), dtype=np.int64)
    with pytest.raises(ScheduleError, match="PEs"):
        plan_sparse_dense("fc", "/fc", w, np.zeros(4, dtype=np.int64), U8, S8, RQ, pes=5)
    with pytest.raises(ScheduleError, match="do not match"):
        plan_sparse_dense("fc", "/fc", w, np.zeros(3, dtype=np.int64), U8, S8, RQ, pes=2)


def _schedule(sp):
    d = plan_dense(sp.name, sp.source, sp.weights, sp.biases, sp.inp, sp.out, sp.requant, pe=1, simd=1)
    s = chain_schedule(
        "top",
        "m",
        [d],
        StreamPort("x", "x", d.inp, d.in_features, 0, (d.in_features,)),
        StreamPort("y", "y", d.out, d.out_features, 0, (d.out_features,)),
    )
    return replace_layers(s, {0: sp})


def test_replace_layers_times_the_chain_worst_case() -> None:
    rng = np.random.default_rng(5)
    sp = plan_sparse_dense("fc", "/fc", sparse_matrix(rng, 6, 9, 0.3), np.zeros(6, dtype=np.int64), U8, S8, RQ, pes=2)
    s = _schedule(sp)
    assert s.latency == sp.latency and s.ii == sp.ii and s.layers[0].inputs == ("x",)
    x = rng.integers(0, 3, size=9)
    assert chain_beats(s, x)[-1] == sparse_run(sp, x[None]).latencies[0]
    other = plan_sparse_dense(
        "fc", "/fc", np.ones((5, 9), dtype=np.int64), np.zeros(5, dtype=np.int64), U8, S8, RQ, pes=1
    )
    with pytest.raises(ScheduleError, match="same streams"):
        replace_layers(s, {0: other})


def test_rtl_emission_roms_and_refusal(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    w = sparse_matrix(rng, 7, 12, 0.3)
    sp = plan_sparse_dense("fc", "/fc */ evil", w, rng.integers(-9, 9, size=7), S8, S8, RQ, pes=3, index_bits=2)
    ctx = sparse_context(sp, "top", "top_hwgen_fifo")
    assert [len(b["ent_words"]) for b in ctx["pe_blocks"]] == [max(1, c.entries) for c in sp.csc.pe_columns]
    assert all(len(b["col_words"]) == 12 and len(b["bias_words"]) == sp.rows for b in ctx["pe_blocks"])
    files = emit_rtl(_schedule(sp), tmp_path / "rtl")
    text = (tmp_path / "rtl" / "top_fc.sv").read_text()
    assert "*/ evil" not in text and "module top_fc (" in text
    assert text.count("_ent_rom[") >= sp.csc.entries
    assert any(f.name == "top.sv" for f in files)
    corrupt = dataclasses.replace(sp, weights=sp.weights + 1)
    with pytest.raises(ScheduleError, match="does not decode"):
        sparse_context(corrupt, "top", "top_hwgen_fifo")
