"""Cycle model of the engines, shared by the Schedule, the cost model and the RTL test timeouts.

It must describe what templates/rtl implements, cycle for cycle; `hwgen verify --rtl` measures
the real count and the tests hold the two within 10%.

Dense engine (templates/rtl/dense.sv.j2): LOAD accepts `in_features` elements, one per cycle;
COMPUTE runs NF*SF tile cycles through a pipeline of DENSE_PIPELINE stages; each finished
neuron fold pushes PE results into the output FIFO, which drains one element per cycle while
the engine goes on. The next LOAD starts when COMPUTE has issued its last tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: register stages between issuing a tile and its fold result entering the output FIFO
DENSE_PIPELINE = 3


@dataclass(frozen=True)
class EngineTiming:
    latency: int  #: first input accepted -> last output produced, free-flowing I/O
    ii: int  #: start-to-start interval of consecutive vectors
    first_out: int  #: first input accepted -> first output produced


def dense_timing(in_features: int, out_features: int, pe: int, simd: int) -> EngineTiming:
    """Cycle counts of one dense engine, I/O never stalling."""
    sf, nf = in_features // simd, out_features // pe
    load = in_features
    # fold k's results are ready at load + (k+1)*SF + PIPELINE; the output port emits one per cycle
    emitted = 0
    for k in range(nf):
        ready = load + (k + 1) * sf + DENSE_PIPELINE
        emitted = max(emitted, ready) + pe
    first_out = load + sf + DENSE_PIPELINE + 1
    return EngineTiming(latency=emitted, ii=load + nf * sf, first_out=first_out)


def chain_latency(engines: Sequence[tuple[int, int, int, int]]) -> int:
    """Latency of engines in a chain: each starts computing when its last input arrived.

    `engines` holds (in_features, out_features, pe, simd) in stream order. Engine i+1's input
    finishes arriving when engine i emits its last output, so the latencies add up less the
    overlapped loading of each later engine.
    """
    total = 0
    for i, (k, m, pe, simd) in enumerate(engines):
        t = dense_timing(k, m, pe, simd)
        total += t.latency if i == 0 else t.latency - k
    return total
