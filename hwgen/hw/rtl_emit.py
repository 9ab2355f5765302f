"""The Verilog backend: a Schedule -> SystemVerilog sources (one module per file) + filelist.f.

Every number a template prints is computed here from the plans (widths of derived signals,
counter widths, ROM words, adder-tree shape) or taken from `hwgen.hw.timing` (pipeline depth,
output FIFO depth); templates only lay text out. Module names are `<top>_<layer>` and
`<top>_hwgen_fifo`, so several generated designs can be compiled together.

Output is deterministic: the same Schedule gives byte-identical files, with no absolute paths.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.errors import ScheduleError
from hwgen.hw import timing
from hwgen.hw.plan import DensePlan, IntType, Schedule
from hwgen.hw.render import render
from hwgen.numerics import Rounding

_LEGAL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: the file listing the sources in compile order, paths relative to its folder
FILELIST = "filelist.f"


def index_bits(n: int) -> int:
    """Bits of a counter/address over n values 0..n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def value_bits(n: int) -> int:
    """Bits of an unsigned counter holding 0..n (at least 1)."""
    return max(1, n.bit_length())


def stream_bits(bits: int) -> int:
    """AXI4-Stream tdata width for `bits`-bit elements: rounded up to whole bytes."""
    return -(-bits // 8) * 8


def _hex(value: int, bits: int) -> str:
    return format(int(value) & ((1 << bits) - 1), f"0{(bits + 3) // 4}x")


def _pack_words(elements: np.ndarray, bits: int) -> list[str]:
    """Hex words of a [words, n] code array, element 0 in the least significant bits."""
    mask = (1 << bits) - 1
    words = []
    for row in elements:
        value = 0
        for v in reversed(row.tolist()):
            value = (value << bits) | (int(v) & mask)
        words.append(_hex(value, bits * elements.shape[1]))
    return words


def _check_fits(what: str, plan: DensePlan, values: np.ndarray, t: IntType) -> None:
    if values.size and (int(values.min()) < t.lo or int(values.max()) > t.hi):
        raise ScheduleError(
            f"layer '{plan.source}' ({plan.name}): {what} codes span [{int(values.min())}, {int(values.max())}], "
            f"outside {t}; the plan is inconsistent, rebuild it with hwgen.hw.schedule.plan_dense"
        )


def _check_plan(plan: DensePlan) -> None:
    where = f"layer '{plan.source}' ({plan.name})"
    if plan.engine != "dense":
        raise ScheduleError(f"{where}: engine '{plan.engine}' has no RTL template; only 'dense' is implemented")
    if plan.in_features % plan.simd or plan.out_features % plan.pe:
        raise ScheduleError(
            f"{where}: PE={plan.pe} / SIMD={plan.simd} do not divide {plan.out_features}/{plan.in_features}"
        )
    if plan.weights.shape != (plan.out_features, plan.in_features) or plan.biases.shape != (plan.out_features,):
        raise ScheduleError(f"{where}: weights {plan.weights.shape} / biases {plan.biases.shape} do not match the plan")
    if not plan.w.signed or not plan.acc.signed or not plan.bias.signed:
        raise ScheduleError(
            f"{where}: weight, bias and accumulator types must be signed ({plan.w}, {plan.bias}, {plan.acc})"
        )
    if plan.bias.bits > plan.acc.bits:
        raise ScheduleError(f"{where}: bias {plan.bias} is wider than the accumulator {plan.acc}")
    _check_fits("weight", plan, plan.weights, plan.w)
    _check_fits("bias", plan, plan.biases, plan.bias)
    rq = plan.requant
    if not (plan.out.lo <= rq.lo <= rq.hi <= plan.out.hi):
        raise ScheduleError(
            f"{where}: requantization clamp [{rq.lo}, {rq.hi}] must lie inside the output type {plan.out} "
            f"[{plan.out.lo}, {plan.out.hi}]"
        )


def _requant_context(plan: DensePlan, req_w: int, out_w: int) -> dict[str, Any]:
    rq = plan.requant
    rounding = Rounding(rq.rounding)
    if rq.shift <= 0:
        kind, rnd_add = "left", 0
    elif rounding is Rounding.FLOOR:
        kind, rnd_add = "floor", 0
    elif rounding is Rounding.HALF_UP:
        kind, rnd_add = "half_up", 1 << (rq.shift - 1)
    else:
        kind, rnd_add = "half_even", (1 << (rq.shift - 1)) - 1
    return {
        "kind": kind,
        "shift": max(rq.shift, 0),
        "shift_raw": rq.shift,
        "lshift": max(-rq.shift, 0),
        "rnd_add": rnd_add,
        "rnd_add_hex": _hex(rnd_add, req_w),
        "lo": rq.lo,
        "hi": rq.hi,
        "lo_hex": _hex(rq.lo, req_w),
        "hi_hex": _hex(rq.hi, req_w),
        "lo_code_hex": _hex(rq.lo, out_w),
        "hi_code_hex": _hex(rq.hi, out_w),
        "text": f"clamp(shift_round(acc, {rq.shift}, {rounding.value}), {rq.lo}, {rq.hi})",
    }


def _tree_levels(simd: int) -> list[dict[str, Any]]:
    """The adder tree as levels of pairwise sums; a register after every TREE_LEVELS_PER_STAGE."""
    n_levels = timing.tree_levels(simd)
    levels, n, src = [], simd, "tree0"
    for level in range(1, n_levels + 1):
        registered = level % timing.TREE_LEVELS_PER_STAGE == 0 or level == n_levels
        dst = f"tree{level}_q" if registered else f"tree{level}"
        dst_d = f"tree{level}_d"
        levels.append(
            {
                "level": level,
                "n_in": n,
                "n_out": (n + 1) // 2,
                "pairs": n // 2,
                "odd": n % 2 == 1,
                "registered": registered,
                "src": src,
                "dst": dst,  # the level's value as read by the next level
                "dst_d": dst_d,
                "comb": dst_d if registered else dst,  # what the adders drive
            }
        )
        n, src = (n + 1) // 2, dst
    if sum(lv["registered"] for lv in levels) != timing.tree_stages(simd):
        raise AssertionError("adder tree registers disagree with hwgen.hw.timing.tree_stages")  # internal
    return levels


def dense_context(plan: DensePlan, top: str, fifo_module: str) -> dict[str, Any]:
    """Everything dense.sv.j2 prints for one layer."""
    _check_plan(plan)
    sf, nf, pe, simd = plan.sf, plan.nf, plan.pe, plan.simd
    x_w = plan.inp.bits + (0 if plan.inp.signed else 1)
    shift = plan.requant.shift
    out_w = plan.out.bits
    # round/shift/clamp width: holds acc + 2**(shift-1), acc << -shift, and the clamp bounds
    req_w = max(max(plan.acc.bits - min(shift, 0), max(shift, 0)) + 1, out_w + 1)
    fifo_depth = timing.dense_out_fifo_depth(plan.in_features, plan.out_features, pe, simd)
    t = timing.dense_timing(plan.in_features, plan.out_features, pe, simd)
    levels = _tree_levels(simd)

    # [nf, sf, pe, simd] -> one row per ROM word, element p*SIMD + s
    tiles = plan.weights.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
    return {
        "module": f"{top}_{plan.name}",
        "name": plan.name,
        "source": plan.source,
        "desc": f"dense {plan.in_features}->{plan.out_features} PE={pe} SIMD={simd} acc={plan.acc}",
        "k": plan.in_features,
        "m": plan.out_features,
        "pe": pe,
        "simd": simd,
        "sf": sf,
        "nf": nf,
        "inp": str(plan.inp),
        "w": str(plan.w),
        "prod": str(plan.prod),
        "acc": str(plan.acc),
        "bias": str(plan.bias),
        "out": str(plan.out),
        "inp_signed": plan.inp.signed,
        "inp_w": plan.inp.bits,
        "x_w": x_w,
        "w_w": plan.w.bits,
        # the plan's product type holds every product exactly; operands cast to it may lose
        # high bits, which is harmless modulo 2**MUL_W
        "mul_w": plan.prod.bits + (0 if plan.prod.signed else 1),
        "acc_w": plan.acc.bits,
        "bias_w": plan.bias.bits,
        "req_w": req_w,
        "out_w": out_w,
        "sf_cw": index_bits(sf),
        "nf_cw": index_bits(nf),
        "lane_w": index_bits(simd),
        "pe_cw": index_bits(pe),
        "w_depth": nf * sf,
        "wa_w": index_bits(nf * sf),
        "buf_depth": 2 * sf,
        "ba_w": index_bits(2 * sf),
        "fifo_depth": fifo_depth,
        "credit_w": value_bits(fifo_depth),
        "sf_last": sf - 1,
        "nf_last": nf - 1,
        "lane_last": simd - 1,
        "pe_last": pe - 1,
        "wa_last": nf * sf - 1,
        "ba_last": 2 * sf - 1,
        "tree_levels": levels,
        "tree_stages": timing.tree_stages(simd),
        "tree_out": levels[-1]["dst"] if levels else "tree0",
        "rq": _requant_context(plan, req_w, out_w),
        "w_word_w": pe * simd * plan.w.bits,
        "b_word_w": pe * plan.bias.bits,
        "weight_words": _pack_words(tiles, plan.w.bits),
        "bias_words": _pack_words(plan.biases.reshape(nf, pe), plan.bias.bits),
        "fifo_module": fifo_module,
        "latency": t.latency,
        "ii": t.ii,
    }


def _check_names(schedule: Schedule) -> None:
    names = [schedule.top] + [p.name for p in schedule.layers]
    for n in names:
        if not _LEGAL.match(n) or "__" in n:
            raise ScheduleError(
                f"design '{schedule.model}': '{n}' is not a legal hardware name; "
                "pass names through hwgen.hw.names.legalize"
            )
    layer_names = [p.name for p in schedule.layers]
    if len(set(layer_names)) != len(layer_names) or "hwgen_fifo" in layer_names:
        raise ScheduleError(f"design '{schedule.model}': layer names {layer_names} must be unique and not 'hwgen_fifo'")


def _check_ports(schedule: Schedule) -> None:
    first, last = schedule.layers[0], schedule.layers[-1]
    i, o = schedule.input, schedule.output
    if i.elem != first.inp or i.count != first.in_features:
        raise ScheduleError(
            f"design '{schedule.model}': input '{i.source}' ({i.count} x {i.elem}) does not feed layer "
            f"'{first.source}' ({first.in_features} x {first.inp})"
        )
    if o.elem != last.out or o.count != last.out_features:
        raise ScheduleError(
            f"design '{schedule.model}': output '{o.source}' ({o.count} x {o.elem}) is not what layer "
            f"'{last.source}' produces ({last.out_features} x {last.out})"
        )


def top_context(schedule: Schedule, fifo_module: str) -> dict[str, Any]:
    """Everything top.sv.j2 prints."""
    layers = schedule.layers
    last = layers[-1]
    in_w, out_w = schedule.input.elem.bits, schedule.output.elem.bits
    engines = []
    for idx, p in enumerate(layers):
        engines.append(
            {
                "name": p.name,
                "module": f"{schedule.top}_{p.name}",
                "source": p.source,
                "desc": f"dense {p.in_features}->{p.out_features} PE={p.pe} SIMD={p.simd} acc={p.acc}",
                "in_w": p.inp.bits,
                "out_w": p.out.bits,
                "next": layers[idx + 1].name if idx + 1 < len(layers) else None,
            }
        )
    return {
        "module": schedule.top,
        "in_source": schedule.input.source,
        "out_source": schedule.output.source,
        "in_count": schedule.input.count,
        "out_count": schedule.output.count,
        "in_elem": str(schedule.input.elem),
        "out_elem": str(schedule.output.elem),
        "in_w": in_w,
        "in_tw": stream_bits(in_w),
        "in_pad": stream_bits(in_w) - in_w,
        "out_w": out_w,
        "out_tw": stream_bits(out_w),
        "out_pad": stream_bits(out_w) - out_w,
        "out_signed": schedule.output.elem.signed,
        "ext_bit": f"{last.name}__m_tdata[{out_w - 1}]" if schedule.output.elem.signed else "1'b0",
        "engines": engines,
        "fifo_depth": schedule.fifo_depth,
        "fifo_module": fifo_module,
        "latency": schedule.latency,
        "ii": schedule.ii,
    }


def emit_rtl(schedule: Schedule, out_dir: Path) -> list[Path]:
    """Write the design's SystemVerilog into out_dir; return the sources in compile order + filelist.f."""
    if not schedule.layers:
        raise ScheduleError(f"design '{schedule.model}': no layers to emit")
    _check_names(schedule)
    _check_ports(schedule)
    if schedule.fifo_depth < 0:
        raise ScheduleError(f"design '{schedule.model}': fifo_depth {schedule.fifo_depth} must be >= 0")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    design = {"model": schedule.model, "model_hash": schedule.model_hash}
    fifo_module = f"{schedule.top}_hwgen_fifo"

    texts: list[tuple[str, str]] = [(fifo_module, render("rtl/fifo.sv.j2", design=design, module=fifo_module))]
    for plan in schedule.layers:
        d = dense_context(plan, schedule.top, fifo_module)
        texts.append((d["module"], render("rtl/dense.sv.j2", design=design, d=d)))
    texts.append((schedule.top, render("rtl/top.sv.j2", design=design, top=top_context(schedule, fifo_module))))

    paths = []
    for module, text in texts:
        path = out_dir / f"{module}.sv"
        path.write_text(text, encoding="ascii", newline="\n")
        paths.append(path)
    filelist = out_dir / FILELIST
    filelist.write_text("".join(f"{p.name}\n" for p in paths), encoding="ascii", newline="\n")
    return [*paths, filelist]


def read_filelist(rtl_dir: Path) -> list[Path]:
    """The sources listed in rtl_dir/filelist.f, in compile order."""
    path = Path(rtl_dir) / FILELIST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no filelist; generate the design with hwgen.hw.rtl_emit.emit_rtl")
    return [Path(rtl_dir) / line.strip() for line in path.read_text().splitlines() if line.strip()]


__all__ = ["FILELIST", "dense_context", "emit_rtl", "read_filelist", "stream_bits", "top_context"]
