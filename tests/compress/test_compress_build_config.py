"""`hwgen compress` writes the build config of its output: pruned fully connected layers on the
sparse engine with Huffman-coded weights (the encode stage's code-length limit and index width),
the other layers left to the defaults; building its QDQ model needs no calibration."""

from __future__ import annotations

import importlib.util
import logging
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_mlp_onnx, quant_config, random_input

from hwgen.build import compile_model
from hwgen.compress.chain import _build_toml
from hwgen.compress.onnx_export import export_qdq
from hwgen.compress.recipe import load_recipe, recipe_from_dict
from hwgen.config import config_from_dict
from hwgen.errors import ScheduleError
from hwgen.frontend import import_onnx
from hwgen.hw.sparse import SparseDensePlan
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed

ROOT = Path(__file__).resolve().parents[2]
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"


def test_pruned_layers_get_the_huffman_sparse_engine(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("pruned_export", ROOT / "models" / "pruned" / "export.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.export_onnx(ROOT / "models" / "pruned" / "lenet300_pruned.npz", tmp_path / "m.onnx")
    g = canonicalize(import_onnx(model)).graph
    last = [n for n in g.nodes if n.op == "Dense"][-1]
    w = g.const(last.inputs[1])
    g.values[last.inputs[1]].const = np.where(w == 0, 1e-3, w)  # the last layer dense again
    text = _build_toml(load_recipe(ROOT / "recipes" / "deep_compression_lenet300.toml"), g)
    doc = tomllib.loads(text)
    assert sorted(doc["layers"]) == ["node_linear", "node_linear_1"]
    # the recipe's encode stage: max_code_length = 16, index_bits = 6
    want = {"engine": "sparse", "weight_coding": "huffman", "max_code_length": 16, "index_bits": 6}
    assert all(v == want for v in doc["layers"].values())
    _g, _qg, sched, _r = compile_model(model, config_from_dict(doc), CALIB, lambda _s: None)
    kinds = [(type(p).__name__, getattr(p, "weight_coding", None)) for p in sched.layers]
    assert kinds[:2] == [(SparseDensePlan.__name__, "huffman")] * 2 and kinds[2][0] == "DensePlan"
    assert all(p.index_bits == 6 and p.huffman.window <= 16 for p in sched.layers[:2])


def _pruned_graph():
    g = canonicalize(import_onnx(make_mlp_onnx([16, 12, 6], seed=3))).graph
    first = next(n for n in g.nodes if n.op == "Dense")
    w = g.const(first.inputs[1])
    g.values[first.inputs[1]].const = np.where(np.abs(w) < 0.1, 0.0, w)
    return g, first.name


@pytest.mark.parametrize(("limit", "index_bits"), [(7, 3), (12, 2)])
def test_recipe_limits_reach_the_build(tmp_path: Path, limit: int, index_bits: int) -> None:
    g, name = _pruned_graph()
    stages = [{"kind": "encode", "max_code_length": limit, "index_bits": index_bits}]
    doc = tomllib.loads(_build_toml(recipe_from_dict({"recipe": {"name": "t"}, "stage": stages}, "t.toml"), g))
    assert doc["layers"] == {
        name: {"engine": "sparse", "weight_coding": "huffman", "max_code_length": limit, "index_bits": index_bits}
    }
    model = tmp_path / "m.onnx"
    model.write_bytes(make_mlp_onnx([16, 12, 6], seed=3).SerializeToString())
    cfg = config_from_dict({"layers": {"fc0": doc["layers"][name]}})
    _g, _qg, sched, _r = compile_model(model, cfg, None, lambda _s: None)
    sp = sched.layers[0]
    assert isinstance(sp, SparseDensePlan) and sp.index_bits == index_bits
    assert sp.huffman is not None and int(sp.huffman.code.lengths.max()) <= limit
    unlimited = compile_model(
        model,
        config_from_dict({"layers": {"fc0": {"engine": "sparse", "weight_coding": "huffman"}}}),
        None,
        lambda _s: None,
    )[2]
    free = unlimited.layers[0].huffman.window  # the default limit (16) does not bind on 94 symbols
    assert sp.huffman.window == min(limit, free)
    if limit == 7:  # this case exercises the limit: the code gets longer in total
        assert free > limit and sp.huffman.payload_bits > unlimited.layers[0].huffman.payload_bits


def test_without_an_encode_stage_the_weights_stay_plain() -> None:
    g, name = _pruned_graph()
    stages = [{"kind": "prune", "layers": {name: 0.5}}]
    doc = tomllib.loads(_build_toml(recipe_from_dict({"recipe": {"name": "t"}, "stage": stages}, "t.toml"), g))
    assert doc["layers"] == {name: {"engine": "sparse"}}


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"engine": "sparse", "max_code_length": 8}, r"fc0.*max_code_length = 8 limits Huffman-coded weights.*plain"),
        ({"max_code_length": 8}, r"fc0.*max_code_length = 8 needs the sparse engine"),
    ],
)
def test_max_code_length_without_huffman_is_refused(tmp_path: Path, layer: dict, message: str) -> None:
    """A code-length limit that would do nothing (plain weights, or the dense engine) is a mistake."""
    model = tmp_path / "m.onnx"
    model.write_bytes(make_mlp_onnx([16, 12, 6], seed=3).SerializeToString())
    with pytest.raises(ScheduleError, match=message):
        compile_model(model, config_from_dict({"layers": {"fc0": layer}}), None, lambda _s: None)


def test_qdq_build_does_not_claim_random_calibration(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A QDQ model keeps its own quantization: no "calibrating on random samples" warning (a float model gets it)."""
    float_model = tmp_path / "float.onnx"
    float_model.write_bytes(make_mlp_onnx([16, 12, 6], seed=3).SerializeToString())
    g = canonicalize(import_onnx(float_model)).graph
    qdq = export_qdq(quantize_fixed(g, random_input((16,), 3, 64), quant_config()).graph, tmp_path / "q.onnx")
    with caplog.at_level(logging.WARNING, logger="hwgen.build"):
        qg = compile_model(qdq, config_from_dict({}), None, lambda _s: None)[1]
    assert qg.meta.get("imported_quant")  # the model's own quantization was kept
    assert "random normal samples" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="hwgen.build"):
        compile_model(float_model, config_from_dict({}), None, lambda _s: None)
    assert "no --calib data: calibrating on 256 random normal samples" in caplog.text
