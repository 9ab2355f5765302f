"""Pass infrastructure: results with per-node records, and a pipeline that checks the graph."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hwgen.errors import GraphError
from hwgen.ir.graph import Graph

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeRecord:
    """What a pass did to one node; the report reads these."""

    node: str
    onnx_name: str
    pass_name: str
    values: dict[str, Any]


@dataclass
class PassResult:
    """The graph a pass produced, whether it changed anything, and its records."""

    graph: Graph
    changed: bool
    records: list[NodeRecord] = field(default_factory=list)


Pass = Callable[[Graph], PassResult]


def run_pipeline(graph: Graph, passes: Sequence[Pass]) -> tuple[Graph, list[NodeRecord]]:
    """Run passes in order, verifying the graph before and after each one.

    A pass that leaves the graph broken is named with the passes that ran before it.
    """
    records: list[NodeRecord] = []
    done: list[str] = []
    graph.verify()
    for p in passes:
        name = getattr(p, "__name__", repr(p))
        result = p(graph)
        try:
            result.graph.verify()
        except GraphError as e:
            raise GraphError(f"pass {name} (after {', '.join(done) or 'none'}) broke the graph: {e}") from e
        log.info("pass %s: %s", name, "changed" if result.changed else "no change")
        graph = result.graph
        records.extend(result.records)
        done.append(name)
    return graph, records
