"""The Verilog backend: a Schedule -> SystemVerilog sources (one module per file) + filelist.f.

Every number a template prints is computed here from the plans (widths of derived signals,
counter widths, ROM words, adder-tree shape, pointer steps, window tables) or taken from
`hwgen.hw.timing` / `hwgen.hw.engine_timing` (pipeline depths, output FIFO depths, line-buffer
size); templates only lay text out. Module names are `<top>_<layer>`, `<top>_hwgen_fifo` and
`<top>_hwgen_fifo_bram`, so several generated designs can be compiled together.

The top level (templates/rtl/top.sv.j2) instantiates one FIFO per stream between two engines
(Stream.depth elements; the chain form keeps Schedule.fifo_depth, 0 meaning plain wires) and the
engines; the input and output streams are the AXI4-Stream ports themselves.

Output is deterministic: the same Schedule gives byte-identical files, with no absolute paths.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.errors import ScheduleError
from hwgen.hw import channel_affine, softmax, timing, winograd
from hwgen.hw import engine_timing as et
from hwgen.hw.huffman import check_weights
from hwgen.hw.huffman import sparse_rtl_context as huffman_rtl_context
from hwgen.hw.plan import (
    AddPlan,
    ChannelAffinePlan,
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
    WinogradConvPlan,
)
from hwgen.hw.render import render
from hwgen.hw.schedule import signed_bits_for
from hwgen.hw.sparse import SPARSE_OUT_FIFO_DEPTH, SparseDensePlan
from hwgen.numerics import Rounding

_LEGAL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: the file listing the sources in compile order, paths relative to its folder
FILELIST = "filelist.f"
#: FIFOs at least this deep store their beats in a synchronous-read memory (block RAM in Yosys);
#: shallower ones in registers / distributed RAM read asynchronously
BRAM_FIFO_MIN_DEPTH = 32
#: the generic modules every design may include (reserved: no layer may take these names)
FIFO_NAME, FIFO_BRAM_NAME = "hwgen_fifo", "hwgen_fifo_bram"


def index_bits(n: int) -> int:
    """Bits of a counter/address over n values 0..n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def value_bits(n: int) -> int:
    """Bits of an unsigned counter holding 0..n (at least 1)."""
    return max(1, n.bit_length())


def stream_bits(bits: int) -> int:
    """AXI4-Stream tdata width for `bits`-bit elements: rounded up to whole bytes."""
    return -(-bits // 8) * 8


def _hex(value: int, bits: int) -> str:
    return format(int(value) & ((1 << bits) - 1), f"0{(bits + 3) // 4}x")


def _pack_words(elements: np.ndarray, bits: int) -> list[str]:
    """Hex words of a [words, n] code array, element 0 in the least significant bits."""
    mask = (1 << bits) - 1
    words = []
    for row in elements:
        value = 0
        for v in reversed(row.tolist()):
            value = (value << bits) | (int(v) & mask)
        words.append(_hex(value, bits * elements.shape[1]))
    return words


def _where(plan: EnginePlan) -> str:
    return f"layer '{plan.source}' ({plan.name})"


def _check_fits(what: str, plan: EnginePlan, values: np.ndarray, t: IntType) -> None:
    if values.size and (int(values.min()) < t.lo or int(values.max()) > t.hi):
        raise ScheduleError(
            f"{_where(plan)}: {what} codes span [{int(values.min())}, {int(values.max())}], "
            f"outside {t}; the plan is inconsistent, rebuild it with hwgen.hw.schedule / hwgen.hw.lower"
        )


def _check_clamp(plan: EnginePlan, rq: Requant, out: IntType) -> None:
    if not (out.lo <= rq.lo <= rq.hi <= out.hi):
        raise ScheduleError(
            f"{_where(plan)}: requantization clamp [{rq.lo}, {rq.hi}] must lie inside the output type {out} "
            f"[{out.lo}, {out.hi}]"
        )


def _check_mac_types(plan: DensePlan | ConvPlan | SparseDensePlan) -> None:
    if not plan.w.signed or not plan.acc.signed or not plan.bias.signed:
        raise ScheduleError(
            f"{_where(plan)}: weight, bias and accumulator types must be signed ({plan.w}, {plan.bias}, {plan.acc})"
        )
    if plan.bias.bits > plan.acc.bits:
        raise ScheduleError(f"{_where(plan)}: bias {plan.bias} is wider than the accumulator {plan.acc}")
    _check_fits("weight", plan, plan.weights, plan.w)
    _check_fits("bias", plan, plan.biases, plan.bias)
    _check_clamp(plan, plan.requant, plan.out)
    if plan.requant.scaled:
        _check_scaled(plan)


def _check_scaled(plan: DensePlan | ConvPlan | SparseDensePlan) -> None:
    """A multiplier requant: dense and conv engines only, one (M0, offset) per output channel, a product type."""
    rq = plan.requant
    if isinstance(plan, SparseDensePlan):
        raise ScheduleError(
            f"{_where(plan)}: its requantization multiplies by M0 (imported non-power-of-two scales), which the "
            'sparse engine has no RTL for; use the dense engine for this layer ([layers.NAME] engine = "dense")'
        )
    channels = plan.out_features if isinstance(plan, DensePlan) else plan.channels_out
    if len(rq.multiplier) != channels or len(rq.offset) != channels or rq.prod_type is None:
        raise ScheduleError(
            f"{_where(plan)}: {len(rq.multiplier)} multipliers and {len(rq.offset)} offsets for {channels} output "
            f"channels (product type {rq.prod_type}); rebuild the plan with hwgen.hw.schedule"
        )
    if min(rq.multiplier) < 0 or rq.shift < 0:
        raise ScheduleError(f"{_where(plan)}: requantization multipliers and shift must be >= 0")
    if rq.float32 and (len(rq.shifts) != channels or min(rq.shifts) < 0 or not plan.acc.signed):
        raise ScheduleError(
            f"{_where(plan)}: a float32 requantization needs one shift n >= 0 per output channel "
            f"({len(rq.shifts)} for {channels}) and a signed accumulator ({plan.acc}); rebuild the plan"
        )


def _check_plan(plan: DensePlan) -> None:
    where = _where(plan)
    if plan.engine != "dense":
        raise ScheduleError(f"{where}: engine '{plan.engine}' is not the dense engine")
    if plan.in_features % plan.simd or plan.out_features % plan.pe:
        raise ScheduleError(
            f"{where}: PE={plan.pe} / SIMD={plan.simd} do not divide {plan.out_features}/{plan.in_features}"
        )
    if plan.weights.shape != (plan.out_features, plan.in_features) or plan.biases.shape != (plan.out_features,):
        raise ScheduleError(f"{where}: weights {plan.weights.shape} / biases {plan.biases.shape} do not match the plan")
    _check_mac_types(plan)


def _requant_context(rq: Requant, req_w: int, out_w: int, acc_bits: int = 0) -> dict[str, Any]:
    """The requant macros' context; `acc_bits` (the accumulator's width) sizes a float32 requant."""
    rounding = Rounding(rq.rounding)
    if rq.float32:
        kind, rnd_add = "float32", 0
    elif rq.shift <= 0:
        kind, rnd_add = "left", 0
    elif rounding is Rounding.FLOOR:
        kind, rnd_add = "floor", 0
    elif rounding is Rounding.HALF_UP:
        kind, rnd_add = "half_up", 1 << (rq.shift - 1)
    else:
        kind, rnd_add = "half_even", (1 << (rq.shift - 1)) - 1
    return {
        "kind": kind,
        "shift": max(rq.shift, 0),
        "shift_raw": rq.shift,
        "lshift": max(-rq.shift, 0),
        "rnd_add": rnd_add,
        "rnd_add_hex": _hex(rnd_add, req_w),
        "lo": rq.lo,
        "hi": rq.hi,
        "lo_hex": _hex(rq.lo, req_w),
        "hi_hex": _hex(rq.hi, req_w),
        "lo_code_hex": _hex(rq.lo, out_w),
        "hi_code_hex": _hex(rq.hi, out_w),
        "text": f"clamp(shift_round(acc, {rq.shift}, {rounding.value}), {rq.lo}, {rq.hi})",
        "scaled": False,
        "float32": False,
        **(_scaled_context(rq, req_w, acc_bits) if rq.scaled else {}),
    }


#: hex digits per line of a packed multiplier/offset constant in the Verilog
_CONST_CHUNK_DIGITS = 64


def _packed_chunks(values: tuple[int, ...], bits: int) -> list[str]:
    """Sized hex literals of values packed element 0 lowest, most significant chunk first (a concatenation)."""
    total = len(values) * bits
    word = 0
    for v in reversed(values):
        word = (word << bits) | (int(v) & ((1 << bits) - 1))
    step = _CONST_CHUNK_DIGITS * 4
    chunks = []
    for lo in range(0, total, step):
        w = min(step, total - lo)
        chunks.append(f"{w}'h{_hex(word >> lo, w)}")
    return chunks[::-1]


def _float32_context(rq: Requant, req_w: int, acc_bits: int) -> dict[str, Any]:
    """onnxruntime's float32 requant in integers: widths (Requant.float32_widths), M and n per channel."""
    if acc_bits < 1:
        raise ScheduleError("a float32 requantization is sized by its accumulator: pass acc_bits")  # internal
    w = rq.float32_widths(acc_bits)
    if req_w <= w.t_bits:
        raise ScheduleError(f"a float32 requantization needs more than {w.t_bits} working bits, got {req_w}")
    return {
        "scaled": True,
        "float32": True,
        "channels": len(rq.multiplier),
        "m_w": w.m_bits,
        "o_w": w.n_bits,
        "m_chunks": _packed_chunks(rq.multiplier, w.m_bits),
        "o_chunks": _packed_chunks(w.shifts, w.n_bits),
        "f_a_w": w.a_bits,
        "f_q_w": w.q_bits,
        "f_t_w": w.t_bits,
        "f_acc_round": w.acc_round,
        "text": f"clamp(rint(float32(acc) * float32(M[c] * 2**-n[c])), {rq.lo}, {rq.hi})",
    }


def _scaled_context(rq: Requant, req_w: int, acc_bits: int = 0) -> dict[str, Any]:
    """The multiplier stage of an imported-scale requant: widths and the per-channel constants."""
    if rq.float32:
        return _float32_context(rq, req_w, acc_bits)
    if rq.prod_type is None or rq.prod_type.bits >= req_w:
        raise ScheduleError(f"a requantization multiplier needs a product type narrower than {req_w} bits")
    m_w = max(1, max(rq.multiplier).bit_length())
    o_w = signed_bits_for(min(0, *rq.offset), max(0, *rq.offset))
    return {
        "scaled": True,
        "channels": len(rq.multiplier),
        "m_w": m_w,
        "o_w": o_w,
        "m_chunks": _packed_chunks(rq.multiplier, m_w),
        "o_chunks": _packed_chunks(rq.offset, o_w),
        "text": f"clamp(shift_round(acc * M0[c] + offset[c], {rq.shift}, {Rounding(rq.rounding).value}), "
        f"{rq.lo}, {rq.hi}) in {rq.prod_type}",
    }


def mac_requant_width(rq: Requant, acc_bits: int, out_bits: int) -> int:
    """`requant_width` of a MAC engine: the shift-round reads acc, or acc * M0 + offset (imported scales)."""
    if rq.float32:
        return max(rq.float32_widths(acc_bits).t_bits + 1, out_bits + 1)
    src = rq.prod_type.bits if rq.scaled and rq.prod_type is not None else acc_bits
    return requant_width(src, rq.shift, out_bits)


def requant_width(src_bits: int, shift: int, out_bits: int) -> int:
    """Round/shift/clamp working width: holds src + 2**(shift-1), src << -shift and the clamp bounds.

    src_bits counts a signed source (an unsigned one needs its extra sign bit added by the caller).
    """
    return max(max(src_bits - min(shift, 0), max(shift, 0)) + 1, out_bits + 1)


def _tree_levels(simd: int) -> list[dict[str, Any]]:
    """The adder tree as levels of pairwise sums; a register after every TREE_LEVELS_PER_STAGE."""
    n_levels = timing.tree_levels(simd)
    levels, n, src = [], simd, "tree0"
    for level in range(1, n_levels + 1):
        registered = level % timing.TREE_LEVELS_PER_STAGE == 0 or level == n_levels
        dst = f"tree{level}_q" if registered else f"tree{level}"
        dst_d = f"tree{level}_d"
        levels.append(
            {
                "level": level,
                "n_in": n,
                "n_out": (n + 1) // 2,
                "pairs": n // 2,
                "odd": n % 2 == 1,
                "registered": registered,
                "src": src,
                "dst": dst,  # the level's value as read by the next level
                "dst_d": dst_d,
                "comb": dst_d if registered else dst,  # what the adders drive
            }
        )
        n, src = (n + 1) // 2, dst
    if sum(lv["registered"] for lv in levels) != timing.tree_stages(simd):
        raise AssertionError("adder tree registers disagree with hwgen.hw.timing.tree_stages")  # internal
    return levels


def _mac_operands(plan: DensePlan | ConvPlan | SparseDensePlan) -> dict[str, Any]:
    """Operand, product, accumulator and requantization widths of every MAC engine (dense, conv, sparse)."""
    out_w = plan.out.bits
    req_w = mac_requant_width(plan.requant, plan.acc.bits, out_w)
    return {
        "inp": str(plan.inp),
        "w": str(plan.w),
        "prod": str(plan.prod),
        "acc": str(plan.acc),
        "bias": str(plan.bias),
        "out": str(plan.out),
        "inp_signed": plan.inp.signed,
        "inp_w": plan.inp.bits,
        "x_w": plan.inp.bits + (0 if plan.inp.signed else 1),
        "w_w": plan.w.bits,
        # the plan's product type holds every product exactly; operands cast to it may lose
        # high bits, which is harmless modulo 2**MUL_W
        "mul_w": plan.prod.bits + (0 if plan.prod.signed else 1),
        "acc_w": plan.acc.bits,
        "bias_w": plan.bias.bits,
        "req_w": req_w,
        "out_w": out_w,
        "rq": _requant_context(plan.requant, req_w, out_w, acc_bits=plan.acc.bits),
    }


def _mac_widths(plan: DensePlan | ConvPlan) -> dict[str, Any]:
    """`_mac_operands` plus the SIMD adder tree of the dense and conv engines."""
    return {
        **_mac_operands(plan),
        "tree_levels": _tree_levels(plan.simd),
        "tree_stages": timing.tree_stages(plan.simd),
    }


def dense_desc(p: DensePlan) -> str:
    return f"dense {p.in_features}->{p.out_features} PE={p.pe} SIMD={p.simd} acc={p.acc}"


def dense_context(plan: DensePlan, top: str, fifo_module: str) -> dict[str, Any]:
    """Everything dense.sv.j2 prints for one layer."""
    _check_plan(plan)
    sf, nf, pe, simd = plan.sf, plan.nf, plan.pe, plan.simd
    fifo_depth = timing.dense_out_fifo_depth(plan.in_features, plan.out_features, pe, simd)
    t = timing.dense_timing(plan.in_features, plan.out_features, pe, simd)
    mac = _mac_widths(plan)
    levels = mac["tree_levels"]
    xg, xgroups = timing.operand_fanout(pe)

    # [nf, sf, pe, simd] -> one row per ROM word, element p*SIMD + s
    tiles = plan.weights.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
    return {
        **mac,
        "module": f"{top}_{plan.name}",
        "name": plan.name,
        "source": plan.source,
        "desc": dense_desc(plan),
        "k": plan.in_features,
        "m": plan.out_features,
        "pe": pe,
        "simd": simd,
        "xg": xg,
        "xgroups": xgroups,
        "sf": sf,
        "nf": nf,
        "sf_cw": index_bits(sf),
        "nf_cw": index_bits(nf),
        "lane_w": index_bits(simd),
        "pe_cw": index_bits(pe),
        "w_depth": nf * sf,
        "wa_w": index_bits(nf * sf),
        "buf_depth": 2 * sf,
        "ba_w": index_bits(2 * sf),
        "fifo_depth": fifo_depth,
        "credit_w": value_bits(fifo_depth),
        "sf_last": sf - 1,
        "nf_last": nf - 1,
        "lane_last": simd - 1,
        "pe_last": pe - 1,
        "wa_last": nf * sf - 1,
        "ba_last": 2 * sf - 1,
        "tree_out": levels[-1]["dst"] if levels else "tree0",
        "w_word_w": pe * simd * plan.w.bits,
        "b_word_w": pe * plan.bias.bits,
        "weight_words": _pack_words(tiles, plan.w.bits),
        "bias_words": _pack_words(plan.biases.reshape(nf, pe), plan.bias.bits),
        "fifo_module": fifo_module,
        "latency": t.latency,
        "ii": t.ii,
    }


# -- sparse dense (EIE) ------------------------------------------------------------------------
def sparse_desc(p: SparseDensePlan) -> str:
    return (
        f"sparse dense {p.in_features}->{p.out_features} PEs={p.pes} index={p.index_bits}b "
        f"density={100 * p.density:.1f}% entries={p.csc.entries} acc={p.acc}"
        + ("" if p.huffman is None else f" weights=huffman<={p.huffman.window}b")
    )


def _check_sparse(plan: SparseDensePlan) -> None:
    from hwgen.passes.encode_sparse import decode_csc

    where = _where(plan)
    m, k = plan.out_features, plan.in_features
    if plan.weights.shape != (m, k) or plan.biases.shape != (m,):
        raise ScheduleError(f"{where}: weights {plan.weights.shape} / biases {plan.biases.shape} do not match the plan")
    if not 1 <= plan.pes <= m or plan.csc.pes != plan.pes or plan.csc.index_bits != plan.index_bits:
        raise ScheduleError(f"{where}: {plan.pes} PEs / {plan.index_bits}-bit index disagree with its CSC encoding")
    if not np.array_equal(decode_csc(plan.csc), plan.weights):
        raise ScheduleError(f"{where}: the CSC encoding does not decode to the plan's weights; rebuild the plan")
    if plan.huffman is not None:
        check_weights(plan.huffman, plan.csc, where)
    _check_mac_types(plan)


def sparse_context(plan: SparseDensePlan, top: str, fifo_module: str) -> dict[str, Any]:
    """Everything sparse_dense.sv.j2 prints for one layer: widths, per-PE ROM words, bias constants."""
    _check_sparse(plan)
    enc = plan.csc
    max_entries = max(c.entries for c in enc.pe_columns)
    max_count = max(int(c.counts().max(initial=0)) for c in enc.pe_columns)
    ea_w, cnt_w, z_w = value_bits(max_entries), value_bits(max_count), plan.index_bits
    rows = plan.rows
    hw = plan.huffman
    h = huffman_rtl_context(hw, plan.w.bits) if hw is not None else None
    ba_w = 0 if hw is None else hw.bit_addr_bits
    blocks = []
    for p, c in enumerate(enc.pe_columns):
        ent = np.stack([c.values, c.zeros], axis=1) if c.entries else np.zeros((1, 2), dtype=np.int64)
        # entry word {z, v}: v in the low W bits (Huffman-coded weights: {z} only)
        ent_words = [
            _hex(int(z), z_w)
            if hw is not None
            else _hex((int(z) << plan.w.bits) | (int(v) & ((1 << plan.w.bits) - 1)), z_w + plan.w.bits)
            for v, z in ent
        ]
        # column word {first code bit (Huffman only), first entry, entries}
        col_words = [
            _hex(
                (((0 if hw is None else int(hw.col_bits[p, j])) << ea_w | int(c.col_ptr[j])) << cnt_w)
                | int(c.col_ptr[j + 1] - c.col_ptr[j]),
                ba_w + ea_w + cnt_w,
            )
            for j in range(plan.in_features)
        ]
        bias = np.zeros(rows, dtype=np.int64)
        local = plan.biases[p :: plan.pes]
        bias[: local.size] = local
        blocks.append(
            {
                "p": p,
                "rows": enc.local_rows(p),
                "entries": c.entries,
                "padding": c.padding,
                "depth": max(1, c.entries),
                "ent_words": ent_words,
                "col_words": col_words,
                "bias_words": [_hex(int(b), plan.bias.bits) for b in bias],
                "h": None if h is None else h["pes"][p],
            }
        )
    return {
        "module": f"{top}_{plan.name}",
        "name": plan.name,
        "source": plan.source,
        "desc": sparse_desc(plan),
        "k": plan.in_features,
        "m": plan.out_features,
        "pes": plan.pes,
        "rows": rows,
        **_mac_operands(plan),
        "z_w": z_w,
        "j_w": index_bits(plan.in_features),
        "qp_w": value_bits(plan.in_features),
        "ea_w": ea_w,
        "cnt_w": cnt_w,
        "row_w": index_bits(rows),
        "pe_w": index_bits(plan.pes),
        "o_w": index_bits(plan.out_features),
        "ent_w": z_w + plan.w.bits,
        "col_w": ba_w + ea_w + cnt_w,
        "huff": h is not None,
        "h": h,
        "fifo_depth": SPARSE_OUT_FIFO_DEPTH,
        "credit_w": value_bits(SPARSE_OUT_FIFO_DEPTH),
        "pe_blocks": blocks,
        "idle_terms": " & ".join(f"p{b['p']}_idle" for b in blocks),
        "fifo_module": fifo_module,
        "latency": plan.latency,
        "ii": plan.ii,
    }


# -- windows (conv, pool) ----------------------------------------------------------------------
def _check_window_geometry(p: ConvPlan | PoolPlan) -> None:
    """Output size from the plan's window, and no window made of padding only."""
    (kh, kw), (sh, sw) = p.kernel, p.stride
    (pt, pl), (pb, pr) = p.pads_begin, p.pads_end
    where = _where(p)
    if min(kh, kw, sh, sw) < 1 or min(pt, pl, pb, pr) < 0:
        raise ScheduleError(f"{where}: kernel {p.kernel}, stride {p.stride} and pads must be positive / >= 0")
    want = ((p.in_h + pt + pb - kh) // sh + 1, (p.in_w + pl + pr - kw) // sw + 1)
    if (p.out_h, p.out_w) != want:
        raise ScheduleError(f"{where}: output {p.out_h}x{p.out_w} is not the {want[0]}x{want[1]} its window gives")
    for n_out, k, s, pad, size, axis in ((p.out_h, kh, sh, pt, p.in_h, "row"), (p.out_w, kw, sw, pl, p.in_w, "column")):
        for i in range(n_out):
            if i * s - pad + k - 1 < 0 or i * s - pad > size - 1:
                raise ScheduleError(
                    f"{where}: window {axis} {i} covers padding only (pads {p.pads_begin}/{p.pads_end}, "
                    f"kernel {p.kernel}); no engine computes it: reduce the padding"
                )


def conv_desc(p: ConvPlan) -> str:
    kind = "depthwise conv" if p.depthwise else ("grouped conv" if p.groups > 1 else "conv")
    return (
        f"{kind} {p.kernel[0]}x{p.kernel[1]}/{p.stride[0]}x{p.stride[1]} pads {p.pads_begin + p.pads_end} "
        f"{p.channels_in}->{p.channels_out} on {p.in_h}x{p.in_w}"
        + (f" groups={p.groups}" if p.groups > 1 else "")
        + f" PE={p.pe} SIMD={p.simd} acc={p.acc}"
    )


def _check_conv(p: ConvPlan) -> None:
    where = _where(p)
    c, m, g = p.channels_in, p.channels_out, p.groups
    if g < 1 or c % g or m % g:
        raise ScheduleError(f"{where}: {g} groups do not divide {c} input / {m} output channels")
    if m % p.pe or p.cg % p.simd:
        raise ScheduleError(
            f"{where}: PE={p.pe} must divide {m} output channels and SIMD={p.simd} the {p.cg} per group"
        )
    if p.depthwise and p.simd != 1:
        raise ScheduleError(f"{where}: a depthwise conv has SIMD = 1, not {p.simd}")
    if g > 1 and not p.depthwise and p.mg % p.pe:
        raise ScheduleError(
            f"{where}: PE={p.pe} must divide the {p.mg} output channels per group (or the conv be depthwise)"
        )
    if p.weights.shape != (m, p.cg, *p.kernel) or p.biases.shape != (m,):
        raise ScheduleError(f"{where}: weights {p.weights.shape} / biases {p.biases.shape} do not match the plan")
    _check_window_geometry(p)
    _check_mac_types(p)


def conv_context(plan: ConvPlan, top: str, fifo_module: str) -> dict[str, Any]:
    """Everything conv.sv.j2 prints for one layer."""
    _check_conv(plan)
    p = plan
    (kh, kw), (sh, sw), (pt, pl) = p.kernel, p.stride, p.pads_begin
    h, w, c, m = p.in_h, p.in_w, p.channels_in, p.channels_out
    pe, simd = p.pe, p.simd
    lanes = et.conv_lanes(p)
    cw = c // lanes
    sf = et.conv_input_folds(p)
    tf = et.conv_tiles_per_fold(p)
    nf = m // pe
    buf_pix = et.conv_buffer_pixels(p)
    words = buf_pix * cw
    ba_w = index_bits(words)
    pixels = h * w
    fifo_depth = et.conv_out_fifo_depth(p)
    t = et.conv_timing(p)
    mac = _mac_widths(p)
    levels = mac["tree_levels"]
    if p.depthwise:
        folds_per_group, kbase_step = 1, 1
    elif p.groups > 1:
        folds_per_group, kbase_step = p.mg // pe, p.cg // simd
    else:
        folds_per_group, kbase_step = nf, 0
    row_first = [max(i * sh - pt, 0) * w for i in range(p.out_h)]
    rows = [
        {
            "first": row_first[i],
            "last": min(i * sh - pt + kh - 1, h - 1) * w,
            # the next output row starts at the same input row (top padding): the buffer keeps
            # the row from column 0 on, for the next row's first window
            "hold": int(i + 1 < p.out_h and row_first[i + 1] == row_first[i]),
        }
        for i in range(p.out_h)
    ]
    cols = [(max(j * sw - pl, 0), min(j * sw - pl + kw - 1, w - 1)) for j in range(p.out_w)]
    windows = [(r["first"] + (0 if r["hold"] else c0), r["last"] + c1) for r in rows for c0, c1 in cols]
    if windows != et.conv_windows(p):
        raise AssertionError(f"{_where(p)}: window tables disagree with engine_timing.conv_windows")  # internal
    pos_lo = min(-pt, -pl, 0)
    pos_hi = max(h, w, (p.out_h - 1) * sh - pt + kh - 1, (p.out_w - 1) * sw - pl + kw - 1)
    # [M, cg, kh, kw] -> [nf, kh, kw, sf, pe, simd]: ROM word ((nf*KH + u)*KW + v)*SF + sf, element p*SIMD + s
    tiles = (
        p.weights.reshape(nf, pe, sf, simd, kh, kw).transpose(0, 4, 5, 2, 1, 3).reshape(nf * kh * kw * sf, pe * simd)
    )
    return {
        **mac,
        "module": f"{top}_{p.name}",
        "name": p.name,
        "source": p.source,
        "desc": conv_desc(p),
        "c_in": c,
        "c_out": m,
        "img_h": h,
        "img_w": w,
        "oimg_h": p.out_h,
        "oimg_w": p.out_w,
        "kh": kh,
        "kw": kw,
        "sh": sh,
        "sw": sw,
        "pixels": pixels,
        "pe": pe,
        "simd": simd,
        "lanes": lanes,
        "lane_of": "p" if p.depthwise else "s",
        "depthwise": p.depthwise,
        # depthwise: lane p feeds channel p only, so one group; else lane s feeds every channel
        "xg": pe if p.depthwise else timing.operand_fanout(pe)[0],
        "xgroups": 1 if p.depthwise else timing.operand_fanout(pe)[1],
        "cw": cw,
        "nf": nf,
        "sf": sf,
        "tf": tf,
        "folds_per_group": folds_per_group,
        "kbase_step": kbase_step,
        "buf_pix": buf_pix,
        "buf_words": words,
        "buf_words_pow2": words == 1 << ba_w,
        "ba_w": ba_w,
        # pointer steps in line-buffer words, modulo the buffer
        "tap_step": cw % words,
        "row_tap_step": ((w - kw + 1) * cw) % words,
        "win_step": (sw * cw) % words,
        "row_step": (sh * w * cw) % words,
        "sample_step": (pixels * cw - (p.out_h - 1) * sh * w * cw) % words,
        "row0_start": ((-pt * w - pl) * cw) % words,
        "a0": -pt,
        "b0": -pl,
        "row_tables": rows,
        "col_tables": cols,
        "span0": windows[0][1] - windows[0][0] + 1,
        "pos_w": signed_bits_for(pos_lo, pos_hi),
        "pix_w": value_bits(pixels),
        "dist_w": max(signed_bits_for(-pixels, buf_pix), value_bits(pixels) + 1),
        "lane_cw": index_bits(lanes),
        "wp_cw": index_bits(cw),
        "oi_cw": index_bits(p.out_h),
        "oj_cw": index_bits(p.out_w),
        "u_cw": index_bits(kh),
        "v_cw": index_bits(kw),
        "sf_cw": index_bits(sf),
        "nf_cw": index_bits(nf),
        "gf_cw": index_bits(folds_per_group),
        "w_depth": nf * tf,
        "wa_w": index_bits(nf * tf),
        "pe_cw": index_bits(pe),
        "owc_w": index_bits(p.out_h * p.out_w * nf),
        "owc_last": p.out_h * p.out_w * nf - 1,
        "fifo_depth": fifo_depth,
        "credit_w": value_bits(fifo_depth),
        "tree_out": levels[-1]["dst"] if levels else "tree0",
        "w_word_w": pe * simd * p.w.bits,
        "b_word_w": pe * p.bias.bits,
        "weight_words": _pack_words(tiles, p.w.bits),
        "bias_words": _pack_words(p.biases.reshape(nf, pe), p.bias.bits),
        "fifo_module": fifo_module,
        "latency": t.latency,
        "ii": t.ii,
        # the last value of each counter (its count - 1)
        "last": {
            "lanes": lanes - 1,
            "cw": cw - 1,
            "buf_words": words - 1,
            "oimg_h": p.out_h - 1,
            "oimg_w": p.out_w - 1,
            "kh": kh - 1,
            "kw": kw - 1,
            "sf": sf - 1,
            "nf": nf - 1,
            "folds_per_group": folds_per_group - 1,
            "w_depth": nf * tf - 1,
            "pe": pe - 1,
        },
    }


#: bank operations of the pooling engine's tables (2 bits each)
POOL_HOLD, POOL_START, POOL_EXTEND = 0, 1, 2


def _pool_axis_tables(n_grid: int, n_out: int, k: int, s: int, pad: int, size: int) -> list[dict[str, Any]]:
    """Per grid position along one axis: inside the image, each bank's op, window end and its bank."""
    banks = -(-k // s)
    out = []
    for g in range(n_grid):
        ops, end, end_bank = [POOL_HOLD] * banks, 0, 0
        for i in range(n_out):
            if i * s <= g < i * s + k:
                ops[i % banks] = POOL_START if g == i * s else POOL_EXTEND
                if g == i * s + k - 1:
                    end, end_bank = 1, i % banks
        out.append(
            {
                "real": int(pad <= g < pad + size),
                "ops": "".join(format(op, "02b") for op in reversed(ops)),  # bank 0 in the low bits
                "end": end,
                "bank": end_bank,
            }
        )
    return out


def pool_desc(p: PoolPlan) -> str:
    return (
        f"{p.kind}pool {p.kernel[0]}x{p.kernel[1]}/{p.stride[0]}x{p.stride[1]} pads {p.pads_begin + p.pads_end} "
        f"{p.channels} ch on {p.in_h}x{p.in_w}"
    )


def _delay(n: int) -> dict[str, int]:
    return {"len": n, "last": n - 1, "ptr_w": index_bits(n)}


def pool_context(plan: PoolPlan, top: str) -> dict[str, Any]:
    """Everything pool.sv.j2 prints for one layer."""
    p = plan
    where = _where(p)
    if p.kind not in ("max", "avg"):
        raise ScheduleError(f"{where}: pooling kind {p.kind!r} has no engine (max, avg)")
    _check_window_geometry(p)
    (kh, kw), (sh, sw), (pt, pl) = p.kernel, p.stride, p.pads_begin
    gh, gw = et.pool_grid(p)
    c = p.channels
    n = kh * kw
    inp, out = p.inp, p.out
    out_w = out.bits
    is_max = p.kind == "max"
    if is_max:
        rq = Requant(0, Rounding.FLOOR, p.lo, p.hi)
        hacc_w = vacc_w = inp.bits
        prod_w = 0
        req_w = max(inp.bits + 1, out_w + 1)
        pad_value = inp.lo
    else:
        if p.mult < 1:
            raise ScheduleError(f"{where}: average multiplier {p.mult} must be >= 1")
        rq = Requant(p.shift, Rounding(p.rounding), p.lo, p.hi)
        lo, hi = min(inp.lo, 0), max(inp.hi, 0)
        hacc_w = signed_bits_for(lo * kw, hi * kw)
        vacc_w = signed_bits_for(lo * n, hi * n)
        prod_w = signed_bits_for(lo * n * p.mult, hi * n * p.mult)
        req_w = requant_width(prod_w, p.shift, out_w)
        pad_value = 0
    _check_clamp(p, rq, out)
    t = et.pool_timing(p)
    rh, rv = -(-kw // sw), -(-kh // sh)
    return {
        "module": f"{top}_{p.name}",
        "name": p.name,
        "source": p.source,
        "desc": pool_desc(p),
        "is_max": is_max,
        "channels": c,
        "img_h": p.in_h,
        "img_w": p.in_w,
        "oimg_h": p.out_h,
        "oimg_w": p.out_w,
        "window": n,
        "grid_h": gh,
        "grid_w": gw,
        "rh": rh,
        "rv": rv,
        "h_len": c,
        "v_len": p.out_w * c,
        "h_dl": _delay(c),
        "v_dl": _delay(p.out_w * c),
        "col_tables": _pool_axis_tables(gw, p.out_w, kw, sw, pl, p.in_w),
        "row_tables": _pool_axis_tables(gh, p.out_h, kh, sh, pt, p.in_h),
        "inp": str(inp),
        "out": str(out),
        "acc": str(p.acc),
        "inp_w": inp.bits,
        "inp_signed": inp.signed,
        "hacc_w": hacc_w,
        "vacc_w": vacc_w,
        "prod_w": prod_w,
        "req_w": req_w,
        "out_w": out_w,
        "mult": p.mult,
        "rq": _requant_context(rq, req_w, out_w),
        "pad_value": pad_value,
        "pad_hex": _hex(pad_value, inp.bits),
        "gr_cw": index_bits(gh),
        "gc_cw": index_bits(gw),
        "ch_cw": index_bits(c),
        "hb_w": index_bits(rh),
        "vb_w": index_bits(rv),
        "out_count": p.out_h * p.out_w * c,
        "oc_w": index_bits(p.out_h * p.out_w * c),
        "h_ops_w": 2 * rh,
        "v_ops_w": 2 * rv,
        "stages": et.pool_stages(p),
        "latency": t.latency,
        "ii": t.ii,
        "last": {"grid_h": gh - 1, "grid_w": gw - 1, "channels": c - 1, "out_count": p.out_h * p.out_w * c - 1},
    }


# -- element-wise engines ----------------------------------------------------------------------
def _operand(t: IntType) -> dict[str, Any]:
    """An input code as a signed operand: its bits, and the bits once signed (one more if unsigned)."""
    return {"type": str(t), "w": t.bits, "signed": t.signed, "sw": t.bits + (0 if t.signed else 1)}


def add_context(p: AddPlan, top: str) -> dict[str, Any]:
    """Everything add.sv.j2 prints for one layer."""
    where = _where(p)
    s_lo = (p.a.lo << p.align_a) + (p.b.lo << p.align_b)
    s_hi = (p.a.hi << p.align_a) + (p.b.hi << p.align_b)
    if min(p.align_a, p.align_b) < 0 or not p.sum.signed or signed_bits_for(s_lo, s_hi) > p.sum.bits:
        raise ScheduleError(
            f"{where}: the aligned sum (a << {p.align_a}) + (b << {p.align_b}) spans [{s_lo}, {s_hi}], "
            f"which the sum type {p.sum} does not hold"
        )
    _check_clamp(p, p.requant, p.out)
    req_w = requant_width(p.sum.bits, p.requant.shift, p.out.bits)
    t = et.engine_timing(p)
    return {
        "module": f"{top}_{p.name}",
        "name": p.name,
        "source": p.source,
        "desc": add_desc(p),
        "count": p.count,
        "a": _operand(p.a),
        "b": _operand(p.b),
        "align_a": p.align_a,
        "align_b": p.align_b,
        "sum": str(p.sum),
        "sum_w": p.sum.bits,
        "req_w": req_w,
        "out": str(p.out),
        "out_w": p.out.bits,
        "rq": _requant_context(p.requant, req_w, p.out.bits),
        "oc_w": index_bits(p.count),
        "stages": et.ADD_STAGES,
        "latency": t.latency,
        "ii": t.ii,
        "last": {"count": p.count - 1},
    }


def add_desc(p: AddPlan) -> str:
    return f"add (a<<{p.align_a}) + (b<<{p.align_b}) of {p.count} elements, sum={p.sum}"


def concat_desc(p: ConcatPlan) -> str:
    return f"concat {'+'.join(str(q.channels) for q in p.parts)} channels over {p.pixels} pixels"


def concat_context(p: ConcatPlan, top: str) -> dict[str, Any]:
    """Everything concat.sv.j2 prints for one layer."""
    if len(p.parts) < 1 or any(q.channels < 1 for q in p.parts):
        raise ScheduleError(f"{_where(p)}: a concat needs parts of at least one channel")
    x_w = max(q.inp.bits + (0 if q.inp.signed else 1) for q in p.parts)
    req_w = max(requant_width(x_w, q.requant.shift, p.out.bits) for q in p.parts)
    parts = []
    for i, q in enumerate(p.parts):
        _check_clamp(p, q.requant, p.out)
        parts.append(
            {
                "index": i,
                "channels": q.channels,
                "last": q.channels - 1,
                **_operand(q.inp),
                "rq": _requant_context(q.requant, req_w, p.out.bits),
            }
        )
    channels = sum(q.channels for q in p.parts)
    t = et.engine_timing(p)
    return {
        "module": f"{top}_{p.name}",
        "name": p.name,
        "source": p.source,
        "desc": concat_desc(p),
        "pixels": p.pixels,
        "parts": parts,
        "n_parts": len(parts),
        "part_cw": index_bits(len(parts)),
        "ch_cw": index_bits(max(q.channels for q in p.parts)),
        "x_w": x_w,
        "req_w": req_w,
        "out": str(p.out),
        "out_w": p.out.bits,
        "out_count": p.pixels * channels,
        "oc_w": index_bits(p.pixels * channels),
        "stages": et.CONCAT_STAGES,
        "latency": t.latency,
        "ii": t.ii,
        "last": {"n_parts": len(parts) - 1, "out_count": p.pixels * channels - 1},
    }


def lut_desc(p: LutPlan) -> str:
    return f"lookup table {p.inp} -> {p.out} ({len(p.table)} entries) over {p.count} elements"


def lut_context(p: LutPlan, top: str) -> dict[str, Any]:
    """Everything lut.sv.j2 prints for one layer."""
    entries = 1 << p.inp.bits
    table = np.asarray(p.table)
    if table.shape != (entries,):
        raise ScheduleError(f"{_where(p)}: the table has {table.shape} entries; a {p.inp} input needs {entries}")
    _check_fits("table", p, table, p.out)
    t = et.engine_timing(p)
    return {
        "module": f"{top}_{p.name}",
        "name": p.name,
        "source": p.source,
        "desc": lut_desc(p),
        "count": p.count,
        "inp": str(p.inp),
        "inp_w": p.inp.bits,
        "inp_signed": p.inp.signed,
        "inp_lo": p.inp.lo,
        "out": str(p.out),
        "out_w": p.out.bits,
        "entries": entries,
        "table_words": [_hex(v, p.out.bits) for v in table.tolist()],
        "oc_w": index_bits(p.count),
        "stages": et.LUT_STAGES,
        "latency": t.latency,
        "ii": t.ii,
        "last": {"count": p.count - 1},
    }


def fork_desc(p: ForkPlan) -> str:
    return f"fork of {p.count} x {p.elem} to {len(p.outputs)} readers"


def fork_context(p: ForkPlan, top: str) -> dict[str, Any]:
    """Everything fork.sv.j2 prints for one layer."""
    if len(p.outputs) < 2:
        raise ScheduleError(f"{_where(p)}: a fork needs two or more outputs, not {len(p.outputs)}")
    return {
        "module": f"{top}_{p.name}",
        "name": p.name,
        "source": p.source,
        "desc": fork_desc(p),
        "n": len(p.outputs),
        "elem": str(p.elem),
        "width": p.elem.bits,
    }


# -- the graph ---------------------------------------------------------------------------------
def engine_io(p: EnginePlan) -> tuple[list[tuple[IntType, int]], list[tuple[IntType, int]]]:
    """(element type, elements per sample) of each input and each output of an engine, in port order."""
    if isinstance(p, DensePlan | SparseDensePlan):
        return [(p.inp, p.in_features)], [(p.out, p.out_features)]
    if isinstance(p, ConvPlan | WinogradConvPlan):
        return [(p.inp, p.in_h * p.in_w * p.channels_in)], [(p.out, p.out_h * p.out_w * p.channels_out)]
    if isinstance(p, PoolPlan):
        return [(p.inp, p.in_h * p.in_w * p.channels)], [(p.out, p.out_h * p.out_w * p.channels)]
    if isinstance(p, AddPlan):
        return [(p.a, p.count), (p.b, p.count)], [(p.out, p.count)]
    if isinstance(p, LutPlan):
        return [(p.inp, p.count)], [(p.out, p.count)]
    if isinstance(p, SoftmaxPlan | ChannelAffinePlan):
        return [(p.inp, p.count)], [(p.out, p.count)]
    if isinstance(p, ForkPlan):
        return [(p.elem, p.count)], [(p.elem, p.count)] * len(p.outputs)
    if isinstance(p, ConcatPlan):
        total = sum(q.channels for q in p.parts)
        return [(q.inp, p.pixels * q.channels) for q in p.parts], [(p.out, p.pixels * total)]
    raise ScheduleError(f"layer '{getattr(p, 'source', '?')}': {type(p).__name__} has no RTL engine")


def _check_names(schedule: Schedule) -> None:
    names = [schedule.top] + [p.name for p in schedule.layers] + [s.name for s in schedule.streams]
    for n in names:
        if not _LEGAL.match(n) or "__" in n:
            raise ScheduleError(
                f"design '{schedule.model}': '{n}' is not a legal hardware name; "
                "pass names through hwgen.hw.names.legalize"
            )
    layer_names = [p.name for p in schedule.layers]
    if len(set(layer_names)) != len(layer_names) or {FIFO_NAME, FIFO_BRAM_NAME} & set(layer_names):
        raise ScheduleError(
            f"design '{schedule.model}': layer names {layer_names} must be unique and not "
            f"'{FIFO_NAME}' / '{FIFO_BRAM_NAME}'"
        )
    stream_names = [s.name for s in schedule.streams]
    if len(set(stream_names)) != len(stream_names):
        raise ScheduleError(f"design '{schedule.model}': stream names {stream_names} must be unique")


def _check_graph(schedule: Schedule) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """Every stream has one producer and one reader (the ports aside) that agree on its elements.

    Returns the producer and the reader of each stream as (engine index, port index).
    """
    model = schedule.model
    streams = {s.name: s for s in schedule.streams}
    i, o = schedule.input, schedule.output
    if i.name not in streams or o.name not in streams:
        raise ScheduleError(
            f"design '{model}': the ports '{i.name}' / '{o.name}' must name streams of the Schedule "
            f"({sorted(streams)}); build it with hwgen.hw.lower or hwgen.hw.schedule.chain_schedule"
        )
    producer: dict[str, tuple[int, int]] = {}
    reader: dict[str, tuple[int, int]] = {}
    for idx, p in enumerate(schedule.layers):
        ins, outs = engine_io(p)
        if len(ins) != len(p.inputs) or len(outs) != len(p.outputs):
            raise ScheduleError(
                f"{_where(p)}: {len(p.inputs)} input / {len(p.outputs)} output streams, "
                f"the engine has {len(ins)} / {len(outs)}"
            )
        for role, names, io, table in (("reads", p.inputs, ins, reader), ("writes", p.outputs, outs, producer)):
            for port, (name, (elem, count)) in enumerate(zip(names, io, strict=True)):
                if name not in streams:
                    raise ScheduleError(f"{_where(p)}: {role} stream '{name}', which the Schedule does not have")
                if name in table:
                    other = schedule.layers[table[name][0]]
                    raise ScheduleError(
                        f"{_where(p)}: stream '{name}' already has a {'reader' if role == 'reads' else 'producer'} "
                        f"({_where(other)}); a stream read twice needs a fork (hwgen.hw.lower inserts them)"
                    )
                table[name] = (idx, port)
                s = streams[name]
                if name == i.name and role == "reads" and (elem != i.elem or count != i.count):
                    raise ScheduleError(
                        f"design '{model}': input '{i.source}' ({i.count} x {i.elem}) does not feed layer "
                        f"'{p.source}' ({count} x {elem})"
                    )
                if name == o.name and role == "writes" and (elem != o.elem or count != o.count):
                    raise ScheduleError(
                        f"design '{model}': output '{o.source}' ({o.count} x {o.elem}) is not what layer "
                        f"'{p.source}' produces ({count} x {elem})"
                    )
                if elem != s.elem or count != s.count:
                    raise ScheduleError(
                        f"{_where(p)}: {role} {count} x {elem} on stream '{name}', which carries {s.count} x {s.elem}"
                    )
    for name in streams:
        if name != i.name and name not in producer:
            raise ScheduleError(f"design '{model}': stream '{name}' has no producer")
        if name != o.name and name not in reader:
            raise ScheduleError(f"design '{model}': stream '{name}' has no reader")
    if i.name in producer or o.name in reader:
        raise ScheduleError(f"design '{model}': the input port's stream is written or the output port's is read")
    if isinstance(schedule.layers[producer[o.name][0]], ForkPlan):
        raise ScheduleError(f"design '{model}': the output stream '{o.name}' must come from an engine, not a fork")
    return producer, reader


def _fifo_depth(schedule: Schedule, s: Stream) -> int:
    """Elements the FIFO of stream s holds: Stream.depth, or Schedule.fifo_depth for the chain form."""
    return schedule.fifo_depth if schedule.is_chain else s.depth


def engine_desc(p: EnginePlan) -> str:
    if isinstance(p, DensePlan):
        return dense_desc(p)
    if isinstance(p, SparseDensePlan):
        return sparse_desc(p)
    if isinstance(p, ConvPlan):
        return conv_desc(p)
    if isinstance(p, WinogradConvPlan):
        return winograd.desc(p)
    if isinstance(p, PoolPlan):
        return pool_desc(p)
    if isinstance(p, AddPlan):
        return add_desc(p)
    if isinstance(p, ConcatPlan):
        return concat_desc(p)
    if isinstance(p, LutPlan):
        return lut_desc(p)
    if isinstance(p, SoftmaxPlan):
        return softmax.desc(p)
    if isinstance(p, ChannelAffinePlan):
        return channel_affine.desc(p)
    if isinstance(p, ForkPlan):
        return fork_desc(p)
    raise ScheduleError(f"{type(p).__name__} has no RTL engine")


def _sig(stream: str, side: str, what: str) -> str:
    """A top-level signal of a stream: side 'p' (producer's end) or 'c' (reader's end)."""
    return f"{stream}__{side}_{what}"


def top_context(schedule: Schedule, fifo_module: str, fifo_bram_module: str | None = None) -> dict[str, Any]:
    """Everything top.sv.j2 prints: streams (ports, FIFOs, wires) and engine instances."""
    producer, _readers = _check_graph(schedule)
    i_name, o_name = schedule.input.name, schedule.output.name
    in_w, out_w = schedule.input.elem.bits, schedule.output.elem.bits
    streams = []
    for s in schedule.streams:
        depth = _fifo_depth(schedule, s)
        if s.name == i_name:
            kind = "in_port"
        elif s.name == o_name:
            kind = "out_port"
        elif depth < 1:
            kind = "wire"
        else:
            kind = "fifo"
        bram = kind == "fifo" and depth >= BRAM_FIFO_MIN_DEPTH
        if bram and fifo_bram_module is None:
            raise AssertionError("a deep FIFO needs the block-RAM FIFO module")  # internal: emit_rtl passes it
        prod = schedule.layers[producer[s.name][0]] if s.name in producer else None
        tlast = prod is not None and not isinstance(prod, ForkPlan)
        streams.append(
            {
                "name": s.name,
                "source": s.source,
                "kind": kind,
                "width": s.elem.bits,
                "elem": str(s.elem),
                "shape": "x".join(str(d) for d in s.shape),
                "depth": depth,
                "module": fifo_bram_module if bram else fifo_module,
                "storage": "block RAM" if bram else "registers",
                "tlast": tlast,
                "tlast_sig": _sig(s.name, "p", "tlast") if s.name == o_name else f"{s.name}__unused_tlast",
                "p": {k: _sig(s.name, "p", k) for k in ("tdata", "tvalid", "tready")},
                "c": {k: _sig(s.name, "c", k) for k in ("tdata", "tvalid", "tready")},
            }
        )
    by_name = {s["name"]: s for s in streams}
    engines = []
    for p in schedule.layers:
        ports: list[tuple[str, str]] = []
        multi_in = isinstance(p, AddPlan | ConcatPlan)
        for k, name in enumerate(p.inputs):
            prefix = f"s{k}_axis" if multi_in else "s_axis"
            ports += [(f"{prefix}_{x}", by_name[name]["c"][x]) for x in ("tdata", "tvalid", "tready")]
        for k, name in enumerate(p.outputs):
            prefix = f"m{k}_axis" if isinstance(p, ForkPlan) else "m_axis"
            ports += [(f"{prefix}_{x}", by_name[name]["p"][x]) for x in ("tdata", "tvalid", "tready")]
            if by_name[name]["tlast"]:
                ports.append((f"{prefix}_tlast", by_name[name]["tlast_sig"]))
        width = max(len(port) for port, _ in ports)
        engines.append(
            {
                "name": p.name,
                "module": f"{schedule.top}_{p.name}",
                "source": p.source,
                "desc": engine_desc(p),
                "ports": [(port.ljust(width), sig) for port, sig in ports],
            }
        )
    return {
        "module": schedule.top,
        "in_source": schedule.input.source,
        "out_source": schedule.output.source,
        "in_count": schedule.input.count,
        "out_count": schedule.output.count,
        "in_elem": str(schedule.input.elem),
        "out_elem": str(schedule.output.elem),
        "in_shape": "x".join(str(d) for d in schedule.stream(i_name).shape),
        "out_shape": "x".join(str(d) for d in schedule.stream(o_name).shape),
        "in_w": in_w,
        "in_tw": stream_bits(in_w),
        "in_pad": stream_bits(in_w) - in_w,
        "out_w": out_w,
        "out_tw": stream_bits(out_w),
        "out_pad": stream_bits(out_w) - out_w,
        "out_signed": schedule.output.elem.signed,
        "ext_bit": f"{_sig(o_name, 'p', 'tdata')}[{out_w - 1}]" if schedule.output.elem.signed else "1'b0",
        "streams": streams,
        "in_stream": by_name[i_name],
        "out_stream": by_name[o_name],
        "engines": engines,
        "latency": schedule.latency,
        "ii": schedule.ii,
    }


def _engine_text(plan: EnginePlan, schedule: Schedule, design: dict[str, str], fifo_module: str) -> tuple[str, str]:
    top = schedule.top
    if isinstance(plan, DensePlan):
        d = dense_context(plan, top, fifo_module)
        return d["module"], render("rtl/dense.sv.j2", design=design, d=d)
    if isinstance(plan, SparseDensePlan):
        sp = sparse_context(plan, top, fifo_module)
        return sp["module"], render("rtl/sparse_dense.sv.j2", design=design, s=sp)
    if isinstance(plan, ConvPlan):
        c = conv_context(plan, top, fifo_module)
        return c["module"], render("rtl/conv.sv.j2", design=design, c=c)
    if isinstance(plan, WinogradConvPlan):
        return winograd.render_rtl(plan, top, design)
    if isinstance(plan, PoolPlan):
        p = pool_context(plan, top)
        return p["module"], render("rtl/pool.sv.j2", design=design, p=p)
    if isinstance(plan, AddPlan):
        a = add_context(plan, top)
        return a["module"], render("rtl/add.sv.j2", design=design, a=a)
    if isinstance(plan, ConcatPlan):
        c = concat_context(plan, top)
        return c["module"], render("rtl/concat.sv.j2", design=design, c=c)
    if isinstance(plan, LutPlan):
        lut = lut_context(plan, top)
        return lut["module"], render("rtl/lut.sv.j2", design=design, t=lut)
    if isinstance(plan, SoftmaxPlan):
        sm = softmax.rtl_context(plan, top)
        return sm["module"], render("rtl/softmax.sv.j2", design=design, s=sm)
    if isinstance(plan, ChannelAffinePlan):
        ca = channel_affine.rtl_context(plan, top)
        return ca["module"], render("rtl/channel_affine.sv.j2", design=design, c=ca)
    if isinstance(plan, ForkPlan):
        f = fork_context(plan, top)
        return f["module"], render("rtl/fork.sv.j2", design=design, f=f)
    raise ScheduleError(f"layer '{getattr(plan, 'source', '?')}': {type(plan).__name__} has no RTL engine")


def emit_rtl(schedule: Schedule, out_dir: Path) -> list[Path]:
    """Write the design's SystemVerilog into out_dir; return the sources in compile order + filelist.f."""
    if not schedule.layers:
        raise ScheduleError(f"design '{schedule.model}': no layers to emit")
    _check_names(schedule)
    _check_graph(schedule)
    if schedule.fifo_depth < 0 or any(s.depth < 0 for s in schedule.streams):
        raise ScheduleError(f"design '{schedule.model}': FIFO depths must be >= 0")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    design = {"model": schedule.model, "model_hash": schedule.model_hash}
    fifo_module = f"{schedule.top}_{FIFO_NAME}"
    bram_module = f"{schedule.top}_{FIFO_BRAM_NAME}"
    inner = [s for s in schedule.streams if s.name not in (schedule.input.name, schedule.output.name)]
    need_bram = any(_fifo_depth(schedule, s) >= BRAM_FIFO_MIN_DEPTH for s in inner)

    texts: list[tuple[str, str]] = [(fifo_module, render("rtl/fifo.sv.j2", design=design, module=fifo_module))]
    if need_bram:
        texts.append((bram_module, render("rtl/fifo_bram.sv.j2", design=design, module=bram_module)))
    for plan in schedule.layers:
        texts.append(_engine_text(plan, schedule, design, fifo_module))
    top = top_context(schedule, fifo_module, bram_module if need_bram else None)
    texts.append((schedule.top, render("rtl/top.sv.j2", design=design, top=top)))

    paths = []
    for module, text in texts:
        path = out_dir / f"{module}.sv"
        path.write_text(text, encoding="ascii", newline="\n")
        paths.append(path)
    filelist = out_dir / FILELIST
    filelist.write_text("".join(f"{p.name}\n" for p in paths), encoding="ascii", newline="\n")
    return [*paths, filelist]


def read_filelist(rtl_dir: Path) -> list[Path]:
    """The sources listed in rtl_dir/filelist.f, in compile order."""
    path = Path(rtl_dir) / FILELIST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no filelist; generate the design with hwgen.hw.rtl_emit.emit_rtl")
    return [Path(rtl_dir) / line.strip() for line in path.read_text().splitlines() if line.strip()]


__all__ = [
    "BRAM_FIFO_MIN_DEPTH",
    "FILELIST",
    "add_context",
    "concat_context",
    "conv_context",
    "dense_context",
    "emit_rtl",
    "engine_io",
    "fork_context",
    "lut_context",
    "pool_context",
    "read_filelist",
    "sparse_context",
    "stream_bits",
    "top_context",
]
