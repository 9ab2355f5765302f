"""Quantized IR -> Schedule: pick an engine and a folding for every node.

Today's hardware is a chain of dense engines over element-serial streams; reshapes between
them are free because the stream order (C order) does not change.
"""

from __future__ import annotations

import logging

from hwgen.config import BuildConfig
from hwgen.errors import ScheduleError, UnsupportedOpError
from hwgen.hw.names import legalize
from hwgen.hw.plan import DensePlan, IntType, Requant, Schedule, StreamPort
from hwgen.hw.schedule import chain_schedule, choose_folding, plan_dense, valid_foldings
from hwgen.ir.graph import Graph, Node
from hwgen.numerics import FixedPoint
from hwgen.sim.exact import dense_codes, dense_requant, fixed_format

log = logging.getLogger(__name__)

#: ops that only relabel the stream (C order is kept), so they cost no hardware
FREE_OPS = ("Flatten", "Reshape", "Identity")


def code_type(fmt: FixedPoint) -> IntType:
    return IntType(fmt.bits, fmt.signed)


def _reuse_for(node: Node, k: int, m: int, config: BuildConfig, target_ii: int) -> tuple[int, int]:
    layer = config.layer(node.name, node.onnx_name)
    if layer.reuse is not None:
        return choose_folding(k, m, layer.reuse, where=node.describe())
    # balance: the fewest multipliers whose compute time stays within the target interval
    fits = [(r, pe, simd) for r, pe, simd in valid_foldings(k, m) if r <= target_ii]
    if not fits:
        return choose_folding(k, m, 1, where=node.describe())
    _r, pe, simd = max(fits, key=lambda t: (t[0], t[1]))
    return pe, simd


def _chain(graph: Graph) -> list[Node]:
    """The MAC nodes in stream order; refuses graphs that are not a single chain."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedOpError(
            f"model '{graph.name}': the hardware has one input and one output stream; "
            f"this model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs"
        )
    chain: list[Node] = []
    current = graph.inputs[0]
    while current != graph.outputs[0]:
        users = graph.consumers(current)
        if len(users) != 1:
            raise UnsupportedOpError(f"value {current!r} feeds {len(users)} nodes; only chains have hardware yet")
        node = users[0]
        if node.op == "Dense":
            if len(graph.value(node.inputs[0]).type.shape) != 1:
                raise UnsupportedOpError(f"{node.describe()}: a dense engine needs a vector input")
            chain.append(node)
        elif node.op not in FREE_OPS:
            raise UnsupportedOpError(
                f"{node.describe()}: no hardware engine for {node.op} yet; "
                "fuse it into the preceding layer or remove it from the model"
            )
        current = node.outputs[0]
    return chain


def _port(graph: Graph, value: str, taken: set[str]) -> StreamPort:
    fmt = fixed_format(graph, value)
    t = graph.value(value).type
    return StreamPort(legalize(value, taken, prefix="v"), value, code_type(fmt), t.size, fmt.frac, t.shape)


def schedule_graph(graph: Graph, config: BuildConfig, top: str | None = None) -> Schedule:
    """The hardware plan of a quantized graph."""
    chain = _chain(graph)
    if not chain:
        raise ScheduleError(f"model '{graph.name}': no layer to put in hardware")
    taken: set[str] = set()
    top_name = legalize(top or graph.name or "model", taken, prefix="m")
    target = config.hardware.target_ii or max(graph.value(n.inputs[0]).type.size for n in chain)
    plans: list[DensePlan] = []
    for node in chain:
        w, b = dense_codes(graph, node)
        m, k = w.shape
        pe, simd = _reuse_for(node, k, m, config, target)
        r = dense_requant(graph, node)
        plans.append(
            plan_dense(
                legalize(node.name, taken, prefix="l"),
                node.onnx_name or node.name,
                w,
                b,
                code_type(fixed_format(graph, node.inputs[0])),
                code_type(fixed_format(graph, node.outputs[0])),
                Requant(r.shift, r.rounding, r.lo, r.hi),
                pe=pe,
                simd=simd,
            )
        )
    inp = _port(graph, graph.inputs[0], taken)
    out = _port(graph, graph.outputs[0], taken)
    sched = chain_schedule(top_name, graph.name, plans, inp, out)
    log.info("schedule: %d engines, latency %d cycles, II %d", len(plans), sched.latency, sched.ii)
    return sched
