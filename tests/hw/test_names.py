"""hw.names: every identifier that reaches generated C++/Verilog is legal, unique and not a keyword."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwgen.hw.names import MAX_LEN, RESERVED, comment_safe, legalize

LEGAL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# keywords written out here, not imported: a keyword missing from RESERVED must fail a test
KEYWORDS = [
    "module",
    "endmodule",
    "input",
    "output",
    "wire",
    "reg",
    "logic",
    "always",
    "always_ff",
    "assign",
    "begin",
    "end",
    "initial",
    "parameter",
    "localparam",
    "generate",
    "genvar",
    "function",
    "task",
    "case",
    "default",
    "int",
    "class",
    "struct",
    "template",
    "typename",
    "namespace",
    "return",
    "void",
    "const",
    "static",
    "new",
    "delete",
    "this",
    "auto",
    "signed",
    "unsigned",
    "for",
    "while",
    "if",
    "else",
    "and",
    "or",
    "not",
    "xor",
    "ap_int",
    "ap_uint",
    "ap_fixed",
    "ap_ufixed",
    "main",
    "std",
    "hls",
    "NULL",
    "assert",
    "bit",
    "byte",
    "interface",
    "package",
    "import",
    "export",
    "union",
    "typedef",
    "enum",
    "virtual",
    "extern",
    "inline",
]
HOSTILE = [
    'a"; system("x"); //',
    "module",
    "1x",
    "123",
    "héllo wörld",
    "名前",
    "🙂",
    "x" * 300,
    "",
    "_",
    "__",
    "___init___",
    "__reserved",
    "trailing_",
    "ap_int",
    "ap_int<8>",
    "hls::stream",
    "hwgen_top",
    "/layer1/Gemm",
    "/layer1/Gemm_output_0",
    "a/*b*/c",
    "a\nb",
    "$display",
    "`define X",
    "\\escaped ",
    " ",
    "0",
    "-",
    "Module",
    "MODULE",
]


def check(name: str) -> None:
    assert LEGAL.fullmatch(name), name
    assert name.lower() not in RESERVED and name not in KEYWORDS, name
    assert len(name) <= MAX_LEN == 48, name
    assert "__" not in name and not name.startswith("_") and not name.endswith("_"), name
    assert not name.startswith(("ap_", "hls_", "hwgen_")), name


@pytest.mark.parametrize("name", HOSTILE + KEYWORDS)
def test_hostile_names_become_legal(name: str) -> None:
    out = legalize(name)
    check(out)
    assert legalize(name) == out  # deterministic


def test_examples() -> None:
    assert legalize("fc1") == "fc1"
    assert legalize("/layer1/Gemm") == "layer1_Gemm"
    assert legalize("1x") == "n1x"
    assert legalize("1x", prefix="l") == "l1x"
    assert legalize("module") == "n_module"
    assert legalize("") == "n"
    assert legalize("__") == "n"
    assert legalize("a  b--c") == "a_b_c"


def test_every_reserved_word_is_escaped() -> None:
    for kw in sorted(RESERVED):
        check(legalize(kw))
    assert set(KEYWORDS) <= RESERVED | {"NULL"}


def test_unique_against_taken() -> None:
    taken: set[str] = set()
    names = ["fc", "fc", "fc", "f c", "f-c", "fc_1", "module", "module", "", ""]
    out = [legalize(n, taken) for n in names]
    assert len(set(out)) == len(out)
    assert set(out) == taken
    for o in out:
        check(o)
    assert out[:3] == ["fc", "fc_1", "fc_2"]


def test_distinct_long_names_stay_distinct() -> None:
    base = "/encoder/layers.0/self_attention/output/dense/MatMul_" + "x" * 200
    names = [base + str(i) for i in range(50)] + [base[:-1] + "y0"]
    out = [legalize(n) for n in names]
    assert len(set(out)) == len(out)
    for o in out:
        check(o)
        assert 40 <= len(o) <= MAX_LEN  # cut, then a short hash of the full name


@pytest.mark.parametrize("name", ["x" * 48, "y" * 300], ids=["48-chars", "300-chars"])
def test_unique_suffix_keeps_the_length_limit(name: str) -> None:
    taken: set[str] = set()
    outs = [legalize(name, taken) for _ in range(12)]
    assert len(set(outs)) == 12
    for o in outs:
        check(o)


@settings(max_examples=300)
@given(names=st.lists(st.text(max_size=80), min_size=1, max_size=20))
def test_legalize_property(names: list[str]) -> None:
    taken: set[str] = set()
    out = [legalize(n, taken) for n in names]
    assert len(set(out)) == len(out)
    for o in out:
        assert LEGAL.fullmatch(o) and o.lower() not in RESERVED
    for n in names:
        check(legalize(n))


# -- comments ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "fc1",
        "a*/b",
        "*/ module evil; /*",
        "line1\nline2\r\nline3",
        "trailing backslash \\",
        "tab\there",
        "naïve 名前 🙂",
        "\u2028line separator",
        "*\\/",
        "/*/",
        "x" * 500,
    ],
)
def test_comment_safe(text: str) -> None:
    out = comment_safe(text)
    assert all(32 <= ord(c) < 127 for c in out), out
    assert "*/" not in out and "/*" not in out and "\\" not in out
    assert "\n" not in out and "\r" not in out
    assert len(out) <= 80


def test_comment_safe_keeps_ordinary_text() -> None:
    assert comment_safe("/layer1/Gemm (fc1)") == "/layer1/Gemm (fc1)"
    assert comment_safe("x" * 100).endswith("...") and len(comment_safe("x" * 100)) == 80
    assert len(comment_safe("x" * 100, limit=20)) == 20


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_comment_safe_property(text: str) -> None:
    out = comment_safe(text)
    assert all(32 <= ord(c) < 127 for c in out)
    assert "*/" not in out and "/*" not in out and "\\" not in out
