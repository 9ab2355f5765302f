"""Huffman-coded weights on the sparse engine: the streams, the cycle model, storage, config and lowering.

Bit- and cycle-exactness against the golden model are in tests/hw/test_hls_sparse_huffman.py (C
simulation) and rtl_tests/test_sparse_huffman_rtl.py (RTL); here the plan keeps its promises: each
PE's stream decodes to its CSC weights from every column start, the code is within Huffman's bound
of the entropy, the issue rate equals the plain engine's, and the config reaches the plan.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hwgen.build import compile_model
from hwgen.config import config_from_dict
from hwgen.errors import ConfigError, ScheduleError
from hwgen.hw.huffman import check_weights
from hwgen.hw.plan import IntType, Requant
from hwgen.hw.sparse import SparseDensePlan, plan_sparse_dense, sparse_run, storage
from hwgen.numerics import Rounding
from hwgen.passes.huffman import decode, entropy_bits

ROOT = Path(__file__).resolve().parents[2]
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"
U8, S8 = IntType(8, False), IntType(8, True)
RQ = Requant(8, Rounding.HALF_EVEN, -128, 127)


def skewed(rng: np.random.Generator, m: int, k: int, density: float, levels: int) -> np.ndarray:
    codes = rng.choice(np.r_[-128:0, 1:128], size=levels, replace=False)
    p = 0.5 ** np.arange(levels)
    w = codes[rng.choice(levels, size=(m, k), p=p / p.sum())]
    return np.where(rng.random((m, k)) < density, w, 0)


def huffman_plan(w: np.ndarray, pes: int, index_bits: int = 4, max_len: int = 16) -> SparseDensePlan:
    b = np.zeros(w.shape[0], dtype=np.int64)
    return plan_sparse_dense(
        "fc", "/fc", w, b, U8, S8, RQ, pes=pes, index_bits=index_bits, weight_coding="huffman", max_code_length=max_len
    )


def test_every_column_decodes_from_its_bit_start() -> None:
    rng = np.random.default_rng(0)
    w = skewed(rng, 30, 50, 0.3, 9)
    sp = huffman_plan(w, pes=4, index_bits=2)
    hw = sp.huffman
    assert hw is not None and sp.weight_coding == "huffman"
    for p, c in enumerate(sp.csc.pe_columns):
        for j in range(sp.in_features):
            n = int(c.col_ptr[j + 1] - c.col_ptr[j])
            bits = hw.col_bits[p, j]
            # a stream cut at the column's first bit decodes to exactly the column's weights
            st = hw.streams[p]
            cut = dataclasses.replace(st, words=_shifted_words(st, bits), symbols=n, payload_bits=0)
            got = hw.codebook[decode(cut, count=n)] if n else np.zeros(0, dtype=np.int64)
            assert np.array_equal(got, c.values[c.col_ptr[j] : c.col_ptr[j + 1]]), (p, j)
    check_weights(hw, sp.csc, "fc")


def _shifted_words(st, bit: int) -> np.ndarray:
    """The stream's words with the first `bit` bits dropped (re-packed MSB first)."""
    from hwgen.passes.huffman import stream_bits

    bits = np.concatenate([stream_bits(st)[bit:], np.zeros(st.word_bits, dtype=np.uint8)])
    n = -(-bits.size // st.word_bits)
    bits = np.concatenate([bits, np.zeros(n * st.word_bits - bits.size, dtype=np.uint8)]).reshape(n, st.word_bits)
    weights = np.uint64(1) << np.arange(st.word_bits - 1, -1, -1, dtype=np.uint64)
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def test_a_corrupt_stream_is_refused() -> None:
    rng = np.random.default_rng(1)
    sp = huffman_plan(skewed(rng, 8, 20, 0.6, 5), pes=2)
    hw = sp.huffman
    bad = list(hw.streams)
    words = bad[0].words.copy()
    words[0] ^= np.uint64(1 << (hw.word_bits - 1))
    bad[0] = dataclasses.replace(bad[0], words=words)
    with pytest.raises(ScheduleError, match="PE 0's Huffman stream does not decode"):
        check_weights(dataclasses.replace(hw, streams=tuple(bad)), sp.csc, "layer 'fc'")


def test_code_is_within_huffmans_bound_of_the_entropy() -> None:
    """Shannon: payload >= entries x H; Huffman: payload < entries x (H + 1); a limit of 4 bits costs more."""
    rng = np.random.default_rng(2)
    w = skewed(rng, 40, 60, 0.3, 12)
    sp = huffman_plan(w, pes=3)
    values = np.concatenate([c.values for c in sp.csc.pe_columns])
    h = entropy_bits(np.unique(values, return_counts=True)[1])
    st = storage(sp)
    n = values.size
    assert n * h <= st["huffman_bits"] < n * (h + 1)
    assert st["entropy_bits_per_weight"] == pytest.approx(h, abs=1e-6)
    assert st["plain_value_bits"] == n * sp.w.bits and st["index_bits"] == n * sp.index_bits
    limited = storage(huffman_plan(w, pes=3, max_len=4))
    assert limited["max_code_length"] == 4 and limited["huffman_bits"] > st["huffman_bits"]


def test_huffman_keeps_the_issue_rate_one_stage_deeper() -> None:
    rng = np.random.default_rng(3)
    w = skewed(rng, 20, 40, 0.4, 6)
    b = np.zeros(20, dtype=np.int64)
    hs = huffman_plan(w, pes=4)
    plain = plan_sparse_dense("fc", "/fc", w, b, U8, S8, RQ, pes=4)
    x = np.where(rng.random((4, 40)) < 0.5, rng.integers(1, 256, size=(4, 40)), 0)
    rh, rp = sparse_run(hs, x), sparse_run(plain, x)
    assert hs.pipeline == plain.pipeline + 1
    assert np.array_equal(rh.pe_cycles, rp.pe_cycles)
    assert (rh.latencies - rp.latencies <= 1).all() and (rh.latencies >= rp.latencies).all()


def test_one_symbol_and_no_entries() -> None:
    one = huffman_plan(np.full((4, 6), -5), pes=2, index_bits=3)
    assert one.huffman.code.sorted_symbols.size == 1 and one.huffman.window == 2
    assert storage(one)["huffman_bits"] == one.csc.entries  # one bit per entry
    empty = huffman_plan(np.zeros((4, 6), dtype=np.int64), pes=2)
    assert empty.huffman.entries == 0 and storage(empty)["huffman_bits"] == 0


def test_unknown_weight_coding_is_refused() -> None:
    with pytest.raises(ScheduleError, match="weight_coding 'zip'"):
        plan_sparse_dense("fc", "/fc", np.eye(3, dtype=np.int64), np.zeros(3), U8, S8, RQ, pes=1, weight_coding="zip")
    with pytest.raises(ConfigError, match=r"\[layers.fc1\].weight_coding = 'zip': must be one of"):
        config_from_dict({"layers": {"fc1": {"weight_coding": "zip"}}})
    with pytest.raises(ConfigError, match=r"\[hardware\].weight_coding = 'gzip'"):
        config_from_dict({"hardware": {"weight_coding": "gzip"}})


# -- configuration through the lowering ----------------------------------------------------------
@pytest.fixture(scope="module")
def pruned_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("pruned_export", ROOT / "models" / "pruned" / "export.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.export_onnx(ROOT / "models" / "pruned" / "lenet300_pruned.npz", tmp_path_factory.mktemp("p") / "m.onnx")


def _compile(model: Path, doc: dict):
    return compile_model(model, config_from_dict(doc), CALIB, lambda _step: None)


def test_hardware_default_and_layer_override(pruned_onnx: Path) -> None:
    doc = {
        "hardware": {"sparse_threshold": 0.5, "weight_coding": "huffman"},
        "layers": {"node_linear_2": {"weight_coding": "plain"}},
    }
    _g, _qg, sched, report = _compile(pruned_onnx, doc)
    assert [p.weight_coding for p in sched.layers] == ["huffman", "huffman", "plain"]
    first = report["layers"][0]["sparse"]
    assert first["weight_coding"] == "huffman"
    st = first["storage"]
    assert 0 <= st["huffman_over_entropy"] < 0.03 and st["huffman_bits"] < st["plain_value_bits"]
    assert st["table_bits"] > 0 and st["index_bits"] == st["entries"] * 4
    assert report["layers"][2]["sparse"]["storage"]["weight_coding"] == "plain"
    # the Huffman engine's worst case is the plain one's, or one cycle (its extra stage) later when
    # the last PE's work, not the input's arrival, decides when the drain starts
    _g, _qg, plain, _r = _compile(pruned_onnx, {"hardware": {"sparse_threshold": 0.5}})
    diffs = [a.latency - b.latency for a, b in zip(sched.layers, plain.layers, strict=True)]
    assert set(diffs[:2]) <= {0, 1} and 1 in diffs[:2] and diffs[2] == 0


def test_huffman_on_a_dense_engine_layer_is_refused(pruned_onnx: Path) -> None:
    with pytest.raises(ScheduleError, match=r"node_linear_1.*weight_coding = \"huffman\" needs the sparse engine"):
        _compile(pruned_onnx, {"layers": {"node_linear_1": {"weight_coding": "huffman"}}})
    # the hardware default applies to sparse layers only: dense ones stay dense
    _g, _qg, sched, _r = _compile(pruned_onnx, {"hardware": {"weight_coding": "huffman"}})
    assert not any(isinstance(p, SparseDensePlan) for p in sched.layers)
