"""The EIE-style sparse engine in RTL (Verilator + cocotb): bit-exact and cycle-exact.

Expected codes come from hwgen.sim.integer_kernels (the golden model), expected cycles from
hwgen.hw.sparse (the engine's data-dependent cycle model): the latency of the first sample, and
for free-flowing single-engine runs every output beat of every sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_dense import chain, extreme_vectors, first_mismatch, golden_layers, plan

from hwgen.hw.plan import IntType, Requant, Schedule
from hwgen.hw.rtl_emit import emit_rtl
from hwgen.hw.rtl_sim import RtlResult, run_rtl
from hwgen.hw.sparse import (
    SparseDensePlan,
    chain_beats,
    plan_sparse_dense,
    replace_layers,
    sparse_from_dense,
    sparse_run,
)
from hwgen.hw.timing import dense_timing
from hwgen.numerics import Rounding

pytestmark = pytest.mark.rtl

U8, S8 = IntType(8, False), IntType(8, True)
STALLS = ("none", "random", "periodic")


def sparse_matrix(rng: np.random.Generator, m: int, k: int, density: float, wb: int = 8) -> np.ndarray:
    w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=(m, k))
    w[w == 0] = 1
    return np.where(rng.random((m, k)) < density, w, 0)


def sparse_layer(
    name: str,
    w: np.ndarray,
    b: np.ndarray,
    *,
    inp: IntType,
    out: IntType,
    shift: int,
    rounding: Rounding,
    pes: int,
    index_bits: int = 4,
    lo: int | None = None,
    weight_coding: str = "plain",
    max_code_length: int = 16,
) -> SparseDensePlan:
    rq = Requant(shift, rounding, out.lo if lo is None else lo, out.hi)
    return plan_sparse_dense(
        name,
        f"/{name}/Gemm",
        w,
        b,
        inp,
        out,
        rq,
        pes=pes,
        index_bits=index_bits,
        weight_coding=weight_coding,
        max_code_length=max_code_length,
    )


def sparse_design(top: str, layers: list, sparse_at: dict[int, SparseDensePlan]) -> Schedule:
    """A chain of dense plans, then the given layers swapped for sparse engines."""
    return replace_layers(chain(top, layers), sparse_at)


def single(top: str, sp: SparseDensePlan) -> Schedule:
    """One sparse engine: a dense stand-in for chain_schedule's wiring, then the swap."""
    stand_in = plan(
        sp.name,
        sp.weights,
        sp.biases,
        inp=sp.inp,
        out=sp.out,
        shift=sp.requant.shift,
        rounding=sp.requant.rounding,
        pe=1,
        simd=1,
        lo=sp.requant.lo,
    )
    return sparse_design(top, [stand_in], {0: sp})


def sparse_vectors(t: IntType, k: int, n_random: int, rng: np.random.Generator, zero_rate: float = 0.5) -> np.ndarray:
    """Extreme vectors (all min/max, alternating, zero, one non-zero), then random ones with zeros."""
    x = extreme_vectors(t, k, n_random, rng)
    keep = rng.random((n_random, k)) >= zero_rate
    x[-n_random:] = np.where(keep, x[-n_random:], 0)
    return x


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
    """Emit (once), run, check codes, the first sample's latency and (free-flowing) every beat's edge."""
    rtl = out_dir / s.top
    if not (rtl / "filelist.f").is_file():
        emit_rtl(s, rtl)
    print(f"design {s.top}: backpressure={backpressure} idle={idle} seed={seed}")
    r = run_rtl(rtl, s, x, work_dir=build_root / s.top, backpressure=backpressure, idle=idle, seed=seed)
    want = golden_layers(s, x)[-1]["y"]
    msg = first_mismatch(r.outputs, want)
    assert not msg, f"{s.top} backpressure={backpressure} idle={idle} seed={seed}: {msg}"
    model = int(chain_beats(s, x[0])[-1])
    assert r.latency_cycles == model, f"measured latency {r.latency_cycles}, model {model}"
    assert r.latency_cycles <= s.latency, "the Schedule's latency is the worst case"
    n, k = x.shape
    if backpressure == idle == "none" and len(s.layers) == 1 and n > 1:
        sp = s.layers[0]
        ins = r.in_cycles.reshape(n, k)
        run = sparse_run(sp, x[1:], offers=np.full((n - 1, k), ins[1, 0]))
        assert np.array_equal(run.in_edges, ins[1:]), "input acceptance edges differ from the model"
        assert np.array_equal(run.out_edges.reshape(-1), r.out_cycles[sp.out_features :]), "output edges differ"
    return r


def random_sparse_design(seed: int) -> tuple[Schedule, np.ndarray]:
    rng = np.random.default_rng(seed)
    k, m = int(rng.integers(1, 48)), int(rng.integers(1, 24))
    inp = IntType(int(rng.integers(2, 11)), bool(rng.integers(2)))
    out = IntType(int(rng.integers(2, 13)), bool(rng.integers(2)))
    density = float(rng.choice([0.05, 0.1, 0.3, 0.6]))
    w = sparse_matrix(rng, m, k, density, int(rng.integers(2, 9)))
    w[:, int(rng.integers(k))] = 0  # an all-zero column
    sp = sparse_layer(
        f"sp{seed}",
        w,
        rng.integers(-2000, 2001, size=m),
        inp=inp,
        out=out,
        shift=int(rng.integers(-2, 12)),
        rounding=list(Rounding)[int(rng.integers(3))],
        pes=int(rng.integers(1, m + 1)),
        index_bits=int(rng.integers(1, 5)),
        lo=0 if out.signed and rng.integers(2) else None,
    )
    return single(f"srnd{seed}", sp), sparse_vectors(inp, k, 10, rng)


# -- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_sparse_designs(seed: int, tmp_path: Path, build_root: Path) -> None:
    """Random sizes, PEs, index widths, densities, widths, shifts, rounding; seed 0 crosses every stall."""
    s, x = random_sparse_design(seed)
    combos = [(b, i) for b in STALLS for i in STALLS] if seed == 0 else [(mode, mode) for mode in STALLS]
    for bp, idle in combos:
        simulate(s, x, tmp_path, build_root, backpressure=bp, idle=idle, seed=seed)


def test_worst_case_over_90_percent_sparsity(tmp_path: Path, build_root: Path) -> None:
    """s8 x s8, fan-in 256, over 90 % zeros, 2-bit indices (many padding zeros), extreme rows and columns."""
    k, m = 256, 48
    rng = np.random.default_rng(21)
    w = sparse_matrix(rng, m, k, 0.03)
    w[0] = 127  # a full row at max ...
    w[1] = -128  # ... and at min: the accumulator's full width
    w[2] = 0
    w[2, 200] = -128  # a single non-zero weight
    w[3] = 0  # the bias alone
    w[:, 7] = 0  # an all-zero column
    b = rng.integers(-3000, 3001, size=m)
    sp = sparse_layer("fc", w, b, inp=S8, out=S8, shift=12, rounding=Rounding.HALF_EVEN, pes=5, index_bits=2)
    assert sp.density < 0.1 and sp.csc.padding > 0 and sp.acc.bits >= 23
    s = single("sparse95", sp)
    x = sparse_vectors(S8, k, 6, rng, zero_rate=0.7)
    g = golden_layers(s, x)[0]
    assert (g["rounded"] > 127).any() and (g["rounded"] < -128).any()
    simulate(s, x, tmp_path, build_root)
    simulate(s, x, tmp_path, build_root, backpressure="random", idle="periodic", seed=4)


def test_chain_dense_sparse_dense(tmp_path: Path, build_root: Path) -> None:
    """Sparse engine between two dense ones, ReLU codes (many zeros) into it; latency from chain_beats."""
    rng = np.random.default_rng(22)
    a = plan(
        "a",
        rng.integers(-9, 10, size=(30, 12)),
        rng.integers(-99, 100, size=30),
        inp=U8,
        out=U8,
        shift=4,
        rounding=Rounding.HALF_UP,
        pe=3,
        simd=4,
        lo=0,
    )
    w = sparse_matrix(rng, 16, 30, 0.1)
    b_dense = plan(
        "b", w, rng.integers(-99, 100, size=16), inp=U8, out=U8, shift=6, rounding=Rounding.FLOOR, pe=1, simd=1, lo=0
    )
    c = plan(
        "c",
        rng.integers(-9, 10, size=(5, 16)),
        rng.integers(-9, 10, size=5),
        inp=U8,
        out=S8,
        shift=3,
        rounding=Rounding.HALF_EVEN,
        pe=5,
        simd=2,
    )
    sp = sparse_layer("b", w, b_dense.biases, inp=U8, out=U8, shift=6, rounding=Rounding.FLOOR, pes=4, lo=0)
    s = sparse_design("dsd", [a, b_dense, c], {1: sp})
    x = sparse_vectors(U8, 12, 10, rng)
    assert (golden_layers(s, x)[0]["y"] == 0).mean() > 0.2  # the sparse engine skips real zeros
    simulate(s, x, tmp_path, build_root)
    simulate(s, x, tmp_path, build_root, backpressure="periodic", idle="random", seed=5)


def test_ninety_percent_sparse_layer_takes_under_a_sixth_of_dense_cycles(tmp_path: Path, build_root: Path) -> None:
    """The issue's floor on a 400 -> 60 layer with 4 multipliers, dense activations (no zero skipping)."""
    k, m, pes = 400, 60, 4
    rng = np.random.default_rng(23)
    w = sparse_matrix(rng, m, k, 0.1)
    sp = sparse_layer(
        "fc", w, rng.integers(-99, 100, size=m), inp=U8, out=U8, shift=8, rounding=Rounding.FLOOR, pes=pes, lo=0
    )
    s = single("sixth", sp)
    x = rng.integers(1, 256, size=(2, k))  # no zero activations
    r = simulate(s, x, tmp_path, build_root)
    dense = dense_timing(k, m, pes, 1).latency  # the dense engine's model is RTL-exact (test_dense.py)
    print(f"sparse {r.latency_cycles} cycles, dense with {pes} multipliers {dense}")
    assert 6 * r.latency_cycles <= dense


def test_a_wrong_entry_is_caught(tmp_path: Path, build_root: Path) -> None:
    """The check can fail: one flipped bit in one CSC entry gives mismatches."""
    rng = np.random.default_rng(24)
    w = sparse_matrix(rng, 6, 10, 0.5)
    sp = sparse_layer(
        "fc", w, np.zeros(6, dtype=np.int64), inp=U8, out=IntType(16, True), shift=0, rounding=Rounding.FLOOR, pes=2
    )
    s = single("tamper_sp", sp)
    rtl = tmp_path / s.top
    emit_rtl(s, rtl)
    f = rtl / "tamper_sp_fc.sv"
    text = f.read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("p0_ent_rom[0] = "))
    flipped = line[:-2] + format(int(line[-2], 16) ^ 1, "x") + ";"  # bit 0 of the weight code
    f.write_text(text.replace(line, flipped))
    with pytest.raises(AssertionError, match="mismatching codes"):
        simulate(s, rng.integers(1, 256, size=(3, 10)), tmp_path, build_root)


@pytest.mark.slow
def test_pruned_lenet_lowered_and_swapped(tmp_path: Path, build_root: Path) -> None:
    """LeNet-300-100, smallest 90 % |w| per layer zeroed, lowered by hwgen, every Dense on the sparse
    engine: RTL bit-exact vs hwgen.sim.exact on MNIST images, latency of image 0 as modelled."""
    import onnx
    from onnx import numpy_helper

    from hwgen.build import compile_model
    from hwgen.config import config_from_dict
    from hwgen.sim.exact import encode_input, run_codes

    root = Path(__file__).resolve().parents[1] / "models" / "lenet300"
    model = onnx.load(str(root / "lenet300.onnx"))
    gemm = {n.input[1] for n in model.graph.node if n.op_type in ("Gemm", "MatMul")}
    for init in model.graph.initializer:
        if init.name in gemm:
            w = numpy_helper.to_array(init).copy()
            w[np.abs(w) <= np.quantile(np.abs(w), 0.9)] = 0
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(tmp_path / "lenet300_pruned.onnx"))
    cfg = config_from_dict({"quantize": {"weight_bits": 8, "act_bits": 8}})
    _g, qg, sched, _r = compile_model(tmp_path / "lenet300_pruned.onnx", cfg, root / "mnist_calib.npz", lambda _s: None)
    plans = {i: sparse_from_dense(p, pes=min(4, p.out_features)) for i, p in enumerate(sched.layers)}
    s = replace_layers(sched, plans)
    with np.load(root / "mnist_test_1k.npz") as f:
        x = f["x"][:8]
    codes = encode_input(qg, x).reshape(len(x), -1)
    want = run_codes(qg, codes)[qg.outputs[0]].reshape(len(x), -1)
    rtl = tmp_path / s.top
    emit_rtl(s, rtl)
    r = run_rtl(rtl, s, codes, work_dir=build_root / "lenet_sparse", backpressure="random", seed=3)
    assert not first_mismatch(r.outputs, want), first_mismatch(r.outputs, want)
    assert r.latency_cycles == int(chain_beats(s, codes[0])[-1])
