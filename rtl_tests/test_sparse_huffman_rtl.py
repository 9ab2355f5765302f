"""The sparse engine with Huffman-coded weights in RTL (Verilator + cocotb): bit-exact and cycle-exact.

Each PE decodes its weight stream one code per cycle, seeking to the first code of every column a
non-zero activation selects. Expected codes come from the golden model, expected cycles from
hwgen.hw.sparse (whose Huffman pipeline is one stage longer than the plain engine's); the
weights are skewed (a few codes dominate), so codes of many lengths cross word boundaries.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from test_sparse_engine import S8, U8, simulate, single, sparse_layer, sparse_vectors

from hwgen.hw.plan import IntType, Requant, Schedule
from hwgen.hw.rtl_emit import emit_rtl
from hwgen.hw.rtl_sim import lint_verilator
from hwgen.hw.sparse import plan_sparse_dense, sparse_run
from hwgen.numerics import Rounding

pytestmark = pytest.mark.rtl


def skewed_weights(rng: np.random.Generator, m: int, k: int, density: float, levels: int, wb: int = 8) -> np.ndarray:
    """Sparse weights over `levels` non-zero codes whose frequencies halve from one to the next."""
    lim = 1 << (wb - 1)
    codes = rng.choice(np.r_[-lim:0, 1:lim], size=levels, replace=False)
    p = 0.5 ** np.arange(levels)
    w = codes[rng.choice(levels, size=(m, k), p=p / p.sum())]
    return np.where(rng.random((m, k)) < density, w, 0)


#: the sparse engine's layer builder with Huffman-coded weight streams
huffman_layer = partial(sparse_layer, weight_coding="huffman")


def random_huffman_design(seed: int) -> tuple[Schedule, np.ndarray]:
    rng = np.random.default_rng(700 + seed)
    k, m = int(rng.integers(2, 48)), int(rng.integers(1, 24))
    inp = IntType(int(rng.integers(2, 11)), bool(rng.integers(2)))
    out = IntType(int(rng.integers(2, 13)), bool(rng.integers(2)))
    wb = int(rng.integers(3, 9))
    w = skewed_weights(rng, m, k, float(rng.choice([0.1, 0.3, 0.6])), int(rng.integers(2, 12)), wb)
    w[:, int(rng.integers(k))] = 0  # an all-zero column
    sp = huffman_layer(
        f"hs{seed}",
        w,
        rng.integers(-2000, 2001, size=m),
        inp=inp,
        out=out,
        shift=int(rng.integers(-2, 12)),
        rounding=list(Rounding)[int(rng.integers(3))],
        pes=int(rng.integers(1, m + 1)),
        index_bits=int(rng.integers(1, 5)),
        lo=0 if out.signed and rng.integers(2) else None,
    )
    return single(f"hrnd{seed}", sp), sparse_vectors(inp, k, 10, rng)


# -- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_huffman_designs(seed: int, tmp_path: Path, build_root: Path) -> None:
    """Random sizes, PEs, index widths, skewed weights; free flow, then back-pressure and idle input."""
    s, x = random_huffman_design(seed)
    simulate(s, x, tmp_path, build_root)
    simulate(s, x, tmp_path, build_root, backpressure="random", idle="periodic", seed=seed)
    if seed == 0:
        simulate(s, x, tmp_path, build_root, backpressure="periodic", idle="random", seed=seed)


@pytest.mark.parametrize("levels", [1, 6])
def test_lint_clean(levels: int, tmp_path: Path) -> None:
    """verilator -Wall: no warning, with comparators (6 codes) and without (1 code)."""
    rng = np.random.default_rng(35)
    w = skewed_weights(rng, 12, 40, 0.5, levels)
    sp = huffman_layer(
        "fc",
        w,
        rng.integers(-99, 100, size=12),
        inp=U8,
        out=S8,
        shift=6,
        rounding=Rounding.HALF_EVEN,
        pes=3,
        index_bits=3,
    )
    s = single("hlint", sp)
    emit_rtl(s, tmp_path)
    assert lint_verilator(tmp_path, s.top) == []


def test_longest_codes_across_words(tmp_path: Path, build_root: Path) -> None:
    """20 codes with halving frequencies limited to 7 bits (the window), 16-bit words: codes of every
    length straddle word boundaries; full rows at max/min; 5 PEs with 2-bit indices (padding zeros)."""
    k, m = 120, 40
    rng = np.random.default_rng(31)
    w = skewed_weights(rng, m, k, 0.25, 20)
    w[0] = 127
    w[1] = -128
    w[:, 3] = 0  # an all-zero column
    b = rng.integers(-3000, 3001, size=m)
    sp = huffman_layer(
        "fc", w, b, inp=S8, out=S8, shift=12, rounding=Rounding.HALF_EVEN, pes=5, index_bits=2, max_code_length=7
    )
    hw = sp.huffman
    assert hw is not None and hw.window == 7 and hw.word_bits == 16
    assert int(hw.code.lengths.max()) == 7 and sp.csc.padding > 0
    straddling = 0
    for c in sp.csc.pe_columns:
        lens = hw.code.lengths[np.where(c.values == 0, 0, np.searchsorted(hw.codebook[1:], c.values) + 1)]
        ends = np.cumsum(lens)
        straddling += int(((ends - lens) // 16 != (ends - 1) // 16).sum())
    assert straddling > 10
    s = single("hlong", sp)
    x = sparse_vectors(S8, k, 6, rng, zero_rate=0.6)
    simulate(s, x, tmp_path, build_root)
    simulate(s, x, tmp_path, build_root, backpressure="random", idle="random", seed=7)


def test_single_symbol_and_empty_pe(tmp_path: Path, build_root: Path) -> None:
    """One weight value only (a 1-bit code, no padding with 6-bit indices), and a PE with no entry at all."""
    k, m = 30, 6
    rng = np.random.default_rng(32)
    w = np.where(rng.random((m, k)) < 0.4, -77, 0)
    w[1::3] = 0  # PE 1 of 3 holds rows 1 and 4: empty
    sp = huffman_layer(
        "fc", w, rng.integers(-99, 100, size=m), inp=U8, out=S8, shift=6, rounding=Rounding.FLOOR, pes=3, index_bits=6
    )
    hw = sp.huffman
    assert hw is not None and hw.code.sorted_symbols.size == 1 and sp.csc.padding == 0
    assert sp.csc.pe_columns[1].entries == 0
    s = single("hone", sp)
    simulate(s, sparse_vectors(U8, k, 6, rng), tmp_path, build_root, backpressure="periodic", idle="none", seed=2)


def test_huffman_keeps_the_plain_engines_issue_rate(tmp_path: Path, build_root: Path) -> None:
    """Same weights, plain vs Huffman: every PE spends the same cycles; the Huffman pipeline is one stage longer."""
    k, m = 64, 16
    rng = np.random.default_rng(33)
    w = skewed_weights(rng, m, k, 0.4, 9)
    b = rng.integers(-99, 100, size=m)
    args = dict(inp=U8, out=U8, shift=7, rounding=Rounding.HALF_UP, pes=4, lo=0)
    hs = huffman_layer("fc", w, b, **args)
    rq = Requant(7, Rounding.HALF_UP, 0, 255)
    plain = plan_sparse_dense("fc", "/fc/Gemm", w, b, U8, U8, rq, pes=4)
    x = rng.integers(1, 256, size=(3, k))
    rh, rp = sparse_run(hs, x), sparse_run(plain, x)
    assert np.array_equal(rh.pe_cycles, rp.pe_cycles)
    assert np.array_equal(rh.latencies, rp.latencies + 1)
    r = simulate(single("hrate", hs), x, tmp_path, build_root)
    assert r.latency_cycles == int(rh.latencies[0])


def test_a_flipped_stream_bit_is_caught(tmp_path: Path, build_root: Path) -> None:
    """The check can fail: one flipped bit in PE 0's first stream word gives mismatches."""
    rng = np.random.default_rng(34)
    w = skewed_weights(rng, 6, 10, 0.8, 5)
    sp = huffman_layer(
        "fc", w, np.zeros(6, dtype=np.int64), inp=U8, out=IntType(16, True), shift=0, rounding=Rounding.FLOOR, pes=2
    )
    s = single("tamper_hs", sp)
    rtl = tmp_path / s.top
    emit_rtl(s, rtl)
    f = rtl / "tamper_hs_fc.sv"
    text = f.read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("p0_even_rom[0] = "))
    flipped = line[:-2] + format(int(line[-2], 16) ^ 1, "x") + ";"
    f.write_text(text.replace(line, flipped))
    with pytest.raises(AssertionError, match="mismatching codes"):
        simulate(s, rng.integers(1, 256, size=(3, 10)), tmp_path, build_root)
