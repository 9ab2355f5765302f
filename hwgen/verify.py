"""`hwgen verify`: golden model vs C simulation vs RTL simulation, every output bit.

Vectors are real samples (`--data`) or, without data, seeded random input codes over the whole
input range preceded by the extreme vectors (all min, all max, alternating, all zero).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.build import LoadedBuild
from hwgen.data import load_data
from hwgen.errors import VerificationError
from hwgen.hw.plan import IntType
from hwgen.hw.streams import from_stream_order, to_stream_order
from hwgen.report.summary import write_json
from hwgen.sim import exact

log = logging.getLogger(__name__)


@dataclass
class Vectors:
    codes: np.ndarray  #: input codes [N, input count]
    expected: np.ndarray  #: golden output codes [N, output count]
    description: str


def extreme_and_random_codes(elem: IntType, count: int, n: int, seed: int) -> np.ndarray:
    """Extreme vectors first (min, max, alternating, zero), then uniform random codes."""
    rng = np.random.default_rng(seed)
    alt = np.where(np.arange(count) % 2 == 0, elem.hi, elem.lo)
    fixed = [np.full(count, elem.lo), np.full(count, elem.hi), alt, np.zeros(count, dtype=np.int64)]
    rand = rng.integers(elem.lo, elem.hi + 1, size=(max(n - len(fixed), 0), count))
    return np.concatenate([np.array(fixed[:n], dtype=np.int64).reshape(-1, count), rand]).astype(np.int64)[:n]


def make_vectors(build: LoadedBuild, n: int, data: Path | None, seed: int) -> Vectors:
    g, s = build.graph, build.schedule
    if data is not None:
        x, _y = load_data(data, g)
        x = x[:n]
        codes = to_stream_order(exact.encode_input(g, x))
        desc = f"{data.name}[0:{len(x)}]"
    else:
        codes = extreme_and_random_codes(s.input.elem, s.input.count, n, seed)
        desc = f"extremes + random codes, seed {seed}"
    shape = g.value(g.inputs[0]).type.shape
    expected = to_stream_order(exact.run_codes(g, from_stream_order(codes, shape))[g.outputs[0]])
    return Vectors(codes, expected, desc)


def compare(kind: str, got: np.ndarray, vec: Vectors, out_bits: int, output_name: str) -> dict[str, Any]:
    """Count mismatching vectors and bits; the first mismatch is described for the error."""
    if got.shape != vec.expected.shape:
        raise VerificationError(
            f"{kind}: produced outputs of shape {list(got.shape)}, expected {list(vec.expected.shape)}"
        )
    mask = (1 << out_bits) - 1
    diff = (got.astype(np.int64) & mask) ^ (vec.expected.astype(np.int64) & mask)
    bad_elems = diff != 0
    bits = int(sum(bin(int(d)).count("1") for d in diff[bad_elems]))
    result: dict[str, Any] = {
        "vectors": len(got),
        "mismatches": int(bad_elems.any(axis=1).sum()),
        "mismatched_bits": bits,
    }
    if bad_elems.any():
        i, j = map(int, np.argwhere(bad_elems)[0])
        e, o = int(vec.expected[i, j]), int(got[i, j])
        result["first_mismatch"] = (
            f"{kind} vs sim.exact, output '{output_name}'[{i}, {j}]: expected {e:#x} ({e}), got {o:#x} ({o}); "
            f"vector {i} of {vec.description}"
        )
    return result


def run_verify(
    build: LoadedBuild,
    *,
    csim: bool,
    rtl: bool,
    n: int,
    data: Path | None,
    seed: int = 1234,
    backpressure: str = "random",
    progress: Any = lambda step: None,
) -> dict[str, Any]:
    """Run the requested simulations, update report.json, and return the verification section."""
    progress("golden model")
    vec = make_vectors(build, n, data, seed)
    s = build.schedule
    section: dict[str, Any] = dict(build.report.get("verification") or {})
    work = build.out_dir / "verify"
    if csim:
        from hwgen.hw.csim import run_csim

        progress("C simulation (g++)")
        t = time.perf_counter()
        res = run_csim(build.out_dir / "hls", vec.codes, work_dir=work / "csim")
        section["csim"] = compare("csim", res.outputs, vec, s.output.elem.bits, s.output.source)
        section["csim"]["seconds"] = round(time.perf_counter() - t, 3)
        section["csim"]["vectors_source"] = vec.description
    if rtl:
        from hwgen.hw.rtl_sim import run_rtl

        progress("RTL simulation (Verilator + cocotb)")
        t = time.perf_counter()
        res = run_rtl(build.out_dir / "rtl", s, vec.codes, work_dir=work / "rtl", backpressure=backpressure, seed=seed)
        section["rtl"] = compare("rtl", res.outputs, vec, s.output.elem.bits, s.output.source)
        section["rtl"].update(
            {
                "latency_cycles": int(res.latency_cycles),
                "latency_estimate": s.latency,
                "latency_error": round(abs(res.latency_cycles - s.latency) / s.latency, 4),
                "cycles_total": int(res.cycles_total),
                "backpressure": backpressure,
                "seconds": round(time.perf_counter() - t, 3),
                "vectors_source": vec.description,
            }
        )
    report = dict(build.report)
    report["verification"] = section
    write_json(build.out_dir / "report.json", report)
    build.report = report
    return section
