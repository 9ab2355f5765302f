"""The Huffman decoder engine: its plan, its cycle model, and its two views (Verilog, HLS C++).

Why: a weight stream stored Huffman-coded must be decoded as fast as the MAC or sparse engine
consumes it, one symbol per cycle, or the compression costs throughput.

Architecture (templates/rtl/huffman_decoder.sv.j2; the HLS view computes the same steps):
- The packed code stream (hwgen.passes.huffman.encode: MSB first, W-bit words) sits in a ROM
  read synchronously. Two words `cur`, `nxt` form a 2W-bit buffer with a bit position `pos` in
  [0, W); the ROM output register already holds the word after `nxt`.
- Stage 1 (the loop, one symbol per cycle): the max_len-bit window at `pos`; the code length is
  1 + #{l < max_len : window >= limit[l]} (limit = the canonical code's left-aligned bounds, one
  comparator per length); pos += length; when pos crosses W the buffer shifts one word (codes are
  at most max_len <= W bits, so at most one word per cycle) and the ROM reads the next word. After
  the pass's last symbol the buffer restarts at bit 0 (words 0 and 1 are constants, the ROM
  re-reads word 2): passes follow each other without a bubble.
- Stage 2: canonical rank = (window >> (max_len - length)) + (offset - first)[length].
- Stage 3: symbol = the symbol table (sorted by length, then symbol) at the rank.
- Stage 4 (with a codebook): weight code = codebook[symbol].
Every stage moves when the output register is empty or the sink takes it (one global enable):
with a free-flowing sink one symbol leaves per cycle.

The same decoding steps also feed the sparse engine (hwgen.hw.sparse, `weight_coding = "huffman"`):
`HuffmanWeights` holds its per-PE streams, seekable at every column start (`code_weights`).

Cycle model (edges counted from the first rising edge with ap_rst_n high, edge 0): symbol i of the
endless sequence of passes is offered from edge `latency + i` on; it is accepted at the first
edge e >= max(accept_{i-1} + 1, latency + i) where the sink is ready.
"""

from __future__ import annotations

import dataclasses
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.errors import HwgenError, ScheduleError, ToolError
from hwgen.hw.names import legalize
from hwgen.hw.render import render
from hwgen.hw.schedule import clog2, model_hash, signed_bits_for
from hwgen.passes.encode_sparse import CscEncoding
from hwgen.passes.huffman import (
    MAX_CODE_LENGTH,
    HuffmanCode,
    HuffmanStream,
    code_symbols,
    decode,
    encode,
    entropy_bits,
    limited_lengths,
)

#: stages of the decoder without a codebook (loop, rank, symbol table)
DECODE_STAGES = 3
#: the file list both simulators read (as hwgen.hw.rtl_emit writes it)
FILELIST = "filelist.f"


@dataclass(frozen=True, eq=False)
class HuffmanDecoderPlan:
    """One Huffman decoder: the stream ROM, the canonical tables and every width (no template arithmetic)."""

    name: str  #: legal identifier (hw.names.legalize)
    source: str  #: what the stream codes (layer and part), for comments
    stream: HuffmanStream = field(repr=False)
    codebook: np.ndarray | None = field(repr=False)  #: int64 codes per symbol, or None (emit symbols)
    code_bits: int  #: bits of a codebook code (signed); 0 without a codebook
    latency: int  #: edges from reset release to symbol 0 accepted (free sink)

    # -- widths ------------------------------------------------------------------------------
    @property
    def word_bits(self) -> int:
        return self.stream.word_bits

    @property
    def max_len(self) -> int:
        return self.stream.code.max_len

    @property
    def symbols(self) -> int:
        """Symbols per pass."""
        return self.stream.symbols

    @property
    def n_words(self) -> int:
        return int(self.stream.words.size)

    @property
    def sym_bits(self) -> int:
        return max(1, (self.stream.code.alphabet - 1).bit_length())

    @property
    def rank_bits(self) -> int:
        return clog2(int(self.stream.code.sorted_symbols.size))

    @property
    def out_bits(self) -> int:
        return self.code_bits if self.codebook is not None else self.sym_bits

    @property
    def out_signed(self) -> bool:
        return self.codebook is not None

    @property
    def stages(self) -> int:
        return DECODE_STAGES + (1 if self.codebook is not None else 0)

    # -- tables ------------------------------------------------------------------------------
    def limits(self) -> list[int]:
        """limit[l] for l = 1 .. max_len-1 (the comparators)."""
        return [int(v) for v in self.stream.code.limit[1 : self.max_len]]

    def deltas(self) -> list[int]:
        """(offset - first)[l] mod 2**rank_bits for l = 1 .. max_len (added to the code to give its rank)."""
        c = self.stream.code
        mask = (1 << self.rank_bits) - 1
        return [int(c.offset[lv] - c.first[lv]) & mask for lv in range(1, self.max_len + 1)]

    def table_bits(self) -> int:
        """Bits of the decoder's constant tables: limits, deltas, symbol table, codebook."""
        n_used = int(self.stream.code.sorted_symbols.size)
        cb = 0 if self.codebook is None else self.codebook.size * self.code_bits
        return (self.max_len - 1) * self.max_len + self.max_len * self.rank_bits + n_used * self.sym_bits + cb

    def expected(self, passes: int = 1) -> np.ndarray:
        """What the decoder emits over `passes` passes: the Python decoder's symbols (through the codebook)."""
        sym = decode(self.stream)
        out = sym if self.codebook is None else self.codebook[sym]
        return np.tile(out, passes)


def plan_huffman_decoder(
    name: str, source: str, stream: HuffmanStream, codebook: np.ndarray | None = None
) -> HuffmanDecoderPlan:
    """A decoder for `stream` (emitting codebook codes when a codebook is given)."""
    code = stream.code
    where = f"Huffman decoder '{source}'"
    if code.max_len < 2:
        raise ScheduleError(f"{where}: max code length {code.max_len}; the decoder needs a window of >= 2 bits")
    if not code.max_len <= stream.word_bits <= 64:
        raise ScheduleError(
            f"{where}: {stream.word_bits}-bit words for {code.max_len}-bit codes; use max_len <= W <= 64"
        )
    if stream.symbols < 1:
        raise ScheduleError(f"{where}: the stream holds no symbol; nothing to decode")
    code_bits = 0
    if codebook is not None:
        codebook = np.asarray(codebook, dtype=np.int64)
        if codebook.size != code.alphabet:
            raise ScheduleError(f"{where}: codebook of {codebook.size} entries for {code.alphabet} symbols")
        code_bits = signed_bits_for(int(codebook.min()), int(codebook.max()))
    plan = HuffmanDecoderPlan(
        name=legalize(name), source=source, stream=stream, codebook=codebook, code_bits=code_bits, latency=0
    )
    return dataclasses.replace(plan, latency=plan.stages)


# -- cycle model ------------------------------------------------------------------------------------
def accept_edges(plan: HuffmanDecoderPlan, count: int, ready: np.ndarray | None = None) -> np.ndarray:
    """Edge at which each of the first `count` symbols is accepted (module docstring's model).

    ready: bool per edge from edge 0 (default: always ready); edges past its end count as ready.
    """
    out = np.zeros(count, dtype=np.int64)
    r = np.ones(0, dtype=bool) if ready is None else np.asarray(ready, dtype=bool)
    e = -1
    for i in range(count):
        e = max(e + 1, plan.latency + i)
        while e < r.size and not r[e]:
            e += 1
        out[i] = e
    return out


# -- emission -------------------------------------------------------------------------------------
def _design(plan: HuffmanDecoderPlan) -> dict[str, str]:
    digest = model_hash(plan.stream.words.astype(np.int64), plan.stream.code.lengths, extra=plan.source)
    return {"model": plan.source, "model_hash": digest}


def _hex(value: int, bits: int) -> str:
    return format(int(value) & ((1 << bits) - 1), f"0{(bits + 3) // 4}x")


def context(plan: HuffmanDecoderPlan) -> dict[str, Any]:
    """Everything the templates print, spelled out (the templates do no width arithmetic)."""
    c = plan.stream.code
    w, nw, L = plan.word_bits, plan.n_words, plan.max_len
    words = [int(x) for x in plan.stream.words.tolist()]
    return {
        "design": _design(plan),
        "name": plan.name,
        "source": plan.source,
        "W": w,
        "W2": 2 * w,
        "L": L,
        "NW": nw,
        "N": plan.symbols,
        "PW": max(1, (w - 1).bit_length()),
        "PSW": max(1, (w - 1).bit_length()) + 1,
        "AW": clog2(nw),
        "LW": L.bit_length(),
        "RW": plan.rank_bits,
        "SB": plan.sym_bits,
        "OB": plan.out_bits,
        "CW": max(1, (plan.symbols - 1).bit_length()),
        "signed": plan.out_signed,
        "stages": plan.stages,
        "words": [_hex(x, w) for x in words],
        "words_dec": words,
        "word0": _hex(words[0], w),
        "word1": _hex(words[1 % nw], w),
        "restart_addr": 2 % nw,
        "last_addr": nw - 1,
        # a limit of 0 is always reached and one of 2**L never: only the others need a comparator
        "len_base": 1 + sum(1 for v in plan.limits() if v == 0),
        "limits": [(lv, _hex(v, L)) for lv, v in enumerate(plan.limits(), start=1) if 0 < v < (1 << L)],
        "deltas": [(lv, d) for lv, d in enumerate(plan.deltas(), start=1)],
        "sorted_symbols": [int(s) for s in c.sorted_symbols.tolist()],
        "n_used": int(c.sorted_symbols.size),
        "codebook": None if plan.codebook is None else [int(v) for v in plan.codebook.tolist()],
        "alphabet": c.alphabet,
        "payload_bits": plan.stream.payload_bits,
        "latency": plan.latency,
    }


def emit_decoder_rtl(plan: HuffmanDecoderPlan, out_dir: Path) -> str:
    """Write `<name>.sv` and filelist.f into out_dir; returns the module name (the top)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{plan.name}.sv").write_text(render("rtl/huffman_decoder.sv.j2", **context(plan)))
    (out_dir / FILELIST).write_text(f"{plan.name}.sv\n")
    return plan.name


def emit_decoder_hls(plan: HuffmanDecoderPlan, out_dir: Path) -> Path:
    """Write the HLS header `<name>.h` (the decoder function `<name>_decode`) into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{plan.name}.h"
    path.write_text(render("hls/huffman_decoder.h.j2", **context(plan)))
    return path


_TB = """// C simulation bench of {name}: decode {passes} pass(es), print one value per line.
#include <cstdio>
#include "{name}.h"

int main(int argc, char** argv) {{
    if (argc != 2) {{
        std::fprintf(stderr, "usage: %s OUTPUT\\n", argv[0]);
        return 2;
    }}
    std::FILE* f = std::fopen(argv[1], "w");
    if (!f) {{
        return 2;
    }}
    hls::stream<{name}_ns::out_t> out;
    for (int p = 0; p < {passes}; p++) {{
        {name}_decode(out);
        while (!out.empty()) {{
            std::fprintf(f, "%lld\\n", (long long)out.read().to_int64());
        }}
    }}
    std::fclose(f);
    return 0;
}}
"""


def run_decoder_csim(plan: HuffmanDecoderPlan, work_dir: Path, passes: int = 1) -> np.ndarray:
    """Compile the HLS view with g++ (hwgen.hw.csim's flags and ap_types headers) and run it."""
    from hwgen.hw.csim import CXXFLAGS, ap_types_dir, gxx

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    emit_decoder_hls(plan, work_dir)
    tb = work_dir / f"{plan.name}_tb.cpp"
    tb.write_text(_TB.format(name=plan.name, passes=int(passes)))
    exe = work_dir / f"{plan.name}_tb"
    cmd = [gxx(), *CXXFLAGS, "-isystem", str(ap_types_dir()), "-I", str(work_dir), str(tb), "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise ToolError(f"g++ exited {done.returncode} on the Huffman decoder {tb}; the last 40 lines follow:\n{tail}")
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        out = Path(tmp) / "out.txt"
        run = subprocess.run([str(exe), str(out)], capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise ToolError(f"the C simulation of {plan.name} exited {run.returncode}: {run.stderr[-2000:]}")
        return np.loadtxt(out, dtype=np.int64, ndmin=1)


# -- Huffman-coded weights of the sparse engine -----------------------------------------------------
#: PE pipeline stages a Huffman-fed sparse engine adds: the (canonical rank -> weight code) table read
HUFFMAN_PE_STAGES = 1
#: default longest code of a weight stream (the decoder window: one comparator per length)
DEFAULT_WEIGHT_MAX_LEN = 16
#: zero words stored after a stream's last payload word: a seek or a prefetch never reads past the ROM
PAD_WORDS = 2


@dataclass(frozen=True, eq=False)
class HuffmanWeights:
    """A sparse engine's CSC weight codes, Huffman-coded: one canonical code per layer, one stream per PE.

    Why seekable streams: the engine walks only the columns of non-zero activations, so each PE's
    stream restarts at any column: col_bits[p, j] is the bit where column j's first code starts
    in PE p's stream (the column ROM holds it beside the entry pointer and count). Symbols are
    `code_symbols` of the entries' weight codes (0 = the padding zero); the decoder's table maps a
    code's canonical rank straight to its weight code. Relative row indices stay plain.
    """

    code: HuffmanCode  #: max_len = the longest code used (>= 2): the decoder window
    codebook: np.ndarray = field(repr=False)  #: int64 [alphabet]: weight code of each symbol
    streams: tuple[HuffmanStream, ...] = field(repr=False)  #: per PE: its entries, column by column
    col_bits: np.ndarray = field(repr=False)  #: int64 [P, K + 1]: first bit of each column (K: the end)
    entries: int  #: CSC entries coded (padding zeros included)
    entropy: float  #: bits per entry of the symbol distribution: the bound no code beats

    @property
    def window(self) -> int:
        return self.code.max_len

    @property
    def word_bits(self) -> int:
        return self.streams[0].word_bits

    @property
    def payload_bits(self) -> int:
        return sum(st.payload_bits for st in self.streams)

    @property
    def entropy_bits(self) -> float:
        return self.entropy * self.entries

    @property
    def rank_values(self) -> np.ndarray:
        """The decoder's table: weight code of each canonical rank (codebook[sorted symbol])."""
        return self.codebook[self.code.sorted_symbols]

    @property
    def rank_bits(self) -> int:
        return clog2(int(self.code.sorted_symbols.size))

    def limits(self) -> list[int]:
        """limit[l] for l = 1 .. window-1, left-aligned (the length comparators)."""
        return [int(v) for v in self.code.limit[1 : self.window]]

    def deltas(self) -> list[int]:
        """(offset - first)[l] mod 2**rank_bits for l = 1 .. window: a length-l code plus it is its rank."""
        c, mask = self.code, (1 << self.rank_bits) - 1
        return [int(c.offset[lv] - c.first[lv]) & mask for lv in range(1, self.window + 1)]

    def words(self, pe: int) -> np.ndarray:
        """PE pe's ROM words (int64): the stream, PAD_WORDS zeros, then one more to an even count (two banks)."""
        w = self.streams[pe].words.astype(np.int64)
        n = w.size + PAD_WORDS
        return np.concatenate([w, np.zeros(n + n % 2 - w.size, dtype=np.int64)])

    @property
    def word_addr_bits(self) -> int:
        """Bits of a word address in the largest PE's stream ROM."""
        return clog2(max(self.words(p).size for p in range(len(self.streams))))

    @property
    def bit_addr_bits(self) -> int:
        """Bits of a bit address {word, bit in word} (the column ROM's bit start)."""
        return self.word_addr_bits + (self.word_bits - 1).bit_length()

    @property
    def stored_bits(self) -> int:
        """Bits of every PE's stream ROM (payload, word fill and padding words)."""
        return sum(self.words(p).size for p in range(len(self.streams))) * self.word_bits

    def table_bits(self, value_bits: int) -> int:
        """Bits of one copy of the decoder's constant tables: limits, rank offsets, rank -> weight code."""
        n_used = int(self.code.sorted_symbols.size)
        return (self.window - 1) * self.window + self.window * self.rank_bits + n_used * value_bits

    def decoded(self, pe: int) -> np.ndarray:
        """PE pe's weight codes as the hardware decodes them (hwgen.passes.huffman.decode, then the codebook)."""
        return self.codebook[decode(self.streams[pe])]


def code_weights(csc: CscEncoding, max_len: int = DEFAULT_WEIGHT_MAX_LEN, where: str = "layer") -> HuffmanWeights:
    """One canonical code of at most max_len bits for all PEs' entry values; a stream and column bit starts per PE.

    Words are 16 bits when every code fits, else 32 (a code never spans more than two words).
    """
    if not 1 <= max_len <= MAX_CODE_LENGTH:
        raise ScheduleError(f"{where}: Huffman max code length {max_len}; use 1..{MAX_CODE_LENGTH}")
    per_pe = [c.values.astype(np.int64) for c in csc.pe_columns]
    symbols, codebook = code_symbols(np.concatenate(per_pe))
    freq = np.bincount(symbols, minlength=codebook.size)
    entropy = entropy_bits(freq)
    if not freq.any():
        freq[0] = 1  # no entry at all: a one-symbol code that is never read
    try:
        lengths = limited_lengths(freq, max_len)
    except HwgenError as e:
        raise ScheduleError(f"{where}: {e}") from None
    window = max(2, int(lengths.max()))
    code = HuffmanCode(lengths, window)
    word_bits = 16 if window <= 16 else 32
    streams, col_bits, at = [], [], 0
    for c in csc.pe_columns:
        sym = symbols[at : at + c.entries]
        at += c.entries
        streams.append(encode(sym, code, word_bits))
        ends = np.concatenate([[0], np.cumsum(code.lengths[sym])]).astype(np.int64)
        col_bits.append(ends[c.col_ptr])
    return HuffmanWeights(
        code=code,
        codebook=codebook,
        streams=tuple(streams),
        col_bits=np.stack(col_bits),
        entries=int(symbols.size),
        entropy=entropy,
    )


def check_weights(hw: HuffmanWeights, csc: CscEncoding, where: str) -> None:
    """The streams decode to the CSC entries' weight codes, and every column starts where its bits say."""
    if len(hw.streams) != csc.pes or hw.col_bits.shape != (csc.pes, csc.cols + 1):
        raise ScheduleError(f"{where}: Huffman streams for {len(hw.streams)} PEs, the CSC encoding has {csc.pes}")
    for p, c in enumerate(csc.pe_columns):
        try:
            ok = np.array_equal(hw.decoded(p), c.values)
        except ScheduleError:  # a corrupt stream: say which layer and PE
            ok = False
        if not ok:
            raise ScheduleError(f"{where}: PE {p}'s Huffman stream does not decode to its weights; rebuild the plan")
        sym = np.where(c.values == 0, 0, np.searchsorted(hw.codebook[1:], c.values) + 1)
        ends = np.concatenate([[0], np.cumsum(hw.code.lengths[sym])])
        if not np.array_equal(ends[c.col_ptr], hw.col_bits[p]):
            raise ScheduleError(f"{where}: PE {p}'s column bit starts disagree with its stream; rebuild the plan")


def storage(hw: HuffmanWeights, csc: CscEncoding, value_bits: int, pointer_bits: int) -> dict[str, Any]:
    """What report.json shows for a Huffman-fed sparse layer: stream bits against the entropy bound, by part.

    pointer_bits: the column ROMs (bit start, entry pointer and count per PE and column, at the RTL's widths:
    hwgen.hw.sparse.column_word_bits).
    """
    entries = hw.entries
    payload = hw.payload_bits
    table = hw.table_bits(value_bits)
    index = entries * csc.index_bits
    return {
        "weight_coding": "huffman",
        "entries": entries,
        "huffman_bits": payload,
        "huffman_bits_per_weight": round(payload / entries, 6) if entries else 0.0,
        "entropy_bits_per_weight": round(hw.entropy, 6),
        "entropy_bits": round(hw.entropy_bits, 3),
        "huffman_over_entropy": round(payload / hw.entropy_bits - 1, 6) if hw.entropy_bits else 0.0,
        "max_code_length": hw.window,
        "symbols": int(hw.code.sorted_symbols.size),
        "word_bits": hw.word_bits,
        "stream_rom_bits": hw.stored_bits,
        "table_bits": table,
        "table_bits_all_pes": table * csc.pes,
        "index_bits": index,
        "pointer_bits": pointer_bits,
        "plain_value_bits": entries * value_bits,
        "total_bits": hw.stored_bits + table + index + pointer_bits,
    }


def sparse_rtl_context(hw: HuffmanWeights, value_bits: int) -> dict[str, Any]:
    """What templates/rtl/sparse_dense.sv.j2 prints for Huffman-coded weights (shared tables, per-PE banks)."""
    window, w = hw.window, hw.word_bits
    pes = []
    for p, st in enumerate(hw.streams):
        words = [_hex(int(x), w) for x in hw.words(p).tolist()]
        pes.append(
            {
                "payload_bits": st.payload_bits,
                "words": len(words),
                "pad": len(words) - int(st.words.size),
                "rows": len(words) // 2,
                "ra": clog2(len(words) // 2),  # this PE's bank row bits
                "za": clog2(max(1, hw.streams[p].symbols)),  # this PE's entry address bits (index ROM)
                "even": words[0::2],
                "odd": words[1::2],
            }
        )
    limits = hw.limits()
    return {
        "W": w,
        "PW": (w - 1).bit_length(),
        "L": window,
        "LW": window.bit_length(),
        "RW": hw.rank_bits,
        "WA": hw.word_addr_bits,
        "RA": clog2(max(pe["rows"] for pe in pes)),
        "symbols": int(hw.code.sorted_symbols.size),
        "entries": hw.entries,
        "payload_bits": hw.payload_bits,
        "entropy_bits": f"{hw.entropy_bits:.1f} bits",
        # a limit of 0 is always reached and one of 2**L never: only the others need a comparator
        "len_base": 1 + sum(1 for v in limits if v == 0),
        "limits": [(lv, _hex(v, window)) for lv, v in enumerate(limits, start=1) if 0 < v < (1 << window)],
        "deltas": list(enumerate(hw.deltas(), start=1)),
        "table": [_hex(int(v), value_bits) for v in hw.rank_values.tolist()],
        "pes": pes,
    }


__all__ = [
    "DECODE_STAGES",
    "DEFAULT_WEIGHT_MAX_LEN",
    "HUFFMAN_PE_STAGES",
    "HuffmanDecoderPlan",
    "HuffmanWeights",
    "accept_edges",
    "check_weights",
    "code_weights",
    "context",
    "emit_decoder_hls",
    "emit_decoder_rtl",
    "plan_huffman_decoder",
    "run_decoder_csim",
    "sparse_rtl_context",
    "storage",
]
