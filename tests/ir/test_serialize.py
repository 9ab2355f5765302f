"""graph.json + constants.npz: lossless round trip, deterministic bytes, clear load errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_mlp_onnx, quant_config, random_input

from hwgen.errors import ModelFileError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.ir.serialize import load_graph, save_graph
from hwgen.numerics import FixedPoint
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import exact


def quantized_mlp(seed: int = 0) -> tuple[Graph, np.ndarray]:
    g = canonicalize(import_onnx(make_mlp_onnx([6, 5, 4, 3], seed))).graph
    x = random_input((6,), seed, batch=32)
    return quantize_fixed(g, x, quant_config(weight_bits=6, act_bits=7)).graph, x


def hand_graph() -> Graph:
    """Attributes of every JSON-awkward kind: tuples, infinities, numpy scalars, strings."""
    g = Graph("hand", meta={"source": "x.onnx", "opset": 13})
    g.add_value(Value("x", TensorType((2, 3), FixedPoint(8, 4))))
    g.add_value(Value("r", TensorType((3, 2), FixedPoint(8, 4))))
    g.add_value(Value("W", TensorType((4, 2), FixedPoint(5, -2, signed=False)), np.arange(8.0).reshape(4, 2) * 4))
    g.add_value(Value("y", TensorType((3, 4))))
    g.add_value(Value("z", TensorType((3, 4))))
    g.inputs, g.outputs = ["x"], ["z"]
    g.nodes = [
        Node("t", "Transpose", ["x"], ["r"], {"perm": (1, 0)}, "/t", "Transpose"),
        Node("d", "Dense", ["r", "W"], ["y"], {"activation": "clip", "clip_lo": 0.0, "clip_hi": float("inf")}),
        Node("c", "Clip", ["y"], ["z"], {"min": float("-inf"), "max": np.float32(2.5), "note": "ünïcode"}),
    ]
    return g


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert (a.name, a.inputs, a.outputs, a.meta) == (b.name, b.inputs, b.outputs, b.meta)
    assert list(a.values) == list(b.values)
    for k, va in a.values.items():
        vb = b.values[k]
        assert va.type == vb.type, k
        assert va.is_const == vb.is_const, k
        if va.is_const:
            assert va.const.dtype == vb.const.dtype and va.const.shape == vb.const.shape
            np.testing.assert_array_equal(va.const, vb.const)
    assert len(a.nodes) == len(b.nodes)
    for na, nb in zip(a.nodes, b.nodes, strict=True):
        assert (na.name, na.op, na.inputs, na.outputs, na.onnx_name, na.onnx_op) == (
            nb.name,
            nb.op,
            nb.inputs,
            nb.outputs,
            nb.onnx_name,
            nb.onnx_op,
        )
        assert na.attrs == nb.attrs, na.name


def test_round_trip_of_awkward_attributes(tmp_path: Path) -> None:
    g = hand_graph()
    save_graph(g, tmp_path)
    back = load_graph(tmp_path)
    assert_same_graph(g, back)
    assert back.node("d").attrs["clip_hi"] == float("inf")
    assert isinstance(back.node("t").attrs["perm"], tuple)


def test_round_trip_of_a_quantized_graph_keeps_the_golden_model(tmp_path: Path) -> None:
    g, x = quantized_mlp()
    save_graph(g, tmp_path / "q")
    back = load_graph(tmp_path / "q")
    assert_same_graph(g, back)
    a, b = exact.run(g, x), exact.run(back, x)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_saving_twice_gives_identical_bytes(tmp_path: Path) -> None:
    g, _ = quantized_mlp(1)
    save_graph(g, tmp_path / "a")
    save_graph(load_graph(tmp_path / "a"), tmp_path / "b")  # a reloaded graph saves the same bytes too
    save_graph(g, tmp_path / "c")
    for name in ("graph.json", "constants.npz"):
        first = (tmp_path / "a" / name).read_bytes()
        assert (tmp_path / "b" / name).read_bytes() == first, name
        assert (tmp_path / "c" / name).read_bytes() == first, name
    doc = json.loads((tmp_path / "a" / "graph.json").read_text())
    assert doc["version"] == 1


def test_saving_at_another_time_gives_identical_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No timestamp reaches the files (zip members are dated 1980-01-01 whatever the clock says)."""
    g, _ = quantized_mlp(2)
    monkeypatch.setattr(zipfile.time, "time", lambda: 1_700_000_000.0)
    save_graph(g, tmp_path / "a")
    monkeypatch.setattr(zipfile.time, "time", lambda: 1_700_000_000.0 + 3 * 3600)
    save_graph(g, tmp_path / "b")
    assert (tmp_path / "a" / "constants.npz").read_bytes() == (tmp_path / "b" / "constants.npz").read_bytes()


# -- load errors -----------------------------------------------------------------------------
def saved(tmp_path: Path) -> Path:
    d = tmp_path / "saved"
    save_graph(hand_graph(), d)
    return d


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"nowhere: not a saved hwgen graph"):
        load_graph(tmp_path / "nowhere")


def test_load_missing_constants(tmp_path: Path) -> None:
    d = saved(tmp_path)
    (d / "constants.npz").unlink()
    with pytest.raises(ModelFileError, match="not a saved hwgen graph"):
        load_graph(d)


def test_load_corrupt_json(tmp_path: Path) -> None:
    d = saved(tmp_path)
    text = (d / "graph.json").read_text()
    (d / "graph.json").write_text(text[: len(text) // 2])
    with pytest.raises(ModelFileError, match="not a saved hwgen graph"):
        load_graph(d)


def test_load_wrong_version(tmp_path: Path) -> None:
    d = saved(tmp_path)
    doc = json.loads((d / "graph.json").read_text())
    doc["version"] = 99
    (d / "graph.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="graph format version 99 is not 1"):
        load_graph(d)


def test_load_checks_the_graph(tmp_path: Path) -> None:
    from hwgen.errors import GraphError

    d = saved(tmp_path)
    doc = json.loads((d / "graph.json").read_text())
    doc["nodes"].reverse()
    (d / "graph.json").write_text(json.dumps(doc))
    with pytest.raises(GraphError, match="used before it is defined"):
        load_graph(d)


def test_load_truncated_constants(tmp_path: Path) -> None:
    d = saved(tmp_path)
    data = (d / "constants.npz").read_bytes()
    (d / "constants.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a saved hwgen graph"):
        load_graph(d)


@pytest.mark.parametrize("doc", ["[1, 2]", '{"version": 1}'])
def test_load_malformed_document(tmp_path: Path, doc: str) -> None:
    d = saved(tmp_path)
    (d / "graph.json").write_text(doc)
    with pytest.raises(ModelFileError):
        load_graph(d)


def test_graph_json_is_sorted_and_ends_with_newline(tmp_path: Path) -> None:
    d = saved(tmp_path)
    text = (d / "graph.json").read_text()
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
