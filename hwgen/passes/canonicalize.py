"""Canonicalization: bring imported graphs to the few forms the quantizer and hardware know.

Rewrite rules, applied until nothing changes:
  1. Identity (and Dropout/Cast imported as Identity) is removed.
  2. Gemm becomes Dense: W = alpha * (B^T or B) stored [out, in]; bias = beta * C.
  3. MatMul by a constant matrix becomes Dense with W = B^T and no bias.
  4. Dense/Conv -> Add/Sub of a constant (scalar or per output channel) folds into the bias.
  5. Dense/Conv -> Mul/Div by a constant (scalar or per output channel) folds into W and the bias.
  6. Dense/Conv -> BatchNormalization folds into W and the bias.
  7. Dense/Conv -> Relu / Clip fuses as the activation (the hardware clamps during requantization).
  8. Reshape/Flatten that does not change the shape is removed.
  9. Add of two activations -> Relu fuses as the Add's activation.
 10. A constant Pad on the spatial axes folds into the Conv / MaxPool / AveragePool it feeds, when exact
     (hwgen.passes.fold_pad, which says when).
Rules 4-7 and 9 apply only when the first node's output has no other consumer and is not a
graph output.
Refuses: nothing; ops it does not rewrite are left as they are.
"""

from __future__ import annotations

import numpy as np

from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.passes.base import NodeRecord, PassResult
from hwgen.passes.fold_pad import fold_pads_inplace


def _sole_consumer(g: Graph, value: str) -> Node | None:
    users = g.consumers(value)
    if len(users) != 1 or value in g.outputs:
        return None
    return users[0]


def _bypass(g: Graph, node: Node) -> None:
    """Remove a single-input single-output node, wiring its consumers to its input."""
    src, dst = node.inputs[0], node.outputs[0]
    g.nodes.remove(node)
    if dst in g.outputs and (src in g.inputs or src in g.outputs):
        # Keep the output name: graph inputs/outputs are the public interface.
        g.nodes.append(Node(g.unique_name(node.name), "Identity", [src], [dst], onnx_name=node.onnx_name))
        return
    if dst in g.outputs:
        prod = g.producer(src)
        assert prod is not None  # src is not a graph input, so a node produces it
        prod.outputs = [dst if o == src else o for o in prod.outputs]
        g.values[dst] = Value(dst, g.values[src].type)
        g.replace_uses(src, dst)
    else:
        g.replace_uses(dst, src)


def _new_const(g: Graph, base: str, arr: np.ndarray) -> str:
    name = g.unique_name(base)
    g.add_value(Value(name, TensorType(tuple(arr.shape)), np.asarray(arr, dtype=np.float64)))
    return name


#: ops with a weight tensor [out, ...] and an optional per-output bias, into which scales/BN fold
MAC_OPS = ("Dense", "Conv")


def _set_mac_params(g: Graph, node: Node, w: np.ndarray, b: np.ndarray) -> None:
    node.inputs = [node.inputs[0], _new_const(g, f"{node.name}.weight", w), _new_const(g, f"{node.name}.bias", b)]


def _mac_params(g: Graph, node: Node) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(g.const(node.inputs[1]), dtype=np.float64)
    b = (
        np.broadcast_to(np.asarray(g.const(node.inputs[2]), dtype=np.float64), (w.shape[0],)).copy()
        if len(node.inputs) > 2
        else np.zeros(w.shape[0])
    )
    return w, b


def _per_output(g: Graph, node: Node, const_name: str, n_out: int) -> np.ndarray | None:
    """A constant as a length-n_out vector, if it only varies along the output-channel axis.

    That axis is the last one of a Dense output and the first (per-sample) axis of a Conv output.
    """
    c = np.asarray(g.const(const_name), dtype=np.float64)
    if c.size == 1:
        return np.full(n_out, float(c.reshape(())))
    out_rank = len(g.value(node.outputs[0]).type.shape)
    if c.ndim > out_rank:
        return None
    full = (1,) * (out_rank - c.ndim) + c.shape
    axis = 0 if node.op == "Conv" else out_rank - 1
    if full[axis] == n_out and c.size == n_out:
        return c.reshape(n_out)
    return None


def _merge_into(g: Graph, dense: Node, follower: Node) -> None:
    """Let `dense` produce what `follower` produced, then drop `follower`."""
    old = dense.outputs[0]
    dense.outputs = [follower.outputs[0]]
    g.nodes.remove(follower)
    del g.values[old]


def _rewrite_once(g: Graph, records: list[NodeRecord]) -> bool:
    for node in list(g.nodes):

        def rec(rule: str, _node: Node = node, **kv: object) -> None:
            records.append(NodeRecord(_node.name, _node.onnx_name, "canonicalize", {"rule": rule, **kv}))

        port_copy = node.outputs[0] in g.outputs and (node.inputs[0] in g.inputs or node.inputs[0] in g.outputs)
        if node.op == "Identity" and not port_copy:
            _bypass(g, node)
            rec("remove_identity")
            return True
        if (
            node.op in ("Reshape", "Flatten")
            and g.value(node.inputs[0]).type.shape == g.value(node.outputs[0]).type.shape
        ):
            if port_copy:
                continue
            _bypass(g, node)
            rec("remove_noop_reshape")
            return True
        if node.op == "Gemm":
            w = np.asarray(g.const(node.inputs[1]), dtype=np.float64)
            w = (w if node.attrs.get("transB", 0) else w.T) * node.attrs.get("alpha", 1.0)
            n_out = w.shape[0]
            b = np.zeros(n_out)
            if len(node.inputs) > 2:
                b = np.broadcast_to(np.asarray(g.const(node.inputs[2]), dtype=np.float64), (n_out,)) * node.attrs.get(
                    "beta", 1.0
                )
            node.op, node.attrs = "Dense", {"activation": "none"}
            _set_mac_params(g, node, w, b)
            rec("gemm_to_dense")
            return True
        if node.op == "MatMul":
            w = np.asarray(g.const(node.inputs[1]), dtype=np.float64).T
            node.op, node.attrs = "Dense", {"activation": "none"}
            _set_mac_params(g, node, w, np.zeros(w.shape[0]))
            rec("matmul_to_dense")
            return True
        if node.op == "Add" and node.attrs.get("activation", "none") == "none" and len(g.activations(node)) == 2:
            nxt = _sole_consumer(g, node.outputs[0])
            if nxt is not None and nxt.op == "Relu":
                node.attrs = {**node.attrs, "activation": "relu"}
                _merge_into(g, node, nxt)
                rec("fuse_add_relu")
                return True
            continue
        if node.op not in MAC_OPS or node.attrs.get("activation", "none") != "none":
            continue
        nxt = _sole_consumer(g, node.outputs[0])
        if nxt is None:
            continue
        w, b = _mac_params(g, node)
        n_out = w.shape[0]
        per_out = (n_out,) + (1,) * (w.ndim - 1)  # broadcast a per-output vector over W
        other = [i for i in nxt.inputs if i != node.outputs[0]]
        const = other[0] if len(other) == 1 and g.values[other[0]].is_const else None
        if nxt.op in ("Add", "Sub", "Mul", "Div") and const is not None:
            c = _per_output(g, node, const, n_out)
            first = nxt.inputs[0] == node.outputs[0]
            if c is None or (nxt.op == "Div" and (not first or np.any(c == 0))):
                continue
            if nxt.op == "Add":
                b = b + c
            elif nxt.op == "Sub":
                w, b = (w, b - c) if first else (-w, c - b)
            elif nxt.op == "Mul":
                w, b = w * c.reshape(per_out), b * c
            else:
                w, b = w / c.reshape(per_out), b / c
            _set_mac_params(g, node, w, b)
            _merge_into(g, node, nxt)
            rec(f"fold_{nxt.op.lower()}")
            return True
        channel_ok = node.op == "Conv" or len(g.value(node.outputs[0]).type.shape) == 1
        if nxt.op == "BatchNormalization" and channel_ok:
            gamma, beta, mean, var = (np.asarray(g.const(i), dtype=np.float64) for i in nxt.inputs[1:5])
            sc = gamma / np.sqrt(var + nxt.attrs.get("epsilon", 1e-5))
            _set_mac_params(g, node, w * sc.reshape(per_out), (b - mean) * sc + beta)
            _merge_into(g, node, nxt)
            rec("fold_batchnorm")
            return True
        if nxt.op == "Relu":
            node.attrs = {**node.attrs, "activation": "relu"}
            _merge_into(g, node, nxt)
            rec("fuse_relu")
            return True
        if nxt.op == "Clip":
            lo, hi = nxt.attrs.get("min", -np.inf), nxt.attrs.get("max", np.inf)
            node.attrs = {**node.attrs, "activation": "clip", "clip_lo": float(lo), "clip_hi": float(hi)}
            _merge_into(g, node, nxt)
            rec("fuse_clip", min=lo, max=hi)
            return True
    return False


def canonicalize(graph: Graph) -> PassResult:
    """Apply the rewrite rules above until a fixed point; functional (returns a new graph)."""
    g = graph.copy()
    records: list[NodeRecord] = []
    changed = False
    while _rewrite_once(g, records):
        changed = True
    changed = fold_pads_inplace(g, records) or changed
    g.remove_unused()
    return PassResult(g, changed, records)
