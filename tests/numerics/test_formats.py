"""Every format family against brute force: every code of small formats, nearest rounding, saturation.

The references here are independent of the encoders: values come from Fractions of each code's
fields, rounding from a full distance table over every representable value.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwgen.numerics import (
    Binary,
    BlockCodes,
    BlockFloat,
    BlockLog,
    BlockMinifloat,
    FixedPoint,
    Minifloat,
    Rounding,
    Ternary,
    parse_format,
)

ELEMENT_FORMATS = [
    FixedPoint(5, 2),
    FixedPoint(4, 0, signed=False),
    Minifloat(4, 3),  # E4M3, bias 7
    Minifloat(5, 2),  # E5M2, bias 15
    Minifloat(2, 1),  # E2M1, bias 1
    Minifloat(3, 2, bias=5, denorm=False),
    Minifloat(2, 2, bias=-1, denorm=True),
    Minifloat(1, 0, bias=0, denorm=False),
    Minifloat(3, 0, bias=2),
]
BLOCK_FORMATS = [
    BlockFloat(3, 4, 4),
    BlockFloat(7, 8, 16),
    BlockMinifloat(2, 1, 4, 4),
    BlockMinifloat(3, 2, 6, 8, denorm=False),
    BlockLog(2, 4, 4),
    BlockLog(3, 8, 8),
]


def field_value(fmt: object, code: int, shared: int = 0) -> Fraction:
    """The value of one code, from the module docstrings' definitions."""
    two = Fraction(2)
    if isinstance(fmt, FixedPoint):
        return Fraction(code) * two**-fmt.frac
    if isinstance(fmt, Minifloat | BlockMinifloat):
        E, M = fmt.exp_bits, fmt.man_bits
        bias = fmt.bias if isinstance(fmt, Minifloat) else shared
        sign = -1 if code >> (E + M) else 1
        f, u = (code >> M) & ((1 << E) - 1), code & ((1 << M) - 1)
        if f == 0 and fmt.denorm:
            return sign * Fraction(u, 1 << M) * two ** (1 - bias)
        if f == 0 and u == 0:
            return Fraction(0)
        return sign * (1 + Fraction(u, 1 << M)) * two ** (f - bias)
    if isinstance(fmt, BlockFloat):
        return Fraction(code) * two**shared
    if isinstance(fmt, BlockLog):
        f = code & ((1 << fmt.exp_bits) - 1)
        return Fraction(0) if f == 0 else (-1 if code >> fmt.exp_bits else 1) * two ** (shared + f)
    raise TypeError(fmt)


def block_codes(fmt: object, elements: np.ndarray, shared: int) -> BlockCodes:
    el = np.asarray(elements, dtype=np.int64).reshape(1, -1)
    nb = -(-el.shape[1] // fmt.block)
    return BlockCodes(el, np.full((1, nb), shared, dtype=np.int64), 1, fmt.block)


def shared_samples(fmt: object) -> list[int]:
    s = fmt.shared_codes()
    return [int(s[0]), -1, 0, 3, int(s[-1])]


def brute_encode(values: list[Fraction], codes: list[int], xs: list[Fraction], rounding: Rounding) -> list[int]:
    """Codes `rounding` picks for each x among `values` (saturating), from a full distance table.

    Everything is dyadic, so it is scaled to exact integers first (object arrays: no overflow).
    """
    pairs = sorted({v: c for v, c in zip(values, codes, strict=True) if not (v == 0 and c != 0)}.items())
    den = max(f.denominator for f in [*values, *xs])
    v = np.array([int(a * den) for a, _ in pairs], dtype=object)
    c = np.array([b for _, b in pairs], dtype=np.int64)
    x = np.array([int(a * den) for a in xs], dtype=object)[:, None]
    if rounding is Rounding.FLOOR:
        ok = v[None, :] <= x
        idx = np.where(ok.any(axis=1), len(v) - 1 - np.argmax(ok[:, ::-1], axis=1), 0)
        return c[idx].tolist()
    dist = np.abs(v[None, :] - x)
    near = dist == dist.min(axis=1)[:, None]
    if rounding is Rounding.HALF_EVEN:
        near &= (near.sum(axis=1) == 1)[:, None] | (c[None, :] % 2 == 0)
    return c[len(v) - 1 - np.argmax(near[:, ::-1], axis=1)].tolist()  # HALF_UP: the larger of a tie


def probe_points(values: list[Fraction]) -> list[Fraction]:
    """Every value, the midpoints and quarter points between neighbours, and points beyond both ends."""
    vs = sorted(set(values))
    pts = list(vs)
    for a, b in itertools.pairwise(vs):
        pts += [a + (b - a) / 4, (a + b) / 2, a + 3 * (b - a) / 4]
    span = vs[-1] - vs[0] or Fraction(1)
    return [*pts, vs[0] - span, vs[-1] + span, vs[0] - Fraction(1, 1 << 20), vs[-1] + Fraction(1, 1 << 20)]


# -- element formats -------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ELEMENT_FORMATS, ids=str)
def test_every_code_decodes_exactly_and_in_order(fmt: object) -> None:
    codes = fmt.all_codes()
    assert len(codes) == 1 << fmt.bits and len(set(codes.tolist())) == 1 << fmt.bits
    m, e = fmt.decode(codes)
    assert m.dtype == e.dtype == np.int64 and m.shape == e.shape == codes.shape
    exact = [Fraction(int(a)) * Fraction(2) ** int(b) for a, b in zip(m, e, strict=True)]
    assert exact == [field_value(fmt, int(c)) for c in codes]
    assert [Fraction(float(v)) for v in fmt.to_float(codes)] == exact
    assert all(a <= b for a, b in itertools.pairwise(exact))  # monotonic in all_codes order
    dups = sum(a == b for a, b in itertools.pairwise(exact))
    assert dups == (1 if isinstance(fmt, Minifloat) else 0)  # only the sign-set zero repeats a value


@pytest.mark.parametrize("fmt", ELEMENT_FORMATS, ids=str)
@pytest.mark.parametrize("rounding", list(Rounding))
def test_encode_round_trips_every_code(fmt: object, rounding: Rounding) -> None:
    codes = fmt.all_codes()
    got = fmt.encode(fmt.to_float(codes), rounding=rounding)
    canonical = [0 if field_value(fmt, int(c)) == 0 else int(c) for c in codes]
    assert got.tolist() == canonical


@pytest.mark.parametrize("fmt", ELEMENT_FORMATS, ids=str)
@pytest.mark.parametrize("rounding", list(Rounding))
def test_encode_is_nearest_with_named_ties_and_saturates(fmt: object, rounding: Rounding) -> None:
    codes = fmt.all_codes().tolist()
    values = [field_value(fmt, c) for c in codes]
    pts = probe_points(values)
    got = fmt.encode(np.array([float(p) for p in pts]), rounding=rounding).tolist()
    assert all(Fraction(float(p)) == p for p in pts)
    assert got == brute_encode(values, codes, pts, rounding)


@pytest.mark.parametrize("fmt", ELEMENT_FORMATS, ids=str)
def test_far_values_saturate_to_the_ends(fmt: object) -> None:
    codes = fmt.all_codes()
    got = fmt.encode(np.array([-1e300, 1e300]), rounding=Rounding.HALF_EVEN)
    assert fmt.to_float(got).tolist() == [fmt.to_float(codes[0]), fmt.to_float(codes[-1])]


@settings(max_examples=200)
@given(
    fi=st.integers(0, len(ELEMENT_FORMATS) - 1),
    rounding=st.sampled_from(list(Rounding)),
    x=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
)
def test_quantize_any_float_picks_a_nearest_grid_point(fi: int, rounding: Rounding, x: float) -> None:
    fmt = ELEMENT_FORMATS[fi]
    codes = fmt.all_codes().tolist()
    values = [field_value(fmt, c) for c in codes]
    got = int(fmt.encode(np.array([x]), rounding=rounding)[0])
    assert field_value(fmt, got) == field_value(fmt, brute_encode(values, codes, [Fraction(x)], rounding)[0])


# -- block formats ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", BLOCK_FORMATS, ids=str)
def test_every_block_code_decodes_exactly_at_every_shared_value(fmt: object) -> None:
    codes = fmt.all_codes()
    for s in shared_samples(fmt):
        m, e = fmt.decode(block_codes(fmt, codes, s))
        exact = [Fraction(int(a)) * Fraction(2) ** int(b) for a, b in zip(m.ravel(), e.ravel(), strict=True)]
        assert exact == [field_value(fmt, int(c), s) for c in codes]
        assert all(a <= b for a, b in itertools.pairwise(exact))
        fl = fmt.to_float(block_codes(fmt, codes, s)).ravel()
        assert [Fraction(float(v)) for v in fl] == exact


@pytest.mark.parametrize("fmt", BLOCK_FORMATS, ids=str)
@pytest.mark.parametrize("rounding", list(Rounding))
def test_block_round_trip_recovers_codes_and_shared_field(fmt: object, rounding: Rounding) -> None:
    """Blocks that each hold the top code: encoding their values gives back codes and shared values."""
    codes = [int(c) for c in fmt.all_codes() if field_value(fmt, int(c)) != 0 or c == 0]
    top = int(fmt.all_codes()[-1])
    for s in shared_samples(fmt):
        body = np.array([codes[i % len(codes)] for i in range(4 * (fmt.block - 1))]).reshape(4, fmt.block - 1)
        blocks = np.concatenate([body[:, :1], np.full((4, 1), top), body[:, 1:]], axis=1)
        c = BlockCodes(blocks.reshape(1, -1), np.full((1, 4), s, dtype=np.int64), 1, fmt.block)
        x = fmt.to_float(c)
        back = fmt.encode(x, rounding=rounding, axis=1)
        assert back.shared.tolist() == c.shared.tolist()
        assert back.elements.tolist() == c.elements.tolist()


@pytest.mark.parametrize("fmt", BLOCK_FORMATS, ids=str)
@pytest.mark.parametrize("rounding", list(Rounding))
def test_block_elements_are_nearest_at_the_chosen_shared_value(fmt: object, rounding: Rounding) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2 * fmt.block + 1)) * np.exp2(rng.integers(-6, 6, size=(3, 1)))
    x[0, :3] = [0.0, -0.0, 1e-9]
    c = fmt.encode(x, rounding=rounding, axis=1)
    assert c.shared.shape == (3, 3) and c.elements.shape == x.shape
    codes = fmt.all_codes().tolist()
    per_el = c.shared_per_element()
    for s in np.unique(per_el):
        at = per_el == s
        values = [field_value(fmt, k, int(s)) for k in codes]
        want = brute_encode(values, codes, [Fraction(float(v)) for v in x[at]], rounding)
        got = c.elements[at].tolist()
        assert [field_value(fmt, k, int(s)) for k in got] == [field_value(fmt, k, int(s)) for k in want]


def test_block_axis_layout_and_padding() -> None:
    fmt = BlockFloat(3, 6, 4)
    x = np.arange(30, dtype=np.float64).reshape(5, 6)  # blocks along axis 0: sizes 4 and 1
    c = fmt.encode(x, rounding=Rounding.HALF_EVEN, axis=0)
    assert (c.axis, c.block, c.shared.shape) == (0, 4, (2, 6))
    # the second block along axis 0 is row 4 alone: its exponent follows row 4's max, not rows 0..3
    assert c.shared[1].tolist() == fmt.encode(x[4:5], rounding=Rounding.HALF_EVEN, axis=0).shared[0].tolist()
    assert fmt.storage_bits(x.shape, axis=0) == 30 * 4 + 12 * 6


@pytest.mark.parametrize("fmt", BLOCK_FORMATS, ids=str)
def test_block_saturates_when_the_shared_range_runs_out(fmt: object) -> None:
    hi = int(fmt.shared_codes()[-1])
    x = np.array([[1e300, -1e300, 1.0, 0.0] + [0.0] * (fmt.block - 4 if fmt.block > 4 else 0)])
    c = fmt.encode(x, rounding=Rounding.HALF_EVEN, axis=1)
    top = fmt.all_codes()
    expected_shared = int(fmt.shared_codes()[0]) if isinstance(fmt, BlockMinifloat) else hi  # coarsest scale
    assert int(c.shared[0, 0]) == expected_shared
    assert c.elements[0, :2].tolist() == [int(top[-1]), int(top[0])]


# -- binary / ternary ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Binary, Ternary])
@pytest.mark.parametrize("rounding", list(Rounding))
def test_fixed_alpha_is_nearest_with_named_ties(cls: type, rounding: Rounding) -> None:
    fmt = cls(alpha=0.375)
    codes = fmt.all_codes().tolist()
    el = [2 * c - 1 for c in codes] if cls is Binary else codes
    values = [Fraction(3, 8) * v for v in el]
    pts = probe_points(values)
    c = fmt.encode(np.array([float(p) for p in pts]), rounding=rounding)
    assert c.elements.tolist() == brute_encode(values, codes, pts, rounding)
    m, e = fmt.decode(c)
    assert [Fraction(int(a)) * Fraction(2) ** int(b) for a, b in zip(m, e, strict=True)] == [
        values[codes.index(k)] for k in c.elements.tolist()
    ]


# -- names -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ELEMENT_FORMATS + BLOCK_FORMATS + [Binary(), Ternary(per_channel=True)], ids=str)
def test_name_round_trips(fmt: object) -> None:
    assert parse_format(fmt.name) == fmt
    assert str(fmt) == fmt.name
