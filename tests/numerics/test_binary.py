"""Binary and ternary: alpha per tensor / per channel, the TWN rule, exact dyadic scales, storage."""

from __future__ import annotations

import numpy as np
import pytest

from hwgen.errors import FormatError
from hwgen.numerics import SCALE_FORMAT, Binary, BlockCodes, Rounding, Ternary


def bf16_round(a: np.ndarray) -> np.ndarray:
    """alpha rounded to 8 significant bits, nearest even (what SCALE_FORMAT must hold)."""
    m, e = np.frexp(np.asarray(a, dtype=np.float64))
    return np.ldexp(np.rint(np.ldexp(m, 8)), e - 8)


def test_binary_alpha_is_mean_abs_per_tensor_and_per_channel() -> None:
    w = np.array([[0.5, -1.5, 2.0, -0.25], [0.1, 0.2, -0.3, 0.4]])
    q = Binary().quantize(w, rounding=Rounding.HALF_EVEN)
    a = bf16_round(np.abs(w).mean())
    np.testing.assert_array_equal(q, np.where(w > 0, a, -a))
    qc = Binary(per_channel=True).quantize(w, rounding=Rounding.HALF_EVEN, axis=0)
    ac = bf16_round(np.abs(w).mean(axis=1, keepdims=True))
    np.testing.assert_array_equal(qc, np.where(w > 0, ac, -ac))
    c = Binary(per_channel=True).encode(w, rounding=Rounding.HALF_EVEN, axis=0)
    assert c.shared.shape == (2, 1) and set(c.elements.ravel().tolist()) <= {0, 1}


def test_ternary_follows_twn() -> None:
    w = np.array([[0.9, -0.05, 0.4, -1.0, 0.0, 0.3]])
    mean = np.abs(w).mean()  # 0.44166..., delta = 0.309...
    keep = np.abs(w) > 0.7 * mean
    alpha = bf16_round(np.abs(w)[keep].mean())
    c = Ternary().encode(w, rounding=Rounding.HALF_EVEN)
    assert c.elements.tolist() == [[1, 0, 1, -1, 0, 0]]
    np.testing.assert_array_equal(Ternary().to_float(c), np.sign(w) * keep * alpha)


def test_ternary_per_channel_thresholds_each_row() -> None:
    w = np.array([[1.0, 0.1, -1.0, 0.0], [10.0, 1.0, -10.0, 0.0]])
    c = Ternary(per_channel=True).encode(w, rounding=Rounding.HALF_EVEN, axis=0)
    assert c.elements.tolist() == [[1, 0, -1, 0], [1, 0, -1, 0]]  # per tensor, row 0 would vanish
    assert Ternary().encode(w, rounding=Rounding.HALF_EVEN).elements[0].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("cls", [Binary, Ternary])
def test_decode_is_exact_dyadic(cls: type) -> None:
    x = np.random.default_rng(0).standard_normal((4, 9))
    c = cls(per_channel=True).encode(x, rounding=Rounding.HALF_UP, axis=0)
    m, e = cls().decode(c)
    np.testing.assert_array_equal(np.ldexp(m.astype(np.float64), e.astype(np.int32)), cls().to_float(c))
    am, _ = SCALE_FORMAT.decode(c.shared)
    assert np.all(np.abs(am) < 256)  # 8 significant bits


@pytest.mark.parametrize("cls", [Binary, Ternary])
def test_storage_counts_scales(cls: type) -> None:
    bits = 1 if cls is Binary else 2
    assert cls().storage_bits((8, 16)) == 8 * 16 * bits + 16
    assert cls(per_channel=True).storage_bits((8, 16)) == 8 * 16 * bits + 8 * 16


def test_fixed_alpha_is_rounded_into_the_scale_format() -> None:
    assert Ternary(alpha=0.1).alpha == float(bf16_round(0.1))
    with pytest.raises(FormatError, match="positive"):
        Binary(alpha=-1.0)
    with pytest.raises(FormatError, match="one format per channel"):
        Binary(per_channel=True, alpha=0.5)


def test_bad_codes() -> None:
    sh = np.zeros((1, 1), dtype=np.int64)
    with pytest.raises(FormatError, match="0 or 1"):
        Binary().decode(BlockCodes(np.array([[2]]), sh, None, 0))
    with pytest.raises(FormatError, match="-1, 0 or 1"):
        Ternary().decode(BlockCodes(np.array([[-2]]), sh, None, 0))
