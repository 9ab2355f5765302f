"""Per-layer sensitivity: the accuracy drop when only one layer's weights (or outputs) are lowered.

Layers that tolerate few bits alone usually tolerate them together, so `seed_choices` turns the
table into starting points for the search (enqueued as its first trials).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwgen.search.evaluate import Evaluator
from hwgen.search.space import FixedPointSpace


def sensitivity(
    ev: Evaluator, space: FixedPointSpace, bits: tuple[int, ...] = (2, 3, 4, 6), ref_bits: int = 8
) -> dict[str, Any]:
    """{"reference": acc at W{ref}A{ref}, "layers": {name: {"weight_bits": {b: drop}, "act_bits": {b: drop}}}}."""
    ref_choice = space.uniform(ref_bits, ref_bits)
    ref = ev.evaluate(space.to_config(ref_choice, ev.base))["accuracy"]
    table: dict[str, Any] = {}
    for name in space.layers:
        row: dict[str, dict[int, float]] = {"weight_bits": {}, "act_bits": {}}
        for key in row:
            for b in bits:
                choice = {n: dict(c) for n, c in ref_choice.items()}
                choice[name][key] = b
                acc = ev.evaluate(space.to_config(choice, ev.base))["accuracy"]
                row[key][b] = round(ref - acc, 6)
        table[name] = row
    return {"reference_bits": ref_bits, "reference": ref, "bits": list(bits), "layers": table}


def seed_choices(sens: dict[str, Any], max_loss: float, lo: int = 2, hi: int = 8) -> list[dict[str, dict[str, int]]]:
    """Starting points: per layer and knob, the fewest bits whose lone drop fits a share of max_loss,
    then the same one and two bits wider (a margin for the drops adding up)."""
    layers = sens["layers"]
    share = max_loss / max(1, 2 * len(layers))
    base: dict[str, dict[str, int]] = {}
    for name, row in layers.items():
        base[name] = {}
        for key, drops in row.items():
            ok = [int(b) for b, d in drops.items() if d <= share]
            base[name][key] = min(ok) if ok else hi
    return [{n: {k: min(hi, max(lo, v + extra)) for k, v in c.items()} for n, c in base.items()} for extra in (0, 1, 2)]


def write_sensitivity(sens: dict[str, Any], out: Path) -> None:
    """OUT/sensitivity.json and a markdown table OUT/sensitivity.md (accuracy drop in points)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "sensitivity.json").write_text(json.dumps(sens, indent=2, sort_keys=True) + "\n")
    bits = sens["bits"]
    head = "| layer | " + " | ".join(f"W{b}" for b in bits) + " | " + " | ".join(f"A{b}" for b in bits) + " |"
    lines = [
        f"Accuracy drop (points) when only that layer is lowered; the rest stays at "
        f"W{sens['reference_bits']}A{sens['reference_bits']} ({100 * sens['reference']:.2f}%).",
        "",
        head,
        "|---" * (1 + 2 * len(bits)) + "|",
    ]
    for name, row in sens["layers"].items():
        w = [f"{100 * row['weight_bits'][b]:.2f}" for b in row["weight_bits"]]
        a = [f"{100 * row['act_bits'][b]:.2f}" for b in row["act_bits"]]
        lines.append(f"| {name} | " + " | ".join(w + a) + " |")
    (out / "sensitivity.md").write_text("\n".join(lines) + "\n")


__all__ = ["seed_choices", "sensitivity", "write_sensitivity"]
