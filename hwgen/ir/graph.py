"""hwgen's IR: a small typed dataflow graph.

Shapes of activations are per sample: the batch dimension of the ONNX model is stripped at
import, and executors add it back as a leading axis. Constants keep their own shape.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hwgen.errors import GraphError
from hwgen.numerics import Float32, NumberFormat


@dataclass(frozen=True)
class TensorType:
    """Per-sample shape and number format of a value."""

    shape: tuple[int, ...]
    format: NumberFormat = field(default_factory=Float32)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def with_format(self, fmt: NumberFormat) -> TensorType:
        return replace(self, format=fmt)


@dataclass
class Value:
    """A tensor in the graph: an activation (const is None) or a constant (weights, bias)."""

    name: str
    type: TensorType
    const: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not None


@dataclass
class Node:
    """One operation. `onnx_name`/`onnx_op` remember where it came from, for messages and comments."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    onnx_name: str = ""
    onnx_op: str = ""

    def describe(self) -> str:
        """`node 'fc1' (ONNX '/fc1/Gemm', Gemm)`: how messages name a node."""
        origin = f" (ONNX '{self.onnx_name}', {self.onnx_op or self.op})" if self.onnx_name else f" ({self.op})"
        return f"node '{self.name}'{origin}"


@dataclass
class Graph:
    """Nodes in topological order plus the values they connect."""

    name: str
    nodes: list[Node] = field(default_factory=list)
    values: dict[str, Value] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # -- queries -----------------------------------------------------------------------------
    def value(self, name: str) -> Value:
        try:
            return self.values[name]
        except KeyError:
            raise GraphError(f"graph '{self.name}': no value named {name!r}") from None

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise GraphError(f"graph '{self.name}': no node named {name!r}")

    def producer(self, value: str) -> Node | None:
        for n in self.nodes:
            if value in n.outputs:
                return n
        return None

    def consumers(self, value: str) -> list[Node]:
        return [n for n in self.nodes if value in n.inputs]

    def const(self, name: str) -> np.ndarray:
        v = self.value(name)
        if v.const is None:
            raise GraphError(f"value {name!r} is not a constant")
        return v.const

    def activations(self, node: Node) -> list[str]:
        """Inputs of `node` that are not constants."""
        return [i for i in node.inputs if i and not self.values[i].is_const]

    def mac_nodes(self) -> Iterator[Node]:
        return (n for n in self.nodes if n.op in ("Dense",))

    # -- edits -------------------------------------------------------------------------------
    def add_value(self, value: Value) -> Value:
        if value.name in self.values:
            raise GraphError(f"graph '{self.name}': value {value.name!r} defined twice")
        self.values[value.name] = value
        return value

    def unique_name(self, base: str) -> str:
        taken = set(self.values) | {n.name for n in self.nodes}
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    def replace_uses(self, old: str, new: str) -> None:
        """Point every consumer (and graph output) of `old` at `new`."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove_unused(self) -> None:
        """Drop values no node or graph port uses."""
        used = set(self.inputs) | set(self.outputs)
        for n in self.nodes:
            used.update(n.inputs)
            used.update(n.outputs)
        self.values = {k: v for k, v in self.values.items() if k in used}

    def copy(self) -> Graph:
        """Deep copy (constants included): passes are functional by default."""
        return copy.deepcopy(self)

    # -- integrity ---------------------------------------------------------------------------
    def verify(self) -> None:
        """Check that the graph is well formed: every input defined before use, no duplicates."""
        defined = set(self.inputs) | {k for k, v in self.values.items() if v.is_const}
        names: set[str] = set()
        for n in self.nodes:
            if n.name in names:
                raise GraphError(f"graph '{self.name}': node name {n.name!r} used twice")
            names.add(n.name)
            for i in n.inputs:
                if i and i not in defined:
                    raise GraphError(f"{n.describe()}: input {i!r} is used before it is defined")
            for o in n.outputs:
                if o in defined:
                    raise GraphError(f"{n.describe()}: output {o!r} is defined twice")
                if o not in self.values:
                    raise GraphError(f"{n.describe()}: output {o!r} has no type")
                defined.add(o)
        for o in self.outputs:
            if o not in defined:
                raise GraphError(f"graph '{self.name}': output {o!r} is never computed")
