"""Resource estimate and device-aware scheduling: block RAM packing, fit search, refusal messages."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
from conftest import make_mlp_onnx, quant_config, random_input

from hwgen.config import BuildConfig, HardwareConfig, LayerConfig
from hwgen.errors import ConfigError, ScheduleError
from hwgen.hw import devices as devmod
from hwgen.hw.devices import get_device
from hwgen.hw.lower import schedule_graph
from hwgen.hw.plan import DensePlan
from hwgen.hw.resources import (
    Memory,
    bram_blocks,
    engine_resources,
    estimate,
    estimate_report,
    in_bram,
)
from hwgen.hw.schedule import valid_foldings
from hwgen.hw.timing import chain_latency, dense_timing

ECP5 = get_device("lfe5u-85f")


def quantized_chain(layers: list[int], seed: int):
    from hwgen.frontend import import_onnx
    from hwgen.passes.canonicalize import canonicalize
    from hwgen.passes.quantize import quantize_fixed

    g = canonicalize(import_onnx(make_mlp_onnx(layers, seed))).graph
    return quantize_fixed(g, random_input((layers[0],), seed, 32), quant_config()).graph


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch):
    """Register a made-up ECP5-like device with the given DSP / BRAM counts under 'tiny'."""

    def make(dsp: int, bram: int, lut: int = 100_000):
        dev = dataclasses.replace(ECP5, name="tiny", part="TINY-1", dsp=dsp, bram=bram, lut=lut, ff=lut)
        monkeypatch.setitem(devmod.DEVICES, "tiny", dev)
        return dev

    return make


# -- block RAM packing -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("depth", "width", "blocks"),
    [
        (2048, 8, 1),  # 2048x9: one 8-bit lane per block
        (2048, 9, 1),
        (2049, 9, 2),  # one word too deep: a second block in depth
        (512, 72, 2),  # nine 8-bit weights fill two 512x36 blocks exactly
        (1000, 160, 9),  # 1024x18: ceil(160/18) = 9 (2048x9 would take 18, 512x36 10)
        (16384, 1, 1),
        (20000, 160, 180),  # LeNet-5's fc1 at 20 multipliers: 20 x 9 (1024x18)
    ],
)
def test_bram_blocks_take_the_best_dp16kd_shape(depth: int, width: int, blocks: int) -> None:
    assert bram_blocks(depth, width, ECP5) == blocks
    # never fewer than the raw bits allow, whatever the shape
    assert blocks >= math.ceil(depth * width / ECP5.bram_bits)


def test_small_memories_stay_in_logic_like_yosys() -> None:
    # memory_libmap: block RAM (cost 128) only when bits/16 exceeds 128 per block
    assert not in_bram(Memory("biases", 16, 8), ECP5)
    assert not in_bram(Memory("t", 256, 8), ECP5)  # 2048 bits: a tie stays in logic
    assert in_bram(Memory("t", 257, 8), ECP5)
    assert in_bram(Memory("weights", 2048, 8), ECP5)


def test_dense_engine_memories_follow_its_folding() -> None:
    g = quantized_chain([12, 10, 4], 0)
    s = schedule_graph(g, BuildConfig(layers={"fc0": LayerConfig(reuse=6)}))
    p = s.layers[0]
    assert isinstance(p, DensePlan)
    r = engine_resources(p)
    assert r.multipliers == p.pe * p.simd == 120 // 6
    by = {m.what: m for m in r.memories}
    w = by["weights"]
    assert w.depth == 6 and w.width * w.copies == p.pe * p.simd * p.w.bits  # banks of whole neurons
    assert w.bits == 120 * p.w.bits  # every weight once
    assert w.copies == 1 or w.width >= 72  # a bank fills two 36-bit block RAM columns
    assert (by["input buffer"].depth, by["input buffer"].copies) == (2 * (12 // p.simd), p.simd)
    doc = estimate_report(s, ECP5)
    assert doc["totals"]["DSP"] == sum(q.pe * q.simd for q in s.layers)
    assert doc["fits"] is True and doc["capacity"]["DSP"] == 156


# -- fitting a device --------------------------------------------------------------------------
def brute_force_best(s, dev) -> tuple[int, int]:
    """(II, latency) of the fastest folding combination that fits dev, by enumeration."""
    layers = list(s.layers)
    best = None
    for combo in itertools.product(*(valid_foldings(p.in_features, p.out_features) for p in layers)):
        plans = [dataclasses.replace(p, pe=pe, simd=simd) for p, (_r, pe, simd) in zip(layers, combo, strict=True)]
        sched = dataclasses.replace(s, layers=tuple(plans))
        if estimate(sched).shortfalls(dev):
            continue
        ii = max(dense_timing(p.in_features, p.out_features, p.pe, p.simd).ii for p in plans)
        lat = chain_latency([(p.in_features, p.out_features, p.pe, p.simd) for p in plans])
        best = min(best or (ii, lat), (ii, lat))
    assert best is not None
    return best


@pytest.mark.parametrize("dsp", [2, 5, 9, 30])
def test_fit_reaches_the_best_ii_a_brute_force_finds(tiny, dsp: int) -> None:
    dev = tiny(dsp=dsp, bram=10)
    g = quantized_chain([12, 10, 4], 3)
    s = schedule_graph(g, BuildConfig(hardware=HardwareConfig(device="tiny")))
    assert not estimate(s).shortfalls(dev)
    assert sum(p.pe * p.simd for p in s.layers) <= dsp
    best_ii, best_lat = brute_force_best(s, dev)
    assert s.ii == best_ii
    assert s.latency <= best_lat * 1.25  # the greedy latency phase is near the optimum
    assert any("tiny" in n for n in s.notes)


def test_explicit_reuse_is_kept_on_a_device(tiny) -> None:
    tiny(dsp=40, bram=10)
    cfg = BuildConfig(hardware=HardwareConfig(device="tiny"), layers={"fc0": LayerConfig(reuse=60)})
    s = schedule_graph(quantized_chain([12, 10, 4], 0), cfg)
    assert s.layers[0].reuse == 60 and s.layers[0].multipliers == 2


def test_a_model_too_big_is_refused_naming_device_resource_and_shortfall(tiny) -> None:
    tiny(dsp=1, bram=10)  # two layers need at least one multiplier each
    with pytest.raises(ScheduleError) as e:
        schedule_graph(quantized_chain([12, 10, 4], 0), BuildConfig(hardware=HardwareConfig(device="tiny")))
    msg = str(e.value)
    assert "tiny" in msg and "needs 2 MULT18X18D multipliers, tiny has 1: 1 short" in msg
    assert "What to do" in msg and "larger device (lfe5u-12f" in msg


def test_block_ram_shortfall_is_counted_in_blocks(tiny) -> None:
    tiny(dsp=100, bram=0)
    g = quantized_chain([256, 64, 4], 0)  # 16k weights: block RAM at any folding
    with pytest.raises(ScheduleError, match=r"needs \d+ DP16KD block RAMs, tiny has 0: \d+ short"):
        schedule_graph(g, BuildConfig(hardware=HardwareConfig(device="tiny")))


def test_lenet300_fits_the_85f_which_its_default_folding_does_not(lenet_model, mnist_calib) -> None:
    from hwgen.frontend import import_onnx
    from hwgen.passes.canonicalize import canonicalize
    from hwgen.passes.quantize import quantize_fixed

    q = quantize_fixed(canonicalize(import_onnx(lenet_model)).graph, mnist_calib, quant_config()).graph
    default = schedule_graph(q, quant_config())
    assert estimate(default).shortfalls(ECP5)[0][0] == "DSP"  # 342 multipliers on 156 MULT18X18D
    s = schedule_graph(q, BuildConfig(hardware=HardwareConfig(device="lfe5u-85f")))
    totals = estimate(s).totals(ECP5)
    assert totals["DSP"] <= ECP5.dsp and totals["BRAM"] <= ECP5.bram
    # fc1 alone has 235,200 products: with at most 156 multipliers no II below 235200/156 exists
    assert s.ii >= 235_200 / ECP5.dsp
    assert s.ii < 2 * 235_200 / ECP5.dsp


def test_unknown_device_in_config_is_a_config_error() -> None:
    from hwgen.config import config_from_dict

    with pytest.raises(ConfigError, match="unknown device 'lfe5u-99f'"):
        config_from_dict({"hardware": {"device": "lfe5u-99f"}})


def test_a_plan_type_without_a_model_still_counts_its_multipliers_and_weights() -> None:
    import numpy as np

    from hwgen.hw.plan import IntType

    @dataclasses.dataclass(frozen=True)
    class NewPlan:
        name: str = "n"
        engine: str = "new"
        pe: int = 4
        simd: int = 2
        w: IntType = dataclasses.field(default_factory=lambda: IntType(8, True))
        weights: np.ndarray = dataclasses.field(default_factory=lambda: np.ones((16, 10)))

    r = engine_resources(NewPlan())  # type: ignore[arg-type]
    assert r.multipliers == 8
    assert sum(m.bits for m in r.memories) >= 160 * 8


@pytest.mark.parametrize(("pe", "simd", "bits", "per_bank"), [(60, 2, 8, 5), (2, 15, 8, 1), (1, 5, 8, 1), (8, 1, 5, 8)])
def test_weight_banks_match_the_rtl(tmp_path, pe: int, simd: int, bits: int, per_bank: int) -> None:
    """The estimator's ROM banks are the ones templates/rtl/dense.sv.j2 declares."""
    import re

    import numpy as np

    from hwgen.hw.plan import IntType, Requant, StreamPort
    from hwgen.hw.resources import weight_banks
    from hwgen.hw.rtl_emit import emit_rtl
    from hwgen.hw.schedule import chain_schedule, plan_dense
    from hwgen.numerics import Rounding

    k, m = 4 * simd, 2 * pe
    lim = 1 << (bits - 1)
    w = np.random.default_rng(0).integers(-lim, lim, (m, k))
    u8 = IntType(8, False)
    plan = plan_dense(
        "fc", "fc", w, np.zeros(m, dtype=np.int64), u8, u8, Requant(4, Rounding.FLOOR, 0, 255), pe=pe, simd=simd
    )
    assert plan.w.bits == bits
    s = chain_schedule("t", "t", [plan], StreamPort("x", "x", u8, k, 0, (k,)), StreamPort("y", "y", u8, m, 0, (m,)))
    emit_rtl(s, tmp_path)
    text = next(f for f in tmp_path.glob("*.sv") if f.name.endswith("_fc.sv")).read_text()
    banks = int(re.search(r"localparam int BANKS\s+= (\d+);", text).group(1))
    assert weight_banks(pe, simd, bits) == (per_bank, banks) == (per_bank, pe // per_bank)
    assert len(re.findall(r"logic \[BANK_W-1:0\] w_rom\d* \[", text)) == banks
