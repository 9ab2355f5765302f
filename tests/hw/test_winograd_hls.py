"""The HLS Winograd engine in C simulation (g++): bit-exact against sim.exact on extreme and random codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_winograd_engine import conv_node, quantized_conv

from hwgen.hw import winograd as hw
from hwgen.hw.csim import run_csim
from hwgen.ir.graph import Graph
from hwgen.sim import exact

pytestmark = pytest.mark.gxx


def vectors(graph: Graph, n_random: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Input codes (channels last: the stream order) and the golden model's output codes.

    Extreme samples first: all min, all max, zero, alternating min/max, a single max code; then
    seeded random codes over the whole input range.
    """
    x_name, y_name = graph.inputs[0], graph.outputs[0]
    fmt = exact.fixed_format(graph, x_name)
    shape = graph.value(x_name).type.shape
    rng = np.random.default_rng(seed)
    print(f"winograd hls vectors: seed {seed}")
    alt = np.where(np.indices(shape).sum(axis=0) % 2 == 0, fmt.min_code, fmt.max_code)
    one = np.zeros(shape, dtype=np.int64)
    one[0, shape[1] // 2, shape[2] // 2] = fmt.max_code
    extremes = [np.full(shape, fmt.min_code), np.full(shape, fmt.max_code), np.zeros(shape, np.int64), alt, one]
    codes = np.stack(extremes + [rng.integers(fmt.min_code, fmt.max_code + 1, size=shape) for _ in range(n_random)])
    y = exact.run_codes(graph, codes)[y_name]
    return codes.transpose(0, 2, 3, 1).reshape(len(codes), -1), y.transpose(0, 2, 3, 1).reshape(len(codes), -1)


CASES = {
    # unsigned input, fused ReLU, half-even rounding, partial edge tiles (7x9 outputs)
    "relu_pad1": (dict(c=3, m=4, hw_=(7, 9), pads=(1, 1, 1, 1), act="Relu"), (2, 1)),
    # signed input, clip, floor rounding, asymmetric padding, SIMD lanes, 6-bit codes
    "signed_asym": (
        dict(c=4, m=6, hw_=(6, 8), pads=(2, 0, 1, 2), act="Clip", bits=6, rounding="floor", signed_input=True),
        (3, 2),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_csim_bit_exact(case: str, tmp_path: Path) -> None:
    kwargs, (pe, simd) = CASES[case]
    graph = quantized_conv(**kwargs)
    p = hw.plan_from_node(graph, conv_node(graph), pe=pe, simd=simd)
    x, want = vectors(graph, 8, seed=11)
    hw.emit_standalone_hls(p, tmp_path / "hls", "wtop", inputs=x, expected=want)
    text = (tmp_path / "hls" / "conv.h").read_text()
    assert "#pragma HLS PIPELINE II=1" in text and "// conv (ONNX " in text
    r = run_csim(tmp_path / "hls", x, tmp_path / "work")
    bad = np.argwhere(r.outputs != want)
    assert bad.size == 0, f"{case}: {len(bad)} mismatches, first at sample {bad[0][0]} element {bad[0][1]}"
