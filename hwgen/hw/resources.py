"""Resource estimate of a Schedule on a device: multipliers, memories and block RAMs, rough LUT/FF.

Why: a design that cannot fit a device should be refused, and a folding that fits chosen, before
any synthesis runs (place and route of a large design takes many minutes). The estimate reads
only plans, so the scheduler can try foldings cheaply.

What each figure means:
- multipliers: the hard multipliers the RTL instantiates (`PE*SIMD` per dense/conv engine, one
  per average pool). Yosys maps every product of two operands wider than one bit onto one DSP
  (ECP5 MULT18X18D, Xilinx DSP48), so this count is exact for the templates in templates/rtl.
- memories: every array the RTL declares that Yosys can map to block RAM (weight and bias ROMs,
  input/line buffers, pooling delay lines, LUT tables, block-RAM FIFOs), each with its depth and
  word width. Where it goes follows Yosys's `memory_libmap` rule with its default costs: a block
  RAM costs 128, soft logic 1/16 per ROM bit, distributed RAM 4 per 16x4 (ECP5's DPR16X4), so a
  memory takes block RAMs only when `bits / 16 > 128 * blocks`. A dense engine's weight ROM is
  split into banks of whole neurons (`weight_banks`, the rule dense.sv.j2 applies), each with its
  own read-address register, so no single net drives every block RAM. The number of blocks is the
  fewest over the device's (depth, width) configurations (`Device.bram_shapes`): ECP5's DP16KD is
  16384x1 .. 2048x9 .. 512x36, so 8-bit weights use 8 of every 9 bits unless a word packs them
  across the parity bits (a 72-bit word of nine 8-bit weights fills two 512x36 blocks exactly).
- LUT / FF: a rough figure (adder trees, accumulators, pipeline registers, memories in logic),
  within a factor of about two of what synthesis reports: it says whether logic is the short
  resource, no more. Measured figures come from `hwgen synth`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hwgen.config import BuildConfig
from hwgen.errors import ScheduleError
from hwgen.hw import engine_timing as et
from hwgen.hw.devices import Device, devices, get_device
from hwgen.hw.plan import (
    AddPlan,
    ChannelAffinePlan,
    ConcatPlan,
    ConvPlan,
    DensePlan,
    EnginePlan,
    ForkPlan,
    LutPlan,
    PoolPlan,
    Schedule,
    SoftmaxPlan,
)
from hwgen.hw.schedule import chain_schedule, valid_foldings
from hwgen.hw.timing import chain_latency, dense_out_fifo_depth, operand_fanout, tree_stages
from hwgen.ir.graph import Graph

log = logging.getLogger(__name__)

#: Yosys memory_libmap's default costs (passes/memory/memory_libmap.cc and the lattice brams file)
BRAM_COST = 128
LOGIC_COST_PER_ROM_BIT = 1 / 16
#: FIFOs of at least this many elements are block-RAM FIFOs in the RTL (rtl_emit.BRAM_FIFO_MIN_DEPTH)
BRAM_FIFO_MIN_DEPTH = 32
#: control logic of one engine (counters, handshakes, credit counters): a flat guess
CONTROL_LUT, CONTROL_FF = 120, 80


@dataclass(frozen=True)
class Memory:
    """One memory array of an engine and where Yosys puts it on the device."""

    what: str  #: "weights", "biases", "input buffer", ...
    depth: int  #: words
    width: int  #: bits per word
    copies: int = 1  #: identical arrays (one per lane / bank)
    rom: bool = True  #: read-only (initialised) or written at run time

    @property
    def bits(self) -> int:
        return self.depth * self.width * self.copies


def bram_blocks(depth: int, width: int, device: Device) -> int:
    """Fewest block RAMs holding a depth x width memory, over the device's configurations."""
    if not device.bram_shapes:
        return math.ceil(depth * width / device.bram_bits)
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in device.bram_shapes)


def in_bram(m: Memory, device: Device) -> bool:
    """True when Yosys maps memory `m` to block RAM (see the module docstring)."""
    return m.depth * m.width * LOGIC_COST_PER_ROM_BIT > BRAM_COST * bram_blocks(m.depth, m.width, device)


def weight_banks(pe: int, simd: int, w_bits: int) -> tuple[int, int]:
    """(neurons per bank, banks) of a dense engine's weight ROM, the rule templates/rtl/dense.sv.j2
    applies: the fewest neurons whose weights fill two 36-bit block RAM columns in whole hex digits
    (each bank gets its own copy of the read address, so no address net drives every block RAM)."""
    for g in range(1, pe + 1):
        if pe % g == 0 and g * simd * w_bits >= 72 and (g * simd * w_bits) % 4 == 0:
            return g, pe // g
    return pe, 1


def folding_cost(multipliers: int, rom_depth: int, rom_width: int, device: Device, copies: int = 1) -> float:
    """Share of `device` a MAC engine's folding takes: its multipliers plus its weight ROM (block
    RAMs, or LUTs when Yosys leaves it in logic), each as a fraction of the device's capacity.

    The scheduler picks the cheapest folding among those fast enough: the fewest multipliers is
    not always the least memory (8-bit weights fill 9-bit block RAM columns only in wide words).
    """
    rom = Memory("weights", rom_depth, rom_width, copies)
    blocks = copies * bram_blocks(rom_depth, rom_width, device)
    mem = blocks / max(device.bram, 1) if in_bram(rom, device) else 0.0
    luts = 0 if in_bram(rom, device) else _logic_luts(rom, device)
    return multipliers / max(device.dsp, 1) + mem + luts / device.lut


def _logic_luts(m: Memory, device: Device) -> int:
    """LUTs of a memory left in logic: 2**lut_inputs words of one bit per LUT (ROM tables, distributed RAM)."""
    per_lut = 1 << device.lut_inputs
    return math.ceil(m.depth / per_lut) * m.width * m.copies


@dataclass
class EngineResources:
    """The estimate of one engine."""

    name: str
    engine: str
    multipliers: int = 0
    memories: list[Memory] = field(default_factory=list)
    lut: int = 0  #: logic besides memories (rough)
    ff: int = 0  #: registers (rough)

    def bram(self, device: Device) -> int:
        return sum(m.copies * bram_blocks(m.depth, m.width, device) for m in self.memories if in_bram(m, device))

    def memory_luts(self, device: Device) -> int:
        return sum(_logic_luts(m, device) for m in self.memories if not in_bram(m, device))

    def to_dict(self, device: Device | None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "multipliers": self.multipliers,
            "memory_bits": sum(m.bits for m in self.memories),
            "rom_bits": sum(m.bits for m in self.memories if m.rom),
            "lut": self.lut,
            "ff": self.ff,
            "memories": [
                {"what": m.what, "depth": m.depth, "width": m.width, "copies": m.copies, "rom": m.rom}
                for m in self.memories
            ],
        }
        if device is not None:
            doc["bram"] = self.bram(device)
            doc["lut"] = self.lut + self.memory_luts(device)
            for d, m in zip(doc["memories"], self.memories, strict=True):
                d["bram"] = m.copies * bram_blocks(m.depth, m.width, device) if in_bram(m, device) else 0
        return doc


def _mac(name: str, engine: str, p: DensePlan | ConvPlan, w_depth: int, buffers: list[Memory]) -> EngineResources:
    pe, simd = p.pe, p.simd
    macs = pe * simd
    acc, mul, req = p.acc.bits, p.prod.bits, p.acc.bits + 2
    stages = tree_stages(simd)
    return EngineResources(
        name,
        engine,
        multipliers=macs,
        memories=[
            Memory("weights", w_depth, macs * p.w.bits),
            Memory("biases", (p.out_features if isinstance(p, DensePlan) else p.channels_out) // pe, pe * p.bias.bits),
            *buffers,
        ],
        # adder tree + accumulator + round + clamp, one LUT per bit of each adder / comparator
        lut=pe * ((simd - 1) * acc + acc + 2 * req) + CONTROL_LUT,
        # operand registers (weights; inputs: one per multiplier and per fan-out group), products,
        # registered tree levels, accumulator, requantization
        ff=macs * (p.w.bits + mul + p.inp.bits)
        + operand_fanout(pe)[1] * simd * p.inp.bits
        + pe * (stages * simd // 2 * acc + acc + req + p.out.bits)
        + CONTROL_FF,
    )


def engine_resources(p: EnginePlan) -> EngineResources:
    """The estimate of one engine (FIFOs between engines are counted by `estimate`)."""
    if isinstance(p, DensePlan):
        r = _mac(p.name, p.engine, p, p.nf * p.sf, [Memory("input buffer", 2 * p.sf, p.inp.bits, p.simd, rom=False)])
        per_bank, banks = weight_banks(p.pe, p.simd, p.w.bits)
        r.memories[0] = Memory("weights", p.nf * p.sf, per_bank * p.simd * p.w.bits, banks)
        fifo = dense_out_fifo_depth(p.in_features, p.out_features, p.pe, p.simd)
        r.ff += (fifo + 1) * p.pe * p.out.bits
        return r
    if isinstance(p, ConvPlan):
        lanes = et.conv_lanes(p)
        words = et.conv_buffer_pixels(p) * (p.channels_in // lanes)
        w_depth = (p.channels_out // p.pe) * et.conv_tiles_per_fold(p)
        r = _mac(p.name, p.engine, p, w_depth, [Memory("line buffer", words, p.inp.bits, lanes, rom=False)])
        r.ff += (et.conv_out_fifo_depth(p) + 1) * p.pe * p.out.bits
        return r
    if isinstance(p, PoolPlan):
        rh = -(-p.kernel[1] // p.stride[1])
        rv = -(-p.kernel[0] // p.stride[0])
        mems = [
            Memory("row delay lines", p.channels, p.acc.bits, rh, rom=False),
            Memory("column delay lines", p.out_w * p.channels, p.acc.bits, rv, rom=False),
        ]
        mems = [m for m in mems if m.depth > 1]
        return EngineResources(
            p.name, p.engine, multipliers=int(p.kind == "avg"), memories=mems,
            lut=(rh + rv + 3) * p.acc.bits + CONTROL_LUT, ff=5 * p.acc.bits + CONTROL_FF,
        )  # fmt: skip
    if isinstance(p, LutPlan):
        return EngineResources(
            p.name, p.engine, memories=[Memory("table", len(p.table), p.out.bits)], lut=CONTROL_LUT // 2,
            ff=p.out.bits + CONTROL_FF // 2,
        )  # fmt: skip
    if isinstance(p, SoftmaxPlan):
        # vector buffer + exp table; the sum adder, the divider's subtractor and two shifters (remainder width)
        from hwgen.hw.softmax import exp_bits, remainder_bits

        r_w = remainder_bits(p)
        mems = [Memory("vector buffer", p.length, p.inp.bits, rom=False)]
        mems.append(Memory("exp table", len(p.table), exp_bits(p)))
        return EngineResources(
            p.name, p.engine, memories=mems, lut=p.sum.bits + 3 * r_w + CONTROL_LUT,
            ff=p.sum.bits + 2 * r_w + p.inp.bits + p.quotient_bits + p.out.bits + CONTROL_FF,
        )  # fmt: skip
    if isinstance(p, ChannelAffinePlan):
        # one multiplier; offset adder, rounding adder and clamp comparators over the accumulator width
        mems = [Memory("scales", p.period, p.m.bits), Memory("offsets", p.period, p.a.bits)]
        return EngineResources(
            p.name, p.engine, multipliers=1, memories=mems, lut=3 * p.acc.bits + CONTROL_LUT // 2,
            ff=3 * p.acc.bits + CONTROL_FF // 2,
        )  # fmt: skip
    if isinstance(p, AddPlan):
        return EngineResources(p.name, p.engine, lut=3 * p.sum.bits + CONTROL_LUT // 2, ff=3 * p.sum.bits)
    if isinstance(p, ConcatPlan):
        w = max(q.inp.bits for q in p.parts) + 2
        return EngineResources(p.name, p.engine, lut=3 * w * len(p.parts) + CONTROL_LUT // 2, ff=3 * w)
    if isinstance(p, ForkPlan):
        return EngineResources(p.name, p.engine, lut=len(p.outputs) * 2, ff=0)
    if p.engine == "sparse_dense":  # CSC entries / Huffman streams + tables, column ROMs (hwgen.hw.sparse)
        from hwgen.hw.sparse import sparse_resources

        return sparse_resources(p)  # type: ignore[arg-type]
    return _generic(p)


def _generic(p: Any) -> EngineResources:
    """An engine without a model of its own (a new plan type): its multipliers, and its weights as
    one ROM word of every multiplier's weight per cycle. A floor, so a fit is not claimed wrongly
    loose; a plan type that matters for fitting gets its own branch in `engine_resources`."""
    mults = int(getattr(p, "multipliers", 0) or getattr(p, "pe", 0) * getattr(p, "simd", 0))
    r = EngineResources(p.name, str(getattr(p, "engine", type(p).__name__)), multipliers=mults, lut=CONTROL_LUT)
    weights, w = getattr(p, "weights", None), getattr(p, "w", None)
    if weights is not None and w is not None:
        lanes = max(mults, 1)
        r.memories.append(Memory("weights", max(1, math.ceil(weights.size / lanes)), lanes * w.bits))
    return r


@dataclass
class Estimate:
    """The estimate of a whole Schedule: per engine, the FIFOs between engines, and totals."""

    engines: list[EngineResources]
    fifos: list[Memory]  #: block-RAM FIFOs between engines (register FIFOs count as FF)
    fifo_ff: int

    def totals(self, device: Device) -> dict[str, int]:
        """LUT / FF / DSP / BRAM the design needs on `device` (the keys of Device.capacity)."""
        fifo_bram = sum(bram_blocks(m.depth, m.width, device) for m in self.fifos if in_bram(m, device))
        fifo_lut = sum(_logic_luts(m, device) for m in self.fifos if not in_bram(m, device))
        return {
            "LUT": sum(e.lut + e.memory_luts(device) for e in self.engines) + fifo_lut,
            "FF": sum(e.ff for e in self.engines) + self.fifo_ff,
            "DSP": sum(e.multipliers for e in self.engines),
            "BRAM": sum(e.bram(device) for e in self.engines) + fifo_bram,
        }

    def shortfalls(self, device: Device) -> list[tuple[str, int, int]]:
        """(resource, needed, available) of every resource the design needs more of than `device` has."""
        cap = device.capacity()
        return [(r, n, cap[r]) for r, n in self.totals(device).items() if n > cap.get(r, 0)]


def estimate(schedule: Schedule) -> Estimate:
    """The resource estimate of every engine and of the FIFOs between them."""
    engines = [engine_resources(p) for p in schedule.layers]
    fifos: list[Memory] = []
    fifo_ff = 0
    ports = {schedule.input.name, schedule.output.name}
    for s in schedule.streams:
        if s.name in ports:
            continue
        depth = schedule.fifo_depth if schedule.is_chain else s.depth
        if depth >= BRAM_FIFO_MIN_DEPTH:
            fifos.append(Memory(f"FIFO {s.name}", depth, s.elem.bits + 1, rom=False))
        else:
            fifo_ff += depth * (s.elem.bits + 1)
    return Estimate(engines, fifos, fifo_ff)


def describe_short(short: list[tuple[str, int, int]], device: Device) -> str:
    """'needs 231 DP16KD block RAMs, lfe5u-85f has 208: 23 short' for each short resource."""
    names = {
        "DSP": f"{device.dsp_cell} multipliers",
        "BRAM": f"{device.bram_cell} block RAMs",
        "LUT": f"LUT{device.lut_inputs}s",
        "FF": "flip-flops",
        "URAM": "UltraRAMs",
    }
    return "; ".join(f"needs {n:,} {names[r]}, {device.name} has {a:,}: {n - a:,} short" for r, n, a in short)


def estimate_report(schedule: Schedule, device: Device | None) -> dict[str, Any]:
    """report.json's `hardware.estimate`: per engine and in total (against `device` when given)."""
    est = estimate(schedule)
    doc: dict[str, Any] = {
        "layers": {e.name: e.to_dict(device) for e in est.engines},
        "fifo_bits": sum(m.bits for m in est.fifos),
        "multipliers": sum(e.multipliers for e in est.engines),
    }
    if device is not None:
        cap = device.capacity()
        doc["device"] = device.name
        doc["totals"] = est.totals(device)
        doc["capacity"] = {r: cap[r] for r in doc["totals"]}
        doc["fits"] = not est.shortfalls(device)
    return doc


def fit_device(graph: Graph, config: BuildConfig, lower: Callable[..., Schedule], candidates: list[int]) -> Schedule:
    """The fastest schedule that fits `config.hardware.device`, or a ScheduleError naming what is short.

    `lower(target, cheapest=...)` schedules the graph with every layer at the cheapest folding
    (`folding_cost`: its share of the device's multipliers and block RAM) whose cycles per sample
    stay within `target`, or with `cheapest=False` at the fewest multipliers. More cycles never
    need more of the device, so the smallest target that fits is found by bisection over
    `candidates` (every cycle count a layer can take, at least hardware.target_ii): the smallest
    model II. Then, for a chain, what the device has left buys latency (`_spend_on_latency`).
    Layers with an explicit `reuse` keep it.
    """
    device = get_device(config.hardware.device)
    floor = config.hardware.target_ii
    targets = [t for t in candidates if t >= floor] or [floor or None]
    for cheapest in (True, False):
        tried: dict[int | None, tuple[Schedule, list[tuple[str, int, int]]]] = {}

        def attempt(i: int, cheapest: bool = cheapest, tried: dict = tried) -> list[tuple[str, int, int]]:
            if targets[i] not in tried:
                sched = lower(targets[i], cheapest=cheapest)
                tried[targets[i]] = (sched, estimate(sched).shortfalls(device))
            return tried[targets[i]][1]

        if attempt(len(targets) - 1):
            continue
        lo, hi = 0, len(targets) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if attempt(mid):
                lo = mid + 1
            else:
                hi = mid
        sched = tried[targets[hi]][0]
        break
    else:
        most_folded = lower(targets[-1], cheapest=False)
        _refuse(graph, config, most_folded, device, estimate(most_folded).shortfalls(device))
    sched = _spend_on_latency(sched, config, device)
    totals = estimate(sched).totals(device)
    cap = device.capacity()
    use = ", ".join(f"{r} {totals[r]:,}/{cap[r]:,}" for r in totals)
    log.info("fitted to %s: II %d cycles, latency %d cycles (%s)", device.name, sched.ii, sched.latency, use)
    note = f"foldings fitted to {device.name} ({device.part}), estimated {use}"
    return dataclasses.replace(sched, notes=(*sched.notes, note))


def _refuse(
    graph: Graph, config: BuildConfig, sched: Schedule, device: Device, short: list[tuple[str, int, int]]
) -> None:
    """Raise the ScheduleError of a model that fits at no folding (`sched`: its most folded form)."""
    fixed = [n for n in config.layers if config.layers[n].reuse is not None]
    est = estimate(sched)
    family = [d for d in devices(device.family) if not est.shortfalls(d)]
    advice = [
        f"choose a larger device ({family[0].name} holds it)" if family else f"no {device.family} device holds it",
        "use fewer weight bits (--weight-bits, or weight_bits per layer) to shrink the weight memories",
        "or prune the model",
    ]
    if fixed:
        advice.insert(0, f"raise or remove the explicit reuse of layer(s) {', '.join(sorted(fixed))} in [layers.*]")
    biggest = max(est.engines, key=lambda e: (e.bram(device), e.multipliers))
    raise ScheduleError(
        f"model '{graph.name}' does not fit {device.name} ({device.part}) at any folding; at its most folded "
        f"(every layer at its largest reuse, II {sched.ii:,} cycles) it {describe_short(short, device)}. "
        f"The largest engine is '{biggest.name}' ({biggest.multipliers} multipliers, {biggest.bram(device)} "
        f"{device.bram_cell}). What to do: {'; '.join(advice)}"
    )


#: moves the latency phase tries per layer and step (the next foldings by multiplier count), and steps
_MOVES_PER_LAYER = 4
_MAX_STEPS = 48


def _foldings(p: EnginePlan) -> list[tuple[int, int]]:
    """Every (PE, SIMD) a MAC engine can take: dense PE | out, SIMD | in; ungrouped conv PE | C_out,
    SIMD | C_in. Other engines (and grouped convs, whose lanes tie PE to the groups) have none."""
    divs = lambda n: [d for d in range(1, n + 1) if n % d == 0]  # noqa: E731
    if isinstance(p, DensePlan):
        return [(pe, simd) for _r, pe, simd in valid_foldings(p.in_features, p.out_features)]
    if isinstance(p, ConvPlan) and p.groups == 1:
        return [(pe, simd) for pe in divs(p.channels_out) for simd in divs(p.channels_in)]
    return []


def _refold(p: DensePlan | ConvPlan, pe: int, simd: int) -> DensePlan | ConvPlan:
    q = dataclasses.replace(p, pe=pe, simd=simd)
    t = et.engine_timing(q)
    return dataclasses.replace(q, latency=t.latency, ii=t.ii)


def _spend_on_latency(sched: Schedule, config: BuildConfig, device: Device) -> Schedule:
    """Unfold MAC engines while the device has room, the best latency gain per multiplier first.

    The II search gives every layer the cheapest folding its II allows, so layers off the critical
    interval (the small ones at the end of a chain, a CNN's dense head) run fully folded and add
    their whole weight count to the latency. Any folding whose interval stays within the model's
    II keeps the II; among the next few of each layer, the move that saves the most cycles per
    added multiplier is taken while the design still fits, until no move helps.
    """
    layers = list(sched.layers)
    free = [
        i
        for i, p in enumerate(layers)
        if isinstance(p, DensePlan | ConvPlan) and config.layer(p.name, p.source).reuse is None
    ]
    base = estimate(sched)
    in_count = sched.stream(sched.input.name).count if sched.streams else sched.input.count

    def latency(plans: list) -> int:
        if sched.is_chain:
            return chain_latency([(p.in_features, p.out_features, p.pe, p.simd) for p in plans])
        return et.graph_latency(plans, sched.input.name, in_count, sched.output.name)

    refolds: dict[tuple[int, int, int], Any] = {}  # (layer, PE, SIMD) -> (plan, its resources)

    def refold(i: int, pe: int, simd: int) -> Any:
        if (i, pe, simd) not in refolds:
            q = _refold(sched.layers[i], pe, simd)  # type: ignore[arg-type]  # free layers are MAC engines
            refolds[i, pe, simd] = (q, engine_resources(q))
        return refolds[i, pe, simd]

    engines = list(base.engines)
    current = latency(layers)
    for _step in range(_MAX_STEPS):
        best: tuple[float, int, int, Any, EngineResources] | None = None
        for i in free:
            p = layers[i]
            ahead = sorted(
                ((pe, simd) for pe, simd in _foldings(p) if pe * simd > p.multipliers),
                key=lambda o: (o[0] * o[1], -o[0]),
            )
            tried = 0
            for pe, simd in ahead:
                q, res = refold(i, pe, simd)
                if q.ii > sched.ii:
                    continue
                tried += 1
                if tried > _MOVES_PER_LAYER:
                    break
                trial = Estimate([*engines[:i], res, *engines[i + 1 :]], base.fifos, base.fifo_ff)
                if trial.shortfalls(device):
                    continue
                added = q.multipliers - p.multipliers
                gain = current - latency([*layers[:i], q, *layers[i + 1 :]])
                if gain > 0 and (best is None or gain / added > best[0]):
                    best = (gain / added, i, gain, q, res)
        if best is None:
            break
        _ratio, i, gain, layers[i], engines[i] = best
        current -= gain
    if all(a is b for a, b in zip(layers, sched.layers, strict=True)):
        return sched
    if sched.is_chain:
        return chain_schedule(sched.top, sched.model, layers, sched.input, sched.output, notes=sched.notes)
    return dataclasses.replace(sched, layers=tuple(layers), latency=current, ii=max(p.ii for p in layers))


__all__ = [
    "BRAM_COST",
    "EngineResources",
    "Estimate",
    "Memory",
    "bram_blocks",
    "describe_short",
    "engine_resources",
    "estimate",
    "estimate_report",
    "fit_device",
    "folding_cost",
    "in_bram",
    "weight_banks",
]
