"""The hardware plan types: every width, parallelism and timing number both emitters read.

Nothing here is computed by a template or a testbench: when an emitter needs a number, it is a
field of a plan. `hwgen.hw.schedule` fills these from the quantized IR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwgen.numerics import Rounding
from hwgen.sim.winograd_kernels import tile_grid


@dataclass(frozen=True)
class IntType:
    """A hardware integer: `bits` wide, two's complement when `signed`."""

    bits: int
    signed: bool

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def __str__(self) -> str:
        return f"{'s' if self.signed else 'u'}{self.bits}"


@dataclass(frozen=True)
class Float32Widths:
    """Register widths of the float32 requant in integers (integer_kernels.requantize_float32_integer)."""

    a_bits: int  #: |acc| (unsigned) with a carry bit
    m_bits: int  #: M (unsigned)
    q_bits: int  #: |acc| * M with a carry bit
    t_bits: int  #: the final half-even sum; every shift n < t_bits
    n_bits: int  #: a shift n (unsigned)
    acc_round: bool  #: |acc| may reach 2**24, so float32(acc) rounds
    shifts: tuple[int, ...]  #: n per channel, capped at q_bits + 1 (same result)


@dataclass(frozen=True, repr=False)
class Requant:
    """acc -> out: out = clamp(shift_round(acc * multiplier[c] + offset[c], shift, rounding), lo, hi).

    shift > 0 divides by 2**shift with `rounding`; shift <= 0 multiplies by 2**-shift (exact).
    [lo, hi] merges the activation (ReLU: lo = 0; Clip) with saturation to the output type.
    `multiplier` (unsigned M0 per output channel) and `offset` (the bias, in 2**-shift output
    codes) come from imported non-power-of-two scales (integer_kernels.requantize_scaled); empty
    means the pure shift of fixed point. `prod_type` holds every acc * M0 + offset.

    `arith` "float32" is onnxruntime's requantization instead (integer_kernels.requantize_float32):
    out = clamp(rint(float32(acc) * float32(M[c] * 2**-shifts[c])), lo, hi), the bias in the
    accumulator, offsets 0, one shift per channel in `shifts` (`shift` is their maximum); the
    hardware runs it in integers (integer_kernels.requantize_float32_integer).
    """

    shift: int
    rounding: Rounding
    lo: int
    hi: int
    multiplier: tuple[int, ...] = ()
    offset: tuple[int, ...] = ()
    prod_type: IntType | None = None
    arith: str = "integer"  #: "integer" (exact M0 + shift) or "float32" (onnxruntime's float32 product)
    shifts: tuple[int, ...] = ()  #: float32 only: n per output channel (>= 0)

    @property
    def scaled(self) -> bool:
        return bool(self.multiplier)

    @property
    def float32(self) -> bool:
        return self.arith == "float32"

    def float32_widths(self, acc_bits: int) -> Float32Widths:
        """Widths of the integer float32 requant for an accumulator of `acc_bits` (both emitters use these)."""
        a = acc_bits + 1  # |acc| of a signed or unsigned acc, plus the carry of rounding it
        m = max(1, max(self.multiplier).bit_length())
        q = a + m  # |acc| * M (below 2**(a-1+m)), plus the carry of rounding it
        # a shift beyond the product's bits rounds every value to 0, as q + 1 does
        shifts = tuple(min(int(n), q + 1) for n in self.shifts)
        return Float32Widths(a, m, q, q + 2, max(shifts).bit_length() or 1, a > 25, shifts)

    def __repr__(self) -> str:
        # fixed-point requants print as before the scaled fields existed: model hashes stay put
        base = f"Requant(shift={self.shift!r}, rounding={self.rounding!r}, lo={self.lo!r}, hi={self.hi!r}"
        if not self.scaled:
            return base + ")"
        extra = "" if self.arith == "integer" else f", arith={self.arith!r}, shifts={self.shifts!r}"
        return base + f", multiplier={self.multiplier!r}, offset={self.offset!r}, prod_type={self.prod_type!r}{extra})"


@dataclass(frozen=True, eq=False)
class DensePlan:
    """A fully-connected layer on the dense MAC engine.

    Folding: the engine has PE x SIMD multipliers. Each cycle it multiplies SIMD inputs by a
    PE x SIMD weight tile and adds the PE sums into PE accumulators. SF = in/SIMD cycles
    finish one neuron fold of PE outputs; NF = out/PE folds finish the vector. reuse = SF*NF
    products per multiplier.

    Weight memory word `a = nf*SF + sf` holds, for p in 0..PE-1 and s in 0..SIMD-1,
    weights[nf*PE + p, sf*SIMD + s]; the emitters pack it as p-major, s-minor (element
    p*SIMD + s at bits [(p*SIMD+s+1)*W-1 : (p*SIMD+s)*W]).
    """

    name: str  #: legal identifier (hw.names.legalize), unique in the design
    source: str  #: the ONNX node name (for comments), may contain anything
    in_features: int
    out_features: int
    pe: int
    simd: int
    inp: IntType  #: input element type (codes)
    w: IntType  #: weight code type
    prod: IntType  #: one product
    acc: IntType  #: accumulator: proven wide enough for every input in [inp.lo, inp.hi]
    out: IntType  #: output element type (codes)
    bias: IntType  #: bias code type (same scale as acc)
    requant: Requant
    weights: np.ndarray = field(repr=False)  #: int64 codes [out_features, in_features]
    biases: np.ndarray = field(repr=False)  #: int64 codes [out_features], in accumulator units
    latency: int = 0  #: cycles from first input accepted to last output produced (free-flowing I/O)
    ii: int = 0  #: cycles between the starts of two vectors when I/O never stalls
    engine: str = "dense"
    inputs: tuple[str, ...] = ()  #: stream names (Schedule.streams), filled by the scheduler
    outputs: tuple[str, ...] = ()

    @property
    def sf(self) -> int:
        return self.in_features // self.simd

    @property
    def nf(self) -> int:
        return self.out_features // self.pe

    @property
    def reuse(self) -> int:
        return self.sf * self.nf

    @property
    def multipliers(self) -> int:
        return self.pe * self.simd

    def weight_tile(self, address: int) -> np.ndarray:
        """The PE x SIMD weight codes of memory word `address` (nf*SF + sf)."""
        nf, sf = divmod(address, self.sf)
        return self.weights[nf * self.pe : (nf + 1) * self.pe, sf * self.simd : (sf + 1) * self.simd]


@dataclass(frozen=True, eq=False)
class ConvPlan:
    """A 2-D convolution on the line-buffer engine, channels-last pixel streams in and out.

    Input stream: in_h x in_w pixels in row-major order, each `channels_in` elements (HWC);
    output stream likewise with out_h x out_w pixels of `channels_out` elements. Padding is
    zero codes (value 0) inserted by the engine. Grouped: output channel m reads input channels
    [(m // mg) * cg, (m // mg + 1) * cg); depthwise when cg == mg == 1.
    out[m, i, j] = requant(bias[m] + sum_{c<cg, u<kh, v<kw} x[g*cg + c, i*sh - pt + u, j*sw - pl + v] * w[m, c, u, v]).
    PE output channels are computed in parallel, SIMD input channels (within a group) per cycle.
    """

    name: str
    source: str
    channels_in: int
    channels_out: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads_begin: tuple[int, int]  #: (top, left)
    pads_end: tuple[int, int]  #: (bottom, right)
    groups: int
    pe: int
    simd: int
    inp: IntType
    w: IntType
    prod: IntType
    acc: IntType
    out: IntType
    bias: IntType
    requant: Requant
    weights: np.ndarray = field(repr=False)  #: int64 codes [channels_out, channels_in // groups, kh, kw]
    biases: np.ndarray = field(repr=False)  #: int64 codes [channels_out]
    latency: int = 0
    ii: int = 0
    engine: str = "conv"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    @property
    def cg(self) -> int:
        """Input channels per group."""
        return self.channels_in // self.groups

    @property
    def mg(self) -> int:
        """Output channels per group."""
        return self.channels_out // self.groups

    @property
    def depthwise(self) -> bool:
        return self.cg == 1 and self.mg == 1

    @property
    def multipliers(self) -> int:
        return self.pe * self.simd

    @property
    def macs(self) -> int:
        return int(self.weights.size) * self.out_h * self.out_w


@dataclass(frozen=True, eq=False)
class PoolPlan:
    """Max or average pooling over kh x kw windows of a channels-last pixel stream (per channel).

    max: out = max over the window (padding never wins: it is skipped). avg: out =
    clamp(shift_round(sum * mult, shift, rounding), lo, hi) with mult / 2**shift ~ 1 / (kh*kw);
    padding counts as zeros. Global pooling is kernel = (in_h, in_w), stride 1, no padding.
    """

    name: str
    source: str
    kind: str  #: "max" | "avg"
    channels: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads_begin: tuple[int, int]
    pads_end: tuple[int, int]
    inp: IntType
    out: IntType
    acc: IntType  #: window sum (avg) or the compared value (max)
    mult: int  #: avg only (1 for max)
    shift: int  #: avg only (0 for max)
    rounding: Rounding
    lo: int
    hi: int
    latency: int = 0
    ii: int = 0
    engine: str = "pool"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class AddPlan:
    """Element-wise sum of two streams of equal shape: out = requant((a << align_a) + (b << align_b))."""

    name: str
    source: str
    count: int  #: elements per sample
    a: IntType
    b: IntType
    align_a: int  #: left shift of a onto the common scale
    align_b: int
    sum: IntType  #: width of the aligned sum (never overflows)
    out: IntType
    requant: Requant
    latency: int = 0
    ii: int = 0
    engine: str = "add"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class ForkPlan:
    """Copies one stream to several consumers; each output has its own FIFO (Stream.depth)."""

    name: str
    source: str
    elem: IntType
    count: int
    latency: int = 0
    ii: int = 0
    engine: str = "fork"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConcatPart:
    channels: int  #: elements this input contributes per pixel
    inp: IntType
    requant: Requant  #: onto the output scale (shift may be <= 0)


@dataclass(frozen=True, eq=False)
class ConcatPlan:
    """Channel concatenation of channels-last streams: per pixel, the parts' channels in order."""

    name: str
    source: str
    pixels: int
    parts: tuple[ConcatPart, ...]
    out: IntType
    latency: int = 0
    ii: int = 0
    engine: str = "concat"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class LutPlan:
    """An element-wise function as a table: out = table[x - inp.lo]."""

    name: str
    source: str
    count: int
    inp: IntType
    out: IntType
    table: np.ndarray = field(repr=False)  #: int64 output codes, one per input code
    latency: int = 0
    ii: int = 0
    engine: str = "lut"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class SoftmaxPlan:
    """Integer softmax over vectors of `length` consecutive stream elements (hwgen.hw.softmax).

    Per vector: d = max(x) - x (codes), E = table[d] (0 past the table), S = sum E, and
    out = min(floor((E * 2**quotient_bits + S) / (2 S)), hi): integer_kernels.softmax exactly.
    """

    name: str
    source: str
    length: int  #: N: elements per softmax vector (the engine buffers one)
    vectors: int  #: softmax vectors per sample (pixels of a per-channel softmax; else 1)
    inp: IntType
    out: IntType
    table: np.ndarray = field(repr=False)  #: E[d] for d = 0..len-1 (integer_kernels.softmax_exp_table, zeros cut)
    quotient_bits: int = 1  #: out_frac + 1: the quotient is <= 2**out_frac
    hi: int = 0  #: output clamp (the largest output code)
    sum: IntType = IntType(1, False)  #: S, unsigned: holds length * table[0]
    latency: int = 0
    ii: int = 0
    engine: str = "softmax"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """Elements per sample."""
        return self.length * self.vectors


@dataclass(frozen=True, eq=False)
class ChannelAffinePlan:
    """out = requant(x * scales[c] + offsets[c]) per stream element, c = its index in the sample mod `period`.

    A per-channel scale and offset (an unfolded Mul/Add by a per-channel constant): `period` is
    the channels of a channels-last image, the length of a vector (hwgen.hw.channel_affine).
    """

    name: str
    source: str
    count: int  #: elements per sample
    period: int  #: scale/offset entries, repeating along the stream (divides count)
    inp: IntType
    m: IntType  #: scale codes
    a: IntType  #: offset codes (accumulator units)
    acc: IntType  #: x * m + a for every input code and channel (never overflows)
    out: IntType
    requant: Requant
    scales: np.ndarray = field(repr=False)  #: int64 [period]
    offsets: np.ndarray = field(repr=False)  #: int64 [period]
    latency: int = 0
    ii: int = 0
    engine: str = "channel_affine"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class WinogradConvPlan:
    """A 3x3 stride-1 convolution on the Winograd F(2x2,3x3) engine (architecture, widths: hwgen.hw.winograd)."""

    name: str
    source: str
    channels_in: int
    channels_out: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    pads_begin: tuple[int, int]  #: (top, left), each <= 2
    pads_end: tuple[int, int]  #: (bottom, right), each <= 2
    tile: int  #: m of F(m x m, 3x3): 2
    pe: int  #: output channels in parallel (divides channels_out)
    simd: int  #: input channels per step (divides channels_in)
    inp: IntType  #: input codes
    w: IntType  #: filter codes g (as the direct conv's)
    u: IntType  #: transformed filter codes U = (2G) g (2G)^T
    v: IntType  #: transformed input V = B^T d B, for every input in [inp.lo, inp.hi]
    prod: IntType  #: U * V
    macc: IntType  #: M = sum over input channels of U * V (never overflows)
    yacc: IntType  #: A^T M A = 4 * (the direct accumulator without bias)
    acc: IntType  #: the direct conv's accumulator (A^T M A / 4 + bias), bit-identical
    out: IntType
    bias: IntType
    requant: Requant
    weights: np.ndarray = field(repr=False)  #: int64 codes g [channels_out, channels_in, 3, 3]
    u_weights: np.ndarray = field(repr=False)  #: int64 U [channels_out, channels_in, 4, 4]
    biases: np.ndarray = field(repr=False)  #: int64 [channels_out], accumulator units
    latency: int = 0
    ii: int = 0
    engine: str = "winograd_conv"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    @property
    def alpha(self) -> int:
        return self.tile + 2

    @property
    def tiles(self) -> tuple[int, int]:
        """(TH, TW): tile rows and tiles per tile row."""
        return tile_grid(self.out_h, self.out_w, self.tile)

    @property
    def sf(self) -> int:
        return self.channels_in // self.simd

    @property
    def nf(self) -> int:
        return self.channels_out // self.pe

    @property
    def multipliers(self) -> int:
        return self.alpha * self.alpha * self.pe * self.simd

    @property
    def steps_per_tile_row(self) -> int:
        return self.tiles[1] * self.nf * self.sf


EnginePlan = DensePlan | ConvPlan | WinogradConvPlan | PoolPlan | AddPlan | ForkPlan | ConcatPlan | LutPlan


@dataclass(frozen=True)
class Stream:
    """An edge of the dataflow graph: one element per beat, channels last (HWC for images)."""

    name: str  #: legal identifier, unique in the design
    source: str  #: the IR value it carries
    elem: IntType
    shape: tuple[int, ...]  #: per-sample shape in stream order: (H, W, C) for images, (K,) for vectors
    depth: int = 2  #: FIFO depth (elements) between producer and consumer

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class StreamPort:
    """A top-level AXI4-Stream port: one element per beat, tlast on the last element of a sample."""

    name: str  #: legal identifier of the IR value
    source: str  #: the ONNX tensor name
    elem: IntType  #: element code type
    count: int  #: elements per sample
    frac: int  #: the code's binary point: value = code * 2**-frac
    shape: tuple[int, ...]  #: per-sample shape (C order of the elements)


@dataclass(frozen=True, eq=False)
class Schedule:
    """The whole design: ports, the layer plans in stream order, and the model-level timing."""

    top: str  #: legal identifier of the top module / function
    model: str  #: the model's name (for file headers)
    model_hash: str  #: sha256 of the quantized graph (for file headers)
    input: StreamPort
    output: StreamPort
    layers: tuple[EnginePlan, ...]  #: every engine, in topological order
    latency: int  #: cycles from the first input beat accepted to the last output beat
    ii: int  #: cycles between samples in steady state (the slowest engine)
    fifo_depth: int = 2  #: depth of the FIFOs between engines
    notes: tuple[str, ...] = ()
    #: every stream: the input port's, one per engine output, the output port's is the last engine's
    streams: tuple[Stream, ...] = ()

    def stream(self, name: str) -> Stream:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def is_chain(self) -> bool:
        """True when every engine is dense or sparse dense and feeds the next (the MLP form)."""
        # by engine kind: hwgen.hw.sparse imports this module, so its plan type cannot be named here
        return all(isinstance(p, DensePlan) or p.engine == "sparse_dense" for p in self.layers)
