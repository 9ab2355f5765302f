"""The CNN engines one by one in RTL: bit-exact, and cycle-exact against hwgen.hw.engine_timing.

Each design is a single engine (conv, pool, lookup table) or a fork with its join (add, concat),
built through the real flow from an onnx.helper graph. The vectors (extreme codes, then random)
and their expected outputs come from hwgen.verify / hwgen.sim.exact. Sample 0 runs alone and
free-flowing: its latency must equal the model's exactly (the engine's own `latency`, and the
Schedule's graph latency); the other samples cross source idles with sink back-pressure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cnn_designs import Design, build_design, conv_onnx, has, missing_coverage, pool_onnx, self_join_onnx, unary_onnx

from hwgen.build import LoadedBuild
from hwgen.hw.engine_timing import engine_timing, pool_grid
from hwgen.hw.plan import AddPlan, ConcatPlan, ConvPlan, ForkPlan, LutPlan, PoolPlan, Schedule
from hwgen.hw.rtl_sim import run_rtl
from hwgen.verify import make_vectors

pytestmark = pytest.mark.rtl


def output_bound(s: Schedule) -> bool:
    """A conv whose serializer (PE elements per fold) is slower than its compute (TF tiles per fold)."""
    return any(isinstance(p, ConvPlan) and p.pe > p.kernel[0] * p.kernel[1] * (p.cg // p.simd) for p in s.layers)


def walks_padding_rows(s: Schedule) -> bool:
    """A pool whose grid has padding rows after the image (its last window ends in padding)."""
    return any(isinstance(p, PoolPlan) and pool_grid(p)[0] > p.pads_begin[0] + p.in_h for p in s.layers)


#: name -> (design, (sink back-pressure, source idle) for the samples after the first)
ENGINES: dict[str, tuple[Design, tuple[str, str]]] = {
    "conv3x3_pad1_folded": (
        Design(
            conv_onnx(4, 6, (7, 8), (3, 3), pads=(1, 1, 1, 1)),
            (4, 7, 8),
            {"layers": {"conv": {"reuse": 54}}},
            covers=(has(ConvPlan, pe=2, simd=2),),  # 3 output folds x 2 input-channel folds
        ),
        ("random", "random"),
    ),
    "conv5x5_stride2_asym": (
        Design(
            conv_onnx(2, 4, (11, 12), (5, 5), stride=(2, 2), pads=(2, 0, 1, 2)),
            (2, 11, 12),
            covers=(has(ConvPlan, stride=(2, 2), pads_begin=(2, 0), pads_end=(1, 2)),),
        ),
        ("periodic", "random"),
    ),
    "conv1x1_output_bound": (
        Design(
            conv_onnx(4, 12, (5, 5), (1, 1)),
            (4, 5, 5),
            {"layers": {"conv": {"reuse": 1}}},
            covers=(output_bound,),
        ),
        ("random", "none"),
    ),
    "conv_grouped": (
        Design(
            conv_onnx(6, 6, (6, 6), (3, 3), pads=(1, 1, 1, 1), group=3),
            (6, 6, 6),
            {"layers": {"conv": {"reuse": 9}}},
            covers=(has(ConvPlan, groups=3, depthwise=False, pe=2),),
        ),
        ("random", "periodic"),
    ),
    "conv_depthwise_stride2": (
        Design(
            conv_onnx(6, 6, (8, 7), (3, 3), stride=(2, 2), pads=(1, 1, 1, 1), group=6),
            (6, 8, 7),
            {"layers": {"conv": {"reuse": 27}}},
            covers=(has(ConvPlan, depthwise=True, pe=2),),
        ),
        ("periodic", "periodic"),
    ),
    "maxpool3x3_stride2_pad": (
        Design(
            pool_onnx("MaxPool", 3, (9, 8), (3, 3), (2, 2), (1, 1, 1, 1)),
            (3, 9, 8),
            covers=(has(PoolPlan, kind="max", kernel=(3, 3)), walks_padding_rows),
        ),
        ("random", "random"),
    ),
    # the last input row feeds no window: the outputs end before the input does
    "maxpool_unread_last_row": (
        Design(
            pool_onnx("MaxPool", 4, (5, 7), (4, 1), (3, 2), (0, 0, 1, 0)),
            (4, 5, 7),
            covers=(has(PoolPlan, kind="max", out_h=1, out_w=4),),
        ),
        ("none", "none"),
    ),
    "avgpool2x2_stride1_pad": (
        Design(
            pool_onnx("AveragePool", 3, (6, 7), (2, 2), (1, 1), (1, 1, 1, 1)),
            (3, 6, 7),
            covers=(has(PoolPlan, kind="avg", kernel=(2, 2), out_h=7),),
        ),
        ("periodic", "random"),
    ),
    "global_avgpool": (
        Design(
            pool_onnx("GlobalAveragePool", 5, (6, 5)),
            (5, 6, 5),
            covers=(has(PoolPlan, kind="avg", kernel=(6, 5)),),
        ),
        ("random", "random"),
    ),
    "global_maxpool": (
        Design(
            pool_onnx("GlobalMaxPool", 4, (5, 5)),
            (4, 5, 5),
            covers=(has(PoolPlan, kind="max", kernel=(5, 5)),),
        ),
        ("periodic", "none"),
    ),
    "lut_tanh": (
        Design(unary_onnx("Tanh", 3, (4, 4)), (3, 4, 4), covers=(has(LutPlan),)),
        ("random", "random"),
    ),
    "fork_add": (
        Design(self_join_onnx("Add", 3, (5, 5)), (3, 5, 5), covers=(has(ForkPlan), has(AddPlan))),
        ("random", "random"),
    ),
    "fork_concat": (
        Design(self_join_onnx("Concat", 3, (5, 5)), (3, 5, 5), covers=(has(ForkPlan), has(ConcatPlan))),
        ("periodic", "random"),
    ),
}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], LoadedBuild]:
    done: dict[str, LoadedBuild] = {}

    def get(name: str) -> LoadedBuild:
        if name not in done:
            done[name] = build_design(ENGINES[name][0], tmp_path_factory.mktemp(name))
        return done[name]

    return get


@pytest.mark.parametrize("name", list(ENGINES))
def test_engine_bit_and_cycle_exact(name: str, builds: Callable[[str], LoadedBuild], build_root: Path) -> None:
    design, (backpressure, idle) = ENGINES[name]
    b = builds(name)
    s = b.schedule
    missing = missing_coverage(design, s)
    assert not missing, f"{name}: the Schedule does not cover {missing}: {[p.name for p in s.layers]}"
    vec = make_vectors(b, 8, None, seed=7)
    r = run_rtl(
        b.out_dir / "rtl", s, vec.codes, work_dir=build_root / f"engine_{name}", backpressure=backpressure, idle=idle
    )
    bad = np.argwhere(r.outputs != vec.expected)
    assert bad.size == 0, (
        f"{name}: {len(bad)} mismatching codes, first at vector {bad[0][0]} element {bad[0][1]}: "
        f"expected {vec.expected[tuple(bad[0])]}, got {r.outputs[tuple(bad[0])]}"
    )
    first_out = r.out_cycles[0] - r.in_cycles[0]
    print(
        f"{name}: latency {r.latency_cycles} (model {s.latency}), first output {first_out}, "
        f"{r.cycles_per_second:.0f} cycles/s"
    )
    assert r.latency_cycles == s.latency
    if len(s.layers) == 1:  # the engine's own model: latency and first output
        t = engine_timing(s.layers[0])
        assert (r.latency_cycles, first_out) == (t.latency, t.first_out)
