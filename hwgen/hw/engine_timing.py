"""Cycle models of the CNN engines (conv, pool, add, fork, concat, lut) and of a dataflow graph.

Each model gives `EngineTiming` with the same meaning as the dense engine's (hwgen.hw.timing):
edges counted from the one accepting the engine's first input beat, with a source that never
idles and a sink that is always ready. `tail` is the time from the engine's last input beat to
its last output beat when the engine has kept up with its input (it waited for the last beat);
it is negative when the last outputs do not need the last inputs. These models describe what
templates/rtl implements, and the RTL tests hold them equal to the measured cycles for single
engines (rtl_tests/test_engines.py) and within 10 % for whole designs (rtl_tests/test_cnn.py).

Conv engine (templates/rtl/conv.sv.j2). Windows in raster order; NF folds of TF = KH*KW*SF tiles
each, one tile per edge; P = hwgen.hw.timing.dense_pipeline(SIMD) (the dense datapath). Input
pixel n (global index over samples) has C beats; done(n) is the edge of its last one.
- WRITE: pixel n starts when pixel n-1 is done and the line buffer (B pixels) has room:
  start(n) = max(done(n-1) + 1, E(w*-1) + 1), w* the first window whose first pixel is past
  n - B (no constraint when that is window 0); done(n) = start(n) + C - 1.
- COMPUTE: fold g = (w, nf) issues its first tile at F_g = max(I_{g-1} + 1, L_{g-D} + 1,
  [nf = 0] done(last pixel of w) + 1) (D = output FIFO depth: credits), its last at
  I_g = F_g + TF - 1; window w ends at E(w) = I of its last fold.
- OUTPUT: L_g = max(I_g + P, L_{g-1} + PE); fold g's elements leave at L_g+1 .. L_g+PE.
`conv_run` evaluates these recurrences (one pass over windows and pixels).

Pool engine (templates/rtl/pool.sv.j2): one padded-grid position per edge; a real position waits
for its input beat, a padding one does not. Grid position g = (row*GRID_W + col)*C + ch; an output
leaves STAGES edges after its window's last position. With g0 / g1 the first / last real position
and ge the last window's last position: latency = ge - g0 + STAGES, tail = ge - g1 + STAGES.

Element-wise engines: `stages` registers between an input beat and its output beat.

Graph (`graph_latency`): streams carry (first beat, last beat) edges. An engine's last output is
max(last input + tail, first input + latency): the first term when it keeps up with a slower
producer, the second when it is the bottleneck (the bounded FIFOs and line buffers then pace its
input). FIFOs between engines pass a beat through in the same cycle when empty.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from hwgen.hw.plan import AddPlan, ConcatPlan, ConvPlan, DensePlan, EnginePlan, ForkPlan, LutPlan, PoolPlan
from hwgen.hw.timing import EngineTiming, dense_pipeline, dense_timing

#: register stages of the element-wise engines, input beat -> output register
LUT_STAGES = 1  #: table read
ADD_STAGES = 3  #: aligned sum, round + shift, clamp
CONCAT_STAGES = 3  #: selected input, round + shift, clamp
FORK_STAGES = 0  #: combinational broadcast
#: register stages of the pooling engine: H stage, V stage, then clamp (max) or
#: multiply, round + shift, clamp (avg)
POOL_STAGES = {"max": 3, "avg": 5}
#: samples the conv recurrence runs to measure its steady-state interval
_II_SAMPLES = 3


# -- conv --------------------------------------------------------------------------------------
def conv_lanes(p: ConvPlan) -> int:
    """Channels per line-buffer word: PE for depthwise (lane p feeds output channel p), else SIMD."""
    return p.pe if p.depthwise else p.simd


def conv_input_folds(p: ConvPlan) -> int:
    """SF: tiles per tap, input channels of the group / SIMD."""
    return p.cg // p.simd


def conv_tiles_per_fold(p: ConvPlan) -> int:
    """TF: tiles (cycles) per fold of PE output channels: every tap, every input-channel fold."""
    return p.kernel[0] * p.kernel[1] * conv_input_folds(p)


def conv_cycles_per_pixel(p: ConvPlan) -> int:
    """Cycles to compute one output pixel: output-channel folds x input-channel folds x taps."""
    return (p.channels_out // p.pe) * conv_tiles_per_fold(p)


def conv_buffer_pixels(p: ConvPlan) -> int:
    """Line-buffer pixels: KH-1 rows, the window's KW pixels, and one stride of look-ahead."""
    return (p.kernel[0] - 1) * p.in_w + p.kernel[1] + p.stride[1]


def conv_pipeline(p: ConvPlan) -> int:
    """Edges from a tile's issue to its fold result entering the output FIFO (the dense datapath)."""
    return dense_pipeline(p.simd)


def conv_out_fifo_depth(p: ConvPlan) -> int:
    """Fold words the output FIFO holds: the dense engine's rule with TF tiles per fold.

    Folds that issue back to back are the worst case (hwgen.hw.timing.dense_out_fifo_depth);
    waiting for input only spaces them out.
    """
    tf, pe, pipe = conv_tiles_per_fold(p), p.pe, conv_pipeline(p)
    if pe > tf:
        return -(-(tf + pipe) // pe)
    return (pipe - 1) // tf + 2


def conv_windows(p: ConvPlan) -> list[tuple[int, int]]:
    """(first, last) input pixel (row-major index) each window reads, padding taps excluded."""
    (kh, kw), (sh, sw), (pt, pl) = p.kernel, p.stride, p.pads_begin
    out = []
    for i in range(p.out_h):
        a = i * sh - pt
        r0, r1 = max(a, 0), min(a + kh - 1, p.in_h - 1)
        for j in range(p.out_w):
            b = j * sw - pl
            c0, c1 = max(b, 0), min(b + kw - 1, p.in_w - 1)
            out.append((r0 * p.in_w + c0, r1 * p.in_w + c1))
    return out


@dataclass(frozen=True)
class ConvRun:
    """Edges of one run of the conv recurrences (see the module docstring), per sample."""

    first_in: list[int]
    last_in: list[int]
    first_out: list[int]
    last_out: list[int]


def conv_run(p: ConvPlan, samples: int = 1, last_beat_at: int | None = None) -> ConvRun:
    """Evaluate the conv engine's recurrences for `samples` samples of free-flowing input.

    last_beat_at: hold the last input beat of sample 0 back until this edge (for the tail).
    """
    return _conv_run(_conv_key(p), samples, last_beat_at)


def _conv_key(p: ConvPlan) -> tuple:
    return (
        tuple(conv_windows(p)),
        p.in_h * p.in_w,
        p.channels_in,
        conv_buffer_pixels(p),
        p.channels_out // p.pe,
        conv_tiles_per_fold(p),
        p.pe,
        conv_pipeline(p),
        conv_out_fifo_depth(p),
    )


@functools.lru_cache(maxsize=256)
def _conv_run(key: tuple, samples: int, last_beat_at: int | None) -> ConvRun:
    windows, pixels, c, buf, nf, tf, pe, pipe, depth = key
    nw = len(windows)
    done: list[int] = []  # edge of each pixel's last beat (global pixel index)
    ends: list[int] = []  # E(w): edge of each window's last tile (global window index)
    loads: list[int] = []  # L_g: edge the serializer loads fold g
    issue = -1  # edge of the last tile issued so far
    w_room = 0  # first window whose first pixel is past n - buf, for the pixel n being placed

    def first_of(w: int) -> int:
        s, k = divmod(w, nw)
        return s * pixels + windows[k][0]

    def place(n: int) -> None:
        nonlocal w_room
        while w_room < samples * nw and first_of(w_room) <= n - buf:
            w_room += 1
        start = 0 if n == 0 else done[-1] + 1
        if w_room > 0:
            start = max(start, ends[w_room - 1] + 1)
        end = start + c - 1
        if last_beat_at is not None and n == pixels - 1:
            end = max(end, last_beat_at)
        done.append(end)

    first_out: list[int] = []
    last_out: list[int] = []
    for w in range(samples * nw):
        s, k = divmod(w, nw)
        need = s * pixels + windows[k][1]
        while len(done) <= need:
            place(len(done))
        for f in range(nf):
            g = w * nf + f
            start = issue + 1
            if f == 0:
                start = max(start, done[need] + 1)
            if g >= depth:
                start = max(start, loads[g - depth] + 1)
            issue = start + tf - 1
            loads.append(max(issue + pipe, loads[-1] + pe) if loads else issue + pipe)
        ends.append(issue)
        if k == 0:
            first_out.append(loads[w * nf] + 1)
        if k == nw - 1:
            last_out.append(loads[-1] + pe)
    while len(done) < samples * pixels:  # input pixels no window reads still have to be accepted
        place(len(done))
    # the first beat of pixel n is accepted at done(n) - (C - 1) unless the beat was held back
    first_in = [done[s * pixels] - (c - 1) for s in range(samples)]
    last_in = [done[(s + 1) * pixels - 1] for s in range(samples)]
    return ConvRun(first_in, last_in, first_out, last_out)


def conv_timing(p: ConvPlan) -> EngineTiming:
    """Latency, first output and tail of one sample, II between samples (free-flowing I/O)."""
    one = conv_run(p)
    latency = one.last_out[0]
    hold = 4 * latency + 16 * (p.in_h * p.in_w * p.channels_in) + 1000
    held = conv_run(p, last_beat_at=hold)
    many = conv_run(p, samples=_II_SAMPLES)
    return EngineTiming(
        latency=latency,
        ii=many.last_out[-1] - many.last_out[-2],
        first_out=one.first_out[0],
        tail=held.last_out[0] - hold,
    )


# -- pool --------------------------------------------------------------------------------------
def pool_grid(p: PoolPlan) -> tuple[int, int]:
    """(GRID_H, GRID_W): the padded rows/columns walked: the image, and the padding outputs need."""
    (kh, kw), (sh, sw), (pt, pl) = p.kernel, p.stride, p.pads_begin
    return max(pt + p.in_h, (p.out_h - 1) * sh + kh), max(pl + p.in_w, (p.out_w - 1) * sw + kw)


def pool_stages(p: PoolPlan) -> int:
    return POOL_STAGES[p.kind]


def pool_timing(p: PoolPlan) -> EngineTiming:
    (kh, kw), (sh, sw), (pt, pl) = p.kernel, p.stride, p.pads_begin
    gh, gw = pool_grid(p)
    c = p.channels

    def pos(row: int, col: int, ch: int) -> int:
        return (row * gw + col) * c + ch

    g0 = pos(pt, pl, 0)  # first real position
    g1 = pos(pt + p.in_h - 1, pl + p.in_w - 1, c - 1)  # last real position
    gf = pos(kh - 1, kw - 1, 0)  # the first output's last position
    ge = pos((p.out_h - 1) * sh + kh - 1, (p.out_w - 1) * sw + kw - 1, c - 1)  # the last output's
    st = pool_stages(p)
    return EngineTiming(latency=ge - g0 + st, ii=gh * gw * c, first_out=gf - g0 + st, tail=ge - g1 + st)


# -- element-wise ------------------------------------------------------------------------------
def elementwise_timing(count: int, stages: int) -> EngineTiming:
    return EngineTiming(latency=count - 1 + stages, ii=count, first_out=stages, tail=stages)


def engine_timing(p: EnginePlan) -> EngineTiming:
    """The cycle model of any engine plan."""
    if isinstance(p, DensePlan):
        return dense_timing(p.in_features, p.out_features, p.pe, p.simd)
    if isinstance(p, ConvPlan):
        return conv_timing(p)
    if isinstance(p, PoolPlan):
        return pool_timing(p)
    if isinstance(p, AddPlan):
        return elementwise_timing(p.count, ADD_STAGES)
    if isinstance(p, LutPlan):
        return elementwise_timing(p.count, LUT_STAGES)
    if isinstance(p, ForkPlan):
        return elementwise_timing(p.count, FORK_STAGES)
    if isinstance(p, ConcatPlan):
        return elementwise_timing(p.pixels * sum(part.channels for part in p.parts), CONCAT_STAGES)
    raise TypeError(f"no timing model for {type(p).__name__}")


def graph_latency(engines: list[EnginePlan], input_stream: str, input_count: int, output_stream: str) -> int:
    """First input beat -> last output beat of one sample through the dataflow graph.

    Every stream carries the edges of its first and last beat; an engine's last output beat is
    max(last input + tail, first input + latency) (see the module docstring), its first is its
    first input plus its own first-output delay.
    """
    first = {input_stream: 0}
    last = {input_stream: input_count - 1}
    for p in engines:
        t = engine_timing(p)
        f_in = max(first[s] for s in p.inputs)
        l_in = max(last[s] for s in p.inputs)
        for s in p.outputs:
            first[s] = f_in + t.first_out
            last[s] = max(l_in + t.tail, f_in + t.latency)
    return last[output_stream]
