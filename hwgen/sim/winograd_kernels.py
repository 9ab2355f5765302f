"""Winograd F(m x m, 3 x 3) convolution: the transform matrices and the kernels of both executors.

Lavin & Gray's minimal filtering, 2-D by nesting: for a (m+2) x (m+2) input tile d and a 3 x 3
filter g, the m x m output tile of the correlation is Y = A^T [(G g G^T) * (B^T d B)] A.

Float semantics (`sim.reference`) use those matrices as they are. The integer datapath (`sim.exact`
and the hardware) uses integer versions so that nothing is ever rounded:
- G has fractions (1/2 for F(2,3); 1/4, 1/6, 1/12, 1/24 for F(4,3)); each row i is scaled by an
  integer d_i so that Gs = diag(d) G is integer: the filter transform U = Gs g Gs^T is exact for
  integer codes g and is done offline (the hardware stores U);
- B^T is already integer, so V = B^T d B is exact for integer input codes d;
- A^T's columns are rescaled to undo the row scales: As^T = s A^T diag(d)^-1 (integer for the s
  below). Then As^T (U * V) As = s^2 Y exactly, because the diagonal scalings commute with the
  element-wise product: (diag(d)^-1 U diag(d)^-1) * V = diag(d)^-1 (U * V) diag(d)^-1.
  Summed over input channels, sum_c As^T (U_c * V_c) As = s^2 * (the direct convolution's
  accumulator), an integer multiple of s^2: dividing by s^2 is exact.
  F(2x2,3x3): d = (2, 2, 2, 2), so Gs = 2G and As^T = A^T (s = 2): the output transform is adds
  only and the division by 4 a shift.
  F(4x4,3x3): d = (4, 6, 6, 24, 24, 1), s = 24, division by 576 = 2^6 * 9: a shift by 6 and an
  exact division by 9 (in hardware a multiplication by 9's inverse modulo 2^width, as the
  quotient is known to be exact). The factor 3 cannot be avoided: any 5 finite points containing
  +-1 and +-a (a = 2 or 1/2) have a difference 1 + a with a factor 3 in its Lagrange denominator.
So the Winograd accumulator is bit-identical to the direct one; bias and requantization follow
unchanged (`integer_kernels.requantize`).

Tiling: the padded input is cut into tiles of m+2 x m+2 at stride m; the bottom/right tiles run
past the output by up to m-1 rows/columns, read zeros there, and those outputs are dropped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from hwgen.errors import UnsupportedOpError
from hwgen.ir.graph import Graph, Node
from hwgen.ir.ops import window_of

#: output tile sizes m of F(m x m, 3 x 3) with transforms here
TILES = (2, 4)
#: int64 is exact while every intermediate stays below 2**62 in magnitude
_INT64_SAFE_BITS = 62


@dataclass(frozen=True, eq=False)
class WinogradTransform:
    """F(m x m, r x r) matrices: Lavin's (float semantics) and their integer-scaled versions."""

    m: int  #: output tile side
    r: int  #: filter side (3)
    bt: np.ndarray  #: B^T [alpha, alpha], integer entries (int64)
    g: np.ndarray  #: G [alpha, r] as exact fractions (object array of Fraction)
    at: np.ndarray  #: A^T [m, alpha], integer entries (int64)
    row_scale: tuple[int, ...]  #: d_i: Gs = diag(d) G is integer
    scale: int  #: s: As^T = s A^T diag(d)^-1 is integer; the 2-D result is s^2 times the convolution

    @property
    def alpha(self) -> int:
        """Input tile side m + r - 1 (and the Winograd-domain side)."""
        return self.m + self.r - 1

    @property
    def name(self) -> str:
        return f"F({self.m}x{self.m},{self.r}x{self.r})"

    @property
    def divisor(self) -> int:
        """s^2: what the integer output transform's result is divided by (exactly)."""
        return self.scale * self.scale

    @functools.cached_property
    def g_float(self) -> np.ndarray:
        return np.array([[float(v) for v in row] for row in self.g], dtype=np.float64)

    @functools.cached_property
    def gs(self) -> np.ndarray:
        """Integer filter transform matrix Gs = diag(d) G [alpha, r]."""
        out = [[v * d for v in row] for row, d in zip(self.g, self.row_scale, strict=True)]
        return _int_matrix(out, "Gs")

    @functools.cached_property
    def ats(self) -> np.ndarray:
        """Integer output transform matrix As^T = s A^T diag(d)^-1 [m, alpha]."""
        out = [[Fraction(int(a) * self.scale, d) for a, d in zip(row, self.row_scale, strict=True)] for row in self.at]
        return _int_matrix(out, "As^T")

    @property
    def products_per_tile(self) -> int:
        """Multiplications per output tile and (input, output) channel pair: alpha^2 (direct: (m r)^2)."""
        return self.alpha * self.alpha


def _int_matrix(rows: list[list[Fraction]], what: str) -> np.ndarray:
    if any(Fraction(v).denominator != 1 for row in rows for v in row):
        raise ValueError(f"{what} is not integer: {rows}")  # internal: the scales below are chosen so it is
    return np.array([[int(v) for v in row] for row in rows], dtype=np.int64)


def _fr(rows: list[list[int | str]]) -> np.ndarray:
    out = np.empty((len(rows), len(rows[0])), dtype=object)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            out[i, j] = Fraction(v)
    return out


@functools.cache
def transform(m: int) -> WinogradTransform:
    """The transform of F(m x m, 3 x 3), m in TILES (Lavin & Gray, points 0, +-1 [, +-2], inf)."""
    if m == 2:
        return WinogradTransform(
            m=2,
            r=3,
            bt=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.int64),
            g=_fr([[1, 0, 0], ["1/2", "1/2", "1/2"], ["1/2", "-1/2", "1/2"], [0, 0, 1]]),
            at=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.int64),
            row_scale=(2, 2, 2, 2),
            scale=2,
        )
    if m == 4:
        return WinogradTransform(
            m=4,
            r=3,
            bt=np.array(
                [
                    [4, 0, -5, 0, 1, 0],
                    [0, -4, -4, 1, 1, 0],
                    [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0],
                    [0, 2, -1, -2, 1, 0],
                    [0, 4, 0, -5, 0, 1],
                ],
                dtype=np.int64,
            ),
            g=_fr(
                [
                    ["1/4", 0, 0],
                    ["-1/6", "-1/6", "-1/6"],
                    ["-1/6", "1/6", "-1/6"],
                    ["1/24", "1/12", "1/6"],
                    ["1/24", "-1/12", "1/6"],
                    [0, 0, 1],
                ]
            ),
            at=np.array(
                [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], dtype=np.int64
            ),
            row_scale=(4, 6, 6, 24, 24, 1),
            scale=24,
        )
    raise UnsupportedOpError(f"Winograd F({m}x{m},3x3) has no transform here; use tile 2 or 4")


# -- tiling ----------------------------------------------------------------------------------
def tile_grid(out_h: int, out_w: int, m: int) -> tuple[int, int]:
    """Tiles per column and per row: ceil(out / m) each."""
    return -(-out_h // m), -(-out_w // m)


def input_tiles(
    x: np.ndarray, pads_begin: tuple[int, int], out_hw: tuple[int, int], t: WinogradTransform
) -> np.ndarray:
    """[N, C, TH, TW, alpha, alpha] input tiles of a batched [N, C, H, W] array (zero padding)."""
    n, c, h, w = x.shape
    th, tw = tile_grid(*out_hw, t.m)
    need_h, need_w = (th - 1) * t.m + t.alpha, (tw - 1) * t.m + t.alpha
    (pt, pl), a = pads_begin, t.alpha
    xp = np.zeros((n, c, need_h, need_w), dtype=x.dtype)
    rows, cols = min(h, need_h - pt), min(w, need_w - pl)
    xp[:, :, pt : pt + rows, pl : pl + cols] = x[:, :, :rows, :cols]
    win = np.lib.stride_tricks.sliding_window_view(xp, (a, a), axis=(2, 3))
    return win[:, :, :: t.m, :: t.m][:, :, :th, :tw]


def _bits(a: np.ndarray) -> int:
    if a.size == 0:
        return 1
    return max(1, int(np.max(np.abs(a.astype(object) if a.dtype == object else a))).bit_length())


def _l1_bits(mat: np.ndarray) -> int:
    """Bits by which a transform can grow magnitudes: log2 of its largest row L1 norm."""
    return int(np.abs(mat).sum(axis=1).max()).bit_length()


# -- the integer datapath --------------------------------------------------------------------
def filter_transform(w_codes: np.ndarray, t: WinogradTransform) -> np.ndarray:
    """U = Gs g Gs^T per (out, in) channel pair: [M, C, 3, 3] integer codes -> [M, C, alpha, alpha] (exact)."""
    w = np.asarray(w_codes)
    wide = _bits(w) + 2 * _l1_bits(t.gs) > _INT64_SAFE_BITS or w.dtype == object
    gs = t.gs.astype(object) if wide else t.gs
    w = w.astype(object) if wide else w.astype(np.int64)
    return np.einsum("ik,mckl,jl->mcij", gs, w, gs)


def input_transform(tiles: np.ndarray, t: WinogradTransform) -> np.ndarray:
    """V = B^T d B per tile: [..., alpha, alpha] integer codes -> same shape (exact)."""
    wide = _bits(tiles) + 2 * _l1_bits(t.bt) > _INT64_SAFE_BITS or tiles.dtype == object
    bt = t.bt.astype(object) if wide else t.bt
    d = tiles.astype(object) if wide else tiles.astype(np.int64)
    return np.einsum("ik,...kl,jl->...ij", bt, d, bt)


def winograd_accumulate(
    x_codes: np.ndarray, u: np.ndarray, pads_begin: tuple[int, int], out_hw: tuple[int, int], t: WinogradTransform
) -> np.ndarray:
    """The convolution accumulator (no bias) via Winograd, exact: [N, C, H, W] x U -> [N, M, OH, OW].

    M = sum_c U_c * V_c in the Winograd domain, then Y = As^T M As / s^2, the division exact.
    """
    v = input_transform(input_tiles(np.asarray(x_codes), pads_begin, out_hw, t), t)  # [N, C, TH, TW, a, a]
    c = v.shape[1]
    need = _bits(v) + _bits(u) + max(1, c.bit_length()) + 2 * _l1_bits(t.ats)
    wide = need > _INT64_SAFE_BITS or v.dtype == object or u.dtype == object
    if wide:
        v, u = v.astype(object), np.asarray(u).astype(object)
    prod = np.einsum("mcij,nctsij->nmtsij", u, v)  # [N, M, TH, TW, a, a]
    ats = t.ats.astype(object) if wide else t.ats
    y = np.einsum("pi,nmtsij,qj->nmtspq", ats, prod, ats)  # s^2 * accumulator, per tile
    q, rem = y // t.divisor, y % t.divisor  # np.divmod has no object loop
    if np.any(rem != 0):
        raise ArithmeticError(f"{t.name}: the output transform is not a multiple of {t.divisor}")  # internal
    n, mo, th, tw = q.shape[:4]
    full = q.transpose(0, 1, 2, 4, 3, 5).reshape(n, mo, th * t.m, tw * t.m)
    return full[:, :, : out_hw[0], : out_hw[1]]


# -- the IR op's checks and kernels ----------------------------------------------------------
def check_node(node: Node, w_shape: tuple[int, ...]) -> WinogradTransform:
    """The transform of a WinogradConv node; refuses geometries it cannot compute."""
    win = window_of(node)
    if len(w_shape) != 4 or tuple(w_shape[2:]) != (3, 3) or win.kernel != (3, 3):
        raise UnsupportedOpError(f"{node.describe()}: WinogradConv needs a 2-D 3x3 kernel, got weights {w_shape}")
    if win.strides != (1, 1) or win.dilations != (1, 1) or node.attrs.get("group", 1) != 1:
        raise UnsupportedOpError(f"{node.describe()}: WinogradConv needs stride 1, dilation 1 and group 1")
    return transform(int(node.attrs["tile"]))


def _activation(node: Node, y: np.ndarray) -> np.ndarray:
    act = node.attrs.get("activation", "none")
    if act == "relu":
        return np.maximum(y, 0.0)
    if act == "clip":
        return np.clip(y, node.attrs["clip_lo"], node.attrs["clip_hi"])
    return y


def reference_kernel(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    """Float semantics: Y = A^T [(G g G^T) * (B^T d B)] A with Lavin's matrices, in float64."""
    x, w = xs[0], xs[1]
    t = check_node(node, w.shape)
    win = window_of(node)
    out_hw = win.out_size(x.shape[2:])
    bt, g, at = t.bt.astype(np.float64), t.g_float, t.at.astype(np.float64)
    u = np.einsum("ik,mckl,jl->mcij", g, w, g)
    v = np.einsum("ik,nctskl,jl->nctsij", bt, input_tiles(x, win.pads_begin, out_hw, t), bt)
    y = np.einsum("pi,nmtsij,qj->nmtspq", at, np.einsum("mcij,nctsij->nmtsij", u, v), at)
    n, mo, th, tw = y.shape[:4]
    y = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, mo, th * t.m, tw * t.m)[:, :, : out_hw[0], : out_hw[1]]
    if len(xs) > 2:
        y = y + xs[2].reshape(1, -1, 1, 1)
    return _activation(node, y)


def exact_kernel(graph: Graph, node: Node, x: np.ndarray) -> np.ndarray:
    """Golden model: the Winograd accumulator (bit-identical to the direct one) + bias, requantized."""
    from hwgen.sim.exact import dense_codes, dense_requant  # exact imports this module
    from hwgen.sim.integer_kernels import requantize

    w, b = dense_codes(graph, node)
    t = check_node(node, w.shape)
    r = dense_requant(graph, node)
    win = window_of(node)
    out_hw = win.out_size(x.shape[2:])
    acc = winograd_accumulate(x, filter_transform(w, t), win.pads_begin, out_hw, t)
    acc = acc + (b.astype(object) if acc.dtype == object else b).reshape(1, -1, 1, 1)
    return requantize(acc, r.shift, r.rounding, r.lo, r.hi)


__all__ = [
    "TILES",
    "WinogradTransform",
    "check_node",
    "exact_kernel",
    "filter_transform",
    "input_tiles",
    "input_transform",
    "reference_kernel",
    "tile_grid",
    "transform",
    "winograd_accumulate",
]
