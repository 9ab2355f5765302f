"""The HLS C++ emitter: a Schedule -> a Vitis HLS project (engines, top, testbench, tcl).

Every number comes from the plans; this module only spells them in C++ (ap_int types, integer
literals, ROM initialisers) and checks that the Schedule is one the templates can express.
Codes are integers end to end: `ap_int`/`ap_uint`, never `ap_fixed`, and requantization is
explicit integer arithmetic (see `templates/hls/_macros.j2`).

Project layout (all files in one folder, named after legal identifiers only):

    hwgen_types.h        the single include of ap_int.h / hls_stream.h
    <layer>.h            one dense engine per layer, its weight and bias ROMs inside
    <top>.h, <top>.cpp   the dataflow top function (AXI4-Stream in and out, ap_ctrl_none)
    tb_<top>.cpp         the C simulation testbench (codes file in, codes file out)
    tb_input.txt         input codes for csim/cosim (and tb_expected.txt when given)
    run_hls.tcl          csim, csynth, cosim and IP export, in that order
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwgen.errors import ConfigError, DataError, ScheduleError
from hwgen.hw.plan import DensePlan, IntType, Schedule
from hwgen.hw.render import render
from hwgen.numerics import Rounding

#: AMD Alveo U250 (UltraScale+ VU13P): a common data-center card
DEFAULT_PART = "xcu250-figd2104-2L-e"
DEFAULT_CLOCK_MHZ = 200.0
#: The namespace of the layer engines: no legal identifier starts with `hwgen_`, so engine
#: names can never collide with the top function, libc names or our local variables.
LAYER_NAMESPACE = "hwgen_layers"
#: ap_int's widest type (AP_INT_MAX_W in ap_common.h).
AP_INT_MAX_W = 1024
#: weight values per line of a ROM initialiser
_VALUES_PER_LINE = 16
_PART_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def ap_type(t: IntType) -> str:
    """The ap_int spelling of a code type: ap_int<N> (signed) or ap_uint<N>."""
    return f"ap_int<{t.bits}>" if t.signed else f"ap_uint<{t.bits}>"


def storage_ctype(t: IntType, where: str) -> str:
    """The narrowest C integer type holding `t`: ROMs as plain C arrays compile fast in g++."""
    for n in (8, 16, 32, 64):
        if t.bits <= n:
            return f"int{n}_t" if t.signed else f"uint{n}_t"
    raise ScheduleError(f"{where}: {t} values are wider than 64 bits; the HLS backend stores ROM words as C integers")


def c_int(value: int) -> str:
    """A C++ integer literal of exactly `value`, safe for the full int64 range."""
    value = int(value)
    if value == -(1 << 63):
        return "(-9223372036854775807LL - 1)"
    if -(1 << 31) < value < (1 << 31):
        return str(value)
    return f"{value}LL" if value < (1 << 63) else f"{value}ULL"


def c_initializer(matrix: np.ndarray, indent: str) -> str:
    """Rows of a 2-D integer array as C initialiser lines: `{a, b, ...},` per row, wrapped."""
    lines: list[str] = []
    for row in np.asarray(matrix, dtype=np.int64).tolist():
        vals = [str(v) for v in row]
        chunks = [", ".join(vals[i : i + _VALUES_PER_LINE]) for i in range(0, len(vals), _VALUES_PER_LINE)]
        lines.append(indent + "{" + (",\n" + indent + " ").join(chunks) + "},")
    return "\n".join(lines)


@dataclass(frozen=True)
class RequantSpelling:
    """The requantization of one layer, spelled for the template (widths decided here, not there)."""

    mode: str  #: FLOOR, HALF_UP or HALF_EVEN (the Rounding member's name)
    shift: int  #: > 0: divide by 2**shift with `mode`; <= 0: exact multiply by 2**-shift
    wide: str  #: the ap_int type the shift is computed in (cannot overflow)
    half: str  #: literal 2**(shift-1), the rounding offset (shift > 0 only)
    lo: str  #: clamp bounds, literals
    hi: str


@dataclass(frozen=True)
class DenseSpelling:
    """Everything the dense template prints that is not a plan field as is."""

    in_t: str
    w_t: str
    prod_t: str
    acc_t: str
    bias_t: str
    out_t: str
    steps: int  #: cycles per fold: max(SF, PE) (SF tiles issued, PE results emitted)
    w_store: str  #: C type of the weight ROM in C simulation
    b_store: str  #: C type of the bias ROM in C simulation
    w_exact: bool  #: the C type is exactly w.bits wide (no synthesis-only ROM type needed)
    b_exact: bool
    weights: str  #: initialiser rows, word a = nf*SF + sf holds the PE x SIMD tile p-major
    biases: str  #: initialiser rows, [nf][p] = bias of output nf*PE + p
    requant: RequantSpelling


def requant_spelling(plan: DensePlan) -> RequantSpelling:
    """The widths of the explicit rounding arithmetic, from the accumulator width and the shift."""
    rq = plan.requant
    a = plan.acc.bits
    # right shift: one bit above max(acc, shift), so acc + 2**(shift-1) cannot overflow and the
    # shift stays below the width; left shift: room for the exact product acc * 2**-shift
    wide = max(a, rq.shift) + 1 if rq.shift > 0 else a - rq.shift
    if wide > AP_INT_MAX_W:
        raise ScheduleError(f"{_where(plan)}: requantization needs {wide} bits, over ap_int's {AP_INT_MAX_W}")
    return RequantSpelling(
        mode=Rounding(rq.rounding).name,
        shift=rq.shift,
        wide=f"ap_int<{wide}>",
        half=c_int(1 << (rq.shift - 1)) if rq.shift > 0 else "0",
        lo=c_int(rq.lo),
        hi=c_int(rq.hi),
    )


def dense_spelling(plan: DensePlan) -> DenseSpelling:
    """ROM initialisers and type spellings of one dense engine (ROM layout as DensePlan documents)."""
    where = _where(plan)
    pe, simd, sf, nf = plan.pe, plan.simd, plan.sf, plan.nf
    # [NF*PE, SF*SIMD] -> [NF, PE, SF, SIMD] -> [NF, SF, PE, SIMD] -> word nf*SF+sf, element p*SIMD+s
    words = plan.weights.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
    w_store = storage_ctype(plan.w, where)
    b_store = storage_ctype(plan.bias, where)
    return DenseSpelling(
        in_t=ap_type(plan.inp),
        w_t=ap_type(plan.w),
        prod_t=ap_type(plan.prod),
        acc_t=ap_type(plan.acc),
        bias_t=ap_type(plan.bias),
        out_t=ap_type(plan.out),
        steps=max(sf, pe),
        w_store=w_store,
        b_store=b_store,
        w_exact=plan.w.bits in (8, 16, 32, 64),
        b_exact=plan.bias.bits in (8, 16, 32, 64),
        weights=c_initializer(words, " " * 8),
        biases=c_initializer(plan.biases.reshape(nf, pe), " " * 8),
        requant=requant_spelling(plan),
    )


def _where(plan: DensePlan) -> str:
    return f"layer '{plan.name}' (ONNX {plan.source!r})"


def _range_problem(values: np.ndarray, t: IntType, what: str) -> str | None:
    """A message when integer `values` do not all fit `t`, else None."""
    if values.size and (int(values.min()) < t.lo or int(values.max()) > t.hi):
        return f"{what}: codes span [{values.min()}, {values.max()}], outside {t} [{t.lo}, {t.hi}]"
    return None


def check_schedule(schedule: Schedule) -> None:
    """Refuse a Schedule the HLS templates cannot express exactly, naming the layer and the fix."""
    if not schedule.layers:
        raise ScheduleError(f"model '{schedule.model}': no layers to emit")
    names = [p.name for p in schedule.layers]
    if len(set(names)) != len(names) or schedule.top in names:
        raise ScheduleError(
            f"model '{schedule.model}': top '{schedule.top}' and layer names {names} must be distinct "
            "(build them with hw.names.legalize(name, taken))"
        )
    files = [*names, schedule.top, "hwgen_types"]
    if len({f.lower() for f in files}) != len(files):
        raise ScheduleError(f"model '{schedule.model}': names {files} differ only in case; file names would collide")
    first, last = schedule.layers[0], schedule.layers[-1]
    if (first.inp, first.in_features) != (schedule.input.elem, schedule.input.count):
        raise ScheduleError(
            f"input '{schedule.input.source}': {schedule.input.count} x {schedule.input.elem} does not feed "
            f"{_where(first)} ({first.in_features} x {first.inp})"
        )
    if (last.out, last.out_features) != (schedule.output.elem, schedule.output.count):
        raise ScheduleError(
            f"output '{schedule.output.source}': {schedule.output.count} x {schedule.output.elem} is not what "
            f"{_where(last)} produces ({last.out_features} x {last.out})"
        )
    for port, kind in ((schedule.input, "input"), (schedule.output, "output")):
        if port.elem.bits > (64 if port.elem.signed else 63):
            raise ScheduleError(f"{kind} '{port.source}': {port.elem} codes do not fit the testbench's int64 I/O")
    for a, b in zip(schedule.layers, schedule.layers[1:], strict=False):
        if (a.out_features, a.out) != (b.in_features, b.inp):
            raise ScheduleError(f"{_where(a)} -> {_where(b)}: {a.out_features}x{a.out} feeds {b.in_features}x{b.inp}")
    for p in schedule.layers:
        where = _where(p)
        if p.engine != "dense":
            raise ScheduleError(f"{where}: the HLS backend has no template for engine '{p.engine}'")
        if p.in_features % p.simd or p.out_features % p.pe:
            raise ScheduleError(f"{where}: PE={p.pe} must divide {p.out_features} and SIMD={p.simd} {p.in_features}")
        if p.weights.shape != (p.out_features, p.in_features) or p.biases.shape != (p.out_features,):
            raise ScheduleError(f"{where}: weights {p.weights.shape} / biases {p.biases.shape} do not match the plan")
        if max(t.bits for t in (p.inp, p.w, p.prod, p.acc, p.out, p.bias)) > AP_INT_MAX_W:
            raise ScheduleError(f"{where}: a type is wider than ap_int's {AP_INT_MAX_W} bits")
        for values, t, what in ((p.weights, p.w, "weights"), (p.biases, p.bias, "biases")):
            problem = _range_problem(values, t, f"{where} {what}")
            if problem:
                raise ScheduleError(problem)
        rq = p.requant
        if not (p.out.lo <= rq.lo <= rq.hi <= p.out.hi):
            raise ScheduleError(f"{where}: clamp [{rq.lo}, {rq.hi}] is not inside the output type {p.out}")


def _check_codes(codes: np.ndarray, count: int, t: IntType, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != count or not np.issubdtype(codes.dtype, np.integer):
        raise DataError(f"{what}: expected integer codes of shape [N, {count}], got {codes.dtype} {codes.shape}")
    problem = _range_problem(codes, t, what)
    if problem:
        raise DataError(problem)
    return codes.astype(np.int64)


def codes_text(codes: np.ndarray) -> str:
    """One sample per line, space-separated decimal codes: the testbench's file format."""
    return "".join(" ".join(map(str, row)) + "\n" for row in np.asarray(codes, dtype=np.int64).tolist())


def smoke_inputs(schedule: Schedule) -> np.ndarray:
    """Default csim vectors when none are given: all zero, all minimum and all maximum codes."""
    t, n = schedule.input.elem, schedule.input.count
    return np.array([[v] * n for v in dict.fromkeys((0, t.lo, t.hi))], dtype=np.int64)


def _clock_period_ns(clock_mhz: float) -> str:
    if not (isinstance(clock_mhz, int | float) and 0 < clock_mhz <= 2000):
        raise ConfigError(f"clock_mhz={clock_mhz!r}: give the target clock in MHz, in (0, 2000]")
    return f"{1000.0 / clock_mhz:.6g}"


def emit_hls(
    schedule: Schedule,
    out_dir: Path,
    *,
    part: str = DEFAULT_PART,
    clock_mhz: float = DEFAULT_CLOCK_MHZ,
    inputs: np.ndarray | None = None,
    expected: np.ndarray | None = None,
) -> list[Path]:
    """Write the Vitis HLS project of `schedule` into `out_dir`; return the files written.

    `inputs` ([N, input.count] codes) become tb_input.txt, the vectors csim and cosim run
    (default: all-zero, all-min, all-max samples). With `expected` ([N, output.count], from the
    golden model) the testbench also compares and fails csim/cosim on the first mismatch.
    Same arguments -> byte-identical files (no dates, no absolute paths).
    """
    check_schedule(schedule)
    if not _PART_RE.match(part):
        raise ConfigError(f"part={part!r}: an FPGA part name has only letters, digits, '_', '.' and '-'")
    period = _clock_period_ns(clock_mhz)
    if inputs is None:
        x = smoke_inputs(schedule)
    else:
        x = _check_codes(inputs, schedule.input.count, schedule.input.elem, "inputs")
    if expected is not None:
        if inputs is None:
            raise DataError("expected outputs were given without the inputs they belong to")
        expected = _check_codes(expected, schedule.output.count, schedule.output.elem, "expected")
        if expected.shape[0] != x.shape[0]:
            raise DataError(f"expected: {expected.shape[0]} samples for {x.shape[0]} input samples")

    top = schedule.top
    layers = [(p, dense_spelling(p)) for p in schedule.layers]
    common = {"schedule": schedule, "ns": LAYER_NAMESPACE}
    io = {
        "in_t": ap_type(schedule.input.elem),
        "out_t": ap_type(schedule.output.elem),
        "in_scale": f"2^{-schedule.input.frac}",
        "out_scale": f"2^{-schedule.output.frac}",
        "out_to_int": "to_int64" if schedule.output.elem.signed else "to_uint64",
        "in_lo": c_int(schedule.input.elem.lo),
        "in_hi": c_int(schedule.input.elem.hi),
    }
    tb_files = ["tb_input.txt"] + (["tb_expected.txt"] if expected is not None else [])
    files: dict[str, str] = {"hwgen_types.h": render("hls/hwgen_types.h.j2", **common)}
    for p, sp in layers:
        files[f"{p.name}.h"] = render("hls/dense.h.j2", plan=p, t=sp, **common)
    files[f"{top}.h"] = render("hls/top.h.j2", io=io, **common)
    files[f"{top}.cpp"] = render("hls/top.cpp.j2", io=io, layers=layers, **common)
    files[f"tb_{top}.cpp"] = render("hls/tb.cpp.j2", io=io, **common)
    files["tb_input.txt"] = codes_text(x)
    if expected is not None:
        files["tb_expected.txt"] = codes_text(expected)
    files["run_hls.tcl"] = render(
        "hls/run_hls.tcl.j2",
        part=part,
        period=period,
        clock_mhz=f"{clock_mhz:g}",
        sources=[f"{top}.cpp"],
        tb_sources=[f"tb_{top}.cpp", *tb_files],
        argv=" ".join(["tb_input.txt", "tb_output.txt", *tb_files[1:]]),
        **common,
    )
    return _write(Path(out_dir), files.items())


def _write(out_dir: Path, files: Iterable[tuple[str, str]]) -> list[Path]:
    """Write ASCII files with '\\n' line ends; rewrite only what changed (keeps mtimes for make)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files:
        path = out_dir / name
        data = text.encode("ascii")  # comment_safe and legal names keep every file ASCII
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
        written.append(path)
    return written


__all__ = ["DEFAULT_CLOCK_MHZ", "DEFAULT_PART", "ap_type", "c_int", "check_schedule", "emit_hls"]
