"""The CNN engines' cycle models (hwgen.hw.engine_timing): their algebra and invariants.

The RTL tests (rtl_tests/test_engines.py, test_cnn.py) hold the real engines to these numbers;
here the models are checked against each other and against closed forms of simple cases.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from hwgen.hw import engine_timing as et
from hwgen.hw.plan import (
    AddPlan,
    ConcatPart,
    ConcatPlan,
    ConvPlan,
    DensePlan,
    ForkPlan,
    IntType,
    LutPlan,
    PoolPlan,
    Requant,
)
from hwgen.hw.schedule import plan_dense
from hwgen.hw.timing import chain_latency, dense_pipeline, dense_timing
from hwgen.numerics import Rounding

S8, U8 = IntType(8, True), IntType(8, False)
RQ = Requant(4, Rounding.HALF_EVEN, -128, 127)


def conv(
    c: int = 4,
    m: int = 6,
    hw: tuple[int, int] = (7, 8),
    k: tuple[int, int] = (3, 3),
    *,
    stride: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (1, 1, 1, 1),
    groups: int = 1,
    pe: int = 1,
    simd: int = 1,
) -> ConvPlan:
    h, w = hw
    oh = (h + pads[0] + pads[2] - k[0]) // stride[0] + 1
    ow = (w + pads[1] + pads[3] - k[1]) // stride[1] + 1
    return ConvPlan(
        name="c",
        source="c",
        channels_in=c,
        channels_out=m,
        in_h=h,
        in_w=w,
        out_h=oh,
        out_w=ow,
        kernel=k,
        stride=stride,
        pads_begin=pads[:2],
        pads_end=pads[2:],
        groups=groups,
        pe=pe,
        simd=simd,
        inp=S8,
        w=S8,
        prod=IntType(16, True),
        acc=IntType(24, True),
        out=S8,
        bias=IntType(12, True),
        requant=RQ,
        weights=np.ones((m, c // groups, *k), dtype=np.int64),
        biases=np.zeros(m, dtype=np.int64),
    )


def pool(kind: str, c: int, hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int], pads=(0, 0, 0, 0)) -> PoolPlan:
    h, w = hw
    return PoolPlan(
        name="p",
        source="p",
        kind=kind,
        channels=c,
        in_h=h,
        in_w=w,
        out_h=(h + pads[0] + pads[2] - k[0]) // s[0] + 1,
        out_w=(w + pads[1] + pads[3] - k[1]) // s[1] + 1,
        kernel=k,
        stride=s,
        pads_begin=pads[:2],
        pads_end=pads[2:],
        inp=S8,
        out=S8,
        acc=IntType(30, True),
        mult=1,
        shift=0,
        rounding=Rounding.HALF_EVEN,
        lo=-128,
        hi=127,
    )


CONVS = {
    "3x3_pad1": conv(),
    "3x3_pad1_folded": conv(pe=2, simd=2),
    "5x5_stride2_asym": conv(2, 4, (11, 12), (5, 5), stride=(2, 2), pads=(2, 0, 1, 2), pe=2, simd=2),
    "1x1_input_bound": conv(8, 4, (5, 6), (1, 1), pads=(0, 0, 0, 0), pe=4, simd=8),
    "1x1_output_bound": conv(4, 12, (5, 5), (1, 1), pads=(0, 0, 0, 0), pe=12, simd=4),
    "grouped": conv(6, 6, (6, 6), groups=3, pe=2, simd=2),
    "depthwise_s2": conv(6, 6, (8, 7), stride=(2, 2), groups=6, pe=2),
    "top_padding_rows": conv(2, 2, (6, 6), (5, 5), pads=(3, 2, 2, 2)),
    "unread_last_rows": conv(2, 3, (9, 8), (3, 3), stride=(3, 3), pads=(0, 0, 0, 0)),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv_windows_keep_first_monotone_and_fit_the_buffer(name: str) -> None:
    p = CONVS[name]
    wins = et.conv_windows(p)
    assert len(wins) == p.out_h * p.out_w
    firsts = [f for f, _ in wins]
    assert firsts == sorted(firsts), "the line buffer would release a pixel a later window reads"
    assert all(0 <= f <= last < p.in_h * p.in_w for f, last in wins)
    assert max(last - f + 1 for f, last in wins) <= et.conv_buffer_pixels(p) - p.stride[0] * p.in_w


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv_timing_agrees_with_its_recurrence(name: str) -> None:
    """latency, first output, tail and II are the recurrence's, and bounded as a pipeline must be."""
    p = CONVS[name]
    t = et.conv_timing(p)
    n_in = p.in_h * p.in_w * p.channels_in
    n_out = p.out_h * p.out_w * p.channels_out
    beats = et.conv_beats(p, np.zeros(n_in, dtype=np.int64))
    assert len(beats) == n_out and np.all(np.diff(beats) >= 1)  # one output beat per edge at most
    assert (int(beats[-1]), int(beats[0])) == (t.latency, t.first_out)
    compute = p.out_h * p.out_w * et.conv_cycles_per_pixel(p)
    assert t.latency >= max(n_in - 1, compute, n_out) and t.ii >= max(n_in, compute, n_out)
    assert t.tail <= t.latency - (n_in - 1)
    # a source slower than the engine: the last output leaves `tail` edges after the last input
    slow = np.arange(n_in, dtype=np.int64) * (et.conv_cycles_per_pixel(p) + p.channels_out + 1)
    last = p.out_h * p.out_w and et.conv_windows(p)[-1][1]
    if last == p.in_h * p.in_w - 1:
        assert int(et.conv_beats(p, slow)[-1]) - int(slow[-1]) == t.tail
    else:  # no window reads the last pixel: the last output does not wait for it (free-flowing tail)
        assert int(et.conv_beats(p, slow)[-1]) < int(slow[-1])
        assert t.tail == t.latency - et.conv_run(p).last_in[0]


def test_input_bound_1x1_conv_closed_form() -> None:
    """PE=M, SIMD=C: one tile per pixel; the last pixel's fold leaves P + 1 edges after it, then PE beats."""
    p = CONVS["1x1_input_bound"]
    n_in = p.in_h * p.in_w * p.channels_in
    assert et.conv_timing(p).latency == n_in + dense_pipeline(p.simd) + p.pe


def test_output_bound_conv_emits_back_to_back() -> None:
    """PE > TF: the serializer is the bottleneck, so after the first fold the output never idles."""
    p = CONVS["1x1_output_bound"]
    beats = et.conv_beats(p, np.zeros(p.in_h * p.in_w * p.channels_in, dtype=np.int64))
    assert set(np.diff(beats).tolist()) == {1}


@pytest.mark.parametrize(("tf", "pe"), list(itertools.product([1, 2, 9, 25], [1, 4, 12, 50])))
def test_conv_fifo_depth_is_the_dense_rule_with_tf_tiles(tf: int, pe: int) -> None:
    p = conv(pe=pe, m=pe * 2, c=4, simd=4 if tf < 9 else 1, k=(1, 1) if tf < 9 else (3, 3), pads=(0, 0, 0, 0))
    t = et.conv_tiles_per_fold(p)
    from hwgen.hw.timing import dense_out_fifo_depth

    assert et.conv_out_fifo_depth(p) == dense_out_fifo_depth(t * p.simd, p.channels_out, p.pe, p.simd)


POOLS = {
    "max2x2": pool("max", 4, (8, 8), (2, 2), (2, 2)),
    "max3x3_s2_pad": pool("max", 3, (9, 8), (3, 3), (2, 2), (1, 1, 1, 1)),
    "avg2x2_s1_pad": pool("avg", 3, (6, 7), (2, 2), (1, 1), (1, 1, 1, 1)),
    "global": pool("avg", 5, (6, 5), (6, 5), (1, 1)),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pool_timing_agrees_with_its_grid_walk(name: str) -> None:
    p = POOLS[name]
    t = et.pool_timing(p)
    n_in = p.in_h * p.in_w * p.channels
    beats = et.pool_beats(p, np.zeros(n_in, dtype=np.int64))
    assert (int(beats[-1]), int(beats[0])) == (t.latency, t.first_out)
    gh, gw = et.pool_grid(p)
    assert t.ii == gh * gw * p.channels >= n_in
    slow = np.arange(n_in, dtype=np.int64) * 3
    assert int(et.pool_beats(p, slow)[-1]) - int(slow[-1]) == t.tail


def test_pool_closed_forms() -> None:
    """No padding after the image: the last window ends on the last input beat."""
    for p in (POOLS["max2x2"], POOLS["global"]):
        n_in = p.in_h * p.in_w * p.channels
        assert et.pool_timing(p).latency == n_in - 1 + et.POOL_STAGES[p.kind]
        assert et.pool_timing(p).tail == et.POOL_STAGES[p.kind]
    # 3x3/2 pad 1 over 9 rows: the 5th output row ends in the padding row walked after the image
    p = POOLS["max3x3_s2_pad"]
    gh, gw = et.pool_grid(p)
    assert (gh, gw) == (11, 9)
    assert et.pool_timing(p).tail == gw * p.channels + et.POOL_STAGES["max"]


def test_elementwise_timing() -> None:
    add = AddPlan("a", "a", 10, S8, S8, 0, 1, IntType(10, True), S8, RQ)
    lut = LutPlan("l", "l", 10, S8, S8, np.zeros(256, dtype=np.int64))
    fork = ForkPlan("f", "f", S8, 10, outputs=("x", "y"))
    cat = ConcatPlan("c", "c", 5, (ConcatPart(1, S8, RQ), ConcatPart(3, S8, RQ)), S8)
    for p, stages, count in (
        (add, et.ADD_STAGES, 10),
        (lut, et.LUT_STAGES, 10),
        (fork, 0, 10),
        (cat, et.CONCAT_STAGES, 20),
    ):
        t = et.engine_timing(p)
        assert (t.latency, t.ii, t.first_out, t.tail) == (count - 1 + stages, count, stages, stages)
    # a join waits for the later of its two inputs; a concat takes its parts pixel by pixel
    a, b = np.arange(10) * 2, np.arange(10) + 30
    assert et.engine_beats(add, [a, b]).tolist() == (np.maximum(a, b) + et.ADD_STAGES).tolist()
    parts = [np.arange(5) * 10, np.zeros(15, dtype=np.int64)]
    got = et.engine_beats(cat, parts)
    assert got[0] == et.CONCAT_STAGES and got[4] == 10 + et.CONCAT_STAGES  # pixel 1's part 0 beat
    assert np.all(np.diff(got) >= 1)


def test_graph_latency_of_a_dense_chain_is_the_chain_formula() -> None:
    rng = np.random.default_rng(0)
    dims, folds = [12, 8, 6, 4], [(2, 3), (1, 8), (4, 1)]
    layers: list[DensePlan] = []
    for i, (pe, simd) in enumerate(folds):
        w = rng.integers(-5, 6, size=(dims[i + 1], dims[i]))
        rq = Requant(2, Rounding.FLOOR, 0, 255)
        p = plan_dense(f"l{i}", f"l{i}", w, np.zeros(dims[i + 1], dtype=np.int64), U8, U8, rq, pe=pe, simd=simd)
        layers.append(dataclasses.replace(p, inputs=(f"s{i}",), outputs=(f"s{i + 1}",)))
    want = chain_latency([(p.in_features, p.out_features, p.pe, p.simd) for p in layers])
    assert et.graph_latency(layers, "s0", 12, "s3") == want
    assert et.engine_timing(layers[0]) == dense_timing(12, 8, 2, 3)


def test_graph_latency_takes_the_slower_branch() -> None:
    """fork -> (conv | skip) -> add: the add waits for the conv branch, the fork costs nothing."""
    c = dataclasses.replace(conv(4, 4), inputs=("a",), outputs=("c",))
    n = c.in_h * c.in_w * 4
    fork = ForkPlan("f", "f", S8, n, inputs=("x",), outputs=("a", "b"))
    add = AddPlan("add", "add", n, S8, S8, 0, 0, IntType(9, True), S8, RQ, inputs=("b", "c"), outputs=("y",))
    got = et.graph_latency([fork, c, add], "x", n, "y")
    assert got == et.conv_timing(c).latency + et.ADD_STAGES
