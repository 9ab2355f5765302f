"""The hardware plan types: every width, parallelism and timing number both emitters read.

Nothing here is computed by a template or a testbench: when an emitter needs a number, it is a
field of a plan. `hwgen.hw.schedule` fills these from the quantized IR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwgen.numerics import Rounding


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
class Requant:
    """acc -> out: out = clamp(shift_round(acc, shift, rounding), lo, hi).

    shift > 0 divides by 2**shift with `rounding`; shift <= 0 multiplies by 2**-shift (exact).
    [lo, hi] merges the activation (ReLU: lo = 0; Clip) with saturation to the output type.
    """

    shift: int
    rounding: Rounding
    lo: int
    hi: int


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
    layers: tuple[DensePlan, ...]
    latency: int  #: cycles from the first input beat accepted to the last output beat
    ii: int  #: cycles between samples in steady state (the slowest engine)
    fifo_depth: int = 2  #: depth of the FIFOs between engines
    notes: tuple[str, ...] = ()
