"""The HLS C++ emitter: a Schedule -> a Vitis HLS project (engines, top, testbench, tcl).

Every number comes from the plans; this module only spells them in C++ (ap_int types, integer
literals, ROM initialisers) and checks that the Schedule is one the templates can express.
Codes are integers end to end: `ap_int`/`ap_uint`, never `ap_fixed`, and requantization is
explicit integer arithmetic (see `templates/hls/_macros.j2`).

Engines: one template per engine kind (`templates/hls/<engine>.h.j2`: dense, conv, pool, add,
fork, concat, lut), each a function over hls::streams of codes; images travel channels last
(pixel by pixel, channels within a pixel), one element per stream beat. The top declares one
hls::stream per Schedule stream (the ports' are its arguments `in` and `out`) with the stream's
FIFO depth, and calls the engines in the Schedule's topological order under DATAFLOW.

Project layout (all files in one folder, named after legal identifiers only):

    hwgen_types.h        the single include of ap_int.h / hls_stream.h
    <layer>.h            one engine per layer, its ROMs (weights, biases, tables) inside
    <top>.h, <top>.cpp   the dataflow top function (AXI4-Stream in and out, ap_ctrl_none)
    tb_<top>.cpp         the C simulation testbench (codes file in, codes file out)
    tb_input.txt         input codes for csim/cosim (and tb_expected.txt when given)
    run_hls.tcl          csim, csynth, cosim and IP export, in that order
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwgen.errors import ConfigError, DataError, ScheduleError
from hwgen.hw import channel_affine, softmax, winograd
from hwgen.hw.names import comment_safe, legalize
from hwgen.hw.plan import (
    AddPlan,
    ChannelAffinePlan,
    ConcatPart,
    ConcatPlan,
    ConvPlan,
    DensePlan,
    EnginePlan,
    ForkPlan,
    IntType,
    LutPlan,
    PoolPlan,
    Requant,
    Schedule,
    SoftmaxPlan,
    Stream,
    StreamPort,
    WinogradConvPlan,
)
from hwgen.hw.render import render
from hwgen.hw.schedule import signed_bits_for
from hwgen.hw.sparse import SparseDensePlan
from hwgen.numerics import Rounding

#: AMD Alveo U250 (UltraScale+ VU13P): a common data-center card
DEFAULT_PART = "xcu250-figd2104-2L-e"
DEFAULT_CLOCK_MHZ = 200.0
#: The namespace of the layer engines: no legal identifier starts with `hwgen_`, so engine
#: names can never collide with the top function, libc names or our local variables.
LAYER_NAMESPACE = "hwgen_layers"
#: ap_int's widest type (AP_INT_MAX_W in ap_common.h).
AP_INT_MAX_W = 1024
#: the widest input code a lookup-table engine is indexed by (a 2^16-entry ROM)
MAX_LUT_BITS = 16
#: weight values per line of a ROM initialiser
_VALUES_PER_LINE = 16
_PART_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def ap_type(t: IntType) -> str:
    """The ap_int spelling of a code type: ap_int<N> (signed) or ap_uint<N>."""
    return f"ap_int<{t.bits}>" if t.signed else f"ap_uint<{t.bits}>"


def storage_ctype(t: IntType, where: str) -> str:
    """The narrowest C integer type holding `t`: ROMs as plain C arrays compile fast in g++."""
    for n in (8, 16, 32, 64):
        if t.bits <= n:
            return f"int{n}_t" if t.signed else f"uint{n}_t"
    raise ScheduleError(f"{where}: {t} values are wider than 64 bits; the HLS backend stores ROM words as C integers")


def c_int(value: int) -> str:
    """A C++ integer literal of exactly `value`, safe for the full int64 range."""
    value = int(value)
    if value == -(1 << 63):
        return "(-9223372036854775807LL - 1)"
    if -(1 << 31) < value < (1 << 31):
        return str(value)
    return f"{value}LL" if value < (1 << 63) else f"{value}ULL"


def c_initializer(matrix: np.ndarray, indent: str) -> str:
    """Rows of a 2-D integer array as C initialiser lines: `{a, b, ...},` per row, wrapped."""
    lines: list[str] = []
    for row in np.asarray(matrix, dtype=np.int64).tolist():
        vals = [str(v) for v in row]
        chunks = [", ".join(vals[i : i + _VALUES_PER_LINE]) for i in range(0, len(vals), _VALUES_PER_LINE)]
        lines.append(indent + "{" + (",\n" + indent + " ").join(chunks) + "},")
    return "\n".join(lines)


@dataclass(frozen=True)
class RequantSpelling:
    """One requantization step, spelled for the template (widths decided here, not there)."""

    mode: str  #: FLOOR, HALF_UP or HALF_EVEN (the Rounding member's name)
    shift: int  #: > 0: divide by 2**shift with `mode`; <= 0: exact multiply by 2**-shift
    wide: str  #: the ap_int type the shift is computed in (cannot overflow)
    half: str  #: literal 2**(shift-1), the rounding offset (shift > 0 only)
    lo: str  #: clamp bounds, literals
    hi: str
    scaled: bool = False  #: imported scales: acc * RQ_M[c] + RQ_B[c] in `prod_t` comes first
    prod_t: str = ""  #: the ap_int type holding acc * M0 + offset exactly (scaled only)
    float32: bool = False  #: onnxruntime's float32 requant in integers; RQ_B holds the shift n per channel
    f_a_w: int = 0  #: float32: |acc| bits with a carry bit (Requant.float32_widths)
    f_q_w: int = 0  #: float32: |acc| * M bits with a carry bit
    f_t_w: int = 0  #: float32: the final half-even sum's bits
    f_acc_round: bool = False  #: float32: |acc| may reach 2**24 (float32(acc) rounds)


@dataclass(frozen=True)
class Rom:
    """A constant table of a layer: its codes' ap type, its C storage type and its initialiser."""

    code_t: str  #: the ap_int type of one entry (the ROM's width in synthesis)
    store: str  #: C integer type of the array in C simulation
    exact: bool  #: `store` is exactly as wide as the codes (no synthesis-only ROM type needed)
    init: str  #: initialiser lines


@dataclass(frozen=True)
class DenseSpelling:
    """Everything the dense template prints that is not a plan field as is."""

    in_t: str
    w_t: str
    prod_t: str
    acc_t: str
    bias_t: str
    out_t: str
    steps: int  #: cycles per fold: max(SF, PE) (SF tiles issued, PE results emitted)
    w_rom: Rom  #: word a = nf*SF + sf holds the PE x SIMD tile p-major
    b_rom: Rom  #: [nf][p] = bias of output nf*PE + p
    requant: RequantSpelling
    m_rom: Rom | None = None  #: [nf][p] = requant multiplier M0 of output nf*PE + p (imported scales)
    o_rom: Rom | None = None  #: [nf][p] = requant offset of output nf*PE + p, in 2**-shift output codes

    @property
    def weights(self) -> str:
        return self.w_rom.init

    @property
    def biases(self) -> str:
        return self.b_rom.init


@dataclass(frozen=True)
class ConvSpelling:
    """The conv template's types, ROMs and loop bounds (ConvPlan's numbers, derived here)."""

    in_t: str
    w_t: str
    prod_t: str
    acc_t: str
    out_t: str
    cf: int  #: input channel folds per tap: cg / SIMD
    sf: int  #: steps of one output fold: kh * kw * cf
    nf: int  #: output folds per pixel: channels_out / PE
    steps: int  #: cycles per fold: max(SF, PE)
    rows: int  #: padded rows the window walks (every input row, and the bottom padding an output needs)
    cols: int  #: padded columns likewise
    cycles: int  #: loop iterations per sample of this C++ engine: window steps, then folds (not overlapped)
    w_rom: Rom  #: word nf*SF + (u*kw + v)*CF + cf holds the PE x SIMD tile p-major
    b_rom: Rom  #: [nf][p] = bias of output channel nf*PE + p
    requant: RequantSpelling
    m_rom: Rom | None = None  #: [nf][p] = requant multiplier M0 of output channel nf*PE + p (imported scales)
    o_rom: Rom | None = None  #: [nf][p] = requant offset of output channel nf*PE + p

    @property
    def weights(self) -> str:
        return self.w_rom.init

    @property
    def biases(self) -> str:
        return self.b_rom.init


@dataclass(frozen=True)
class PoolSpelling:
    in_t: str
    acc_t: str
    out_t: str
    is_global: bool  #: the window is the whole image: per-channel running results, no line buffer
    rows: int
    cols: int
    cycles: int  #: loop iterations per sample of this C++ engine
    pad: str  #: the code a padding tap holds: 0 (avg: padding counts as zeros), min code (max: never wins)
    requant: RequantSpelling | None  #: avg: (sum * mult) -> out; None for max


@dataclass(frozen=True)
class AddSpelling:
    a_t: str
    b_t: str
    sum_t: str
    out_t: str
    requant: RequantSpelling


@dataclass(frozen=True)
class ForkSpelling:
    elem_t: str


@dataclass(frozen=True)
class ConcatPartSpelling:
    in_t: str
    rq: RequantSpelling  #: onto the output scale


@dataclass(frozen=True)
class ConcatSpelling:
    out_t: str
    parts: tuple[tuple[ConcatPart, ConcatPartSpelling], ...]


@dataclass(frozen=True)
class LutSpelling:
    in_t: str
    out_t: str
    lo: str  #: the smallest input code (table entry 0)
    rom: Rom

    @property
    def table(self) -> str:
        return self.rom.init


@dataclass(frozen=True)
class SparseSpelling:
    """The sparse engine's types and ROMs: entries padded to the largest PE, [PES][...] each."""

    in_t: str
    w_t: str
    prod_t: str
    acc_t: str
    out_t: str
    depth: int  #: entries per PE ROM row (the largest PE's, at least 1)
    max_col: int  #: the most entries one PE holds in one column (the inner loop's bound)
    v_rom: Rom  #: [PES][depth] weight codes (0: padding)
    z_rom: Rom  #: [PES][depth] relative row indices
    p_rom: Rom  #: [PES][K+1] column pointers
    b_rom: Rom  #: [PES][ROWS] biases of rows r*PES + pe
    requant: RequantSpelling
    summary: str  #: one line saying what the engine computes
    huff: HuffmanSpelling | None = None  #: Huffman-coded weights (then v_rom is unused)


@dataclass(frozen=True)
class HuffmanSpelling:
    """A Huffman-fed sparse engine's streams and decoder tables (hwgen.hw.huffman.HuffmanWeights)."""

    word_bits: int  #: W (a power of two)
    pos_bits: int  #: log2(W)
    window: int  #: L: the longest code
    len_bits: int  #: bits of a code length 1..L
    rank_bits: int
    bit_bits: int  #: bits of a bit address {word, bit in word}
    words: int  #: stream words per PE (the largest PE's, zero padded)
    symbols: int  #: coded symbols (entries of T)
    len_base: int  #: code length before any comparator (limits of 0 always count)
    limits: list[tuple[int, str]]  #: (length l, hex limit) of the comparators
    deltas: list[int]  #: (offset - first)[l] mod 2**rank_bits for l = 1..L
    s_rom: Rom  #: [PES][words] stream words
    c_rom: Rom  #: [PES][K] first code bit of each column
    t_rom: Rom  #: [symbols] weight code of each canonical rank
    summary: str


#: the engine kind each plan type is emitted as (templates/hls/<kind>.h.j2)
ENGINES: dict[type, str] = {
    DensePlan: "dense",
    SparseDensePlan: "sparse_dense",
    ConvPlan: "conv",
    WinogradConvPlan: "winograd_conv",
    PoolPlan: "pool",
    AddPlan: "add",
    ForkPlan: "fork",
    ConcatPlan: "concat",
    LutPlan: "lut",
    SoftmaxPlan: "softmax",
    ChannelAffinePlan: "channel_affine",
}


def _where(plan: EnginePlan) -> str:
    return f"layer '{plan.name}' (ONNX {plan.source!r})"


def requant_spelling(rq: Requant, acc: IntType, where: str) -> RequantSpelling:
    """The widths of the explicit rounding arithmetic, from the accumulator's width and the shift."""
    a = acc.bits + (0 if acc.signed else 1)  # a signed type holding every acc value
    if rq.float32:
        return _float32_spelling(rq, acc, where)
    if rq.scaled:
        if rq.prod_type is None:
            raise ScheduleError(f"{where}: a requantization multiplier without a product type; rebuild the plan")
        a = rq.prod_type.bits  # the shift-round reads acc * M0 + offset
    # right shift: one bit above max(acc, shift), so acc + 2**(shift-1) cannot overflow and the
    # shift stays below the width; left shift: room for the exact product acc * 2**-shift
    wide = max(a, rq.shift) + 1 if rq.shift > 0 else a - rq.shift
    if wide > AP_INT_MAX_W:
        raise ScheduleError(f"{where}: requantization needs {wide} bits, over ap_int's {AP_INT_MAX_W}")
    return RequantSpelling(
        mode=Rounding(rq.rounding).name,
        shift=rq.shift,
        wide=f"ap_int<{wide}>",
        half=c_int(1 << (rq.shift - 1)) if rq.shift > 0 else "0",
        lo=c_int(rq.lo),
        hi=c_int(rq.hi),
        scaled=rq.scaled,
        prod_t=ap_type(rq.prod_type) if rq.prod_type is not None else "",
    )


def _float32_spelling(rq: Requant, acc: IntType, where: str) -> RequantSpelling:
    """onnxruntime's float32 requant in integer steps (integer_kernels.requantize_float32_integer)."""
    w = rq.float32_widths(acc.bits)
    if w.t_bits + 1 > AP_INT_MAX_W:
        raise ScheduleError(f"{where}: float32 requantization needs {w.t_bits + 1} bits, over ap_int's {AP_INT_MAX_W}")
    return RequantSpelling(
        mode=Rounding.HALF_EVEN.name,
        shift=rq.shift,
        wide=f"ap_int<{w.t_bits + 1}>",
        half="0",
        lo=c_int(rq.lo),
        hi=c_int(rq.hi),
        scaled=True,
        float32=True,
        f_a_w=w.a_bits,
        f_q_w=w.q_bits,
        f_t_w=w.t_bits,
        f_acc_round=w.acc_round,
    )


def requant_roms(rq: Requant, nf: int, pe: int, where: str, acc: IntType | None = None) -> dict[str, Rom]:
    """The per-channel multiplier and offset ROMs of a scaled requant ([nf][p], like the bias ROM); {} otherwise.

    float32 requants keep the bias in the accumulator: their second ROM holds the shift n per channel
    (capped by the accumulator `acc`'s widths)."""
    if not rq.scaled:
        return {}
    if rq.float32 and acc is None:
        raise ScheduleError(f"{where}: a float32 requantization's shift ROM needs the accumulator type")  # internal
    m = np.array(rq.multiplier, dtype=np.int64)
    o = np.array(rq.float32_widths(acc.bits).shifts if rq.float32 and acc else rq.offset, dtype=np.int64)
    m_t = IntType(max(1, int(m.max()).bit_length()), False)
    o_t = IntType(signed_bits_for(int(min(o.min(), 0)), int(max(o.max(), 0))), True)
    return {"m_rom": _rom(m.reshape(nf, pe), m_t, where), "o_rom": _rom(o.reshape(nf, pe), o_t, where)}


def c_table(values: np.ndarray, indent: str) -> str:
    """A 1-D integer array as C initialiser lines, `_VALUES_PER_LINE` values a line."""
    vals = [str(v) for v in np.asarray(values, dtype=np.int64).tolist()]
    return "\n".join(
        indent + ", ".join(vals[i : i + _VALUES_PER_LINE]) + "," for i in range(0, len(vals), _VALUES_PER_LINE)
    )


def _rom(values: np.ndarray, t: IntType, where: str, indent: str = " " * 8) -> Rom:
    """A ROM of codes of type `t`: 2-D arrays row by row, 1-D tables as wrapped lines."""
    values = np.asarray(values, dtype=np.int64)
    init = c_table(values, indent) if values.ndim == 1 else c_initializer(values, indent)
    return Rom(code_t=ap_type(t), store=storage_ctype(t, where), exact=t.bits in (8, 16, 32, 64), init=init)


def dense_spelling(plan: DensePlan) -> DenseSpelling:
    """ROM initialisers and type spellings of one dense engine (ROM layout as DensePlan documents)."""
    where = _where(plan)
    pe, simd, sf, nf = plan.pe, plan.simd, plan.sf, plan.nf
    # [NF*PE, SF*SIMD] -> [NF, PE, SF, SIMD] -> [NF, SF, PE, SIMD] -> word nf*SF+sf, element p*SIMD+s
    words = plan.weights.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
    return DenseSpelling(
        in_t=ap_type(plan.inp),
        w_t=ap_type(plan.w),
        prod_t=ap_type(plan.prod),
        acc_t=ap_type(plan.acc),
        bias_t=ap_type(plan.bias),
        out_t=ap_type(plan.out),
        steps=max(sf, pe),
        w_rom=_rom(words, plan.w, where),
        b_rom=_rom(plan.biases.reshape(nf, pe), plan.bias, where),
        requant=requant_spelling(plan.requant, plan.acc, where),
        **requant_roms(plan.requant, nf, pe, where, plan.acc),
    )


def sparse_spelling(plan: SparseDensePlan) -> SparseSpelling:
    """ROM initialisers of the sparse engine (layout as hwgen.passes.encode_sparse documents)."""
    where = _where(plan)
    enc = plan.csc
    depth = max(1, max(c.entries for c in enc.pe_columns))
    vals = np.zeros((plan.pes, depth), dtype=np.int64)
    zs = np.zeros((plan.pes, depth), dtype=np.int64)
    for p, c in enumerate(enc.pe_columns):
        vals[p, : c.entries] = c.values
        zs[p, : c.entries] = c.zeros
    ptrs = np.stack([c.col_ptr for c in enc.pe_columns])
    bias = np.zeros((plan.pes, plan.rows), dtype=np.int64)
    for p in range(plan.pes):
        local = plan.biases[p :: plan.pes]
        bias[p, : local.size] = local
    z_t = IntType(max(1, plan.index_bits), False)
    p_t = IntType(max(1, int(ptrs.max()).bit_length()), False)
    huff = None if plan.huffman is None else huffman_spelling(plan, where)
    return SparseSpelling(
        in_t=ap_type(plan.inp),
        w_t=ap_type(plan.w),
        prod_t=ap_type(plan.prod),
        acc_t=ap_type(plan.acc),
        out_t=ap_type(plan.out),
        depth=depth,
        max_col=max(1, int(enc.counts().max(initial=0))),
        v_rom=_rom(vals, plan.w, where),
        z_rom=_rom(zs, z_t, where),
        p_rom=_rom(ptrs, p_t, where),
        b_rom=_rom(bias, plan.bias, where),
        requant=requant_spelling(plan.requant, plan.acc, where),
        summary=(
            f"{plan.name} (ONNX '{comment_safe(plan.source)}'): sparse dense {plan.in_features}->{plan.out_features} "
            f"PEs={plan.pes} index={plan.index_bits}b density={100 * plan.density:.1f}% "
            f"entries={enc.entries} (padding {enc.padding}) acc={plan.acc}"
            + ("" if huff is None else f" weights=huffman<={huff.window}b")
        ),
        huff=huff,
    )


def huffman_spelling(plan: SparseDensePlan, where: str) -> HuffmanSpelling:
    """The ROMs and decoder tables of a sparse engine whose weight codes are Huffman streams."""
    from hwgen.hw.huffman import check_weights

    hw = plan.huffman
    assert hw is not None
    check_weights(hw, plan.csc, where)
    n_words = max(hw.words(p).size for p in range(plan.pes))
    words = np.zeros((plan.pes, n_words), dtype=np.int64)
    for p in range(plan.pes):
        w = hw.words(p)
        words[p, : w.size] = w
    window, limits = hw.window, hw.limits()
    return HuffmanSpelling(
        word_bits=hw.word_bits,
        pos_bits=(hw.word_bits - 1).bit_length(),
        window=window,
        len_bits=window.bit_length(),
        rank_bits=hw.rank_bits,
        bit_bits=hw.bit_addr_bits,
        words=n_words,
        symbols=int(hw.code.sorted_symbols.size),
        len_base=1 + sum(1 for v in limits if v == 0),
        limits=[(lv, format(v, "x")) for lv, v in enumerate(limits, start=1) if 0 < v < (1 << window)],
        deltas=hw.deltas(),
        s_rom=_rom(words, IntType(hw.word_bits, False), where),
        c_rom=_rom(hw.col_bits[:, :-1], IntType(hw.bit_addr_bits, False), where),
        t_rom=_rom(hw.rank_values, plan.w, where),
        summary=(
            f"one canonical Huffman code of {hw.code.sorted_symbols.size} symbols, codes of 1..{window} bits: "
            f"{hw.payload_bits} code bits for {hw.entries} entries (entropy bound {hw.entropy_bits:.1f})"
        ),
    )


def walked(size: int, pad_begin: int, kernel: int, stride: int, out: int) -> int:
    """Padded positions a window walks along one axis: every input, and the end padding an output needs."""
    return max(pad_begin + size, (out - 1) * stride + kernel)


def conv_spelling(plan: ConvPlan) -> ConvSpelling:
    """ROM layout and loop bounds of the line-buffer conv engine (see templates/hls/conv.h.j2)."""
    where = _where(plan)
    pe, simd = plan.pe, plan.simd
    (kh, kw), taps = plan.kernel, plan.kernel[0] * plan.kernel[1]
    cf, nf = plan.cg // simd, plan.channels_out // pe
    # [M, CG, KH, KW] -> [NF, PE, CF, SIMD, T] -> [NF, T, CF, PE, SIMD]: word nf*SF + t*CF + cf, element p*SIMD + s
    words = plan.weights.reshape(nf, pe, cf, simd, taps).transpose(0, 4, 2, 1, 3).reshape(nf * taps * cf, pe * simd)
    rows = walked(plan.in_h, plan.pads_begin[0], kh, plan.stride[0], plan.out_h)
    cols = walked(plan.in_w, plan.pads_begin[1], kw, plan.stride[1], plan.out_w)
    steps = max(taps * cf, pe)
    return ConvSpelling(
        in_t=ap_type(plan.inp),
        w_t=ap_type(plan.w),
        prod_t=ap_type(plan.prod),
        acc_t=ap_type(plan.acc),
        out_t=ap_type(plan.out),
        cf=cf,
        sf=taps * cf,
        nf=nf,
        steps=steps,
        rows=rows,
        cols=cols,
        cycles=rows * cols * plan.channels_in + plan.out_h * plan.out_w * nf * steps + pe,
        w_rom=_rom(words, plan.w, where),
        b_rom=_rom(plan.biases.reshape(nf, pe), plan.bias, where),
        requant=requant_spelling(plan.requant, plan.acc, where),
        **requant_roms(plan.requant, nf, pe, where, plan.acc),
    )


def is_global_pool(plan: PoolPlan) -> bool:
    """The window is the whole image: no padding, one output pixel."""
    return (
        plan.kernel == (plan.in_h, plan.in_w)
        and (plan.out_h, plan.out_w) == (1, 1)
        and not any(plan.pads_begin + plan.pads_end)
    )


def pool_spelling(plan: PoolPlan) -> PoolSpelling:
    where = _where(plan)
    (kh, kw), avg, c = plan.kernel, plan.kind == "avg", plan.channels
    rq = Requant(plan.shift, plan.rounding, plan.lo, plan.hi)
    is_global = is_global_pool(plan)
    rows = walked(plan.in_h, plan.pads_begin[0], kh, plan.stride[0], plan.out_h)
    cols = walked(plan.in_w, plan.pads_begin[1], kw, plan.stride[1], plan.out_w)
    steps = plan.in_h * plan.in_w if is_global else rows * cols
    return PoolSpelling(
        in_t=ap_type(plan.inp),
        acc_t=ap_type(plan.acc),
        out_t=ap_type(plan.out),
        is_global=is_global,
        rows=rows,
        cols=cols,
        cycles=(steps + plan.out_h * plan.out_w) * c,
        pad=f"in_t({c_int(0 if avg else plan.inp.lo)})",
        requant=requant_spelling(rq, plan.acc, where) if avg else None,
    )


def add_spelling(plan: AddPlan) -> AddSpelling:
    return AddSpelling(
        a_t=ap_type(plan.a),
        b_t=ap_type(plan.b),
        sum_t=ap_type(plan.sum),
        out_t=ap_type(plan.out),
        requant=requant_spelling(plan.requant, plan.sum, _where(plan)),
    )


def concat_spelling(plan: ConcatPlan) -> ConcatSpelling:
    where = _where(plan)
    parts = tuple(
        (part, ConcatPartSpelling(ap_type(part.inp), requant_spelling(part.requant, part.inp, f"{where} input {i}")))
        for i, part in enumerate(plan.parts)
    )
    return ConcatSpelling(out_t=ap_type(plan.out), parts=parts)


def lut_spelling(plan: LutPlan) -> LutSpelling:
    return LutSpelling(
        in_t=ap_type(plan.inp),
        out_t=ap_type(plan.out),
        lo=c_int(plan.inp.lo),
        rom=_rom(plan.table, plan.out, _where(plan)),
    )


def spelling(plan: EnginePlan) -> object:
    """The template context of one engine beside its plan."""
    if isinstance(plan, DensePlan):
        return dense_spelling(plan)
    if isinstance(plan, SparseDensePlan):
        return sparse_spelling(plan)
    if isinstance(plan, ConvPlan):
        return conv_spelling(plan)
    if isinstance(plan, WinogradConvPlan):
        return winograd.hls_spelling(plan)
    if isinstance(plan, PoolPlan):
        return pool_spelling(plan)
    if isinstance(plan, AddPlan):
        return add_spelling(plan)
    if isinstance(plan, ForkPlan):
        return ForkSpelling(ap_type(plan.elem))
    if isinstance(plan, ConcatPlan):
        return concat_spelling(plan)
    if isinstance(plan, LutPlan):
        return lut_spelling(plan)
    if isinstance(plan, SoftmaxPlan):
        return softmax.hls_spelling(plan)
    if isinstance(plan, ChannelAffinePlan):
        return channel_affine.hls_spelling(plan)
    raise ScheduleError(f"{_where(plan)}: the HLS backend has no template for engine '{plan.engine}'")


# -- checks ------------------------------------------------------------------------------------
Port = tuple[IntType, int]  #: what an engine port carries per sample: element type, element count


def engine_ports(p: EnginePlan) -> tuple[list[Port], list[Port]]:
    """The (element type, count) of each input and output stream an engine reads and writes."""
    if isinstance(p, DensePlan | SparseDensePlan):
        return [(p.inp, p.in_features)], [(p.out, p.out_features)]
    if isinstance(p, ConvPlan | WinogradConvPlan):
        return [(p.inp, p.in_h * p.in_w * p.channels_in)], [(p.out, p.out_h * p.out_w * p.channels_out)]
    if isinstance(p, PoolPlan):
        return [(p.inp, p.in_h * p.in_w * p.channels)], [(p.out, p.out_h * p.out_w * p.channels)]
    if isinstance(p, AddPlan):
        return [(p.a, p.count), (p.b, p.count)], [(p.out, p.count)]
    if isinstance(p, ForkPlan):
        return [(p.elem, p.count)], [(p.elem, p.count)] * len(p.outputs)
    if isinstance(p, ConcatPlan):
        total = p.pixels * sum(part.channels for part in p.parts)
        return [(part.inp, p.pixels * part.channels) for part in p.parts], [(p.out, total)]
    if isinstance(p, LutPlan | SoftmaxPlan | ChannelAffinePlan):
        return [(p.inp, p.count)], [(p.out, p.count)]
    raise ScheduleError(f"{_where(p)}: the HLS backend has no template for engine '{p.engine}'")


def _range_problem(values: np.ndarray, t: IntType, what: str) -> str | None:
    """A message when integer `values` do not all fit `t`, else None."""
    if values.size and (int(values.min()) < t.lo or int(values.max()) > t.hi):
        return f"{what}: codes span [{values.min()}, {values.max()}], outside {t} [{t.lo}, {t.hi}]"
    return None


def _check_requant(rq: Requant, out: IntType, where: str) -> None:
    if not (out.lo <= rq.lo <= rq.hi <= out.hi):
        raise ScheduleError(f"{where}: clamp [{rq.lo}, {rq.hi}] is not inside the output type {out}")


def _check_rom(values: np.ndarray, t: IntType, where: str, what: str) -> None:
    problem = _range_problem(values, t, f"{where} {what}")
    if problem:
        raise ScheduleError(problem)


def _check_window(p: ConvPlan | PoolPlan, where: str) -> None:
    """Output size, stride and padding of a sliding window agree (ONNX floor rule, no ceil mode)."""
    for axis, (size, k, st, pb, pe_, out) in enumerate(
        zip((p.in_h, p.in_w), p.kernel, p.stride, p.pads_begin, p.pads_end, (p.out_h, p.out_w), strict=True)
    ):
        if min(size, k, st, out) < 1 or min(pb, pe_) < 0 or out != (size + pb + pe_ - k) // st + 1:
            raise ScheduleError(
                f"{where}: axis {axis}: {size} inputs, kernel {k}, stride {st}, pads ({pb}, {pe_}) do not give "
                f"{out} outputs (floor((in + pads - kernel) / stride) + 1)"
            )


def _check_engine(p: EnginePlan) -> None:
    """Plan-internal consistency of one engine: shapes, foldings, ROM ranges, clamps."""
    where = _where(p)
    if p.engine != ENGINES.get(type(p)):
        raise ScheduleError(f"{where}: the HLS backend has no template for engine '{p.engine}' ({type(p).__name__})")
    ins, outs = engine_ports(p)
    types = [t for t, _ in ins + outs]
    if isinstance(p, DensePlan | ConvPlan | SparseDensePlan):
        types += [p.w, p.prod, p.acc, p.bias]
    if isinstance(p, PoolPlan):
        types.append(p.acc)
    if isinstance(p, AddPlan):
        types.append(p.sum)
    if max(t.bits for t in types) > AP_INT_MAX_W:
        raise ScheduleError(f"{where}: a type is wider than ap_int's {AP_INT_MAX_W} bits")
    if isinstance(p, DensePlan):
        if p.in_features % p.simd or p.out_features % p.pe:
            raise ScheduleError(f"{where}: PE={p.pe} must divide {p.out_features} and SIMD={p.simd} {p.in_features}")
        if p.weights.shape != (p.out_features, p.in_features) or p.biases.shape != (p.out_features,):
            raise ScheduleError(f"{where}: weights {p.weights.shape} / biases {p.biases.shape} do not match the plan")
    elif isinstance(p, SparseDensePlan):
        from hwgen.passes.encode_sparse import decode_csc

        if p.weights.shape != (p.out_features, p.in_features) or p.biases.shape != (p.out_features,):
            raise ScheduleError(f"{where}: weights {p.weights.shape} / biases {p.biases.shape} do not match the plan")
        if p.csc.pes != p.pes or not np.array_equal(decode_csc(p.csc), p.weights):
            raise ScheduleError(f"{where}: the CSC encoding does not decode to the plan's weights; rebuild the plan")
    elif isinstance(p, WinogradConvPlan):
        winograd.check_plan(p)
    elif isinstance(p, ConvPlan):
        _check_window(p, where)
        if p.groups < 1 or p.channels_in % p.groups or p.channels_out % p.groups:
            raise ScheduleError(f"{where}: groups={p.groups} must divide {p.channels_in} and {p.channels_out}")
        if p.channels_out % p.pe or p.cg % p.simd:
            raise ScheduleError(f"{where}: PE={p.pe} must divide {p.channels_out} and SIMD={p.simd} {p.cg}")
        if p.mg % p.pe and not (p.cg == 1 and p.mg == 1):
            raise ScheduleError(
                f"{where}: PE={p.pe} must divide the {p.mg} output channels per group (or the conv be depthwise), "
                "so the PE lanes of a fold read the same input channels"
            )
        shape = (p.channels_out, p.cg, *p.kernel)
        if p.weights.shape != shape or p.biases.shape != (p.channels_out,):
            raise ScheduleError(
                f"{where}: weights {p.weights.shape} / biases {p.biases.shape}, expected {shape} / ({p.channels_out},)"
            )
    elif isinstance(p, PoolPlan):
        _check_window(p, where)
        if p.kind not in ("max", "avg"):
            raise ScheduleError(f"{where}: pooling kind {p.kind!r} has no template (max, avg)")
        if p.kind == "max":
            if p.out.lo > p.inp.lo or p.out.hi < p.inp.hi:
                raise ScheduleError(f"{where}: max pooling passes codes through, but {p.inp} codes do not fit {p.out}")
            if any(pad >= k for pad, k in zip(p.pads_begin + p.pads_end, p.kernel * 2, strict=True)):
                raise ScheduleError(f"{where}: padding {p.pads_begin + p.pads_end} would make windows of padding only")
        else:
            _check_requant(Requant(p.shift, p.rounding, p.lo, p.hi), p.out, where)
            if p.mult < 1:
                raise ScheduleError(f"{where}: average multiplier {p.mult} must be >= 1")
    elif isinstance(p, AddPlan):
        if min(p.align_a, p.align_b) < 0:
            raise ScheduleError(f"{where}: alignment shifts ({p.align_a}, {p.align_b}) must be >= 0")
    elif isinstance(p, ForkPlan):
        if len(p.outputs) < 2:
            raise ScheduleError(f"{where}: a fork needs two or more outputs, has {len(p.outputs)}")
    elif isinstance(p, ConcatPlan):
        for i, part in enumerate(p.parts):
            _check_requant(part.requant, p.out, f"{where} input {i}")
    elif isinstance(p, LutPlan):
        size = p.inp.hi - p.inp.lo + 1
        if p.table.shape != (size,):
            raise ScheduleError(f"{where}: a table of {p.table.shape} entries for {size} input codes")
        if size > 1 << MAX_LUT_BITS:
            raise ScheduleError(f"{where}: a {size}-entry table; the HLS backend takes at most 2^{MAX_LUT_BITS}")
        _check_rom(p.table, p.out, where, "table")
    elif isinstance(p, SoftmaxPlan):
        softmax.check_plan(p)
    elif isinstance(p, ChannelAffinePlan):
        channel_affine.check_plan(p)
    if isinstance(p, DensePlan | ConvPlan | SparseDensePlan):
        _check_rom(p.weights, p.w, where, "weights")
        _check_rom(p.biases, p.bias, where, "biases")
    if isinstance(p, DensePlan | ConvPlan | AddPlan | SparseDensePlan):
        _check_requant(p.requant, p.out, where)
        if p.requant.scaled and not isinstance(p, DensePlan | ConvPlan):
            raise ScheduleError(f"{where}: only the dense and conv engines have a requantization multiplier")
        if p.requant.scaled and len(p.requant.multiplier) != len(p.biases):
            raise ScheduleError(f"{where}: {len(p.requant.multiplier)} multipliers for {len(p.biases)} outputs")


def schedule_streams(schedule: Schedule) -> tuple[Stream, ...]:
    """The Schedule's streams; a hand-made chain without them gets the chain's (as chain_schedule names them)."""
    if schedule.streams or not schedule.is_chain:
        return schedule.streams
    names = [schedule.input.name] + [f"{p.name}_out" for p in schedule.layers[:-1]] + [schedule.output.name]
    first = Stream(names[0], schedule.input.source, schedule.input.elem, (schedule.input.count,))
    return (first, *(Stream(names[i + 1], p.source, p.out, (p.out_features,)) for i, p in enumerate(schedule.layers)))


@dataclass(frozen=True)
class Wiring:
    """The streams of a Schedule and which engine reads and writes each (by index into `streams`)."""

    streams: tuple[Stream, ...]
    engines: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  #: per layer: (input indices, output indices)
    input: int  #: the input port's stream
    output: int  #: the output port's stream


def wiring(schedule: Schedule) -> Wiring:
    """Resolve every engine's stream names, and the ports' streams (named like the ports).

    A chain whose stream names repeat (a port named like a layer's output), or whose plans carry
    no stream names (made without chain_schedule), is wired by position.
    """
    streams = schedule_streams(schedule)
    names = [s.name for s in streams]
    layers = schedule.layers
    unnamed = any(not p.inputs or not p.outputs for p in layers)
    if len(set(names)) != len(names) or unnamed:
        if schedule.is_chain and len(streams) == len(layers) + 1:
            return Wiring(streams, tuple(((i,), (i + 1,)) for i in range(len(layers))), 0, len(layers))
        if unnamed:
            raise ScheduleError(f"model '{schedule.model}': engines without input/output stream names")
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ScheduleError(f"model '{schedule.model}': stream names {dup} are used twice")
    index = {n: i for i, n in enumerate(names)}
    engines = []
    for p in layers:
        missing = [s for s in (*p.inputs, *p.outputs) if s not in index]
        if missing:
            raise ScheduleError(f"{_where(p)}: streams {missing} are not in the Schedule's streams")
        engines.append((tuple(index[s] for s in p.inputs), tuple(index[s] for s in p.outputs)))
    for port, kind in ((schedule.input, "input"), (schedule.output, "output")):
        if port.name not in index:
            raise ScheduleError(f"{kind} '{port.source}': no stream is named '{port.name}' like the port")
    if schedule.input.name == schedule.output.name:
        raise ScheduleError(
            f"model '{schedule.model}': the input and output ports share stream '{schedule.input.name}'"
        )
    return Wiring(streams, tuple(engines), index[schedule.input.name], index[schedule.output.name])


def check_schedule(schedule: Schedule) -> None:
    """Refuse a Schedule the HLS templates cannot express exactly, naming the layer and the fix."""
    if not schedule.layers:
        raise ScheduleError(f"model '{schedule.model}': no layers to emit")
    names = [p.name for p in schedule.layers]
    if len(set(names)) != len(names) or schedule.top in names:
        raise ScheduleError(
            f"model '{schedule.model}': top '{schedule.top}' and layer names {names} must be distinct "
            "(build them with hw.names.legalize(name, taken))"
        )
    files = [*names, schedule.top, "hwgen_types"]
    if len({f.lower() for f in files}) != len(files):
        raise ScheduleError(f"model '{schedule.model}': names {files} differ only in case; file names would collide")
    for port, kind in ((schedule.input, "input"), (schedule.output, "output")):
        if port.elem.bits > (64 if port.elem.signed else 63):
            raise ScheduleError(f"{kind} '{port.source}': {port.elem} codes do not fit the testbench's int64 I/O")
    for p in schedule.layers:
        _check_engine(p)
    w = wiring(schedule)
    streams = w.streams
    # every stream: one writer (the input port, or an engine before its reader), one reader
    writer: dict[int, EnginePlan | None] = {w.input: None}
    readers: dict[int, int] = {}
    for p, (ins, outs) in zip(schedule.layers, w.engines, strict=True):
        want_in, want_out = engine_ports(p)
        if len(ins) != len(want_in) or len(outs) != len(want_out):
            raise ScheduleError(
                f"{_where(p)}: reads {len(ins)} and writes {len(outs)} streams; "
                f"a {p.engine} engine reads {len(want_in)} and writes {len(want_out)}"
            )
        for i, (t, n) in zip(ins, want_in, strict=True):
            s = streams[i]
            if i not in writer:
                raise ScheduleError(f"{_where(p)} reads stream '{s.name}' before any engine writes it")
            readers[i] = readers.get(i, 0) + 1
            src = writer[i]
            if (s.elem, s.count) != (t, n):
                fed = _where(src) if src is not None else f"input '{schedule.input.source}'"
                raise ScheduleError(
                    f"{fed} -> {_where(p)}: stream '{s.name}' carries {s.count}x{s.elem}, reads {n}x{t}"
                )
        for i, (t, n) in zip(outs, want_out, strict=True):
            s = streams[i]
            if i in writer:
                raise ScheduleError(f"{_where(p)} writes stream '{s.name}', which already has a writer")
            writer[i] = p
            if (s.elem, s.count) != (t, n):
                raise ScheduleError(f"{_where(p)} writes {n}x{t} into stream '{s.name}' of {s.count}x{s.elem}")
    port_in, port_out = streams[w.input], streams[w.output]
    if (port_in.elem, port_in.count) != (schedule.input.elem, schedule.input.count):
        consumer = next(p for p, (ins, _) in zip(schedule.layers, w.engines, strict=True) if w.input in ins)
        raise ScheduleError(
            f"input '{schedule.input.source}': {schedule.input.count} x {schedule.input.elem} does not feed "
            f"{_where(consumer)} ({port_in.count} x {port_in.elem})"
        )
    producer = writer.get(w.output)
    if producer is None or (port_out.elem, port_out.count) != (schedule.output.elem, schedule.output.count):
        what = f"{_where(producer)} produces" if producer is not None else "any engine produces"
        raise ScheduleError(
            f"output '{schedule.output.source}': {schedule.output.count} x {schedule.output.elem} is not what "
            f"{what} ({port_out.count} x {port_out.elem})"
        )
    for i, s in enumerate(streams):
        want = 0 if i == w.output else 1
        if i not in writer:
            raise ScheduleError(f"stream '{s.name}' ('{s.source}') has no writer")
        if readers.get(i, 0) != want:
            raise ScheduleError(
                f"stream '{s.name}' ('{s.source}') has {readers.get(i, 0)} readers; "
                + ("the output port must be the only one" if want == 0 else "an hls::stream has exactly one (fork it)")
            )
        if s.depth < 1:
            raise ScheduleError(f"stream '{s.name}': FIFO depth {s.depth} must be >= 1")


@dataclass(frozen=True)
class Fifo:
    """A stream between two engines, as the top function declares it."""

    var: str  #: C++ variable name (the stream's name unless it would shadow the ports `in`/`out`)
    elem_t: str
    stream: Stream


@dataclass(frozen=True)
class EngineCall:
    plan: EnginePlan
    t: object  #: the engine's spelling
    args: tuple[str, ...]  #: the stream variables, inputs then outputs


def top_wiring(schedule: Schedule) -> tuple[list[Fifo], list[EngineCall]]:
    """The FIFOs the top declares and each engine's call; the ports' streams are `in` and `out`."""
    w = wiring(schedule)
    taken = {"in", "out", *(s.name for s in w.streams)}
    var: dict[int, str] = {w.input: "in", w.output: "out"}
    for i, s in enumerate(w.streams):
        if i not in var:
            # unique (a chain may repeat a name, see wiring), and never shadowing a port
            var[i] = s.name if s.name not in ("in", "out", *var.values()) else legalize(s.name, taken)
    # declared in the order the engines write them
    written = [i for _, outs in w.engines for i in outs if i != w.output]
    fifos = [Fifo(var[i], ap_type(w.streams[i].elem), w.streams[i]) for i in written]
    calls = [
        EngineCall(p, spelling(p), tuple(var[i] for i in (*ins, *outs)))
        for p, (ins, outs) in zip(schedule.layers, w.engines, strict=True)
    ]
    return fifos, calls


def _check_codes(codes: np.ndarray, count: int, t: IntType, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != count or not np.issubdtype(codes.dtype, np.integer):
        raise DataError(f"{what}: expected integer codes of shape [N, {count}], got {codes.dtype} {codes.shape}")
    problem = _range_problem(codes, t, what)
    if problem:
        raise DataError(problem)
    return codes.astype(np.int64)


def codes_text(codes: np.ndarray) -> str:
    """One sample per line, space-separated decimal codes: the testbench's file format."""
    return "".join(" ".join(map(str, row)) + "\n" for row in np.asarray(codes, dtype=np.int64).tolist())


def smoke_inputs(schedule: Schedule) -> np.ndarray:
    """Default csim vectors when none are given: all zero, all minimum and all maximum codes."""
    t, n = schedule.input.elem, schedule.input.count
    return np.array([[v] * n for v in dict.fromkeys((0, t.lo, t.hi))], dtype=np.int64)


def _stream_order(port: StreamPort) -> str:
    """How an image port's elements travel (the testbench's files list them in this order)."""
    if len(port.shape) != 3:
        return ""
    c, h, w = port.shape
    return f"streamed channels-last: {h} x {w} pixels row by row, {c} channels each"


def _clock_period_ns(clock_mhz: float) -> str:
    if not (isinstance(clock_mhz, int | float) and 0 < clock_mhz <= 2000):
        raise ConfigError(f"clock_mhz={clock_mhz!r}: give the target clock in MHz, in (0, 2000]")
    return f"{1000.0 / clock_mhz:.6g}"


def emit_hls(
    schedule: Schedule,
    out_dir: Path,
    *,
    part: str = DEFAULT_PART,
    clock_mhz: float = DEFAULT_CLOCK_MHZ,
    inputs: np.ndarray | None = None,
    expected: np.ndarray | None = None,
) -> list[Path]:
    """Write the Vitis HLS project of `schedule` into `out_dir`; return the files written.

    `inputs` ([N, input.count] codes) become tb_input.txt, the vectors csim and cosim run
    (default: all-zero, all-min, all-max samples). With `expected` ([N, output.count], from the
    golden model) the testbench also compares and fails csim/cosim on the first mismatch.
    Same arguments -> byte-identical files (no dates, no absolute paths).
    """
    check_schedule(schedule)
    if not _PART_RE.match(part):
        raise ConfigError(f"part={part!r}: an FPGA part name has only letters, digits, '_', '.' and '-'")
    period = _clock_period_ns(clock_mhz)
    if inputs is None:
        x = smoke_inputs(schedule)
    else:
        x = _check_codes(inputs, schedule.input.count, schedule.input.elem, "inputs")
    if expected is not None:
        if inputs is None:
            raise DataError("expected outputs were given without the inputs they belong to")
        expected = _check_codes(expected, schedule.output.count, schedule.output.elem, "expected")
        if expected.shape[0] != x.shape[0]:
            raise DataError(f"expected: {expected.shape[0]} samples for {x.shape[0]} input samples")

    top = schedule.top
    fifos, engines = top_wiring(schedule)
    common = {"schedule": schedule, "ns": LAYER_NAMESPACE}
    io = {
        "in_t": ap_type(schedule.input.elem),
        "out_t": ap_type(schedule.output.elem),
        "in_scale": f"2^{-schedule.input.frac}",
        "out_scale": f"2^{-schedule.output.frac}",
        "in_order": _stream_order(schedule.input),
        "out_order": _stream_order(schedule.output),
        "out_to_int": "to_int64" if schedule.output.elem.signed else "to_uint64",
        "in_lo": c_int(schedule.input.elem.lo),
        "in_hi": c_int(schedule.input.elem.hi),
    }
    tb_files = ["tb_input.txt"] + (["tb_expected.txt"] if expected is not None else [])
    files: dict[str, str] = {"hwgen_types.h": render("hls/hwgen_types.h.j2", **common)}
    for e in engines:
        files[f"{e.plan.name}.h"] = render(f"hls/{e.plan.engine}.h.j2", plan=e.plan, t=e.t, **common)
    files[f"{top}.h"] = render("hls/top.h.j2", io=io, **common)
    files[f"{top}.cpp"] = render("hls/top.cpp.j2", io=io, fifos=fifos, engines=engines, **common)
    files[f"tb_{top}.cpp"] = render("hls/tb.cpp.j2", io=io, **common)
    files["tb_input.txt"] = codes_text(x)
    if expected is not None:
        files["tb_expected.txt"] = codes_text(expected)
    files["run_hls.tcl"] = render(
        "hls/run_hls.tcl.j2",
        part=part,
        period=period,
        clock_mhz=f"{clock_mhz:g}",
        sources=[f"{top}.cpp"],
        tb_sources=[f"tb_{top}.cpp", *tb_files],
        argv=" ".join(["tb_input.txt", "tb_output.txt", *tb_files[1:]]),
        **common,
    )
    return _write(Path(out_dir), files.items())


def _write(out_dir: Path, files: Iterable[tuple[str, str]]) -> list[Path]:
    """Write ASCII files with '\\n' line ends; rewrite only what changed (keeps mtimes for make)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files:
        path = out_dir / name
        data = text.encode("ascii")  # comment_safe and legal names keep every file ASCII
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
        written.append(path)
    return written


__all__ = [
    "DEFAULT_CLOCK_MHZ",
    "DEFAULT_PART",
    "ENGINES",
    "ap_type",
    "c_int",
    "check_schedule",
    "emit_hls",
    "top_wiring",
]
