"""The command line: exit codes, one-line errors, atomic and deterministic output."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "lenet300" / "lenet300.onnx"
CALIB = ROOT / "models" / "lenet300" / "mnist_calib.npz"


def hwgen(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hwgen", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def small_mlp(path: Path, names: dict[str, str] | None = None, extra_op: str | None = None) -> Path:
    """A 2-layer MLP ONNX file; `names` renames nodes/tensors (hostile-name tests)."""
    n = {"in": "x", "h": "h", "r": "r", "out": "y", "fc1": "fc1", "relu": "relu", "fc2": "fc2"} | (names or {})
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (16, 12)).astype(np.float32), n["fc1"] + ".w")
    b1 = numpy_helper.from_array(rng.normal(0, 0.1, (16,)).astype(np.float32), n["fc1"] + ".b")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (4, 16)).astype(np.float32), n["fc2"] + ".w")
    nodes = [
        helper.make_node("Gemm", [n["in"], w1.name, b1.name], [n["h"]], name=n["fc1"], transB=1),
        helper.make_node("Relu", [n["h"]], [n["r"]], name=n["relu"]),
        helper.make_node("Gemm", [n["r"], w2.name], [n["out"]], name=n["fc2"], transB=1),
    ]
    out_name = n["out"]
    if extra_op:
        nodes.append(helper.make_node(extra_op, [n["out"]], ["z"], name="odd_node", axis=1))
        out_name = "z"
    g = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info(n["in"], TensorProto.FLOAT, ["N", 12])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", 4])],
        [w1, b1, w2],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_missing_model_is_one_line_exit_2(tmp_path: Path) -> None:
    r = hwgen("build", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "nope.onnx" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cut", ["half", "garbage", "empty"])
def test_corrupt_model_is_one_line_exit_2(tmp_path: Path, cut: str) -> None:
    bad = tmp_path / "bad.onnx"
    data = MODEL.read_bytes()
    bad.write_bytes({"half": data[: len(data) // 2], "garbage": bytes(range(256)) * 8, "empty": b""}[cut])
    r = hwgen("build", str(bad), "-o", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "bad.onnx" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
    assert "Traceback" in hwgen("--debug", "build", str(bad), "-o", str(tmp_path / "o2")).stderr


def test_unsupported_op_names_node_op_opset(tmp_path: Path) -> None:
    model = small_mlp(tmp_path / "m.onnx", extra_op="Hardmax")
    r = hwgen("build", str(model), "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    msg = r.stderr
    assert "odd_node" in msg and "Hardmax" in msg and "opset 17" in msg and "Gemm" in msg  # lists supported ops
    assert not (tmp_path / "out").exists()


def test_bad_calibration_shape_leaves_no_output(tmp_path: Path) -> None:
    model = small_mlp(tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.zeros((5, 13), dtype=np.float32))
    r = hwgen("build", str(model), "-o", str(tmp_path / "out"), "--calib", str(tmp_path / "calib.npz"))
    assert r.returncode == 2 and "calib.npz" in r.stderr and "[N, 12]" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz", "m.onnx"]


def test_existing_output_needs_force(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    r = hwgen("build", str(small_mlp(tmp_path / "m.onnx")), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "--force" in r.stderr


def test_bad_config_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[quantize]\nweight_bitz = 4\n")
    r = hwgen("build", str(small_mlp(tmp_path / "m.onnx")), "-o", str(tmp_path / "out"), "--config", str(cfg))
    assert r.returncode == 2 and "weight_bitz" in r.stderr and "c.toml" in r.stderr


def test_build_is_deterministic_and_complete(tmp_path: Path) -> None:
    for d in ("a", "b"):
        r = hwgen("build", str(MODEL), "-o", str(tmp_path / d), "--calib", str(CALIB))
        assert r.returncode == 0, r.stderr
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert a == b
    for needed in ("report.json", "report.html", "build.json", "ir/graph.json", "hls/run_hls.tcl", "rtl/filelist.f"):
        assert needed in a, sorted(a)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_verify_requires_a_build_dir(tmp_path: Path) -> None:
    r = hwgen("verify", str(tmp_path))
    assert r.returncode == 2 and "build.json" in r.stderr


def test_build_for_a_device_fits_it_and_records_the_estimate(tmp_path: Path) -> None:
    import json

    r = hwgen("build", str(MODEL), "-o", str(tmp_path / "o"), "--calib", str(CALIB), "--device", "lfe5u-85f")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    est = rep["hardware"]["estimate"]
    assert est["device"] == "lfe5u-85f" and est["fits"] is True
    assert est["totals"]["DSP"] == rep["hardware"]["multipliers"] <= 156  # ECP5-85F: 156 MULT18X18D
    assert est["totals"]["BRAM"] <= 208
    assert sum(lay["resources"]["multipliers"] for lay in rep["layers"]) == est["totals"]["DSP"]
    assert json.loads((tmp_path / "o" / "build.json").read_text())["config"]["hardware"]["device"] == "lfe5u-85f"


def test_build_for_a_xilinx_device_targets_its_part(tmp_path: Path) -> None:
    r = hwgen("build", str(small_mlp(tmp_path / "m.onnx")), "-o", str(tmp_path / "o"), "--device", "xc7a35t")
    assert r.returncode == 0, r.stderr
    assert "xc7a35tcpg236-1" in (tmp_path / "o" / "vivado" / "build.tcl").read_text()


def test_build_too_big_for_the_device_is_refused_before_writing(tmp_path: Path) -> None:
    r = hwgen("build", str(MODEL), "-o", str(tmp_path / "o"), "--calib", str(CALIB), "--device", "lfe5u-12f")
    assert r.returncode == 2
    line = r.stderr.replace("\n", " ")
    assert "lfe5u-12f" in line and "DP16KD block RAMs, lfe5u-12f has 32:" in line and "short" in line
    assert "What to do" in line
    assert not (tmp_path / "o").exists()


def test_format_layer_without_hardware_lowering_is_refused_by_name(tmp_path: Path) -> None:
    """Non-fixed formats run in the golden model only: `build` names the layer and its formats, writes nothing."""
    cfg = tmp_path / "fmt.toml"
    cfg.write_text('[layers.fc2]\nweight_format = "minifloat<e4m3,bias=7,denorm>"\n')
    out = tmp_path / "out"
    r = hwgen("build", str(small_mlp(tmp_path / "m.onnx")), "-o", str(out), "--config", str(cfg))
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert "ScheduleError" in text and "'fc2'" in text and "minifloat<e4m3" in text
    assert "no hardware lowering" in text
    assert not out.exists()
