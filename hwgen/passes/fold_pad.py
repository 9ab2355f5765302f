"""Fold explicit Pad nodes into the padding of the Conv / MaxPool / AveragePool they feed.

Exporters write 'same' padding as a standalone Pad (tf2onnx for keras, torch's F.pad); the
hardware pads inside the window engines, so a Pad that only feeds a window becomes its pads.

Rewrites (a constant-mode Pad with pads >= 0 on the spatial axes only, whose output feeds one
window node and is not a graph output), the Pad's spatial pads added to the consumer's:
  1. -> Conv, when the pad value is 0: a Conv pads with zeros (sim.exact: code 0 is the value 0).
  2. -> AveragePool, when the pad value is 0 and the pool has no padding of its own or counts it
     (count_include_pad=1); the folded pool counts its padding (count_include_pad=1), so every
     window still divides by the kernel size.
  3. -> MaxPool, when the pad value is -inf or provably not above any input (the Pad's input is
     bounded below by a ReLU / Clip / Sigmoid, e.g. ReLU then a 0-pad), dilation 1: a window's
     real element then wins over the padding, as in the engine, which skips padding taps.
  Into a pool only while the summed pads stay below the kernel (onnxruntime refuses larger ones).
Refuses: nothing. A Pad it cannot fold exactly (other modes, channel or batch axes, cropping,
  a non-zero value, several consumers, ceil_mode) stays, and hardware lowering names it.
Records: per folded Pad: the consumer and the pads added.
"""

from __future__ import annotations

import logging
import math

from hwgen.ir.graph import Graph, Node
from hwgen.passes.base import NodeRecord, PassResult

log = logging.getLogger(__name__)

#: ops whose output is no smaller than their input's lower bound (codes or values selected from it)
_SELECTING = ("MaxPool", "GlobalMaxPool", "Identity", "Flatten", "Reshape")


def lower_bound(g: Graph, value: str) -> float:
    """A proven lower bound of every element of `value` (-inf when nothing is known)."""
    node = g.producer(value)
    if node is None:
        return -math.inf
    act = node.attrs.get("activation", "none")
    if node.op == "Relu" or act == "relu":
        return 0.0
    if act == "clip":
        return float(node.attrs["clip_lo"])
    if node.op == "Clip":
        return float(node.attrs.get("min", -math.inf))
    if node.op in ("Sigmoid", "HardSigmoid"):
        return 0.0
    if node.op in _SELECTING:
        return lower_bound(g, node.inputs[0])
    return -math.inf


def _why_not(g: Graph, pad: Node, consumer: Node) -> str | None:
    """None when folding `pad` into `consumer` is exact, else the reason it stays."""
    begin, end = tuple(pad.attrs["pads_begin"]), tuple(pad.attrs["pads_end"])
    value = float(pad.attrs.get("value", 0.0))
    if pad.attrs.get("mode", "constant") != "constant":
        return f"mode {pad.attrs.get('mode')!r}"
    if begin[0] or end[0]:
        return "it pads the channel axis"
    if min(begin + end) < 0:
        return "it crops (negative pads)"
    if consumer.attrs.get("ceil_mode"):
        return f"{consumer.op} uses ceil_mode"
    merged_b = [a + b for a, b in zip(consumer.attrs["pads_begin"], begin[1:], strict=True)]
    merged_e = [a + b for a, b in zip(consumer.attrs["pads_end"], end[1:], strict=True)]
    if consumer.op in ("MaxPool", "AveragePool") and any(
        p >= k for p, k in zip(merged_b + merged_e, list(consumer.attrs["kernel"]) * 2, strict=True)
    ):
        return f"the summed pads {merged_b}/{merged_e} reach the kernel {list(consumer.attrs['kernel'])}"
    if consumer.op == "Conv":
        return None if value == 0.0 else f"pad value {value} (a Conv pads with 0)"
    if consumer.op == "AveragePool":
        if value != 0.0:
            return f"pad value {value} (an average pool pads with 0)"
        own = any(consumer.attrs["pads_begin"]) or any(consumer.attrs["pads_end"])
        if own and not consumer.attrs.get("count_include_pad", 0):
            return "the pool excludes its own padding from the count (count_include_pad=0)"
        return None
    if any(d != 1 for d in consumer.attrs.get("dilations", ())):
        return "a dilated MaxPool"
    bound = lower_bound(g, pad.inputs[0])
    if value == -math.inf or value <= bound:
        return None
    return f"pad value {value} may exceed inputs (lower bound {bound})"


def fold_pads_inplace(g: Graph, records: list[NodeRecord]) -> bool:
    """Apply the rules above to `g` in place until none applies; True when a Pad was folded."""
    changed = False
    for pad in [n for n in g.nodes if n.op == "Pad"]:
        out = pad.outputs[0]
        users = g.consumers(out)
        if len(users) != 1 or out in g.outputs or users[0].op not in ("Conv", "MaxPool", "AveragePool"):
            continue
        consumer = users[0]
        if consumer.inputs[0] != out:
            continue
        reason = _why_not(g, pad, consumer)
        if reason is not None:
            log.debug("%s stays before %s: %s", pad.describe(), consumer.describe(), reason)
            continue
        begin, end = tuple(pad.attrs["pads_begin"][1:]), tuple(pad.attrs["pads_end"][1:])
        attrs = dict(consumer.attrs)
        attrs["pads_begin"] = tuple(a + b for a, b in zip(attrs["pads_begin"], begin, strict=True))
        attrs["pads_end"] = tuple(a + b for a, b in zip(attrs["pads_end"], end, strict=True))
        if consumer.op == "AveragePool":
            attrs["count_include_pad"] = 1
        consumer.attrs = attrs
        consumer.inputs = [pad.inputs[0], *consumer.inputs[1:]]
        g.nodes.remove(pad)
        del g.values[out]
        records.append(
            NodeRecord(
                pad.name,
                pad.onnx_name,
                "fold_pad",
                {"rule": "fold_pad", "into": consumer.name, "pads_begin": begin, "pads_end": end},
            )
        )
        log.debug("folded %s into %s", pad.describe(), consumer.describe())
        changed = True
    return changed


def fold_pads(graph: Graph) -> PassResult:
    """Fold every foldable Pad into its window consumer (see the module docstring). Functional."""
    g = graph.copy()
    records: list[NodeRecord] = []
    changed = fold_pads_inplace(g, records)
    log.info("fold_pads: %d Pad node(s) folded", len(records))
    return PassResult(g, changed, records)
