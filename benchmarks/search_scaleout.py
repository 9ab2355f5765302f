"""Scale-out: wall time of 2N search trials on one worker vs two workers sharing a PostgreSQL study.

Starts a throwaway PostgreSQL server (Debian `postgresql`, hwgen.search.local_postgres), runs
`python -m hwgen.search` on LeNet-300-100 (torch float64 accuracy on --val images, 500 as in
`hwgen search`) with 2N trials
in one worker, then in two concurrent workers on a new study, and reports the ratio. One and two
workers alternate `--repeat` times (each on its own study) and the medians are compared, so a burst
of load from other users of the machine hits both sides alike; the load average is recorded.

    .venv/bin/python benchmarks/search_scaleout.py [--n 60] [--repeat 3] [--val 500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import provenance, save  # noqa: E402
from hwgen.search import local_postgres  # noqa: E402

MODEL = ROOT / "models" / "lenet300" / "lenet300.onnx"
DATA = ROOT / "models" / "lenet300" / "mnist_test_1k.npz"


def _workers(url: str, study: str, trials: int, n: int, out: Path, val: int) -> float:
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
        str(val),
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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="N: each study runs 2N trials")
    ap.add_argument("--repeat", type=int, default=3, help="alternating one-worker / two-worker runs")
    ap.add_argument("--val", type=int, default=500, help="validation images per trial (hwgen search's default)")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="scaleout_"))
    ones: list[float] = []
    twos: list[float] = []
    load = os.getloadavg()
    try:
        with local_postgres.temporary_server() as url:
            for r in range(args.repeat):
                ones.append(_workers(url, f"one{r}", 2 * args.n, 1, out, args.val))
                twos.append(_workers(url, f"two{r}", 2 * args.n, 2, out, args.val))
                print(f"run {r}: one worker {ones[-1]:.1f} s, two workers {twos[-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    one, two = statistics.median(ones), statistics.median(twos)
    ratio = two / one
    doc = {
        "provenance": provenance(),
        "n": args.n,
        "trials": 2 * args.n,
        "val_images": args.val,
        "repeat": args.repeat,
        "one_worker_s": [round(t, 2) for t in ones],
        "two_workers_s": [round(t, 2) for t in twos],
        "ratio_of_medians": round(ratio, 3),
        "loadavg_before": load,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    md = (
        "# Search scale-out on PostgreSQL\n\n"
        "| workers | trials | wall time per run (s) | median (s) |\n|---|---|---|---|\n"
        f"| 1 | {2 * args.n} | {', '.join(f'{t:.1f}' for t in ones)} | {one:.1f} |\n"
        f"| 2 | {2 * args.n} | {', '.join(f'{t:.1f}' for t in twos)} | {two:.1f} |\n\n"
        f"Ratio of medians two/one: {ratio:.2f} (target <= 0.60). {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} before, {doc['loadavg_after'][0]:.2f} after; every worker includes its own start-up "
        "(imports, model load, W8A8 reference).\n"
    )
    save("search_scaleout", doc, md)


if __name__ == "__main__":
    main()
