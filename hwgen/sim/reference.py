"""Float reference executor: runs the IR in float64 numpy and must match onnxruntime.

Activations carry a leading batch axis at run time; constants are used as stored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hwgen.errors import DataError, GraphError
from hwgen.ir.graph import Graph, Node
from hwgen.ir.ops import window_of
from hwgen.sim import winograd_kernels

Kernel = Callable[[Node, list[np.ndarray]], np.ndarray]


def _activation(node: Node, y: np.ndarray) -> np.ndarray:
    act = node.attrs.get("activation", "none")
    if act == "relu":
        return np.maximum(y, 0.0)
    if act == "clip":
        return np.clip(y, node.attrs["clip_lo"], node.attrs["clip_hi"])
    return y


def _dense(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    x, w = xs[0], xs[1]
    y = x @ w.T
    if len(xs) > 2:
        y = y + xs[2]
    return _activation(node, y)


def _gemm(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    a, b = xs[0], xs[1]
    if node.attrs.get("transB", 0):
        b = b.T
    y = node.attrs.get("alpha", 1.0) * (a @ b)
    if len(xs) > 2:
        y = y + node.attrs.get("beta", 1.0) * xs[2]
    return y


def _batchnorm(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    x, scale, bias, mean, var = xs
    eps = node.attrs.get("epsilon", 1e-5)
    shape = (-1,) + (1,) * (x.ndim - 2)  # per-channel on axis 1 of the batched tensor
    inv = scale / np.sqrt(var + eps)
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)


def _clip(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    lo = node.attrs.get("min", -np.inf)
    hi = node.attrs.get("max", np.inf)
    return np.clip(xs[0], lo, hi)


def _reshape(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    return xs[0].reshape((xs[0].shape[0], *node.attrs["shape"]))


def _transpose(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    return xs[0].transpose((0, *(p + 1 for p in node.attrs["perm"])))


def windows(x: np.ndarray, node: Node, pad_value: float) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows of a batched [N, C, *spatial] tensor: ([N, C, *out, *kernel], valid mask).

    The mask marks window taps that fall on real input or explicit padding (not ceil_mode's
    extra end padding), which AveragePool needs for its divisor.
    """
    w = window_of(node)
    spatial = x.shape[2:]
    out = w.out_size(spatial)
    # pad enough at the end for ceil_mode windows that run past the explicit padding
    extra = [
        max(0, (o - 1) * st + w.span(a) - (n + b + e))
        for a, (o, st, n, b, e) in enumerate(zip(out, w.strides, spatial, w.pads_begin, w.pads_end, strict=True))
    ]
    pad = [(0, 0), (0, 0)] + [(b, e + x_) for b, e, x_ in zip(w.pads_begin, w.pads_end, extra, strict=True)]
    xp = np.pad(x, pad, mode="constant", constant_values=pad_value)
    inside = np.pad(
        np.ones(spatial, dtype=bool),
        [(b, e) for b, e in zip(w.pads_begin, w.pads_end, strict=True)],
        constant_values=True,
    )
    inside = np.pad(inside, [(0, x_) for x_ in extra], constant_values=False)
    r = w.rank
    spans = tuple(w.span(a) for a in range(r))
    win = np.lib.stride_tricks.sliding_window_view(xp, spans, axis=tuple(range(2, 2 + r)))
    msk = np.lib.stride_tricks.sliding_window_view(inside, spans)
    sl_out = tuple(slice(None, (o - 1) * st + 1, st) for o, st in zip(out, w.strides, strict=True))
    sl_k = tuple(slice(None, None, d) for d in w.dilations)
    win = win[(slice(None), slice(None), *sl_out, *sl_k)]
    msk = msk[(*sl_out, *sl_k)]
    return win, msk


def _conv(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    x, w = xs[0], xs[1]
    groups = node.attrs.get("group", 1)
    win, _ = windows(x, node, 0.0)  # [N, C, *out, *k]
    r = w.ndim - 2
    n, c = x.shape[:2]
    out_sp = win.shape[2 : 2 + r]
    cg, mg = c // groups, w.shape[0] // groups
    win = win.reshape(n, groups, cg, *out_sp, -1)  # [N, G, Cg, *out, K]
    wg = w.reshape(groups, mg, cg, -1)  # [G, Mg, Cg, K]
    y = np.einsum("ngc...k,gmck->ngm...", win, wg, optimize=True).reshape(n, w.shape[0], *out_sp)
    if len(xs) > 2:
        y = y + xs[2].reshape((1, -1) + (1,) * r)
    return _activation(node, y)


def _maxpool(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    win, _ = windows(xs[0], node, -np.inf)
    r = xs[0].ndim - 2
    return win.max(axis=tuple(range(-r, 0)))


def _avgpool(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    r = xs[0].ndim - 2
    win, msk = windows(xs[0], node, 0.0)
    axes = tuple(range(-r, 0))
    include_pad = node.attrs.get("count_include_pad", 0)
    count = msk.sum(axis=axes) if include_pad else real_counts(xs[0].shape[2:], node)
    return win.sum(axis=axes) / count


def real_counts(spatial: tuple[int, ...], node: Node) -> np.ndarray:
    """How many real (non-padding) inputs each pooling window covers."""
    ones = np.ones((1, 1, *spatial))
    win, _ = windows(ones, node, 0.0)
    r = len(spatial)
    return win.sum(axis=tuple(range(-r, 0)))[0, 0]


def _softmax(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    axis = node.attrs["axis"] + 1  # per-sample axis -> batched axis
    if node.attrs.get("legacy", False):
        flat = x.reshape(*x.shape[:axis], -1)
        e = np.exp(flat - flat.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).reshape(x.shape)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _pad(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    begin, end = node.attrs["pads_begin"], node.attrs["pads_end"]
    # negative pads crop
    crop = tuple(
        [slice(None)] + [slice(max(0, -b), d - max(0, -e)) for d, b, e in zip(x.shape[1:], begin, end, strict=True)]
    )
    x = x[crop]
    width = [(0, 0)] + [(max(0, b), max(0, e)) for b, e in zip(begin, end, strict=True)]
    mode = node.attrs.get("mode", "constant")
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=node.attrs.get("value", 0.0))
    return np.pad(x, width, mode={"edge": "edge", "reflect": "reflect", "wrap": "wrap"}[mode])


KERNELS: dict[str, Kernel] = {
    "Dense": _dense,
    "Gemm": _gemm,
    "MatMul": lambda n, xs: xs[0] @ xs[1],
    "Add": lambda n, xs: _activation(n, xs[0] + xs[1]),
    "Affine": lambda n, xs: xs[0] * xs[1] + xs[2],
    "Sub": lambda n, xs: xs[0] - xs[1],
    "Mul": lambda n, xs: xs[0] * xs[1],
    "Div": lambda n, xs: xs[0] / xs[1],
    "Relu": lambda n, xs: np.maximum(xs[0], 0.0),
    "Clip": _clip,
    "BatchNormalization": _batchnorm,
    "Flatten": lambda n, xs: xs[0].reshape(xs[0].shape[0], -1),
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Identity": lambda n, xs: xs[0],
    "Conv": _conv,
    "WinogradConv": winograd_kernels.reference_kernel,
    "MaxPool": _maxpool,
    "AveragePool": _avgpool,
    "GlobalAveragePool": lambda n, xs: xs[0].mean(axis=tuple(range(2, xs[0].ndim)), keepdims=True),
    "GlobalMaxPool": lambda n, xs: xs[0].max(axis=tuple(range(2, xs[0].ndim)), keepdims=True),
    "Concat": lambda n, xs: np.concatenate(xs, axis=n.attrs["axis"] + 1),
    "Pad": _pad,
    "Softmax": _softmax,
    "Sigmoid": lambda n, xs: 1.0 / (1.0 + np.exp(-xs[0])),
    "Tanh": lambda n, xs: np.tanh(xs[0]),
    "LeakyRelu": lambda n, xs: np.where(xs[0] >= 0, xs[0], n.attrs.get("alpha", 0.01) * xs[0]),
    "HardSigmoid": lambda n, xs: np.clip(n.attrs.get("alpha", 0.2) * xs[0] + n.attrs.get("beta", 0.5), 0.0, 1.0),
    "HardSwish": lambda n, xs: xs[0] * np.clip(xs[0] / 6.0 + 0.5, 0.0, 1.0),
}


def check_input(graph: Graph, x: np.ndarray, name: str | None = None) -> np.ndarray:
    """Validate a batch against the graph's input shape (clear error instead of a numpy one)."""
    name = name or graph.inputs[0]
    shape = graph.value(name).type.shape
    x = np.asarray(x)
    if x.shape[1:] != shape:
        raise DataError(
            f"input {name!r} expects samples of shape {list(shape)} (batch first), got array of shape {list(x.shape)}"
        )
    return x


def run(graph: Graph, x: np.ndarray | dict[str, np.ndarray], keep: bool = False) -> dict[str, np.ndarray]:
    """Run a batch through the graph in float64; returns the graph outputs (all values if `keep`)."""
    feeds = x if isinstance(x, dict) else {graph.inputs[0]: x}
    env: dict[str, np.ndarray] = {}
    for name in graph.inputs:
        if name not in feeds:
            raise DataError(f"no data given for graph input {name!r}")
        env[name] = check_input(graph, feeds[name], name).astype(np.float64)
    for node in graph.nodes:
        kernel = KERNELS.get(node.op)
        if kernel is None:
            raise GraphError(f"{node.describe()}: sim.reference has no kernel for op {node.op!r}")
        args = [env[i] if i in env else np.asarray(graph.const(i), dtype=np.float64) for i in node.inputs if i]
        env[node.outputs[0]] = kernel(node, args)
    if keep:
        return env
    return {o: env[o] for o in graph.outputs}
