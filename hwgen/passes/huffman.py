"""Canonical, length-limited Huffman coding of weight symbols, and the storage a device must hold.

Why: after pruning and weight sharing the symbols are far from uniform (a bell of codebook
indices; short relative indices), so an entropy code stores them in fewer bits than their fixed
width (Deep Compression: 20-30 % less). Canonical codes make the decoder table tiny: a code is
fully described by the code length of each symbol, and a decoder needs per length only the first
code, the symbol count and an offset into the symbol list sorted by (length, symbol).

Pieces:
- `limited_lengths`: optimal code lengths with a maximum length (package-merge, Larmore and
  Hirschberg), so a hardware decoder looks at a window of at most `max_len` bits.
- `HuffmanCode`: canonical codewords and the decoder tables (first code, count, offset, and the
  left-aligned limits a one-symbol-per-cycle decoder compares the window against).
- `encode` / `decode`: a bit stream (MSB first) packed into W-bit words, and back.
- `compress_layer`: zeros coded as EIE relative indices with padding zeros (the CSC encoding of
  hwgen.passes.encode_sparse), then one Huffman code for the value symbols and one for the
  relative indices; `LayerStorage` counts every bit the device holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from hwgen.errors import ConfigError, ScheduleError
from hwgen.passes.encode_sparse import CscEncoding, PeColumns, decode_csc, encode_csc

#: longest code a hardware decoder supports (its window and comparator count)
MAX_CODE_LENGTH = 24
#: widest ROM word of a packed stream
MAX_WORD_BITS = 64


# -- code lengths ---------------------------------------------------------------------------------
def limited_lengths(freqs: np.ndarray, max_len: int) -> np.ndarray:
    """Optimal prefix-code lengths with every length <= max_len (package-merge).

    Symbols with frequency 0 get length 0 (no code). A lone used symbol gets length 1 (a decoder
    needs at least one bit per symbol). Minimises sum(freq * length) among all codes whose
    lengths respect the limit; the lengths satisfy Kraft's equality when two or more symbols are used.
    """
    f = np.asarray(freqs, dtype=np.int64).reshape(-1)
    if (f < 0).any():
        raise ConfigError("huffman: symbol frequencies must be non-negative")
    if not 1 <= max_len <= MAX_CODE_LENGTH:
        raise ConfigError(f"huffman: max code length {max_len}; use 1..{MAX_CODE_LENGTH}")
    used = np.flatnonzero(f > 0)
    lengths = np.zeros(f.size, dtype=np.int64)
    n = used.size
    if n == 0:
        return lengths
    if n == 1:
        lengths[used[0]] = 1
        return lengths
    if n > (1 << max_len):
        need = math.ceil(math.log2(n))
        raise ConfigError(f"huffman: {n} symbols do not fit codes of at most {max_len} bits; raise max_len to {need}")
    # leaves sorted by frequency (ties by symbol: deterministic); an item is (weight, counts of leaves)
    order = used[np.argsort(f[used], kind="stable")]
    eye = np.eye(n, dtype=np.int64)
    leaves = [(int(f[s]), eye[i]) for i, s in enumerate(order)]
    current = list(leaves)
    for _ in range(max_len - 1):
        packages = [
            (current[i][0] + current[i + 1][0], current[i][1] + current[i + 1][1])
            for i in range(0, len(current) - 1, 2)
        ]
        merged: list[tuple[int, np.ndarray]] = []
        a = b = 0
        while a < len(leaves) or b < len(packages):  # merge two sorted lists, leaves first on ties
            if b >= len(packages) or (a < len(leaves) and leaves[a][0] <= packages[b][0]):
                merged.append(leaves[a])
                a += 1
            else:
                merged.append(packages[b])
                b += 1
        current = merged
    counts = np.sum([c for _, c in current[: 2 * n - 2]], axis=0)
    lengths[order] = counts
    return lengths


def kraft_sum(lengths: np.ndarray) -> float:
    """sum 2**-l over the used symbols (1.0 for a complete prefix code)."""
    ls = np.asarray(lengths)
    return float(sum(math.ldexp(1.0, -int(v)) for v in ls[ls > 0]))


def entropy_bits(freqs: np.ndarray) -> float:
    """Shannon entropy of the symbol distribution, bits per symbol."""
    f = np.asarray(freqs, dtype=np.float64).reshape(-1)
    f = f[f > 0]
    if f.size == 0:
        return 0.0
    p = f / f.sum()
    return float(-(p * np.log2(p)).sum())


# -- canonical codes --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HuffmanCode:
    """A canonical prefix code given by its code lengths (0 = symbol not coded).

    Codes are assigned in order of (length, symbol), consecutive within a length: the decoder
    needs per length l only first[l] (the first code of length l), count[l] and offset[l] (the
    position of that code's symbol in `sorted_symbols`).
    """

    lengths: np.ndarray = field(repr=False)  #: int64 [alphabet]
    max_len: int  #: the length limit the code was built for (window of the decoder)

    def __post_init__(self) -> None:
        ls = np.asarray(self.lengths)
        if ls.ndim != 1 or (ls < 0).any() or (ls > self.max_len).any():
            raise ConfigError(f"huffman: code lengths must lie in 0..{self.max_len}")
        if kraft_sum(ls) > 1.0:
            raise ConfigError("huffman: code lengths violate Kraft's inequality (not a prefix code)")

    @property
    def alphabet(self) -> int:
        return int(self.lengths.size)

    @cached_property
    def sorted_symbols(self) -> np.ndarray:
        """Used symbols in canonical order (length, then symbol)."""
        used = np.flatnonzero(self.lengths > 0)
        return used[np.lexsort((used, self.lengths[used]))].astype(np.int64)

    @cached_property
    def count(self) -> np.ndarray:
        """int64 [max_len + 1]: codes of each length (index 0 unused)."""
        return np.bincount(self.lengths[self.lengths > 0], minlength=self.max_len + 1)[: self.max_len + 1]

    @cached_property
    def first(self) -> np.ndarray:
        """int64 [max_len + 1]: the first (smallest) code of each length."""
        first = np.zeros(self.max_len + 1, dtype=np.int64)
        for length in range(2, self.max_len + 1):
            first[length] = (first[length - 1] + self.count[length - 1]) << 1
        return first

    @cached_property
    def offset(self) -> np.ndarray:
        """int64 [max_len + 1]: index in sorted_symbols of the first code of each length."""
        off = np.zeros(self.max_len + 1, dtype=np.int64)
        off[1:] = np.cumsum(self.count)[:-1]
        return off

    @cached_property
    def limit(self) -> np.ndarray:
        """int64 [max_len + 1]: (first + count) << (max_len - l), left-aligned; non-decreasing in l.

        A max_len-bit window v starts with a code of length l = the smallest l with v < limit[l].
        """
        ls = np.arange(self.max_len + 1)
        return (self.first + self.count) << (self.max_len - ls)

    @cached_property
    def codes(self) -> np.ndarray:
        """int64 [alphabet]: each symbol's codeword (its low `lengths` bits); 0 for unused symbols."""
        codes = np.zeros(self.alphabet, dtype=np.int64)
        for rank, s in enumerate(self.sorted_symbols.tolist()):
            length = int(self.lengths[s])
            codes[s] = self.first[length] + rank - self.offset[length]
        return codes

    def window_lengths(self, windows: np.ndarray) -> np.ndarray:
        """The code length that starts each max_len-bit window (what the decoder's comparators give)."""
        return 1 + np.searchsorted(self.limit[1 : self.max_len], np.asarray(windows), side="right")

    def table_bits(self) -> int:
        """Bits of the canonical table a device keeps: one length field per symbol of the alphabet."""
        return self.alphabet * int(self.max_len).bit_length()

    def mean_length(self, freqs: np.ndarray) -> float:
        f = np.asarray(freqs, dtype=np.float64)
        return float((f * self.lengths).sum() / f.sum()) if f.sum() else 0.0


def build_code(freqs: np.ndarray, max_len: int) -> HuffmanCode:
    """The optimal canonical code of at most max_len bits for these symbol frequencies."""
    return HuffmanCode(limited_lengths(freqs, max_len), max_len)


# -- bit streams ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HuffmanStream:
    """Symbols coded MSB first into `word_bits`-bit words (the last word zero-filled)."""

    code: HuffmanCode
    words: np.ndarray = field(repr=False)  #: uint64 [n_words]
    word_bits: int
    symbols: int  #: symbols coded
    payload_bits: int  #: bits of the codes (without the last word's fill)

    @property
    def stored_bits(self) -> int:
        return int(self.words.size) * self.word_bits

    @property
    def fill_bits(self) -> int:
        """Zero bits after the last code in the last word."""
        return self.stored_bits - self.payload_bits


def _check_word_bits(word_bits: int, max_len: int) -> None:
    if not max_len <= word_bits <= MAX_WORD_BITS:
        raise ConfigError(
            f"huffman: stream words of {word_bits} bits with codes of up to {max_len} bits; "
            f"use {max_len} <= word_bits <= {MAX_WORD_BITS} (the decoder consumes up to one word per cycle)"
        )


def encode(symbols: np.ndarray, code: HuffmanCode, word_bits: int = 32) -> HuffmanStream:
    """Code `symbols` and pack the bits MSB first into words."""
    _check_word_bits(word_bits, code.max_len)
    s = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if s.size and (s.min() < 0 or s.max() >= code.alphabet or (code.lengths[s] == 0).any()):
        bad = s[(s < 0) | (s >= code.alphabet)] if ((s < 0) | (s >= code.alphabet)).any() else s[code.lengths[s] == 0]
        raise ScheduleError(f"huffman: symbol {int(bad[0])} has no code in this table (alphabet {code.alphabet})")
    lens = code.lengths[s]
    total = int(lens.sum())
    ends = np.cumsum(lens)
    # bit j of the stream belongs to symbol i = its code's bit (length - 1 - (j - start_i))
    owner = np.repeat(np.arange(s.size), lens)
    shift = ends[owner] - 1 - np.arange(total)
    bits = (code.codes[s][owner] >> shift) & 1
    n_words = max(1, -(-total // word_bits))
    padded = np.zeros(n_words * word_bits, dtype=np.uint64)
    padded[:total] = bits
    weights = (np.uint64(1) << np.arange(word_bits - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)
    words = (padded.reshape(n_words, word_bits) * weights).sum(axis=1, dtype=np.uint64)
    return HuffmanStream(code=code, words=words, word_bits=word_bits, symbols=int(s.size), payload_bits=total)


def stream_bits(stream: HuffmanStream) -> np.ndarray:
    """The stream's bits (uint8 0/1), MSB of word 0 first, fill included."""
    w = stream.words.astype(np.uint64)
    shifts = np.arange(stream.word_bits - 1, -1, -1, dtype=np.uint64)
    return ((w[:, None] >> shifts[None, :]) & np.uint64(1)).astype(np.uint8).reshape(-1)


def decode(stream: HuffmanStream, count: int | None = None) -> np.ndarray:
    """The first `count` symbols (default: all) of a stream, by the hardware's method.

    Per symbol: take the next max_len bits as the window v (zeros past the end), the code length
    is the smallest l with v < limit[l], the symbol is sorted_symbols[offset[l] + (v >> (max_len - l))
    - first[l]].
    """
    code = stream.code
    n = stream.symbols if count is None else int(count)
    L = code.max_len
    bits = np.concatenate([stream_bits(stream), np.zeros(L, dtype=np.uint8)]).astype(np.int64)
    # the window at every bit position
    windows = np.zeros(bits.size - L + 1, dtype=np.int64)
    for j in range(L):
        windows = (windows << 1) | bits[j : j + windows.size]
    lens_at = code.window_lengths(windows)
    out = np.empty(n, dtype=np.int64)
    pos = 0
    lens_list = lens_at.tolist()
    limit = len(lens_list)
    for i in range(n):
        if pos >= limit:
            raise ScheduleError(f"huffman: the stream ends after {i} of {n} symbols (corrupt or short stream)")
        length = lens_list[pos]
        v = int(windows[pos])
        rank = int(code.offset[length]) + (v >> (L - length)) - int(code.first[length])
        if rank >= int(code.offset[length] + code.count[length]):
            raise ScheduleError(f"huffman: bits at position {pos} are no code of this table (corrupt stream)")
        out[i] = code.sorted_symbols[rank]
        pos += length
    if count is None and pos != stream.payload_bits:
        raise ScheduleError(f"huffman: decoded {pos} bits, the stream holds {stream.payload_bits} (corrupt stream)")
    return out


# -- a layer: relative indices for the zeros, Huffman for values and indices ---------------------------
@dataclass(frozen=True)
class LayerStorage:
    """Every bit a device holds for one compressed layer, by part."""

    weights: int  #: dense weight count M*K
    nonzeros: int
    entries: int  #: CSC entries (non-zeros + padding zeros)
    padding_entries: int
    value_bits: int  #: Huffman-coded value symbols (payload)
    index_bits: int  #: relative indices (payload; Huffman-coded or fixed width)
    fill_bits: int  #: zero fill of the last word of each stream
    codebook_bits: int  #: the codebook entries (zero symbol included)
    table_bits: int  #: canonical code tables (one length field per symbol of each code)
    pointer_bits: int  #: column lengths: entries per (PE, column), at the widest count's width
    value_entropy_bits: float  #: entries x entropy of the value symbols
    index_entropy_bits: float  #: entries x entropy of the relative indices

    @property
    def total_bits(self) -> int:
        return (
            self.value_bits
            + self.index_bits
            + self.fill_bits
            + self.codebook_bits
            + self.table_bits
            + self.pointer_bits
        )

    @property
    def bits_per_weight(self) -> float:
        return self.total_bits / self.weights if self.weights else 0.0

    @property
    def compression_vs_float32(self) -> float:
        return 32 * self.weights / self.total_bits if self.total_bits else float("inf")

    @property
    def value_gap(self) -> float:
        """Huffman value stream over its entropy bound, minus 1 (0.02 = 2 % above the bound)."""
        return self.value_bits / self.value_entropy_bits - 1 if self.value_entropy_bits else 0.0


@dataclass(frozen=True, eq=False)
class CompressedLayer:
    """A layer's symbol matrix as CSC entries whose value symbols and relative indices are Huffman streams."""

    csc: CscEncoding = field(repr=False)
    values: HuffmanStream = field(repr=False)  #: value symbols of every entry, PE by PE
    indices: HuffmanStream | None = field(repr=False)  #: relative indices; None = stored at fixed width
    codebook: np.ndarray = field(repr=False)  #: int64 codes of the symbols
    codebook_bits_each: int
    storage: LayerStorage


def code_symbols(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symbols of quantized weight codes (no sharing): (symbols, codebook) with symbol 0 = code 0.

    The codebook holds 0 and then every distinct non-zero code in increasing order, so
    `compress_layer(symbols, codebook, bits)` codes plain quantized weights the same way as shared ones.
    """
    c = np.asarray(codes, dtype=np.int64)
    distinct = np.unique(c[c != 0])
    codebook = np.concatenate([[0], distinct]).astype(np.int64)
    symbols = np.where(c == 0, 0, np.searchsorted(distinct, c) + 1).astype(np.int64)
    return symbols, codebook


def _entry_streams(csc: CscEncoding) -> tuple[np.ndarray, np.ndarray]:
    vals = np.concatenate([c.values for c in csc.pe_columns]) if csc.pe_columns else np.zeros(0, np.int64)
    zs = np.concatenate([c.zeros for c in csc.pe_columns]) if csc.pe_columns else np.zeros(0, np.int64)
    return vals.astype(np.int64), zs.astype(np.int64)


def compress_layer(
    symbols: np.ndarray,
    codebook: np.ndarray,
    codebook_bits: int,
    *,
    index_bits: int = 4,
    max_len: int = 16,
    word_bits: int = 32,
    pes: int = 1,
    code_indices: bool = True,
) -> CompressedLayer:
    """Compress a layer's symbol matrix [M, K] (0 = zero; symbol s stands for codebook[s]).

    Zeros become EIE relative indices with padding zeros (`encode_csc` over the symbols), the
    value symbols of the entries get one canonical Huffman code, the relative indices another
    (or stay `index_bits` wide when `code_indices` is False).
    """
    sym = np.asarray(symbols, dtype=np.int64)
    cb = np.asarray(codebook, dtype=np.int64)
    if sym.ndim != 2:
        raise ConfigError(f"huffman: a layer's symbols must be a matrix [M, K], got shape {sym.shape}")
    if sym.size and (sym.min() < 0 or sym.max() >= cb.size):
        raise ConfigError(f"huffman: symbols span [{sym.min()}, {sym.max()}] but the codebook has {cb.size} entries")
    csc = encode_csc(sym, pes=pes, index_bits=index_bits, where="huffman layer")
    vals, zs = _entry_streams(csc)
    v_freq = np.bincount(vals, minlength=cb.size)
    v_code = build_code(v_freq, max_len)
    v_stream = encode(vals, v_code, word_bits)
    z_freq = np.bincount(zs, minlength=1 << index_bits)
    if code_indices:
        z_code = build_code(z_freq, max_len)
        z_stream: HuffmanStream | None = encode(zs, z_code, word_bits)
        index_payload, z_fill, z_table = z_stream.payload_bits, z_stream.fill_bits, z_code.table_bits()
    else:
        z_stream = None
        index_payload = zs.size * index_bits
        z_fill = (-index_payload) % word_bits
        z_table = 0
    # a Huffman stream is read in order, never sought: the engine needs each column's entry count
    # (where it ends), not absolute pointers
    counts = csc.counts()
    pointer_bits = int(counts.size) * max(1, int(counts.max(initial=0)).bit_length())
    storage = LayerStorage(
        weights=int(sym.size),
        nonzeros=int(np.count_nonzero(sym)),
        entries=int(vals.size),
        padding_entries=int(csc.padding),
        value_bits=v_stream.payload_bits,
        index_bits=index_payload,
        fill_bits=v_stream.fill_bits + z_fill,
        codebook_bits=int(cb.size) * codebook_bits,
        table_bits=v_code.table_bits() + z_table,
        pointer_bits=pointer_bits,
        value_entropy_bits=entropy_bits(v_freq) * vals.size,
        index_entropy_bits=entropy_bits(z_freq) * zs.size,
    )
    return CompressedLayer(csc, v_stream, z_stream, cb, codebook_bits, storage)


def decompress_layer(layer: CompressedLayer) -> np.ndarray:
    """The symbol matrix [M, K] back from the streams and the column pointers (a round trip)."""
    csc = layer.csc
    vals = decode(layer.values)
    zs = decode(layer.indices) if layer.indices is not None else _entry_streams(csc)[1]
    pes, at = [], 0
    for c in csc.pe_columns:
        n = c.entries
        pes.append(PeColumns(vals[at : at + n], zs[at : at + n], c.col_ptr, c.padding))
        at += n
    rebuilt = CscEncoding(csc.rows, csc.cols, csc.pes, csc.index_bits, tuple(pes))
    return decode_csc(rebuilt)


__all__ = [
    "MAX_CODE_LENGTH",
    "CompressedLayer",
    "HuffmanCode",
    "HuffmanStream",
    "LayerStorage",
    "build_code",
    "code_symbols",
    "compress_layer",
    "decode",
    "decompress_layer",
    "encode",
    "entropy_bits",
    "kraft_sum",
    "limited_lengths",
    "stream_bits",
]
