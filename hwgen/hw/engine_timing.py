"""Cycle models of the CNN engines (conv, pool, add, fork, concat, lut) and of a dataflow graph.

Each model gives `EngineTiming` with the same meaning as the dense engine's (hwgen.hw.timing):
`tail` is the time from the engine's last input beat to its last output beat, so the latency of
a graph is the longest path of tails after the input has streamed in. These models must describe
what templates/rtl implements; the RTL tests hold them within 10% of measured cycles.
"""

from __future__ import annotations

from hwgen.hw.plan import AddPlan, ConcatPlan, ConvPlan, DensePlan, EnginePlan, ForkPlan, LutPlan, PoolPlan
from hwgen.hw.timing import EngineTiming, dense_timing

#: register stages of the conv datapath between a window read and its result leaving the engine
CONV_PIPELINE = 8
#: register stages of the element-wise engines (add, lut, concat requant) and of the fork
ELEMENTWISE_PIPELINE = 2


def conv_cycles_per_pixel(p: ConvPlan) -> int:
    """Cycles to compute one output pixel: output-channel folds x input-channel folds x taps."""
    return (p.channels_out // p.pe) * (p.cg // p.simd) * p.kernel[0] * p.kernel[1]


def conv_timing(p: ConvPlan) -> EngineTiming:
    per_pixel = conv_cycles_per_pixel(p)
    n_in = p.in_h * p.in_w * p.channels_in
    n_out = p.out_h * p.out_w * p.channels_out
    compute = p.out_h * p.out_w * max(per_pixel, p.channels_out)
    # after the last input row arrives, the output rows that need it remain to be computed
    rows_after = max(1, -(-(p.kernel[0] - p.pads_end[0]) // p.stride[0]))
    tail = rows_after * p.out_w * max(per_pixel, p.channels_out) + CONV_PIPELINE
    ii = max(n_in, compute, n_out)
    first_out = ((p.kernel[0] - 1 - p.pads_begin[0]) * p.in_w + p.kernel[1]) * p.channels_in + per_pixel
    return EngineTiming(latency=n_in - 1 + tail, ii=ii, first_out=max(1, first_out), tail=tail)


def pool_timing(p: PoolPlan) -> EngineTiming:
    n_in = p.in_h * p.in_w * p.channels
    rows_after = max(1, -(-(p.kernel[0] - p.pads_end[0]) // p.stride[0]))
    tail = min(rows_after * p.out_w, p.out_h * p.out_w) * p.channels + ELEMENTWISE_PIPELINE
    return EngineTiming(latency=n_in - 1 + tail, ii=max(n_in, p.out_h * p.out_w * p.channels), first_out=1, tail=tail)


def elementwise_timing(count: int) -> EngineTiming:
    t = ELEMENTWISE_PIPELINE
    return EngineTiming(latency=count - 1 + t, ii=count, first_out=t, tail=t)


def engine_timing(p: EnginePlan) -> EngineTiming:
    """The cycle model of any engine plan."""
    if isinstance(p, DensePlan):
        return dense_timing(p.in_features, p.out_features, p.pe, p.simd)
    if isinstance(p, ConvPlan):
        return conv_timing(p)
    if isinstance(p, PoolPlan):
        return pool_timing(p)
    if isinstance(p, AddPlan | LutPlan):
        return elementwise_timing(p.count)
    if isinstance(p, ForkPlan):
        return elementwise_timing(p.count)
    if isinstance(p, ConcatPlan):
        return elementwise_timing(p.pixels * sum(part.channels for part in p.parts))
    raise TypeError(f"no timing model for {type(p).__name__}")


def graph_latency(engines: list[EnginePlan], input_stream: str, input_count: int, output_stream: str) -> int:
    """First input beat -> last output beat: input streaming plus the longest path of tails."""
    last = {input_stream: input_count - 1}
    for p in engines:
        t = max(last[s] for s in p.inputs) + engine_timing(p).tail
        for s in p.outputs:
            last[s] = t
    return last[output_stream]
