"""The bit-exact golden model: runs a quantized graph on integer codes.

HLS C simulation and RTL simulation must match this on every output bit. It computes with
int64 where the widths allow and with Python ints beyond, so it is exact by construction;
the Schedule proves the hardware's accumulators are wide enough to be exact too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwgen.errors import GraphError, UnsupportedOpError
from hwgen.ir.graph import Graph, Node
from hwgen.numerics import FixedPoint, Overflow, Rounding
from hwgen.sim import integer_kernels
from hwgen.sim.reference import check_input


@dataclass(frozen=True)
class DenseRequant:
    """How a quantized Dense turns its accumulator into output codes (see integer_kernels.requantize)."""

    shift: int
    rounding: Rounding
    lo: int
    hi: int


def fixed_format(graph: Graph, value: str) -> FixedPoint:
    fmt = graph.value(value).type.format
    if not isinstance(fmt, FixedPoint):
        raise GraphError(f"value {value!r} has format {fmt}, not fixed point: quantize the graph first")
    return fmt


def dense_requant(graph: Graph, node: Node) -> DenseRequant:
    """Shift, rounding and output clamp of a quantized Dense: one definition for sim and hardware."""
    x_fmt = fixed_format(graph, node.inputs[0])
    w_fmt = fixed_format(graph, node.inputs[1])
    out_fmt = fixed_format(graph, node.outputs[0])
    shift = x_fmt.frac + w_fmt.frac - out_fmt.frac
    lo, hi = out_fmt.min_code, out_fmt.max_code
    act = node.attrs.get("activation", "none")
    if act == "relu":
        lo = max(lo, 0)
    elif act == "clip":
        clip_lo, clip_hi = node.attrs["clip_lo"], node.attrs["clip_hi"]
        if math.isfinite(clip_lo):
            lo = max(lo, math.ceil(math.ldexp(clip_lo, out_fmt.frac)))
        if math.isfinite(clip_hi):
            hi = min(hi, math.floor(math.ldexp(clip_hi, out_fmt.frac)))
        hi = max(hi, lo)
    return DenseRequant(shift, Rounding(node.attrs["rounding"]), lo, hi)


def dense_codes(graph: Graph, node: Node) -> tuple[np.ndarray, np.ndarray]:
    """Integer weight codes [out, in] and bias codes [out] (accumulator units) of a quantized Dense."""
    w = fixed_format(graph, node.inputs[1]).encode_exact(graph.const(node.inputs[1]))
    b = fixed_format(graph, node.inputs[2]).encode_exact(graph.const(node.inputs[2]))
    return w, b


def encode_input(graph: Graph, x: np.ndarray, name: str | None = None) -> np.ndarray:
    """Float samples -> input codes, with the graph's input rounding and saturation."""
    name = name or graph.inputs[0]
    x = check_input(graph, x, name)
    fmt = fixed_format(graph, name)
    rounding = Rounding(graph.meta.get("input_rounding", Rounding.HALF_EVEN))
    return fmt.encode(x, rounding=rounding, overflow=Overflow.SATURATE)


def run_codes(graph: Graph, codes: np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
    """Run input codes (batch first) through the quantized graph; returns output codes."""
    env: dict[str, np.ndarray] = {graph.inputs[0]: np.asarray(codes, dtype=np.int64)}
    for node in graph.nodes:
        x = env[node.inputs[0]]
        if node.op in ("Flatten", "Reshape"):
            shape = graph.value(node.outputs[0]).type.shape
            y = x.reshape((x.shape[0], *shape))
        elif node.op == "Transpose":
            y = x.transpose((0, *(p + 1 for p in node.attrs["perm"])))
        elif node.op == "Identity":
            y = x
        elif node.op == "Relu":
            y = np.maximum(x, 0)
        elif node.op == "Dense":
            w, b = dense_codes(graph, node)
            r = dense_requant(graph, node)
            flat = x.reshape(-1, x.shape[-1])
            y = integer_kernels.dense(flat, w, b, shift=r.shift, rounding=r.rounding, lo=r.lo, hi=r.hi)
            y = y.reshape((*x.shape[:-1], w.shape[0]))
        else:
            raise UnsupportedOpError(f"{node.describe()}: sim.exact has no integer kernel for {node.op}")
        env[node.outputs[0]] = y
    return env if keep else {o: env[o] for o in graph.outputs}


def run(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Float samples in, output codes out (the golden model end to end)."""
    return run_codes(graph, encode_input(graph, x))


def decode_outputs(graph: Graph, codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Output codes -> exact float values."""
    return {k: fixed_format(graph, k).to_float(v) for k, v in codes.items()}
