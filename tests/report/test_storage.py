"""What the device stores per layer (report.json `compression`, `sparse.storage`, the resource estimate),
checked against counts made here from the CSC rules (hwgen.passes.encode_sparse's docstring) and the
Huffman bound, not from the code under test."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
from conftest import make_mlp_onnx

from hwgen.build import build
from hwgen.config import config_from_dict
from hwgen.hw.huffman import sparse_rtl_context
from hwgen.hw.plan import DensePlan, IntType, Requant
from hwgen.hw.resources import engine_resources
from hwgen.hw.sparse import SparseDensePlan, plan_sparse_dense, storage
from hwgen.numerics import Rounding

U8, S8 = IntType(8, False), IntType(8, True)
RQ = Requant(8, Rounding.HALF_EVEN, -128, 127)


def tiny_weights() -> np.ndarray:
    """8x12 codes: long zero runs down some columns (padding with 2-bit indices), a skewed value mix."""
    rng = np.random.default_rng(4)
    w = np.where(rng.random((8, 12)) < 0.35, rng.choice([3, 3, 3, 3, -7, -7, 12, 40], size=(8, 12)), 0)
    w[:, 0] = 0
    w[7, 0] = 5  # PE 1's rows 1, 3, 5, 7: local row 3 after 3 zeros
    w[:, 1] = 0
    w[6, 1] = -2  # PE 0's local row 3
    w[0, 2], w[1, 2] = 0, 0
    return w.astype(np.int64)


def csc_count(w: np.ndarray, pes: int, index_bits: int) -> dict[str, object]:
    """Per PE (rows p, p+P, ...): the stored entries' values (padding zeros as 0) and the entries of each
    column. A gap of more zero rows than 2**index_bits - 1 gets a padding zero that skips 2**index_bits rows."""
    max_zeros = (1 << index_bits) - 1
    values: list[list[int]] = []
    counts: list[list[int]] = []
    for p in range(pes):
        local = w[p::pes]
        vals, cols = [], []
        for j in range(w.shape[1]):
            n, prev = 0, -1
            for r in np.flatnonzero(local[:, j]):
                gap = r - prev - 1
                while gap > max_zeros:
                    vals.append(0)
                    n += 1
                    gap -= max_zeros + 1
                vals.append(int(local[r, j]))
                n += 1
                prev = r
            cols.append(n)
        values.append(vals)
        counts.append(cols)
    return {"values": values, "counts": counts}


def huffman_cost(freqs: list[int]) -> int:
    """Bits of an optimal prefix code for these symbol counts (sum of the merged weights)."""
    heap = [f for f in freqs if f > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def _plan(coding: str, pes: int = 2, index_bits: int = 1) -> SparseDensePlan:
    w = tiny_weights()
    return plan_sparse_dense(
        "fc", "/fc", w, np.arange(w.shape[0]) - 3, U8, S8, RQ, pes=pes, index_bits=index_bits, weight_coding=coding
    )


def _column_bits(count: dict[str, object]) -> tuple[int, int]:
    """(first-entry bits, entry-count bits) of a column ROM word: wide enough for the largest PE."""
    entries = max(len(v) for v in count["values"])  # type: ignore[union-attr]
    per_col = max(max(c) for c in count["counts"])  # type: ignore[union-attr]
    return max(1, entries.bit_length()), max(1, per_col.bit_length())


def test_plain_sparse_parts_match_the_csc_count() -> None:
    plan = _plan("plain")
    c = csc_count(plan.weights, 2, 1)
    vals = [v for pe in c["values"] for v in pe]  # type: ignore[union-attr]
    pad = vals.count(0)
    assert pad >= 2  # the layer exercises padding
    ea, cnt = _column_bits(c)
    wb = plan.w.bits  # the weight codes' width (the dense engine's for these weights)
    expected = {
        "values": (len(vals) - pad) * wb,
        "indices": (len(vals) - pad) * 1,
        "padding": pad * (wb + 1),
        "column_pointers": 2 * 12 * (ea + cnt),
    }
    st = storage(plan)
    assert st["parts"] == expected
    assert st["total_bits"] == sum(expected.values())


def test_huffman_sparse_parts_match_the_csc_count_and_the_optimal_code() -> None:
    plan = _plan("huffman")
    hw = plan.huffman
    assert hw is not None
    c = csc_count(plan.weights, 2, 1)
    vals = [v for pe in c["values"] for v in pe]  # type: ignore[union-attr]
    pad = vals.count(0)
    _, freq = np.unique(vals, return_counts=True)
    parts = storage(plan)["parts"]
    assert pad >= 2 and parts["indices"] == (len(vals) - pad) * 1
    # every coded entry (padding zeros too) costs what an optimal code costs: codes + padding's codes
    assert parts["huffman_codes"] + parts["padding"] - pad * 1 == huffman_cost(freq.tolist())
    # the stream ROMs as the RTL prints them (two banks per PE), beyond the payload
    wb = plan.w.bits
    rtl = sparse_rtl_context(hw, wb)
    rom_bits = sum(pe["words"] for pe in rtl["pes"]) * rtl["W"]
    assert parts["stream_fill"] == rom_bits - sum(pe["payload_bits"] for pe in rtl["pes"])
    # limits (L-1 of L bits), rank offsets (L of ceil(log2(symbols)) bits), rank -> weight code
    n_sym = len(freq)
    window = rtl["L"]
    assert parts["decoder_tables"] == (window - 1) * window + window * math.ceil(math.log2(n_sym)) + n_sym * wb
    ea, cnt = _column_bits(c)
    bit_start = max(1, math.ceil(math.log2(max(pe["words"] for pe in rtl["pes"])))) + (rtl["W"] - 1).bit_length()
    assert parts["column_pointers"] == 2 * 12 * (bit_start + ea + cnt)


def test_resource_estimate_holds_the_huffman_streams_and_table() -> None:
    """The estimate's ROMs are the RTL's: indices, stream banks, decoder table (no plain weights), columns, biases."""
    plain, huff = _plan("plain"), _plan("huffman")
    c = csc_count(plain.weights, 2, 1)
    entries = [max(1, len(v)) for v in c["values"]]  # type: ignore[union-attr]
    wb = plain.w.bits
    rtl = sparse_rtl_context(huff.huffman, wb)  # type: ignore[arg-type]
    ea, cnt = _column_bits(c)
    bit_start = max(1, math.ceil(math.log2(max(pe["words"] for pe in rtl["pes"])))) + (rtl["W"] - 1).bit_length()
    bias_bits = 2 * 4 * plain.bias.bits  # 4 rows per PE
    r = engine_resources(huff)
    assert r.multipliers == 2
    expected = (
        sum(entries) * 1  # relative indices
        + sum(pe["words"] for pe in rtl["pes"]) * rtl["W"]  # the streams
        + rtl["symbols"] * wb  # rank -> weight code
        + 2 * 12 * (bit_start + ea + cnt)
        + bias_bits
    )
    assert sum(m.bits for m in r.memories if m.rom) == expected
    assert any("Huffman" in m.what for m in r.memories)
    p = engine_resources(plain)
    assert sum(m.bits for m in p.memories if m.rom) == sum(entries) * (1 + wb) + 2 * 12 * (ea + cnt) + bias_bits


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("storage")
    model = d / "m.onnx"
    model.write_bytes(make_mlp_onnx([16, 12, 6], seed=3).SerializeToString())
    cfg = config_from_dict({"layers": {"fc0": {"engine": "sparse", "pes": 3, "weight_coding": "huffman"}}})
    return build(model, d / "out", cfg)


def test_report_compression_counts_what_each_engine_stores(tiny_build) -> None:
    rep, sched = tiny_build.report, tiny_build.schedule
    sp, dense = sched.layers
    assert isinstance(sp, SparseDensePlan) and isinstance(dense, DensePlan)
    comp = rep["compression"]
    by_name = {lay["name"]: lay for lay in comp["layers"]}
    # the dense layer: its whole weight ROM and biases
    assert by_name[dense.name]["parts_bits"] == {
        "dense_weights": 6 * 12 * dense.w.bits,
        "biases": 6 * dense.bias.bits,
    }
    # the sparse layer: no dense weight bits; indices of its CSC entries, as counted here
    c = csc_count(sp.weights, sp.pes, sp.index_bits)
    vals = [v for pe in c["values"] for v in pe]  # type: ignore[union-attr]
    parts = by_name[sp.name]["parts_bits"]
    assert "dense_weights" not in parts and parts["biases"] == 12 * sp.bias.bits
    assert parts["indices"] == (len(vals) - vals.count(0)) * sp.index_bits
    assert sum(parts.values()) == by_name[sp.name]["total_bits"]
    total = sum(lay["total_bits"] for lay in comp["layers"])
    assert comp["stored_bits"] == total == sum(comp["parts_bits"].values())
    assert comp["fp32_bytes"] == 4 * (16 * 12 + 12 + 12 * 6 + 6) and comp["fp32_bits"] == 8 * comp["fp32_bytes"]
    assert comp["compressed_bytes"] == -(-total // 8)
    assert comp["ratio"] == pytest.approx(comp["fp32_bytes"] / comp["compressed_bytes"], abs=1e-3)
    # the layer's `sparse.storage` is the same weight memory (without the biases)
    assert rep["layers"][0]["sparse"]["storage"]["total_bits"] == by_name[sp.name]["total_bits"] - parts["biases"]
