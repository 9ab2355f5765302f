"""The Schedule: the one place where widths, parallelism and timing are decided.

`schedule_graph` turns a quantized IR graph into plans. The accumulator width comes from the
actual weight codes and the input code range, so the hardware can never overflow it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math

import numpy as np

from hwgen.errors import ScheduleError
from hwgen.hw.names import legalize
from hwgen.hw.plan import DensePlan, IntType, Requant, Schedule, Stream, StreamPort
from hwgen.hw.timing import chain_latency, dense_timing

log = logging.getLogger(__name__)


def signed_bits_for(lo: int, hi: int) -> int:
    """Fewest two's-complement bits that hold every integer in [lo, hi]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return max(bits, 2)


def int_type_for(lo: int, hi: int) -> IntType:
    """Unsigned when lo >= 0, else signed: the narrowest type holding [lo, hi]."""
    if lo >= 0:
        return IntType(max(1, int(hi).bit_length()), False)
    return IntType(signed_bits_for(lo, hi), True)


def accumulator_range(weights: np.ndarray, biases: np.ndarray, inp: IntType) -> tuple[int, int]:
    """Exact extremes of x @ w.T + b over every input vector with codes in [inp.lo, inp.hi].

    Each product's extreme is at an end of the input range, independently per input, so the
    row extremes are sums of per-weight extremes. Zero weights contribute nothing.
    """
    w = np.asarray(weights).astype(object)
    a, b = w * inp.lo, w * inp.hi
    hi_rows = np.maximum(a, b).sum(axis=1) + np.asarray(biases).astype(object)
    lo_rows = np.minimum(a, b).sum(axis=1) + np.asarray(biases).astype(object)
    return int(min(lo_rows.min(), 0)), int(max(hi_rows.max(), 0))


def product_type(inp: IntType, w: IntType) -> IntType:
    """Width of one product of an input code and a weight code."""
    ends = [x * y for x in (inp.lo, inp.hi) for y in (w.lo, w.hi)]
    return int_type_for(min(ends), max(ends)) if min(ends) < 0 else IntType(max(ends).bit_length() or 1, False)


def valid_foldings(in_features: int, out_features: int) -> list[tuple[int, int, int]]:
    """Every (reuse, pe, simd) with PE | out_features and SIMD | in_features, smallest reuse first."""
    divs = lambda n: [d for d in range(1, n + 1) if n % d == 0]  # noqa: E731
    out = [((in_features // s) * (out_features // p), p, s) for p in divs(out_features) for s in divs(in_features)]
    # for equal reuse prefer the larger PE (fewer input-buffer read ports)
    return sorted(out, key=lambda t: (t[0], -t[1]))


def choose_folding(in_features: int, out_features: int, reuse: int, where: str = "") -> tuple[int, int]:
    """PE, SIMD for a requested reuse factor: the smallest valid reuse >= the request."""
    if reuse < 1:
        raise ScheduleError(f"{where}: reuse factor {reuse} must be >= 1")
    options = valid_foldings(in_features, out_features)
    for r, pe, simd in options:
        if r >= reuse:
            if r != reuse:
                log.info(
                    "%s: reuse %d is not a valid folding of %dx%d; using %d", where, reuse, out_features, in_features, r
                )
            return pe, simd
    r, pe, simd = options[-1]
    log.info("%s: reuse %d exceeds the maximum %d; using %d", where, reuse, r, r)
    return pe, simd


def mac_types(weights: np.ndarray, biases: np.ndarray, inp: IntType) -> tuple[IntType, IntType, IntType]:
    """(weight, bias, accumulator) types of a MAC layer (Dense or Conv) from its actual codes.

    Weights are always signed in hardware. The accumulator holds every x @ w.T + b over input
    codes in [inp.lo, inp.hi]; a conv's zero padding only removes terms, so its range is no wider.
    """
    flat = np.asarray(weights).reshape(len(weights), -1)
    w_type = int_type_for(int(min(flat.min(), 0)), int(max(flat.max(), 0)))
    w_type = w_type if w_type.signed else IntType(w_type.bits + 1, True)
    b_type = IntType(signed_bits_for(int(min(biases.min(), 0)), int(max(biases.max(), 0))), True)
    lo, hi = accumulator_range(flat, biases, inp)
    return w_type, b_type, IntType(signed_bits_for(lo, hi), True)


def unify_shift(
    multipliers: tuple[int, ...], shifts: tuple[int, ...], offsets: tuple[int, ...], requant: Requant
) -> Requant:
    """A per-channel (M0, n, offset) requantization with one shift for the layer: n = max_c n_c,
    M0_c and offset_c scaled by 2**(n - n_c), which leaves every shift_round result unchanged.
    A negative n (a ratio >= 2**24) becomes n = 0 with M0 scaled up: still exact."""
    if not (len(multipliers) == len(shifts) == len(offsets)) or not multipliers:
        counts = f"{len(multipliers)} multipliers, {len(shifts)} shifts, {len(offsets)} offsets"
        raise ScheduleError(f"requantization: {counts}; need one of each per output channel")
    n = max(0, *shifts)
    ms = tuple(int(m) << (n - int(s)) for m, s in zip(multipliers, shifts, strict=True))
    offs = tuple(int(o) << (n - int(s)) for o, s in zip(offsets, shifts, strict=True))
    if min(ms) < 0:
        raise ScheduleError(f"requantization multipliers must be >= 0, got {min(ms)}")
    return dataclasses.replace(requant, shift=n, multiplier=ms, offset=offs, prod_type=None)


def with_product_type(requant: Requant, acc_lo: int, acc_hi: int) -> Requant:
    """A scaled requant with `prod_type` holding acc * M0[c] + offset[c] for every acc in [acc_lo, acc_hi]."""
    if not requant.scaled:
        return requant
    ends = [a * m + o for m, o in zip(requant.multiplier, requant.offset, strict=True) for a in (acc_lo, acc_hi)]
    return dataclasses.replace(requant, prod_type=IntType(signed_bits_for(min(ends), max(ends)), True))


def plan_dense(
    name: str,
    source: str,
    weights: np.ndarray,
    biases: np.ndarray,
    inp: IntType,
    out: IntType,
    requant: Requant,
    *,
    pe: int,
    simd: int,
) -> DensePlan:
    """A DensePlan with every width derived here (never in an emitter)."""
    weights = np.asarray(weights, dtype=np.int64)
    biases = np.asarray(biases, dtype=np.int64)
    m, k = weights.shape
    if k % simd or m % pe:
        raise ScheduleError(f"layer '{source}': PE={pe} must divide {m} outputs and SIMD={simd} must divide {k} inputs")
    w_type, b_type, acc = mac_types(weights, biases, inp)
    if requant.scaled:
        requant = with_product_type(requant, *accumulator_range(weights, biases, inp))
    t = dense_timing(k, m, pe, simd)
    return DensePlan(
        name=name,
        source=source,
        in_features=k,
        out_features=m,
        pe=pe,
        simd=simd,
        inp=inp,
        w=w_type,
        prod=product_type(inp, w_type),
        acc=acc,
        out=out,
        bias=b_type,
        requant=requant,
        weights=weights,
        biases=biases,
        latency=t.latency,
        ii=t.ii,
    )


def chain_schedule(
    top: str,
    model: str,
    layers: list[DensePlan],
    input_port: StreamPort,
    output_port: StreamPort,
    *,
    notes: tuple[str, ...] = (),
) -> Schedule:
    """A Schedule for engines connected in a chain, with its model-level timing and content hash."""
    if not layers:
        raise ScheduleError(f"model '{model}': nothing to put in hardware (no layers)")
    for a, b in itertools.pairwise(layers):
        if a.out_features != b.in_features or a.out != b.inp:
            raise ScheduleError(
                f"layers '{a.source}' -> '{b.source}': {a.out_features}x{a.out} feeds {b.in_features}x{b.inp}"
            )
    latency = chain_latency([(p.in_features, p.out_features, p.pe, p.simd) for p in layers])
    ii = max(p.ii for p in layers)
    # streams: the input port, then each engine's output (the last one is the output port)
    taken = {top, input_port.name, output_port.name, *(p.name for p in layers)}
    names = [input_port.name] + [legalize(f"{p.name}_out", taken) for p in layers[:-1]] + [output_port.name]
    streams = [Stream(input_port.name, input_port.source, input_port.elem, (input_port.count,))]
    streams += [Stream(names[i + 1], p.source, p.out, (p.out_features,)) for i, p in enumerate(layers)]
    layers = [dataclasses.replace(p, inputs=(names[i],), outputs=(names[i + 1],)) for i, p in enumerate(layers)]
    digest = model_hash(
        *[a for p in layers for a in (p.weights, p.biases)],
        extra=repr([(p.name, p.pe, p.simd, p.inp, p.out, p.requant) for p in layers]) + repr((input_port, output_port)),
    )
    return Schedule(
        top=top,
        model=model,
        model_hash=digest,
        input=input_port,
        output=output_port,
        layers=tuple(layers),
        latency=latency,
        ii=ii,
        notes=notes,
        streams=tuple(streams),
    )


def model_hash(*arrays: np.ndarray, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def clog2(n: int) -> int:
    return max(1, math.ceil(math.log2(max(n, 2))))


__all__ = [
    "accumulator_range",
    "chain_schedule",
    "choose_folding",
    "clog2",
    "int_type_for",
    "mac_types",
    "model_hash",
    "plan_dense",
    "signed_bits_for",
    "unify_shift",
    "valid_foldings",
    "with_product_type",
]
