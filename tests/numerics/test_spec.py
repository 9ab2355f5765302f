"""Spec strings: every family's canonical name parses back, defaults, and clear errors."""

from __future__ import annotations

import pytest

from hwgen.errors import FormatError
from hwgen.numerics import (
    Binary,
    BlockFloat,
    BlockLog,
    BlockMinifloat,
    FixedPoint,
    Float32,
    Minifloat,
    Ternary,
    parse_format,
)


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("fixed<8,3>", FixedPoint(8, 3)),
        ("ufixed<8,8>", FixedPoint(8, 8, signed=False)),
        ("float32", Float32()),
        ("minifloat<e4m3>", Minifloat(4, 3, 7, True)),
        ("minifloat<e4m3,bias=7,denorm>", Minifloat(4, 3, 7, True)),
        ("minifloat< e5m2 , nodenorm , bias=-2 >", Minifloat(5, 2, -2, False)),
        ("bfp<m7,e8,block=16>", BlockFloat(7, 8, 16)),
        ("bfp<m3>", BlockFloat(3, 8, 16)),
        ("bminifloat<e4m3,b8,block=8,denorm>", BlockMinifloat(4, 3, 8, 8, True)),
        ("bminifloat<e2m1,block=32,nodenorm>", BlockMinifloat(2, 1, 8, 32, False)),
        ("blog<e7,b8,block=8>", BlockLog(7, 8, 8)),
        ("binary", Binary()),
        ("binary<channel>", Binary(per_channel=True)),
        ("ternary<alpha=0.25>", Ternary(alpha=0.25)),
    ],
)
def test_parse(text: str, fmt: object) -> None:
    assert parse_format(text) == fmt
    assert parse_format(fmt.name) == fmt


@pytest.mark.parametrize(
    "bad",
    [
        "minifloat<4,3>",
        "minifloat<e4m3,bias=x>",
        "minifloat<e4m3,denorm,nodenorm>",
        "bfp<e8>",
        "bfp<m7,e8,block=16,extra>",
        "blog<b8>",
        "binary<alpha=big>",
        "float32<1>",
        "posit<8,1>",
    ],
)
def test_bad_specs_name_the_text_and_give_examples(bad: str) -> None:
    with pytest.raises(FormatError, match=r"unknown number format .*expected e\.g\. 'fixed<8,4>'") as e:
        parse_format(bad)
    assert repr(bad.strip()) in str(e.value)
