"""HLS C simulation against the golden model, bit for bit (hw.hls_emit + hw.csim, g++).

Expected outputs come only from hwgen.sim.integer_kernels.dense applied layer by layer. Compiled
binaries are cached in one session folder, so a project emitted twice compiles once.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hwgen.errors import ToolError
from hwgen.hw.csim import CsimResult, ap_types_dir, run_csim
from hwgen.hw.hls_emit import emit_hls
from hwgen.hw.names import legalize
from hwgen.hw.plan import DensePlan, IntType, Requant, Schedule, StreamPort
from hwgen.hw.schedule import accumulator_range, chain_schedule, choose_folding, plan_dense, valid_foldings
from hwgen.numerics import Rounding
from hwgen.sim.integer_kernels import dense

HAVE_TOOLS = shutil.which(os.environ.get("CXX", "g++")) is not None and importlib.util.find_spec("hls4ml") is not None


def needs_gxx(test: Callable[..., None]) -> Callable[..., None]:
    """Marked `gxx` (deselect with -m "not gxx"), and skipped with the reason when the tools are missing."""
    return pytest.mark.gxx(pytest.mark.skipif(not HAVE_TOOLS, reason="needs g++ and hls4ml's ap_types")(test))


S4, S8, U8, S16, S32 = IntType(4, True), IntType(8, True), IntType(8, False), IntType(16, True), IntType(32, True)


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One binary cache for the session: the same project is compiled once."""
    return tmp_path_factory.mktemp("csim_cache")


def golden(schedule: Schedule, x: np.ndarray) -> np.ndarray:
    """The golden model: integer_kernels.dense, layer after layer."""
    for p in schedule.layers:
        rq = p.requant
        x = dense(x, p.weights, p.biases, shift=rq.shift, rounding=rq.rounding, lo=rq.lo, hi=rq.hi)
    return x


def plan(
    name: str,
    w: np.ndarray,
    b: np.ndarray | None,
    inp: IntType,
    out: IntType,
    rounding: Rounding,
    shift: int,
    *,
    pe: int,
    simd: int,
    lo: int | None = None,
    hi: int | None = None,
) -> DensePlan:
    w = np.asarray(w, dtype=np.int64)
    b = np.zeros(w.shape[0], dtype=np.int64) if b is None else b
    rq = Requant(shift, rounding, out.lo if lo is None else lo, out.hi if hi is None else hi)
    return plan_dense(name, f"/{name}/Gemm", w, b, inp, out, rq, pe=pe, simd=simd)


def chain(layers: list[DensePlan], top: str = "net", model: str = "test") -> Schedule:
    first, last = layers[0], layers[-1]
    x = StreamPort("x", "input", first.inp, first.in_features, 0, (first.in_features,))
    y = StreamPort("y", "output", last.out, last.out_features, 0, (last.out_features,))
    return chain_schedule(top, model, layers, x, y)


def check(schedule: Schedule, x: np.ndarray, tmp_path: Path, cache: Path, what: str = "") -> CsimResult:
    """Emit, C-simulate and compare with the golden chain; report the first mismatch."""
    emit_hls(schedule, tmp_path / "hls")
    got = run_csim(tmp_path / "hls", x, cache)
    want = golden(schedule, np.asarray(x, dtype=np.int64))
    assert got.outputs.shape == want.shape
    bad = np.argwhere(got.outputs != want)
    if bad.size:
        n, j = bad[0]
        pytest.fail(
            f"{what}: csim vs golden, sample {n} output {j}: expected {want[n, j]}, got {got.outputs[n, j]} "
            f"({len(bad)} mismatches of {want.size})"
        )
    return got


def extremes(t: IntType, k: int) -> np.ndarray:
    """All-min, all-max, both alternations and zero: the input vectors that reach the accumulator's ends."""
    alt = np.resize([t.hi, t.lo], k)
    return np.array([[t.lo] * k, [t.hi] * k, alt, alt[::-1], [0] * k], dtype=np.int64)


# -- random chains -----------------------------------------------------------------------------
def random_type(rng: np.random.Generator, max_bits: int = 12) -> IntType:
    return IntType(int(rng.integers(2, max_bits + 1)), bool(rng.integers(0, 2)))


def random_chain(seed: int) -> Schedule:
    """1-3 layers, random sizes, foldings, widths, signedness, rounding, shift (<= 0 too) and clamps."""
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(1, 4))
    dims = [int(rng.choice([1, 2, 5, 8, 12, 24, 30])) for _ in range(n_layers + 1)]
    inp = random_type(rng)
    layers = []
    for i in range(n_layers):
        k, m = dims[i], dims[i + 1]
        wt = IntType(int(rng.integers(2, 10)), True)
        w = rng.integers(wt.lo, wt.hi + 1, size=(m, k))
        b_bits = int(rng.integers(1, inp.bits + wt.bits + 2))
        b = rng.integers(-(1 << b_bits), 1 << b_bits, size=m)
        foldings = valid_foldings(k, m)
        _, pe, simd = foldings[int(rng.integers(0, len(foldings)))]
        p = plan(f"fc{i}", w, b, inp, inp, Rounding.FLOOR, 0, pe=pe, simd=simd)  # out and requant set below
        if rng.random() < 0.3:  # no or an exact left shift, into a type about wide enough
            shift = -int(rng.integers(0, 3))
            out = IntType(p.acc.bits - shift - int(rng.integers(0, 3)), True)
        else:  # a right shift aimed so the outputs span the output type, with some saturation
            out = random_type(rng)
            shift = max(1, p.acc.bits - out.bits + int(rng.integers(-2, 3)))
        lo, hi = sorted(int(v) for v in rng.integers(out.lo, out.hi + 1, size=2))
        lo, hi = (out.lo, out.hi) if rng.random() < 0.5 else (lo, hi)
        rq = Requant(shift, Rounding(rng.choice(list(Rounding))), lo, hi)
        layers.append(dataclasses.replace(p, out=out, requant=rq))
        inp = out
    return chain(layers, model=f"random seed {seed}")


#: HWGEN_SEED=<n> runs one other seed (to reproduce or explore)
SEEDS = [int(os.environ["HWGEN_SEED"])] if "HWGEN_SEED" in os.environ else [12, 13, 15]


@needs_gxx
@pytest.mark.parametrize("seed", SEEDS)
def test_random_chains(seed: int, tmp_path: Path, cache: Path) -> None:
    print(f"seed {seed}")
    s = random_chain(seed)
    t = s.input.elem
    rng = np.random.default_rng(seed + 1000)
    x = np.vstack([extremes(t, s.input.count), rng.integers(t.lo, t.hi + 1, size=(200, s.input.count))])
    check(s, x, tmp_path, cache, f"seed {seed}: {[(p.name, str(p.acc), p.requant) for p in s.layers]}")


# -- worst cases ---------------------------------------------------------------------------------
def pattern_weights(t: IntType, k: int) -> np.ndarray:
    """Rows: all max, all min, alternating signs (both phases), one non-zero weight, all zero."""
    alt = np.resize([t.hi, t.lo], k)
    single = np.zeros(k, dtype=np.int64)
    single[-1] = t.lo
    return np.array([[t.hi] * k, [t.lo] * k, alt, alt[::-1], single, [0] * k], dtype=np.int64)


@needs_gxx
@pytest.mark.parametrize(
    ("inp", "out", "rounding", "fold"),
    [
        (S8, S8, Rounding.HALF_EVEN, "full"),  # PE x SIMD = every weight: one tile per vector
        (U8, U8, Rounding.HALF_UP, "one"),  # PE = SIMD = 1: one multiplier
    ],
)
def test_worst_case_fan_in_784(
    inp: IntType, out: IntType, rounding: Rounding, fold: str, tmp_path: Path, cache: Path
) -> None:
    """Extreme weights x extreme inputs at fan-in 784: accumulator ends reached, both clamps hit."""
    k = 784
    w = pattern_weights(S8, k)
    b = np.array([0, 0, 1, -1, 0, 5], dtype=np.int64)
    pe, simd = (w.shape[0], k) if fold == "full" else (1, 1)
    p = plan("fc1", w, b, inp, out, rounding, 14, pe=pe, simd=simd)
    lo, hi = accumulator_range(w, b, inp)
    rng = np.random.default_rng(7)
    x = np.vstack([extremes(inp, k), rng.integers(inp.lo, inp.hi + 1, size=(8, k))])
    got = check(chain([p]), x, tmp_path, cache, f"fan-in {k} {fold}")
    # the vectors reach both ends of the accumulator's proven range, and both saturation bounds
    sums = x @ w.T + b
    assert (sums.min(), sums.max()) == (lo, hi)
    assert (got.outputs == out.hi).any() and (got.outputs == out.lo).any()


@needs_gxx
def test_rounding_modes_at_exact_ties(tmp_path: Path, cache: Path) -> None:
    """FLOOR -> HALF_UP -> HALF_EVEN, each on acc = 4x + r (r = 0..3 per channel), shift 2.

    Every layer sees every s8 code in every channel, so each mode meets every residue; r = 2 is
    an exact .5 tie, for odd and even quotients of both signs. The result stays ~x, so the
    next layer again sees (almost) the full range; 127.5 rounds up and saturates at 127.
    """
    modes = [Rounding.FLOOR, Rounding.HALF_UP, Rounding.HALF_EVEN]
    layers = [
        plan(f"{m.value}", 4 * np.eye(4, dtype=np.int64), np.arange(4), S8, S8, m, 2, pe=2, simd=2) for m in modes
    ]
    x = np.repeat(np.arange(-128, 128, dtype=np.int64)[:, None], 4, axis=1)
    check(chain(layers), x, tmp_path, cache, "rounding chain")
    for i, p in enumerate(layers):
        xi = golden(chain(layers[:i]), x) if i else x
        acc = 4 * xi + np.arange(4)
        ties = acc[:, 2]
        assert {bool(v < 0) for v in ties} == {True, False} and {int(v >> 2) & 1 for v in ties} == {0, 1}, p.name
        assert xi.min() <= -127 and xi.max() == 127, p.name


@needs_gxx
def test_shifts_left_zero_and_beyond_the_accumulator(tmp_path: Path, cache: Path) -> None:
    """shift < 0 (exact left shift), shift 0, and a right shift wider than the accumulator itself."""
    rng = np.random.default_rng(3)
    w1, b1 = rng.integers(-8, 8, (8, 8)), rng.integers(-50, 50, 8)
    l1 = plan("left", w1, b1, S4, S16, Rounding.HALF_EVEN, -3, pe=2, simd=8, lo=-3000, hi=3000)
    l2 = plan("zero", rng.integers(-4, 4, (8, 8)), None, S16, IntType(12, True), Rounding.FLOOR, 0, pe=8, simd=2)
    l3 = plan("beyond", rng.integers(-2, 2, (4, 8)), None, IntType(12, True), S4, Rounding.HALF_UP, 0, pe=1, simd=1)
    l3 = dataclasses.replace(l3, requant=Requant(l3.acc.bits + 1, Rounding.HALF_UP, -8, 7))
    x = np.vstack([extremes(S4, 8), rng.integers(-8, 8, size=(64, 8))])
    check(chain([l1, l2, l3]), x, tmp_path, cache, "shifts")


@needs_gxx
def test_relu_clamp_and_mixed_signedness(tmp_path: Path, cache: Path) -> None:
    """u8 -> s8 (ReLU: lo = 0) -> u8 -> s8: unsigned and signed codes on each side of an engine."""
    rng = np.random.default_rng(5)
    w1, b1 = rng.integers(-128, 128, (12, 30)), rng.integers(-3000, 3000, 12)
    l1 = plan("fc1", w1, b1, U8, S8, Rounding.HALF_EVEN, 10, pe=3, simd=10, lo=0)
    l2 = plan("fc2", rng.integers(-128, 128, (6, 12)), None, S8, U8, Rounding.FLOOR, 6, pe=6, simd=3)
    l3 = plan("fc3", rng.integers(-128, 128, (4, 6)), None, U8, S8, Rounding.HALF_UP, 9, pe=2, simd=6)
    x = np.vstack([extremes(U8, 30), rng.integers(0, 256, size=(100, 30))])
    s = chain([l1, l2, l3])
    check(s, x, tmp_path, cache, "relu chain")
    hidden = golden(chain([l1]), x)
    assert hidden.min() == 0 and (hidden == 0).sum() > 10  # the ReLU clamp did work


@needs_gxx
def test_wide_accumulators(tmp_path: Path, cache: Path) -> None:
    """s16 x s16 at fan-in 784 (acc > 32 bits, shift > 32), then s32 x s32 (acc > 64 bits: ap_int multi-word)."""
    rng = np.random.default_rng(9)
    w1, b1 = rng.integers(-(2**15), 2**15, (8, 784)), rng.integers(-(2**38), 2**38, 8)
    l1 = plan("wide1", w1, b1, S16, S32, Rounding.HALF_EVEN, 12, pe=4, simd=16)
    w2 = rng.integers(-(2**31), 2**31, (4, 8))
    w2[0, :] = -(2**31)
    l2 = plan("wide2", w2, None, S32, S16, Rounding.HALF_EVEN, 0, pe=2, simd=4)
    l2 = dataclasses.replace(l2, requant=Requant(l2.acc.bits - 17, Rounding.HALF_EVEN, S16.lo, S16.hi))
    assert l1.acc.bits > 32 and l2.acc.bits > 64 and l2.requant.shift > 32
    x = np.vstack([extremes(S16, 784), rng.integers(-(2**15), 2**15, size=(20, 784))])
    check(chain([l1, l2]), x, tmp_path, cache, "wide")


@needs_gxx
def test_hostile_names_compile_warning_free(tmp_path: Path, cache: Path) -> None:
    """Names legalized from hostile strings, or equal to libc and generated local names: the
    project still compiles under -Wall -Wextra -Werror and is exact."""
    taken: set[str] = set()
    top = legalize("in", taken)  # also the name of the top function's input stream
    raws = ['a"; system("x"); //', "module", "1x", "Überschicht-層", "n" * 300]
    raws += ["in", "out", "int8_t", "x", "x_out", "acc", "W", "main"]  # libc, locals, stream names
    rng = np.random.default_rng(4)
    layers = []
    for raw in raws:
        p = plan(legalize(raw, taken), rng.integers(-9, 9, (4, 4)), None, U8, U8, Rounding.HALF_EVEN, 3, pe=2, simd=2)
        layers.append(dataclasses.replace(p, source=f"*/ {raw}\n\\"))
    assert top == "in" and {"int8_t", "x_out", "n_W"} <= {p.name for p in layers}  # all-caps: macro guard
    x = np.vstack([extremes(U8, 4), rng.integers(0, 256, size=(20, 4))])
    check(chain(layers, top=top, model='m */ "\\'), x, tmp_path, cache, "hostile names")


@needs_gxx
def test_lenet_sized_mlp(tmp_path: Path, cache: Path) -> None:
    """784-300-100-10 with the foldings the scheduler picks for reuse 64: the size of the demo model."""
    rng = np.random.default_rng(1)
    dims, layers, inp = [784, 300, 100, 10], [], U8
    for i, (k, m) in enumerate(itertools.pairwise(dims)):
        out = S8 if i == 2 else U8
        pe, simd = choose_folding(k, m, 64)
        w, b = rng.integers(-128, 128, (m, k)), rng.integers(-5000, 5000, m)
        relu = 0 if i < 2 else None
        layers.append(plan(f"fc{i + 1}", w, b, inp, out, Rounding.HALF_EVEN, 10, pe=pe, simd=simd, lo=relu))
        inp = out
    x = np.vstack([extremes(U8, 784), rng.integers(0, 256, size=(50, 784))])
    check(chain(layers), x, tmp_path, cache, "784-300-100-10")


# -- the runner ----------------------------------------------------------------------------------
def small() -> Schedule:
    rng = np.random.default_rng(2)
    return chain([plan("fc", rng.integers(-128, 128, (3, 5)), None, U8, S8, Rounding.HALF_UP, 6, pe=3, simd=5)])


@needs_gxx
def test_cache_and_testbench_checks(tmp_path: Path, cache: Path) -> None:
    """A second run reuses the binary; the testbench compares EXPECTED and rejects bad inputs."""
    s = small()
    x = np.vstack([extremes(U8, 5), np.arange(10, dtype=np.int64).reshape(2, 5)])
    want = golden(s, x)
    emit_hls(s, tmp_path / "hls", inputs=x, expected=want)
    first = run_csim(tmp_path / "hls", x, cache)
    second = run_csim(tmp_path / "hls", x, cache)
    assert second.cached and second.compile_seconds == 0.0
    np.testing.assert_array_equal(first.outputs, want)
    np.testing.assert_array_equal(second.outputs, want)

    binary, hls = second.command[0], tmp_path / "hls"
    ok = subprocess.run([binary, "tb_input.txt", "out.txt", "tb_expected.txt"], cwd=hls, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "all outputs as expected" in ok.stdout
    wrong = want.copy()
    wrong[3, 1] += 1
    (hls / "wrong.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in wrong))
    bad = subprocess.run([binary, "tb_input.txt", "out.txt", "wrong.txt"], cwd=hls, capture_output=True, text=True)
    assert bad.returncode == 1 and "sample 3, output 1: expected" in bad.stderr

    with pytest.raises(ToolError, match=r"expected an integer in \[0, 255\]"):
        run_csim(hls, np.full((1, 5), 256), cache)
    with pytest.raises(ToolError, match="more than 5 values"):
        run_csim(hls, np.zeros((1, 6), dtype=np.int64), cache)


@needs_gxx
def test_compile_error_reports_the_log_tail(tmp_path: Path, cache: Path) -> None:
    emit_hls(small(), tmp_path)
    with (tmp_path / "fc.h").open("a") as f:
        f.write('#error "broken on purpose"\n')
    with pytest.raises(ToolError, match=r"(?s)g\+\+ exited 1 on net\.cpp.*last 40 lines.*broken on purpose"):
        run_csim(tmp_path, np.zeros((1, 5), dtype=np.int64), cache)


def test_missing_compiler_is_a_tool_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emit_hls(small(), tmp_path)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    with pytest.raises(ToolError, match="needs g\\+\\+"):
        run_csim(tmp_path, np.zeros((1, 5), dtype=np.int64))


def test_missing_headers_is_a_tool_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ToolError, match=r"pip install hls4ml"):
        ap_types_dir()


def test_not_a_project_is_a_tool_error(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"no run_hls\.tcl"):
        run_csim(tmp_path, np.zeros((1, 5), dtype=np.int64))
