"""Lowering picks the sparse engine and the Winograd engine from the config keys.

Sparse: `[layers.NAME] engine` / `pes` / `index_bits` and `[hardware] sparse_threshold`, in the
chain path (MLPs) and the dataflow path (CNNs). Winograd: `[hardware] winograd` / `[layers.NAME]
winograd` rewrite the quantized graph in `compile_model`, and lowering turns WinogradConv into
the F(2x2,3x3) engine folded to the target interval.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from hwgen.build import compile_model
from hwgen.config import config_from_dict
from hwgen.errors import ScheduleError
from hwgen.hw.engine_timing import engine_beats, engine_timing
from hwgen.hw.lower import schedule_graph
from hwgen.hw.plan import ConvPlan, DensePlan, WinogradConvPlan
from hwgen.hw.sparse import SparseDensePlan, sparse_run
from hwgen.passes.winograd import winograd
from hwgen.sim import exact

ROOT = Path(__file__).resolve().parents[2]
PRUNED_NPZ = ROOT / "models" / "pruned" / "lenet300_pruned.npz"
RESCNN = ROOT / "models" / "rescnn" / "rescnn.onnx"
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"
LAYERS = ("node_linear", "node_linear_1", "node_linear_2")  #: the pruned LeNet-300-100's Gemm nodes
#: the rescnn convolutions the Winograd pass can take (3x3, stride 1, group 1)
WINOGRAD_CONVS = ("/stem/stem.0/Conv", "/block_a/conv1/conv1.0/Conv", "/block_a/conv2/conv2.0/Conv")


def _export_onnx():
    spec = importlib.util.spec_from_file_location("pruned_export", ROOT / "models" / "pruned" / "export.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.export_onnx


@pytest.fixture(scope="module")
def pruned_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_onnx()(PRUNED_NPZ, tmp_path_factory.mktemp("pruned") / "lenet300_pruned.onnx")


def _dense_nodes(graph):
    return [n for n in graph.nodes if n.op == "Dense"]


def _compile(model: Path, doc: dict):
    return compile_model(model, config_from_dict(doc), CALIB, lambda _step: None)


def test_layer_engine_sparse_with_pes_and_index_bits(pruned_onnx: Path) -> None:
    layers = {"node_linear": {"engine": "sparse", "pes": 12, "index_bits": 5}, "node_linear_1": {"engine": "sparse"}}
    _g, qg, sched, report = _compile(pruned_onnx, {"layers": layers})
    first, second, third = sched.layers
    assert isinstance(first, SparseDensePlan) and (first.pes, first.index_bits) == (12, 5)
    assert isinstance(second, SparseDensePlan) and second.index_bits == 4
    assert isinstance(third, DensePlan)  # no key and no threshold: the dense engine
    assert sched.is_chain
    # same layer, same weights: the sparse plan holds the dense engine's weight codes
    w, _b = exact.dense_codes(qg, _dense_nodes(qg)[0])
    assert np.array_equal(first.weights, w)
    entry = report["layers"][0]
    assert entry["engine"] == "sparse_dense" and entry["sparse"]["pes"] == 12
    assert entry["sparse"]["density"] == pytest.approx(np.count_nonzero(w) / w.size, abs=1e-6)
    assert entry["sparse"]["density"] < 0.2  # the pruned net
    assert report["hardware"]["multipliers"] == 12 + second.pes + third.pe * third.simd


def test_sparse_threshold_picks_sparse_layers_and_engine_dense_overrides(pruned_onnx: Path) -> None:
    _g, qg, sched, _r = _compile(pruned_onnx, {"hardware": {"sparse_threshold": 0.5}})
    weights = [exact.dense_codes(qg, n)[0] for n in _dense_nodes(qg)]
    densities = [np.count_nonzero(w) / w.size for w in weights]
    for plan, density in zip(sched.layers, densities, strict=True):
        assert isinstance(plan, SparseDensePlan) == (density < 0.5)
    _g, _qg, sched2, _r = _compile(
        pruned_onnx, {"hardware": {"sparse_threshold": 0.99}, "layers": {"node_linear": {"engine": "dense"}}}
    )
    assert isinstance(sched2.layers[0], DensePlan)
    assert isinstance(sched2.layers[1], SparseDensePlan)


def test_sparse_schedule_latency_is_the_worst_case_chain(pruned_onnx: Path) -> None:
    """Schedule latency = the edge the last output beat leaves with every activation non-zero."""
    layers = {name: {"engine": "sparse", "pes": 8} for name in LAYERS}
    _g, _qg, sched, _r = _compile(pruned_onnx, {"layers": layers})
    offers = np.zeros(sched.input.count, dtype=np.int64)
    for p in sched.layers:
        offers = sparse_run(p, np.ones((1, p.in_features)), offers.reshape(1, -1)).out_edges[0]
    assert sched.latency == int(offers[-1])
    assert sched.ii == max(p.ii for p in sched.layers)


def test_sparse_engine_timing_matches_the_cycle_model(pruned_onnx: Path) -> None:
    _g, _qg, sched, _r = _compile(pruned_onnx, {"layers": {"node_linear_1": {"engine": "sparse", "pes": 5}}})
    p = sched.layers[1]
    run = sparse_run(p, np.ones((3, p.in_features), dtype=np.int64))
    t = engine_timing(p)
    assert t.latency == int(run.out_edges[0, -1] - run.in_edges[0, 0])
    assert t.first_out == int(run.out_edges[0, 0] - run.in_edges[0, 0])
    assert t.tail == int(run.out_edges[0, -1] - run.in_edges[0, -1])
    assert t.ii == int(run.out_edges[2, -1] - run.out_edges[1, -1])
    late = np.arange(p.in_features, dtype=np.int64) * 3  # a slow source: one beat every 3 edges
    beats = engine_beats(p, [late])
    assert beats.shape == (p.out_features,) and beats[0] > late[-1]


def test_sparse_dense_layer_in_a_cnn() -> None:
    _g, _qg, sched, report = _compile(RESCNN, {"layers": {"/fc/Gemm": {"engine": "sparse", "pes": 2}}})
    fc = sched.layers[-1]
    assert isinstance(fc, SparseDensePlan) and fc.pes == 2 and not sched.is_chain
    assert fc.inputs and fc.outputs == (sched.output.name,)
    assert report["layers"][-1]["sparse"]["pes"] == 2


def test_sparse_engine_on_a_conv_is_refused_by_name() -> None:
    with pytest.raises(ScheduleError, match=r"/stem/stem\.0/Conv.*engine = \"sparse\".*fully connected"):
        _compile(RESCNN, {"layers": {"/stem/stem.0/Conv": {"engine": "sparse"}}})


@pytest.fixture(scope="module")
def rescnn_direct():
    return _compile(RESCNN, {})


@pytest.fixture(scope="module")
def rescnn_winograd():
    return _compile(RESCNN, {"hardware": {"winograd": "2"}})


def test_winograd_2_lowers_the_3x3_convs(rescnn_direct, rescnn_winograd) -> None:
    _g, _qg, sched, report = rescnn_winograd
    wino = [p for p in sched.layers if isinstance(p, WinogradConvPlan)]
    assert sorted(p.source for p in wino) == sorted(WINOGRAD_CONVS)
    assert all(p.tile == 2 for p in wino)
    direct = {p.source: p for p in rescnn_direct[2].layers if isinstance(p, ConvPlan)}
    for p in wino:  # the same accumulator and requantization as the direct engine's
        d = direct[p.source]
        assert (p.acc, p.out, p.requant) == (d.acc, d.out, d.requant)
        assert np.array_equal(p.weights, d.weights)
    rec = [e for e in report["layers"] if e["onnx_name"] in WINOGRAD_CONVS]
    assert all(e["engine"] == "winograd_conv" and e["winograd"]["tile"] == 2 for e in rec)


def test_winograd_golden_outputs_equal_the_direct_build(rescnn_direct, rescnn_winograd) -> None:
    rng = np.random.default_rng(5)
    qd, qw = rescnn_direct[1], rescnn_winograd[1]
    assert sum(n.op == "WinogradConv" for n in qw.nodes) == len(WINOGRAD_CONVS)
    x = rng.standard_normal((4, *qd.value(qd.inputs[0]).type.shape))
    out_d = exact.run(qd, x)[qd.outputs[0]]
    out_w = exact.run(qw, x)[qw.outputs[0]]
    assert np.array_equal(out_d, out_w)


def test_winograd_folding_meets_the_target_interval(rescnn_winograd) -> None:
    qg = rescnn_winograd[1]
    for target in (3000, 800):
        sched = schedule_graph(qg, config_from_dict({"hardware": {"target_ii": target, "winograd": "2"}}))
        for p in sched.layers:
            if isinstance(p, WinogradConvPlan):
                th, tw = p.tiles
                assert th * tw * (p.channels_out // p.pe) * (p.channels_in // p.simd) <= target, p.name
                # the fewest multipliers: halving PE or SIMD (when possible) would miss the target
                assert p.pe * p.simd == 1 or th * tw * p.nf * p.sf * 2 > target


def test_winograd_per_layer_off_and_tile_4_request(caplog: pytest.LogCaptureFixture) -> None:
    doc = {"hardware": {"winograd": "4"}, "layers": {"/stem/stem.0/Conv": {"winograd": "off"}}}
    with caplog.at_level(logging.WARNING):
        _g, _qg, sched, _r = _compile(RESCNN, doc)
    wino = {p.source for p in sched.layers if isinstance(p, WinogradConvPlan)}
    assert wino == set(WINOGRAD_CONVS) - {"/stem/stem.0/Conv"}
    assert all(p.tile == 2 for p in sched.layers if isinstance(p, WinogradConvPlan))
    assert 'winograd = "4"' in caplog.text and "F(2x2,3x3)" in caplog.text


def test_lowering_refuses_a_tile_4_graph(rescnn_direct) -> None:
    qg4 = winograd(rescnn_direct[1], tile=4).graph
    with pytest.raises(ScheduleError, match="tile=2"):
        schedule_graph(qg4, config_from_dict({}))
