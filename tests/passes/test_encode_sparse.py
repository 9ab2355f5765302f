"""hwgen.passes.encode_sparse: EIE-style interleaved CSC with relative indices and padding zeros."""

from __future__ import annotations

import numpy as np
import pytest

from hwgen.errors import ScheduleError
from hwgen.passes.encode_sparse import decode_csc, encode_csc, entry_rows


def sparse_matrix(rng: np.random.Generator, m: int, k: int, density: float) -> np.ndarray:
    w = rng.integers(-128, 128, size=(m, k))
    w[w == 0] = 1
    return np.where(rng.random((m, k)) < density, w, 0)


@pytest.mark.parametrize("density", [0.0, 0.02, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("pes", [1, 3, 8])
@pytest.mark.parametrize("index_bits", [1, 2, 4])
def test_roundtrip_random(density: float, pes: int, index_bits: int) -> None:
    rng = np.random.default_rng(int(density * 100) + 7 * pes + index_bits)
    w = sparse_matrix(rng, 37, 23, density)
    w[:, 5] = 0  # an all-zero column
    enc = encode_csc(w, pes=pes, index_bits=index_bits)
    assert np.array_equal(decode_csc(enc), w)
    for c in enc.pe_columns:
        assert c.zeros.min(initial=0) >= 0 and c.zeros.max(initial=0) <= (1 << index_bits) - 1
        assert c.col_ptr[5] == c.col_ptr[6]  # the zero column stores nothing
    assert sum(int(np.count_nonzero(c.values)) for c in enc.pe_columns) == np.count_nonzero(w)


def test_long_gap_inserts_padding_exactly_as_eie() -> None:
    """One PE, 2-bit index (at most 3 zeros per entry): a non-zero at row 9 after row 0."""
    w = np.zeros((12, 1), dtype=np.int64)
    w[0, 0], w[9, 0] = 5, -7
    enc = encode_csc(w, pes=1, index_bits=2)
    c = enc.pe_columns[0]
    # row 0 (z=0); 8 zeros follow: padding at row 4 (z=3), padding at row 8 (z=3), then row 9 (z=0)
    assert c.values.tolist() == [5, 0, 0, -7]
    assert c.zeros.tolist() == [0, 3, 3, 0]
    assert c.padding == 2
    assert entry_rows(enc, 0).tolist() == [0, 4, 8, 9]
    assert np.array_equal(decode_csc(enc), w)


def test_gap_of_exactly_max_zeros_needs_no_padding() -> None:
    w = np.zeros((20, 1), dtype=np.int64)
    w[15, 0] = 1  # 15 zeros before it: fits a 4-bit index
    w[19, 0] = 2
    enc = encode_csc(w, pes=1, index_bits=4)
    assert enc.pe_columns[0].zeros.tolist() == [15, 3] and enc.padding == 0
    w[16, 0], w[15, 0] = 1, 0  # 16 zeros: one padding entry
    enc = encode_csc(w, pes=1, index_bits=4)
    assert enc.pe_columns[0].values.tolist() == [0, 1, 2] and enc.padding == 1
    assert np.array_equal(decode_csc(enc), w)


def test_interleaving_pe_owns_rows_mod_p() -> None:
    w = np.zeros((7, 2), dtype=np.int64)
    w[6, 1] = 3  # row 6 = local row 1 of PE 2 (P = 4)
    enc = encode_csc(w, pes=4, index_bits=4)
    assert [c.entries for c in enc.pe_columns] == [0, 0, 1, 0]
    assert enc.pe_columns[2].zeros.tolist() == [1]
    assert enc.counts().tolist() == [[0, 0], [0, 0], [0, 1], [0, 0]]
    assert [enc.local_rows(p) for p in range(4)] == [2, 2, 2, 1]


def test_storage_accounting() -> None:
    w = np.zeros((40, 3), dtype=np.int64)
    w[39, 0] = 1  # 39 zeros before it with 4-bit index: 2 paddings (rows 15, 31), then z = 7
    w[0, 1] = -1
    enc = encode_csc(w, pes=1, index_bits=4)
    s = enc.storage(value_bits=8)
    assert (s.entries, s.nonzeros, s.padding) == (4, 2, 2)
    assert s.value_bits == 4 * 8 and s.index_bits == 4 * 4
    assert s.pointer_bits == 1 * 4 * 3  # 4 pointers of 3 bits (values up to 4)
    assert s.dense_bits == 40 * 3 * 8
    assert s.compression == pytest.approx(960 / (32 + 16 + 12))


def test_all_zero_matrix_and_full_matrix() -> None:
    enc = encode_csc(np.zeros((5, 4), dtype=np.int64), pes=2, index_bits=1)
    assert enc.entries == 0 and np.array_equal(decode_csc(enc), np.zeros((5, 4)))
    full = np.arange(1, 21).reshape(5, 4)
    enc = encode_csc(full, pes=2, index_bits=1)
    assert enc.entries == 20 and enc.padding == 0 and np.array_equal(decode_csc(enc), full)


def test_refusals() -> None:
    with pytest.raises(ScheduleError, match="PEs"):
        encode_csc(np.ones((4, 4), dtype=np.int64), pes=5, index_bits=4)
    with pytest.raises(ScheduleError, match="relative index"):
        encode_csc(np.ones((4, 4), dtype=np.int64), pes=1, index_bits=0)
    with pytest.raises(ScheduleError, match="integer"):
        encode_csc(np.ones((4, 4)), pes=1, index_bits=4)
