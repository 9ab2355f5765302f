"""The softmax engine: plan, cycle model and the numbers both templates print.

What it computes (hwgen.sim.integer_kernels.softmax, bit for bit): for each vector of N input
codes, with x the codes offset to unsigned (x - in.lo), d = max(x) - x, E = table[d] (the 16-bit
fixed-point exp table, zero past its last non-zero entry), S = sum E, and with QB = out_frac + 1

    out = min(floor((E * 2**QB + S) / (2 S)), hi)

which is round_half_up(E * 2**out_frac / S). Since E <= S the quotient is <= 2**out_frac: QB bits.

Architecture (templates/rtl/softmax.sv.j2, templates/hls/softmax.h.j2): one vector at a time, in
three phases that do not overlap.
- LOAD: one input beat per edge into a buffer of N codes, keeping the running maximum.
- SUM: one buffered element per edge: S += table[max - x].
- DIV: per element, a restoring divider with one quotient bit per edge (QB edges): the trial
  subtrahend starts at S << QB (= 2S << (QB - 1)) and halves every edge. The edge of the last bit
  loads the output register (waiting while it is full); the next element starts at the next edge.
After the DIV step of the vector's last element the engine is back in LOAD.

Cycle model (conventions of hwgen.hw.timing; free-flowing I/O): with the vector's last input beat
accepted at edge L, SUM runs at L+1 .. L+N, element i's DIV steps at L+N+1+i*QB .. L+N+(i+1)*QB
and its output beat is taken at L+N+1+(i+1)*QB, the edge LOAD takes the next vector's first beat.
One vector alone: latency = N*(QB+2), first output 2N+QB, tail N*QB+N+1; a sample of V vectors
takes V*N*(QB+2) edges, which is also its II.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwgen.errors import ScheduleError, UnsupportedOpError
from hwgen.hw.plan import IntType, Schedule, SoftmaxPlan, Stream, StreamPort
from hwgen.hw.schedule import model_hash
from hwgen.hw.timing import EngineTiming
from hwgen.ir.graph import Node
from hwgen.sim.integer_kernels import softmax_exp_table

#: the longest softmax vector the engine buffers (one buffer entry per element)
MAX_LENGTH = 1 << 16
#: the widest input code: the exp table has up to 2**bits entries
MAX_INPUT_BITS = 16


def _unsigned_bits(value: int) -> int:
    return max(1, int(value).bit_length())


def exp_table(in_frac: int, in_bits: int) -> np.ndarray:
    """integer_kernels.softmax_exp_table over every code difference, cut after its last non-zero entry."""
    full = softmax_exp_table(in_frac, 1 << in_bits)
    nonzero = np.flatnonzero(full)
    return full[: int(nonzero[-1]) + 1] if nonzero.size else full[:1]


def plan_softmax(
    name: str,
    source: str,
    *,
    inp: IntType,
    out: IntType,
    in_frac: int,
    out_frac: int,
    hi: int,
    length: int,
    vectors: int = 1,
) -> SoftmaxPlan:
    """The plan of a softmax over `vectors` vectors of `length` codes of type `inp` (scale 2**-in_frac)."""
    where = f"layer '{source}' ({name})"
    if not 1 <= length <= MAX_LENGTH or vectors < 1:
        raise ScheduleError(f"{where}: a softmax over {length} elements; the engine takes 1..{MAX_LENGTH}")
    if inp.bits > MAX_INPUT_BITS:
        raise ScheduleError(
            f"{where}: {inp} input codes index a {2**inp.bits}-entry exp table; use at most "
            f"{MAX_INPUT_BITS}-bit activations before the softmax"
        )
    if out_frac < 0 or not 0 <= hi <= out.hi:
        raise ScheduleError(f"{where}: output scale 2^-{out_frac} / clamp {hi} do not fit a softmax into {out}")
    table = exp_table(in_frac, inp.bits)
    p = SoftmaxPlan(
        name=name,
        source=source,
        length=length,
        vectors=vectors,
        inp=inp,
        out=out,
        table=table,
        quotient_bits=out_frac + 1,
        hi=hi,
        sum=IntType(_unsigned_bits(length * int(table[0])), False),
    )
    t = softmax_timing(p)
    return dataclasses.replace(p, latency=t.latency, ii=t.ii)


def softmax_layout(node: Node, shape: tuple[int, ...], where: str) -> tuple[int, int]:
    """(length, vectors) of a Softmax node over an IR tensor of per-sample `shape` on its stream.

    Vectors travel as they are; images travel channels last (HWC), so a softmax over the channels
    of each pixel (axis 0 of [C, H, W]) and one over the whole sample (legacy axis 0) are runs of
    consecutive stream elements. Any other axis is refused.
    """
    axis, legacy = int(node.attrs["axis"]), bool(node.attrs.get("legacy"))
    size = int(np.prod(shape))
    if len(shape) == 1 or (legacy and axis == 0):
        return size, 1
    if len(shape) == 3 and axis == 0:
        return shape[0], shape[1] * shape[2]
    form = "flattened from axis" if legacy else "along axis"
    raise UnsupportedOpError(
        f"{where}: softmax {form} {axis + 1} of a [N, {', '.join(map(str, shape))}] tensor; the stream carries "
        "images channels last, so the engine takes a softmax over the channels (axis 1) or over a whole "
        "vector only. Flatten first (softmax over a vector), or apply this softmax on the host"
    )


# -- cycle model --------------------------------------------------------------------------------
def softmax_timing(p: SoftmaxPlan) -> EngineTiming:
    """Latency, II, first output and tail (see the module docstring)."""
    n, qb = p.length, p.quotient_bits
    period = n * (qb + 2)
    return EngineTiming(latency=p.vectors * period, ii=p.vectors * period, first_out=2 * n + qb, tail=n * qb + n + 1)


def softmax_beats(p: SoftmaxPlan, offers: np.ndarray) -> np.ndarray:
    """Edges the output beats of one sample are taken (free sink), input beat k being offered at offers[k]."""
    n, qb = p.length, p.quotient_bits
    offers = np.asarray(offers, dtype=np.int64).reshape(p.vectors, n)
    out = np.empty((p.vectors, n), dtype=np.int64)
    ready = 0  # the edge LOAD can take the vector's first beat
    for v in range(p.vectors):
        k = np.arange(n, dtype=np.int64)
        taken = np.maximum.accumulate(np.maximum(offers[v], ready + k) - k) + k
        last = int(taken[-1])
        out[v] = last + n + 1 + (k + 1) * qb
        ready = int(out[v, -1])
    return out.reshape(-1)


# -- widths and checks ----------------------------------------------------------------------------
def exp_bits(p: SoftmaxPlan) -> int:
    """Bits of a table entry (E[0] = 2**16 needs 17)."""
    return _unsigned_bits(int(p.table.max()))


def remainder_bits(p: SoftmaxPlan) -> int:
    """The divider's remainder and trial subtrahend: E * 2**QB + S and S << QB, both <= S * (2**QB + 1)."""
    s_max = p.length * int(p.table[0])
    return _unsigned_bits(s_max * ((1 << p.quotient_bits) + 1))


def desc(p: SoftmaxPlan) -> str:
    vec = f"{p.vectors} vectors of {p.length}" if p.vectors > 1 else f"a vector of {p.length}"
    return (
        f"softmax over {vec} {p.inp} codes -> {p.out} (exp table {len(p.table)} entries, sum {p.sum}, "
        f"{p.quotient_bits}-bit restoring divider)"
    )


def check_plan(p: SoftmaxPlan) -> None:
    """The plan's numbers agree with each other (the templates print them as they are)."""
    where = f"layer '{p.source}' ({p.name})"
    table = np.asarray(p.table)
    if table.ndim != 1 or not 1 <= table.size <= 1 << p.inp.bits or int(table.min()) < 0:
        raise ScheduleError(f"{where}: the exp table must hold 1..{1 << p.inp.bits} non-negative entries")
    if p.sum.signed or (1 << p.sum.bits) <= p.length * int(table[0]):
        raise ScheduleError(f"{where}: the sum type {p.sum} does not hold {p.length} x {int(table[0])}")
    if not (1 <= p.length <= MAX_LENGTH and p.vectors >= 1 and p.quotient_bits >= 1 and 0 <= p.hi <= p.out.hi):
        raise ScheduleError(
            f"{where}: length {p.length}, vectors {p.vectors}, {p.quotient_bits} quotient bits and clamp {p.hi} "
            f"are not a softmax into {p.out}; rebuild the plan with hwgen.hw.softmax.plan_softmax"
        )


# -- RTL ----------------------------------------------------------------------------------------
def rtl_context(p: SoftmaxPlan, top: str) -> dict[str, Any]:
    """Everything templates/rtl/softmax.sv.j2 prints for one layer."""
    from hwgen.hw.rtl_emit import _hex, index_bits

    check_plan(p)
    e_w = exp_bits(p)
    t_len = len(p.table)
    return {
        "module": f"{top}_{p.name}",
        "name": p.name,
        "source": p.source,
        "desc": desc(p),
        "inp": str(p.inp),
        "inp_w": p.inp.bits,
        "inp_signed": p.inp.signed,
        "inp_lo": p.inp.lo,
        "out": str(p.out),
        "out_w": p.out.bits,
        "length": p.length,
        "vectors": p.vectors,
        "count": p.count,
        "len_w": index_bits(p.length),
        "oc_w": index_bits(p.count),
        "e_w": e_w,
        "t_len": t_len,
        "t_full": t_len == 1 << p.inp.bits,
        "table_words": [_hex(v, e_w) for v in p.table.tolist()],
        "s_w": p.sum.bits,
        "qb": p.quotient_bits,
        "qb_w": index_bits(p.quotient_bits),
        "q_w": max(p.quotient_bits, p.out.bits),
        "r_w": remainder_bits(p),
        "hi": p.hi,
        "clamp": p.hi < 1 << (p.quotient_bits - 1),
        "ti_w": index_bits(t_len),
        "hi_hex": _hex(p.hi, max(p.quotient_bits, p.out.bits)),
        "latency": p.latency,
        "ii": p.ii,
    }


# -- HLS ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SoftmaxSpelling:
    """The HLS template's types and exp-table ROM (hwgen.hw.hls_emit spells them)."""

    summary: str  #: one line saying what the engine computes
    in_t: str
    out_t: str
    x_t: str  #: the unsigned offset code x - in.lo
    sum_t: str
    rem_t: str
    q_t: str
    lo: str  #: the smallest input code
    t_len: int
    rom: Any  #: hwgen.hw.hls_emit.Rom of the exp table


def hls_spelling(p: SoftmaxPlan) -> SoftmaxSpelling:
    from hwgen.hw.hls_emit import _rom, ap_type, c_int
    from hwgen.hw.names import comment_safe

    check_plan(p)
    return SoftmaxSpelling(
        summary=f"{p.name} (ONNX '{comment_safe(p.source)}'): {desc(p)}",
        in_t=ap_type(p.inp),
        out_t=ap_type(p.out),
        x_t=f"ap_uint<{p.inp.bits}>",
        sum_t=f"ap_uint<{p.sum.bits}>",
        rem_t=f"ap_uint<{remainder_bits(p)}>",
        q_t=f"ap_uint<{p.quotient_bits}>",
        lo=c_int(p.inp.lo),
        t_len=len(p.table),
        rom=_rom(p.table, IntType(exp_bits(p), False), f"layer '{p.name}' (ONNX {p.source!r})"),
    )


def standalone_schedule(p: SoftmaxPlan, top: str) -> Schedule:
    """A one-engine Schedule around the plan (input port x, output port y, vectors of `count` codes).

    What the engine tests emit with hwgen.hw.rtl_emit.emit_rtl / hls_emit.emit_hls and simulate.
    """
    plan = dataclasses.replace(p, inputs=("x",), outputs=("y",))
    port_in = StreamPort("x", "x", p.inp, p.count, 0, (p.count,))
    port_out = StreamPort("y", "y", p.out, p.count, 0, (p.count,))
    streams = (Stream("x", "x", p.inp, (p.count,)), Stream("y", "y", p.out, (p.count,)))
    digest = model_hash(p.table, extra=repr((p.name, p.length, p.vectors, p.inp, p.out, p.quotient_bits, p.hi)))
    return Schedule(top, p.source, digest, port_in, port_out, (plan,), p.latency, p.ii, streams=streams)
