"""sim.torch: the IR as a differentiable `torch.nn.Module`, in float or fake-quantized form.

Two modes share one module:

- ``Mode.FLOAT`` runs the graph's float semantics (`hwgen.sim.reference`) in torch; trainable
  constants are used as they are (times their mask).
- ``Mode.QUANTIZED`` runs a quantized graph with fake quantization: every value whose format is
  not float is rounded onto its format's grid in the forward pass. The backward pass is a
  straight-through estimator (STE): rounding passes gradients unchanged, values that were clamped
  (saturated, or cut by a fused ReLU/Clip) get zero gradient. Fake quantization dispatches on the
  format's type through `register_fake_quant`, so new number formats plug in with one function.

Trainable parameters are the weight and bias constants of MAC nodes (Dense, Conv), held as
latent floats. A per-constant mask (`masks={const_name: 0/1 array}`) multiplies the weight in
every forward pass, so pruned weights stay zero while fine-tuning. `write_back(graph)` returns a
copy of a graph with the trained constants (see its docstring for what is written where).

Exact equivalence guarantee
---------------------------
For a fixed-point graph accepted by `hwgen.sim.exact`, in quantized mode, in eval mode and with
torch.float64 (``executor.double().eval()``), the forward pass's output equals
``exact.decode_outputs(graph, exact.run(graph, x))`` bit for bit, for every sample, as long as
every accumulator (sum of code products plus bias code, in units of the accumulator's scale)
stays below 2**53 in magnitude. The executor warns at construction when a layer's formats allow
more. Why it holds:

1. Every quantized value is code * 2**-frac; multiplying by a power of two is exact in float64.
2. A product of two such values is exact (at most 2 x 26 significant bits for formats up to
   26 bits) and every partial sum of products is an integer number of accumulator units below
   2**53, so it is exact whatever order BLAS or the convolution sums in.
3. Requantization is round(v * 2**frac_out) with the node's rounding mode spelled out on exact
   float64 integers (floor; half-up as floor + (v - floor(v) >= 1/2); half-even as IEEE rint),
   then the clamp [lo, hi] from `exact.activation_bounds` (fused activation merged with
   saturation) -- the same arithmetic as `integer_kernels.requantize`.
4. Average pooling multiplies by the golden model's (M, S); lookup tables, softmax and clip bounds
   come from the golden model's own functions (`exact.lut_table`, `integer_kernels`).

In float32 (faster, used for training) the forward pass is the same arithmetic but sums may
round; it is an approximation of the quantized network, not a guarantee.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hwgen.errors import DataError, FormatError, GraphError, UnsupportedOpError
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.ir.ops import window_of
from hwgen.numerics import (
    Binary,
    BlockFloat,
    BlockLog,
    BlockMinifloat,
    FixedPoint,
    Float32,
    Minifloat,
    NumberFormat,
    Overflow,
    Rounding,
    Ternary,
)
from hwgen.sim import exact, integer_kernels
from hwgen.sim.reference import real_counts
from hwgen.sim.reference import windows as np_windows

log = logging.getLogger(__name__)

#: ops whose weight (input 1) and bias (input 2) constants are trainable
MAC_OPS = ("Dense", "Conv")
#: weights are rounded to their format as the quantize pass does
WEIGHT_ROUNDING = Rounding.HALF_EVEN
#: accumulators stay exact in float64 below this magnitude (in accumulator units)
EXACT_LIMIT = 2.0**53


class Mode(StrEnum):
    FLOAT = "float"  #: the float reference semantics
    QUANTIZED = "quantized"  #: fake quantization of every non-float value, STE backward


# -- fake quantization: a registry keyed by format type -------------------------------------------
#: fn(x, fmt, rounding, axis) -> (forward values on the format's grid, mask of elements whose gradient passes).
#: `axis` is the axis shared fields run along (block formats: the reduction axis; binary/ternary: the
#: output-channel axis), or None for the format's default.
FakeQuantFn = Callable[[Tensor, Any, Rounding, "int | None"], tuple[Tensor, Tensor]]
_FAKE_QUANT: dict[type, FakeQuantFn] = {}


def register_fake_quant(format_cls: type, fn: FakeQuantFn) -> None:
    """Make `fake_quant` handle `format_cls`: `fn` gives the forward values and the pass-through mask.

    The STE is applied around `fn` by `fake_quant`, so `fn` need not be differentiable.
    """
    _FAKE_QUANT[format_cls] = fn


def ste(x: Tensor, q: Tensor, mask: Tensor) -> Tensor:
    """Forward: q. Backward: the gradient of x where `mask` is true, zero elsewhere."""
    return q.detach() + (x - x.detach()) * mask.to(x.dtype)


def round_codes(v: Tensor, rounding: Rounding) -> Tensor:
    """Round values in code units to integers with `rounding`; exact on float tensors (see numerics.rounding)."""
    rounding = Rounding(rounding)
    if rounding is Rounding.FLOOR:
        return torch.floor(v)
    if rounding is Rounding.HALF_UP:
        r = torch.floor(v)
        return r + (v - r >= 0.5).to(v.dtype)  # exact, as round_scaled: floor(v + 0.5) may round
    return torch.round(v)  # IEEE round half to even


def _fixed_fake_quant(x: Tensor, fmt: FixedPoint, rounding: Rounding, axis: int | None) -> tuple[Tensor, Tensor]:
    v = x * math.ldexp(1.0, fmt.frac)
    r = round_codes(v, rounding)
    if Rounding(rounding) is Rounding.FLOOR:
        r = torch.where((r == 0) & (x < 0), torch.full_like(r, -1.0), r)  # as FixedPoint.encode on underflow
    codes = torch.clamp(r, fmt.min_code, fmt.max_code)
    mask = (v >= fmt.min_code) & (v <= fmt.max_code)
    return codes * math.ldexp(1.0, -fmt.frac), mask


def _numpy_quantize(x: Tensor, fmt: Any, rounding: Rounding, axis: int | None) -> Tensor:
    """fmt.quantize on a detached float64 copy, with `axis` (and saturation) when the format takes them."""
    params = inspect.signature(fmt.quantize).parameters
    kwargs: dict[str, Any] = {"rounding": Rounding(rounding)}
    if "overflow" in params:
        kwargs["overflow"] = Overflow.SATURATE
    if axis is not None and "axis" in params:
        kwargs["axis"] = axis
    q = np.asarray(fmt.quantize(x.detach().cpu().double().numpy(), **kwargs), dtype=np.float64)
    return torch.as_tensor(q, dtype=x.dtype, device=x.device)


def numpy_fake_quant(x: Tensor, fmt: Any, rounding: Rounding, axis: int | None = None) -> tuple[Tensor, Tensor]:
    """Fallback for any format with a numpy `quantize(x, rounding=...)`: forward values from the format itself.

    The mask passes gradients inside [min_value, max_value] when the format has them (|x| <= max_value when it
    has only that), everywhere otherwise.
    """
    q = _numpy_quantize(x, fmt, rounding, axis)
    hi = getattr(fmt, "max_value", None)
    lo = getattr(fmt, "min_value", None)
    if hi is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    elif lo is None:
        mask = x.abs() <= float(hi)
    else:
        mask = (x >= float(lo)) & (x <= float(hi))
    return q, mask


def _passing_fake_quant(x: Tensor, fmt: Any, rounding: Rounding, axis: int | None) -> tuple[Tensor, Tensor]:
    """Block formats and ternary: the block (or tensor) scale follows the data, so nothing saturates."""
    return _numpy_quantize(x, fmt, rounding, axis), torch.ones_like(x, dtype=torch.bool)


def _binary_fake_quant(x: Tensor, fmt: Any, rounding: Rounding, axis: int | None) -> tuple[Tensor, Tensor]:
    """sign(x) * alpha; the gradient passes where |x| <= alpha (BinaryConnect's clipped STE)."""
    q = _numpy_quantize(x, fmt, rounding, axis)
    return q, x.abs() <= q.abs()


register_fake_quant(FixedPoint, _fixed_fake_quant)
register_fake_quant(Minifloat, numpy_fake_quant)  # saturating: |x| beyond max_value gets no gradient
for _cls in (BlockFloat, BlockMinifloat, BlockLog, Ternary):
    register_fake_quant(_cls, _passing_fake_quant)
register_fake_quant(Binary, _binary_fake_quant)


def weight_axis(fmt: NumberFormat) -> int:
    """Axis of a [out, in] weight matrix that a format's shared fields run along (see sim.format_mac).

    Binary/ternary scales are per output channel (axis 0); block formats block the reduction axis (-1).
    """
    return 0 if isinstance(fmt, (Binary, Ternary)) else -1


def fake_quant(x: Tensor, fmt: NumberFormat, rounding: Rounding, axis: int | None = None) -> Tensor:
    """x rounded onto `fmt`'s grid (forward), with the STE backward; float formats pass x through."""
    if isinstance(fmt, Float32):
        return x
    fn = next((_FAKE_QUANT[c] for c in type(fmt).__mro__ if c in _FAKE_QUANT), None)
    if fn is None:
        if not callable(getattr(fmt, "quantize", None)):
            raise FormatError(f"{fmt}: no fake quantization for {type(fmt).__name__}; call register_fake_quant")
        fn = numpy_fake_quant
    q, mask = fn(x, fmt, rounding, axis)
    return ste(x, q, mask)


def fake_quant_weight(w: Tensor, fmt: NumberFormat, rounding: Rounding) -> Tensor:
    """A MAC weight fake-quantized as the [out, in] matrix the engines and `exact.weight_matrix` see.

    A Conv weight [M, C, *k] becomes [M, (*k, C)]: input channels last, so blocks run along the channels of
    each kernel tap exactly as the quantize pass and the golden model block them.
    """
    if isinstance(fmt, (FixedPoint, Float32)) or w.ndim < 2:
        return fake_quant(w, fmt, rounding)
    taps_first = w if w.ndim == 2 else w.movedim(1, -1)
    flat = fake_quant(taps_first.reshape(w.shape[0], -1), fmt, rounding, weight_axis(fmt))
    return flat.reshape(taps_first.shape) if w.ndim == 2 else flat.reshape(taps_first.shape).movedim(-1, 1)


# -- helpers shared by both modes -----------------------------------------------------------------
def _pow2(e: int) -> float:
    return math.ldexp(1.0, e)


def _window_geometry(node: Node, spatial: tuple[int, ...]) -> tuple[list[int], list[int], tuple[int, ...]]:
    """Padding at the begin/end of each spatial axis (ceil_mode extra included) and the output size."""
    w = window_of(node)
    out = w.out_size(spatial)
    extra = [
        max(0, (o - 1) * st + w.span(a) - (n + b + e))
        for a, (o, st, n, b, e) in enumerate(zip(out, w.strides, spatial, w.pads_begin, w.pads_end, strict=True))
    ]
    return list(w.pads_begin), [e + x for e, x in zip(w.pads_end, extra, strict=True)], out


def _torch_pad_list(begin: Iterable[int], end: Iterable[int]) -> list[int]:
    """F.pad wants (begin, end) pairs from the last axis to the first."""
    pairs = list(zip(begin, end, strict=True))
    return [p for b, e in reversed(pairs) for p in (b, e)]


def windows(x: Tensor, node: Node, pad_value: float) -> Tensor:
    """Sliding windows [N, C, *out, *kernel] of a batched tensor: the torch twin of reference.windows."""
    w = window_of(node)
    spatial = tuple(x.shape[2:])
    begin, end, out = _window_geometry(node, spatial)
    xp = F.pad(x, _torch_pad_list(begin, end), mode="constant", value=pad_value)
    for a in range(w.rank):
        xp = xp.unfold(2 + a, w.span(a), w.strides[a])
    index = (
        slice(None),
        slice(None),
        *(slice(0, o) for o in out),
        *(slice(None, None, d) for d in w.dilations),
    )
    return xp[index]


def _conv_fn(rank: int) -> Callable[..., Tensor]:
    try:
        return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    except KeyError:
        raise UnsupportedOpError(f"sim.torch: {rank}-d convolution is not supported (1-3 d)") from None


def _activation(node: Node, y: Tensor) -> Tensor:
    act = node.attrs.get("activation", "none")
    if act == "relu":
        return torch.relu(y)
    if act == "clip":
        return torch.clamp(y, node.attrs["clip_lo"], node.attrs["clip_hi"])
    return y


def _pad_tensor(node: Node, x: Tensor, value: float) -> Tensor:
    begin, end = node.attrs["pads_begin"], node.attrs["pads_end"]
    crop = (
        slice(None),
        *(slice(max(0, -b), d - max(0, -e)) for d, b, e in zip(x.shape[1:], begin, end, strict=True)),
    )
    x = x[crop]
    pos_b, pos_e = [max(0, b) for b in begin], [max(0, e) for e in end]
    mode = node.attrs.get("mode", "constant")
    if mode == "constant":
        return F.pad(x, _torch_pad_list([0, *pos_b], [0, *pos_e]), mode="constant", value=value)
    np_mode = {"edge": "edge", "reflect": "reflect", "wrap": "wrap"}[mode]
    for axis, (b, e) in enumerate(zip(pos_b, pos_e, strict=True), start=1):
        if b or e:
            idx = np.pad(np.arange(x.shape[axis]), (b, e), mode=np_mode)
            x = x.index_select(axis, torch.as_tensor(idx, device=x.device))
    return x


def _float_softmax(node: Node, x: Tensor) -> Tensor:
    axis = node.attrs["axis"] + 1
    if node.attrs.get("legacy", False):
        flat = x.reshape(*x.shape[:axis], -1)
        return torch.softmax(flat, dim=-1).reshape(x.shape)
    return torch.softmax(x, dim=axis)


def _float_unary(node: Node, x: Tensor) -> Tensor:
    op = node.op
    if op == "Sigmoid":
        return torch.sigmoid(x)
    if op == "Tanh":
        return torch.tanh(x)
    if op == "LeakyRelu":
        return torch.where(x >= 0, x, node.attrs.get("alpha", 0.01) * x)
    if op == "HardSigmoid":
        return torch.clamp(node.attrs.get("alpha", 0.2) * x + node.attrs.get("beta", 0.5), 0.0, 1.0)
    if op == "HardSwish":
        return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)
    raise UnsupportedOpError(f"{node.describe()}: sim.torch has no kernel for {op}")


def _batchnorm(xs: list[Tensor], node: Node) -> Tensor:
    x, scale, bias, mean, var = xs
    eps = node.attrs.get("epsilon", 1e-5)
    shape = (-1,) + (1,) * (x.ndim - 2)
    inv = scale / torch.sqrt(var + eps)
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)


def _safe(name: str, index: int, prefix: str = "c") -> str:
    """A unique module attribute name for a value or node name (any characters)."""
    return f"{prefix}{index}_" + "".join(ch if ch.isalnum() else "_" for ch in name)


class TorchExecutor(torch.nn.Module):
    """Runs an IR graph as a differentiable torch module (see the module docstring).

    graph:      the IR graph (kept as given; constants are copied into parameters/buffers).
    mode:       Mode.FLOAT or Mode.QUANTIZED (the graph must carry formats for the latter).
    masks:      {const_name: array of the constant's shape}, multiplied into it every forward.
    trainable:  names of the constants to train; default: weight and bias of every Dense/Conv.
    dtype:      torch.float64 (exact, the default) or torch.float32 (faster training).
    """

    def __init__(
        self,
        graph: Graph,
        mode: Mode | str = Mode.FLOAT,
        *,
        masks: Mapping[str, np.ndarray] | None = None,
        trainable: Iterable[str] | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        graph.verify()
        self.graph = graph
        self.mode = Mode(mode)
        self._nodes = {n.name: n for n in graph.nodes}
        if trainable is None:
            trainable = [i for n in graph.nodes if n.op in MAC_OPS for i in n.inputs[1:3] if i]
        self.trainable_names: list[str] = list(dict.fromkeys(trainable))
        self._attr: dict[str, str] = {}  # const name -> parameter/buffer attribute
        self._bias_of: set[str] = {n.inputs[2] for n in graph.nodes if n.op in MAC_OPS and len(n.inputs) > 2}
        for name in self.trainable_names:
            arr = graph.const(name)
            attr = self._attr[name] = _safe(name, len(self._attr))
            # a copy: training must never write into the graph's numpy constants
            self.register_parameter(attr, torch.nn.Parameter(torch.tensor(np.array(arr, np.float64))))
        for name, v in graph.values.items():
            if v.is_const and name not in self._attr:
                attr = self._attr[name] = _safe(name, len(self._attr))
                self.register_buffer(attr, torch.tensor(np.array(v.const, np.float64)))
        self._mask_attr: dict[str, str] = {}
        self._sources = torch.nn.ModuleDict()
        self._source_of: dict[str, str] = {}
        for name, m in (masks or {}).items():
            self.set_mask(name, m)
        self._luts: dict[str, str] = {}
        if self.mode is Mode.QUANTIZED:
            self._prepare_quantized()
        self.to(dtype)

    # -- constants ---------------------------------------------------------------------------
    def set_mask(self, name: str, mask: np.ndarray) -> None:
        """Multiply constant `name` by `mask` (same shape) in every forward pass and in write_back."""
        shape = tuple(self.graph.const(name).shape)
        m = np.asarray(mask)
        if m.shape != shape:
            raise DataError(f"mask of constant {name!r} has shape {list(m.shape)}, the constant {list(shape)}")
        t = torch.as_tensor(m.astype(np.float64), dtype=self._dtype())
        attr = "mask_" + self._attr[name]
        if attr in self._buffers:
            self._buffers[attr] = t.to(self._buffers[attr].device)
        else:
            self.register_buffer(attr, t)
        self._mask_attr[name] = attr

    def set_source(self, name: str, module: torch.nn.Module) -> None:
        """Compute constant `name` as `module()` (e.g. codebook[indices]); its parameters train instead."""
        key = self._attr[name]
        self._sources[key] = module
        self._source_of[name] = key

    def param(self, name: str) -> torch.nn.Parameter:
        """The latent parameter of a trainable constant."""
        if name not in self.trainable_names:
            raise GraphError(f"constant {name!r} is not trainable in this executor")
        return getattr(self, self._attr[name])

    def latent(self, name: str) -> Tensor:
        """Constant `name` before quantization: its source, parameter or buffer, times its mask."""
        t = self._sources[self._source_of[name]]() if name in self._source_of else getattr(self, self._attr[name])
        if name in self._mask_attr:
            t = t * getattr(self, self._mask_attr[name])
        return t

    def load_latent(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite trainable constants (e.g. the float weights behind a quantized graph)."""
        with torch.no_grad():
            for name, arr in values.items():
                p = self.param(name)
                a = np.asarray(arr, dtype=np.float64)
                if a.shape != tuple(p.shape):
                    raise DataError(f"constant {name!r}: got shape {list(a.shape)}, expected {list(p.shape)}")
                p.copy_(torch.as_tensor(a, dtype=p.dtype))

    def _dtype(self) -> torch.dtype:
        for t in list(self.parameters()) + list(self.buffers()):
            if t.is_floating_point():
                return t.dtype
        return torch.float64

    def _const(self, name: str) -> Tensor:
        """Constant as the forward pass uses it (quantized mode: on its format's grid)."""
        t = self.latent(name)
        if self.mode is Mode.FLOAT or (name not in self.trainable_names and name not in self._source_of):
            return t  # non-trainable constants of a quantized graph are already on their grid
        fmt = self.graph.value(name).type.format
        if name in self._bias_of and isinstance(fmt, FixedPoint):
            # the bias lives on the accumulator grid; its width is derived from the values (see write_back)
            return ste(t, round_codes(t * _pow2(fmt.frac), Rounding.HALF_EVEN) * _pow2(-fmt.frac), torch.ones_like(t))
        return fake_quant_weight(t, fmt, WEIGHT_ROUNDING)

    # -- quantized-mode preparation ------------------------------------------------------------
    def _fmt(self, value: str) -> NumberFormat:
        return self.graph.value(value).type.format

    def _prepare_quantized(self) -> None:
        g = self.graph
        for node in g.nodes:
            if node.op in exact.LUT_OPS:
                in_fmt, out_fmt = self._fmt(node.inputs[0]), self._fmt(node.outputs[0])
                if isinstance(in_fmt, FixedPoint) and isinstance(out_fmt, FixedPoint):
                    table = exact.lut_table(node, in_fmt, out_fmt)
                    attr = _safe(node.name, len(self._luts), "lut")
                    self.register_buffer(attr, torch.as_tensor(table, dtype=torch.int64))
                    self._luts[node.name] = attr
            elif node.op == "Softmax":
                fi = self._fmt(node.inputs[0])
                if isinstance(fi, FixedPoint):
                    table = integer_kernels.softmax_exp_table(fi.frac, 1 << fi.bits)
                    attr = _safe(node.name, len(self._luts), "lut")
                    self.register_buffer(attr, torch.as_tensor(table, dtype=torch.int64))
                    self._luts[node.name] = attr
            elif node.op in MAC_OPS:
                self._check_exact(node)

    def _check_exact(self, node: Node) -> None:
        fx, fw = self._fmt(node.inputs[0]), self._fmt(node.inputs[1])
        if not (isinstance(fx, FixedPoint) and isinstance(fw, FixedPoint)):
            return
        w_shape = self.graph.const(node.inputs[1]).shape
        fan_in = int(np.prod(w_shape[1:]))
        worst = fan_in * max(abs(fx.min_code), fx.max_code) * max(abs(fw.min_code), fw.max_code)
        if worst >= EXACT_LIMIT / 2:
            log.warning(
                "%s: accumulators may reach %d units; float64 is exact only below 2**53, so the "
                "sim.torch == sim.exact guarantee may not hold for this layer",
                node.describe(),
                worst,
            )

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor | np.ndarray) -> Tensor:
        """The graph's only output for a batch of its only input."""
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise GraphError(f"graph '{self.graph.name}' has several inputs/outputs: use run({{name: batch}})")
        return self.run({self.graph.inputs[0]: x})[self.graph.outputs[0]]

    def run(self, feeds: Mapping[str, Tensor | np.ndarray], keep: bool = False) -> dict[str, Tensor]:
        """Outputs (every value if `keep`) for a batch per graph input."""
        dtype = self._dtype()
        env: dict[str, Tensor] = {}
        for name in self.graph.inputs:
            if name not in feeds:
                raise DataError(f"no data given for graph input {name!r}")
            x = torch.as_tensor(feeds[name]).to(dtype)
            shape = self.graph.value(name).type.shape
            if tuple(x.shape[1:]) != shape:
                raise DataError(
                    f"input {name!r} expects samples of shape {list(shape)} (batch first), got {list(x.shape)}"
                )
            env[name] = self._encode_input(name, x) if self.mode is Mode.QUANTIZED else x
        for node in self.graph.nodes:
            xs = [env[i] if i in env else self._const(i) for i in node.inputs if i]
            quantized = self.mode is Mode.QUANTIZED
            env[node.outputs[0]] = self._quantized(node, xs) if quantized else self._float(node, xs)
        return env if keep else {o: env[o] for o in self.graph.outputs}

    def _encode_input(self, name: str, x: Tensor) -> Tensor:
        rounding = Rounding(self.graph.meta.get("input_rounding", Rounding.HALF_EVEN))
        return fake_quant(x, self._fmt(name), rounding, exact.format_block_axis(x.ndim))

    # -- float kernels (the torch twin of sim.reference) ----------------------------------------
    def _float(self, node: Node, xs: list[Tensor]) -> Tensor:
        op = node.op
        if op == "Dense":
            return _activation(node, F.linear(xs[0], xs[1], xs[2] if len(xs) > 2 else None))
        if op == "Conv":
            return _activation(node, self._conv(node, xs))
        if op == "Gemm":
            b = xs[1].T if node.attrs.get("transB", 0) else xs[1]
            y = node.attrs.get("alpha", 1.0) * (xs[0] @ b)
            return y + node.attrs.get("beta", 1.0) * xs[2] if len(xs) > 2 else y
        if op == "MatMul":
            return xs[0] @ xs[1]
        if op == "Add":
            return _activation(node, xs[0] + xs[1])
        if op == "Affine":
            return xs[0] * xs[1] + xs[2]
        if op == "Sub":
            return xs[0] - xs[1]
        if op == "Mul":
            return xs[0] * xs[1]
        if op == "Div":
            return xs[0] / xs[1]
        if op == "Relu":
            return torch.relu(xs[0])
        if op == "Clip":
            return torch.clamp(xs[0], node.attrs.get("min", -math.inf), node.attrs.get("max", math.inf))
        if op == "BatchNormalization":
            return _batchnorm(xs, node)
        if op in ("Flatten", "Reshape", "Transpose", "Identity"):
            return self._shape_op(node, xs[0])
        if op == "MaxPool":
            return windows(xs[0], node, -math.inf).amax(dim=tuple(range(-(xs[0].ndim - 2), 0)))
        if op == "AveragePool":
            return self._window_sums(node, xs[0]) / self._counts(node, xs[0])
        if op == "GlobalAveragePool":
            return xs[0].mean(dim=tuple(range(2, xs[0].ndim)), keepdim=True)
        if op == "GlobalMaxPool":
            return xs[0].amax(dim=tuple(range(2, xs[0].ndim)), keepdim=True)
        if op == "Concat":
            return torch.cat(xs, dim=node.attrs["axis"] + 1)
        if op == "Pad":
            return _pad_tensor(node, xs[0], float(node.attrs.get("value", 0.0)))
        if op == "Softmax":
            return _float_softmax(node, xs[0])
        return _float_unary(node, xs[0])

    def _shape_op(self, node: Node, x: Tensor) -> Tensor:
        if node.op == "Flatten":
            return x.reshape(x.shape[0], -1)
        if node.op == "Reshape":
            return x.reshape((x.shape[0], *node.attrs["shape"]))
        if node.op == "Transpose":
            return x.permute((0, *(p + 1 for p in node.attrs["perm"])))
        return x

    def _conv(self, node: Node, xs: list[Tensor]) -> Tensor:
        x, w = xs[0], xs[1]
        win = window_of(node)
        x = F.pad(x, _torch_pad_list(win.pads_begin, win.pads_end))
        conv = _conv_fn(win.rank)
        b = xs[2].reshape(-1) if len(xs) > 2 else None
        if b is not None and b.numel() == 1 and w.shape[0] > 1:
            b = b.expand(w.shape[0])
        return conv(x, w, b, stride=win.strides, dilation=win.dilations, groups=node.attrs.get("group", 1))

    def _window_sums(self, node: Node, x: Tensor) -> Tensor:
        return windows(x, node, 0.0).sum(dim=tuple(range(-(x.ndim - 2), 0)))

    def _counts(self, node: Node, x: Tensor) -> Tensor:
        """How many inputs each average-pooling window divides by (as sim.reference)."""
        spatial = tuple(x.shape[2:])
        if node.attrs.get("count_include_pad", 0):
            _, msk = np_windows(np.ones((1, 1, *spatial)), node, 0.0)
            counts = msk.sum(axis=tuple(range(-len(spatial), 0)))
        else:
            counts = real_counts(spatial, node)
        return torch.as_tensor(np.asarray(counts, dtype=np.float64), dtype=x.dtype, device=x.device)

    # -- quantized kernels (the float64 twin of sim.exact) --------------------------------------
    def _requant(self, node: Node, y: Tensor, out: str, *, with_activation: bool) -> Tensor:
        """Round an exact sum onto the output format: fused activation + node rounding + saturation."""
        fmt = self._fmt(out)
        rounding = Rounding(node.attrs.get("rounding", Rounding.HALF_EVEN))
        if isinstance(fmt, FixedPoint):
            lo, hi = exact.activation_bounds(node, fmt) if with_activation else (fmt.min_code, fmt.max_code)
            v = y * _pow2(fmt.frac)
            codes = torch.clamp(round_codes(v, rounding), lo, hi)
            return ste(y, codes * _pow2(-fmt.frac), (v >= lo) & (v <= hi))
        y = _activation(node, y) if with_activation else y
        return fake_quant(y, fmt, rounding, exact.format_block_axis(y.ndim))  # blocks as sim.exact.format_mac

    def _quantized(self, node: Node, xs: list[Tensor]) -> Tensor:
        op, out = node.op, node.outputs[0]
        if op in ("Flatten", "Reshape", "Transpose", "Identity"):
            return self._shape_op(node, xs[0])
        if op == "Relu":
            return torch.relu(xs[0])
        if op == "Clip":
            fmt = self._fmt(node.inputs[0])
            if not isinstance(fmt, FixedPoint):
                return self._float(node, xs)
            lo, hi = exact.clip_bounds(node.attrs.get("min", -math.inf), node.attrs.get("max", math.inf), fmt)
            return torch.clamp(xs[0], lo * fmt.step, hi * fmt.step)
        if op == "Dense":
            return self._requant(
                node, F.linear(xs[0], xs[1], xs[2] if len(xs) > 2 else None), out, with_activation=True
            )
        if op == "Conv":
            return self._requant(node, self._conv(node, xs), out, with_activation=True)
        if op in ("MaxPool", "GlobalMaxPool"):
            return self._float(node, xs)
        if op in ("AveragePool", "GlobalAveragePool"):
            return self._avgpool(node, xs[0])
        if op == "Add" and len(self.graph.activations(node)) == 2:
            return self._requant(node, xs[0] + xs[1], out, with_activation=True)
        if op == "Concat":
            return torch.cat(
                [self._requant(node, x, out, with_activation=False) for x in xs], dim=node.attrs["axis"] + 1
            )
        if op == "Affine":
            return self._requant(node, xs[0] * xs[1] + xs[2], out, with_activation=False)
        if op == "Pad":
            return self._pad(node, xs[0])
        if op in exact.LUT_OPS:
            return self._lut(node, xs[0])
        if op == "Softmax":
            return self._softmax(node, xs[0])
        raise UnsupportedOpError(f"{node.describe()}: sim.torch has no quantized kernel for {op}")

    def _avgpool(self, node: Node, x: Tensor) -> Tensor:
        fmt = self._fmt(node.outputs[0])
        if node.op == "GlobalAveragePool":
            sums = x.sum(dim=tuple(range(2, x.ndim)), keepdim=True)
            counts = np.full((1,) * (x.ndim - 2), int(np.prod(x.shape[2:])))
        else:
            sums = self._window_sums(node, x)
            counts = self._counts(node, x).cpu().numpy().astype(np.int64)
        if not isinstance(fmt, FixedPoint):
            return fake_quant(sums / torch.as_tensor(counts, dtype=x.dtype), fmt, Rounding(node.attrs["rounding"]))
        # the golden model divides by count as (sum * M) >> S with the node's rounding
        pairs = [integer_kernels.avgpool_multiplier(int(c)) for c in counts.reshape(-1)]
        m = torch.as_tensor([p[0] for p in pairs], dtype=x.dtype).reshape(counts.shape)
        s = torch.as_tensor([_pow2(-p[1]) for p in pairs], dtype=x.dtype).reshape(counts.shape)
        v = sums * _pow2(fmt.frac) * m * s
        codes = torch.clamp(round_codes(v, Rounding(node.attrs["rounding"])), fmt.min_code, fmt.max_code)
        return ste(
            sums / torch.as_tensor(counts, dtype=x.dtype), codes * fmt.step, torch.ones_like(v, dtype=torch.bool)
        )

    def _pad(self, node: Node, x: Tensor) -> Tensor:
        fmt = self._fmt(node.inputs[0])
        value = float(node.attrs.get("value", 0.0))
        if isinstance(fmt, FixedPoint):
            value = float(fmt.quantize(np.array(value), rounding=Rounding.HALF_EVEN, overflow=Overflow.SATURATE))
        return _pad_tensor(node, x, value)

    def _lut(self, node: Node, x: Tensor) -> Tensor:
        y = _float_unary(node, x)
        if node.name not in self._luts:
            return fake_quant(y, self._fmt(node.outputs[0]), Rounding(node.attrs.get("rounding", Rounding.HALF_EVEN)))
        in_fmt = cast(FixedPoint, self._fmt(node.inputs[0]))  # fixed point: a table was made
        out_fmt = cast(FixedPoint, self._fmt(node.outputs[0]))
        table = getattr(self, self._luts[node.name])
        idx = torch.round(x.detach() * _pow2(in_fmt.frac)).to(torch.int64) - in_fmt.min_code
        q = table[idx].to(x.dtype) * out_fmt.step
        mask = (y >= out_fmt.min_value) & (y <= out_fmt.max_value)
        return ste(y, q, mask)

    def _softmax(self, node: Node, x: Tensor) -> Tensor:
        y = _float_softmax(node, x)
        if node.name not in self._luts:
            return fake_quant(y, self._fmt(node.outputs[0]), Rounding(node.attrs.get("rounding", Rounding.HALF_EVEN)))
        fi = cast(FixedPoint, self._fmt(node.inputs[0]))  # fixed point: a table was made
        fo = cast(FixedPoint, self._fmt(node.outputs[0]))
        axis = node.attrs["axis"] + 1
        codes = torch.round(x.detach() * _pow2(fi.frac)).to(torch.int64)
        legacy = node.attrs.get("legacy", False)
        c = codes.reshape(*codes.shape[:axis], -1) if legacy else codes
        ax = -1 if legacy else axis
        d = c.amax(dim=ax, keepdim=True) - c
        e = getattr(self, self._luts[node.name])[d]
        s = e.sum(dim=ax, keepdim=True)
        q = torch.clamp(torch.div((e << (fo.frac + 1)) + s, 2 * s, rounding_mode="floor"), max=fo.max_code)
        return ste(y, q.reshape(codes.shape).to(x.dtype) * fo.step, torch.ones_like(y, dtype=torch.bool))

    # -- export ------------------------------------------------------------------------------------
    def effective(self, name: str) -> np.ndarray:
        """Constant `name` as the forward pass uses it, computed in float64."""
        with torch.no_grad():
            return self._const_float64(name).cpu().numpy()

    def _const_float64(self, name: str) -> Tensor:
        t = self.latent(name).detach().double()
        if self.mode is Mode.FLOAT or (name not in self.trainable_names and name not in self._source_of):
            return t
        fmt = self.graph.value(name).type.format
        if name in self._bias_of and isinstance(fmt, FixedPoint):
            return round_codes(t * _pow2(fmt.frac), Rounding.HALF_EVEN) * _pow2(-fmt.frac)
        return fake_quant_weight(t, fmt, WEIGHT_ROUNDING)

    def write_back(self, graph: Graph | None = None) -> Graph:
        """A copy of `graph` (default: this executor's graph) holding the trained constants.

        MAC nodes are matched by node name and input slot (weight, bias), so the trained weights
        of a quantized executor can be written into the float graph it came from and back.
        Per target constant:
        - float format: the latent value times its mask, in the constant's original dtype;
        - fixed-point bias: the latent bias rounded half-even onto its accumulator grid, with the
          format's width re-derived from the trained codes (the quantize pass's rule);
        - any other format: the fake-quantized value (exactly what the quantized forward used).
        `write_back(executor.graph)` of a quantized executor is the graph whose `sim.exact` output
        equals this executor's float64 forward pass (the exact equivalence guarantee).
        """
        target = graph if graph is not None else self.graph
        g = target.copy()
        for node in g.nodes:
            src = self._nodes.get(node.name)
            if node.op not in MAC_OPS or src is None or src.op != node.op:
                continue
            for slot in (1, 2):
                if slot >= len(node.inputs) or slot >= len(src.inputs):
                    continue
                s_name, d_name = src.inputs[slot], node.inputs[slot]
                if s_name not in self.trainable_names and s_name not in self._source_of:
                    continue
                self._write_one(g, s_name, d_name, is_bias=slot == 2)
        return g

    def _write_one(self, g: Graph, s_name: str, d_name: str, *, is_bias: bool) -> None:
        dst = g.value(d_name)
        with torch.no_grad():
            latent = self.latent(s_name).detach().double()
        if tuple(latent.shape) != tuple(dst.const.shape):
            raise GraphError(
                f"write_back: constant {d_name!r} has shape {list(dst.const.shape)}, "
                f"the trained {s_name!r} {list(latent.shape)}"
            )
        fmt = dst.type.format
        if isinstance(fmt, Float32):
            g.values[d_name] = Value(d_name, dst.type, latent.cpu().numpy().astype(dst.const.dtype))
            return
        if is_bias and isinstance(fmt, FixedPoint):
            codes = np.rint(np.ldexp(latent.cpu().numpy(), fmt.frac)).astype(np.int64)
            top = int(np.abs(codes).max()) if codes.size else 0
            new_fmt = FixedPoint(max(2, top.bit_length() + 1, fmt.bits), fmt.frac, signed=True)
            g.values[d_name] = Value(d_name, TensorType(dst.type.shape, new_fmt), new_fmt.to_float(codes))
            return
        with torch.no_grad():
            q = fake_quant_weight(latent, fmt, WEIGHT_ROUNDING).cpu().numpy().astype(np.float64)
        g.values[d_name] = Value(d_name, dst.type, q)


def mac_constants(graph: Graph) -> dict[tuple[str, int], str]:
    """{(node name, slot): constant name} of the weights (slot 1) and biases (slot 2) of MAC nodes."""
    return {(n.name, s): n.inputs[s] for n in graph.nodes if n.op in MAC_OPS for s in (1, 2) if s < len(n.inputs)}


def latent_from(executor_graph: Graph, source: Graph) -> dict[str, np.ndarray]:
    """Constants of `source`'s MAC nodes keyed by the names the executor's graph gives them.

    Matches by node name and slot: e.g. the float weights of a float graph for an executor built
    on its quantized graph (whose constants are renamed `*.weight_q`).
    """
    src = mac_constants(source)
    out: dict[str, np.ndarray] = {}
    for key, name in mac_constants(executor_graph).items():
        if key in src:
            out[name] = np.asarray(source.const(src[key]), dtype=np.float64)
    return out


__all__ = [
    "MAC_OPS",
    "Mode",
    "TorchExecutor",
    "fake_quant",
    "fake_quant_weight",
    "latent_from",
    "mac_constants",
    "numpy_fake_quant",
    "register_fake_quant",
    "round_codes",
    "ste",
    "weight_axis",
]
