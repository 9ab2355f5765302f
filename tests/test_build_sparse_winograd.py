"""`hwgen build` with the sparse engine (pruned LeNet-300-100) and the Winograd engine (rescnn), end to end:
golden model vs C simulation vs RTL simulation, bit for bit. The 500-image sparse run is
benchmarks-sized; here C sim covers 100 images and RTL a few."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hwgen.build import build, load_build
from hwgen.config import config_from_dict
from hwgen.data import load_data
from hwgen.hw.plan import WinogradConvPlan
from hwgen.hw.sparse import SparseDensePlan
from hwgen.sim import exact
from hwgen.verify import run_verify

ROOT = Path(__file__).resolve().parents[1]
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"
TEST_1K = ROOT / "models" / "lenet300" / "mnist_test_1k.npz"
RESCNN = ROOT / "models" / "rescnn" / "rescnn.onnx"
#: the README example: every layer of the pruned MLP on the sparse engine
SPARSE_LAYERS = {
    "node_linear": {"engine": "sparse", "pes": 16},
    "node_linear_1": {"engine": "sparse", "pes": 4},
    "node_linear_2": {"engine": "sparse", "pes": 2, "index_bits": 3},
}


@pytest.fixture(scope="module")
def sparse_build(tmp_path_factory: pytest.TempPathFactory):
    spec = importlib.util.spec_from_file_location("pruned_export", ROOT / "models" / "pruned" / "export.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tmp = tmp_path_factory.mktemp("sparse")
    model = mod.export_onnx(ROOT / "models" / "pruned" / "lenet300_pruned.npz", tmp / "lenet300_pruned.onnx")
    build(model, tmp / "out", config_from_dict({"layers": SPARSE_LAYERS}), calib=CALIB)
    return load_build(tmp / "out")


@pytest.fixture(scope="module")
def winograd_builds(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("winograd")
    build(RESCNN, tmp / "direct", config_from_dict({}), calib=CALIB)
    build(RESCNN, tmp / "wino", config_from_dict({"hardware": {"winograd": "2"}}), calib=CALIB)
    return load_build(tmp / "direct"), load_build(tmp / "wino")


def test_sparse_build_uses_the_sparse_engine(sparse_build) -> None:
    assert [type(p) for p in sparse_build.schedule.layers] == [SparseDensePlan] * 3
    assert [p.pes for p in sparse_build.schedule.layers] == [16, 4, 2]
    layers = sparse_build.report["layers"]
    assert all(e["engine"] == "sparse_dense" and e["sparse"]["density"] < 0.2 for e in layers[:2])
    hls = (sparse_build.out_dir / "hls").rglob("*.h")
    assert any("sparse" in f.read_text() for f in hls)


@pytest.mark.gxx
def test_sparse_csim_bit_exact_on_mnist(sparse_build) -> None:
    sec = run_verify(sparse_build, csim=True, rtl=False, n=100, data=TEST_1K)
    assert sec["csim"]["vectors"] == 100 and sec["csim"]["mismatches"] == 0, sec["csim"]


@pytest.mark.rtl
@pytest.mark.slow
def test_sparse_rtl_bit_exact_on_mnist(sparse_build) -> None:
    sec = run_verify(sparse_build, csim=False, rtl=True, n=4, data=TEST_1K, backpressure="none")
    rtl = sec["rtl"]
    assert rtl["vectors"] == 4 and rtl["mismatches"] == 0, rtl
    # the Schedule holds the worst case (every activation non-zero); MNIST images have zeros
    assert 0 < rtl["latency_cycles"] <= sparse_build.schedule.latency, rtl


def test_winograd_build_golden_equals_the_direct_build(winograd_builds) -> None:
    direct, wino = winograd_builds
    assert sum(isinstance(p, WinogradConvPlan) for p in wino.schedule.layers) == 3
    x = load_data(TEST_1K, direct.graph)[0][:8]
    out_d = exact.run(direct.graph, x)[direct.graph.outputs[0]]
    out_w = exact.run(wino.graph, x)[wino.graph.outputs[0]]
    assert np.array_equal(out_d, out_w)
    rtl_files = " ".join(f.read_text() for f in (wino.out_dir / "rtl").glob("*.sv"))
    assert "winograd F(2x2,3x3)" in rtl_files


@pytest.mark.gxx
def test_winograd_csim_bit_exact(winograd_builds) -> None:
    _direct, wino = winograd_builds
    sec = run_verify(wino, csim=True, rtl=False, n=5, data=TEST_1K)
    assert sec["csim"]["vectors"] == 5 and sec["csim"]["mismatches"] == 0, sec["csim"]


@pytest.mark.rtl
@pytest.mark.slow
def test_winograd_rtl_bit_exact_and_latency(winograd_builds) -> None:
    _direct, wino = winograd_builds
    sec = run_verify(wino, csim=False, rtl=True, n=2, data=TEST_1K, backpressure="none")
    rtl = sec["rtl"]
    assert rtl["vectors"] == 2 and rtl["mismatches"] == 0, rtl
    assert rtl["latency_cycles"] == wino.schedule.latency, rtl
