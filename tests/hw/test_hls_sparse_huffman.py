"""The Huffman-fed sparse engine's HLS C++ (templates/hls/sparse_dense.h.j2): C simulation bit-exact vs golden.

Weights are skewed (a few codes dominate) so the canonical code has many lengths; worst cases:
the longest code at the length limit across word boundaries, a one-symbol alphabet, an all-zero
column, a PE without entries, and a chain where the Huffman engine reads ReLU codes (zeros skipped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_csim import cache, chain, check, needs_gxx, plan

from hwgen.hw.plan import IntType, Schedule
from hwgen.hw.sparse import SparseDensePlan, replace_layers, sparse_from_dense
from hwgen.numerics import Rounding

__all__ = ["cache"]  # the session's binary cache, shared with test_csim
U8, S8 = IntType(8, False), IntType(8, True)


def skewed_weights(rng: np.random.Generator, m: int, k: int, density: float, levels: int, wb: int = 8) -> np.ndarray:
    """Sparse weights over `levels` non-zero codes whose frequencies halve from one to the next."""
    lim = 1 << (wb - 1)
    codes = rng.choice(np.r_[-lim:0, 1:lim], size=levels, replace=False)
    p = 0.5 ** np.arange(levels)
    w = codes[rng.choice(levels, size=(m, k), p=p / p.sum())]
    return np.where(rng.random((m, k)) < density, w, 0)


def swap(s: Schedule, at: dict[int, tuple[int, int, int]]) -> Schedule:
    """Layer i of a dense chain on the Huffman-fed sparse engine with (pes, index_bits, max code length)."""
    plans: dict[int, SparseDensePlan] = {}
    for i, (pes, bits, max_len) in at.items():
        p = s.layers[i]
        plans[i] = sparse_from_dense(p, pes=pes, index_bits=bits, weight_coding="huffman", max_code_length=max_len)
    return replace_layers(s, plans)


def vectors(t: IntType, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """All min, all max, alternating, zero, then random codes with half of them zero."""
    fixed = [np.full(k, t.lo), np.full(k, t.hi), np.resize([t.hi, t.lo], k), np.zeros(k, dtype=np.int64)]
    rand = rng.integers(t.lo, t.hi + 1, size=(n, k))
    rand = np.where(rng.random((n, k)) < 0.5, rand, 0)
    return np.vstack([np.asarray(fixed, dtype=np.int64), rand])


@needs_gxx
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_huffman_layers(seed: int, tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(800 + seed)
    k, m = int(rng.integers(2, 60)), int(rng.integers(1, 30))
    inp = IntType(int(rng.integers(2, 12)), bool(rng.integers(2)))
    out = IntType(int(rng.integers(2, 14)), bool(rng.integers(2)))
    wb = int(rng.integers(3, 9))
    w = skewed_weights(rng, m, k, float(rng.choice([0.05, 0.2, 0.5])), int(rng.integers(2, 12)), wb)
    w[:, int(rng.integers(k))] = 0
    d = plan(
        "fc",
        w,
        rng.integers(-3000, 3001, size=m),
        inp,
        out,
        list(Rounding)[seed % 3],
        int(rng.integers(-2, 12)),
        pe=1,
        simd=1,
        lo=0 if out.signed and seed % 2 else None,
    )
    s = swap(chain([d], top=f"hs{seed}"), {0: (int(rng.integers(1, m + 1)), int(rng.integers(1, 6)), 16)})
    assert s.layers[0].weight_coding == "huffman"
    check(s, vectors(inp, k, 20, rng), tmp_path, cache, f"seed {seed}")


@needs_gxx
def test_longest_codes_and_padding(tmp_path: Path, cache: Path) -> None:
    """24 codes with halving frequencies limited to 8 bits, full max/min rows, 2-bit indices (padding zeros)."""
    rng = np.random.default_rng(9)
    k, m = 300, 48
    w = skewed_weights(rng, m, k, 0.1, 24)
    w[0], w[1] = 127, -128
    w[:, 5] = 0
    d = plan("fc", w, rng.integers(-4000, 4001, size=m), S8, S8, Rounding.HALF_EVEN, 13, pe=1, simd=1)
    s = swap(chain([d], top="hlong"), {0: (6, 2, 8)})
    hw = s.layers[0].huffman
    assert hw is not None and int(hw.code.lengths.max()) == 8 and s.layers[0].csc.padding > 0
    check(s, vectors(S8, k, 10, rng), tmp_path, cache, "longest codes")


@needs_gxx
def test_one_symbol_and_an_empty_pe(tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(10)
    w = np.where(rng.random((6, 20)) < 0.5, 93, 0)
    w[1::3] = 0  # PE 1 of 3 owns rows 1 and 4: no entry
    d = plan("fc", w, rng.integers(-99, 100, size=6), U8, S8, Rounding.FLOOR, 7, pe=1, simd=1)
    s = swap(chain([d], top="hone"), {0: (3, 6, 16)})
    hw = s.layers[0].huffman
    assert hw is not None and hw.code.sorted_symbols.size == 1 and s.layers[0].csc.pe_columns[1].entries == 0
    check(s, vectors(U8, 20, 10, rng), tmp_path, cache, "one symbol")


@needs_gxx
def test_dense_huffman_dense_chain(tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(11)
    a = plan(
        "a",
        rng.integers(-9, 10, size=(24, 10)),
        rng.integers(-99, 99, size=24),
        U8,
        U8,
        Rounding.HALF_UP,
        4,
        pe=4,
        simd=5,
        lo=0,
    )
    b = plan("b", skewed_weights(rng, 12, 24, 0.3, 6), None, U8, U8, Rounding.FLOOR, 5, pe=1, simd=1, lo=0)
    c = plan("c", rng.integers(-9, 10, size=(3, 12)), None, U8, S8, Rounding.HALF_EVEN, 2, pe=3, simd=4)
    s = swap(chain([a, b, c], top="dhd"), {1: (5, 3, 16)})
    check(s, vectors(U8, 10, 20, rng), tmp_path, cache, "chain")


@needs_gxx
def test_a_wrong_stream_is_caught(tmp_path: Path, cache: Path) -> None:
    """The check can fail: one flipped bit in PE 0's stream (after the plan's own checks) gives mismatches."""
    rng = np.random.default_rng(12)
    d = plan("fc", skewed_weights(rng, 6, 12, 0.8, 5), None, U8, IntType(16, True), Rounding.FLOOR, 0, pe=1, simd=1)
    s = swap(chain([d], top="htamper"), {0: (2, 4, 16)})
    from hwgen.hw.csim import run_csim
    from hwgen.hw.hls_emit import emit_hls

    emit_hls(s, tmp_path / "hls")
    header = next((tmp_path / "hls").rglob("*fc.h"))
    text = header.read_text()
    start = text.index("S[PES]")
    first = text.index("{", text.index("{", start) + 1) + 1  # the first word of PE 0's row
    end = text.index(",", first)
    word = int(text[first:end].strip().rstrip("uUlL"), 0)
    header.write_text(text[:first] + f" {word ^ (1 << 15)}" + text[end:])
    x = rng.integers(1, 256, size=(3, 12))
    got = run_csim(tmp_path / "hls", x, cache).outputs
    from test_csim import golden

    assert (got != golden(s, x)).any()
