"""Canonical length-limited Huffman codes: optimality, canonical form, streams, and layer storage."""

from __future__ import annotations

import heapq
import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwgen.errors import ConfigError, ScheduleError
from hwgen.passes.encode_sparse import encode_csc
from hwgen.passes.huffman import (
    HuffmanCode,
    build_code,
    code_symbols,
    compress_layer,
    decode,
    decompress_layer,
    encode,
    entropy_bits,
    kraft_sum,
    limited_lengths,
)

ROOT = Path(__file__).resolve().parents[2]
freq_lists = st.lists(st.integers(0, 1000), min_size=1, max_size=40)


def huffman_cost(freqs: list[int]) -> int:
    """Cost sum(f * len) of an unlimited Huffman code (the textbook heap construction)."""
    f = [x for x in freqs if x > 0]
    if len(f) <= 1:
        return sum(f)
    heap = list(f)
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def brute_force_cost(freqs: list[int], max_len: int) -> int:
    """Smallest sum(f * len) over every length vector in 1..max_len that satisfies Kraft."""
    used = [x for x in freqs if x > 0]
    best = None
    for ls in itertools.product(range(1, max_len + 1), repeat=len(used)):
        if sum(2.0**-v for v in ls) <= 1.0:
            c = sum(f * v for f, v in zip(used, ls, strict=True))
            best = c if best is None else min(best, c)
    assert best is not None
    return best


def codeword_strings(code: HuffmanCode) -> dict[int, str]:
    return {int(s): format(int(code.codes[s]), f"0{int(code.lengths[s])}b") for s in np.flatnonzero(code.lengths > 0)}


@given(freq_lists, st.integers(6, 16))
def test_lengths_kraft_limit_and_unlimited_optimality(freqs: list[int], max_len: int) -> None:
    used = sum(1 for f in freqs if f > 0)
    lengths = limited_lengths(np.asarray(freqs), max_len)
    assert np.all((lengths == 0) == (np.asarray(freqs) == 0))
    assert lengths.max(initial=0) <= max_len
    if used >= 2:
        assert kraft_sum(lengths) == 1.0
    cost = int((np.asarray(freqs) * lengths).sum())
    if used - 1 <= max_len:
        # a Huffman code of n symbols is at most n - 1 deep: the limit cannot bind, the cost is Huffman's
        assert cost == huffman_cost(freqs)
    assert cost >= huffman_cost(freqs)  # no prefix code beats Huffman


@given(st.lists(st.integers(1, 60), min_size=2, max_size=6), st.integers(3, 4))
def test_limited_lengths_are_optimal_among_limited_codes(freqs: list[int], max_len: int) -> None:
    lengths = limited_lengths(np.asarray(freqs), max_len)
    assert int((np.asarray(freqs) * lengths).sum()) == brute_force_cost(freqs, max_len)


def test_unlimited_and_limited_costs_on_a_skewed_source() -> None:
    fib = [1, 1]
    while len(fib) < 18:
        fib.append(fib[-1] + fib[-2])
    free = limited_lengths(np.asarray(fib), 24)
    assert free.max() == 17 and int((np.asarray(fib) * free).sum()) == huffman_cost(fib)
    capped = limited_lengths(np.asarray(fib), 8)
    assert capped.max() == 8 and kraft_sum(capped) == 1.0


@given(freq_lists, st.integers(5, 12))
def test_canonical_and_prefix_free(freqs: list[int], max_len: int) -> None:
    code = build_code(np.asarray(freqs), max_len)
    words = codeword_strings(code)
    for a, b in itertools.permutations(words.values(), 2):
        assert not b.startswith(a)
    # canonical: in (length, symbol) order the codes count up, shifted left at each longer length
    order = sorted(words, key=lambda s: (len(words[s]), s))
    for prev, cur in itertools.pairwise(order):
        p, c = words[prev], words[cur]
        assert int(c, 2) == (int(p, 2) + 1) << (len(c) - len(p))
    if order:
        assert set(words[order[0]]) == {"0"}


@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=400),
    st.integers(5, 16),
    st.sampled_from([16, 24, 32, 64]),
)
def test_round_trip(symbols: list[int], max_len: int, word_bits: int) -> None:
    s = np.asarray(symbols)
    code = build_code(np.bincount(s, minlength=31), max_len)
    stream = encode(s, code, word_bits)
    assert stream.payload_bits == int(code.lengths[s].sum())
    assert stream.words.size == max(1, -(-stream.payload_bits // word_bits))
    assert np.array_equal(decode(stream), s)


def test_stream_bits_are_msb_first() -> None:
    code = HuffmanCode(np.array([1, 2, 2]), 4)  # 0 -> 0, 1 -> 10, 2 -> 11
    stream = encode(np.array([1, 0, 2, 2]), code, 8)
    assert stream.words.tolist() == [0b10011110]
    assert stream.fill_bits == 1


def test_errors() -> None:
    code = build_code(np.array([3, 0, 1]), 4)
    with pytest.raises(ScheduleError, match="symbol 1 has no code"):
        encode(np.array([0, 1]), code)
    with pytest.raises(ConfigError, match="use 4 <= word_bits"):
        encode(np.array([0]), code, word_bits=2)
    with pytest.raises(ConfigError, match="do not fit codes of at most 2 bits"):
        limited_lengths(np.ones(5), 2)
    with pytest.raises(ConfigError, match="Kraft"):
        HuffmanCode(np.array([1, 1, 1]), 4)
    short = encode(np.array([0, 2, 0]), code, 8)
    with pytest.raises(ScheduleError, match="corrupt"):
        decode(short, count=2000)


def test_entropy() -> None:
    assert entropy_bits(np.array([1, 1, 1, 1])) == 2.0
    assert entropy_bits(np.array([5, 0])) == 0.0


def test_compress_layer_round_trip_and_storage_parts() -> None:
    rng = np.random.default_rng(3)
    sym = np.where(rng.random((30, 70)) < 0.1, rng.integers(1, 9, size=(30, 70)), 0)
    cb = np.array([0, -7, -5, -2, -1, 1, 3, 6, 9])
    layer = compress_layer(sym, cb, 5, index_bits=3, max_len=10, word_bits=16, pes=2)
    assert np.array_equal(decompress_layer(layer), sym)
    s = layer.storage
    csc = encode_csc(sym, pes=2, index_bits=3)
    vals = np.concatenate([c.values for c in csc.pe_columns])
    assert s.entries == vals.size and s.padding_entries == csc.padding > 0
    assert s.value_bits == int(layer.values.code.lengths[vals].sum())
    assert s.codebook_bits == 9 * 5 and s.pointer_bits == 2 * 70 * int(csc.counts().max()).bit_length()
    assert s.table_bits == layer.values.code.table_bits() + layer.indices.code.table_bits()
    assert s.total_bits == (s.value_bits + s.index_bits + s.fill_bits + s.codebook_bits + s.table_bits + s.pointer_bits)
    assert s.value_entropy_bits <= s.value_bits < s.value_entropy_bits + s.entries  # within 1 bit/symbol
    fixed = compress_layer(sym, cb, 5, index_bits=3, code_indices=False)
    assert fixed.indices is None and fixed.storage.index_bits == 3 * fixed.storage.entries
    assert np.array_equal(decompress_layer(fixed), sym)


def test_lenet300_fc1_stream_within_3_percent_of_entropy() -> None:
    """The issue's floor on real weights: pruned LeNet-300-100 fc1 shared to 5 bits (tables excluded)."""
    from hwgen.passes.share import share_tensor

    npz = ROOT / "models" / "pruned" / "lenet300_pruned.npz"
    if not npz.is_file():
        pytest.skip(f"{npz} is missing (made by benchmarks/prune_mnist.py)")
    with np.load(npz) as d:
        st_ = share_tensor(d["fc1.weight"], 5)
    layer = compress_layer(st_.indices, st_.codebook, 8, index_bits=4, max_len=16)
    assert 0 <= layer.storage.value_gap < 0.03
    assert np.array_equal(decompress_layer(layer), st_.indices)


def test_plain_quantized_codes_compress_too() -> None:
    rng = np.random.default_rng(8)
    codes = np.where(rng.random((20, 30)) < 0.2, rng.integers(-128, 128, size=(20, 30)), 0)
    sym, cb = code_symbols(codes)
    assert cb[0] == 0 and np.array_equal(cb[sym], codes) and np.array_equal(sym == 0, codes == 0)
    layer = compress_layer(sym, cb, 8, index_bits=4)
    assert np.array_equal(cb[decompress_layer(layer)], codes)
