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
  start(n) = max(done(n-1) + 1, E(w*-1) + 1), w* the first window whose first kept pixel
  (`conv_windows`) is past n - B (no constraint when that is window 0); its C beats follow one
  per edge, each no earlier than offered (free-flowing: done(n) = start(n) + C - 1).
- COMPUTE: fold g = (w, nf) issues its first tile at F_g = max(I_{g-1} + 1, L_{g-D} + 1,
  [nf = 0] done(last pixel of w) + 1) (D = output FIFO depth: credits), its last at
  I_g = F_g + TF - 1; window w ends at E(w) = I of its last fold.
- OUTPUT: L_g = max(I_g + P, L_{g-1} + PE); fold g's elements leave at L_g+1 .. L_g+PE.
`conv_run` evaluates these recurrences (one pass over windows and pixels).

Pool engine (templates/rtl/pool.sv.j2): one padded-grid position per edge; a real position waits
for its input beat, a padding one does not. Grid position g = (row*GRID_W + col)*C + ch; an output
leaves STAGES edges after its window's last position. With g0 / g1 the first / last real position
and ge the last window's last position: latency = ge - g0 + STAGES, tail = ge - g1 + STAGES.

Element-wise engines: `stages` registers between an input beat and its output beat (add: aligned
sum, round, clamp; concat: selected input, round, clamp; lut: table read; fork: none).

Graph (`graph_latency`): the edge each beat of each stream is offered is propagated through the
engines in topological order (`engine_beats`: the same recurrences, fed with the input beats'
offer edges instead of a free-flowing source); an engine takes a beat no earlier than offered.
FIFOs between engines pass a beat through in the same cycle when empty, so a beat is offered to
the reader at the edge its producer emits it. What is not modelled: a reader's back-pressure
delaying its producer's later beats (the line buffer's look-ahead row keeps that rare); the RTL
tests measure every whole design within 10 % (the designs in rtl_tests/test_cnn.py: exactly).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from hwgen.hw import channel_affine, softmax, sparse, winograd
from hwgen.hw.plan import (
    AddPlan,
    ChannelAffinePlan,
    ConcatPlan,
    ConvPlan,
    DensePlan,
    EnginePlan,
    ForkPlan,
    LutPlan,
    PoolPlan,
    SoftmaxPlan,
    WinogradConvPlan,
)
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
#: an edge before anything happens (padding walked while the engine waited for its input)
_NEVER = -(1 << 40)


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
    """Line-buffer pixels: a window's KH-1 rows and KW pixels, plus SH rows of look-ahead.

    The look-ahead lets the input of the next output row load while this row computes. Without
    it (a buffer of exactly the window's span), a conv that is slower than its input within a
    row but not over a row stalls its producer: in the LeNet-5 test design conv2 held conv1,
    the bottleneck, back by 9 % of the whole latency.
    """
    (kh, kw), sh = p.kernel, p.stride[0]
    return (kh - 1 + sh) * p.in_w + kw


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
    """(first, last) input pixel (row-major index) of each window in raster order.

    last: the last pixel the window reads (padding taps excluded). first: the first pixel this
    window or any later one of the sample reads: the line buffer must keep it. It differs from
    the window's own first pixel only in output rows whose next row starts at the same input row
    (top padding), where the next row's first window starts left of this row's windows.
    """
    (kh, kw), (sh, sw), (pt, pl) = p.kernel, p.stride, p.pads_begin
    own = []
    for i in range(p.out_h):
        a = i * sh - pt
        r0, r1 = max(a, 0), min(a + kh - 1, p.in_h - 1)
        for j in range(p.out_w):
            b = j * sw - pl
            c0, c1 = max(b, 0), min(b + kw - 1, p.in_w - 1)
            own.append((r0 * p.in_w + c0, r1 * p.in_w + c1))
    out, keep = [], p.in_h * p.in_w
    for first, last in reversed(own):
        keep = min(keep, first)
        out.append((keep, last))
    return out[::-1]


@dataclass(frozen=True)
class ConvRun:
    """Edges of one run of the conv recurrences (see the module docstring), per sample."""

    first_in: list[int]
    last_in: list[int]
    first_out: list[int]
    last_out: list[int]


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


def _conv_recurrence(key: tuple, samples: int, offers: np.ndarray) -> tuple[ConvRun, np.ndarray]:
    """The conv recurrences over `samples` samples whose input beat k is offered at offers[k].

    Returns the per-sample edges and the edge each output beat is offered (a free sink takes it then).
    """
    windows, pixels, c, buf, nf, tf, pe, pipe, depth = key
    nw = len(windows)
    offer = offers.tolist()
    done: list[int] = []  # edge of each pixel's last beat (global pixel index)
    starts: list[int] = []  # edge of each pixel's first beat
    ends: list[int] = []  # E(w): edge of each window's last tile (global window index)
    loads: list[int] = []  # L_g: edge the serializer loads fold g
    issue = -1  # edge of the last tile issued so far
    w_room = 0  # first window whose first pixel is past n - buf, for the pixel n being placed
    beat = -1  # edge of the last input beat accepted

    def first_of(w: int) -> int:
        s, k = divmod(w, nw)
        return s * pixels + windows[k][0]

    def place(n: int) -> None:
        nonlocal w_room, beat
        while w_room < samples * nw and first_of(w_room) <= n - buf:
            w_room += 1
        t = beat + 1 if w_room == 0 else max(beat + 1, ends[w_room - 1] + 1)
        starts.append(max(t, offer[n * c]))
        for k in range(n * c, (n + 1) * c):
            t = max(t, offer[k])
            beat = t
            t += 1
        done.append(beat)

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
    first_in = [starts[s * pixels] for s in range(samples)]
    last_in = [done[(s + 1) * pixels - 1] for s in range(samples)]
    beats = (np.asarray(loads, dtype=np.int64)[:, None] + np.arange(1, pe + 1)).reshape(-1)
    return ConvRun(first_in, last_in, first_out, last_out), beats


@functools.lru_cache(maxsize=256)
def _conv_free(key: tuple, samples: int, hold: int | None) -> ConvRun:
    """The recurrences with a free-flowing source (optionally holding sample 0's last beat back)."""
    _windows, pixels, c, *_ = key
    offers = np.zeros(samples * pixels * c, dtype=np.int64)
    if hold is not None:
        offers[pixels * c - 1] = hold
    return _conv_recurrence(key, samples, offers)[0]


def conv_run(p: ConvPlan, samples: int = 1, last_beat_at: int | None = None) -> ConvRun:
    """Evaluate the conv engine's recurrences for `samples` samples of free-flowing input.

    last_beat_at: hold the last input beat of sample 0 back until this edge (for the tail).
    """
    return _conv_free(_conv_key(p), samples, last_beat_at)


def conv_beats(p: ConvPlan, offers: np.ndarray) -> np.ndarray:
    """Edges the output beats of one sample are offered, input beat k being offered at offers[k]."""
    return _conv_recurrence(_conv_key(p), 1, np.asarray(offers, dtype=np.int64))[1]


def conv_timing(p: ConvPlan) -> EngineTiming:
    """Latency, first output and tail of one sample, II between samples (free-flowing I/O)."""
    one = conv_run(p)
    latency = one.last_out[0]
    hold = 4 * latency + 16 * (p.in_h * p.in_w * p.channels_in) + 1000
    held = conv_run(p, last_beat_at=hold)
    many = conv_run(p, samples=_II_SAMPLES)
    # no window reads the last input pixel (trailing rows/columns no stride reaches): the last
    # output does not wait for it, and the tail is the free-flowing one (negative)
    tail = held.last_out[0] - hold if held.last_out[0] > hold else latency - one.last_in[0]
    return EngineTiming(
        latency=latency,
        ii=many.last_out[-1] - many.last_out[-2],
        first_out=one.first_out[0],
        tail=tail,
    )


# -- pool --------------------------------------------------------------------------------------
def pool_grid(p: PoolPlan) -> tuple[int, int]:
    """(GRID_H, GRID_W): the padded rows/columns walked: the image, and the padding outputs need."""
    (kh, kw), (sh, sw), (pt, pl) = p.kernel, p.stride, p.pads_begin
    return max(pt + p.in_h, (p.out_h - 1) * sh + kh), max(pl + p.in_w, (p.out_w - 1) * sw + kw)


def pool_stages(p: PoolPlan) -> int:
    return POOL_STAGES[p.kind]


def _pool_positions(p: PoolPlan) -> tuple[np.ndarray, np.ndarray]:
    """Grid positions (row*GRID_W + col)*C + ch of the input beats and of the outputs, in stream order."""
    (kh, kw), (sh, sw), (pt, pl) = p.kernel, p.stride, p.pads_begin
    _gh, gw = pool_grid(p)
    c = np.arange(p.channels)
    rows, cols = np.arange(p.in_h) + pt, np.arange(p.in_w) + pl
    real = ((rows[:, None, None] * gw + cols[None, :, None]) * p.channels + c).reshape(-1)
    rows, cols = np.arange(p.out_h) * sh + kh - 1, np.arange(p.out_w) * sw + kw - 1
    ends = ((rows[:, None, None] * gw + cols[None, :, None]) * p.channels + c).reshape(-1)
    return real, ends


def pool_timing(p: PoolPlan) -> EngineTiming:
    real, ends = _pool_positions(p)
    gh, gw = pool_grid(p)
    g0, g1 = int(real[0]), int(real[-1])
    st = pool_stages(p)
    return EngineTiming(
        latency=int(ends[-1]) - g0 + st,
        ii=gh * gw * p.channels,
        first_out=int(ends[0]) - g0 + st,
        tail=int(ends[-1]) - g1 + st,
    )


def pool_beats(p: PoolPlan, offers: np.ndarray) -> np.ndarray:
    """Edges the output beats of one sample are offered, input beat k being offered at offers[k].

    One grid position per edge at most: a real one no earlier than its beat's offer, a padding
    one at once (the padding before the first real position is walked while the engine idles).
    """
    real, ends = _pool_positions(p)
    gh, gw = pool_grid(p)
    t = np.full(gh * gw * p.channels, _NEVER, dtype=np.int64)
    t[real] = offers
    g = np.arange(t.size, dtype=np.int64)
    t = np.maximum.accumulate(t - g) + g  # t[g] = max(offer[g], t[g-1] + 1)
    return t[ends] + pool_stages(p)


# -- element-wise ------------------------------------------------------------------------------
def elementwise_timing(count: int, stages: int) -> EngineTiming:
    return EngineTiming(latency=count - 1 + stages, ii=count, first_out=stages, tail=stages)


def _one_per_edge(offers: np.ndarray) -> np.ndarray:
    """Edges beats are taken by an engine that takes one per edge: max(offer[k], taken[k-1] + 1)."""
    k = np.arange(len(offers), dtype=np.int64)
    return np.maximum.accumulate(np.asarray(offers, dtype=np.int64) - k) + k


def dense_beats(p: DensePlan, offers: np.ndarray) -> np.ndarray:
    """Edges the output beats of one vector are offered (hwgen.hw.timing's fold recurrence)."""
    last_in = int(_one_per_edge(offers)[-1])
    sf, nf, pe, pipe = p.sf, p.nf, p.pe, dense_pipeline(p.simd)
    loads, prev = [], None
    for f in range(nf):
        ready = last_in + (f + 1) * sf + pipe
        prev = ready if prev is None else max(ready, prev + pe)
        loads.append(prev)
    return (np.asarray(loads, dtype=np.int64)[:, None] + np.arange(1, pe + 1)).reshape(-1)


def engine_beats(p: EnginePlan, offers: list[np.ndarray]) -> np.ndarray:
    """Edges each output beat of one sample is offered, given when each input beat is offered.

    A beat offered at edge t is taken at t or later, when the engine can take it; the output
    streams are read by a free sink (a consumer's back-pressure on its producer is not modelled).
    """
    if isinstance(p, DensePlan):
        return dense_beats(p, offers[0])
    if isinstance(p, ConvPlan):
        return conv_beats(p, offers[0])
    if isinstance(p, PoolPlan):
        return pool_beats(p, offers[0])
    if isinstance(p, AddPlan):
        return _one_per_edge(np.maximum(offers[0], offers[1])) + ADD_STAGES
    if isinstance(p, LutPlan):
        return _one_per_edge(offers[0]) + LUT_STAGES
    if isinstance(p, SoftmaxPlan):
        return softmax.softmax_beats(p, offers[0])
    if isinstance(p, ChannelAffinePlan):
        return channel_affine.channel_affine_beats(p, offers[0])
    if isinstance(p, ForkPlan):
        return _one_per_edge(offers[0]) + FORK_STAGES
    if isinstance(p, ConcatPlan):
        merged = np.hstack([o.reshape(p.pixels, q.channels) for o, q in zip(offers, p.parts, strict=True)])
        return _one_per_edge(merged.reshape(-1)) + CONCAT_STAGES
    if isinstance(p, WinogradConvPlan):
        return winograd.winograd_beats(p, offers[0])
    if isinstance(p, sparse.SparseDensePlan):
        # the worst case: every input element non-zero (the real cycles depend on the activations)
        return sparse.sparse_beats(p, offers[0], np.ones(p.in_features, dtype=np.int64))
    raise TypeError(f"no timing model for {type(p).__name__}")


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
    if isinstance(p, SoftmaxPlan):
        return softmax.softmax_timing(p)
    if isinstance(p, ChannelAffinePlan):
        return channel_affine.channel_affine_timing(p)
    if isinstance(p, ForkPlan):
        return elementwise_timing(p.count, FORK_STAGES)
    if isinstance(p, ConcatPlan):
        return elementwise_timing(p.pixels * sum(part.channels for part in p.parts), CONCAT_STAGES)
    if isinstance(p, WinogradConvPlan):
        return winograd.winograd_timing(p)
    if isinstance(p, sparse.SparseDensePlan):
        # worst case (all inputs non-zero, hwgen.hw.sparse): outputs leave one per edge after the drain
        # starts, so the first is out_features - 1 edges before the last; inputs are taken one per edge
        return EngineTiming(
            latency=p.latency, ii=p.ii, first_out=p.latency - p.out_features + 1, tail=p.latency - p.in_features + 1
        )
    raise TypeError(f"no timing model for {type(p).__name__}")


def graph_latency(engines: list[EnginePlan], input_stream: str, input_count: int, output_stream: str) -> int:
    """First input beat -> last output beat of one sample through the dataflow graph.

    The source offers every input beat from edge 0 on (the first is taken at edge 0); each
    engine turns the edges its input beats are offered into the edges its output beats are
    (`engine_beats`), in topological order; the sink takes every beat when offered.
    """
    offers = {input_stream: np.zeros(input_count, dtype=np.int64)}
    for p in engines:
        out = engine_beats(p, [offers[s] for s in p.inputs])
        for s in p.outputs:
            offers[s] = out
    return int(offers[output_stream][-1])
