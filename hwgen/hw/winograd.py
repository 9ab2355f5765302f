"""The Winograd F(2x2,3x3) convolution engine: its plan, its widths, its cycle model, its template contexts.

Engine (templates/rtl/winograd_conv.sv.j2, templates/hls/winograd_conv.h.j2), channels-last pixel
streams in and out, as the line-buffer conv engine:
- WRITE: input rows go into a circular buffer of ROW_SLOTS = 6 rows (a tile row's 4 rows plus the
  2 of the next one, loaded while this one computes). Each row slot is split into 4 column banks
  (column x in bank x mod 4) of words of SIMD channels, so any 4 consecutive columns are read in
  one cycle. The writer starts a row only while fewer than 6 rows are buffered beyond the first
  row the current tile row reads.
- COMPUTE: tile rows in order; a tile row starts when the input rows it reads are complete and its
  output bank is free, then issues its tiles back to back: per tile, NF = C_out/PE folds of
  SF = C_in/SIMD steps. A step reads the 4x4 input patch of SIMD channels (padding reads as 0),
  transforms it with adders (V = B^T d B), multiplies it element-wise by the offline-transformed
  filters U = (2G) g (2G)^T of PE output channels (16 x SIMD x PE multipliers), sums the SIMD lanes
  and accumulates the 16 Winograd-domain sums M over the SF steps. After the last step the output
  transform A^T M A (adders), an exact arithmetic shift by 2 (the 2G scale: 4 * the direct sum),
  the bias and the requantization give the fold's 2x2 x PE output codes.
- OUTPUT: a tile row's codes go into one of two output banks (2 output rows x out_w pixels x
  C_out); the serializer emits a full bank in raster order (row, column, channel), one per beat,
  while the other bank fills.

The accumulator (after the shift) is bit-identical to the direct conv's (hwgen.sim.winograd_kernels),
so `acc`, `bias` and `requant` are the direct ConvPlan's. Multipliers: 16*PE*SIMD, each output tile
costs 16 products per channel pair instead of the direct 36 (2.25x fewer at equal throughput).

Cycle model (conventions of hwgen.hw.timing; edges from the one accepting the first input beat):
input row g (global over samples) can start when g - gf < ROW_SLOTS, gf being the first row of
the tile row in compute (it moves at that tile row's last issue edge L_j, effective from L_j + 1);
its beats follow one per edge no earlier than offered. Tile row j issues its first step at
F_j = max(L_{j-1} + 1, done(its last input row) + 1, E_{j-2} + 1) and its last at
L_j = F_j + TW*NF*SF - 1; its output bank is full at L_j + PIPELINE; the serializer emits its beats
from S_j = max(L_j + PIPELINE + 1, E_{j-1} + 1) one per edge, the last at E_j.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.errors import ScheduleError
from hwgen.hw.names import legalize
from hwgen.hw.plan import ConvPlan, IntType, Requant, Schedule, Stream, StreamPort, WinogradConvPlan
from hwgen.hw.schedule import int_type_for, mac_types, model_hash, signed_bits_for
from hwgen.hw.timing import EngineTiming
from hwgen.sim.winograd_kernels import filter_transform, transform

#: rows the line buffer holds: a tile row's 4 and the next tile row's 2 new ones
ROW_SLOTS = 6
#: column banks of a row slot: 4 consecutive columns are in 4 different banks
COL_BANKS = 4
#: register stages from a step's issue edge to its fold's codes written into the output bank:
#: buffer read, input transform, products, SIMD sum, accumulate, output transform + bias,
#: round + shift, clamp (the eighth edge writes the bank)
PIPELINE = 8
#: the tile the hardware engine implements (F(4x4,3x3) divides by 576: golden model only)
ENGINE_TILE = 2
#: samples the recurrence runs to measure the steady-state interval
_II_SAMPLES = 3


# -- widths ----------------------------------------------------------------------------------
def _linear_range(coef: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Extremes of sum coef * x over x in [lo, hi] independently per term."""
    c = np.asarray(coef).astype(object).reshape(-1)
    a, b = c * lo, c * hi
    return int(np.minimum(a, b).sum()), int(np.maximum(a, b).sum())


def transformed_input_range(inp: IntType, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Per Winograd-domain element (i, j): the extremes of V_ij = sum_kl bt_ik bt_jl d_kl."""
    bt = transform(tile).bt
    a = bt.shape[0]
    lo, hi = np.zeros((a, a), dtype=object), np.zeros((a, a), dtype=object)
    for i in range(a):
        for j in range(a):
            lo[i, j], hi[i, j] = _linear_range(np.outer(bt[i], bt[j]), inp.lo, inp.hi)
    return lo, hi


def winograd_types(
    u: np.ndarray, weights: np.ndarray, biases: np.ndarray, inp: IntType, tile: int
) -> dict[str, IntType]:
    """v, u, prod, macc, yacc and the direct (w, bias, acc) types, from the actual codes."""
    t = transform(tile)
    vlo, vhi = transformed_input_range(inp, tile)
    v = IntType(signed_bits_for(int(vlo.min()), int(vhi.max())), True)
    uo = np.asarray(u).astype(object)
    u_t = int_type_for(int(min(uo.min(), 0)), int(max(uo.max(), 0)))
    u_t = u_t if u_t.signed else IntType(u_t.bits + 1, True)
    ends = [x * y for x in (v.lo, v.hi) for y in (u_t.lo, u_t.hi)]
    prod = IntType(signed_bits_for(min(ends), max(ends)), True)
    # M[m, i, j] = sum_c U[m, c, i, j] * V[c, i, j]: per element, the per-channel extremes add up
    a, b = uo * vlo[None, None], uo * vhi[None, None]
    m_lo, m_hi = np.minimum(a, b).sum(axis=1), np.maximum(a, b).sum(axis=1)
    macc = IntType(signed_bits_for(int(min(m_lo.min(), 0)), int(max(m_hi.max(), 0))), True)
    w_t, b_t, acc = mac_types(weights, biases, inp)
    _w, _b, plain = mac_types(weights, np.zeros_like(biases), inp)
    yacc = IntType(signed_bits_for(plain.lo * t.divisor, plain.hi * t.divisor), True)
    return {"w": w_t, "bias": b_t, "acc": acc, "v": v, "u": u_t, "prod": prod, "macc": macc, "yacc": yacc}


def plan_winograd(
    name: str,
    source: str,
    weights: np.ndarray,
    biases: np.ndarray,
    inp: IntType,
    out: IntType,
    requant: Requant,
    *,
    in_hw: tuple[int, int],
    pads_begin: tuple[int, int],
    pads_end: tuple[int, int],
    pe: int,
    simd: int,
    tile: int = ENGINE_TILE,
) -> WinogradConvPlan:
    """A WinogradConvPlan with every width and the timing derived here."""
    where = f"layer '{source}'"
    weights = np.asarray(weights, dtype=np.int64)
    biases = np.asarray(biases, dtype=np.int64)
    m, c = weights.shape[:2]
    if tile != ENGINE_TILE:
        raise ScheduleError(
            f"{where}: the Winograd engine implements F(2x2,3x3); F({tile}x{tile},3x3) runs in the golden "
            "model only: rewrite this layer with tile=2 (passes.winograd layers={...: 2})"
        )
    if weights.shape[2:] != (3, 3) or biases.shape != (m,):
        raise ScheduleError(f"{where}: weights {weights.shape} / biases {biases.shape} are not a 3x3 conv's")
    if m % pe or c % simd:
        raise ScheduleError(f"{where}: PE={pe} must divide {m} output channels and SIMD={simd} the {c} input ones")
    if max(*pads_begin, *pads_end) > 2 or min(*pads_begin, *pads_end) < 0:
        raise ScheduleError(f"{where}: padding {pads_begin}/{pads_end}: the engine takes 0..2 per side")
    h, w = in_hw
    out_hw = (h + pads_begin[0] + pads_end[0] - 2, w + pads_begin[1] + pads_end[1] - 2)
    if min(out_hw) < 1 or min(h, w) < 2:
        raise ScheduleError(f"{where}: a {h}x{w} input is too small for the engine (2x2 at least)")
    u = filter_transform(weights, transform(tile)).astype(np.int64)
    types = winograd_types(u, weights, biases, inp, tile)
    plan = WinogradConvPlan(
        name=name,
        source=source,
        channels_in=c,
        channels_out=m,
        in_h=h,
        in_w=w,
        out_h=out_hw[0],
        out_w=out_hw[1],
        pads_begin=tuple(pads_begin),
        pads_end=tuple(pads_end),
        tile=tile,
        pe=pe,
        simd=simd,
        inp=inp,
        out=out,
        requant=requant,
        weights=weights,
        u_weights=u,
        biases=biases,
        **types,
    )
    t = winograd_timing(plan)
    return dataclasses.replace(plan, latency=t.latency, ii=t.ii)


def plan_from_node(graph: Any, node: Any, *, pe: int, simd: int, name: str | None = None) -> WinogradConvPlan:
    """The plan of a quantized WinogradConv (or eligible Conv) node; `name` defaults to the node's, legalized."""
    from hwgen.sim.exact import dense_codes, dense_requant, fixed_format

    w, b = dense_codes(graph, node)
    r = dense_requant(graph, node)
    fi, fo = fixed_format(graph, node.inputs[0]), fixed_format(graph, node.outputs[0])
    shape = graph.value(node.inputs[0]).type.shape
    return plan_winograd(
        name or legalize(node.name, set(), prefix="l"),
        node.onnx_name or node.name,
        w,
        b,
        IntType(fi.bits, fi.signed),
        IntType(fo.bits, fo.signed),
        Requant(r.shift, r.rounding, r.lo, r.hi),
        in_hw=(shape[1], shape[2]),
        pads_begin=tuple(node.attrs["pads_begin"]),
        pads_end=tuple(node.attrs["pads_end"]),
        pe=pe,
        simd=simd,
        tile=int(node.attrs.get("tile", ENGINE_TILE)),
    )


# -- geometry tables -------------------------------------------------------------------------
def row_tables(p: WinogradConvPlan) -> list[dict[str, Any]]:
    """Per tile row: the first real input row it reads, how many (span), how far the first row
    moves after it (advance; the last one moves to the next sample), and per patch row u whether
    it is real and its offset from the first row."""
    th, _tw = p.tiles
    firsts = [max(2 * i - p.pads_begin[0], 0) for i in range(th)]
    out = []
    for i in range(th):
        a = 2 * i - p.pads_begin[0]
        last = min(a + 3, p.in_h - 1)
        valid = [int(0 <= a + u < p.in_h) for u in range(4)]
        out.append(
            {
                "first": firsts[i],
                "span": last - firsts[i] + 1,
                "advance": (firsts[i + 1] if i + 1 < th else p.in_h) - firsts[i],
                "valid": valid,
                "offset": [(a + u - firsts[i]) if valid[u] else 0 for u in range(4)],
                "rows_out": min(2, p.out_h - 2 * i),
            }
        )
    return out


def col_tables(p: WinogradConvPlan) -> list[dict[str, Any]]:
    """Per tile column: rot = b mod 4 (patch column k is in bank (rot + k) mod 4), which patch
    columns are real, and per bank j the pixel column x_j (x_j = j mod 4 within b..b+3) as x_j // 4."""
    _th, tw = p.tiles
    out = []
    for j in range(tw):
        b = 2 * j - p.pads_begin[1]
        xs = [b + ((k - b) % COL_BANKS) for k in range(COL_BANKS)]  # bank k's column in b..b+3
        out.append(
            {
                "rot": b % COL_BANKS,
                "valid": [int(0 <= b + k < p.in_w) for k in range(4)],
                "word": [x // COL_BANKS if 0 <= x < p.in_w else 0 for x in xs],
            }
        )
    return out


# -- cycle model -----------------------------------------------------------------------------
def _key(p: WinogradConvPlan) -> tuple:
    rows = row_tables(p)
    return (
        p.in_h,
        p.in_w * p.channels_in,
        tuple(r["first"] + r["span"] - 1 for r in rows),  # last input row each tile row reads
        tuple(r["advance"] for r in rows),
        p.steps_per_tile_row,
        tuple(r["rows_out"] * p.out_w * p.channels_out for r in rows),  # beats per output bank
    )


def _recurrence(key: tuple, samples: int, offers: np.ndarray) -> tuple[list[int], list[int], np.ndarray]:
    """The module docstring's recurrences over `samples` samples, input beat k offered at offers[k].

    Returns the edge of each sample's last input beat and last output beat, and the edge each
    output beat is offered (a free sink takes it then).
    """
    h, row_beats, lasts, advances, steps, bank_beats = key
    th = len(lasts)
    offer = offers.tolist()
    done: list[int] = []  # edge of each input row's last beat (global row index)
    moves: list[tuple[int, int]] = []  # (edge L_j, first row kept after it) of each tile row
    ends: list[int] = []  # E_j: edge of each tile row's last output beat
    beats: list[int] = []
    beat, k = -1, 0

    def place(g: int) -> None:
        nonlocal beat, k
        t = beat + 1
        need = g - ROW_SLOTS + 1  # the first kept row must have moved this far
        if need > 0:
            t = max(t, next(edge for edge, first in moves if first >= need) + 1)
        for _ in range(row_beats):
            t = max(t, offer[k])
            beat, k = t, k + 1
            t += 1
        done.append(beat)

    last_out: list[int] = []
    issue = -1
    for j in range(samples * th):
        s, i = divmod(j, th)
        need = s * h + lasts[i]
        while len(done) <= need:  # rows a tile row reads are at most 4 beyond the kept one: placeable
            place(len(done))
        start = max(issue + 1, done[need] + 1, ends[j - 2] + 1 if j >= 2 else 0)
        issue = start + steps - 1
        moves.append((issue, s * h + sum(advances[: i + 1])))
        first = max(issue + PIPELINE + 1, ends[-1] + 1 if ends else 0)
        beats.extend(range(first, first + bank_beats[i]))
        ends.append(first + bank_beats[i] - 1)
        if i == th - 1:
            last_out.append(ends[-1])
    while len(done) < samples * h:
        place(len(done))
    last_in = [done[(s + 1) * h - 1] for s in range(samples)]
    return last_in, last_out, np.asarray(beats, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _free(key: tuple, samples: int) -> tuple[list[int], list[int], np.ndarray]:
    return _recurrence(key, samples, np.zeros(samples * key[0] * key[1], dtype=np.int64))


def winograd_timing(p: WinogradConvPlan) -> EngineTiming:
    """Latency, II, first output and tail of the engine with a free-flowing source and sink."""
    key = _key(p)
    last_in, last_out, beats = _free(key, 1)
    many = _free(key, _II_SAMPLES)[1]
    return EngineTiming(
        latency=last_out[0], ii=many[-1] - many[-2], first_out=int(beats[0]), tail=last_out[0] - last_in[0]
    )


def winograd_beats(p: WinogradConvPlan, offers: np.ndarray) -> np.ndarray:
    """Edges the output beats of one sample are offered, input beat k being offered at offers[k]."""
    return _recurrence(_key(p), 1, np.asarray(offers, dtype=np.int64))[2]


# -- the Verilog engine ----------------------------------------------------------------------
def desc(p: WinogradConvPlan) -> str:
    """One line naming the engine, for comments."""
    return (
        f"winograd F({p.tile}x{p.tile},3x3) conv pads {p.pads_begin + p.pads_end} {p.channels_in}->{p.channels_out} "
        f"on {p.in_h}x{p.in_w} PE={p.pe} SIMD={p.simd} mults={p.multipliers} acc={p.acc}"
    )


def _terms(matrix: np.ndarray, what: str) -> list[list[tuple[int, int]]]:
    """Per row, the (column, sign) of its non-zero entries; the engine's transforms are adds only."""
    rows = []
    for row in np.asarray(matrix).tolist():
        if any(abs(v) > 1 for v in row):
            raise ScheduleError(f"{what} has entries beyond +-1: not an adder-only transform")  # internal
        rows.append([(k, 1 if v > 0 else -1) for k, v in enumerate(row) if v])
    return rows


def check_plan(p: WinogradConvPlan) -> None:
    """Plan-internal consistency the template relies on (shapes, foldings, ROM ranges, clamp)."""
    from hwgen.hw.rtl_emit import _check_clamp, _check_fits

    where = f"layer '{p.source}' ({p.name})"
    m, c = p.channels_out, p.channels_in
    if p.tile != ENGINE_TILE:
        raise ScheduleError(f"{where}: the Winograd engine implements F(2x2,3x3), not F({p.tile}x{p.tile},3x3)")
    if m % p.pe or c % p.simd:
        raise ScheduleError(f"{where}: PE={p.pe} / SIMD={p.simd} do not divide {m} / {c} channels")
    if p.weights.shape != (m, c, 3, 3) or p.u_weights.shape != (m, c, 4, 4) or p.biases.shape != (m,):
        raise ScheduleError(f"{where}: weights / transformed weights / biases do not match the plan's channels")
    if not np.array_equal(p.u_weights, filter_transform(p.weights, transform(p.tile))):
        raise ScheduleError(f"{where}: the transformed filters are not (2G) g (2G)^T of the weights")
    _check_fits("transformed weight", p, p.u_weights, p.u)
    _check_fits("bias", p, p.biases, p.bias)
    _check_clamp(p, p.requant, p.out)


def rtl_context(p: WinogradConvPlan, top: str) -> dict[str, Any]:
    """Everything winograd_conv.sv.j2 prints for one layer."""
    from hwgen.hw.rtl_emit import _hex, _pack_words, _requant_context, index_bits, requant_width, value_bits

    check_plan(p)
    t = transform(p.tile)
    th, tw = p.tiles
    pe, simd, sf, nf = p.pe, p.simd, p.sf, p.nf
    bank_words = -(-p.in_w // COL_BANKS) * sf
    ba_w = index_bits(bank_words)
    req_w = requant_width(p.acc.bits, p.requant.shift, p.out.bits)
    timing = winograd_timing(p)
    # U [M, C, 4, 4] -> [nf, pe, sf, simd, 16] -> word nf*SF + sf, element (p*SIMD + s)*16 + e
    u_tiles = p.u_weights.reshape(nf, pe, sf, simd, 16).transpose(0, 2, 1, 3, 4).reshape(nf * sf, pe * simd * 16)
    rows = []
    for r in row_tables(p):
        rows.append(
            {
                "span": r["span"],
                "advance": r["advance"],
                "slot_adv": r["advance"] % ROW_SLOTS,
                "ok_bits": "".join(str(v) for v in reversed(r["valid"])),
                "off_bits": "".join(format(o, "02b") for o in reversed(r["offset"])),
                "two": int(r["rows_out"] == 2),
            }
        )
    cols = []
    for col in col_tables(p):
        value = 0
        for j in reversed(range(COL_BANKS)):
            value = (value << ba_w) | (col["word"][j] * sf)
        cols.append(
            {
                "rot": col["rot"],
                "ok_bits": "".join(str(v) for v in reversed(col["valid"])),
                "base_hex": _hex(value, COL_BANKS * ba_w),
            }
        )
    return {
        "module": f"{top}_{p.name}",
        "name": p.name,
        "source": p.source,
        "desc": desc(p),
        "c_in": p.channels_in,
        "c_out": p.channels_out,
        "img_h": p.in_h,
        "img_w": p.in_w,
        "oimg_h": p.out_h,
        "oimg_w": p.out_w,
        "th": th,
        "tw": tw,
        "pe": pe,
        "simd": simd,
        "sf": sf,
        "nf": nf,
        "steps": p.steps_per_tile_row,
        "mults": p.multipliers,
        "pipeline": PIPELINE,
        "row_slots": ROW_SLOTS,
        "bank_words": bank_words,
        "ob_words": 2 * tw * nf,
        "inp": str(p.inp),
        "inp_w": p.inp.bits,
        "inp_signed": p.inp.signed,
        "v": str(p.v),
        "v_w": p.v.bits,
        "u": str(p.u),
        "u_w": p.u.bits,
        "prod": str(p.prod),
        "prod_w": p.prod.bits,
        "macc": str(p.macc),
        "macc_w": p.macc.bits,
        "yacc": str(p.yacc),
        "yacc_w": p.yacc.bits,
        "acc": str(p.acc),
        "acc_w": p.acc.bits,
        "bias": str(p.bias),
        "bias_w": p.bias.bits,
        "out": str(p.out),
        "out_w": p.out.bits,
        "req_w": req_w,
        "rq": _requant_context(p.requant, req_w, p.out.bits),
        "buf_w": value_bits(ROW_SLOTS),
        "slot_w": index_bits(ROW_SLOTS),
        "lane_cw": index_bits(simd),
        "sf_cw": index_bits(sf),
        "nf_cw": index_bits(nf),
        "ba_w": ba_w,
        "col_cw": value_bits(p.in_w),
        "ti_cw": index_bits(th),
        "tj_cw": index_bits(tw),
        "u_depth": nf * sf,
        "ua_w": index_bits(nf * sf),
        "oa_w": index_bits(2 * tw * nf),
        "of_cw": index_bits(tw * nf),
        "adv_w": value_bits(p.in_h),
        "ox_cw": index_bits(p.out_w),
        "pe_cw": index_bits(pe),
        "row_tables": rows,
        "col_tables": cols,
        "bt_rows": _terms(t.bt, "B^T"),
        "at_rows": _terms(t.ats, "A^T"),
        "u_word_w": pe * simd * 16 * p.u.bits,
        "u_words": _pack_words(u_tiles, p.u.bits),
        "b_word_w": pe * p.bias.bits,
        "bias_words": _pack_words(p.biases.reshape(nf, pe), p.bias.bits),
        "latency": timing.latency,
        "ii": timing.ii,
    }


def render_rtl(p: WinogradConvPlan, top: str, design: dict[str, str]) -> tuple[str, str]:
    """(module name, SystemVerilog text) of the engine."""
    from hwgen.hw.render import render

    c = rtl_context(p, top)
    return c["module"], render("rtl/winograd_conv.sv.j2", design=design, c=c)


def render_rtl_top(sched: Schedule, module: str, design: dict[str, str]) -> str:
    """templates/rtl/top.sv.j2 around the one engine: its ports are the top's AXI4-Stream ports."""
    from hwgen.hw.render import render
    from hwgen.hw.rtl_emit import stream_bits

    p = sched.layers[0]
    i, o = sched.input, sched.output

    def sig(stream: str, side: str, what: str) -> str:
        return f"{stream}__{side}_{what}"

    ends = ("tdata", "tvalid", "tready")
    streams = [
        {
            "name": i.name,
            "source": i.source,
            "kind": "in_port",
            "width": i.elem.bits,
            "elem": str(i.elem),
            "shape": "x".join(str(d) for d in sched.streams[0].shape),
            "c": {k: sig(i.name, "c", k) for k in ends},
        },
        {
            "name": o.name,
            "source": o.source,
            "kind": "out_port",
            "width": o.elem.bits,
            "elem": str(o.elem),
            "shape": "x".join(str(d) for d in sched.streams[1].shape),
            "tlast": True,
            "tlast_sig": sig(o.name, "p", "tlast"),
            "p": {k: sig(o.name, "p", k) for k in ends},
        },
    ]
    ports = [(f"s_axis_{k}", sig(i.name, "c", k)) for k in ends]
    ports += [(f"m_axis_{k}", sig(o.name, "p", k)) for k in ends] + [("m_axis_tlast", sig(o.name, "p", "tlast"))]
    width = max(len(port) for port, _ in ports)
    top = {
        "module": sched.top,
        "in_source": i.source,
        "out_source": o.source,
        "in_count": i.count,
        "out_count": o.count,
        "in_elem": str(i.elem),
        "out_elem": str(o.elem),
        "in_shape": streams[0]["shape"],
        "out_shape": streams[1]["shape"],
        "in_w": i.elem.bits,
        "in_tw": stream_bits(i.elem.bits),
        "in_pad": stream_bits(i.elem.bits) - i.elem.bits,
        "out_w": o.elem.bits,
        "out_tw": stream_bits(o.elem.bits),
        "out_pad": stream_bits(o.elem.bits) - o.elem.bits,
        "out_signed": o.elem.signed,
        "ext_bit": f"{sig(o.name, 'p', 'tdata')}[{o.elem.bits - 1}]" if o.elem.signed else "1'b0",
        "streams": streams,
        "engines": [
            {
                "name": p.name,
                "module": module,
                "source": p.source,
                "desc": desc(p),
                "ports": [(port.ljust(width), s) for port, s in ports],
            }
        ],
        "latency": sched.latency,
        "ii": sched.ii,
    }
    return render("rtl/top.sv.j2", design=design, top=top)


# -- the HLS engine --------------------------------------------------------------------------
@dataclass(frozen=True)
class WinogradSpelling:
    """The HLS template's types, ROMs and tables (WinogradConvPlan's numbers, spelled in C++)."""

    desc: str
    in_t: str
    v_t: str
    u_t: str
    prod_t: str
    macc_t: str
    yacc_t: str
    acc_t: str
    out_t: str
    th: int
    tw: int
    sf: int
    nf: int
    load: str  #: input rows each tile row loads, a C initialiser
    cycles: int  #: loop iterations per sample of the C++ engine (loading, steps, output not overlapped)
    bt_rows: list[list[tuple[int, int]]]
    at_rows: list[list[tuple[int, int]]]
    u_rom: Any  #: hls_emit.Rom, word nf*SF + sf holds the PE x SIMD x 16 transformed filters
    b_rom: Any  #: hls_emit.Rom, [nf][p]
    requant: Any  #: hls_emit.RequantSpelling


def hls_spelling(p: WinogradConvPlan) -> WinogradSpelling:
    """Types, ROM initialisers and tables of the HLS engine."""
    from hwgen.hw.hls_emit import Rom, ap_type, c_initializer, requant_spelling, storage_ctype

    check_plan(p)
    where = f"layer '{p.name}' (ONNX {p.source!r})"
    t = transform(p.tile)
    th, tw = p.tiles
    pe, simd, sf, nf = p.pe, p.simd, p.sf, p.nf
    u_tiles = p.u_weights.reshape(nf, pe, sf, simd, 16).transpose(0, 2, 1, 3, 4).reshape(nf * sf, pe * simd * 16)

    def rom(values: np.ndarray, typ: IntType) -> Any:
        init = c_initializer(values, " " * 8)
        return Rom(code_t=ap_type(typ), store=storage_ctype(typ, where), exact=typ.bits in (8, 16, 32, 64), init=init)

    loads, loaded = [], 0
    for r in row_tables(p):
        target = r["first"] + r["span"]  # rows 0 .. target-1 must be in
        loads.append(max(0, target - loaded))
        loaded = max(loaded, target)
    if loaded != p.in_h:
        raise ScheduleError(f"{where}: tile rows read {loaded} of {p.in_h} input rows")  # internal: pads <= 2
    return WinogradSpelling(
        desc=desc(p),
        in_t=ap_type(p.inp),
        v_t=ap_type(p.v),
        u_t=ap_type(p.u),
        prod_t=ap_type(p.prod),
        macc_t=ap_type(p.macc),
        yacc_t=ap_type(p.yacc),
        acc_t=ap_type(p.acc),
        out_t=ap_type(p.out),
        th=th,
        tw=tw,
        sf=sf,
        nf=nf,
        load=", ".join(str(v) for v in loads),
        cycles=p.in_h * p.in_w * p.channels_in + th * tw * nf * sf + p.out_h * p.out_w * p.channels_out,
        bt_rows=_terms(t.bt, "B^T"),
        at_rows=_terms(t.ats, "A^T"),
        u_rom=rom(u_tiles, p.u),
        b_rom=rom(p.biases.reshape(nf, pe), p.bias),
        requant=requant_spelling(p.requant, p.acc, where),
    )


def emit_standalone_hls(
    p: WinogradConvPlan,
    out_dir: Path,
    top: str,
    *,
    inputs: np.ndarray | None = None,
    expected: np.ndarray | None = None,
) -> Schedule:
    """A Vitis HLS project of the one engine (the usual top, testbench and tcl); returns its Schedule.

    hwgen.hw.csim.run_csim runs it. `inputs` / `expected` become tb_input.txt / tb_expected.txt.
    """
    from hwgen.hw.hls_emit import LAYER_NAMESPACE, EngineCall, _write, ap_type, c_int, codes_text, smoke_inputs
    from hwgen.hw.render import render

    sched = standalone_schedule(p, top)
    plan = sched.layers[0]
    common = {"schedule": sched, "ns": LAYER_NAMESPACE}
    i, o = sched.input, sched.output
    io = {
        "in_t": ap_type(i.elem),
        "out_t": ap_type(o.elem),
        "in_scale": f"2^{-i.frac}",
        "out_scale": f"2^{-o.frac}",
        "in_order": f"streamed channels-last: {p.in_h} x {p.in_w} pixels row by row, {p.channels_in} channels each",
        "out_order": f"streamed channels-last: {p.out_h} x {p.out_w} pixels row by row, {p.channels_out} channels each",
        "out_to_int": "to_int64" if o.elem.signed else "to_uint64",
        "in_lo": c_int(i.elem.lo),
        "in_hi": c_int(i.elem.hi),
    }
    x = smoke_inputs(sched) if inputs is None else np.asarray(inputs, dtype=np.int64)
    tb_files = ["tb_input.txt"] + (["tb_expected.txt"] if expected is not None else [])
    engines = [EngineCall(plan, hls_spelling(plan), ("in", "out"))]
    files = {
        "hwgen_types.h": render("hls/hwgen_types.h.j2", **common),
        f"{plan.name}.h": render("hls/winograd_conv.h.j2", plan=plan, t=engines[0].t, **common),
        f"{top}.h": render("hls/top.h.j2", io=io, **common),
        f"{top}.cpp": render("hls/top.cpp.j2", io=io, fifos=[], engines=engines, **common),
        f"tb_{top}.cpp": render("hls/tb.cpp.j2", io=io, **common),
        "tb_input.txt": codes_text(x),
    }
    if expected is not None:
        files["tb_expected.txt"] = codes_text(expected)
    files["run_hls.tcl"] = render(
        "hls/run_hls.tcl.j2",
        part="xcu250-figd2104-2L-e",
        period="5",
        clock_mhz="200",
        sources=[f"{top}.cpp"],
        tb_sources=[f"tb_{top}.cpp", *tb_files],
        argv=" ".join(["tb_input.txt", "tb_output.txt", *tb_files[1:]]),
        **common,
    )
    _write(Path(out_dir), files.items())
    return sched


# -- resource figures ------------------------------------------------------------------------
def yosys_multipliers(rtl_dir: Path, top: str, work_dir: Path) -> int:
    """Multipliers Yosys infers in rtl_dir's design: `$mul` cells after proc/flatten/opt/wreduce.

    Constant multiplications fold away in opt, so this counts the datapath's real multipliers;
    synth_xilinx (hwgen.hw.yosys_synth) maps each to a DSP48 or LUTs. Belongs beside synth_yosys.
    """
    import json
    import os
    import subprocess

    from hwgen.errors import ToolError
    from hwgen.hw.rtl_emit import read_filelist
    from hwgen.hw.yosys_synth import _yosys

    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    sources = [q.resolve() for q in read_filelist(rtl_dir)]
    (work_dir / "count.ys").write_text(
        "".join(f"read_verilog -sv {os.path.relpath(q, work_dir)}\n" for q in sources)
        + f"hierarchy -check -top {top}\nproc\nflatten\nopt -full\nwreduce\nopt_clean\n"
        + "tee -q -o count.json stat -json\n"
    )
    (work_dir / "count.json").unlink(missing_ok=True)
    proc = subprocess.run(
        [*_yosys(), "-q", "-s", "count.ys"], cwd=work_dir, capture_output=True, text=True, timeout=3600, check=False
    )
    if proc.returncode != 0 or not (work_dir / "count.json").is_file():
        raise ToolError(f"yosys exited {proc.returncode} counting the multipliers of '{top}':\n{proc.stderr[-3000:]}")
    stat = json.loads((work_dir / "count.json").read_text())
    design = stat.get("design") or stat["modules"][f"\\{top}"]
    return int(design.get("num_cells_by_type", {}).get("$mul", 0))


# -- standalone designs (until the emitters and lower.py know this plan) ----------------------
def direct_counterpart(p: WinogradConvPlan, *, pe: int, simd: int) -> ConvPlan:
    """The direct line-buffer conv engine (hwgen.hw.plan.ConvPlan) on the same codes, for comparisons."""
    from hwgen.hw.engine_timing import conv_timing
    from hwgen.hw.schedule import product_type

    d = ConvPlan(
        name=f"{p.name}_direct",
        source=p.source,
        channels_in=p.channels_in,
        channels_out=p.channels_out,
        in_h=p.in_h,
        in_w=p.in_w,
        out_h=p.out_h,
        out_w=p.out_w,
        kernel=(3, 3),
        stride=(1, 1),
        pads_begin=p.pads_begin,
        pads_end=p.pads_end,
        groups=1,
        pe=pe,
        simd=simd,
        inp=p.inp,
        w=p.w,
        prod=product_type(p.inp, p.w),
        acc=p.acc,
        out=p.out,
        bias=p.bias,
        requant=p.requant,
        weights=p.weights,
        biases=p.biases,
    )
    t = conv_timing(d)
    return dataclasses.replace(d, latency=t.latency, ii=t.ii)


def standalone_schedule(p: WinogradConvPlan | ConvPlan, top: str, in_frac: int = 0, out_frac: int = 0) -> Schedule:
    """A one-engine Schedule around the plan (Winograd or direct): input port x, output port y.

    What run_rtl and the csim testbench read; hwgen.hw.rtl_emit.emit_rtl takes it for a ConvPlan.
    """
    plan = dataclasses.replace(p, inputs=("x",), outputs=("y",))
    n_in, n_out = p.in_h * p.in_w * p.channels_in, p.out_h * p.out_w * p.channels_out
    port_in = StreamPort("x", "x", p.inp, n_in, in_frac, (p.channels_in, p.in_h, p.in_w))
    port_out = StreamPort("y", "y", p.out, n_out, out_frac, (p.channels_out, p.out_h, p.out_w))
    streams = (
        Stream("x", "x", p.inp, (p.in_h, p.in_w, p.channels_in)),
        Stream("y", "y", p.out, (p.out_h, p.out_w, p.channels_out)),
    )
    digest = model_hash(p.weights, p.biases, extra=repr((p.name, p.pe, p.simd, p.inp, p.out, p.requant)))
    return Schedule(top, p.source, digest, port_in, port_out, (plan,), p.latency, p.ii, streams=streams)


def emit_standalone_rtl(p: WinogradConvPlan, out_dir: Path, top: str) -> Schedule:
    """Write the engine and a top level with the usual AXI4-Stream ports (+ filelist.f); return its Schedule."""
    from hwgen.hw.rtl_emit import FILELIST

    sched = standalone_schedule(p, top)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    design = {"model": sched.model, "model_hash": sched.model_hash}
    module, text = render_rtl(sched.layers[0], top, design)
    files = [(f"{module}.sv", text), (f"{top}.sv", render_rtl_top(sched, module, design))]
    for name, body in files:
        (out_dir / name).write_text(body, encoding="ascii", newline="\n")
    (out_dir / FILELIST).write_text("".join(f"{n}\n" for n, _ in files), encoding="ascii", newline="\n")
    return sched


__all__ = [
    "ENGINE_TILE",
    "PIPELINE",
    "ROW_SLOTS",
    "WinogradConvPlan",
    "col_tables",
    "direct_counterpart",
    "emit_standalone_rtl",
    "plan_from_node",
    "plan_winograd",
    "row_tables",
    "standalone_schedule",
    "winograd_beats",
    "winograd_timing",
    "winograd_types",
    "yosys_multipliers",
]
