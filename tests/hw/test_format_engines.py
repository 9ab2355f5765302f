"""The format MAC engines: plans and widths, and the HLS C simulation bit-exact for every format.

Expected outputs come from hwgen.sim.format_mac.dot_exact (through format_engines.golden); the
C simulation runs the generated project with hwgen.hw.csim (g++ and the ap_types headers).
Vectors: extreme codes (max, min, zero, smallest non-zero / denormals, alternating signs) at both
ends of the shared range, a saturated row, random codes; weights with all-max, all-min,
alternating, zero and single-non-zero rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwgen.errors import ScheduleError
from hwgen.hw.csim import run_csim
from hwgen.hw.format_engines import (
    PIPE_STAGES,
    activation_beats,
    activation_codes,
    emit_hls_engine,
    golden,
    plan_format_engine,
    rtl_context,
    weight_codes,
)
from hwgen.hw.plan import IntType, Requant
from hwgen.numerics import BlockCodes, Rounding, parse_format
from hwgen.sim.format_mac import accumulator_spec, dot_exact

S8, U8 = IntType(8, True), IntType(8, False)

#: name -> (weight format, activation format, weight shared range, activation shared range, options)
CASES: dict[str, tuple[str, str, tuple[int, int] | None, tuple[int, int] | None, dict]] = {
    "fixed_dsp": ("fixed<8,6>", "fixed<8,5>", None, None, {}),
    "fixed_lut_relu": (
        "fixed<6,5>",
        "ufixed<8,8>",
        None,
        None,
        {"mul": "lut", "requant": Requant(5, Rounding.HALF_EVEN, 0, 127), "out": S8},
    ),
    "minifloat": ("minifloat<e4m3,bias=7,denorm>", "minifloat<e5m2,bias=15,nodenorm>", None, None, {}),
    "bfp_m7": ("bfp<m7,e5,block=8>", "bfp<m7,e5,block=8>", (-8, -4), (12, 15), {}),
    "bminifloat_e4m3": (
        "bminifloat<e4m3,b5,block=4,denorm>",
        "bminifloat<e4m3,b5,block=4,denorm>",
        (5, 9),
        (11, 15),
        {"requant": Requant(20, Rounding.HALF_UP, -128, 127), "out": S8},
    ),
    "blog_e3": ("blog<e3,b5,block=12>", "fixed<8,5>", (-4, 0), None, {"lanes": 4}),
    "binary_x_fixed": (
        "binary<channel>",
        "fixed<8,5>",
        None,
        None,
        {"requant": Requant(3, Rounding.HALF_EVEN, -128, 127), "out": S8},
    ),
    "binary_x_binary": ("binary<channel>", "binary<alpha=0.5>", None, None, {}),
    "ternary_x_fixed": (
        "ternary<channel>",
        "fixed<8,5>",
        None,
        None,
        {"requant": Requant(2, Rounding.FLOOR, -128, 127), "out": S8},
    ),
}
M, K, LANES = 8, 32, 8  # lanes per case unless its options say otherwise


def case_plan(name: str, seed: int = 0, *, m: int = M, k: int = K, lanes: int = LANES):
    """The plan of a case with verification weights, and its activation codes."""
    wf, af, w_sh, a_sh, opts = CASES[name]
    opts = {"lanes": lanes, **opts}
    rng = np.random.default_rng(seed)
    w_fmt, a_fmt = parse_format(wf), parse_format(af)
    plan = plan_format_engine(name, w_fmt, weight_codes(w_fmt, m, k, rng, w_sh), a_fmt, a_shared=a_sh, **opts)
    return plan, activation_codes(plan, rng, 12)


# -- plans -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_plan_widths_match_the_accumulator_spec(name: str) -> None:
    """One width derivation: the engine's accumulator is format_mac's, and the golden fits it."""
    plan, a = case_plan(name)
    a_range = plan.a_fmt.dyadic_range(shared=plan.a_shared) if plan.a_shared else None
    spec = accumulator_spec(plan.w_fmt, plan.a_fmt, K, w_codes=plan.codes, a_range=a_range)
    assert plan.acc == spec
    assert plan.hw_lsb <= spec.lsb and plan.acc_hw_bits == spec.width + plan.drop
    acc = dot_exact(plan.w_fmt, plan.codes, plan.a_fmt, a, lsb=spec.lsb).acc
    assert np.abs(np.asarray(acc, dtype=object)).max() <= spec.max_abs
    assert plan.latency == K + M * (K // plan.lanes) + PIPE_STAGES and plan.ii == K + M * (K // plan.lanes)


def test_all_max_operands_reach_the_bound_exactly() -> None:
    """Max fan-in all-max: all-min rows x all-min s8 codes (|-128| is the largest) give +max_abs."""
    k = 256
    w_fmt, a_fmt = parse_format("fixed<8,7>"), parse_format("fixed<8,7>")
    w = np.full((2, k), -128)
    w[1] = 127
    plan = plan_format_engine("fc", w_fmt, w, a_fmt, lanes=16)
    assert plan.acc.max_abs == 128 * 128 * k and plan.acc.width == (128 * 128 * k).bit_length() + 1
    y = golden(plan, np.full((1, k), -128))
    assert y.tolist() == [[128 * 128 * k, -127 * 128 * k]]


def test_datapath_per_family() -> None:
    """Block log and binary/ternary never multiply; two binaries XNOR; fixed and minifloat multiply."""
    kinds = {name: case_plan(name)[0].datapath for name in CASES}
    assert kinds["blog_e3"] == kinds["binary_x_fixed"] == kinds["ternary_x_fixed"] == "select"
    assert kinds["binary_x_binary"] == "xnor"
    assert kinds["fixed_dsp"] == kinds["minifloat"] == kinds["bfp_m7"] == "mul"
    mul = {name: case_plan(name)[0].mul for name in ("fixed_dsp", "minifloat", "bminifloat_e4m3")}
    assert mul == {"fixed_dsp": "dsp", "minifloat": "lut", "bminifloat_e4m3": "lut"}  # small significands: LUTs
    bfp = case_plan("bfp_m7")[0]
    assert (bfp.groups, bfp.gsize) == (1, 8) and bfp.shift_max == 0 and bfp.gshift_max == 4 + 3
    # lanes over two blocks per issue; lanes within a block, the last block partial (32 = 12 + 12 + 8)
    assert (case_plan("bminifloat_e4m3")[0].groups, case_plan("blog_e3")[0].gsize) == (2, 4)


def test_lane_groups_follow_the_blocks() -> None:
    """Lanes wider than a block: one group (one shared shift) per block per issue."""
    wf = parse_format("bfp<m3,e4,block=4>")
    rng = np.random.default_rng(1)
    p = plan_format_engine("g", wf, weight_codes(wf, 3, 16, rng, (-2, 2)), wf, lanes=8, a_shared=(-3, 3))
    assert (p.groups, p.gsize, p.ks) == (2, 4, 2)
    # shared ROM entries: the block of each group of each issue
    assert p.w_shared[:, 1, 1].tolist() == p.codes.shared[:, 3].tolist()


def test_rom_words_and_beats_pack_the_codes() -> None:
    """ROM word row*KS+ks: LANES element codes (lane 0 lowest), then the group shared codes."""
    plan, a = case_plan("bfp_m7")
    words = rtl_context(plan)["w_words"]
    we, sb = plan.w.code_bits, plan.w.shared_bits
    v = int(words[3 * plan.ks + 2], 16)  # row 3, issue 2
    lanes = [(v >> (i * we)) & ((1 << we) - 1) for i in range(LANES)]
    want = plan.w_codes[3, 2 * LANES : 3 * LANES] & ((1 << we) - 1)
    assert lanes == want.tolist()
    assert (v >> (LANES * we)) & ((1 << sb) - 1) == plan.codes.shared[3, 2] & ((1 << sb) - 1)
    beats = activation_beats(plan, a)
    sh = ((beats >> plan.a.code_bits) ^ (1 << (sb - 1))) - (1 << (sb - 1))  # sign-extend the shared field
    assert np.array_equal(sh, a.shared_per_element())


def test_plan_refusals() -> None:
    fx = parse_format("fixed<8,4>")
    w = np.ones((2, 12), dtype=np.int64)
    with pytest.raises(ScheduleError, match="lanes=5 must be a positive divisor of K=12"):
        plan_format_engine("a", fx, w, fx, lanes=5)
    bfp4, bfp8 = parse_format("bfp<m3,e4,block=4>"), parse_format("bfp<m3,e4,block=8>")
    rng = np.random.default_rng(0)
    with pytest.raises(ScheduleError, match="blocks differ"):
        plan_format_engine("b", bfp4, weight_codes(bfp4, 2, 16, rng), bfp8, lanes=4)
    with pytest.raises(ScheduleError, match="one must divide the other"):
        plan_format_engine("c", bfp4, weight_codes(bfp4, 2, 24, rng), bfp4, lanes=6)
    with pytest.raises(ScheduleError, match="need a fixed alpha"):
        plan_format_engine("d", parse_format("binary"), BlockCodes(w, np.array([[0x3F00]]), None, 0),
                           parse_format("binary"), lanes=4)  # fmt: skip
    wide = parse_format("bfp<m7,e8,block=4>")
    with pytest.raises(ScheduleError, match="over the 64 a raw output may have"):
        plan_format_engine("e", wide, weight_codes(wide, 2, 8, rng), wide, lanes=4)
    plan = plan_format_engine("f", bfp4, weight_codes(bfp4, 2, 8, rng, (0, 1)), bfp4, lanes=4, a_shared=(0, 1))
    with pytest.raises(ScheduleError, match="outside the planned range"):
        activation_beats(plan, BlockCodes(np.zeros((1, 8), dtype=np.int64), np.array([[2, 0]]), 1, 4))


def test_weight_storage_is_the_formats() -> None:
    plan, _ = case_plan("bfp_m7")
    assert plan.weight_storage_bits() == M * K * 8 + M * (K // 8) * 5
    plan, _ = case_plan("binary_x_fixed")
    assert plan.weight_storage_bits() == M * K + M * 16


# -- C simulation -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def csim_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compiled testbenches, kept between runs (keyed by the sources, so never stale)."""
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("hwgen-fmac-csim")) if cache is not None else tmp_path_factory.mktemp("fmac-csim")


@pytest.mark.gxx
@pytest.mark.parametrize("name", list(CASES))
def test_csim_bit_exact(name: str, tmp_path: Path, csim_root: Path) -> None:
    """Golden (dot_exact) vs C simulation on extreme and random codes, every output bit."""
    plan, a = case_plan(name)
    want = golden(plan, a)
    if plan.requant is None and name not in ("binary_x_fixed", "binary_x_binary", "ternary_x_fixed"):
        assert np.abs(want).max() == plan.acc.max_abs  # the all-max rows reach the accumulator's bound
    if plan.requant is not None:
        assert (want == plan.requant.hi).any() and (want == plan.requant.lo).any()  # saturation both ways
    emit_hls_engine(plan, tmp_path / name)
    r = run_csim(tmp_path / name, activation_beats(plan, a), work_dir=csim_root)
    bad = np.argwhere(r.outputs != want)
    assert not bad.size, f"{name}: {len(bad)} mismatching codes, first at {bad[0].tolist()}: " + (
        f"expected {want[tuple(bad[0])]}, got {r.outputs[tuple(bad[0])]}" if bad.size else ""
    )


# -- synthesis ---------------------------------------------------------------------------------------
#: engines that must not multiply (block log, binary, ternary), and the two fixed-point controls
NO_MULTIPLIER = ("blog_e3", "binary_x_fixed", "binary_x_binary", "ternary_x_fixed")


@pytest.mark.yosys
@pytest.mark.slow
def test_block_log_and_binary_use_no_multiplier(tmp_path: Path) -> None:
    """One Yosys run over the engines: $mul cells after `proc; opt` (what the RTL infers), then
    synth_xilinx DSP48 cells. Block log, binary and ternary: none of either; the fixed-point DSP
    engine: both (the check can fail); its LUT variant: neither."""
    import json
    import os
    import subprocess

    from hwgen.hw.format_engines import emit_rtl_engine
    from hwgen.hw.yosys_synth import _yosys, count_resources

    names = (*NO_MULTIPLIER, "fixed_dsp", "fixed_lut_relu")
    for name in CASES:  # every engine is read (Yosys parses what Verilator accepts), six synthesized
        emit_rtl_engine(case_plan(name, m=2, k=16)[0], tmp_path / name)
    reads = "".join(f"read_verilog -sv {n}/{n}.sv\n" for n in CASES)
    (tmp_path / "check.ys").write_text(
        reads
        + "hierarchy -check\nproc\nopt -fast\nwreduce\ntee -q -o mul.json stat -json\ndesign -save inferred\n"
        + "".join(
            f"design -load inferred\nsynth_xilinx -flatten -abc9 -top {n}\ntee -q -o {n}.json stat -json\n"
            for n in names
        )
    )
    env = {**os.environ, "YOWASP_CACHE_DIR": os.environ.get("YOWASP_CACHE_DIR", str(Path.home() / ".cache/yowasp"))}
    proc = subprocess.run([*_yosys(), "-q", "-s", "check.ys"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def cells(path: str, name: str) -> dict[str, int]:
        mods = json.loads((tmp_path / path).read_text())["modules"]
        return {str(k): int(v) for k, v in mods[f"\\{name}"].get("num_cells_by_type", {}).items()}

    for name in names:
        muls = cells("mul.json", name).get("$mul", 0)
        dsp = count_resources(cells(f"{name}.json", name))["DSP"]
        print(f"{name}: $mul {muls}, DSP {dsp}")
        if name == "fixed_dsp":
            assert muls == LANES and dsp == LANES, (muls, dsp)
        else:
            assert muls == 0 and dsp == 0, (name, muls, dsp)
