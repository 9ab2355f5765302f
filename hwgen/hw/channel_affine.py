"""The per-channel affine engine: y = requant(x * m[c] + a[c]) with a multiplier and an offset per channel.

What it computes is hwgen.sim.exact.affine_codes for an Affine node whose scale or offset is not a
scalar (an unfolded Mul/Add/Sub/Div by a per-channel constant): one integer product, one offset,
then the one requantization step (shift fx.frac + fm.frac - fo.frac, the node's rounding,
saturation). A scalar Affine stays a lookup table (hwgen.hw.lower).

The constants are laid out in stream order (images channels last, vectors in their stream order)
and cut to their period: the smallest P dividing the sample's element count with the sequence
repeating every P elements (the channels of an image, the length of a vector). Element i of a
sample uses entry i mod P, kept by a counter.

Pipeline (templates/rtl/channel_affine.sv.j2): product + offset, round + shift, clamp: three
register stages, one element per cycle, the add engine's cycle model (hwgen.hw.engine_timing).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from hwgen.errors import ScheduleError, UnsupportedOpError
from hwgen.hw.plan import ChannelAffinePlan, IntType, Requant, Schedule, Stream, StreamPort
from hwgen.hw.schedule import model_hash, signed_bits_for
from hwgen.hw.timing import EngineTiming
from hwgen.ir.graph import Graph, Node
from hwgen.numerics import Rounding
from hwgen.sim.exact import fixed_format

#: register stages: product + offset, round + shift, clamp
AFFINE_STAGES = 3


def stream_order(values: np.ndarray, shape: tuple[int, ...], perm: np.ndarray | None) -> np.ndarray:
    """A per-sample tensor of IR `shape` ([C, H, W] or [K]) as its stream's element sequence."""
    v = np.asarray(values).reshape(shape)
    if len(shape) == 3:
        return v.transpose(1, 2, 0).reshape(-1)
    flat = v.reshape(-1)
    return flat[perm] if perm is not None else flat


def period_of(*seqs: np.ndarray) -> int:
    """The smallest P dividing the length with every sequence repeating every P elements."""
    n = len(seqs[0])
    for p in range(1, n + 1):
        if n % p == 0 and all(np.array_equal(s.reshape(-1, p), np.broadcast_to(s[:p], (n // p, p))) for s in seqs):
            return p
    return n  # unreachable: P = n always repeats


def plan_channel_affine(
    name: str,
    source: str,
    *,
    scales: np.ndarray,
    offsets: np.ndarray,
    inp: IntType,
    m: IntType,
    out: IntType,
    requant: Requant,
) -> ChannelAffinePlan:
    """The plan over per-element scale/offset codes in stream order (cut to their period here)."""
    scales, offsets = np.asarray(scales, dtype=np.int64), np.asarray(offsets, dtype=np.int64)
    count = len(scales)
    period = period_of(scales, offsets)
    sc, off = scales[:period], offsets[:period]
    ends = np.stack([inp.lo * sc, inp.hi * sc]) + off
    acc = IntType(signed_bits_for(int(min(ends.min(), 0)), int(max(ends.max(), 0))), True)
    p = ChannelAffinePlan(
        name=name,
        source=source,
        count=count,
        period=period,
        inp=inp,
        m=m,
        a=IntType(signed_bits_for(int(min(off.min(), 0)), int(max(off.max(), 0))), True),
        acc=acc,
        out=out,
        requant=requant,
        scales=sc,
        offsets=off,
    )
    t = channel_affine_timing(p)
    return dataclasses.replace(p, latency=t.latency, ii=t.ii)


def plan_from_node(
    graph: Graph, node: Node, stream_shape: tuple[int, ...], perm: np.ndarray | None, name: str
) -> ChannelAffinePlan:
    """The engine of an Affine node with a per-channel scale or offset (codes as sim.exact.affine_codes)."""
    x, out_v = node.inputs[0], node.outputs[0]
    fx, fm, fo = fixed_format(graph, x), fixed_format(graph, node.inputs[1]), fixed_format(graph, out_v)
    shape = graph.value(x).type.shape
    try:
        m = np.broadcast_to(fm.encode_exact(graph.const(node.inputs[1])), (1, *shape))
        a = np.broadcast_to(fixed_format(graph, node.inputs[2]).encode_exact(graph.const(node.inputs[2])), (1, *shape))
    except ValueError as e:
        raise UnsupportedOpError(
            f"{node.describe()}: its scale/offset do not broadcast over one sample {list(shape)}; "
            "use constants shaped per sample (e.g. [C, 1, 1])"
        ) from e
    if fx.bits + fm.bits + 2 > 62 or int(np.abs(a).max(initial=0)).bit_length() > 60:
        raise UnsupportedOpError(
            f"{node.describe()}: x * scale + offset needs more than 62 bits; use narrower activations before it"
        )
    rq = Requant(fx.frac + fm.frac - fo.frac, Rounding(node.attrs["rounding"]), fo.min_code, fo.max_code)
    return plan_channel_affine(
        name,
        node.onnx_name or node.name,
        scales=stream_order(m, shape, perm),
        offsets=stream_order(a, shape, perm),
        inp=IntType(fx.bits, fx.signed),
        m=IntType(fm.bits, fm.signed),
        out=IntType(fo.bits, fo.signed),
        requant=rq,
    )


# -- cycle model --------------------------------------------------------------------------------
def channel_affine_timing(p: ChannelAffinePlan) -> EngineTiming:
    return EngineTiming(latency=p.count - 1 + AFFINE_STAGES, ii=p.count, first_out=AFFINE_STAGES, tail=AFFINE_STAGES)


def channel_affine_beats(p: ChannelAffinePlan, offers: np.ndarray) -> np.ndarray:
    k = np.arange(len(offers), dtype=np.int64)
    return np.maximum.accumulate(np.asarray(offers, dtype=np.int64) - k) + k + AFFINE_STAGES


# -- checks and descriptions --------------------------------------------------------------------
def desc(p: ChannelAffinePlan) -> str:
    return (
        f"per-channel affine x * m[c] + a[c] ({p.period} channels) over {p.count} elements, "
        f"{p.inp} x {p.m} + {p.a} -> {p.acc} -> {p.out}"
    )


def check_plan(p: ChannelAffinePlan) -> None:
    where = f"layer '{p.source}' ({p.name})"
    if p.period < 1 or p.count % p.period or p.scales.shape != (p.period,) or p.offsets.shape != (p.period,):
        raise ScheduleError(f"{where}: {p.period} scale/offset entries for {p.count} elements")
    for what, vals, t in (("scale", p.scales, p.m), ("offset", p.offsets, p.a)):
        if int(vals.min()) < t.lo or int(vals.max()) > t.hi:
            raise ScheduleError(f"{where}: {what} codes span [{vals.min()}, {vals.max()}], outside {t}")
    ends = np.stack([p.inp.lo * p.scales, p.inp.hi * p.scales]) + p.offsets
    if not p.acc.signed or int(ends.min()) < p.acc.lo or int(ends.max()) > p.acc.hi:
        raise ScheduleError(f"{where}: x * m + a spans [{ends.min()}, {ends.max()}], outside {p.acc}")
    if not p.out.lo <= p.requant.lo <= p.requant.hi <= p.out.hi or p.requant.scaled:
        raise ScheduleError(f"{where}: clamp [{p.requant.lo}, {p.requant.hi}] outside {p.out}")


# -- RTL ----------------------------------------------------------------------------------------
def rtl_context(p: ChannelAffinePlan, top: str) -> dict[str, Any]:
    """Everything templates/rtl/channel_affine.sv.j2 prints for one layer."""
    from hwgen.hw.rtl_emit import _hex, _requant_context, index_bits, requant_width

    check_plan(p)
    req_w = requant_width(p.acc.bits, p.requant.shift, p.out.bits)
    return {
        "module": f"{top}_{p.name}",
        "name": p.name,
        "source": p.source,
        "desc": desc(p),
        "count": p.count,
        "period": p.period,
        "inp": str(p.inp),
        "inp_w": p.inp.bits,
        "inp_signed": p.inp.signed,
        "m_w": p.m.bits,
        "m_signed": p.m.signed,
        "a_w": p.a.bits,
        "acc": str(p.acc),
        "acc_w": p.acc.bits,
        "req_w": req_w,
        "out": str(p.out),
        "out_w": p.out.bits,
        "ch_w": index_bits(p.period),
        "oc_w": index_bits(p.count),
        "scale_words": [_hex(v, p.m.bits) for v in p.scales.tolist()],
        "offset_words": [_hex(v, p.a.bits) for v in p.offsets.tolist()],
        "rq": _requant_context(p.requant, req_w, p.out.bits),
        "latency": p.latency,
        "ii": p.ii,
    }


# -- HLS ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ChannelAffineSpelling:
    summary: str
    in_t: str
    acc_t: str
    out_t: str
    m_rom: Any  #: hwgen.hw.hls_emit.Rom [period] scale codes
    a_rom: Any  #: [period] offset codes
    requant: Any  #: hwgen.hw.hls_emit.RequantSpelling


def hls_spelling(p: ChannelAffinePlan) -> ChannelAffineSpelling:
    from hwgen.hw.hls_emit import _rom, ap_type, requant_spelling
    from hwgen.hw.names import comment_safe

    check_plan(p)
    where = f"layer '{p.name}' (ONNX {p.source!r})"
    return ChannelAffineSpelling(
        summary=f"{p.name} (ONNX '{comment_safe(p.source)}'): {desc(p)}",
        in_t=ap_type(p.inp),
        acc_t=ap_type(p.acc),
        out_t=ap_type(p.out),
        m_rom=_rom(p.scales, p.m, where),
        a_rom=_rom(p.offsets, p.a, where),
        requant=requant_spelling(p.requant, p.acc, where),
    )


def standalone_schedule(p: ChannelAffinePlan, top: str) -> Schedule:
    """A one-engine Schedule around the plan (input port x, output port y), for the engine tests."""
    plan = dataclasses.replace(p, inputs=("x",), outputs=("y",))
    port_in = StreamPort("x", "x", p.inp, p.count, 0, (p.count,))
    port_out = StreamPort("y", "y", p.out, p.count, 0, (p.count,))
    streams = (Stream("x", "x", p.inp, (p.count,)), Stream("y", "y", p.out, (p.count,)))
    digest = model_hash(p.scales, p.offsets, extra=repr((p.name, p.count, p.inp, p.out, p.requant)))
    return Schedule(top, p.source, digest, port_in, port_out, (plan,), p.latency, p.ii, streams=streams)
