"""The Huffman decoder's HLS C++ (templates/hls/huffman_decoder.h.j2): C simulation bit-exact vs the Python decoder.

Streams: random skewed sources (with and without a codebook, several word widths and length
limits), a stream of one symbol, codes at the length limit with W = L, a tampered stream word, and
the real LeNet-300-100 fc1 value stream (pruned, shared to 5 bits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_csim import needs_gxx

from hwgen.errors import ScheduleError
from hwgen.hw.huffman import accept_edges, context, emit_decoder_hls, plan_huffman_decoder, run_decoder_csim
from hwgen.passes.huffman import build_code, encode

ROOT = Path(__file__).resolve().parents[2]


def skewed(rng: np.random.Generator, alphabet: int, n: int, p: float) -> np.ndarray:
    s = np.minimum(rng.geometric(p, size=n) - 1, alphabet - 1)
    return rng.permutation(alphabet)[s]


def test_plan_model_and_tables() -> None:
    """The cycle model by hand, the comparator table without constant comparisons, legal names, errors."""
    code = build_code(np.array([8, 4, 2, 1, 1, 0]), 6)  # lengths 1, 2, 3, 4, 4: limits of 5 and 6 are 2**6
    stream = encode(np.array([0, 1, 2, 3, 4, 0]), code, 8)
    plan = plan_huffman_decoder("fc1/values.0", "x", stream)
    assert plan.name == "fc1_values_0" and plan.latency == 3
    ready = np.array([1, 1, 1, 1, 0, 0, 1, 1, 0, 1], dtype=bool)
    assert accept_edges(plan, 4, ready).tolist() == [3, 6, 7, 9]
    assert accept_edges(plan, 3).tolist() == [3, 4, 5]
    ctx = context(plan)
    assert [lv for lv, _ in ctx["limits"]] == [1, 2, 3] and ctx["len_base"] == 1
    assert plan_huffman_decoder("d", "x", stream, np.arange(6) - 3).latency == 4
    with pytest.raises(ScheduleError, match="codebook of 2 entries for 6 symbols"):
        plan_huffman_decoder("d", "x", stream, np.array([1, 2]))
    with pytest.raises(ScheduleError, match="window of >= 2 bits"):
        plan_huffman_decoder("d", "x", encode(np.array([0, 1]), build_code(np.array([1, 1]), 1), 8))


@needs_gxx
@pytest.mark.parametrize(
    ("seed", "alphabet", "max_len", "word_bits", "with_codebook"),
    [(0, 33, 10, 16, True), (1, 200, 16, 32, False), (2, 5, 3, 64, True)],
)
def test_random_skewed_streams(
    seed: int, alphabet: int, max_len: int, word_bits: int, with_codebook: bool, tmp_path: Path
) -> None:
    rng = np.random.default_rng(seed)
    s = skewed(rng, alphabet, 900, 0.12)
    stream = encode(s, build_code(np.bincount(s, minlength=alphabet), max_len), word_bits)
    cb = rng.integers(-(1 << 11), 1 << 11, size=alphabet) if with_codebook else None
    plan = plan_huffman_decoder(f"hd{seed}", f"seed {seed}", stream, cb)
    got = run_decoder_csim(plan, tmp_path, passes=2)
    want = np.tile(s if cb is None else cb[s], 2)  # independent of the Python decoder
    assert np.array_equal(got, want)


@needs_gxx
def test_one_symbol_and_max_length_codes(tmp_path: Path) -> None:
    one = encode(np.full(37, 2), build_code(np.bincount(np.full(37, 2), minlength=3), 8), 8)
    plan = plan_huffman_decoder("hd_one", "one symbol", one)
    assert np.array_equal(run_decoder_csim(plan, tmp_path / "one", passes=3), np.full(111, 2))

    fib = [1, 1]
    while len(fib) < 20:
        fib.append(fib[-1] + fib[-2])
    freqs = np.asarray(fib[::-1])
    code = build_code(freqs, 12)
    assert code.lengths.max() == 12
    longest = np.flatnonzero(code.lengths == 12)
    s = np.concatenate([longest, np.repeat(longest[:1], 30), np.random.default_rng(4).choice(20, 300)])
    plan = plan_huffman_decoder("hd_max", "max-length codes", encode(s, code, 12))
    assert np.array_equal(run_decoder_csim(plan, tmp_path / "max"), s)


@needs_gxx
def test_a_flipped_stream_bit_is_caught(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    s = skewed(rng, 12, 300, 0.3)
    plan = plan_huffman_decoder("hd_t", "tamper", encode(s, build_code(np.bincount(s, minlength=12), 8), 16))
    header = emit_decoder_hls(plan, tmp_path)
    text = header.read_text()
    word = f"0x{int(plan.stream.words[2]):04x}ULL"
    assert word in text
    header.write_text(text.replace(word, f"0x{int(plan.stream.words[2]) ^ 0x100:04x}ULL", 1))

    import subprocess

    from hwgen.hw.csim import CXXFLAGS, ap_types_dir, gxx

    # compile the tampered header with the bench run_decoder_csim writes (it would re-emit the header)
    tb = tmp_path / "tb.cpp"
    tb.write_text(
        f'#include <cstdio>\n#include "{header.name}"\nint main() {{\n  hls::stream<hd_t_ns::out_t> out;\n'
        '  hd_t_decode(out);\n  while (!out.empty()) std::printf("%d\\n", (int)out.read().to_int());\n  return 0;\n}\n'
    )
    exe = tmp_path / "tb"
    subprocess.run(
        [gxx(), *CXXFLAGS, "-isystem", str(ap_types_dir()), "-I", str(tmp_path), str(tb), "-o", str(exe)], check=True
    )
    got = np.asarray(
        [int(v) for v in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()]
    )
    assert got.size == s.size and not np.array_equal(got, s)


@needs_gxx
def test_lenet300_fc1_stream(tmp_path: Path) -> None:
    from hwgen.passes.huffman import compress_layer
    from hwgen.passes.share import share_tensor

    npz = ROOT / "models" / "pruned" / "lenet300_pruned.npz"
    if not npz.is_file():
        pytest.skip(f"{npz} is missing (made by benchmarks/prune_mnist.py)")
    with np.load(npz) as d:
        st = share_tensor(d["fc1.weight"], 5, weight_bits=8)
    layer = compress_layer(st.indices, st.codebook, 8, index_bits=4, max_len=16, word_bits=32)
    plan = plan_huffman_decoder("hd_fc1", "fc1 values", layer.values, st.codebook)
    vals = np.concatenate([c.values for c in layer.csc.pe_columns])  # the CSC entries' symbols, in order
    assert np.array_equal(run_decoder_csim(plan, tmp_path), st.codebook[vals])
