"""hw.hls_emit on dataflow Schedules (CNN engines): ROM layout, top wiring, refusals; no compiler.

Bit-exactness of the same engines is checked by C simulation in test_hls_cnn.py.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from test_hls_emit import layer, parse_rom

from hwgen.errors import ScheduleError
from hwgen.hw.hls_emit import emit_hls
from hwgen.hw.plan import (
    AddPlan,
    ConvPlan,
    ForkPlan,
    IntType,
    LutPlan,
    PoolPlan,
    Requant,
    Schedule,
    Stream,
    StreamPort,
)
from hwgen.hw.schedule import accumulator_range, chain_schedule, product_type, signed_bits_for
from hwgen.numerics import Rounding

U8, S8 = IntType(8, False), IntType(8, True)
HE = Rounding.HALF_EVEN


def conv(name: str, *, c: int, m: int, groups: int, pe: int, simd: int, seed: int = 0) -> ConvPlan:
    """A 5x5 -> 5x4 conv 3x3 with pads (t,l,b,r) = (1,0,1,1): u8 in, s8 weights and out."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, size=(m, c // groups, 3, 3))
    b = rng.integers(-500, 500, size=m)
    lo, hi = accumulator_range(w.reshape(m, -1), b, U8)
    return ConvPlan(
        name=name,
        source=f"/{name}/Conv",
        channels_in=c,
        channels_out=m,
        in_h=5,
        in_w=5,
        out_h=5,
        out_w=4,
        kernel=(3, 3),
        stride=(1, 1),
        pads_begin=(1, 0),
        pads_end=(1, 1),
        groups=groups,
        pe=pe,
        simd=simd,
        inp=U8,
        w=S8,
        prod=product_type(U8, S8),
        acc=IntType(signed_bits_for(lo, hi), True),
        out=S8,
        bias=IntType(signed_bits_for(-500, 500), True),
        requant=Requant(8, HE, S8.lo, S8.hi),
        weights=w,
        biases=b,
        inputs=("x",),
        outputs=("c",),
    )


def dataflow(conv_plan: ConvPlan | None = None) -> Schedule:
    """x -> conv -> fork -> (lut, add's b) -> add -> y: every engine kind that wires several streams."""
    p = conv_plan or conv("conv1", c=4, m=6, groups=2, pe=3, simd=2)
    n = 5 * 4 * 6
    table = np.clip(np.arange(-128, 128) // 2 + 3, -128, 127)
    streams = (
        Stream("x", "x", U8, (5, 5, 4)),
        Stream("c", "/conv1/out", S8, (5, 4, 6)),
        Stream("c_to_lut", "/conv1/out", S8, (5, 4, 6), depth=n + 2),
        Stream("c_to_add", "/conv1/out", S8, (5, 4, 6), depth=n + 2),
        Stream("t", "/lut/out", S8, (5, 4, 6)),
        Stream("y", "y", S8, (5, 4, 6)),
    )
    layers = (
        p,
        ForkPlan("fork_c", "/conv1/out", S8, n, inputs=("c",), outputs=("c_to_lut", "c_to_add")),
        LutPlan("lut", "/lut", n, S8, S8, table, inputs=("c_to_lut",), outputs=("t",)),
        AddPlan(
            name="add",
            source="/add",
            count=n,
            a=S8,
            b=S8,
            align_a=1,
            align_b=0,
            sum=IntType(10, True),
            out=S8,
            requant=Requant(1, HE, -128, 127),
            inputs=("t", "c_to_add"),
            outputs=("y",),
        ),
    )
    port_in = StreamPort("x", "x", U8, 100, 0, (4, 5, 5))
    port_out = StreamPort("y", "y", S8, n, 0, (6, 5, 4))
    return Schedule("net", "dataflow", "0123456789abcdef", port_in, port_out, layers, 1000, 500, streams=streams)


def test_files_and_engine_comments(tmp_path: Path) -> None:
    files = [f.name for f in emit_hls(dataflow(), tmp_path)]
    assert files[:6] == ["hwgen_types.h", "conv1.h", "fork_c.h", "lut.h", "add.h", "net.h"]
    text = (tmp_path / "conv1.h").read_text()
    want = "// conv1 (ONNX '/conv1/Conv'): conv 3x3/1x1 pad t,l,b,r=1,0,1,1 groups=2 5x5x4->5x4x6 PE=3 SIMD=2 acc="
    assert want in text and want in (tmp_path / "net.cpp").read_text()
    assert "#pragma HLS PIPELINE II=1" in text and "in_t lb[KH][IW][CI];" in text
    # the walk covers the padded image: rows 1 + 5 + 1, columns 0 + 5 + 1
    assert "const int ROWS = 7;" in text and "const int COLS = 6;" in text


def test_conv_rom_layout(tmp_path: Path) -> None:
    """Word nf*SF + (u*KW + v)*CF + cf holds weights[nf*PE + p][cf*SIMD + s][u][v] at element p*SIMD + s."""
    p = conv("conv1", c=4, m=6, groups=1, pe=3, simd=2, seed=3)
    emit_hls(dataflow(p), tmp_path)
    text = (tmp_path / "conv1.h").read_text()
    w, b = parse_rom(text, "W"), parse_rom(text, "B")
    cf, sf, nf = 2, 3 * 3 * 2, 2
    assert w.shape == (nf * sf, 3 * 2)
    for word in range(nf * sf):
        n, i = divmod(word, sf)
        (u, v), f = divmod(i // cf, 3), i % cf
        tile = p.weights[n * 3 : n * 3 + 3, f * 2 : f * 2 + 2, u, v]  # [PE, SIMD]
        np.testing.assert_array_equal(w[word], tile.reshape(-1), err_msg=f"word {word}")
    np.testing.assert_array_equal(b, p.biases.reshape(nf, 3))


def test_top_declares_each_stream_once(tmp_path: Path) -> None:
    s = dataflow()
    emit_hls(s, tmp_path)
    top = (tmp_path / "net.cpp").read_text()
    fifos = re.findall(
        r"hls::stream<(ap_u?int<\d+>)> (\w+)\(\"\w+\"\);\n#pragma HLS STREAM variable=(\w+) depth=(\d+)", top
    )
    assert [(v, int(d)) for _, v, v2, d in fifos if v == v2] == [
        ("c", 2),
        ("c_to_lut", 122),
        ("c_to_add", 122),
        ("t", 2),
    ]
    assert all(t == "ap_int<8>" for t, *_ in fifos)
    calls = re.findall(r"hwgen_layers::(\w+)\(([^)]*)\);", top)
    assert calls == [
        ("conv1", "in, c"),
        ("fork_c", "c, c_to_lut, c_to_add"),
        ("lut", "c_to_lut, t"),
        ("add", "t, c_to_add, out"),
    ]
    assert "#pragma HLS DATAFLOW" in top


def test_streams_named_like_the_ports_are_renamed(tmp_path: Path) -> None:
    s = dataflow()
    rename = {"c": "out", "t": "in"}
    streams = tuple(dataclasses.replace(st, name=rename.get(st.name, st.name)) for st in s.streams)
    layers = tuple(
        dataclasses.replace(
            p,
            inputs=tuple(rename.get(i, i) for i in p.inputs),
            outputs=tuple(rename.get(o, o) for o in p.outputs),
        )
        for p in s.layers
    )
    emit_hls(dataclasses.replace(s, streams=streams, layers=layers), tmp_path)
    calls = re.findall(r"hwgen_layers::(\w+)\(([^)]*)\);", (tmp_path / "net.cpp").read_text())
    assert calls[0] == ("conv1", "in, out_1") and calls[2] == ("lut", "c_to_lut, in_1")


def test_lut_table_and_pool_pad(tmp_path: Path) -> None:
    s = dataflow()
    emit_hls(s, tmp_path)
    lut = (tmp_path / "lut.h").read_text()
    body = re.search(r"T\[256\] = \{\n(.*?)\n    \};", lut, re.DOTALL)
    assert body
    values = [int(v) for v in body.group(1).replace("\n", " ").split(",") if v.strip()]
    assert values == s.layers[2].table.tolist()
    assert "const int LO = -128;" in lut


def replace_layer(s: Schedule, i: int, **changes: object) -> Schedule:
    layers = list(s.layers)
    layers[i] = dataclasses.replace(layers[i], **changes)
    return dataclasses.replace(s, layers=tuple(layers))


def test_refuses_what_it_cannot_express(tmp_path: Path) -> None:
    s = dataflow()
    fork_less = replace_layer(replace_layer(s, 2, inputs=("c",)), 3, inputs=("t", "c"))
    with pytest.raises(ScheduleError, match=r"stream 'c' \('/conv1/out'\) has 3 readers.*fork it"):
        emit_hls(fork_less, tmp_path)
    with pytest.raises(ScheduleError, match="before any engine writes it"):
        emit_hls(dataclasses.replace(s, layers=(s.layers[0], s.layers[2], s.layers[1], s.layers[3])), tmp_path)
    with pytest.raises(ScheduleError, match="PE=2 must divide the 3 output channels per group"):
        emit_hls(dataflow(conv("conv1", c=4, m=6, groups=2, pe=2, simd=2)), tmp_path)
    with pytest.raises(ScheduleError, match="a table of"):
        emit_hls(replace_layer(s, 2, table=np.zeros(10, dtype=np.int64)), tmp_path)
    with pytest.raises(ScheduleError, match="stream 'c_to_lut' carries 120xs8, reads 120xu8"):
        emit_hls(replace_layer(s, 2, inp=U8, table=np.zeros(256, dtype=np.int64)), tmp_path)
    with pytest.raises(ScheduleError, match="do not give 6 outputs"):
        emit_hls(replace_layer(s, 0, out_h=6), tmp_path)
    with pytest.raises(ScheduleError, match="weights: codes span"):
        emit_hls(replace_layer(s, 0, w=IntType(4, True)), tmp_path)


def test_refuses_a_narrowing_max_pool(tmp_path: Path) -> None:
    """Max pooling passes codes through (sim.exact never requantizes it): the output type must hold them."""
    pool = PoolPlan(
        "pool", "/pool", "max", 2, 4, 4, 2, 2, (2, 2), (2, 2), (0, 0), (0, 0), S8, U8, S8, 1, 0, HE, 0, 255,
        inputs=("x",), outputs=("y",),
    )  # fmt: skip
    streams = (Stream("x", "x", S8, (4, 4, 2)), Stream("y", "y", U8, (2, 2, 2)))
    s = Schedule(
        "net", "pool", "0" * 16, StreamPort("x", "x", S8, 32, 0, (2, 4, 4)), StreamPort("y", "y", U8, 8, 0, (2, 2, 2)),
        (pool,), 100, 32, streams=streams,
    )  # fmt: skip
    with pytest.raises(ScheduleError, match="max pooling passes codes through, but s8 codes do not fit u8"):
        emit_hls(s, tmp_path)
    ok = dataclasses.replace(pool, out=S8, lo=-128, hi=127)
    emit_hls(dataclasses.replace(s, layers=(ok,), streams=(streams[0], Stream("y", "y", S8, (2, 2, 2))),
                                 output=StreamPort("y", "y", S8, 8, 0, (2, 2, 2))), tmp_path)  # fmt: skip
    assert "in_t(-128)" in (tmp_path / "pool.h").read_text()  # padding never wins, though there is none here


def test_chain_whose_port_is_named_like_a_layer_output(tmp_path: Path) -> None:
    """chain_schedule names a layer's output `<layer>_out`; a port may already be called that, so the
    internal stream gets a unique name and the design is wired by stream names."""
    l1 = layer("fc1", 12, 6, pe=3, simd=4)
    l2 = layer("fc2", 6, 4, pe=2, simd=3, seed=2)
    x = StreamPort("fc1_out", "fc1_out", U8, 12, 0, (12,))
    s = chain_schedule("mlp", "m", [l1, l2], x, StreamPort("y", "y", U8, 4, 0, (4,)))
    names = [st.name for st in s.streams]
    assert len(set(names)) == len(names) and names[0] == "fc1_out"
    emit_hls(s, tmp_path)
    calls = re.findall(r"hwgen_layers::(\w+)\(([^)]*)\);", (tmp_path / "mlp.cpp").read_text())
    assert calls == [("fc1", f"in, {names[1]}"), ("fc2", f"{names[1]}, out")]  # the port itself is `in`
