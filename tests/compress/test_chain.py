"""The compression chain on a tiny MLP: stages, checkpoints and resume, exported QDQ ONNX, the command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from hwgen.compress import stages as stage_runners
from hwgen.compress.chain import compress, load_checkpoint
from hwgen.compress.command import add_parser, run
from hwgen.compress.recipe import recipe_from_dict
from hwgen.errors import ConfigError, HwgenError
from hwgen.ir.serialize import load_graph
from hwgen.sim import exact

STAGES = [
    {"kind": "prune", "layers": {"fc1": 0.75, "fc2": 0.5}, "rounds": 2, "epochs": 1, "lr": 3e-3},
    {"kind": "share", "bits": 3, "epochs": 1, "lr": 1e-3},
    {"kind": "quantize", "weight_bits": 8, "act_bits": 8, "epochs": 1, "lr": 1e-4},
    {"kind": "encode", "max_code_length": 8, "index_bits": 3},
]


def _recipe(stages: list[dict], path: str = "tiny.toml"):
    return recipe_from_dict({"recipe": {"name": "tiny", "batch_size": 64}, "stage": stages}, path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 64-24-10 ONNX MLP (nodes fc1, fc2) and digits data labelled by the model itself."""
    torch.set_num_threads(1)
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (24, 64)).astype(np.float32)
    w2 = rng.normal(0, 0.4, (10, 24)).astype(np.float32)
    b1, b2 = rng.normal(0, 0.1, 24).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu1"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(d / "tiny.onnx"))
    x = (load_digits().data / 16.0).astype(np.float32)
    y = (np.maximum(x @ w1.T + b1, 0) @ w2.T + b2).argmax(1)
    np.savez(d / "data.npz", x=x[:1400], y=y[:1400], x_val=x[1400:], y_val=y[1400:])
    return d / "tiny.onnx", d / "data.npz"


def _quiet(msgs: list[str]):
    return msgs.append


@pytest.fixture(scope="module")
def full_run(tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    out = tmp_path_factory.mktemp("run") / "out"
    msgs: list[str] = []
    doc = compress(tiny[0], _recipe(STAGES), tiny[1], out, progress=False, log=_quiet(msgs))
    return out, doc, msgs


def test_stages_run_and_report_storage(full_run) -> None:
    out, doc, _ = full_run
    assert [s["kind"] for s in doc["stages"]] == ["prune", "share", "quantize", "encode"]
    for s in doc["stages"]:
        assert (out / "stages" / s["file"]).is_file()
    layers = {r["layer"]: r for r in doc["layers"]}
    assert layers["fc1"]["density"] == pytest.approx(0.25, abs=1 / 1536)
    assert layers["fc2"]["density"] == pytest.approx(0.5, abs=1 / 240)
    for r in layers.values():
        assert r["share_bits"] == 3 and r["codebook_size"] <= 2**3 + 1
        assert r["params"] == np.prod(r["shape"])
        assert r["total_bits"] == sum(r["storage_bits"].values())
        assert r["value_huffman_bits_per_symbol"] >= r["value_entropy_bits_per_symbol"] - 1e-9
    t = doc["totals"]
    assert t["weights"] == 64 * 24 + 24 * 10 and t["biases"] == 34
    assert t["total_bits"] == sum(r["total_bits"] for r in layers.values())
    assert t["compression_vs_float32"] == pytest.approx(32 * (t["weights"] + t["biases"]) / t["total_bits"])
    state = json.loads((out / "state.json").read_text())
    assert [s["index"] for s in state["stages"]] == [1, 2, 3, 4]
    on_disk = json.loads((out / "compress.json").read_text())
    assert on_disk["totals"]["total_bits"] == t["total_bits"]


def test_checkpoints_hold_the_stage_graph(full_run, tiny) -> None:
    out, doc, _ = full_run
    g = load_checkpoint(out / "stages" / "2_share.npz")
    w = g.const(next(n for n in g.nodes if n.name == "fc1").inputs[1])
    assert len(np.unique(w[w != 0])) <= 8  # shared: at most 2**3 non-zero values
    with np.load(out / "stages" / "4_encode.npz") as f:
        assert "code_lengths/fc1" in f.files and "weights/fc2" in f.files
        lengths = f["code_lengths/fc1"]
    assert lengths.max() <= 8 and np.sum(2.0 ** -lengths[lengths > 0]) <= 1.0  # Kraft: a prefix code
    final = load_graph(out / "ir")
    xv = np.load(tiny[1])["x_val"].astype(np.float64)
    gold = exact.decode_outputs(final, exact.run(final, xv))[final.outputs[0]]
    acc = float((gold.argmax(1) == np.load(tiny[1])["y_val"]).mean())
    assert acc == pytest.approx(doc["final_accuracy"])


def test_rerun_skips_every_finished_stage_and_gives_the_same_result(full_run, tiny) -> None:
    out, doc, _ = full_run
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    msgs: list[str] = []
    again = compress(tiny[0], _recipe(STAGES), tiny[1], out, progress=False, log=_quiet(msgs))
    assert sum("skipped" in m for m in msgs) == 4
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()} == mtimes
    assert again["totals"] == doc["totals"] and again["final_accuracy"] == doc["final_accuracy"]


def test_changed_stage_reruns_it_and_later_ones_only(full_run, tiny, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(full_run[0], out)
    changed = [*STAGES[:3], {**STAGES[3], "index_bits": 2}]
    msgs: list[str] = []
    doc = compress(tiny[0], _recipe(changed), tiny[1], out, progress=False, log=_quiet(msgs))
    assert sum("skipped" in m for m in msgs) == 3
    assert any("stale" in m for m in msgs)
    assert doc["layers"][0]["storage_bits"] != full_run[1]["layers"][0]["storage_bits"]


def test_interrupted_stage_reruns_and_result_matches(full_run, tiny, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    real = stage_runners.RUNNERS["quantize"]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setitem(stage_runners.RUNNERS, "quantize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compress(tiny[0], _recipe(STAGES), tiny[1], out, progress=False, log=lambda m: None)
    state = json.loads((out / "state.json").read_text())
    assert [s["kind"] for s in state["stages"]] == ["prune", "share"]
    assert not (out / "stages" / "3_quantize.npz").exists()
    monkeypatch.setitem(stage_runners.RUNNERS, "quantize", real)
    msgs: list[str] = []
    doc = compress(tiny[0], _recipe(STAGES), tiny[1], out, progress=False, log=_quiet(msgs))
    assert sum("skipped" in m for m in msgs) == 2
    assert doc["totals"] == full_run[1]["totals"]
    assert doc["final_accuracy"] == full_run[1]["final_accuracy"]
    a, b = load_graph(out / "ir"), load_graph(full_run[0] / "ir")
    for name, v in a.values.items():
        if v.is_const:
            np.testing.assert_array_equal(v.const, b.values[name].const)


def test_qdq_onnx_runs_in_onnxruntime_and_matches_the_golden_model(full_run, tiny) -> None:
    ort = pytest.importorskip("onnxruntime")
    out, _, _ = full_run
    model = onnx.load(str(out / "compressed.onnx"))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Gemm"} <= ops
    w_codes = [i for i in model.graph.initializer if i.name.startswith("fc1.weight")]
    assert any(i.data_type == TensorProto.INT8 for i in w_codes)
    xv = np.load(tiny[1])["x_val"].astype(np.float32)
    sess = ort.InferenceSession(str(out / "compressed.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": xv})[0]
    g = load_graph(out / "ir")
    want = exact.decode_outputs(g, exact.run(g, xv.astype(np.float64)))[g.outputs[0]]
    np.testing.assert_array_equal(got, want)


def test_hwgen_build_of_the_export_rebuilds_the_same_quantized_model(full_run, tiny) -> None:
    from hwgen.build import compile_model
    from hwgen.config import load_config

    out, _, _ = full_run
    _, qg, _, _ = compile_model(out / "compressed.onnx", load_config(out / "hwgen.toml"), None, lambda s: None)
    g = load_graph(out / "ir")
    xv = np.load(tiny[1])["x_val"].astype(np.float64)
    np.testing.assert_array_equal(exact.run(qg, xv)[qg.outputs[0]], exact.run(g, xv)[g.outputs[0]])


def test_unknown_layer_in_recipe_names_the_stage(tiny, tmp_path: Path) -> None:
    bad = [{"kind": "prune", "layers": {"fc9": 0.5}, "epochs": 0}]
    with pytest.raises(ConfigError, match=r"bad.toml: \[\[stage\]\] #1 \(prune\): layers \['fc9'\]"):
        compress(tiny[0], _recipe(bad, "bad.toml"), tiny[1], tmp_path / "o", progress=False, log=lambda m: None)


def test_command_runs_and_refuses_bad_use(tiny, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[recipe]\nname = "cmd"\n[[stage]]\nkind = "prune"\nsparsity = 0.5\nepochs = 0\n'
        '[[stage]]\nkind = "quantize"\n[[stage]]\nkind = "encode"\n'
    )
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(
        ["compress", str(tiny[0]), "--recipe", str(recipe), "--data", str(tiny[1]), "-o", str(out)]
    )
    args.no_progress = True
    assert args.func is run and run(args) == 0
    doc = json.loads((out / "compress.json").read_text())
    assert doc["totals"]["density"] == pytest.approx(0.5, abs=0.01)
    assert (out / "compressed.onnx").is_file() and (out / "hwgen.toml").is_file()
    with pytest.raises(HwgenError, match="nothing to resume"):
        run(argparse.Namespace(**{**vars(args), "out": tmp_path / "empty", "resume": True}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(HwgenError, match="not a `hwgen compress` output"):
        run(argparse.Namespace(**{**vars(args), "out": tmp_path / "other"}))
    recipe.write_text('[[stage]]\nkind = "prune"\nsparsity = 2\n')
    with pytest.raises(ConfigError, match=r"r.toml: \[\[stage\]\] #1 key 'sparsity'"):
        run(args)


def test_prune_dynamic_fixed_recipe_on_the_tiny_model(tiny, tmp_path: Path) -> None:
    import dataclasses

    from hwgen.compress.recipe import load_recipe

    ort = pytest.importorskip("onnxruntime")
    shipped = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "prune_dynamic_fixed.toml")
    fast = tuple(
        dataclasses.replace(s, epochs=1, **({"rounds": 2, "final_epochs": 1} if s.kind == "prune" else {}))
        for s in shipped.stages
    )
    doc = compress(tiny[0], dataclasses.replace(shipped, stages=fast), tiny[1], tmp_path, progress=False, log=print)
    assert doc["totals"]["density"] == pytest.approx(0.16, abs=0.002)  # one global threshold
    assert {r["weight_bits"] for r in doc["layers"]} == {6}
    assert all(r["share_bits"] is None for r in doc["layers"])
    xv = np.load(tiny[1])["x_val"].astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "compressed.onnx"), providers=["CPUExecutionProvider"])
    g = load_graph(tmp_path / "ir")
    want = exact.decode_outputs(g, exact.run(g, xv.astype(np.float64)))[g.outputs[0]]
    np.testing.assert_array_equal(sess.run(None, {"x": xv})[0], want)
