"""Save/load an IR graph as `graph.json` (structure, formats, attributes) + `constants.npz`.

A build directory keeps its quantized graph this way so `hwgen verify` can rerun the golden
model without the original ONNX file. Output is deterministic (sorted keys, fixed order).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.errors import ModelFileError
from hwgen.ir.graph import Graph, Node, TensorType, Value
from hwgen.numerics import parse_format

FORMAT_VERSION = 1


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return {"float": repr(v)}
    return v


def _from_json(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"float"}:
        return float(v["float"])
    if isinstance(v, list):
        return tuple(_from_json(x) for x in v)
    return v


def save_graph(graph: Graph, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": FORMAT_VERSION,
        "name": graph.name,
        "inputs": graph.inputs,
        "outputs": graph.outputs,
        "meta": {k: _jsonable(v) for k, v in graph.meta.items()},
        "values": [
            {"name": v.name, "shape": list(v.type.shape), "format": v.type.format.name, "const": v.is_const}
            for v in graph.values.values()
        ],
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": n.inputs,
                "outputs": n.outputs,
                "attrs": {k: _jsonable(a) for k, a in n.attrs.items()},
                "onnx_name": n.onnx_name,
                "onnx_op": n.onnx_op,
            }
            for n in graph.nodes
        ],
    }
    (directory / "graph.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    consts = {f"c{i}": v.const for i, v in enumerate(graph.values.values()) if v.const is not None}
    buf = io.BytesIO()
    np.savez(buf, **consts)  # not compressed: savez_compressed embeds zip timestamps only in metadata
    (directory / "constants.npz").write_bytes(buf.getvalue())


def load_graph(directory: Path) -> Graph:
    try:
        doc = json.loads((directory / "graph.json").read_text())
        if not isinstance(doc, dict):
            raise TypeError("graph.json does not hold an object")
        if doc.get("version") != FORMAT_VERSION:
            raise ModelFileError(f"{directory}: graph format version {doc.get('version')} is not {FORMAT_VERSION}")
        with np.load(directory / "constants.npz") as consts:
            g = Graph(doc["name"], inputs=doc["inputs"], outputs=doc["outputs"], meta=doc["meta"])
            for i, v in enumerate(doc["values"]):
                const = np.array(consts[f"c{i}"]) if v["const"] else None
                fmt = parse_format(v["format"])
                g.values[v["name"]] = Value(v["name"], TensorType(tuple(v["shape"]), fmt), const)
        for n in doc["nodes"]:
            attrs = {k: _from_json(a) for k, a in n["attrs"].items()}
            g.nodes.append(Node(n["name"], n["op"], n["inputs"], n["outputs"], attrs, n["onnx_name"], n["onnx_op"]))
    except ModelFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{directory}: not a saved hwgen graph ({type(e).__name__}: {e})") from e
    g.verify()
    return g
