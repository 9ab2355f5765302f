"""The Schedule: accumulator widths against adversarial weights and brute force, foldings, chains, timing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import quant_config

from hwgen.errors import ScheduleError
from hwgen.hw.plan import DensePlan, IntType, Requant, StreamPort
from hwgen.hw.schedule import (
    accumulator_range,
    chain_schedule,
    choose_folding,
    int_type_for,
    plan_dense,
    product_type,
    signed_bits_for,
    valid_foldings,
)
from hwgen.hw.timing import chain_latency, dense_timing
from hwgen.numerics import Rounding

REQ = Requant(shift=4, rounding=Rounding.HALF_EVEN, lo=-128, hi=127)


def fits(v: int, bits: int) -> bool:
    """Two's complement: does v fit in `bits` bits? (from the definition, not from the code)"""
    return bits >= 1 and -(2 ** (bits - 1)) <= v <= 2 ** (bits - 1) - 1


def min_signed_bits(values: list[int]) -> int:
    return next(b for b in range(2, 200) if all(fits(v, b) for v in values))


def plan(w: np.ndarray, b: np.ndarray, inp: IntType, *, pe: int = 1, simd: int = 1, name: str = "l") -> DensePlan:
    return plan_dense(name, name, w, b, inp, IntType(8, True), REQ, pe=pe, simd=simd)


# -- widths ------------------------------------------------------------------------------------
def test_signed_bits_and_int_type_brute_force() -> None:
    for lo in range(-70, 1):
        for hi in range(0, 70):
            assert signed_bits_for(lo, hi) == min_signed_bits([lo, hi])
            t = int_type_for(lo, hi)
            assert t.lo <= lo and hi <= t.hi
            if lo < 0:
                assert t.signed and t.bits == min_signed_bits([lo, hi])
            else:
                assert not t.signed and t.bits == max(1, next(b for b in range(1, 64) if hi < 2**b))


def test_int_type_ranges() -> None:
    assert (IntType(8, True).lo, IntType(8, True).hi, str(IntType(8, True))) == (-128, 127, "s8")
    assert (IntType(8, False).lo, IntType(8, False).hi, str(IntType(8, False))) == (0, 255, "u8")
    assert (IntType(1, False).lo, IntType(1, False).hi) == (0, 1)


@pytest.mark.parametrize("a", [IntType(2, True), IntType(3, False), IntType(4, True), IntType(1, False)], ids=str)
@pytest.mark.parametrize("w", [IntType(2, True), IntType(3, True), IntType(5, True)], ids=str)
def test_product_type_brute_force(a: IntType, w: IntType) -> None:
    prods = [x * y for x in range(a.lo, a.hi + 1) for y in range(w.lo, w.hi + 1)]
    p = product_type(a, w)
    assert all(p.lo <= v <= p.hi for v in prods)
    assert not all(IntType(p.bits - 1, p.signed).lo <= v <= IntType(p.bits - 1, p.signed).hi for v in prods) or (
        p.bits == 1
    )


FAN_IN = 4096
W_TYPE = IntType(8, True)


def adversarial_rows(k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    single = np.zeros(k, dtype=np.int64)
    single[int(rng.integers(k))] = W_TYPE.lo
    single_max = np.zeros(k, dtype=np.int64)
    single_max[int(rng.integers(k))] = W_TYPE.hi
    return {
        "all_max": np.full(k, W_TYPE.hi),
        "all_min": np.full(k, W_TYPE.lo),
        "alternating": np.where(np.arange(k) % 2 == 0, W_TYPE.hi, W_TYPE.lo),
        "single_min": single,
        "single_max": single_max,
        "zero": np.zeros(k, dtype=np.int64),
        "random": rng.integers(W_TYPE.lo, W_TYPE.hi + 1, k),
    }


def extreme_sums(row: np.ndarray, bias: int, inp: IntType) -> list[int]:
    """Exact sums (Python ints) of the input vectors at the ends of the input range that
    maximize and minimize the row, plus the all-lo and all-hi vectors."""
    r = [int(v) for v in row]
    vecs = [
        [inp.hi if v > 0 else inp.lo for v in r],
        [inp.lo if v > 0 else inp.hi for v in r],
        [inp.lo] * len(r),
        [inp.hi] * len(r),
    ]
    return [sum(x * w for x, w in zip(vec, r, strict=True)) + bias for vec in vecs]


@pytest.mark.parametrize("inp", [IntType(8, True), IntType(8, False), IntType(4, True), IntType(1, False)], ids=str)
@pytest.mark.parametrize("kind", ["all_max", "all_min", "alternating", "single_min", "single_max", "zero", "random"])
def test_accumulator_width_adversarial_at_max_fan_in(kind: str, inp: IntType) -> None:
    rng = np.random.default_rng(0)
    row = adversarial_rows(FAN_IN, rng)[kind]
    w = np.stack([row, np.zeros(FAN_IN, dtype=np.int64)])  # a zero row beside it changes nothing
    b = np.array([0, 0])
    p = plan(w, b, inp, simd=64)
    sums = extreme_sums(row, 0, inp)
    assert all(fits(s, p.acc.bits) for s in sums), (p.acc, sums)
    assert p.acc.signed
    if kind == "zero":
        assert p.acc.bits == 2  # the narrowest signed type
    else:
        assert not all(fits(s, p.acc.bits - 1) for s in sums), (p.acc, sums)  # tight: one bit less overflows
    assert p.acc.bits == min_signed_bits([*sums, 0])


def test_accumulator_width_known_values() -> None:
    """Hand-computed extremes at fan-in 4096 (s27 holds [-2**26, 2**26 - 1], s28 twice that)."""
    cases = [
        (127, IntType(8, False), 28),  # 4096 * 127 * 255 = 132,648,960
        (-128, IntType(8, True), 28),  # 4096 * -128 * -128 = 67,108,864 = 2**26: one past s27
        (127, IntType(8, True), 27),  # [4096 * 127 * -128, 4096 * 127 * 127] = [-66,584,576, 66,064,384]
        (-128, IntType(8, False), 28),  # 4096 * -128 * 255 = -133,693,440
    ]
    for wv, inp, bits in cases:
        assert plan(np.full((1, FAN_IN), wv), np.zeros(1), inp, simd=64).acc == IntType(bits, True), (wv, inp)


def test_bias_counts_in_the_accumulator() -> None:
    w = np.full((1, 16), 127)
    inp = IntType(8, False)
    top = 16 * 127 * 255  # 518,160 < 2**19 - 1
    assert plan(w, np.array([0]), inp).acc == IntType(20, True)
    assert plan(w, np.array([2**19 - 1 - top]), inp).acc == IntType(20, True)  # exactly at the top of s20
    assert plan(w, np.array([2**19 - top]), inp).acc == IntType(21, True)  # one more needs s21
    assert plan(w, np.array([-(2**20)]), inp).acc.bits == min_signed_bits([-(2**20), top - 2**20])


@pytest.mark.parametrize("seed", range(6))
def test_accumulator_range_brute_force_small(seed: int) -> None:
    """Every input vector of a 2-bit signed or unsigned input at fan-in 5: the derived range is exact."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-8, 8, size=(3, 5))
    b = rng.integers(-20, 20, size=3)
    for inp in (IntType(2, True), IntType(2, False)):
        sums = [
            int(np.dot(w[r], x)) + int(b[r])
            for r in range(3)
            for x in itertools.product(range(inp.lo, inp.hi + 1), repeat=5)
        ]
        lo, hi = accumulator_range(w, b, inp)
        assert (lo, hi) == (min(min(sums), 0), max(max(sums), 0))
        assert plan(w, b, inp).acc.bits == min_signed_bits([*sums, 0])


def test_plan_widths_of_weights_and_bias() -> None:
    p = plan(np.array([[3, 0], [1, 2]]), np.array([5, -9]), IntType(4, False))
    assert p.w == IntType(3, True)  # non-negative weights still get a sign bit in hardware
    assert p.bias == IntType(5, True)  # -9 needs 5 bits
    assert p.prod.lo <= 0 and p.prod.hi >= 15 * 3
    p = plan(np.array([[-4, 3]]), np.array([0]), IntType(4, True))
    assert p.w == IntType(3, True)


def test_plan_rejects_foldings_that_do_not_divide() -> None:
    with pytest.raises(ScheduleError, match=r"layer 'fc'.*PE=3 must divide 4 outputs and SIMD=2 must divide 6 inputs"):
        plan_dense("fc", "fc", np.zeros((4, 6)), np.zeros(4), IntType(8, True), IntType(8, True), REQ, pe=3, simd=2)


def test_weight_tile_layout() -> None:
    w = np.arange(4 * 6).reshape(4, 6)
    p = plan(w, np.zeros(4), IntType(8, True), pe=2, simd=3)
    assert (p.sf, p.nf, p.reuse, p.multipliers) == (2, 2, 4, 6)
    for addr in range(p.reuse):
        nf, sf = divmod(addr, p.sf)
        np.testing.assert_array_equal(p.weight_tile(addr), w[nf * 2 : nf * 2 + 2, sf * 3 : sf * 3 + 3])


# -- folding -------------------------------------------------------------------------------------
SHAPES = [(1, 1), (1, 7), (6, 4), (12, 10), (784, 300), (13, 17), (64, 64)]


@pytest.mark.parametrize(("k", "m"), SHAPES)
def test_valid_foldings_are_exactly_the_divisor_pairs(k: int, m: int) -> None:
    options = valid_foldings(k, m)
    brute = {((k // s) * (m // p), p, s) for p in range(1, m + 1) for s in range(1, k + 1) if m % p == 0 and k % s == 0}
    assert set(options) == brute and len(options) == len(brute)
    assert [r for r, _, _ in options] == sorted(r for r, _, _ in options)
    for r, pe, simd in options:
        assert m % pe == 0 and k % simd == 0 and r == (k // simd) * (m // pe)


@pytest.mark.parametrize(("k", "m"), SHAPES)
def test_choose_folding_smallest_valid_reuse_at_least_the_request(k: int, m: int) -> None:
    reuses = sorted({(k // s) * (m // p) for p in range(1, m + 1) if m % p == 0 for s in range(1, k + 1) if k % s == 0})
    requests = sorted(set(range(1, min(k * m, 300) + 3)) | set(reuses[-5:]) | {k * m + 1, 10 * k * m})
    for r in requests:
        pe, simd = choose_folding(k, m, r)
        assert m % pe == 0 and k % simd == 0
        got = (k // simd) * (m // pe)
        expected = next((v for v in reuses if v >= r), reuses[-1])  # clamps at the maximum k*m
        assert got == expected, (r, pe, simd)
    assert choose_folding(k, m, 10 * k * m) == (1, 1)


@pytest.mark.parametrize("bad", [0, -3])
def test_choose_folding_rejects_reuse_below_one(bad: int) -> None:
    with pytest.raises(ScheduleError, match=f"reuse factor {bad} must be >= 1"):
        choose_folding(8, 8, bad, where="node 'fc'")


@pytest.mark.parametrize(("k", "m"), [(784, 300), (300, 100), (100, 10), (12, 10), (7, 5), (1, 8), (8, 1)])
def test_timing_monotonic_in_reuse(k: int, m: int) -> None:
    """Fewer multipliers never make an engine faster: along SIMD (PE fixed) and along PE (SIMD fixed)
    latency and II never decrease as reuse grows; and II never decreases along choose_folding."""
    divs = lambda n: [d for d in range(n, 0, -1) if n % d == 0]  # noqa: E731  (largest first: reuse grows)
    for pe in divs(m):
        ts = [dense_timing(k, m, pe, simd) for simd in divs(k)]
        assert all(b.latency >= a.latency and b.ii >= a.ii for a, b in itertools.pairwise(ts)), (pe, ts)
    for simd in divs(k):
        ts = [dense_timing(k, m, pe, simd) for pe in divs(m)]
        assert all(b.latency >= a.latency and b.ii >= a.ii for a, b in itertools.pairwise(ts)), (simd, ts)
    prev = None
    for r in sorted({rr for rr, _, _ in valid_foldings(k, m)}):
        pe, simd = choose_folding(k, m, r)
        t = dense_timing(k, m, pe, simd)
        assert t.ii >= r and t.latency >= k and t.first_out <= t.latency
        if prev is not None:
            assert t.ii >= prev.ii, (r, pe, simd)
        prev = t


# -- chains --------------------------------------------------------------------------------------
def port(name: str, t: IntType, n: int) -> StreamPort:
    return StreamPort(name, name, t, n, 4, (n,))


def chain_layers() -> list[DensePlan]:
    rng = np.random.default_rng(1)
    a = plan_dense(
        "a", "/a", rng.integers(-8, 8, (6, 8)), np.zeros(6), IntType(8, False), IntType(8, False), REQ, pe=2, simd=4
    )
    b = plan_dense(
        "b", "/b", rng.integers(-8, 8, (3, 6)), np.zeros(3), IntType(8, False), IntType(8, True), REQ, pe=3, simd=2
    )
    return [a, b]


def test_chain_schedule() -> None:
    a, b = chain_layers()
    s = chain_schedule("top", "m", [a, b], port("in", IntType(8, False), 8), port("out", IntType(8, True), 3))
    assert [p.name for p in s.layers] == ["a", "b"] and s.ii == max(a.ii, b.ii)
    # the streams chain the engines: input port -> a -> b -> output port
    assert s.layers[0].inputs == ("in",) and s.layers[0].outputs == s.layers[1].inputs
    assert s.layers[1].outputs == ("out",) and s.streams[0].name == "in"
    assert s.latency == chain_latency([(8, 6, 2, 4), (6, 3, 3, 2)])
    assert s.latency >= max(a.latency, b.latency)
    assert len(s.model_hash) == 16
    ports = (port("in", IntType(8, False), 8), port("out", IntType(8, True), 3))
    again = chain_schedule("top", "m", chain_layers(), *ports)
    assert again.model_hash == s.model_hash  # content hash, deterministic
    w2 = a.weights.copy()
    w2[0, 0] += 1
    a2 = plan_dense("a", "/a", w2, np.zeros(6), IntType(8, False), IntType(8, False), REQ, pe=2, simd=4)
    other = chain_schedule("top", "m", [a2, b], port("in", IntType(8, False), 8), port("out", IntType(8, True), 3))
    assert other.model_hash != s.model_hash


def test_chain_schedule_rejects_mismatched_chains() -> None:
    a, b = chain_layers()
    ports = (port("in", IntType(8, False), 8), port("out", IntType(8, True), 3))
    with pytest.raises(ScheduleError, match=r"layers '/b' -> '/a'"):
        chain_schedule("top", "m", [b, a], *ports)  # 3 outputs feed 8 inputs
    b_signed_in = plan_dense("b", "/b", b.weights, b.biases, IntType(8, True), IntType(8, True), REQ, pe=3, simd=2)
    with pytest.raises(ScheduleError, match=r"layers '/a' -> '/b': 6xu8 feeds 6xs8"):
        chain_schedule("top", "m", [a, b_signed_in], *ports)  # u8 codes into an s8 engine
    with pytest.raises(ScheduleError, match="no layers"):
        chain_schedule("top", "m", [], *ports)


def test_schedule_graph_on_the_bundled_model(lenet_model, mnist_calib, mnist_test) -> None:
    """Every accumulator the golden model sees on real data fits the planned width."""
    from hwgen.frontend import import_onnx
    from hwgen.hw.lower import schedule_graph
    from hwgen.passes.canonicalize import canonicalize
    from hwgen.passes.quantize import quantize_fixed
    from hwgen.sim import exact

    q = quantize_fixed(canonicalize(import_onnx(lenet_model)).graph, mnist_calib, quant_config()).graph
    s = schedule_graph(q, quant_config())
    assert [p.source for p in s.layers] == ["node_linear", "node_linear_1", "node_linear_2"]
    assert (s.input.count, s.output.count) == (784, 10)
    x = mnist_test[0][:200]
    env = exact.run_codes(q, exact.encode_input(q, x), keep=True)
    dense = [n for n in q.nodes if n.op == "Dense"]
    for p, node in zip(s.layers, dense, strict=True):
        xin = env[node.inputs[0]].reshape(len(x), -1).astype(np.int64)
        acc = xin @ p.weights.T + p.biases  # 8-bit x 8-bit x 784 terms: far inside int64
        assert all(fits(int(v), p.acc.bits) for v in acc.ravel())
        assert p.in_features % p.simd == 0 and p.out_features % p.pe == 0


# -- lowering a quantized graph --------------------------------------------------------------------
def quantized_chain(layers: list[int], seed: int, config=None):
    from conftest import make_mlp_onnx, random_input

    from hwgen.frontend import import_onnx
    from hwgen.passes.canonicalize import canonicalize
    from hwgen.passes.quantize import quantize_fixed

    g = canonicalize(import_onnx(make_mlp_onnx(layers, seed))).graph
    return quantize_fixed(g, random_input((layers[0],), seed, 32), config or quant_config()).graph


def test_lowering_respects_reuse_overrides_and_target_ii() -> None:
    from hwgen.config import BuildConfig, HardwareConfig, LayerConfig
    from hwgen.hw.lower import schedule_graph

    cfg = BuildConfig(layers={"fc0": LayerConfig(reuse=7), "fc1": LayerConfig(reuse=1)})
    s = schedule_graph(quantized_chain([12, 10, 4], 0, cfg), cfg)
    assert [p.reuse for p in s.layers] == [8, 1]  # 7 is no folding of 10x12: the next valid one is 8
    assert [(p.pe, p.simd) for p in s.layers] == [choose_folding(12, 10, 7), (4, 10)]
    for target in (1, 7, 40, 120):
        cfg = BuildConfig(hardware=HardwareConfig(target_ii=target))
        s = schedule_graph(quantized_chain([12, 10, 4], 1, cfg), cfg)
        for p in s.layers:
            fits_target = [r for r, _, _ in valid_foldings(p.in_features, p.out_features) if r <= target]
            # the fewest multipliers within the target, or full parallelism when nothing fits
            assert p.reuse == (max(fits_target) if fits_target else 1), (target, p.name)


def test_lowering_refuses_what_has_no_engine() -> None:
    import numpy as np
    from conftest import make_model, random_input
    from onnx import helper

    from hwgen.errors import ScheduleError, UnsupportedOpError
    from hwgen.frontend import import_onnx
    from hwgen.hw.lower import schedule_graph
    from hwgen.passes.canonicalize import canonicalize
    from hwgen.passes.quantize import quantize_fixed

    def lower(nodes, outputs, inits, shape=(4,)):
        model = make_model(nodes, {"x": ["N", *shape]}, outputs, inits)
        g = canonicalize(import_onnx(model)).graph
        q = quantize_fixed(g, random_input(shape, 0, 16), quant_config()).graph
        return schedule_graph(q, quant_config())

    w = {"W": np.ones((3, 4)), "W2": np.ones((2, 3))}
    gemm = helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1)
    with pytest.raises(UnsupportedOpError, match=r"one input and one output stream"):
        lower(
            [gemm, helper.make_node("Gemm", ["h", "W2"], ["y"], name="fc2", transB=1)],
            {"h": ["N", 3], "y": ["N", 2]},
            w,
        )
    with pytest.raises(UnsupportedOpError, match=r"node 'act' \(ONNX 'act', Softmax\): softmax along axis 2"):
        lower(
            [helper.make_node("Softmax", ["x"], ["r"], name="act", axis=2)],
            {"r": ["N", 3, 4, 5]},
            {},
            shape=(3, 4, 5),
        )
    with pytest.raises(ScheduleError, match=r"per-sample shape \[2, 4\] have no stream layout"):
        lower(
            [helper.make_node("MatMul", ["x", "Wt"], ["y"], name="mm")],
            {"y": ["N", 2, 3]},
            {"Wt": np.ones((4, 3))},
            shape=(2, 4),
        )
