"""The dense engine in RTL (Verilator + cocotb): bit-exact and cycle-exact.

Every expected output comes from hwgen.sim.integer_kernels (the golden model), every expected
cycle count from hwgen.hw.timing. Designs are single engines (engine level) and short chains,
emitted by hwgen.hw.rtl_emit and run through the generic bench rtl_tests/model_bench.py with
hwgen.hw.rtl_sim.run_rtl. Builds are cached in pytest's cache folder, keyed by the sources.

The file also holds one cocotb test of its own (`reset_midstream`, run by test_reset_midstream).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from hwgen.errors import ToolError, VerificationError
from hwgen.hw.names import legalize
from hwgen.hw.plan import DensePlan, IntType, Requant, Schedule, StreamPort
from hwgen.hw.rtl_emit import emit_rtl
from hwgen.hw.rtl_sim import RtlResult, build_design, run_cocotb, run_rtl
from hwgen.hw.schedule import chain_schedule, choose_folding, plan_dense, valid_foldings
from hwgen.hw.timing import dense_timing
from hwgen.numerics import Rounding, shift_round
from hwgen.sim.integer_kernels import dense, matmul_exact

pytestmark = pytest.mark.rtl

U8, S8 = IntType(8, False), IntType(8, True)
STALLS = ("none", "random", "periodic")


# -- designs -------------------------------------------------------------------------------------
def plan(
    name: str,
    w: np.ndarray,
    b: np.ndarray,
    *,
    inp: IntType,
    out: IntType,
    shift: int,
    rounding: Rounding,
    pe: int,
    simd: int,
    lo: int | None = None,
    source: str | None = None,
) -> DensePlan:
    rq = Requant(shift, rounding, out.lo if lo is None else lo, out.hi)
    return plan_dense(name, source or f"/{name}/Gemm", w, b, inp, out, rq, pe=pe, simd=simd)


def chain(top: str, layers: list[DensePlan]) -> Schedule:
    first, last = layers[0], layers[-1]
    return chain_schedule(
        top,
        f"test {top}",
        layers,
        StreamPort("x", "input", first.inp, first.in_features, 0, (first.in_features,)),
        StreamPort("y", "output", last.out, last.out_features, 0, (last.out_features,)),
    )


def random_design(seed: int, top: str) -> Schedule:
    """1-3 layers, random sizes, foldings, signedness, widths, shifts (-2..11) and rounding modes."""
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(1, 4))
    dims = [int(rng.integers(1, 40))] + [int(rng.integers(1, 20)) for _ in range(n_layers)]
    t = IntType(int(rng.integers(2, 11)), bool(rng.integers(2)))
    layers = []
    for i in range(n_layers):
        k, m = dims[i], dims[i + 1]
        foldings = valid_foldings(k, m)
        _, pe, simd = foldings[int(rng.integers(len(foldings)))]
        wb = int(rng.integers(2, 9))
        w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=(m, k))
        b = rng.integers(-2000, 2001, size=m)
        out = IntType(int(rng.integers(2, 13)), bool(rng.integers(2)))
        relu = out.signed and bool(rng.integers(2))
        rounding = list(Rounding)[int(rng.integers(3))]
        layers.append(
            plan(
                f"l{i}",
                w,
                b,
                inp=t,
                out=out,
                shift=int(rng.integers(-2, 12)),
                rounding=rounding,
                pe=pe,
                simd=simd,
                lo=0 if relu else None,
            )
        )
        t = out
    return chain(top, layers)


def extreme_vectors(t: IntType, k: int, n_random: int, rng: np.random.Generator) -> np.ndarray:
    """All min, all max, alternating signs (both phases), zeros, one non-zero, then random."""
    alt = np.where(np.arange(k) % 2 == 0, t.hi, t.lo)
    one = np.zeros(k, dtype=np.int64)
    one[k // 2] = t.lo if t.signed else t.hi
    fixed = [np.full(k, t.lo), np.full(k, t.hi), alt, alt[::-1].copy(), np.zeros(k, dtype=np.int64), one]
    rand = rng.integers(t.lo, t.hi + 1, size=(n_random, k))
    return np.vstack([np.asarray(fixed, dtype=np.int64), rand])


# -- golden model ------------------------------------------------------------------------------
def golden_layers(s: Schedule, x: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per layer: input, accumulator, rounded value (before the clamp) and output codes."""
    out = []
    for p in s.layers:
        rq = p.requant
        acc = matmul_exact(x, p.weights) + p.biases
        y = dense(x, p.weights, p.biases, shift=rq.shift, rounding=rq.rounding, lo=rq.lo, hi=rq.hi)
        out.append({"x": x, "acc": acc, "rounded": shift_round(acc, rq.shift, rq.rounding), "y": y})
        x = y
    return out


def first_mismatch(got: np.ndarray, want: np.ndarray) -> str:
    bad = np.argwhere(got != want)
    if bad.size == 0:
        return ""
    i, j = bad[0]
    return (
        f"{len(bad)} mismatching codes; first: sample {i} element {j}: expected {int(want[i, j])} "
        f"(0x{int(want[i, j]) & 0xFFFFFFFF:x}), got {int(got[i, j])}"
    )


# -- running -------------------------------------------------------------------------------------


def simulate(
    s: Schedule,
    x: np.ndarray,
    out_dir: Path,
    build_root: Path,
    *,
    backpressure: str = "none",
    idle: str = "none",
    seed: int = 0,
) -> RtlResult:
    """Emit (once), run, and check codes, tlast (in the bench), latency and steady-state II."""
    rtl = out_dir / s.top
    if not (rtl / "filelist.f").is_file():
        emit_rtl(s, rtl)
    print(f"design {s.top}: backpressure={backpressure} idle={idle} seed={seed}")
    r = run_rtl(rtl, s, x, work_dir=build_root / s.top, backpressure=backpressure, idle=idle, seed=seed)
    want = golden_layers(s, x)[-1]["y"]
    assert r.outputs.shape == want.shape
    msg = first_mismatch(r.outputs, want)
    assert not msg, f"{s.top} backpressure={backpressure} idle={idle} seed={seed}: {msg}"
    assert r.latency_cycles == s.latency, f"measured latency {r.latency_cycles}, model {s.latency}"
    n = x.shape[0]
    if backpressure == idle == "none" and n >= 5:
        # phase 2 (samples 1..) streams back to back: after two samples of warm-up, one sample
        # leaves every II cycles
        last_out = r.out_cycles.reshape(n, -1)[:, -1]
        assert set(np.diff(last_out[1:])[2:].tolist()) == {s.ii}, (np.diff(last_out).tolist(), s.ii)
    if len(s.layers) == 1:
        first_out = dense_timing(*[getattr(s.layers[0], a) for a in ("in_features", "out_features", "pe", "simd")])
        assert r.out_cycles[0] - r.in_cycles[0] == first_out.first_out
    return r


# -- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_designs(seed: int, tmp_path: Path, build_root: Path) -> None:
    """Random plans and vectors; seed 0 crosses every sink back-pressure with every source idle."""
    s = random_design(seed, f"rnd{seed}")
    rng = np.random.default_rng(seed)
    x = extreme_vectors(s.input.elem, s.input.count, 8, rng)
    combos = [(b, i) for b in STALLS for i in STALLS] if seed == 0 else [(m, m) for m in STALLS]
    for bp, idle in combos:
        simulate(s, x, tmp_path, build_root, backpressure=bp, idle=idle, seed=seed)


def test_worst_case_signed_full_pe(tmp_path: Path, build_root: Path) -> None:
    """Fan-in 256 of s8 x s8: all-max, all-min and alternating rows meet all-max/min/alternating inputs."""
    k, m = 256, 8
    rng = np.random.default_rng(11)
    w = rng.integers(-60, 61, size=(m, k))
    w[0] = 127
    w[1] = -128
    w[2] = np.where(np.arange(k) % 2 == 0, 127, -128)
    w[3] = 0
    w[3, 77] = -128  # a single non-zero weight
    w[4] = 0  # all zero: the bias alone
    b = rng.integers(-3000, 3001, size=m)
    b[4] = 2**11 + 2**10  # exact tie after the shift by 12
    s = chain("worst_s", [plan("fc", w, b, inp=S8, out=S8, shift=12, rounding=Rounding.HALF_EVEN, pe=m, simd=16)])
    x = extreme_vectors(S8, k, 6, rng)
    g = golden_layers(s, x)[0]
    assert (g["rounded"] > 127).any() and (g["rounded"] < -128).any()  # saturates at both ends
    assert ((g["rounded"] >= -128) & (g["rounded"] <= 127)).any()  # and also passes values through
    assert s.layers[0].acc.bits >= 23  # 256 * 128 * 128 needs the full width
    simulate(s, x, tmp_path, build_root)
    simulate(s, x, tmp_path, build_root, backpressure="random", idle="periodic", seed=4)


def test_worst_case_unsigned_full_simd(tmp_path: Path, build_root: Path) -> None:
    """u8 inputs, PE=1 and SIMD=64 (all inputs at once), FLOOR, ReLU clamp at 0."""
    k, m = 64, 6
    rng = np.random.default_rng(12)
    w = rng.integers(-128, 128, size=(m, k))
    w[0] = 127
    w[1] = -128
    w[2] = np.where(np.arange(k) % 2 == 0, 127, -128)
    w[3] = 0
    w[3, 5] = 127
    b = rng.integers(-20000, 20001, size=m)
    s = chain("worst_u", [plan("fc", w, b, inp=U8, out=U8, shift=8, rounding=Rounding.FLOOR, pe=1, simd=64, lo=0)])
    x = extreme_vectors(U8, k, 6, rng)
    g = golden_layers(s, x)[0]
    assert (g["rounded"] < 0).any() and (g["rounded"] > 255).any()
    simulate(s, x, tmp_path, build_root)
    simulate(s, x, tmp_path, build_root, backpressure="periodic", idle="random", seed=5)


def test_rounding_modes_with_exact_ties(tmp_path: Path, build_root: Path) -> None:
    """FLOOR, HALF_UP, HALF_EVEN with small shifts, many exact ties of both parities, saturation."""
    rng = np.random.default_rng(13)
    t4, t5 = IntType(4, True), IntType(5, True)
    specs = [(12, 10, Rounding.FLOOR, 1, 1, 1), (10, 8, Rounding.HALF_UP, 2, 2, 5), (8, 6, Rounding.HALF_EVEN, 1, 6, 8)]
    layers, t = [], t4
    for i, (k, m, rounding, shift, pe, simd) in enumerate(specs):
        w = rng.integers(-3, 4, size=(m, k))
        b = rng.integers(-6, 7, size=m)
        layers.append(plan(f"r{i}", w, b, inp=t, out=t5, shift=shift, rounding=rounding, pe=pe, simd=simd))
        t = t5
    s = chain("ties", layers)
    x = extreme_vectors(t4, 12, 40, rng)
    for layer, g in zip(s.layers, golden_layers(s, x), strict=True):
        sh = layer.requant.shift
        tie = (g["acc"] & ((1 << sh) - 1)) == (1 << (sh - 1))
        floor_odd = ((g["acc"] >> sh) & 1) == 1
        assert (tie & floor_odd).any() and (tie & ~floor_odd).any(), f"{layer.name}: no ties of both parities"
        assert (g["rounded"] > t5.hi).any() and (g["rounded"] < t5.lo).any(), f"{layer.name}: no saturation"
    simulate(s, x, tmp_path, build_root)
    simulate(s, x, tmp_path, build_root, backpressure="random", idle="random", seed=6)


def test_exact_shifts_and_relu(tmp_path: Path, build_root: Path) -> None:
    """shift = 0 and shift = -2 (exact left shifts), ReLU clamp (lo = 0) into unsigned codes."""
    rng = np.random.default_rng(14)
    a = plan(
        "sh0",
        rng.integers(-6, 7, size=(9, 6)),
        rng.integers(-5, 6, size=9),
        inp=IntType(3, True),
        out=IntType(6, False),
        shift=0,
        rounding=Rounding.HALF_UP,
        pe=3,
        simd=2,
        lo=0,
    )
    b = plan(
        "shneg",
        rng.integers(-3, 4, size=(4, 9)),
        rng.integers(-8, 9, size=4),
        inp=IntType(6, False),
        out=IntType(10, True),
        shift=-2,
        rounding=Rounding.HALF_EVEN,
        pe=4,
        simd=9,
    )
    s = chain("lshift", [a, b])
    x = extreme_vectors(IntType(3, True), 6, 20, rng)
    g = golden_layers(s, x)
    assert (g[0]["rounded"] < 0).any() and (g[0]["rounded"] > 63).any() and (g[0]["y"] == 0).any()
    assert (g[1]["rounded"] > 511).any() or (g[1]["rounded"] < -512).any()
    simulate(s, x, tmp_path, build_root)
    simulate(s, x, tmp_path, build_root, backpressure="periodic", idle="periodic", seed=7)


def test_hostile_names_simulate(tmp_path: Path, build_root: Path) -> None:
    """Names from legalize() of hostile ONNX names, sources with '*/' and newlines: builds and runs."""
    taken: set[str] = set()
    top = legalize('a"; system("x"); //', taken)
    names = [legalize(n, taken) for n in ("module", "1x", "ünï" + "x" * 300)]
    sources = ["/fc*/Gemm */ module evil; /*", "line1\nline2\r\n// injected", "ünïcødé ✓ \\"]
    rng = np.random.default_rng(15)
    dims, layers, t = [5, 4, 3, 2], [], U8
    for i, (n, src) in enumerate(zip(names, sources, strict=True)):
        last = i == 2
        layers.append(
            plan(
                n,
                rng.integers(-9, 10, size=(dims[i + 1], dims[i])),
                rng.integers(-9, 10, size=dims[i + 1]),
                inp=t,
                out=S8 if last else U8,
                shift=2,
                rounding=Rounding.HALF_EVEN,
                pe=1,
                simd=1,
                lo=None if last else 0,
                source=src,
            )
        )
        t = layers[-1].out
    s = chain(top, layers)
    simulate(s, extreme_vectors(U8, 5, 4, rng), tmp_path, build_root)


def test_icarus_agrees_cycle_for_cycle(tmp_path: Path, build_root: Path) -> None:
    """The second simulator: same codes, same latency, same handshake cycles under stalls."""
    import shutil

    if shutil.which("iverilog") is None:
        pytest.skip("icarus verilog not installed (apt-get install iverilog)")
    s = random_design(3, "icarus3")
    x = extreme_vectors(s.input.elem, s.input.count, 4, np.random.default_rng(3))
    rtl = tmp_path / s.top
    emit_rtl(s, rtl)
    want = golden_layers(s, x)[-1]["y"]
    runs = {
        sim: run_rtl(
            rtl, s, x, work_dir=build_root / s.top, backpressure="random", idle="periodic", seed=9, simulator=sim
        )
        for sim in ("icarus", "verilator")
    }
    for sim, r in runs.items():
        assert not first_mismatch(r.outputs, want), (sim, first_mismatch(r.outputs, want))
        assert r.latency_cycles == s.latency, sim
    assert np.array_equal(runs["icarus"].out_cycles, runs["verilator"].out_cycles)
    assert np.array_equal(runs["icarus"].in_cycles, runs["verilator"].in_cycles)


def test_a_wrong_weight_is_caught(tmp_path: Path, build_root: Path) -> None:
    """The check can fail: one flipped bit in one weight ROM word gives mismatches."""
    rng = np.random.default_rng(16)
    p = plan(
        "fc",
        rng.integers(-3, 4, size=(4, 8)),
        np.zeros(4, dtype=np.int64),
        inp=U8,
        out=IntType(14, True),
        shift=0,
        rounding=Rounding.FLOOR,
        pe=2,
        simd=4,
    )
    s = chain("tamper", [p])
    rtl = tmp_path / s.top
    emit_rtl(s, rtl)
    f = rtl / "tamper_fc.sv"
    text = f.read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("w_rom[1] = "))
    flipped = line[:-2] + format(int(line[-2], 16) ^ 1, "x") + ";"  # bit 0 of weights[0][4]
    f.write_text(text.replace(line, flipped))
    x = rng.integers(1, 256, size=(3, 8))
    with pytest.raises(AssertionError, match="mismatching codes"):
        simulate(s, x, tmp_path, build_root)


def _tampered(tmp_path: Path, name: str, old: str, new: str) -> tuple[Schedule, Path]:
    rng = np.random.default_rng(19)
    s = chain(
        name,
        [
            plan(
                "fc",
                rng.integers(-9, 10, size=(3, 4)),
                np.zeros(3, dtype=np.int64),
                inp=U8,
                out=S8,
                shift=2,
                rounding=Rounding.FLOOR,
                pe=1,
                simd=2,
            )
        ],
    )
    rtl = tmp_path / name
    emit_rtl(s, rtl)
    f = rtl / f"{name}_fc.sv"
    assert old in f.read_text()
    f.write_text(f.read_text().replace(old, new))
    return s, rtl


def test_protocol_errors_are_verification_errors(tmp_path: Path, build_root: Path) -> None:
    """A wrong tlast and a design that never answers (deadlock) are reported, not hung on."""
    x = np.arange(8).reshape(2, 4)
    s, rtl = _tampered(
        tmp_path,
        "badlast",
        "assign m_axis_tlast  = out_elem_last & (onf_q == NF_LAST);",
        "assign m_axis_tlast  = out_elem_last;",
    )
    with pytest.raises(VerificationError, match=r"protocol error.*output beat 0: tlast=1, expected 0"):
        run_rtl(rtl, s, x, work_dir=build_root / s.top)
    s, rtl = _tampered(tmp_path, "mute", "assign m_axis_tvalid = have_q;", "assign m_axis_tvalid = 1'b0;")
    with pytest.raises(VerificationError, match="timeout: no progress: 0 of 3 output beats"):
        run_rtl(rtl, s, x[:1], work_dir=build_root / s.top)


def test_build_failure_is_a_tool_error_with_the_log(tmp_path: Path, build_root: Path) -> None:
    s, rtl = _tampered(tmp_path, "broken", "assign m_axis_tvalid = have_q;", "assign m_axis_tvalid = have_q")
    with pytest.raises(ToolError, match=r"verilator failed to build 'broken'(.|\n)*syntax error"):
        run_rtl(rtl, s, np.zeros((1, 4), dtype=np.int64), work_dir=build_root / s.top)


@pytest.mark.slow
def test_lenet_sized_chain(tmp_path: Path, build_root: Path) -> None:
    """784 -> 300 -> 100 -> 10, reuse ~784 per layer: bit-exact, latency and II equal to the model."""
    rng = np.random.default_rng(17)
    dims, layers, t = [784, 300, 100, 10], [], U8
    for i in range(3):
        k, m = dims[i], dims[i + 1]
        pe, simd = choose_folding(k, m, 784)
        last = i == 2
        layers.append(
            plan(
                f"fc{i + 1}",
                rng.integers(-128, 128, size=(m, k)),
                rng.integers(-5000, 5001, size=m),
                inp=t,
                out=S8 if last else U8,
                shift=10,
                rounding=Rounding.HALF_EVEN,
                pe=pe,
                simd=simd,
                lo=None if last else 0,
            )
        )
        t = layers[-1].out
    s = chain("lenet", layers)
    r = simulate(s, rng.integers(0, 256, size=(6, 784)), tmp_path, build_root)
    print(
        f"lenet: latency {r.latency_cycles} (model {s.latency}), II {s.ii}, build {r.build_seconds:.1f} s, "
        f"{r.cycles_per_second:.0f} cycles/s"
    )


# -- reset in the middle of a stream (a cocotb test of this file, run by the pytest test below) ---
def test_reset_midstream(tmp_path: Path, build_root: Path) -> None:
    """ap_rst_n pulled while one sample computes and the next loads: the design restarts clean."""
    from hwgen.hw.rtl_emit import stream_bits

    rng = np.random.default_rng(18)
    s = chain(
        "rst",
        [
            plan(
                "a",
                rng.integers(-20, 21, size=(6, 12)),
                rng.integers(-99, 100, size=6),
                inp=U8,
                out=U8,
                shift=3,
                rounding=Rounding.HALF_UP,
                pe=2,
                simd=3,
                lo=0,
            ),
            plan(
                "b",
                rng.integers(-20, 21, size=(4, 6)),
                rng.integers(-99, 100, size=4),
                inp=U8,
                out=S8,
                shift=4,
                rounding=Rounding.HALF_EVEN,
                pe=1,
                simd=2,
            ),
        ],
    )
    rtl = tmp_path / s.top
    emit_rtl(s, rtl)
    build_dir, _ = build_design(rtl, s.top, build_root / s.top)
    x = rng.integers(0, 256, size=(6, 12))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = {
        "vectors": str(run_dir / "x.npy"),
        "expected": golden_layers(s, x)[-1]["y"].tolist(),
        "reset_cycles": [6, s.latency - 3],
        "in_count": 12,
        "in_bits": 8,
        "in_tw": stream_bits(8),
        "out_count": 4,
        "out_tw": stream_bits(8),
        "out_signed": True,
        "out_lo": -128,
        "out_hi": 127,
        "seed": 1,
        "timeout_cycles": 20 * s.latency,
    }
    np.save(cfg["vectors"], x)
    (run_dir / "cfg.json").write_text(json.dumps(cfg))
    run_cocotb(
        build_dir,
        s.top,
        "test_dense",
        testcase="reset_midstream",
        test_dir=run_dir,
        extra_env={"HWGEN_RESET_TEST": str(run_dir / "cfg.json")},
    )


try:  # the cocotb side: only importable inside a simulator run or where cocotb is installed
    import cocotb
    from cocotb.clock import Clock
    from cocotb.simtime import get_sim_time
    from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
except ImportError:  # pragma: no cover
    cocotb = None

if cocotb is not None:

    @cocotb.test()
    async def reset_midstream(dut) -> None:
        """Reset at each configured cycle of a streaming run, then check a full clean run."""
        import random

        from model_bench import StreamBench

        cfg = json.loads(Path(os.environ["HWGEN_RESET_TEST"]).read_text())
        x = np.load(cfg["vectors"])
        expected = np.asarray(cfg["expected"])
        Clock(dut.ap_clk, 10, unit="ns").start()

        async def reset() -> None:
            await FallingEdge(dut.ap_clk)
            dut.s_axis_tvalid.value = 0
            dut.m_axis_tready.value = 0
            dut.ap_rst_n.value = 0
            await ClockCycles(dut.ap_clk, 3, RisingEdge)
            dut.ap_rst_n.value = 1
            await FallingEdge(dut.ap_clk)

        dut.s_axis_tdata.value = 0
        dut.s_axis_tlast.value = 0
        await reset()
        for cut in cfg["reset_cycles"]:
            bench = StreamBench(dut, cfg, x)
            bench.t0_ps = get_sim_time(unit="ps")
            task = cocotb.start_soon(bench.stream(0, x.shape[0], "none", "random", random.Random(1)))
            await ClockCycles(dut.ap_clk, cut, RisingEdge)
            task.cancel()
            await reset()
            assert dut.m_axis_tvalid.value == 0 and dut.s_axis_tready.value == 1, "state survived the reset"
        bench = StreamBench(dut, cfg, x)
        bench.t0_ps = get_sim_time(unit="ps")
        await bench.stream(0, x.shape[0], "random", "random", random.Random(2))
        got = np.asarray(bench.outputs).reshape(expected.shape)
        assert not bench.errors, bench.errors
        assert np.array_equal(got, expected), first_mismatch(got, expected)
