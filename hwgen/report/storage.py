"""What the device stores for each MAC layer, by part: report.json's `compression` section.

Why per engine: a pruned layer on the sparse engine stores its non-zero weights (plain or as a
Huffman stream with its decoder table), their relative indices, padding zeros and column pointers,
not a dense weight matrix; the compression figure against float32 must count those bits.

Parts (bits): dense and convolution engines `dense_weights` (the weight ROM: every weight code,
zeros included; Winograd: the transformed filters U); every engine `biases`; the sparse engine the
parts of hwgen.hw.sparse.storage_parts (`values` or `huffman_codes` + `stream_fill` +
`decoder_tables`, `indices`, `padding`, `column_pointers`).
"""

from __future__ import annotations

from typing import Any

from hwgen.hw.plan import WinogradConvPlan
from hwgen.hw.sparse import SparseDensePlan, storage_parts


def layer_parts(plan: Any) -> dict[str, int]:
    """Bits the device stores for one MAC layer's weights and biases, by part (every part a ROM)."""
    if isinstance(plan, SparseDensePlan):
        parts = storage_parts(plan)
    elif isinstance(plan, WinogradConvPlan):
        parts = {"dense_weights": int(plan.u_weights.size) * plan.u.bits}
    else:
        parts = {"dense_weights": int(plan.weights.size) * plan.w.bits}
    parts["biases"] = int(plan.biases.size) * plan.bias.bits
    return parts


def compression_section(plans: list[Any], float_params: int) -> dict[str, Any]:
    """report.json `compression`: float32 bytes against the stored bytes (and bits by part, in total and per layer).

    `compressed_bytes` / `ratio` keep their meaning (stored weights and biases against float32) and
    now count what each engine stores. float_params: parameters of the float model (every constant).
    """
    layers = []
    totals: dict[str, int] = {}
    for p in plans:
        parts = layer_parts(p)
        for k, v in parts.items():
            totals[k] = totals.get(k, 0) + v
        layers.append(
            {
                "name": p.name,
                "onnx_name": p.source,
                "engine": p.engine,
                "weight_coding": getattr(p, "weight_coding", None),
                "parts_bits": parts,
                "total_bits": sum(parts.values()),
            }
        )
    stored_bits = sum(totals.values())
    fp32_bytes = 4 * float_params
    compressed_bytes = (stored_bits + 7) // 8
    return {
        "fp32_bytes": fp32_bytes,
        "compressed_bytes": compressed_bytes,
        "ratio": round(fp32_bytes / compressed_bytes, 3) if compressed_bytes else None,
        "fp32_bits": 8 * fp32_bytes,
        "stored_bits": stored_bits,
        "parts_bits": totals,
        "layers": layers,
    }


__all__ = ["compression_section", "layer_parts"]
