"""Shared helpers of the benchmark scripts: provenance and result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def git_hash() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(seed: int | None = None) -> dict[str, Any]:
    import numpy

    import hwgen

    gxx = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "git": git_hash(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "hwgen": hwgen.__version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "gxx": gxx[0] if gxx else None,
        "machine": platform.machine(),
        "nproc": os.cpu_count(),
        "seed": seed,
    }


def save(name: str, doc: dict[str, Any], markdown: str) -> None:
    """Write results/NAME.json and results/NAME.md and print the markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
