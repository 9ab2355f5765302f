"""The EIE-style sparse engine for Dense layers: its plan, and its cycle model.

Why a second Dense engine: after fine-grained pruning most weights are zero, and after a ReLU
many activations are too. The dense MAC engine spends a multiplier cycle on each of them; this
engine spends cycles only on non-zero weights of non-zero activations.

Architecture (templates/rtl/sparse_dense.sv.j2, EIE):
- P processing elements; PE p owns output rows p, p+P, ... and holds their weights as CSC with
  short relative row indices and padding zeros (hwgen.passes.encode_sparse).
- Input elements arrive one per beat. A zero element is dropped (EIE's non-zero detection); a
  non-zero one is written, with its column index j, into the activation queue (K entries, one
  write port, one read pointer per PE, so every PE runs at its own pace: a PE with a long
  column does not hold the others back).
- Each PE, per queued activation (j, x_j): looks up column j (start, count) in its column ROM
  and issues its `count` entries, one per cycle: product value * x_j, row advanced by the
  relative index, accumulated into the PE's accumulator of that row (started from the bias).
- When every activation of the vector is consumed and the pipelines are empty, the DRAIN phase
  requantizes the M accumulators one per cycle (row order) into the output stream, then resets
  them to the biases. The next vector's elements are accepted (queued) during the drain, and
  processed once it ends.

Cycle model (conventions of hwgen.hw.timing: edges, free-flowing I/O unless offers are given).
Input element j of a vector is accepted at edge a_j (one per edge from the edge the vector may
start: the first vector at once, the next one at D+1 of the previous). For PE p, with t running
over the vector's non-zero activations in order and n_t = entries of PE p in column j_t:
    load_1 = max(a_{j_1} + 1, R),   load_{t+1} = max(a_{j_{t+1}} + 1, load_t + max(n_t, 1))
where R is the first edge the PEs run (the edge after the previous drain's last issue). The
entries of activation t issue at load_t + 1 .. load_t + n_t; an entry's product reaches its
accumulator `pipeline` edges after its issue (SPARSE_PIPELINE; one more with Huffman-coded weights). PE p is done at
    done_p = max(last issue + pipeline + 1, last load + 1)
and the drain starts at D = max(a_{K-1} + 1, R, max_p done_p). Output element o (row o) is
issued at D + 1 + o and accepted at D + 1 + o + DRAIN_STAGES; the PEs run again from
R' = D + M + 1.

Huffman-coded weights (`weight_coding = "huffman"`, hwgen.hw.huffman.HuffmanWeights): each PE's
weight codes are a canonical Huffman bit stream in two word banks; the column ROM also holds the
bit where each column's codes start. Loading an activation seeks the PE's decoder there (both
banks read the column's first two words at the load edge); each issue decodes one code (window,
length comparators, canonical rank) and advances the bit position, reading the next word into the
bank whose word it leaves. One code per cycle, so the issue rate and the recurrences above are
unchanged; the rank -> weight code table adds one stage (pipeline = SPARSE_PIPELINE + 1). The
relative row indices stay `index_bits` wide in their own ROM.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hwgen.errors import ScheduleError
from hwgen.hw.huffman import DEFAULT_WEIGHT_MAX_LEN, HUFFMAN_PE_STAGES, HuffmanWeights, code_weights
from hwgen.hw.plan import IntType, Requant, Schedule
from hwgen.hw.schedule import mac_types, model_hash, product_type
from hwgen.passes.encode_sparse import CscEncoding, encode_csc

if TYPE_CHECKING:
    from hwgen.hw.plan import DensePlan
    from hwgen.hw.resources import EngineResources

#: PE pipeline: issue (entry ROM read) -> product and row -> accumulator write; the last
#: accumulator write is this many edges after its issue edge
SPARSE_PIPELINE = 2
#: drain pipeline: accumulator select -> round + shift -> clamp -> output beat
DRAIN_STAGES = 3
#: output FIFO depth (elements): one more than the drain pipeline, so a free sink never stalls it
SPARSE_OUT_FIFO_DEPTH = DRAIN_STAGES + 1
#: default relative-index width (EIE's 4 bits)
DEFAULT_INDEX_BITS = 4
#: how a sparse engine stores its weight codes: plain (W bits per entry) or Huffman-coded per PE
WEIGHT_CODINGS = ("plain", "huffman")
_NEVER = -(1 << 40)


@dataclass(frozen=True, eq=False)
class SparseDensePlan:
    """A fully-connected layer on the EIE-style sparse engine (see the module docstring).

    Widths are those of the dense engine for the same weights (hwgen.hw.schedule.mac_types), so
    the accumulator cannot overflow for any input; `csc` is the weight memory of every PE.
    `latency`/`ii` are the worst case (every input element non-zero); the real cycles depend on
    the activations (`sparse_run`).
    """

    name: str  #: legal identifier (hw.names.legalize), unique in the design
    source: str  #: the ONNX node name (for comments)
    in_features: int
    out_features: int
    pes: int  #: processing elements; PE p owns rows p, p+P, ...
    index_bits: int  #: relative row index width of a CSC entry
    inp: IntType
    w: IntType
    prod: IntType
    acc: IntType
    out: IntType
    bias: IntType
    requant: Requant
    weights: np.ndarray = field(repr=False)  #: int64 codes [out_features, in_features] (mostly zero)
    biases: np.ndarray = field(repr=False)  #: int64 codes [out_features], accumulator units
    csc: CscEncoding = field(repr=False)  #: the weights as P interleaved CSC memories
    #: the entries' weight codes as per-PE Huffman streams (weight_coding "huffman"), else None
    huffman: HuffmanWeights | None = field(default=None, repr=False)
    latency: int = 0  #: worst case (all inputs non-zero), free-flowing I/O
    ii: int = 0  #: worst case, start-to-start of consecutive vectors
    engine: str = "sparse_dense"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        """Accumulators per PE: ceil(M / P)."""
        return -(-self.out_features // self.pes)

    @property
    def multipliers(self) -> int:
        return self.pes

    @property
    def weight_coding(self) -> str:
        return "plain" if self.huffman is None else "huffman"

    @property
    def pipeline(self) -> int:
        """Edges from an entry's issue to its accumulator write."""
        return SPARSE_PIPELINE + (0 if self.huffman is None else HUFFMAN_PE_STAGES)

    @property
    def queue_depth(self) -> int:
        """Activation queue entries: a whole vector's non-zeros."""
        return self.in_features

    @property
    def density(self) -> float:
        return float(np.count_nonzero(self.weights)) / max(1, self.weights.size)


def plan_sparse_dense(
    name: str,
    source: str,
    weights: np.ndarray,
    biases: np.ndarray,
    inp: IntType,
    out: IntType,
    requant: Requant,
    *,
    pes: int,
    index_bits: int = DEFAULT_INDEX_BITS,
    weight_coding: str = "plain",
    max_code_length: int = DEFAULT_WEIGHT_MAX_LEN,
) -> SparseDensePlan:
    """A SparseDensePlan with every width derived as for the dense engine, and its worst-case timing.

    weight_coding "huffman" stores the weight codes as per-PE Huffman streams (codes of at most
    max_code_length bits), decoded one per cycle in front of the multiplier.
    """
    weights = np.asarray(weights, dtype=np.int64)
    biases = np.asarray(biases, dtype=np.int64)
    if weights.ndim != 2 or biases.shape != (weights.shape[0],):
        raise ScheduleError(f"layer '{source}': weights {weights.shape} and biases {biases.shape} do not match")
    m, k = weights.shape
    if not 1 <= pes <= m:
        raise ScheduleError(f"layer '{source}': {pes} sparse PEs for {m} outputs; use 1 <= pes <= {m}")
    w_type, b_type, acc = mac_types(weights, biases, inp)
    if weight_coding not in WEIGHT_CODINGS:
        raise ScheduleError(f"layer '{source}': weight_coding {weight_coding!r}; use one of {list(WEIGHT_CODINGS)}")
    csc = encode_csc(weights, pes=pes, index_bits=index_bits, where=f"layer '{source}'")
    huffman = code_weights(csc, max_code_length, f"layer '{source}'") if weight_coding == "huffman" else None
    plan = SparseDensePlan(
        name=name,
        source=source,
        in_features=k,
        out_features=m,
        pes=pes,
        index_bits=index_bits,
        inp=inp,
        w=w_type,
        prod=product_type(inp, w_type),
        acc=acc,
        out=out,
        bias=b_type,
        requant=requant,
        weights=weights,
        biases=biases,
        csc=csc,
        huffman=huffman,
    )
    latency, ii = worst_case_timing(plan)
    return dataclasses.replace(plan, latency=latency, ii=ii)


def sparse_from_dense(
    p: DensePlan,
    *,
    pes: int,
    index_bits: int = DEFAULT_INDEX_BITS,
    weight_coding: str = "plain",
    max_code_length: int = DEFAULT_WEIGHT_MAX_LEN,
) -> SparseDensePlan:
    """The sparse engine computing a dense plan's layer: same name, streams, widths and requantization."""
    sp = plan_sparse_dense(
        p.name,
        p.source,
        p.weights,
        p.biases,
        p.inp,
        p.out,
        p.requant,
        pes=pes,
        index_bits=index_bits,
        weight_coding=weight_coding,
        max_code_length=max_code_length,
    )
    return dataclasses.replace(sp, inputs=p.inputs, outputs=p.outputs)


# -- cycle model ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SparseRun:
    """Edges of a run of the sparse engine over N vectors (the module docstring's recurrences)."""

    in_edges: np.ndarray  #: int64 [N, K]: edge each input element is accepted
    out_edges: np.ndarray  #: int64 [N, M]: edge each output element is accepted
    drain_start: np.ndarray  #: int64 [N]: D of each vector
    pe_cycles: np.ndarray  #: int64 [N, P]: cycles each PE spends on each vector's activations

    @property
    def latencies(self) -> np.ndarray:
        """First input -> last output of each vector."""
        return self.out_edges[:, -1] - self.in_edges[:, 0]


def _pe_done(
    counts: np.ndarray, cols: np.ndarray, avail: np.ndarray, run_from: int, pipeline: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per PE: the edge it is done with a vector, and its busy cycles (sum of max(n_t, 1))."""
    p = counts.shape[0]
    done = np.full(p, _NEVER, dtype=np.int64)
    if cols.size == 0:
        return done, np.zeros(p, dtype=np.int64)
    n = counts[:, cols]  # [P, T]
    cost = np.maximum(n, 1)
    load = np.full(p, run_from, dtype=np.int64)
    prev_cost = np.zeros(p, dtype=np.int64)
    last_issue = np.full(p, _NEVER, dtype=np.int64)
    for t in range(cols.size):
        load = np.maximum(avail[t], load + prev_cost) if t else np.maximum(avail[t], load)
        prev_cost = cost[:, t]
        last_issue = np.where(n[:, t] > 0, load + n[:, t], last_issue)
    done = np.maximum(last_issue + pipeline + 1, load + 1)
    return done, cost.sum(axis=1)


def sparse_run(plan: SparseDensePlan, x_codes: np.ndarray, offers: np.ndarray | None = None) -> SparseRun:
    """Cycle model of N vectors through the engine with a sink that is always ready.

    offers: int64 [N, K], the edge each input element is first offered (default: a source that
    never idles, vector 0 from edge 0). An element is accepted at its offer or later: one per
    edge, and a vector's first element no earlier than the edge after the previous drain starts.
    """
    x = np.asarray(x_codes).reshape(-1, plan.in_features)
    n_vec, k, m = x.shape[0], plan.in_features, plan.out_features
    if offers is None:
        offers = np.zeros((n_vec, k), dtype=np.int64)
    offers = np.asarray(offers, dtype=np.int64).reshape(n_vec, k)
    counts = plan.csc.counts()
    in_edges = np.zeros((n_vec, k), dtype=np.int64)
    out_edges = np.zeros((n_vec, m), dtype=np.int64)
    drains = np.zeros(n_vec, dtype=np.int64)
    busy = np.zeros((n_vec, plan.pes), dtype=np.int64)
    run_from, accept_from = _NEVER, _NEVER
    for v in range(n_vec):
        # accepted one per edge, each no earlier than offered: a_j = max(offer_j, a_{j-1} + 1)
        idx = np.arange(k, dtype=np.int64)
        start = np.maximum(offers[v], accept_from)
        a = np.maximum.accumulate(start - idx) + idx
        in_edges[v] = a
        cols = np.flatnonzero(x[v])
        done, busy[v] = _pe_done(counts, cols, a[cols] + 1, run_from, plan.pipeline)
        d = int(max(a[-1] + 1, run_from, done.max()))
        drains[v] = d
        out_edges[v] = d + 1 + np.arange(m) + DRAIN_STAGES
        run_from, accept_from = d + m + 1, d + 1
    return SparseRun(in_edges=in_edges, out_edges=out_edges, drain_start=drains, pe_cycles=busy)


def sparse_beats(plan: SparseDensePlan, offers: np.ndarray, x_row: np.ndarray) -> np.ndarray:
    """Edges the output elements of one vector are offered, given its input offers (engine idle)."""
    return sparse_run(plan, np.asarray(x_row).reshape(1, -1), np.asarray(offers).reshape(1, -1)).out_edges[0]


def worst_case_timing(plan: SparseDensePlan) -> tuple[int, int]:
    """(latency, II) with every input element non-zero and free-flowing I/O."""
    ones = np.ones((3, plan.in_features), dtype=np.int64)
    r = sparse_run(plan, ones)
    return int(r.latencies[0]), int(r.out_edges[2, -1] - r.out_edges[1, -1])


# -- schedules with sparse engines ----------------------------------------------------------------
def chain_beats(schedule: Schedule, x_row: np.ndarray | None = None) -> np.ndarray:
    """Edges the output beats of one sample leave a chain of dense / sparse engines (free I/O).

    With `x_row` (the input codes) each sparse engine is timed on its real input, computed with
    the golden model's dense kernel; without it, on all-non-zero inputs (the worst case).
    """
    from hwgen.hw.engine_timing import engine_beats
    from hwgen.hw.plan import DensePlan
    from hwgen.sim.integer_kernels import dense

    offers = np.zeros(schedule.input.count, dtype=np.int64)
    x = None if x_row is None else np.asarray(x_row, dtype=np.int64).reshape(1, -1)
    for p in schedule.layers:
        if not isinstance(p, DensePlan | SparseDensePlan):
            raise ScheduleError(f"layer '{p.source}': chain timing covers dense and sparse engines only")
        if isinstance(p, SparseDensePlan):
            row = np.ones(p.in_features, dtype=np.int64) if x is None else x[0]
            offers = sparse_beats(p, offers, row)
        else:
            offers = engine_beats(p, [offers])
        if x is not None:
            rq = p.requant
            x = dense(x, p.weights, p.biases, shift=rq.shift, rounding=rq.rounding, lo=rq.lo, hi=rq.hi)
    return offers


def _hash_key(p: object) -> tuple[object, ...]:
    return type(p).__name__, getattr(p, "name", None), getattr(p, "pes", None), getattr(p, "weight_coding", None)


def replace_layers(schedule: Schedule, plans: dict[int, SparseDensePlan]) -> Schedule:
    """The Schedule with the layers at the given indices replaced (same streams), timing and hash redone.

    For chains of dense / sparse engines (the MLP form): latency from `chain_beats` (worst case),
    II the largest engine II.
    """
    layers = list(schedule.layers)
    for i, plan in plans.items():
        old = layers[i]
        if (plan.in_features, plan.out_features, plan.inp, plan.out) != (
            old.in_features,
            old.out_features,
            old.inp,
            old.out,
        ):
            raise ScheduleError(f"layer '{old.source}': the replacement does not read/write the same streams")
        layers[i] = dataclasses.replace(plan, inputs=old.inputs, outputs=old.outputs)
    new = dataclasses.replace(schedule, layers=tuple(layers))
    digest = model_hash(
        *[a for p in layers for a in (p.weights, p.biases)],
        extra=schedule.model_hash
        + repr(
            [(type(p).__name__, p.name, getattr(p, "pes", None), getattr(p, "weight_coding", None)) for p in layers]
        ),
    )
    return dataclasses.replace(new, latency=int(chain_beats(new)[-1]), ii=max(p.ii for p in layers), model_hash=digest)


def column_word_bits(plan: SparseDensePlan) -> int:
    """Bits of a column ROM word as templates/rtl/sparse_dense.sv.j2 declares it (hwgen.hw.rtl_emit.sparse_context):
    {first code bit (Huffman only), first entry, entries}, each wide enough for the largest PE."""
    enc = plan.csc
    ea_w = max(1, max(c.entries for c in enc.pe_columns).bit_length())
    cnt_w = max(1, int(enc.counts().max(initial=0)).bit_length())
    return (0 if plan.huffman is None else plan.huffman.bit_addr_bits) + ea_w + cnt_w


def storage_parts(plan: SparseDensePlan) -> dict[str, int]:
    """Bits of the layer's weight memories by part; the parts add up to everything the engine stores.

    Why by part: pruning, coding and indexing each cost memory, and a report should say which.
    Plain: `values` (non-zero weight codes, W bits), `indices` (their relative row indices),
    `padding` (padding zeros: value and index), `column_pointers` (the column ROMs).
    Huffman: `huffman_codes` (the non-zero weights' codes), `stream_fill` (the streams' word fill and
    zero words after each stream), `decoder_tables` (length limits, rank offsets, rank -> weight
    code: one copy, shared by the PEs), `indices`, `padding` (the padding zeros' codes and indices),
    `column_pointers` (the column ROMs, which also hold each column's first code bit).
    Biases are not part of the weight memory (report.json counts them beside it).
    """
    enc, hw = plan.csc, plan.huffman
    pad, real = enc.padding, enc.entries - enc.padding
    parts: dict[str, int] = {}
    if hw is None:
        parts["values"] = real * plan.w.bits
        pad_value_bits = pad * plan.w.bits
    else:
        pad_value_bits = pad * int(hw.code.lengths[0]) if pad else 0  # symbol 0 is the padding zero
        parts["huffman_codes"] = hw.payload_bits - pad_value_bits
        parts["stream_fill"] = hw.stored_bits - hw.payload_bits
        parts["decoder_tables"] = hw.table_bits(plan.w.bits)
    parts["indices"] = real * plan.index_bits
    parts["padding"] = pad * plan.index_bits + pad_value_bits
    parts["column_pointers"] = plan.pes * plan.in_features * column_word_bits(plan)
    return parts


def storage(plan: SparseDensePlan) -> dict[str, object]:
    """The layer's weight memory (report.json `sparse.storage`): totals, `parts` (storage_parts), and for
    Huffman-coded weights the stream bits against the entropy bound."""
    parts = storage_parts(plan)
    pointer_bits = parts["column_pointers"]
    if plan.huffman is not None:
        from hwgen.hw.huffman import storage as huffman_storage

        doc = huffman_storage(plan.huffman, plan.csc, plan.w.bits, pointer_bits)
    else:
        enc = plan.csc
        doc = {
            "weight_coding": "plain",
            "entries": enc.entries,
            "value_bits": enc.entries * plan.w.bits,
            "index_bits": enc.entries * plan.index_bits,
            "pointer_bits": pointer_bits,
        }
    doc["parts"] = parts
    doc["total_bits"] = sum(parts.values())
    return doc


def _by_depth(what: str, depths: list[int], width: int, banks: int = 1) -> list[tuple[str, int, int, int]]:
    """(what, depth, width, copies): one entry per distinct per-PE depth (PEs of equal depth are copies)."""
    out = []
    for d in sorted(set(depths)):
        pes = [p for p, dp in enumerate(depths) if dp == d]
        where = f"PE {pes[0]}" if len(pes) == 1 else f"{len(pes)} PEs"
        out.append((f"{what} ({where})", d, width, banks * len(pes)))
    return out


def sparse_resources(plan: SparseDensePlan) -> EngineResources:
    """hwgen.hw.resources' estimate of the engine (an EngineResources): every memory sparse_dense.sv.j2
    declares, at its depth and width, and rough LUT/FF.

    Why its own model: the generic one counts the dense weight matrix. Per PE the engine stores its CSC
    entries ({relative index, weight code}; Huffman-coded: the indices, and the code stream in two word
    banks), its column ROM and its biases; one decoder table (rank -> weight code) is shared; the
    activation queue is written at run time. Accumulators are registers.
    """
    from hwgen.hw.resources import CONTROL_FF, CONTROL_LUT, EngineResources, Memory

    enc, hw = plan.csc, plan.huffman
    depths = [max(1, c.entries) for c in enc.pe_columns]
    col_w = column_word_bits(plan)
    if hw is None:
        mems = _by_depth("entries {index, weight}", depths, plan.index_bits + plan.w.bits)
    else:
        mems = _by_depth("relative indices", depths, plan.index_bits)
        rows = [hw.words(p).size // 2 for p in range(plan.pes)]
        mems += _by_depth("Huffman weight stream, 2 banks", rows, hw.word_bits, banks=2)
        mems.append(("decoder table (rank -> weight code)", int(hw.code.sorted_symbols.size), plan.w.bits, 1))
    mems += _by_depth("columns", [plan.in_features] * plan.pes, col_w)
    mems.append(("biases", plan.rows, plan.bias.bits, plan.pes))
    memories = [Memory(what, d, w, c) for what, d, w, c in mems]
    j_w = max(1, (plan.in_features - 1).bit_length())
    memories.append(Memory("activation queue", plan.in_features, j_w + plan.inp.bits, rom=False))
    acc, req = plan.acc.bits, plan.acc.bits + 2
    # per PE: accumulator adder + row select, column/entry counters; Huffman: window shifter and length comparators
    pe_lut = 2 * acc + 2 * col_w
    pe_ff = plan.rows * acc + plan.inp.bits + plan.w.bits + plan.prod.bits + col_w + plan.index_bits
    if hw is not None:
        pw = max(1, (hw.word_bits - 1).bit_length())
        pe_lut += 2 * hw.word_bits * pw // 2 + hw.window * hw.window
        pe_ff += 2 * hw.word_bits + hw.word_addr_bits + pw + hw.rank_bits
    return EngineResources(
        plan.name, plan.engine, multipliers=plan.pes, memories=memories,
        lut=plan.pes * pe_lut + 2 * req + CONTROL_LUT, ff=plan.pes * pe_ff + req + plan.out.bits + CONTROL_FF,
    )  # fmt: skip


def dense_equivalent_cycles(in_features: int, out_features: int, multipliers: int) -> int:
    """Compute cycles of the dense engine with the same multipliers: K*M / (PE*SIMD) tiles."""
    return -(-in_features * out_features // multipliers)


__all__ = [
    "DEFAULT_INDEX_BITS",
    "DRAIN_STAGES",
    "SPARSE_OUT_FIFO_DEPTH",
    "SPARSE_PIPELINE",
    "WEIGHT_CODINGS",
    "SparseDensePlan",
    "SparseRun",
    "chain_beats",
    "column_word_bits",
    "dense_equivalent_cycles",
    "plan_sparse_dense",
    "replace_layers",
    "sparse_beats",
    "sparse_resources",
    "sparse_run",
    "storage",
    "storage_parts",
    "worst_case_timing",
]
