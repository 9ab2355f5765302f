"""CNNs through the real flow, RTL simulation bit for bit against the golden model, and timed.

Each case is a small torch (or onnx.helper) model: export -> `hwgen.build.build` ->
`hwgen.verify.run_verify(rtl=True)`, whose expected outputs come only from `hwgen.sim.exact`.
Every case asserts 0 mismatching vectors and a measured latency (first input beat -> last output
beat, one sample alone, free-flowing) within 10 % of `Schedule.latency`; the measured numbers are
printed beside the model's. A case also asserts that its Schedule holds the engines it is meant
to cover, so a change in lowering cannot turn it vacuous.

Verilator builds are kept in pytest's cache folder (keyed by the sources, so never stale): each
build's verify/rtl folder links there.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cnn_designs import MNIST_TEST, Design, asymmetric_onnx, build_design, has, missing_coverage, torch_onnx

from hwgen.build import LoadedBuild
from hwgen.hw.plan import AddPlan, ConcatPlan, ConvPlan, DensePlan, ForkPlan, LutPlan, PoolPlan, Schedule
from hwgen.verify import run_verify

pytestmark = pytest.mark.rtl

#: the contract of item 2: RTL-measured latency within this fraction of Schedule.latency
LATENCY_TOLERANCE = 0.10


def fused_relu_add(s: Schedule) -> bool:
    """An Add with its ReLU fused (clamped at 0) and one without."""
    adds = [p.requant.lo for p in s.layers if isinstance(p, AddPlan)]
    return any(lo == 0 for lo in adds) and any(lo < 0 for lo in adds)


def folded_conv(s: Schedule) -> bool:
    """A conv with PE > 1, SIMD > 1, several output folds and several input-channel folds."""
    return any(
        isinstance(p, ConvPlan) and p.pe > 1 and p.simd > 1 and p.channels_out > p.pe and p.cg > p.simd
        for p in s.layers
    )


def signed_padded_maxpool(s: Schedule) -> bool:
    return any(
        isinstance(p, PoolPlan) and p.kind == "max" and p.inp.signed and any(p.pads_begin + p.pads_end)
        for p in s.layers
    )


def bits(n: int) -> Callable[[Schedule], bool]:
    def check(s: Schedule) -> bool:
        return all(p.out.bits == n for p in s.layers if isinstance(p, ConvPlan))

    check.__name__ = f"conv outputs of {n} bits"
    return check


def fits_device(name: str) -> Callable[[Schedule], bool]:
    """The Schedule's estimated resources fit the device (multipliers are exact: one DSP each)."""

    def check(s: Schedule) -> bool:
        from hwgen.hw.devices import get_device
        from hwgen.hw.resources import estimate

        dev = get_device(name)
        return not estimate(s).shortfalls(dev) and sum(getattr(p, "multipliers", 0) for p in s.layers) <= dev.dsp

    check.__name__ = f"fits {name}"
    return check


W4A4 = {"quantize": {"weight_bits": 4, "act_bits": 4}}

#: name -> (design, vectors, sink back-pressure of the samples after the first)
CASES: dict[str, tuple[Design, int, str]] = {
    "plain": (
        Design(
            torch_onnx("Plain", (3, 8, 8)),
            (3, 8, 8),
            covers=(
                has(ConvPlan, kernel=(3, 3), pads_begin=(1, 1), stride=(1, 1)),
                has(ConvPlan, kernel=(1, 1)),
                has(PoolPlan, kind="max", kernel=(2, 2), stride=(2, 2)),
                has(PoolPlan, kind="avg", kernel=(4, 4), out_h=1),  # global average pool
                has(DensePlan),
            ),
        ),
        8,
        "periodic",
    ),
    "plain_folded": (
        Design(
            torch_onnx("Plain", (3, 8, 8)),
            (3, 8, 8),
            {"layers": {"/c1/Conv": {"reuse": 36}, "/c2/Conv": {"reuse": 6}}},
            covers=(folded_conv,),
        ),
        6,
        "random",
    ),
    # foldings chosen by the scheduler to fit a device with 8 multipliers (iCE40 UP5K)
    "plain_on_up5k": (
        Design(
            torch_onnx("Plain", (3, 8, 8)),
            (3, 8, 8),
            {"hardware": {"device": "ice40up5k"}},
            covers=(fits_device("ice40up5k"), has(ConvPlan, kernel=(3, 3), pe=4, simd=1)),
        ),
        6,
        "random",
    ),
    "windows": (
        Design(
            torch_onnx("Windows", (2, 12, 12)),
            (2, 12, 12),
            covers=(
                has(ConvPlan, kernel=(5, 5), pads_begin=(0, 0), pads_end=(0, 0)),
                has(PoolPlan, kind="max", kernel=(3, 3), stride=(2, 2), pads_begin=(1, 1)),
                has(PoolPlan, kind="avg", kernel=(2, 2), stride=(1, 1), pads_end=(1, 1)),
                has(DensePlan, in_features=100),  # flatten -> Gemm after the conv stack
            ),
        ),
        8,
        "random",
    ),
    "asymmetric": (
        Design(
            asymmetric_onnx(),
            (3, 11, 10),
            covers=(
                has(ConvPlan, stride=(2, 2), pads_begin=(1, 0), pads_end=(2, 1)),
                signed_padded_maxpool,
                has(PoolPlan, kind="max", kernel=(3, 2), out_h=1, out_w=1),  # global max pool
            ),
        ),
        8,
        "random",
    ),
    "groups": (
        Design(
            torch_onnx("Groups", (4, 8, 8)),
            (4, 8, 8),
            {"layers": {"/grouped/Conv": {"reuse": 18}, "/depthwise/Conv": {"reuse": 36}}},
            covers=(
                has(ConvPlan, groups=2, depthwise=False, pe=4),  # two output folds, one per group
                has(ConvPlan, depthwise=True, stride=(2, 2), pe=2),  # four output folds over 8 channels
                has(ConvPlan, kernel=(4, 4), pads_begin=(1, 1), pads_end=(2, 2)),
                has(PoolPlan, kind="max", kernel=(4, 4), out_h=1),
            ),
        ),
        6,
        "periodic",
    ),
    "branches": (
        Design(
            torch_onnx("Branches", (3, 6, 6)),
            (3, 6, 6),
            covers=(has(ForkPlan), has(AddPlan), fused_relu_add, has(ConcatPlan)),
        ),
        8,
        "random",
    ),
    "activations_w4a4": (
        Design(
            torch_onnx("Activations", (2, 8, 8)),
            (2, 8, 8),
            W4A4,
            covers=(
                *(has(LutPlan, source=f"/{op}") for op in ("Sigmoid", "Tanh", "HardSwish")),
                bits(4),
            ),
        ),
        8,
        "random",
    ),
    "activations_w8a8": (
        Design(
            torch_onnx("Activations", (2, 8, 8)),
            (2, 8, 8),
            covers=(has(LutPlan, source="/Sigmoid"), bits(8)),
        ),
        4,
        "none",
    ),
    # real digits: calibrated on and verified with MNIST test images
    "lenet5": (
        Design(
            torch_onnx("LeNet5", (1, 28, 28)),
            (1, 28, 28),
            calib=MNIST_TEST,
            covers=(
                has(ConvPlan, channels_out=20, kernel=(5, 5)),
                has(ConvPlan, channels_out=50, kernel=(5, 5)),
                has(DensePlan, in_features=800, out_features=500),
                has(DensePlan, in_features=500, out_features=10),
            ),
        ),
        3,
        "random",
    ),
}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, build_root: Path) -> Callable[[str], LoadedBuild]:
    """Build each case once; its RTL work folder is the cached one in build_root."""
    done: dict[str, LoadedBuild] = {}

    def get(name: str) -> LoadedBuild:
        if name not in done:
            design = CASES[name][0]
            if design.make.__qualname__.startswith("torch_onnx"):
                pytest.importorskip("torch")
            b = build_design(design, tmp_path_factory.mktemp(name))
            verify = b.out_dir / "verify"
            verify.mkdir(exist_ok=True)
            (verify / "rtl").symlink_to(build_root / f"cnn_{name}", target_is_directory=True)
            (build_root / f"cnn_{name}").mkdir(exist_ok=True)
            done[name] = b
        return done[name]

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_cnn_rtl_bit_exact_and_timed(name: str, builds: Callable[[str], LoadedBuild]) -> None:
    design, vectors, backpressure = CASES[name]
    b = builds(name)
    missing = missing_coverage(design, b.schedule)
    assert not missing, f"{name}: the Schedule does not cover {missing}: {[p.name for p in b.schedule.layers]}"
    data = design.calib if design.calib == MNIST_TEST else None
    t = time.perf_counter()
    sec = run_verify(b, csim=False, rtl=True, n=vectors, data=data, backpressure=backpressure)["rtl"]
    print(
        f"{name}: {sec['vectors']} vectors ({sec['vectors_source']}), backpressure={backpressure}: "
        f"latency measured {sec['latency_cycles']}, model {sec['latency_estimate']} "
        f"(error {sec['latency_error']:.2%}), {time.perf_counter() - t:.1f} s"
    )
    assert sec["vectors"] == vectors
    assert sec["mismatches"] == 0 and sec["mismatched_bits"] == 0, sec.get("first_mismatch")
    assert sec["latency_error"] <= LATENCY_TOLERANCE, sec


def test_icarus_agrees_on_a_branching_cnn(builds: Callable[[str], LoadedBuild], build_root: Path) -> None:
    """The second simulator: same codes and the same handshake cycles for fork/add/concat under stalls."""
    if shutil.which("iverilog") is None:
        pytest.skip("icarus verilog not installed (apt-get install iverilog)")
    from hwgen.hw.rtl_sim import run_rtl
    from hwgen.verify import make_vectors

    b = builds("branches")
    vec = make_vectors(b, 4, None, seed=3)
    runs = {
        sim: run_rtl(
            b.out_dir / "rtl",
            b.schedule,
            vec.codes,
            work_dir=build_root / f"cnn_branches_{sim}",
            backpressure="random",
            idle="periodic",
            seed=3,
            simulator=sim,
        )
        for sim in ("icarus", "verilator")
    }
    for sim, r in runs.items():
        assert np.array_equal(r.outputs, vec.expected), sim
        assert r.latency_cycles == b.schedule.latency, (sim, r.latency_cycles, b.schedule.latency)
    assert np.array_equal(runs["icarus"].in_cycles, runs["verilator"].in_cycles)
    assert np.array_equal(runs["icarus"].out_cycles, runs["verilator"].out_cycles)


def test_reset_midstream_cnn(builds: Callable[[str], LoadedBuild], build_root: Path, tmp_path: Path) -> None:
    """ap_rst_n pulled while convs, forks, adds and the concat hold partial samples: a clean restart.

    Runs the generic cocotb test `reset_midstream` of rtl_tests/test_dense.py on the branching CNN.
    """
    import json

    from hwgen.hw.rtl_emit import stream_bits
    from hwgen.hw.rtl_sim import build_design, run_cocotb
    from hwgen.verify import make_vectors

    b = builds("branches")
    s = b.schedule
    vec = make_vectors(b, 4, None, seed=5)
    build_dir, _ = build_design(b.out_dir / "rtl", s.top, build_root / "cnn_branches")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    np.save(run_dir / "x.npy", vec.codes)
    i, o = s.input.elem, s.output.elem
    cfg = {
        "vectors": str(run_dir / "x.npy"),
        "expected": vec.expected.tolist(),
        "reset_cycles": [s.latency // 3, s.latency + s.ii // 2],  # inside sample 0, then inside sample 1
        "in_count": s.input.count,
        "in_bits": i.bits,
        "in_tw": stream_bits(i.bits),
        "out_count": s.output.count,
        "out_tw": stream_bits(o.bits),
        "out_signed": o.signed,
        "out_lo": o.lo,
        "out_hi": o.hi,
        "seed": 1,
        "timeout_cycles": 20 * (s.latency + 4 * s.ii),
    }
    (run_dir / "cfg.json").write_text(json.dumps(cfg))
    run_cocotb(
        build_dir,
        s.top,
        "test_dense",
        testcase="reset_midstream",
        test_dir=run_dir,
        extra_env={"HWGEN_RESET_TEST": str(run_dir / "cfg.json")},
    )
