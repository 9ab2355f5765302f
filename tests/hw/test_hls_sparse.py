"""The sparse engine's HLS C++ (templates/hls/sparse_dense.h.j2): C simulation bit-exact vs the golden model.

Designs: random sparse layers (sizes, PEs, index widths, densities, rounding), a 90 %+ sparse
worst case with padding zeros, a dense -> sparse -> dense chain, and LeNet-300-100 with the
smallest 90 % of each layer's weights zeroed, lowered by hwgen and every Dense swapped for the
sparse engine, against hwgen.sim.exact on MNIST test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import LENET_CALIB, quant_config
from onnx import numpy_helper
from test_csim import cache, chain, check, needs_gxx, plan

from hwgen.hw.csim import run_csim
from hwgen.hw.hls_emit import emit_hls
from hwgen.hw.plan import IntType, Schedule
from hwgen.hw.sparse import SparseDensePlan, replace_layers, sparse_from_dense
from hwgen.numerics import Rounding

__all__ = ["cache"]  # the session's binary cache, shared with test_csim
U8, S8 = IntType(8, False), IntType(8, True)


def sparse_matrix(rng: np.random.Generator, m: int, k: int, density: float, wb: int = 8) -> np.ndarray:
    w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=(m, k))
    w[w == 0] = 1
    return np.where(rng.random((m, k)) < density, w, 0)


def swap(s: Schedule, at: dict[int, tuple[int, int]]) -> Schedule:
    """Replace layer i of a dense chain by a sparse engine with (pes, index_bits)."""
    plans: dict[int, SparseDensePlan] = {}
    for i, (pes, bits) in at.items():
        p = s.layers[i]
        plans[i] = sparse_from_dense(p, pes=pes, index_bits=bits)
    return replace_layers(s, plans)


def vectors(t: IntType, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """All min, all max, alternating, zero, then random codes with half of them zero."""
    fixed = [np.full(k, t.lo), np.full(k, t.hi), np.resize([t.hi, t.lo], k), np.zeros(k, dtype=np.int64)]
    rand = rng.integers(t.lo, t.hi + 1, size=(n, k))
    rand = np.where(rng.random((n, k)) < 0.5, rand, 0)
    return np.vstack([np.asarray(fixed, dtype=np.int64), rand])


@needs_gxx
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_sparse_layers(seed: int, tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(100 + seed)
    k, m = int(rng.integers(1, 60)), int(rng.integers(1, 30))
    inp = IntType(int(rng.integers(2, 12)), bool(rng.integers(2)))
    out = IntType(int(rng.integers(2, 14)), bool(rng.integers(2)))
    w = sparse_matrix(rng, m, k, float(rng.choice([0.03, 0.1, 0.4])), int(rng.integers(2, 9)))
    d = plan(
        "fc",
        w,
        rng.integers(-3000, 3001, size=m),
        inp,
        out,
        list(Rounding)[seed % 3],
        int(rng.integers(-2, 12)),
        pe=1,
        simd=1,
        lo=0 if out.signed and seed % 2 else None,
    )
    s = swap(chain([d], top=f"sp{seed}"), {0: (int(rng.integers(1, m + 1)), int(rng.integers(1, 6)))})
    check(s, vectors(inp, k, 20, rng), tmp_path, cache, f"seed {seed}")


@needs_gxx
def test_over_90_percent_sparse_worst_case(tmp_path: Path, cache: Path) -> None:
    """s8 x s8, fan-in 512, 95 % zeros, 2-bit indices (padding), full max/min rows, saturation both ways."""
    rng = np.random.default_rng(7)
    k, m = 512, 64
    w = sparse_matrix(rng, m, k, 0.03)
    w[0], w[1] = 127, -128
    w[2] = 0
    w[:, 11] = 0
    d = plan("fc", w, rng.integers(-4000, 4001, size=m), S8, S8, Rounding.HALF_EVEN, 13, pe=1, simd=1)
    s = swap(chain([d], top="sp95"), {0: (6, 2)})
    assert s.layers[0].density < 0.1 and s.layers[0].csc.padding > 0
    check(s, vectors(S8, k, 10, rng), tmp_path, cache, "95 %")


@needs_gxx
def test_dense_sparse_dense_chain(tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(8)
    a = plan(
        "a",
        rng.integers(-9, 10, size=(24, 10)),
        rng.integers(-99, 99, size=24),
        U8,
        U8,
        Rounding.HALF_UP,
        4,
        pe=4,
        simd=5,
        lo=0,
    )
    b = plan("b", sparse_matrix(rng, 12, 24, 0.1), None, U8, U8, Rounding.FLOOR, 5, pe=1, simd=1, lo=0)
    c = plan("c", rng.integers(-9, 10, size=(3, 12)), None, U8, S8, Rounding.HALF_EVEN, 2, pe=3, simd=4)
    s = swap(chain([a, b, c], top="dsd"), {1: (5, 3)})
    check(s, vectors(U8, 10, 20, rng), tmp_path, cache, "chain")


def pruned_lenet_schedule(tmp_path: Path, pes: tuple[int, ...] = (4, 4, 2)):
    """LeNet-300-100 with the smallest 90 % |w| of each layer zeroed, quantized W8A8 and lowered,
    every Dense on the sparse engine. Returns (quantized graph, Schedule)."""
    from conftest import LENET_ONNX

    from hwgen.build import compile_model

    model = onnx.load(str(LENET_ONNX))
    gemm = {n.input[1] for n in model.graph.node if n.op_type in ("Gemm", "MatMul")}
    for init in model.graph.initializer:
        if init.name in gemm:
            w = numpy_helper.to_array(init).copy()
            w[np.abs(w) <= np.quantile(np.abs(w), 0.9)] = 0
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    path = tmp_path / "lenet300_pruned.onnx"
    onnx.save(model, str(path))
    _g, qg, sched, _r = compile_model(path, quant_config(), LENET_CALIB, lambda _s: None)
    return qg, swap(sched, {i: (pes[i], 4) for i in range(len(sched.layers))})


@needs_gxx
def test_pruned_lenet_csim_bit_exact(tmp_path: Path, cache: Path, mnist_test) -> None:
    from hwgen.sim.exact import encode_input, run_codes

    qg, s = pruned_lenet_schedule(tmp_path)
    assert all(isinstance(p, SparseDensePlan) and p.density <= 0.11 for p in s.layers)
    x = mnist_test[0][:40]
    codes = encode_input(qg, x).reshape(len(x), -1)
    want = run_codes(qg, codes)[qg.outputs[0]].reshape(len(x), -1)
    emit_hls(s, tmp_path / "hls")
    got = run_csim(tmp_path / "hls", codes, cache).outputs
    assert np.array_equal(got, want), f"{int((got != want).any(axis=1).sum())} of {len(x)} images differ"
