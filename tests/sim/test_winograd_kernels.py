"""sim.winograd_kernels: the transforms' identities, exactness of the integer datapath, float error bounds."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from hwgen.errors import UnsupportedOpError
from hwgen.ir.graph import Node
from hwgen.sim import winograd_kernels as wk


def direct_acc(x: np.ndarray, w: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """The direct correlation accumulator by plain loops over taps (an independent reference)."""
    pt, pl, pb, pr = pads
    xp = np.pad(np.asarray(x).astype(object), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    out = np.zeros((x.shape[0], w.shape[0], oh, ow), dtype=object)
    wo = np.asarray(w).astype(object)
    for u in range(3):
        for v in range(3):
            out += np.einsum("nchw,mc->nmhw", xp[:, :, u : u + oh, v : v + ow], wo[:, :, u, v])
    return out


@pytest.mark.parametrize("m", wk.TILES)
def test_one_d_minimal_filtering_is_exact(m: int) -> None:
    """A^T [(G g) * (B^T d)] = the m outputs of the 3-tap correlation, in exact rationals."""
    t = wk.transform(m)
    rng = np.random.default_rng(m)
    for _ in range(20):
        g = [Fraction(int(v), int(q)) for v, q in zip(rng.integers(-50, 50, 3), rng.integers(1, 9, 3), strict=True)]
        d = [
            Fraction(int(v), int(q))
            for v, q in zip(rng.integers(-50, 50, t.alpha), rng.integers(1, 9, t.alpha), strict=True)
        ]
        gg = [sum(t.g[i, k] * g[k] for k in range(3)) for i in range(t.alpha)]
        dd = [sum(int(t.bt[i, k]) * d[k] for k in range(t.alpha)) for i in range(t.alpha)]
        y = [sum(int(t.at[p, i]) * gg[i] * dd[i] for i in range(t.alpha)) for p in range(m)]
        assert y == [sum(d[p + k] * g[k] for k in range(3)) for p in range(m)]


@pytest.mark.parametrize("m", wk.TILES)
def test_integer_matrices_are_the_scaled_float_ones(m: int) -> None:
    t = wk.transform(m)
    d = np.array(t.row_scale, dtype=object)
    assert np.array_equal(t.gs.astype(object), t.g * d[:, None])
    assert np.array_equal(t.ats.astype(object) * d[None, :], t.at.astype(object) * t.scale)
    assert t.divisor == t.scale**2 and t.products_per_tile == (m + 2) ** 2


def test_f2_is_the_briefs_2g_and_f4_divides_by_576() -> None:
    t2, t4 = wk.transform(2), wk.transform(4)
    assert np.array_equal(t2.gs, [[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]])
    assert np.array_equal(t2.ats, t2.at) and t2.divisor == 4  # adds only, then a 2-bit shift
    assert t4.divisor == 576 and np.abs(t4.gs).sum(axis=1).max() == 7  # U grows by at most 7^2


GEOMETRIES = [
    ((0, 0, 0, 0), (6, 6)),
    ((1, 1, 1, 1), (7, 9)),  # odd outputs: partial edge tiles
    ((2, 0, 1, 2), (5, 8)),  # asymmetric padding, up to 2
    ((0, 2, 2, 0), (3, 3)),  # a single partial tile
]


@pytest.mark.parametrize("m", wk.TILES)
@pytest.mark.parametrize(("pads", "hw"), GEOMETRIES)
def test_integer_datapath_equals_direct_conv(m: int, pads: tuple[int, int, int, int], hw: tuple[int, int]) -> None:
    t = wk.transform(m)
    rng = np.random.default_rng(sum(hw) + m)
    x = rng.integers(-128, 128, size=(2, 3, *hw))
    w = rng.integers(-128, 128, size=(4, 3, 3, 3))
    want = direct_acc(x, w, pads)
    got = wk.winograd_accumulate(x, wk.filter_transform(w, t), pads[:2], want.shape[2:], t)
    assert got.shape == want.shape and np.array_equal(got.astype(object), want)


@pytest.mark.parametrize("m", wk.TILES)
def test_extreme_codes_are_exact(m: int) -> None:
    """All-min / all-max / alternating inputs and weights: the largest transform magnitudes."""
    t = wk.transform(m)
    alt = np.where(np.indices((1, 4, 9, 9)).sum(axis=0) % 2 == 0, 127, -128)
    inputs = [np.full((1, 4, 9, 9), -128), np.full((1, 4, 9, 9), 127), alt, np.full((1, 4, 9, 9), 255)]
    walt = np.where(np.indices((3, 4, 3, 3)).sum(axis=0) % 2 == 0, -128, 127)
    weights = [
        np.full((3, 4, 3, 3), -128),
        np.full((3, 4, 3, 3), 127),
        walt,
        np.eye(9, dtype=np.int64)[4].reshape(1, 1, 3, 3).repeat(3, 0).repeat(4, 1),
    ]
    for x in inputs:
        for w in weights:
            want = direct_acc(x, w, (1, 1, 1, 1))
            got = wk.winograd_accumulate(x, wk.filter_transform(w, t), (1, 1), (9, 9), t)
            assert np.array_equal(got.astype(object), want)


@pytest.mark.parametrize("m", wk.TILES)
def test_wide_codes_fall_back_to_exact_python_ints(m: int) -> None:
    """30-bit codes overflow int64 in the transforms: the kernel switches to Python ints, still exact."""
    t = wk.transform(m)
    rng = np.random.default_rng(5)
    x = rng.integers(-(1 << 29), 1 << 29, size=(1, 2, 5, 5))
    w = rng.integers(-(1 << 29), 1 << 29, size=(2, 2, 3, 3))
    got = wk.winograd_accumulate(x, wk.filter_transform(w, t), (1, 1), (5, 5), t)
    assert got.dtype == object and np.array_equal(got, direct_acc(x, w, (1, 1, 1, 1)))


def _node(tile: int, **attrs: object) -> Node:
    base = {
        "kernel": (3, 3),
        "strides": (1, 1),
        "dilations": (1, 1),
        "pads_begin": (1, 0),
        "pads_end": (1, 2),
        "group": 1,
        "tile": tile,
    }
    return Node("wc", "WinogradConv", ["x", "w", "b"], ["y"], {**base, **attrs})


def _float_direct(x: np.ndarray, w: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    return sum(
        np.einsum("nchw,mc->nmhw", xp[:, :, u : u + oh, v : v + ow], w[:, :, u, v]) for u in range(3) for v in range(3)
    )


def test_reference_kernel_f2_within_1e5_of_direct() -> None:
    rng = np.random.default_rng(0)
    x, w, b = rng.uniform(-1, 1, (3, 5, 8, 7)), rng.uniform(-1, 1, (6, 5, 3, 3)), rng.uniform(-1, 1, 6)
    y = wk.reference_kernel(_node(2), [x, w, b])
    want = _float_direct(x, w, (1, 0, 1, 2)) + b.reshape(1, -1, 1, 1)
    assert y.shape == want.shape and np.abs(y - want).max() < 1e-5


def test_reference_kernel_fuses_relu_and_clip() -> None:
    rng = np.random.default_rng(1)
    x, w = rng.uniform(-1, 1, (1, 2, 6, 6)), rng.uniform(-1, 1, (3, 2, 3, 3))
    plain = wk.reference_kernel(_node(4), [x, w])
    assert np.array_equal(wk.reference_kernel(_node(4, activation="relu"), [x, w]), np.maximum(plain, 0))
    clip = _node(4, activation="clip", clip_lo=-0.5, clip_hi=0.25)
    assert np.array_equal(wk.reference_kernel(clip, [x, w]), np.clip(plain, -0.5, 0.25))


def _float32_winograd(x: np.ndarray, w: np.ndarray, m: int) -> np.ndarray:
    """The float transforms evaluated in float32 (what a float datapath would see), no padding."""
    t = wk.transform(m)
    f = np.float32
    x, w = x.astype(f), w.astype(f)
    bt, g, at = t.bt.astype(f), t.g_float.astype(f), t.at.astype(f)
    u = np.einsum("ik,mckl,jl->mcij", g, w, g)
    tiles = wk.input_tiles(x, (0, 0), (x.shape[2] - 2, x.shape[3] - 2), t)
    v = np.einsum("ik,nctskl,jl->nctsij", bt, tiles, bt)
    y = np.einsum("pi,nmtsij,qj->nmtspq", at, np.einsum("mcij,nctsij->nmtsij", u, v), at)
    n, mo, th, tw = y.shape[:4]
    return y.transpose(0, 1, 2, 4, 3, 5).reshape(n, mo, th * m, tw * m)


def test_float32_error_within_documented_bound() -> None:
    """Documented bounds (passes/winograd.py), relative to sum |w||x|, in float32: F(2x2,3x3) 1e-6,
    F(4x4,3x3) 1e-5; F(4x4,3x3) is measurably worse (its points +-2 amplify rounding)."""
    rng = np.random.default_rng(2)
    x, w = rng.uniform(-1, 1, (4, 16, 10, 10)), rng.uniform(-1, 1, (8, 16, 3, 3))
    exact = _float_direct(x, w, (0, 0, 0, 0))
    scale = _float_direct(np.abs(x), np.abs(w), (0, 0, 0, 0))
    err2 = (np.abs(_float32_winograd(x, w, 2) - exact) / scale).max()
    err4 = (np.abs(_float32_winograd(x, w, 4) - exact) / scale).max()
    assert err2 <= 1e-6 and err4 <= 1e-5
    assert err4 > 4 * err2


def test_check_node_refuses_what_has_no_transform() -> None:
    with pytest.raises(UnsupportedOpError, match="3x3"):
        wk.check_node(_node(2, kernel=(5, 5)), (2, 2, 5, 5))
    with pytest.raises(UnsupportedOpError, match="stride 1"):
        wk.check_node(_node(2, strides=(2, 2)), (2, 2, 3, 3))
    with pytest.raises(UnsupportedOpError, match="tile 2 or 4"):
        wk.check_node(_node(3), (2, 2, 3, 3))
