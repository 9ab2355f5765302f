"""The Huffman decoder in RTL (Verilator + cocotb): bit-exact vs the Python decoder, cycle-exact vs its model.

Each design is one decoder (hwgen.hw.huffman) of a stream coded by hwgen.passes.huffman. The
cocotb test `huffman_bench` (in this file) releases reset, drives m_axis_tready with a pattern
(always, seeded random 50 %, periodic 2 of 5), records every accepted beat and its edge (edge 0 =
the first rising edge with ap_rst_n high) and writes them to JSON; the pytest side compares the
values with `HuffmanDecoderPlan.expected` (the Python decoder) and the edges with `accept_edges`.
Streams: random skewed sources, a stream of one symbol, codes at the length limit, a tampered
ROM word, and the real LeNet-300-100 fc1 value stream (pruned, shared to 5 bits) through its codebook.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from hwgen.hw.huffman import HuffmanDecoderPlan, accept_edges, emit_decoder_rtl, plan_huffman_decoder
from hwgen.passes.huffman import build_code, encode

pytestmark = pytest.mark.rtl

MODULE = "test_huffman_rtl"
ENV = "HWGEN_HUFFMAN_BENCH"
#: sink patterns: periodic = ready in 2 of every 5 cycles
SINK_PERIOD = (5, 2)
ROOT = Path(__file__).resolve().parents[1]


# -- the cocotb side ----------------------------------------------------------------------------
try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, ReadOnly

    @cocotb.test()
    async def huffman_bench(dut) -> None:
        """Collect `count` beats under the configured sink pattern; write values and edges."""
        cfg = json.loads(Path(os.environ[ENV]).read_text())
        rng = random.Random(cfg["seed"])
        mode, count, width, signed = cfg["ready"], cfg["count"], cfg["width"], cfg["signed"]
        cocotb.start_soon(Clock(dut.ap_clk, 10, unit="ns").start())
        dut.ap_rst_n.value = 0
        dut.m_axis_tready.value = 0
        for _ in range(3):
            await FallingEdge(dut.ap_clk)
        dut.ap_rst_n.value = 1  # edge 0 is the next rising edge
        values: list[int] = []
        edges: list[int] = []
        lasts: list[int] = []
        ready_log: list[int] = []
        n = 0
        while len(values) < count:
            if n > cfg["timeout"]:
                raise TimeoutError(f"{len(values)} of {count} beats after {n} cycles")
            if mode == "none":
                ready = 1
            elif mode == "random":
                ready = int(rng.random() < 0.5)
            else:
                ready = int(n % SINK_PERIOD[0] < SINK_PERIOD[1])
            dut.m_axis_tready.value = ready
            ready_log.append(ready)
            await ReadOnly()
            if ready and int(dut.m_axis_tvalid.value):
                raw = int(dut.m_axis_tdata.value)
                values.append(raw - (1 << width) if signed and raw >> (width - 1) else raw)
                lasts.append(int(dut.m_axis_tlast.value))
                edges.append(n)
            await FallingEdge(dut.ap_clk)
            n += 1
        Path(cfg["results"]).write_text(
            json.dumps({"values": values, "edges": edges, "lasts": lasts, "ready": ready_log})
        )

except ImportError:  # pytest collection without cocotb: the tests below skip
    pass


# -- the pytest side ----------------------------------------------------------------------------


def simulate(
    plan: HuffmanDecoderPlan,
    out_dir: Path,
    build_root: Path,
    *,
    passes: int = 2,
    ready: str = "none",
    seed: int = 0,
    simulator: str = "verilator",
) -> dict:
    """Emit, build (cached), run the bench; check values, tlast and accept edges. Returns the results."""
    from hwgen.hw.rtl_sim import build_design, lint_verilator, run_cocotb

    rtl = out_dir / "rtl"
    if not (rtl / "filelist.f").is_file():
        top = emit_decoder_rtl(plan, rtl)
        assert lint_verilator(rtl, top) == []
    build_dir, _ = build_design(rtl, plan.name, build_root / f"huffman_{plan.name}", simulator=simulator)
    count = passes * plan.symbols
    run_dir = out_dir / f"run_{simulator}_{ready}_{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "ready": ready,
        "seed": seed,
        "count": count,
        "width": plan.out_bits,
        "signed": plan.out_signed,
        "timeout": 8 * (count + plan.latency) + 100,
        "results": str(run_dir / "results.json"),
    }
    (run_dir / "bench.json").write_text(json.dumps(cfg))
    print(f"decoder {plan.name}: {plan.symbols} symbols/pass, {passes} passes, ready={ready}, seed {seed}")
    env = {ENV: str(run_dir / "bench.json")}
    run_cocotb(build_dir, plan.name, MODULE, test_dir=run_dir, extra_env=env, seed=seed, simulator=simulator)
    r = json.loads((run_dir / "results.json").read_text())
    got, want = np.asarray(r["values"]), plan.expected(passes)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{len(bad)} mismatching values, first at {bad[0]}: expected {want[bad[0]]}, got {got[bad[0]]}"
    )
    lasts = np.zeros(count, dtype=np.int64)
    lasts[plan.symbols - 1 :: plan.symbols] = 1
    assert np.array_equal(r["lasts"], lasts), "tlast is not on the last symbol of each pass"
    model = accept_edges(plan, count, np.asarray(r["ready"], dtype=bool))
    assert np.array_equal(r["edges"], model), (
        f"accept edges differ from the model (first {r['edges'][:5]}, {model[:5]})"
    )
    return r


def skewed_symbols(rng: np.random.Generator, alphabet: int, n: int, p: float) -> np.ndarray:
    """A geometric (skewed) source over a shuffled alphabet."""
    s = np.minimum(rng.geometric(p, size=n) - 1, alphabet - 1)
    return rng.permutation(alphabet)[s]


# -- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seed", "alphabet", "max_len", "word_bits", "with_codebook"),
    [(0, 33, 10, 16, True), (1, 200, 16, 32, False)],
)
def test_random_skewed_streams(
    seed: int, alphabet: int, max_len: int, word_bits: int, with_codebook: bool, tmp_path: Path, build_root: Path
) -> None:
    """Random skewed sources: bit-exact and cycle-exact under a free, random and periodic sink."""
    rng = np.random.default_rng(seed)
    s = skewed_symbols(rng, alphabet, 700, 0.15)
    stream = encode(s, build_code(np.bincount(s, minlength=alphabet), max_len), word_bits)
    cb = rng.integers(-128, 128, size=alphabet) if with_codebook else None
    plan = plan_huffman_decoder(f"hd_rand{seed}", f"random seed {seed}", stream, cb)
    r = simulate(plan, tmp_path, build_root, ready="none")
    assert np.array_equal(r["edges"], plan.latency + np.arange(2 * plan.symbols)), "not one symbol per cycle"
    for mode in ("random", "periodic"):
        simulate(plan, tmp_path, build_root, ready=mode, seed=seed + 7)


def test_one_symbol_stream_and_max_length_codes(tmp_path: Path, build_root: Path) -> None:
    """A stream of one symbol (1-bit codes, one word), then Fibonacci frequencies that reach the limit L = W."""
    one = encode(np.full(50, 3), build_code(np.bincount(np.full(50, 3), minlength=5), 8), 8)
    assert one.words.size == 7 and one.code.lengths[3] == 1
    simulate(plan_huffman_decoder("hd_one", "one symbol", one), tmp_path / "one", build_root, passes=3)

    fib = [1, 1]
    while len(fib) < 20:
        fib.append(fib[-1] + fib[-2])
    freqs = np.asarray(fib[::-1])
    code = build_code(freqs, 12)
    assert code.lengths.max() == 12 and (code.lengths == 12).sum() >= 2  # the limit binds
    rng = np.random.default_rng(3)
    s = np.concatenate([np.flatnonzero(code.lengths == 12), rng.choice(20, size=300, p=freqs / freqs.sum())])
    s = np.concatenate([s, np.repeat(np.flatnonzero(code.lengths == 12)[:1], 40)])  # runs of 12-bit codes
    stream = encode(s, code, 12)  # W = L: a code may take a whole word
    plan = plan_huffman_decoder("hd_maxlen", "max-length codes", stream)
    simulate(plan, tmp_path / "max", build_root, ready="none")
    simulate(plan, tmp_path / "max", build_root, ready="random", seed=5)


@pytest.mark.skipif(
    shutil.which("iverilog") is None, reason="icarus verilog is not installed (apt-get install iverilog)"
)
def test_icarus_agrees(tmp_path: Path, build_root: Path) -> None:
    """The second simulator: the same values and edges under a random sink."""
    rng = np.random.default_rng(11)
    s = skewed_symbols(rng, 20, 300, 0.2)
    stream = encode(s, build_code(np.bincount(s, minlength=20), 9), 16)
    plan = plan_huffman_decoder("hd_icarus", "icarus", stream, rng.integers(-50, 50, size=20))
    simulate(plan, tmp_path, build_root, ready="random", seed=2, simulator="icarus")


def test_a_flipped_stream_bit_is_caught(tmp_path: Path, build_root: Path) -> None:
    """The check can fail: one flipped bit in a ROM word of the generated Verilog gives mismatches."""
    rng = np.random.default_rng(9)
    s = skewed_symbols(rng, 12, 200, 0.3)
    plan = plan_huffman_decoder("hd_tamper", "tamper", encode(s, build_code(np.bincount(s, minlength=12), 8), 16))
    rtl = tmp_path / "rtl"
    emit_decoder_rtl(plan, rtl)
    f = rtl / f"{plan.name}.sv"
    text = f.read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("rom[3] = "))
    flipped = line[:-2] + format(int(line[-2], 16) ^ 1, "x") + ";"
    f.write_text(text.replace(line, flipped))
    with pytest.raises(AssertionError, match="mismatching values"):
        simulate(plan, tmp_path, build_root, passes=1)


def test_lenet300_fc1_stream_one_symbol_per_cycle(tmp_path: Path, build_root: Path) -> None:
    """The real fc1 value stream of LeNet-300-100 (pruned to 8 %, shared to 5 bits, CSC with 4-bit
    relative indices) through its codebook: bit-exact over two passes at 1 symbol per cycle."""
    from hwgen.passes.huffman import compress_layer
    from hwgen.passes.share import share_tensor

    npz = ROOT / "models" / "pruned" / "lenet300_pruned.npz"
    if not npz.is_file():
        pytest.skip(f"{npz} is missing (made by benchmarks/prune_mnist.py)")
    with np.load(npz) as d:
        st = share_tensor(d["fc1.weight"], 5, weight_bits=8)
    layer = compress_layer(st.indices, st.codebook, 8, index_bits=4, max_len=16, word_bits=32)
    plan = plan_huffman_decoder("hd_fc1", "fc1 values", layer.values, st.codebook)
    assert plan.symbols > 20000 and layer.storage.value_gap < 0.03
    r = simulate(plan, tmp_path, build_root, ready="none")
    edges = np.asarray(r["edges"])
    rate = (edges.size - 1) / (edges[-1] - edges[0])
    print(f"fc1: {plan.symbols} symbols/pass, {rate:.4f} symbols/cycle, latency {plan.latency}")
    assert rate == 1.0
