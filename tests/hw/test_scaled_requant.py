"""Imported (QDQ) scales through `hwgen build`: ScaledInt specs, the build round trip, the RTL emitter's
multiplier requant context. Fast: no simulation (rtl_tests/test_scaled_requant_rtl.py simulates)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwgen.build import build, load_build
from hwgen.config import BuildConfig
from hwgen.errors import FormatError, ScheduleError
from hwgen.frontend import import_onnx
from hwgen.hw.plan import DensePlan, IntType, Requant, Schedule, StreamPort
from hwgen.hw.rtl_emit import _packed_chunks, emit_rtl
from hwgen.hw.schedule import chain_schedule, plan_dense, unify_shift
from hwgen.hw.sparse import replace_layers, sparse_from_dense
from hwgen.numerics import Rounding, parse_format
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_imported
from hwgen.sim import exact
from hwgen.sim.exact import ScaledInt

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "rtl_tests"))  # the shared float32 cases
from float32_requant_cases import f32_expected, f32_plan, f32_vectors

HAVE_GXX = shutil.which(os.environ.get("CXX", "g++")) is not None and importlib.util.find_spec("hls4ml") is not None

S8 = IntType(8, True)


# -- ScaledInt spec strings --------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt",
    [
        ScaledInt.for_range(0, 255, (np.float32(1 / 255),)),
        ScaledInt.for_range(-128, 127, (0.1, 0.2 / 3, 1e-30, 7.0), axis=0, zero_point=128),
        ScaledInt.for_range(-1, 1, (np.float64(np.float32(0.01)) * np.float64(np.float32(0.3)),)),
        ScaledInt(12, True, -3, 3, (2.5,), 1, 0),  # a container wider than the range needs
        ScaledInt(8, False, 0, 3, (0.5, 0.25), 1, 0),
    ],
    ids=["u8_tensor", "s8_channel_zp", "product_of_float32", "wide_signed", "unsigned_axis1"],
)
def test_scaled_spec_round_trips_exactly(fmt: ScaledInt) -> None:
    back = parse_format(fmt.name)
    assert back == fmt and back.scale == fmt.scale  # every scale bit for bit
    assert len(str(fmt)) < 60  # messages count per-channel scales instead of listing them


@pytest.mark.parametrize(
    "spec",
    ["scaled<0..255>", "scaled<x..3,s=1>", "scaled<0..3,s=abc>", "scaled<0..3,s=1,signed>", "scaled<0..3,s=0>"],
)
def test_bad_scaled_spec_is_a_format_error(spec: str) -> None:
    with pytest.raises(FormatError):
        parse_format(spec)


# -- hwgen build of a QDQ model, reloaded as `hwgen verify` does -------------------------------
def _qdq_mlp(path: Path) -> Path:
    """x (u8, zp 128) -> Gemm 6->4 (s8 weights per channel, int32 bias) -> ReLU -> Gemm 4->3 (per tensor)."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [
        n("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        n("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        n("DequantizeLinear", ["w1q", "sw1", "zw1"], ["w1"], axis=0),
        n("DequantizeLinear", ["b1q", "sb1"], ["b1"], axis=0),
        n("Gemm", ["xd", "w1", "b1"], ["h"], transB=1),
        n("Relu", ["h"], ["hr"]),
        n("QuantizeLinear", ["hr", "sh", "zh"], ["hq"]),
        n("DequantizeLinear", ["hq", "sh", "zh"], ["hd"]),
        n("DequantizeLinear", ["w2q", "sw2", "zw2"], ["w2"]),
        n("Gemm", ["hd", "w2"], ["o"], transB=1),
        n("QuantizeLinear", ["o", "sy", "zy"], ["oq"]),
        n("DequantizeLinear", ["oq", "sy", "zy"], ["y"]),
    ]
    sw1 = np.array([0.011, 0.023, 0.0071, 0.019], np.float32)
    inits = {
        "sx": np.array(0.0213, np.float32),
        "zx": np.array(128, np.uint8),
        "w1q": rng.integers(-127, 128, (4, 6)).astype(np.int8),
        "sw1": sw1,
        "zw1": np.zeros(4, np.int8),
        "b1q": rng.integers(-3000, 3000, 4).astype(np.int32),
        "sb1": (np.float32(0.0213) * sw1).astype(np.float32),
        "sh": np.array(0.0377, np.float32),
        "zh": np.array(0, np.uint8),
        "w2q": rng.integers(-127, 128, (3, 4)).astype(np.int8),
        "sw2": np.array(0.0131, np.float32),
        "zw2": np.array(0, np.int8),
        "sy": np.array(0.0519, np.float32),
        "zy": np.array(0, np.int8),
    }
    g = helper.make_graph(
        nodes,
        "qdq_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_build_with_imported_scales_reloads_identically(tmp_path: Path) -> None:
    """The manifest's ScaledInt formats (per channel too) survive `load_build`: same formats, same golden outputs."""
    model = _qdq_mlp(tmp_path / "m.onnx")
    out = tmp_path / "out"
    res = build(model, out, BuildConfig())
    loaded = load_build(out)
    g0 = quantize_imported(canonicalize(import_onnx(model)).graph).graph
    g1 = loaded.graph
    scaled = [v for v in g0.values.values() if isinstance(v.type.format, ScaledInt)]
    assert any(not v.type.format.per_tensor for v in scaled)  # the per-channel weights are there
    for v in g0.values.values():
        assert g1.value(v.name).type.format == v.type.format, v.name
    x = np.random.default_rng(1).integers(-128, 128, (32, 6))
    np.testing.assert_array_equal(exact.run_codes(g1, x)[g1.outputs[0]], exact.run_codes(g0, x)[g0.outputs[0]])
    assert repr(loaded.schedule.layers) == repr(res.schedule.layers)
    assert all(p.requant.scaled for p in loaded.schedule.layers)
    assert any("RQ_M" in f.read_text() for f in (out / "rtl").glob("*.sv"))


# -- the RTL emitter -----------------------------------------------------------------------------
def test_packed_constants_unpack_to_the_values() -> None:
    vals = (0xFFFFFF, 0, 1 << 31, 12345, -7, -(1 << 40))
    bits = 42
    word = int("".join(c.split("'h")[1] for c in _packed_chunks(vals, bits)), 16)
    assert sum(int(c.split("'")[0]) for c in _packed_chunks(vals, bits)) == len(vals) * bits
    got = [(word >> (i * bits)) & ((1 << bits) - 1) for i in range(len(vals))]
    assert got == [v & ((1 << bits) - 1) for v in vals]


def _scaled_plan() -> DensePlan:
    rng = np.random.default_rng(0)
    w = rng.integers(-100, 101, size=(4, 8))
    ms, ns, offs = (0xC00000, 0xFFFFFF, 1, 0x9D89D9), (24, 30, 0, 29), (0, -5, 3, 1 << 20)
    rq = unify_shift(ms, ns, offs, Requant(0, Rounding.HALF_EVEN, -128, 127))
    return plan_dense("fc", "/fc/Gemm", w, np.zeros(4, np.int64), IntType(8, False), S8, rq, pe=2, simd=4)


def _chain(p: DensePlan) -> Schedule:
    ports = (StreamPort("x", "input", p.inp, 8, 0, (8,)), StreamPort("y", "output", p.out, 4, 0, (4,)))
    return chain_schedule("t", "u", [p], *ports)


def test_dense_rtl_carries_the_multiplier_constants(tmp_path: Path) -> None:
    p = _scaled_plan()
    emit_rtl(_chain(p), tmp_path)
    text = "".join(f.read_text() for f in tmp_path.glob("*fc*.sv"))
    m_w = max(p.requant.multiplier).bit_length()
    assert f"localparam int RQ_M_W = {m_w};" in text
    assert _packed_chunks(p.requant.multiplier, m_w)[0] in text


def test_sparse_engine_refuses_a_multiplier_requant(tmp_path: Path) -> None:
    p = _scaled_plan()
    sp = sparse_from_dense(p, pes=2, index_bits=4)
    with pytest.raises(ScheduleError, match="sparse engine"):
        emit_rtl(replace_layers(_chain(p), {0: sp}), tmp_path)


# -- onnxruntime's float32 requantization in the HLS view ------------------------------------------
@pytest.mark.gxx
@pytest.mark.skipif(not HAVE_GXX, reason="needs g++ and hls4ml's ap_types")
@pytest.mark.parametrize(("pe", "simd", "out"), [(1, 1, IntType(16, True)), (8, 1, S8)], ids=["pe1_s16", "pe8_s8"])
def test_hls_float32_requant_worst_cases(tmp_path: Path, pe: int, simd: int, out: IntType) -> None:
    """Golden vs C simulation on the RTL test's worst cases (rtl_tests/float32_requant_cases.py): ties at
    every rounding step, |acc| past 2**24, saturation, a ratio rounding everything to 0."""
    from hwgen.hw.csim import run_csim
    from hwgen.hw.hls_emit import emit_hls

    p = f32_plan(pe, simd, out)
    x = f32_vectors(p)
    want = f32_expected(p, x)
    s = chain_schedule(
        f"hf32_{pe}",
        "scaled",
        [p],
        StreamPort("x", "input", p.inp, p.in_features, 0, (p.in_features,)),
        StreamPort("y", "output", p.out, p.out_features, 0, (p.out_features,)),
    )
    emit_hls(s, tmp_path / "hls", inputs=x[:1], expected=want[:1])
    assert "f_p" in (tmp_path / "hls" / f"{p.name}.h").read_text()  # the integer float32 steps
    got = run_csim(tmp_path / "hls", x, work_dir=tmp_path / "work").outputs
    np.testing.assert_array_equal(got, want)
