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

from hwgen.errors import ScheduleError, ToolError
from hwgen.hw.names import legalize
from hwgen.hw.render import render
from hwgen.hw.schedule import clog2, model_hash, signed_bits_for
from hwgen.passes.huffman import HuffmanStream, decode

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


__all__ = [
    "DECODE_STAGES",
    "HuffmanDecoderPlan",
    "accept_edges",
    "context",
    "emit_decoder_hls",
    "emit_decoder_rtl",
    "plan_huffman_decoder",
    "run_decoder_csim",
]
