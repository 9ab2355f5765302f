"""Scale-out: wall time of 2N search trials on one worker vs two workers sharing a PostgreSQL study.

Starts a throwaway PostgreSQL server (Debian `postgresql`, as in tests/search/conftest.py), runs
`python -m hwgen.search` on LeNet-300-100 (torch float64 accuracy on 300 images) with 2N trials
in one worker, then in two concurrent workers on a new study, and reports the ratio. The machine
is shared: the figure is what this run measured, with the load average recorded.

    .venv/bin/python benchmarks/search_scaleout.py [--n 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "search"))

from benchmarks.common import provenance, save  # noqa: E402

MODEL = ROOT / "models" / "lenet300" / "lenet300.onnx"
DATA = ROOT / "models" / "lenet300" / "mnist_test_1k.npz"


def _workers(url: str, study: str, trials: int, n: int, out: Path) -> float:
    cmd = [
        sys.executable,
        "-m",
        "hwgen.search",
        str(MODEL),
        "--data",
        str(DATA),
        "--trials",
        str(trials),
        "--storage",
        url,
        "--study",
        study,
        "--val",
        "300",
        "--engine",
        "torch",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t = time.perf_counter()
    ps = [
        subprocess.Popen([*cmd, "-o", str(out / f"{study}_{i}")], env=env, stdout=subprocess.DEVNULL) for i in range(n)
    ]
    if any(p.wait() != 0 for p in ps):
        raise SystemExit(f"a worker of {study} failed")
    return time.perf_counter() - t


def main() -> None:
    import pytest

    import conftest  # tests/search/conftest.py: the throwaway server

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="N: the study runs 2N trials")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="scaleout_"))
    gen = conftest.postgres_url.__wrapped__() if hasattr(conftest.postgres_url, "__wrapped__") else None
    if gen is None:
        raise SystemExit("cannot start PostgreSQL")
    url = next(gen)
    try:
        load = os.getloadavg()
        one = _workers(url, "one", 2 * args.n, 1, out)
        two = _workers(url, "two", 2 * args.n, 2, out)
    finally:
        with pytest.raises(StopIteration):
            next(gen)
        shutil.rmtree(out, ignore_errors=True)
    ratio = two / one
    doc = {
        "provenance": provenance(),
        "n": args.n,
        "trials": 2 * args.n,
        "one_worker_s": round(one, 2),
        "two_workers_s": round(two, 2),
        "ratio": round(ratio, 3),
        "loadavg_before": load,
        "cpus": os.cpu_count(),
    }
    md = (
        "# Search scale-out on PostgreSQL\n\n| workers | trials | wall time (s) |\n|---|---|---|\n"
        f"| 1 | {2 * args.n} | {one:.1f} |\n| 2 | {2 * args.n} | {two:.1f} |\n\n"
        f"Ratio two/one: {ratio:.2f} (target <= 0.60). {os.cpu_count()} CPUs, load average before "
        f"{load[0]:.2f}; every worker includes its own start-up (imports, model load, W8A8 reference).\n"
    )
    save("search_scaleout", doc, md)


if __name__ == "__main__":
    main()
