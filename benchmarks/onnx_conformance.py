"""Pass rate of the official ONNX node tests per op, through hwgen's importer and sim.reference.

.venv/bin/python benchmarks/onnx_conformance.py
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import provenance, save
from hwgen.frontend.conformance import run_all
from hwgen.frontend.onnx_import import CONVERTERS


def main() -> None:
    results = run_all()
    per_op: dict[str, dict[str, int]] = defaultdict(lambda: {"pass": 0, "fail": 0, "unsupported": 0})
    for r in results:
        for op in r.ops:
            if op in CONVERTERS:
                per_op[op][r.status] += 1
    lines = ["| op | pass | fail | outside supported set | pass rate inside set |", "|---|---|---|---|---|"]
    for op in sorted(per_op):
        c = per_op[op]
        inside = c["pass"] + c["fail"]
        rate = f"{100 * c['pass'] / inside:.0f}%" if inside else "-"
        lines.append(f"| {op} | {c['pass']} | {c['fail']} | {c['unsupported']} | {rate} |")
    total = {s: sum(1 for r in results if r.status == s) for s in ("pass", "fail", "unsupported")}
    lines.append(
        f"\nAll node cases: {total['pass']} pass, {total['fail']} fail, {total['unsupported']} outside the set."
    )
    unsupported = [
        {"case": r.name, "ops": r.ops, "why": r.detail}
        for r in results
        if r.status == "unsupported" and set(r.ops) <= set(CONVERTERS)
    ]
    save(
        "onnx_conformance",
        {"provenance": provenance(), "per_op": per_op, "totals": total, "outside_set_with_supported_ops": unsupported},
        "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
