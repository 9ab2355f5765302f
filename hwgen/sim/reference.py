"""Float reference executor: runs the IR in float64 numpy and must match onnxruntime.

Activations carry a leading batch axis at run time; constants are used as stored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hwgen.errors import DataError, GraphError
from hwgen.ir.graph import Graph, Node

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


KERNELS: dict[str, Kernel] = {
    "Dense": _dense,
    "Gemm": _gemm,
    "MatMul": lambda n, xs: xs[0] @ xs[1],
    "Add": lambda n, xs: xs[0] + xs[1],
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
