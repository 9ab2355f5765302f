"""hw.hls_emit: the text of the HLS project (files, ROM layout, names, tcl), no compiler needed.

Bit-exactness is checked by C simulation in test_csim.py; here: what the files say.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hwgen import __version__
from hwgen.errors import ConfigError, DataError, ScheduleError
from hwgen.hw.hls_emit import c_int, emit_hls
from hwgen.hw.names import legalize
from hwgen.hw.plan import DensePlan, IntType, Requant, Schedule, StreamPort
from hwgen.hw.schedule import chain_schedule, plan_dense
from hwgen.numerics import Rounding

U8, S8 = IntType(8, False), IntType(8, True)

#: names a hostile or careless ONNX file may carry (node names, tensor names, the graph name)
HOSTILE_NAMES = ['a"; system("x"); //', "module", "1x", "Überschicht-層", "n" * 300]
HOSTILE_SOURCES = ['/fc*/ system("x"); /*', 'line1\nline2 system("x")', "back\\slash\\", "ünï\tcödé\r\x00"]


def layer(
    name: str,
    k: int,
    m: int,
    *,
    pe: int,
    simd: int,
    seed: int = 0,
    source: str | None = None,
    inp: IntType = U8,
    out: IntType = U8,
    rounding: Rounding = Rounding.HALF_EVEN,
    shift: int = 8,
) -> DensePlan:
    """A dense plan with seeded random s8 weights and small biases."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, size=(m, k))
    b = rng.integers(-500, 500, size=m)
    rq = Requant(shift, rounding, out.lo, out.hi)
    return plan_dense(name, source or f"/{name}/Gemm", w, b, inp, out, rq, pe=pe, simd=simd)


def two_layers(top: str = "mlp", model: str = "tiny", names: tuple[str, str] = ("fc1", "fc2")) -> Schedule:
    """12 -> 6 -> 4 with non-square folds (PE != SIMD), unsigned in, signed out."""
    l1 = layer(names[0], 12, 6, pe=3, simd=4, seed=1, rounding=Rounding.FLOOR)
    l2 = layer(names[1], 6, 4, pe=2, simd=3, seed=2, inp=U8, out=S8, rounding=Rounding.HALF_UP, shift=-2)
    return chain_schedule(top, model, [l1, l2], StreamPort("x", "input", U8, 12, 8, (12,)), port_out(4))


def port_out(n: int, elem: IntType = S8) -> StreamPort:
    return StreamPort("y", "logits", elem, n, 4, (n,))


def code_part(line: str) -> str:
    """The C++ code of a line without its // comment (string literals kept, they may hold '//')."""
    in_string = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            in_string = not in_string
        elif not in_string and line.startswith("//", i):
            return line[:i]
    return line


def test_files_and_headers(tmp_path: Path) -> None:
    s = two_layers()
    files = emit_hls(s, tmp_path)
    names = [f.name for f in files]
    assert names == [
        "hwgen_types.h",
        "fc1.h",
        "fc2.h",
        "mlp.h",
        "mlp.cpp",
        "tb_mlp.cpp",
        "tb_input.txt",
        "run_hls.tcl",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for f in files:
        if f.suffix == ".txt":
            continue
        leader = "#" if f.suffix == ".tcl" else "//"
        head = f.read_text().splitlines()[:2]
        assert head[0] == f"{leader} hwgen {__version__}: model 'tiny', hash {s.model_hash}", f.name
        assert head[1] == f"{leader} generated, do not edit", f.name


def test_layer_comments_name_source_and_rounding(tmp_path: Path) -> None:
    emit_hls(two_layers(), tmp_path)
    fc1, fc2, top = [(tmp_path / n).read_text() for n in ("fc1.h", "fc2.h", "mlp.cpp")]
    want = "// fc1 (ONNX '/fc1/Gemm'): dense 12->6 PE=3 SIMD=4 reuse=6 acc="
    assert want in fc1 and want in top
    assert "requantize: FLOOR, shift 8" in fc1 and "// FLOOR: arithmetic shift right by 8" in fc1
    assert "requantize: HALF_UP, shift -2" in fc2 and "left shift by 2: exact (HALF_UP never applies)" in fc2
    assert "hwgen_layers::fc1(in, fc1_out);" in top and "hwgen_layers::fc2(fc1_out, out);" in top
    # codes are integers: no ap_fixed and no floating-point literal anywhere in the design
    for text in (fc1, fc2, top):
        assert "ap_fixed" not in text
        assert not re.search(r"\b\d+\.\d*(e[-+]?\d+)?f?\b", "".join(code_part(x) for x in text.splitlines()))


@pytest.mark.parametrize("mode", list(Rounding))
def test_each_rounding_mode_spelled(tmp_path: Path, mode: Rounding) -> None:
    l1 = layer("fc", 8, 4, pe=2, simd=4, rounding=mode, shift=5)
    s = chain_schedule("top", "m", [l1], StreamPort("x", "x", U8, 8, 0, (8,)), port_out(4, U8))
    emit_hls(s, tmp_path)
    text = (tmp_path / "fc.h").read_text()
    assert f"requantize: {mode.name}, shift 5" in text
    assert ("+ 16) >> 5" in text) == (mode is not Rounding.FLOOR)  # the half is 2^(shift-1)
    assert ("a.range(4, 0) == 16" in text) == (mode is Rounding.HALF_EVEN)  # the tie test


def parse_rom(text: str, name: str) -> np.ndarray:
    """The integer initialiser of `static const ... name[..][..] = {...};` as a 2-D array."""
    body = re.search(rf"\b{name}\[[^=]*= \{{(.*?)\n    \}};", text, re.DOTALL)
    assert body, name
    rows = re.findall(r"\{([^{}]*)\}", body.group(1))
    return np.array([[int(v) for v in row.split(",")] for row in rows], dtype=np.int64)


def test_rom_layout_is_the_plans(tmp_path: Path) -> None:
    """Word nf*SF + sf of W holds the PE x SIMD tile p-major, exactly as DensePlan documents."""
    s = two_layers()
    emit_hls(s, tmp_path)
    for p in s.layers:
        text = (tmp_path / f"{p.name}.h").read_text()
        w, b = parse_rom(text, "W"), parse_rom(text, "B")
        assert w.shape == (p.nf * p.sf, p.pe * p.simd)
        for a in range(p.nf * p.sf):
            np.testing.assert_array_equal(w[a], p.weight_tile(a).reshape(-1), err_msg=f"{p.name} word {a}")
        np.testing.assert_array_equal(b, p.biases.reshape(p.nf, p.pe))


def test_deterministic(tmp_path: Path) -> None:
    a = emit_hls(two_layers(), tmp_path / "a")
    b = emit_hls(two_layers(), tmp_path / "b")
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    text = b"".join(p.read_bytes() for p in a)
    assert str(tmp_path).encode() not in text  # no absolute paths


def hostile_schedule() -> tuple[Schedule, list[str]]:
    """Layer, top and model names from hostile strings, legalized as the compiler does."""
    taken: set[str] = set()
    raws = HOSTILE_NAMES + HOSTILE_SOURCES
    layers = []
    n = 6
    for i, raw in enumerate(HOSTILE_NAMES):
        src = HOSTILE_SOURCES[i % len(HOSTILE_SOURCES)] + raw
        layers.append(layer(legalize(raw, taken), n, n, pe=2, simd=3, seed=i, source=src))
    top = legalize('main"); int x = (', taken)
    x = StreamPort(legalize("in*/put", taken), "in*/put\n", U8, n, 0, (n,))
    y = StreamPort(legalize("out\\", taken), "out\\", U8, n, 0, (n,))
    return chain_schedule(top, 'model */ "; system("x"); \\', layers, x, y), raws


def test_hostile_names_stay_in_comments(tmp_path: Path) -> None:
    s, raws = hostile_schedule()
    files = emit_hls(s, tmp_path)
    assert len(s.layers) == len(HOSTILE_NAMES)
    for f in files:
        data = f.read_bytes()
        assert all(32 <= c < 127 or c == 10 for c in data), f"{f.name}: non-printable or non-ASCII byte"
        text = data.decode()
        if f.suffix in (".h", ".cpp"):
            assert "/*" not in text and "*/" not in text, f.name  # no block comment to break out of
            code = [code_part(line) for line in text.splitlines()]
        elif f.suffix == ".tcl":
            code = [line for line in text.splitlines() if not line.startswith("#")]
        else:
            continue
        for line in text.splitlines():
            assert not line.endswith("\\"), f"{f.name}: a trailing backslash continues a // comment"
        for raw in raws:
            pattern = rf"(?<![A-Za-z0-9_]){re.escape(raw)}(?![A-Za-z0-9_])"
            bad = [c for c in code if re.search(pattern, c)]
            assert not bad, f"{f.name}: {raw!r} outside a comment: {bad[:2]}"
        assert not any(re.search(r"\bsystem\s*\(", c) for c in code), f.name


def run_tcl(path: Path) -> list[tuple[str, ...]]:
    """Evaluate run_hls.tcl in a real Tcl interpreter with the Vitis commands stubbed; the calls made."""
    tkinter = pytest.importorskip("tkinter")
    tcl = tkinter.Tcl()
    calls: list[tuple[str, ...]] = []
    vitis = ["open_project", "set_top", "add_files", "open_solution", "set_part", "create_clock"]
    vitis += ["csim_design", "csynth_design", "cosim_design", "export_design", "exit"]
    for cmd in vitis:
        tcl.createcommand(cmd, lambda *args, _c=cmd: calls.append((_c, *args)))
    tcl.eval(f"set argv {{}}; source {{{path}}}")
    return calls


@pytest.mark.parametrize(("part", "clock_mhz", "period"), [(None, None, 5.0), ("xc7z020clg400-1", 300, 1000 / 300)])
def test_tcl_project(tmp_path: Path, part: str | None, clock_mhz: float | None, period: float) -> None:
    s = two_layers()
    kwargs: dict[str, object] = {} if part is None else {"part": part, "clock_mhz": clock_mhz}
    x = np.zeros((2, 12), dtype=np.int64)
    y = np.zeros((2, 4), dtype=np.int64)
    files = emit_hls(s, tmp_path, inputs=x, expected=y, **kwargs)
    calls = run_tcl(tmp_path / "run_hls.tcl")
    names = [c[0] for c in calls]
    assert names[0] == "open_project" and calls[0][-1] == "mlp_prj"
    assert ("set_top", "mlp") in calls
    assert ("set_part", part or "xcu250-figd2104-2L-e") in calls
    clock = next(c for c in calls if c[0] == "create_clock")
    assert float(clock[clock.index("-period") + 1]) == pytest.approx(period, rel=1e-5)
    design = [c[1] for c in calls if c[0] == "add_files" and c[1] != "-tb"]
    bench = [c[2] for c in calls if c[0] == "add_files" and c[1] == "-tb"]
    assert design == ["mlp.cpp"]
    assert bench == ["tb_mlp.cpp", "tb_input.txt", "tb_expected.txt"]
    # every emitted file is compiled, given to the testbench, or included by what is compiled
    included = set(re.findall(r'#include "([^"]+)"', "".join(f.read_text() for f in files)))
    vendor = {"ap_int.h", "hls_stream.h"}
    assert {f.name for f in files} == {*design, *bench, *(included - vendor), "run_hls.tcl"}
    flow = [n for n in names if n.endswith("_design")]
    assert flow == ["csim_design", "csynth_design", "cosim_design", "export_design"]
    argv = "tb_input.txt tb_output.txt tb_expected.txt"
    for step in ("csim_design", "cosim_design"):
        assert next(c for c in calls if c[0] == step)[1:] == ("-argv", argv)
    assert next(c for c in calls if c[0] == "export_design")[1:] == ("-format", "ip_catalog")
    assert (tmp_path / "tb_input.txt").read_text() == "0 0 0 0 0 0 0 0 0 0 0 0\n" * 2


def test_default_vectors_are_extremes(tmp_path: Path) -> None:
    emit_hls(two_layers(), tmp_path)
    rows = [line.split() for line in (tmp_path / "tb_input.txt").read_text().splitlines()]
    assert rows == [["0"] * 12, ["255"] * 12]  # zero (= min for u8), max
    assert "tb_expected.txt" not in (tmp_path / "run_hls.tcl").read_text()


def test_refuses_what_it_cannot_express(tmp_path: Path) -> None:
    s = two_layers()
    with pytest.raises(ScheduleError, match="must be distinct"):
        emit_hls(two_layers(top="fc1"), tmp_path)
    with pytest.raises(ScheduleError, match="differ only in case"):
        emit_hls(two_layers(names=("fc", "FC")), tmp_path)
    bad_port = Schedule(s.top, s.model, s.model_hash, s.input, port_out(4, U8), s.layers, s.latency, s.ii)
    with pytest.raises(ScheduleError, match="is not what"):
        emit_hls(bad_port, tmp_path)
    with pytest.raises(ConfigError, match="part"):
        emit_hls(s, tmp_path, part="xcu250; exec rm")
    with pytest.raises(ConfigError, match="clock_mhz"):
        emit_hls(s, tmp_path, clock_mhz=0)
    with pytest.raises(DataError, match=r"shape \[N, 12\]"):
        emit_hls(s, tmp_path, inputs=np.zeros((3, 11), dtype=np.int64))
    with pytest.raises(DataError, match="outside u8"):
        emit_hls(s, tmp_path, inputs=np.full((1, 12), 256))
    with pytest.raises(DataError, match="without the inputs"):
        emit_hls(s, tmp_path, expected=np.zeros((1, 4), dtype=np.int64))


def test_c_int_literals() -> None:
    assert c_int(0) == "0"
    assert c_int(-(2**31) + 1) == "-2147483647"
    assert c_int(2**31) == "2147483648LL"
    assert c_int(-(2**40)) == "-1099511627776LL"
    assert c_int(-(2**63)) == "(-9223372036854775807LL - 1)"
