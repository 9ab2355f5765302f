"""Low-precision matrix-vector MAC engines, one datapath per number-format family (issue 5, part 6).

Why a separate engine: the dense engine multiplies fixed-point codes; the formats of
`hwgen.numerics` decode to exact dyadic values m * 2**e, and each family has a cheaper exact
datapath than "decode to wide fixed point, then multiply" (DESIGN, "Hardware shape"):

- fixed point: one multiplier per lane, on a DSP or (``mul="lut"``) as shift-add on LUTs;
- minifloat: decode (sign, exponent, significand with the hidden bit or a denormal), multiply the
  significands, shift the product by the exponent sum;
- block floating point / block minifloat: integer (or minifloat) products within a block, the
  block's sum shifted once by the shared exponents (biases);
- block logarithm: shift-only, the activation shifted by the weight exponent, sign applied;
- binary: XNOR-popcount when both operands are binary, sign-select add/sub otherwise; ternary:
  add/subtract/skip; the alpha scales are applied once per output row, as a shift-add multiply
  by an integer row scale (no multiplier cell).

The engine (templates/rtl/fmac.sv.j2, templates/hls/fmac.h.j2) holds the weights [M, K] as codes
(and their shared fields) in a ROM, reads one activation code per beat (its block's shared field
packed above it), and reduces K with `lanes` lanes per cycle. Its output is the exact accumulator
of `hwgen.sim.format_mac.dot_exact` at `accumulator_spec`'s LSB, or that value requantized.

Exactness: every term, block shift and the accumulator are computed modulo 2**acc_hw_bits (two's
complement wrap). The final value fits (accumulator_spec proves it), so the wrapped arithmetic is
exact. The hardware accumulates at LSB 2**hw_lsb (the least exponent its decoders can produce,
so every shift is non-negative); `drop` = spec.lsb - hw_lsb zero bits are dropped at the output.
Activations must stay within `a_shared` (the shared-field range the engine was planned for).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.errors import FormatError, ScheduleError
from hwgen.hw.names import legalize
from hwgen.hw.plan import IntType, Requant
from hwgen.numerics import (
    BlockCodes,
    BlockFloat,
    BlockLog,
    BlockMinifloat,
    FixedPoint,
    Minifloat,
    QuantFormat,
    Ternary,
    shift_round,
)
from hwgen.numerics.binary import SCALE_FORMAT, Binary, scale_code
from hwgen.sim.format_mac import AccSpec, accumulator_spec, dot_exact

#: register stages from the issue edge to the output register (S1 operands, S2 lane terms,
#: S3 cycle sum, S4 accumulator, S5 row scale + round, output register = clamp)
PIPE_STAGES = 5
#: widest raw-accumulator output the benches read back (they collect int64 codes)
MAX_OUT_BITS = 64
MUL_KINDS = ("dsp", "lut")


# -- operand decoders ------------------------------------------------------------------------
@dataclass(frozen=True)
class Operand:
    """How one operand's element codes (and shared field) become (m, shift) in the engine.

    kind: "int" (fixed point, BFP mantissa), "float" (minifloat element), "log" (block-log
    element: +-2**f or 0), "sign" (binary: 1 -> +1, 0 -> -1), "tern" (ternary -1/0/+1).
    Value of an element = m * 2**(el_base + ex) * 2**(sh_base + sh) (times the row/tensor alpha
    for binary and ternary), with ex and sh non-negative shift amounts the hardware computes.
    """

    fmt: str  #: the format's canonical name
    kind: str
    code_bits: int  #: element code bits
    signed: bool  #: int kind: the code is two's complement
    exp_bits: int  #: float/log kinds: exponent field bits
    man_bits: int  #: float kind: mantissa field bits
    denorm: bool  #: float kind: f = 0 is denormal
    m_bits: int  #: signed width of the decoded significand m
    ex_max: int  #: largest element shift (0: the element has no exponent)
    el_base: int  #: exponent of ex = 0
    shared_bits: int  #: bits of the per-block shared field (0: none)
    shared_sign: int  #: +1 (shared exponent) or -1 (shared bias): contribution = sign * code
    sh_base: int  #: least shared contribution the engine accepts (sh = contribution - sh_base)
    sh_max: int  #: largest shared shift
    block: int  #: elements per block along K (0: no blocks)

    @property
    def ex_bits(self) -> int:
        return max(1, self.ex_max.bit_length())

    @property
    def sh_bits(self) -> int:
        return max(1, self.sh_max.bit_length())

    @property
    def beat_bits(self) -> int:
        """Bits of one stream beat / ROM entry: the element code, the shared code above it."""
        return self.code_bits + self.shared_bits


def _element(fmt: QuantFormat) -> dict[str, Any]:
    """The element decoder's fields of a format (shared fields excluded)."""
    none = {"signed": True, "exp_bits": 0, "man_bits": 0, "denorm": False, "ex_max": 0}
    if isinstance(fmt, FixedPoint):
        return {**none, "kind": "int", "code_bits": fmt.bits, "signed": fmt.signed,
                "m_bits": fmt.bits + (0 if fmt.signed else 1), "el_base": -fmt.frac}  # fmt: skip
    if isinstance(fmt, BlockFloat):
        return {**none, "kind": "int", "code_bits": fmt.bits, "m_bits": fmt.bits, "el_base": 0}
    if isinstance(fmt, Minifloat | BlockMinifloat):
        el = fmt if isinstance(fmt, Minifloat) else fmt.element
        r = el.dyadic_range()
        return {**none, "kind": "float", "code_bits": el.bits, "exp_bits": el.exp_bits, "man_bits": el.man_bits,
                "denorm": el.denorm, "m_bits": el.man_bits + 2, "ex_max": r.e_max - r.e_min,
                "el_base": r.e_min}  # fmt: skip
    if isinstance(fmt, BlockLog):
        return {**none, "kind": "log", "code_bits": fmt.bits, "exp_bits": fmt.exp_bits, "m_bits": 2,
                "ex_max": (1 << fmt.exp_bits) - 2, "el_base": 1}  # fmt: skip
    if isinstance(fmt, Binary):
        return {**none, "kind": "sign", "code_bits": 1, "m_bits": 2, "el_base": 0}
    if isinstance(fmt, Ternary):
        return {**none, "kind": "tern", "code_bits": 2, "m_bits": 2, "el_base": 0}
    raise FormatError(f"format engine: no datapath for {getattr(fmt, 'name', fmt)!r}; use a hwgen.numerics format")


def _shared(fmt: QuantFormat) -> tuple[int, int, int]:
    """(shared field bits, sign of its contribution to the exponent, block) of a block format."""
    if isinstance(fmt, BlockFloat):
        return fmt.exp_bits, 1, fmt.block
    if isinstance(fmt, BlockMinifloat):
        return fmt.bias_bits, -1, fmt.block
    if isinstance(fmt, BlockLog):
        return fmt.shared_bits, 1, fmt.block
    return 0, 1, 0


def make_operand(fmt: QuantFormat, shared_range: tuple[int, int] | None) -> Operand:
    """The decoder of `fmt`; `shared_range` = (lo, hi) of the shared codes it must accept."""
    el = _element(fmt)
    bits, sign, block = _shared(fmt)
    sh_base = sh_max = 0
    if bits:
        lo, hi = shared_range if shared_range is not None else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        c_lo, c_hi = sorted((sign * lo, sign * hi))
        sh_base, sh_max = c_lo, c_hi - c_lo
    return Operand(fmt=fmt.name, shared_bits=bits, shared_sign=sign, sh_base=sh_base, sh_max=sh_max, block=block, **el)


def _alpha(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(significand, exponent) of SCALE_FORMAT alpha codes."""
    m, e = SCALE_FORMAT.decode(np.asarray(codes, dtype=np.int64))
    return m.astype(np.int64), e.astype(np.int64)


# -- the plan ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FormatEnginePlan:
    """A matrix-vector MAC engine y = W a for weights W [M, K] in `w_fmt`, activations in `a_fmt`.

    Stream: K beats per vector, beat k = activation code k (low a.code_bits bits) with its
    block's shared code above it; M output beats, row order, tlast on the last.
    Cycles (free-flowing I/O): load K, compute M*KS (KS = K/lanes issue cycles per row), then
    PIPE_STAGES to the last output beat: latency = K + M*KS + PIPE_STAGES, ii = K + M*KS.
    """

    name: str  #: legal identifier (module / function name)
    source: str  #: what it computes, for the comments
    w_fmt: QuantFormat
    a_fmt: QuantFormat
    m: int  #: output rows
    k: int  #: fan-in
    lanes: int  #: parallel lanes of the K reduction (divides K)
    mul: str  #: "dsp" or "lut": how an integer product is built (mul datapath only)
    w: Operand
    a: Operand
    datapath: str  #: "mul" | "select" | "xnor"
    select_w: bool  #: select datapath: the weight is the +-1/0 operand (else the activation)
    w_codes: np.ndarray  #: [M, K] element codes
    w_shared: np.ndarray | None  #: [M, KS, groups] shared codes of each issue's lane groups
    row_scale: np.ndarray | None  #: [M] integer scale per row (binary/ternary alphas), else None
    groups: int  #: lane groups per issue (one shared field each)
    gsize: int  #: lanes per group
    acc: AccSpec  #: the exact accumulator (format_mac.accumulator_spec)
    hw_lsb: int  #: exponent of the hardware accumulator's LSB
    a_shared: tuple[int, int] | None  #: accepted activation shared-code range
    requant: Requant | None  #: None: the output is the accumulator itself
    out: IntType  #: output code type
    prod_bits: int  #: one lane product (signed, exact)
    term_bits: int  #: one lane term (product shifted by the element exponents), exact or = acc_hw_bits
    group_bits: int  #: one lane group's sum, exact or = acc_hw_bits
    rs_bits: int  #: row-scale bits (0: no row scale)
    codes: BlockCodes | np.ndarray  #: the weight codes as encoded (what the golden model reads)

    @property
    def ks(self) -> int:
        return self.k // self.lanes

    @property
    def fingerprint(self) -> str:
        """Hash of what the hardware computes (formats, codes, folding, output), for file headers."""
        h = hashlib.sha256(repr((self.w_fmt.name, self.a_fmt.name, self.lanes, self.mul, self.a_shared)).encode())
        h.update(np.ascontiguousarray(self.w_codes).tobytes())
        if self.w_shared is not None:
            h.update(np.ascontiguousarray(self.w_shared).tobytes())
        if self.row_scale is not None:
            h.update(repr([int(v) for v in self.row_scale]).encode())
        h.update(repr((self.requant, self.out)).encode())
        return h.hexdigest()[:16]

    @property
    def drop(self) -> int:
        """Zero LSBs of the hardware accumulator below the spec's LSB."""
        return self.acc.lsb - self.hw_lsb

    @property
    def acc_hw_bits(self) -> int:
        return self.acc.width + self.drop

    @property
    def inp(self) -> IntType:
        """One input beat: the activation code, its shared code above it (unsigned)."""
        return IntType(self.a.beat_bits, False)

    @property
    def shift_max(self) -> int:
        return self.w.ex_max + self.a.ex_max

    @property
    def gshift_max(self) -> int:
        return self.w.sh_max + self.a.sh_max

    @property
    def cycles(self) -> int:
        """Compute cycles per vector (issues)."""
        return self.m * self.ks

    @property
    def ii(self) -> int:
        return self.k + self.cycles

    @property
    def latency(self) -> int:
        return self.k + self.cycles + PIPE_STAGES

    def weight_storage_bits(self) -> int:
        """The format's own figure for the weight tensor (elements, shared fields, scales)."""
        fmt = self.w_fmt
        shape = (self.m, self.k)
        if isinstance(fmt, Binary | Ternary):
            return int(fmt.storage_bits(shape, axis=0))
        if isinstance(fmt, BlockFloat | BlockMinifloat | BlockLog):
            return int(fmt.storage_bits(shape, axis=-1))
        return int(fmt.storage_bits(shape))


def _group_layout(w: Operand, a: Operand, lanes: int, k: int, where: str) -> tuple[int, int]:
    blocks = {op.block for op in (w, a) if op.block}
    if len(blocks) > 1:
        raise ScheduleError(
            f"{where}: weight and activation blocks differ ({sorted(blocks)}); give both one block size"
        )
    if not blocks:
        return 1, lanes
    block = blocks.pop()
    if lanes % block and block % lanes:
        raise ScheduleError(f"{where}: lanes={lanes} and block={block}: one must divide the other")
    if lanes >= block:
        return lanes // block, block
    return 1, lanes


def _datapath(w: Operand, a: Operand) -> tuple[str, bool]:
    unit = ("sign", "tern", "log")
    if w.kind == "sign" and a.kind == "sign":
        return "xnor", True
    if w.kind in unit:
        return "select", True
    if a.kind in unit:
        return "select", False
    return "mul", True


def _scales(fmt: QuantFormat, codes: BlockCodes | np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-row (alpha significand, alpha exponent) of binary/ternary weights, else None."""
    if not isinstance(fmt, Binary | Ternary) or not isinstance(codes, BlockCodes):
        return None
    return _alpha(codes.shared_per_element()[:, 0])


def plan_format_engine(
    name: str,
    w_fmt: QuantFormat,
    w_codes: BlockCodes | np.ndarray,
    a_fmt: QuantFormat,
    *,
    lanes: int,
    a_shared: tuple[int, int] | None = None,
    mul: str | None = None,
    requant: Requant | None = None,
    out: IntType | None = None,
    source: str = "",
) -> FormatEnginePlan:
    """Plan the engine of one layer: decoders, lane groups, widths and the accumulator.

    w_codes: `w_fmt.encode(W)` of weights [M, K] (block formats blocked along K, axis=-1;
    binary/ternary per tensor or per output channel). a_shared: the shared-code range the
    activations' blocks use (default the whole field; a calibrated range gives a narrower
    accumulator). mul: how integer products are built, "dsp" or "lut" (shift-add); default
    "lut" for minifloat significands (at most a few bits: a DSP would be wasted), else "dsp".
    requant + out: requantize the accumulator; else out = the accumulator.
    """
    where = f"format engine '{name}' ({w_fmt.name} x {a_fmt.name})"
    if mul is None:
        mul = (
            "lut"
            if isinstance(w_fmt, Minifloat | BlockMinifloat) or isinstance(a_fmt, Minifloat | BlockMinifloat)
            else "dsp"
        )
    if mul not in MUL_KINDS:
        raise ScheduleError(f"{where}: mul={mul!r}; use one of {', '.join(MUL_KINDS)}")
    if isinstance(a_fmt, Binary | Ternary) and a_fmt.alpha is None:
        raise ScheduleError(
            f"{where}: activations in {a_fmt.name} need a fixed alpha (e.g. '{a_fmt._family}<alpha=0.5>'): "
            "the engine applies the activation scale as a constant"
        )
    el = np.asarray(w_codes.elements if isinstance(w_codes, BlockCodes) else w_codes, dtype=np.int64)
    if el.ndim != 2:
        raise ScheduleError(f"{where}: weight codes must be [M, K], got shape {el.shape}")
    m, k = el.shape
    if not isinstance(lanes, int) or lanes < 1 or k % lanes:
        raise ScheduleError(f"{where}: lanes={lanes!r} must be a positive divisor of K={k}")
    w_fmt.decode(w_codes)  # validates the codes
    w_sh = None
    if isinstance(w_codes, BlockCodes) and w_codes.axis is not None:
        if w_codes.axis != 1:
            raise ScheduleError(f"{where}: weight blocks run along axis {w_codes.axis}; encode with axis=-1 (along K)")
        w_sh = np.asarray(w_codes.shared, dtype=np.int64)
    w_op = make_operand(w_fmt, (int(w_sh.min()), int(w_sh.max())) if w_sh is not None else None)
    a_op = make_operand(a_fmt, a_shared)
    groups, gsize = _group_layout(w_op, a_op, lanes, k, where)
    datapath, select_w = _datapath(w_op, a_op)

    # binary/ternary: the alphas become one integer scale per row; their exponents set the base
    row_scale = None
    w_scales = _scales(w_fmt, w_codes)
    if w_scales is not None:
        am, ae = w_scales
        live = am != 0
        base = int(ae[live].min()) if live.any() else 0
        rs = np.where(live, am.astype(object) * (2 ** np.maximum(ae - base, 0)).astype(object), 0)
        w_op = replace(w_op, el_base=base)
        row_scale = rs
    if isinstance(a_fmt, Binary | Ternary):
        aam, aae = _alpha(scale_code(np.array([a_fmt.alpha])))
        a_op = replace(a_op, el_base=int(aae[0]))
        row_scale = (row_scale if row_scale is not None else np.ones(m, dtype=object)) * int(aam[0])
    rs_bits = int(max(int(v) for v in row_scale)).bit_length() if row_scale is not None else 0
    if row_scale is not None:
        rs_bits = max(rs_bits, 1)

    a_range = a_fmt.dyadic_range(shared=a_shared) if a_shared is not None else None
    if a_shared is not None and not a_op.shared_bits:
        raise ScheduleError(f"{where}: a_shared given, but {a_fmt.name} has no shared field")
    acc = accumulator_spec(w_fmt, a_fmt, k, w_codes=w_codes, a_range=a_range)
    hw_lsb = w_op.el_base + w_op.sh_base + a_op.el_base + a_op.sh_base
    if acc.lsb < hw_lsb:
        raise ScheduleError(f"{where}: accumulator LSB 2**{acc.lsb} below the decoders' 2**{hw_lsb} (a bug)")
    acc_hw = acc.width + acc.lsb - hw_lsb

    # widths: exact where small, else the accumulator's (modular arithmetic stays exact)
    if datapath == "mul":
        prod_bits = w_op.m_bits + a_op.m_bits
    elif datapath == "select":
        prod_bits = (a_op if select_w else w_op).m_bits + 1
    else:
        prod_bits = 2
    term_bits = min(prod_bits + w_op.ex_max + a_op.ex_max, acc_hw)
    group_bits = min(term_bits + (gsize - 1).bit_length(), acc_hw)

    if requant is None:
        if out is not None and (out.bits != acc.width or not out.signed):
            raise ScheduleError(f"{where}: without requantization the output is the accumulator s{acc.width}")
        out = IntType(acc.width, True)
        if acc.width > MAX_OUT_BITS:
            raise ScheduleError(
                f"{where}: the accumulator needs {acc.width} bits, over the {MAX_OUT_BITS} a raw output may have; "
                "requantize (requant=..., out=...) or narrow the shared-field range (a_shared, fewer exponent bits)"
            )
    elif out is None or not (out.lo <= requant.lo <= requant.hi <= out.hi):
        raise ScheduleError(f"{where}: requantization needs an output type holding [{requant.lo}, {requant.hi}]")

    shared_words = None
    if w_sh is not None:
        blk = w_op.block
        starts = np.arange(k // lanes)[:, None] * lanes + np.arange(groups)[None, :] * gsize  # [KS, G]
        shared_words = w_sh[:, starts // blk]  # [M, KS, G]
    return FormatEnginePlan(
        name=legalize(name),
        source=source or f"{m}x{k} matrix-vector",
        w_fmt=w_fmt,
        a_fmt=a_fmt,
        m=m,
        k=k,
        lanes=lanes,
        mul=mul,
        w=w_op,
        a=a_op,
        datapath=datapath,
        select_w=select_w,
        w_codes=el,
        w_shared=shared_words,
        row_scale=row_scale,
        groups=groups,
        gsize=gsize,
        acc=acc,
        hw_lsb=hw_lsb,
        a_shared=a_shared,
        requant=requant,
        out=out,
        prod_bits=prod_bits,
        term_bits=term_bits,
        group_bits=group_bits,
        rs_bits=rs_bits,
        codes=w_codes,
    )


# -- streams and the golden model ---------------------------------------------------------------
def activation_beats(plan: FormatEnginePlan, a_codes: BlockCodes | np.ndarray) -> np.ndarray:
    """[N, K] input beats: element code (two's complement in code_bits) | shared code << code_bits."""
    el = np.asarray(a_codes.elements if isinstance(a_codes, BlockCodes) else a_codes, dtype=np.int64)
    el = el.reshape(-1, plan.k)
    beats = el & ((1 << plan.a.code_bits) - 1)
    if plan.a.shared_bits:
        sh = a_codes.shared_per_element().reshape(-1, plan.k).astype(np.int64)
        lo, hi = plan.a_shared or (-(1 << (plan.a.shared_bits - 1)), (1 << (plan.a.shared_bits - 1)) - 1)
        if sh.min() < lo or sh.max() > hi:
            raise ScheduleError(
                f"format engine '{plan.name}': activation shared codes span [{sh.min()}, {sh.max()}], "
                f"outside the planned range [{lo}, {hi}]; plan with a wider a_shared"
            )
        beats = beats | ((sh & ((1 << plan.a.shared_bits) - 1)) << plan.a.code_bits)
    return beats


def golden(plan: FormatEnginePlan, a_codes: BlockCodes | np.ndarray) -> np.ndarray:
    """Expected output codes [N, M]: dot_exact at the spec's LSB, requantized when planned."""
    acc = dot_exact(plan.w_fmt, plan.codes, plan.a_fmt, a_codes, lsb=plan.acc.lsb).acc
    acc = np.asarray(acc).reshape(-1, plan.m)
    if plan.requant is None:
        return acc.astype(np.int64)
    rq = plan.requant
    y = shift_round(acc.astype(object) if acc.dtype == object else acc, rq.shift, rq.rounding)
    return np.clip(y, rq.lo, rq.hi).astype(np.int64)


# -- verification codes ------------------------------------------------------------------------
def _field(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def element_extremes(op: Operand) -> dict[str, int]:
    """Named extreme element codes of a decoder: max, min (most negative), zero, and the smallest
    non-zero magnitude (a denormal for minifloats with denormals)."""
    if op.kind == "int":
        if op.signed:
            return {"max": (1 << (op.code_bits - 1)) - 1, "min": -((1 << (op.code_bits - 1)) - 1)
                    if op.fmt.startswith("bfp") else -(1 << (op.code_bits - 1)), "zero": 0, "tiny": 1}  # fmt: skip
        return {"max": (1 << op.code_bits) - 1, "min": 0, "zero": 0, "tiny": 1}
    if op.kind in ("float", "log"):
        mag = (1 << (op.code_bits - 1)) - 1
        return {"max": mag, "min": (1 << (op.code_bits - 1)) | mag, "zero": 0, "tiny": 1}
    if op.kind == "sign":
        return {"max": 1, "min": 0, "zero": 0, "tiny": 1}
    return {"max": 1, "min": -1, "zero": 0, "tiny": 1}


def element_codes(fmt: QuantFormat) -> np.ndarray:
    """Every element code of a format (the decoder's input range)."""
    return np.asarray(fmt.all_codes(), dtype=np.int64)


def activation_codes(plan: FormatEnginePlan, rng: np.random.Generator, n_random: int) -> BlockCodes | np.ndarray:
    """Verification activations [N, K] for the plan's activation format, as codes.

    Rows: all max, all min, max/min alternating, zero, all smallest non-zero (denormals), each at
    the top and at the bottom of the planned shared range; one row encoded from +-1e30 (saturation);
    then `n_random` rows of random codes (every element code equally likely) and shared codes.
    """
    k, fmt, op = plan.k, plan.a_fmt, plan.a
    ex = element_extremes(op)
    alt = np.where(np.arange(k) % 2 == 0, ex["max"], ex["min"])
    fixed = [np.full(k, ex["max"]), np.full(k, ex["min"]), alt, np.zeros(k, dtype=np.int64), np.full(k, ex["tiny"])]
    el = np.vstack([*fixed, *fixed, rng.choice(element_codes(fmt), size=(n_random, k))]).astype(np.int64)
    if not op.shared_bits:
        sat = fmt.encode(np.where(np.arange(k) % 3 == 0, -1e30, 1e30), rounding="half_even")
        sat_el = sat.elements if isinstance(sat, BlockCodes) else sat
        el = np.vstack([el[:5], sat_el[None, :], el[10:]])
        if isinstance(fmt, Binary | Ternary):
            return BlockCodes(el, np.broadcast_to(scale_code(np.array(fmt.alpha)), (1, 1)).copy(), None, 0)
        return el
    lo, hi = plan.a_shared or _field(op.shared_bits)
    nb = -(-k // op.block)
    sh = np.vstack([np.full((5, nb), hi), np.full((5, nb), lo), rng.integers(lo, hi + 1, size=(n_random, nb))])
    # saturation: the largest values the field allows, then beyond (elements saturate at max)
    top = fmt.to_float(BlockCodes(np.full((1, k), ex["max"]), np.full((1, nb), hi), 1, op.block))
    sat = fmt.encode(top * np.where(np.arange(k) % 3 == 0, -1e3, 1e3), rounding="half_even", axis=-1)
    sat_sh = np.clip(sat.shared, lo, hi)
    sat_el = sat.elements
    return BlockCodes(np.vstack([el, sat_el]), np.vstack([sh, sat_sh]), 1, op.block)


def weight_codes(
    fmt: QuantFormat, m: int, k: int, rng: np.random.Generator, shared: tuple[int, int] | None = None
) -> BlockCodes | np.ndarray:
    """Verification weights [M, K] as codes: rows all max, all min, alternating, zero, one non-zero
    smallest value; the others random codes (random shared codes in `shared`, random alphas)."""
    op = make_operand(fmt, shared)
    ex = element_extremes(op)
    el = rng.choice(element_codes(fmt), size=(m, k)).astype(np.int64)
    special = [
        np.full(k, ex["max"]),
        np.full(k, ex["min"]),
        np.where(np.arange(k) % 2 == 0, ex["max"], ex["min"]),
        np.zeros(k, dtype=np.int64),
    ]
    one = np.zeros(k, dtype=np.int64)
    one[k // 2] = ex["tiny"]
    special.append(one)
    for i, row in enumerate(special[:m]):
        el[i] = row
    if op.shared_bits:
        lo, hi = shared or _field(op.shared_bits)
        nb = -(-k // op.block)
        sh = rng.integers(lo, hi + 1, size=(m, nb))
        sh[0], sh[1] = hi, hi  # the extreme rows at the top of the range
        return BlockCodes(el, sh.astype(np.int64), 1, op.block)
    if isinstance(fmt, Binary | Ternary):
        if fmt.per_channel:
            alpha = np.ldexp(rng.uniform(0.5, 1.0, size=(m, 1)), rng.integers(-6, 0, size=(m, 1)))
        else:
            alpha = np.array([[fmt.alpha if fmt.alpha is not None else 0.375]])
        return BlockCodes(el, scale_code(alpha), None, 0)
    return el


# -- emitters ------------------------------------------------------------------------------------
def _hex(value: int, bits: int) -> str:
    return format(int(value) & ((1 << bits) - 1), f"0{max(1, (bits + 3) // 4)}x")


def _cw(n: int) -> int:
    """Counter bits over 0..n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def _operand_context(op: Operand) -> dict[str, Any]:
    return {**op.__dict__, "ex_bits": op.ex_bits, "sh_bits": op.sh_bits, "sh_base_lit": f"{op.sh_base}"}


def datapath_text(plan: FormatEnginePlan) -> str:
    """One line naming the datapath, for the generated comments and the benchmark table."""
    if plan.datapath == "xnor":
        text = "XNOR-popcount"
    elif plan.datapath == "select":
        sel = plan.w if plan.select_w else plan.a
        what = {"sign": "sign-select add/sub", "tern": "add/sub/skip", "log": "shift-only (sign, shift, add)"}
        text = what[sel.kind]
    else:
        text = f"{'DSP' if plan.mul == 'dsp' else 'LUT shift-add'} multiply"
        if plan.shift_max:
            text += " of significands, << exponent sum"
    if plan.gshift_max or plan.w.shared_bits or plan.a.shared_bits:
        text += f", block sum << shared exponents (once per {plan.gsize} lanes)"
    if plan.row_scale is not None:
        text += ", x row alpha (shift-add)"
    return text


def _rom_words(plan: FormatEnginePlan) -> list[str]:
    """ROM word row*KS + ks: LANES element codes (lane 0 lowest), then GROUPS shared codes."""
    we, sb = plan.w.code_bits, plan.w.shared_bits
    word_w = plan.lanes * we + plan.groups * sb
    words = []
    for row in range(plan.m):
        for ks in range(plan.ks):
            v = 0
            for g in reversed(range(plan.groups if sb else 0)):
                v = (v << sb) | (int(plan.w_shared[row, ks, g]) & ((1 << sb) - 1))
            for lane in reversed(range(plan.lanes)):
                v = (v << we) | (int(plan.w_codes[row, ks * plan.lanes + lane]) & ((1 << we) - 1))
            words.append(_hex(v, word_w))
    return words


def rtl_context(plan: FormatEnginePlan) -> dict[str, Any]:
    """Everything fmac.sv.j2 prints, spelled from the plan (no width arithmetic in the template)."""
    from hwgen.hw.rtl_emit import _requant_context, requant_width, stream_bits

    w, a = plan.w, plan.a
    mul_by, mul_of = ("a", "w") if a.m_bits <= w.m_bits else ("w", "a")
    gsh = [f"GSH_W'({p}_sh)" for p, op in (("w", w), ("a", a)) if op.shared_bits]
    ctx: dict[str, Any] = {
        "module": plan.name,
        "source": plan.source,
        "m": plan.m,
        "k": plan.k,
        "lanes": plan.lanes,
        "ks": plan.ks,
        "groups": plan.groups,
        "gsize": plan.gsize,
        "w": _operand_context(w),
        "a": _operand_context(a),
        "datapath": plan.datapath,
        "datapath_text": datapath_text(plan),
        "mul": plan.mul,
        "mul_by": mul_by,
        "mul_of": mul_of,
        "mul_by_bits": (a if mul_by == "a" else w).m_bits,
        "sel": "w" if plan.select_w else "a",
        "other": "a" if plan.select_w else "w",
        "inp": plan.inp,
        "in_w": plan.inp.bits,
        "in_tw": stream_bits(plan.inp.bits),
        "out": plan.out,
        "out_tw": stream_bits(plan.out.bits),
        "w_sb": w.shared_bits,
        "word_w": plan.lanes * w.code_bits + plan.groups * w.shared_bits,
        "w_words": _rom_words(plan),
        "prod_w": plan.prod_bits,
        "term_w": plan.term_bits,
        "group_w": plan.group_bits,
        "shift_max": plan.shift_max,
        "gshift_max": plan.gshift_max,
        "sx_w": max(1, plan.shift_max.bit_length()),
        "gsh_w": max(1, plan.gshift_max.bit_length()),
        "has_gsh": bool(gsh),
        "gsh_sum": " + ".join(gsh) if gsh else "'0",
        "acc_w": plan.acc_hw_bits,
        "acc_l_w": plan.acc.width,
        "hw_lsb": plan.hw_lsb,
        "lsb": plan.acc.lsb,
        "drop": plan.drop,
        "rs_w": plan.rs_bits,
        "rs_words": [_hex(int(v), plan.rs_bits) for v in plan.row_scale] if plan.row_scale is not None else [],
        "rs_text": "alpha significands << (alpha exponent - least)" if plan.row_scale is not None else "",
        "ks_cw": _cw(plan.ks),
        "row_cw": _cw(plan.m),
        "lane_cw": _cw(plan.lanes),
        "wa_w": _cw(plan.m * plan.ks),
        "latency": plan.latency,
        "ii": plan.ii,
        "requant": plan.requant is not None,
    }
    if plan.requant is not None:
        req_w = requant_width(plan.acc.width, plan.requant.shift, plan.out.bits)
        ctx["req_w"] = req_w
        ctx["rq"] = _requant_context(plan.requant, req_w, plan.out.bits)
    return ctx


def _design(plan: FormatEnginePlan) -> dict[str, str]:
    return {"model": f"format engine {plan.w_fmt.name} x {plan.a_fmt.name}", "model_hash": plan.fingerprint}


def emit_rtl_engine(plan: FormatEnginePlan, out_dir: Path) -> list[Path]:
    """Write {name}.sv and filelist.f (the layout hwgen.hw.rtl_sim and yosys_synth read)."""
    from hwgen.hw.render import render

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sv = out_dir / f"{plan.name}.sv"
    sv.write_text(render("rtl/fmac.sv.j2", d=rtl_context(plan), design=_design(plan)))
    fl = out_dir / "filelist.f"
    fl.write_text(f"{sv.name}\n")
    return [sv, fl]


def _c_rows(rows: list[list[int]], indent: str) -> str:
    return "\n".join(indent + "{" + ", ".join(str(v) for v in r) + "}," for r in rows)


def _store(bits: int) -> str:
    """C storage of unsigned bit patterns of `bits` bits (ROMs compile fast as C arrays)."""
    for n in (8, 16, 32, 64):
        if bits <= n:
            return f"uint{n}_t"
    raise ScheduleError(f"a {bits}-bit ROM entry is wider than 64 bits")


def hls_context(plan: FormatEnginePlan) -> dict[str, Any]:
    """fmac.h.j2's context: the RTL spelling plus C initialisers and the requantization spelling."""
    from hwgen.hw.hls_emit import LAYER_NAMESPACE, requant_spelling

    d = rtl_context(plan)
    we, sb = plan.w.code_bits, plan.w.shared_bits
    mask = (1 << we) - 1
    codes = (plan.w_codes & mask).reshape(plan.m * plan.ks, plan.lanes)
    d.update(
        name=plan.name,
        ns=LAYER_NAMESPACE,
        in_t=f"ap_uint<{plan.inp.bits}>",
        out_t=f"ap_{'' if plan.out.signed else 'u'}int<{plan.out.bits}>",
        w_store=_store(we),
        w_init=_c_rows(codes.tolist(), " " * 8),
    )
    if sb:
        ws = (plan.w_shared & ((1 << sb) - 1)).reshape(plan.m * plan.ks, plan.groups)
        d.update(ws_store=_store(sb), ws_init=_c_rows(ws.tolist(), " " * 8))
    if plan.row_scale is not None:
        vals = [str(int(v)) + ("ULL" if plan.rs_bits > 31 else "") for v in plan.row_scale]
        d.update(rs_store=_store(plan.rs_bits), rs_init=" " * 8 + ", ".join(vals) + ",")
    gw = f"ap_uint<{d['gsh_w']}>"
    terms = []
    if sb:
        terms.append(f"{gw}({plan.name}_w_shared(WS[wa][g]))")
    if plan.a.shared_bits:
        hi, lo = plan.inp.bits - 1, plan.a.code_bits
        terms.append(f"{gw}({plan.name}_a_shared(x[ks][g * GSIZE].range({hi}, {lo})))")
    d["gsh_sum"] = " + ".join(terms) if terms else "0"
    if plan.requant is not None:
        d["rq"] = requant_spelling(plan.requant, IntType(plan.acc.width, True), f"format engine '{plan.name}'")
        rq = plan.requant
        d["rq_text"] = f"clamp(shift_round(acc, {rq.shift}, {rq.rounding.value}), {rq.lo}, {rq.hi})"
    return d


def emit_hls_engine(plan: FormatEnginePlan, out_dir: Path, *, part: str = "xcu250-figd2104-2L-e") -> list[Path]:
    """Write the Vitis HLS project of the engine: {name}.h/.cpp, tb_{name}.cpp, run_hls.tcl.

    The testbench and the tcl script are the project's generic ones (templates/hls/tb.cpp.j2,
    run_hls.tcl.j2), so hwgen.hw.csim.run_csim compiles and runs it like any model.
    """
    from types import SimpleNamespace

    from hwgen.hw.hls_emit import LAYER_NAMESPACE, c_int
    from hwgen.hw.render import environment, render

    d = hls_context(plan)
    design = _design(plan)
    top = plan.name
    sched = SimpleNamespace(
        top=top,
        model=design["model"],
        model_hash=design["model_hash"],
        input=SimpleNamespace(count=plan.k),
        output=SimpleNamespace(count=plan.m),
    )
    io = {
        "in_t": d["in_t"],
        "out_t": d["out_t"],
        "out_to_int": "to_int64" if plan.out.signed else "to_uint64",
        "in_lo": c_int(plan.inp.lo),
        "in_hi": c_int(plan.inp.hi),
    }
    tmpl = environment().get_template("hls/fmac.h.j2")
    files = {
        f"{top}.h": tmpl.render(d=d, design=design),
        f"{top}.cpp": str(tmpl.make_module({"d": d, "design": design}).top_cpp(d, design)),
        f"tb_{top}.cpp": render("hls/tb.cpp.j2", schedule=sched, io=io, ns=LAYER_NAMESPACE),
        "tb_input.txt": "0 " * (plan.k - 1) + "0\n",
        "run_hls.tcl": render(
            "hls/run_hls.tcl.j2",
            schedule=sched,
            ns=LAYER_NAMESPACE,
            part=part,
            period="5",
            clock_mhz="200",
            sources=[f"{top}.cpp"],
            tb_sources=[f"tb_{top}.cpp", "tb_input.txt"],
            argv="tb_input.txt tb_output.txt",
        ),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        path = out_dir / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class _Port:
    count: int
    elem: IntType


@dataclass(frozen=True)
class EngineRun:
    """What hwgen.hw.rtl_sim.run_rtl reads of a Schedule, for one standalone engine."""

    top: str
    input: _Port
    output: _Port
    ii: int
    latency: int


def run_shape(plan: FormatEnginePlan) -> EngineRun:
    """The stream shape of the engine for run_rtl (K beats in, M beats out)."""
    return EngineRun(plan.name, _Port(plan.k, plan.inp), _Port(plan.m, plan.out), plan.ii, plan.latency)


__all__ = [
    "MUL_KINDS",
    "PIPE_STAGES",
    "EngineRun",
    "FormatEnginePlan",
    "Operand",
    "activation_beats",
    "activation_codes",
    "datapath_text",
    "element_extremes",
    "emit_hls_engine",
    "emit_rtl_engine",
    "golden",
    "hls_context",
    "make_operand",
    "plan_format_engine",
    "rtl_context",
    "run_shape",
    "weight_codes",
]
