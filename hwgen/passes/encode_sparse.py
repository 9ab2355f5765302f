"""EIE-style compressed sparse column (CSC) encoding of a weight matrix, interleaved over PEs.

Why: a sparse engine must skip zero weights, so it stores only the non-zeros, column by column
(a column is one input feature: when input x_j arrives, every PE walks its part of column j).
Rows are interleaved over P processing elements: PE p owns rows p, p+P, p+2P, ... (local row r is
global row r*P + p), so a column's work is spread evenly. Each stored entry is (value, z): z is the
number of zero rows of this PE skipped since the previous entry of the column (EIE's relative
index), so an index needs only `index_bits` bits. When a gap holds more zeros than the index can
count (2**index_bits - 1), a padding entry (value 0, z = max) is inserted: it advances the row by
2**index_bits and adds nothing.

Decoding walks the entries: row = -1 at a column's start, then row += z + 1 per entry.
Pure numpy: the Schedule (hwgen.hw.sparse) and both emitters read the encoding from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwgen.errors import ScheduleError

#: index widths a relative index may take (1 bit: gaps of 0 or 1; 16 bits: 65535 zeros)
MIN_INDEX_BITS, MAX_INDEX_BITS = 1, 16


@dataclass(frozen=True, eq=False)
class PeColumns:
    """The CSC memory of one PE: its entries column by column, and where each column starts."""

    values: np.ndarray = field(repr=False)  #: int64 [entries]: weight codes (0 for padding)
    zeros: np.ndarray = field(repr=False)  #: int64 [entries]: zero rows skipped before the entry
    col_ptr: np.ndarray = field(repr=False)  #: int64 [K + 1]: column j is entries col_ptr[j] .. col_ptr[j+1]-1
    padding: int  #: entries that are padding zeros

    @property
    def entries(self) -> int:
        return int(self.values.size)

    def counts(self) -> np.ndarray:
        """Entries per column (int64 [K])."""
        return np.diff(self.col_ptr)


@dataclass(frozen=True)
class SparseStorage:
    """Bits of the encoding, by part, beside the dense matrix's bits."""

    entries: int  #: stored entries, padding included
    nonzeros: int  #: non-zero weights
    padding: int  #: padding entries
    value_bits: int  #: entries * value width
    index_bits: int  #: entries * index width
    pointer_bits: int  #: column pointers: P * (K + 1) pointers of the widest PE's pointer width
    dense_bits: int  #: M * K * value width

    @property
    def total_bits(self) -> int:
        return self.value_bits + self.index_bits + self.pointer_bits

    @property
    def compression(self) -> float:
        """Dense bits / encoded bits."""
        return self.dense_bits / self.total_bits if self.total_bits else float("inf")


@dataclass(frozen=True, eq=False)
class CscEncoding:
    """A weight matrix [M, K] as P interleaved CSC memories with `index_bits`-bit relative indices."""

    rows: int  #: M (output features)
    cols: int  #: K (input features)
    pes: int  #: P
    index_bits: int
    pe_columns: tuple[PeColumns, ...]

    @property
    def max_zeros(self) -> int:
        """The largest gap one entry's index can count."""
        return (1 << self.index_bits) - 1

    def local_rows(self, pe: int) -> int:
        """Rows PE `pe` owns: p, p+P, ... below M."""
        return len(range(pe, self.rows, self.pes))

    @property
    def padding(self) -> int:
        return sum(c.padding for c in self.pe_columns)

    @property
    def entries(self) -> int:
        return sum(c.entries for c in self.pe_columns)

    def counts(self) -> np.ndarray:
        """Entries per (PE, column): int64 [P, K]; the sparse engine's work per broadcast activation."""
        return np.stack([c.counts() for c in self.pe_columns])

    def storage(self, value_bits: int) -> SparseStorage:
        """Storage accounting for weight codes of `value_bits` bits."""
        entries = self.entries
        ptr_bits = max(1, max(c.entries for c in self.pe_columns).bit_length())
        nonzeros = sum(int(np.count_nonzero(c.values)) for c in self.pe_columns)
        return SparseStorage(
            entries=entries,
            nonzeros=nonzeros,
            padding=self.padding,
            value_bits=entries * value_bits,
            index_bits=entries * self.index_bits,
            pointer_bits=self.pes * (self.cols + 1) * ptr_bits,
            dense_bits=self.rows * self.cols * value_bits,
        )


def encode_csc(weights: np.ndarray, *, pes: int, index_bits: int, where: str = "weights") -> CscEncoding:
    """Encode integer weight codes [M, K] for P PEs with `index_bits`-bit relative row indices."""
    w = np.asarray(weights)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.integer):
        raise ScheduleError(f"{where}: CSC encoding takes a 2-D integer code matrix, got {w.dtype} {w.shape}")
    m, k = w.shape
    if not 1 <= pes <= max(m, 1):
        raise ScheduleError(f"{where}: {pes} PEs for {m} rows; use 1 <= PEs <= {m}")
    if not MIN_INDEX_BITS <= index_bits <= MAX_INDEX_BITS:
        raise ScheduleError(
            f"{where}: relative index of {index_bits} bits; use {MIN_INDEX_BITS}..{MAX_INDEX_BITS} (EIE uses 4)"
        )
    max_zeros = (1 << index_bits) - 1
    pe_columns = []
    for p in range(pes):
        local = w[p::pes].astype(np.int64)  # [rows of this PE, K]
        values: list[int] = []
        zeros: list[int] = []
        ptr = [0]
        padding = 0
        for j in range(k):
            prev = -1
            for r in np.flatnonzero(local[:, j]).tolist():
                gap = r - prev - 1
                while gap > max_zeros:
                    # padding zero: stands at row prev + max_zeros + 1
                    values.append(0)
                    zeros.append(max_zeros)
                    padding += 1
                    gap -= max_zeros + 1
                values.append(int(local[r, j]))
                zeros.append(gap)
                prev = r
            ptr.append(len(values))
        pe_columns.append(
            PeColumns(
                values=np.asarray(values, dtype=np.int64),
                zeros=np.asarray(zeros, dtype=np.int64),
                col_ptr=np.asarray(ptr, dtype=np.int64),
                padding=padding,
            )
        )
    return CscEncoding(rows=m, cols=k, pes=pes, index_bits=index_bits, pe_columns=tuple(pe_columns))


def entry_rows(enc: CscEncoding, pe: int) -> np.ndarray:
    """Local row of every entry of PE `pe` (int64 [entries]), from the relative indices."""
    c = enc.pe_columns[pe]
    rows = np.empty(c.entries, dtype=np.int64)
    for j in range(enc.cols):
        lo, hi = int(c.col_ptr[j]), int(c.col_ptr[j + 1])
        rows[lo:hi] = np.cumsum(c.zeros[lo:hi] + 1) - 1
    return rows


def decode_csc(enc: CscEncoding) -> np.ndarray:
    """The dense int64 matrix [M, K] an encoding stands for."""
    w = np.zeros((enc.rows, enc.cols), dtype=np.int64)
    for p, c in enumerate(enc.pe_columns):
        rows = entry_rows(enc, p)
        cols = np.repeat(np.arange(enc.cols), c.counts())
        if c.entries and (rows.max() >= enc.local_rows(p) or (c.zeros < 0).any() or (c.zeros > enc.max_zeros).any()):
            raise ScheduleError(f"CSC memory of PE {p}: an entry's row or index is out of range (corrupt encoding)")
        np.add.at(w, (rows * enc.pes + p, cols), c.values)
    return w


__all__ = ["CscEncoding", "PeColumns", "SparseStorage", "decode_csc", "encode_csc", "entry_rows"]
