"""The encode stage: every Dense/Conv weight as CSC (relative indices) + Huffman streams, and the bits it takes.

Per layer the weight codes (the quantized or shared weights on their fixed-point grid) become
symbols over a codebook (`hwgen.passes.huffman.code_symbols`; 0 = zero), the matrix [out, rest]
is CSC-encoded with `index_bits` relative indices and padding zeros, and both streams get a
canonical length-limited Huffman code. Biases are stored at their own format's width (32 bits
when float). Counted against float32 storage of the same weights and biases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hwgen.compress.recipe import EncodeStage
from hwgen.errors import ConfigError
from hwgen.ir.graph import Graph
from hwgen.numerics import FixedPoint
from hwgen.passes.huffman import CompressedLayer, build_code, code_symbols, compress_layer, entropy_bits
from hwgen.passes.share import META_KEY

MAC_OPS = ("Dense", "Conv")


@dataclass(frozen=True, eq=False)
class EncodedLayer:
    node: str
    onnx_name: str
    op: str
    shape: tuple[int, ...]
    codes_fmt: FixedPoint
    bias_bits: int  #: stored bits of the bias vector
    biases: int
    share_bits: int | None
    layer: CompressedLayer
    symbols: np.ndarray  #: [out, rest] symbol matrix


def weight_codes(g: Graph, node_name: str) -> tuple[np.ndarray, FixedPoint]:
    """The integer codes of a MAC node's weight and their format (quantized, or shared on the codebook grid)."""
    from hwgen.numerics.spec import parse_format

    node = next(n for n in g.nodes if n.name == node_name)
    v = g.values[node.inputs[1]]
    fmt = v.type.format
    if not isinstance(fmt, FixedPoint):
        meta = g.meta.get(META_KEY, {}).get(node_name)
        if meta is None:
            raise ConfigError(
                f"{node.describe()}: encode needs integer weight codes; put a quantize or share stage before it"
            )
        fmt = parse_format(meta["format"])
        assert isinstance(fmt, FixedPoint)
    return fmt.encode_exact(np.asarray(v.const, dtype=np.float64)), fmt


def encode_graph(g: Graph, st: EncodeStage) -> list[EncodedLayer]:
    out = []
    shared = g.meta.get(META_KEY, {})
    for n in g.nodes:
        if n.op not in MAC_OPS:
            continue
        codes, fmt = weight_codes(g, n.name)
        sym, codebook = code_symbols(codes.reshape(codes.shape[0], -1))
        layer = compress_layer(
            sym, codebook, fmt.bits, index_bits=st.index_bits, max_len=st.max_code_length, word_bits=st.word_bits
        )
        if len(n.inputs) > 2:
            bv = g.values[n.inputs[2]]
            bfmt = bv.type.format
            each = bfmt.bits if isinstance(bfmt, FixedPoint) else 32
            nb = int(np.asarray(bv.const).size)
        else:
            each, nb = 0, 0
        out.append(
            EncodedLayer(
                n.name,
                n.onnx_name or n.name,
                n.op,
                tuple(codes.shape),
                fmt,
                each * nb,
                nb,
                int(shared[n.name]["bits"]) if n.name in shared else None,
                layer,
                sym,
            )
        )
    return out


def layer_doc(e: EncodedLayer) -> dict[str, Any]:
    """compress.json's per-layer record (see hwgen.compress's docstring)."""
    s = e.layer.storage
    weight_bits = s.total_bits
    v_freq = np.bincount(_entry_values(e), minlength=e.layer.codebook.size)
    return {
        "layer": e.node,
        "onnx_name": e.onnx_name,
        "op": e.op,
        "shape": list(e.shape),
        "params": s.weights,
        "biases": e.biases,
        "nonzeros": s.nonzeros,
        "density": round(s.nonzeros / s.weights, 6) if s.weights else 0.0,
        "weight_bits": e.codes_fmt.bits,
        "weight_format": e.codes_fmt.name,
        "share_bits": e.share_bits,
        "codebook_size": int(e.layer.codebook.size),
        "entries": s.entries,
        "padding_entries": s.padding_entries,
        "storage_bits": {
            "codes": s.value_bits,
            "indices": s.index_bits,
            "codebook": s.codebook_bits,
            "code_tables": s.table_bits,
            "pointers": s.pointer_bits,
            "padding": s.fill_bits,
            "bias": e.bias_bits,
        },
        "weight_storage_bits": weight_bits,
        "total_bits": weight_bits + e.bias_bits,
        "value_entropy_bits_per_symbol": s.value_entropy_bits / s.entries if s.entries else 0.0,
        "value_huffman_bits_per_symbol": s.value_bits / s.entries if s.entries else 0.0,
        "value_gap": s.value_gap,
        "index_entropy_bits_per_symbol": s.index_entropy_bits / s.entries if s.entries else 0.0,
        "index_huffman_bits_per_symbol": s.index_bits / s.entries if s.entries else 0.0,
        "dense_entropy_bits_per_weight": entropy_bits(np.bincount(e.symbols.reshape(-1))),
        "bits_per_weight": weight_bits / s.weights if s.weights else 0.0,
        "compression_vs_float32": 32 * (s.weights + e.biases) / (weight_bits + e.bias_bits),
        "value_symbol_counts": v_freq.tolist(),
    }


def _entry_values(e: EncodedLayer) -> np.ndarray:
    return np.concatenate([c.values for c in e.layer.csc.pe_columns]).astype(np.int64)


def code_lengths(e: EncodedLayer, max_len: int) -> np.ndarray:
    """Huffman code length of each value symbol (0 for unused symbols)."""
    freq = np.bincount(_entry_values(e), minlength=e.layer.codebook.size)
    return np.asarray(build_code(freq, max_len).lengths, dtype=np.int64)


def totals(layers: list[dict[str, Any]]) -> dict[str, Any]:
    w = sum(r["params"] for r in layers)
    b = sum(r["biases"] for r in layers)
    wbits = sum(r["weight_storage_bits"] for r in layers)
    bbits = sum(r["storage_bits"]["bias"] for r in layers)
    return {
        "weights": w,
        "biases": b,
        "nonzeros": sum(r["nonzeros"] for r in layers),
        "density": sum(r["nonzeros"] for r in layers) / w if w else 0.0,
        "float32_bits": 32 * (w + b),
        "weight_storage_bits": wbits,
        "bias_bits": bbits,
        "total_bits": wbits + bbits,
        "compression_vs_float32": 32 * (w + b) / (wbits + bbits) if wbits + bbits else float("inf"),
        "weights_only_compression_vs_float32": 32 * w / wbits if wbits else float("inf"),
        "storage_bits": {
            k: sum(r["storage_bits"][k] for r in layers)
            for k in ("codes", "indices", "codebook", "code_tables", "pointers", "padding", "bias")
        },
    }


__all__ = ["EncodedLayer", "code_lengths", "encode_graph", "layer_doc", "totals", "weight_codes"]
