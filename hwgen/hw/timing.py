"""Cycle model of the engines, shared by the Schedule, the cost model, the RTL emitter and the tests.

It describes what templates/rtl implements, cycle for cycle; the RTL tests measure the real counts
and require them to equal this model (free-flowing I/O, one sample in flight).

Conventions. Cycles count rising clock edges. A beat is "accepted" at the edge where tvalid and
tready are both high. Latency is the number of edges from the edge accepting the first input beat
to the edge accepting the last output beat, both of the same sample, with a source that never
idles and a sink that is always ready.

Dense engine (templates/rtl/dense.sv.j2), K = in_features, M = out_features, SF = K/SIMD,
NF = M/PE, T = adder-tree register stages (`tree_stages`), P = `dense_pipeline(simd)` = 8 + T:

- LOAD: one input element per edge into a double-buffered input memory (two banks of SF words of
  SIMD elements). The edge accepting the last element E marks the bank full.
- COMPUTE: tiles (nf, sf) issue one per edge, the first at E+1; the last tile of fold f issues at
  I_f = E + (f+1)*SF. Pipeline from an issue edge I: input buffer read (I), input operand register
  and weight ROM read (I+1), input fan-out registers (`operand_fanout`) and weight operand register
  (I+2: the block RAM select multiplexer gets its own cycle), each multiplier's own input
  registers (I+3: the input's fan-out to PE multipliers is routed register to register through a
  tree), products (I+4, the DSP block's output register), T adder-tree stages, accumulator
  (I+5+T), rounding + shift (I+6+T), clamp (I+7+T), and the fold's PE results enter the output
  FIFO / serializer at I+8+T = I+P.
- OUTPUT: the serializer loads a fold word at L_f = max(I_f + P, L_{f-1} + PE) and emits its PE
  elements at edges L_f+1 .. L_f+PE (one per edge, element p = neuron nf*PE+p).
  So the last output edge is E + X with
      X = P + SF + PE + (NF-1) * max(SF, PE)
  and the single-engine latency is (K - 1) + X.
- A new fold is issued only while the output FIFO has a free slot for it (credits), so the
  datapath pipeline never stalls. `dense_out_fifo_depth` is deep enough that, with a free-flowing
  sink, credits never delay an output beat (they may hold compute back while the serializer is
  the bottleneck); a slow sink only delays issue at fold boundaries.
- II (start-to-start of consecutive vectors, free-flowing I/O): max(K, NF*SF, M): the next
  vector loads into the other bank while this one computes, and the serializer emits one element
  per edge.
- The latency is not monotonic in the reuse factor: when PE > SF the serializer, one element per
  edge, bounds the tail, so fewer, wider folds can finish later.

Chains (templates/rtl/top.sv.j2): engines are connected through zero-latency bypass FIFOs, so
engine i+1 accepts its last input at the edge engine i emits its last output:
    chain latency = (K_0 - 1) + sum_i X_i.
The chain's II is taken as the largest engine II (Schedule.ii); the RTL tests measure it equal
on every chain they run, but coupling through the bounded buffers is not modelled beyond that.

The CNN engines (conv, pool, add, fork, concat, lut) and general dataflow graphs are modelled in
hwgen.hw.engine_timing, with the same conventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: register stages of the dense engine outside the adder tree: read, operands, input fan-out,
#: multiplier inputs, product, accumulate, round/shift, clamp (the eighth edge loads the output FIFO)
DENSE_FIXED_STAGES = 8

#: adder-tree levels between two pipeline registers
TREE_LEVELS_PER_STAGE = 2


@dataclass(frozen=True)
class EngineTiming:
    latency: int  #: first input accepted -> last output accepted, free-flowing I/O
    ii: int  #: start-to-start interval of consecutive vectors
    first_out: int  #: first input accepted -> first output accepted
    tail: int  #: last input accepted -> last output accepted (X in the module docstring)


def tree_levels(simd: int) -> int:
    """Levels of the SIMD-input adder tree: ceil(log2(SIMD)) (0 for SIMD = 1)."""
    return max(0, (simd - 1).bit_length())


def tree_stages(simd: int) -> int:
    """Register stages in the adder tree: one after every TREE_LEVELS_PER_STAGE levels."""
    return -(-tree_levels(simd) // TREE_LEVELS_PER_STAGE)


def operand_fanout(pe: int) -> tuple[int, int]:
    """(XG, groups): an input lane reaches its PE multipliers through `groups` = ceil(PE / XG) copies
    of its register, each driving the multiplier input registers of XG neurons, XG = ceil(sqrt(PE)).

    Why: one register driving the PE multipliers spread over a die is a long net (on the ECP5-85F,
    60 DSP blocks behind one register took 11.5 ns of routing); two levels of about sqrt(PE) loads
    each keep every net short for one register stage, whatever PE is.
    """
    xg = math.isqrt(pe - 1) + 1
    return xg, -(-pe // xg)


def dense_pipeline(simd: int) -> int:
    """P: edges from a tile's issue to its fold result entering the output FIFO."""
    return DENSE_FIXED_STAGES + tree_stages(simd)


def dense_out_fifo_depth(in_features: int, out_features: int, pe: int, simd: int) -> int:
    """Fold words (PE results each) the output FIFO holds, so that credits never slow the engine.

    A fold reserves a slot when its first tile issues and returns it at the edge its word
    leaves the FIFO for the serializer; the slot is usable again from the next edge.
    - PE <= SF (compute-bound folds): a fold issues every SF edges and its word leaves SF-1+P
      edges after it started, so floor((P-1)/SF) + 1 earlier folds are still outstanding when
      the next one starts: depth floor((P-1)/SF) + 2 never stalls the issue.
    - PE > SF (the serializer is the bottleneck): a returned slot refills SF+P edges later
      while the serializer drains a word every PE edges, so ceil((SF+P)/PE) words keep it busy.
    """
    sf = in_features // simd
    p = dense_pipeline(simd)
    if pe > sf:
        return -(-(sf + p) // pe)
    return (p - 1) // sf + 2


def dense_timing(in_features: int, out_features: int, pe: int, simd: int) -> EngineTiming:
    """Cycle counts of one dense engine, I/O never stalling (see the module docstring)."""
    sf, nf = in_features // simd, out_features // pe
    p = dense_pipeline(simd)
    tail = p + sf + pe + (nf - 1) * max(sf, pe)
    return EngineTiming(
        latency=in_features - 1 + tail,
        ii=max(in_features, nf * sf, out_features),
        first_out=in_features - 1 + sf + p + 1,
        tail=tail,
    )


def chain_latency(engines: Sequence[tuple[int, int, int, int]]) -> int:
    """Latency of engines in a chain, first input accepted -> last output accepted.

    `engines` holds (in_features, out_features, pe, simd) in stream order. Engine i+1 accepts
    its last input at the edge engine i emits its last output (zero-latency FIFOs between), so
    the total is the first engine's load plus every engine's tail.
    """
    if not engines:
        return 0
    total = engines[0][0] - 1
    for k, m, pe, simd in engines:
        total += dense_timing(k, m, pe, simd).tail
    return total
