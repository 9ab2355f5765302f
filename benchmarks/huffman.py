"""Deep Compression's lossless stage on LeNet-300-100: entropy, Huffman bits, storage; the decoder's hardware.

1. Per layer of LeNet-300-100, magnitude-pruned (models/pruned/lenet300_pruned.npz: 8 / 9 / 26 %
   of fc1 / fc2 / fc3 kept, fine-tuned; without it, the zoo model pruned here to 8 % per layer by
   a magnitude threshold) and k-means shared to 5 and to 8 bits (8-bit fixed-point codebook):
   CSC with relative indices + padding zeros, one canonical Huffman code (max 16 bits) for the
   value symbols and one for the relative indices. Reported: the Shannon entropy of the value
   symbols, Huffman bits per symbol and the gap (tables excluded), relative-index bits, table,
   codebook and pointer bits, bits per weight and total compression against float32 weights.
   For contrast: Huffman over the dense symbol matrix (zeros as a symbol, no relative indices).
2. The Huffman decoder of the fc1 value stream (5 bits, through the codebook): RTL-measured
   symbols per cycle over two passes with a free sink (Verilator), and Yosys synth_xilinx
   resources (LUT / FF / BRAM).

    .venv/bin/python benchmarks/huffman.py [--index-bits 4] [--max-len 16] [--no-yosys] [--no-rtl]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import ROOT, provenance, save
from hwgen.passes.huffman import build_code, compress_layer, encode, entropy_bits
from hwgen.passes.share import share_tensor

PRUNED = ROOT / "models" / "pruned" / "lenet300_pruned.npz"
LENET = ROOT / "models" / "lenet300" / "lenet300.onnx"
LAYERS = ("fc1", "fc2", "fc3")
CODEBOOK_BITS = 8
WORD_BITS = 32


def load_weights() -> tuple[dict[str, np.ndarray], str]:
    """The pruned float tensors (fcN.weight [out, in], fcN.bias) and where they came from."""
    if PRUNED.is_file():
        with np.load(PRUNED) as d:
            return {k: np.asarray(d[k], dtype=np.float64) for k in d.files if k != "__base__"}, PRUNED.name
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(LENET))
    out = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    for n in LAYERS:
        w = out[f"{n}.weight"]
        out[f"{n}.weight"] = np.where(np.abs(w) > np.quantile(np.abs(w), 0.92), w, 0.0)
    return out, f"{LENET.name}, magnitude-pruned here to 8 % per layer (no fine-tuning)"


def top1(tensors: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """MNIST top-1 of the zoo LeNet-300-100 ONNX model with these tensors, in onnxruntime."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(LENET))
    for init in model.graph.initializer:
        if init.name in tensors:
            init.CopyFrom(numpy_helper.from_array(np.asarray(tensors[init.name], dtype=np.float32), init.name))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float((logits.argmax(axis=1) == y).mean())


def layer_row(name: str, w: np.ndarray, bits: int, index_bits: int, max_len: int) -> tuple[dict, object, object]:
    st = share_tensor(w, bits, weight_bits=CODEBOOK_BITS)
    layer = compress_layer(st.indices, st.codebook, CODEBOOK_BITS, index_bits=index_bits, max_len=max_len)
    s = layer.storage
    dense_code = build_code(np.bincount(st.indices.reshape(-1), minlength=st.symbols), max_len)
    dense_bits = encode(st.indices.reshape(-1), dense_code, WORD_BITS).payload_bits
    row = {
        "layer": name,
        "bits": bits,
        "weights": s.weights,
        "nonzeros": s.nonzeros,
        "density": s.nonzeros / s.weights,
        "symbols": st.symbols,
        "entries": s.entries,
        "padding_entries": s.padding_entries,
        "value_entropy": s.value_entropy_bits / s.entries,
        "value_huffman": s.value_bits / s.entries,
        "value_gap": s.value_gap,
        "index_entropy": s.index_entropy_bits / s.entries,
        "index_huffman": s.index_bits / s.entries,
        "value_bits": s.value_bits,
        "index_bits": s.index_bits,
        "fill_bits": s.fill_bits,
        "table_bits": s.table_bits,
        "codebook_bits": s.codebook_bits,
        "pointer_bits": s.pointer_bits,
        "total_bits": s.total_bits,
        "bits_per_weight": s.bits_per_weight,
        "compression": s.compression_vs_float32,
        "dense_huffman_bits_per_weight": dense_bits / s.weights,
        "dense_entropy_bits_per_weight": entropy_bits(np.bincount(st.indices.reshape(-1))),
    }
    return row, st, layer


def decoder_figures(st, layer, *, rtl: bool, yosys: bool, work: Path) -> dict:
    from hwgen.hw.huffman import emit_decoder_rtl, plan_huffman_decoder

    plan = plan_huffman_decoder("fc1_values", "fc1 value symbols (5-bit sharing)", layer.values, st.codebook)
    out: dict = {
        "symbols_per_pass": plan.symbols,
        "rom_words": plan.n_words,
        "word_bits": plan.word_bits,
        "max_len": plan.max_len,
        "latency": plan.latency,
        "table_bits": plan.table_bits(),
    }
    if rtl:
        sys.path.insert(0, str(ROOT / "rtl_tests"))
        from test_huffman_rtl import simulate  # the cocotb bench and its checks (bit- and cycle-exact)

        t = time.perf_counter()
        r = simulate(plan, work / "rtl_run", work / "builds", passes=2, ready="none")
        edges = np.asarray(r["edges"])
        out["rtl_symbols_per_cycle"] = (edges.size - 1) / float(edges[-1] - edges[0])
        out["rtl_symbols"] = int(edges.size)
        out["rtl_first_edge"] = int(edges[0])
        out["rtl_seconds"] = round(time.perf_counter() - t, 1)
    if yosys:
        from hwgen.hw.yosys_synth import synth_yosys

        rtl_dir = work / "yosys_rtl"
        top = emit_decoder_rtl(plan, rtl_dir)
        res = synth_yosys(rtl_dir, top, work / "yosys")
        out["yosys"] = {k: res[k] for k in ("LUT", "FF", "DSP", "BRAM", "LUTRAM", "seconds")}
    return out


def markdown(doc: dict) -> str:
    lines = [
        "# Huffman coding of LeNet-300-100 (Deep Compression's lossless stage)",
        "",
        f"Weights: {doc['source']}. Codebook entries: fixed point, {CODEBOOK_BITS} bits. Relative indices "
        f"{doc['index_bits']} bits (padding zeros), Huffman codes of at most {doc['max_len']} bits, "
        f"{WORD_BITS}-bit stream words. Bits per weight and compression count every stored bit "
        "(value and index streams, word fill, code tables, codebook, column pointers) over the dense "
        "weight count; biases excluded. Git {git}.".format(git=doc["provenance"]["git"]),
        "",
        "| layer | share bits | density | symbols | entries (padding) | value entropy | Huffman bits/symbol | gap | "
        "index entropy / Huffman | table bits | codebook bits | pointer bits | bits/weight | x vs float32 | "
        "dense Huffman bits/weight |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["layers"]:
        lines.append(
            f"| {r['layer']} | {r['bits']} | {r['density']:.1%} | {r['symbols']} | {r['entries']} "
            f"({r['padding_entries']}) | {r['value_entropy']:.3f} | {r['value_huffman']:.3f} | "
            f"{r['value_gap']:+.2%} | {r['index_entropy']:.3f} / {r['index_huffman']:.3f} | {r['table_bits']} | "
            f"{r['codebook_bits']} | {r['pointer_bits']} | {r['bits_per_weight']:.3f} | {r['compression']:.1f} | "
            f"{r['dense_huffman_bits_per_weight']:.3f} |"
        )
    lines += [
        "",
        f"Whole network (weights; MNIST top-1 over {doc['test_images']} test images in onnxruntime: float zoo model "
        f"{doc['top1_float']:.2%}, pruned {doc['top1_pruned']:.2%}; shared without centroid fine-tuning):",
        "",
        "| share bits | weights | total bits | bits/weight | x vs float32 | top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for t in doc["totals"]:
        lines.append(
            f"| {t['bits']} | {t['weights']} | {t['total_bits']} | {t['bits_per_weight']:.3f} | "
            f"{t['compression']:.1f} | {t['top1']:.2%} |"
        )
    d = doc.get("decoder")
    if d:
        lines += [
            "",
            f"**Decoder** (fc1 value stream, 5-bit sharing, through the codebook): {d['symbols_per_pass']} symbols "
            f"per pass in {d['rom_words']} words of {d['word_bits']} bits, codes up to {d['max_len']} bits, "
            f"latency {d['latency']} cycles, {d['table_bits']} bits of decoder tables.",
        ]
        if "rtl_symbols_per_cycle" in d:
            lines.append(
                f"RTL (Verilator, free sink, 2 passes, {d['rtl_symbols']} symbols): "
                f"**{d['rtl_symbols_per_cycle']:.4f} symbols/cycle**, bit-exact vs the Python decoder."
            )
        if "yosys" in d:
            y = d["yosys"]
            lines.append(
                f"Yosys synth_xilinx: {y['LUT']} LUT, {y['FF']} FF, {y['BRAM']} BRAM36, {y['LUTRAM']} LUTRAM, "
                f"{y['DSP']} DSP ({y['seconds']:.0f} s)."
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index-bits", type=int, default=6, help="relative index bits (EIE: 4; 6 stores least here)")
    ap.add_argument("--max-len", type=int, default=16)
    ap.add_argument("--no-rtl", action="store_true")
    ap.add_argument("--no-yosys", action="store_true")
    args = ap.parse_args()
    from hwgen.datasets import load_mnist

    tensors, source = load_weights()
    x, y = load_mnist("test")
    base = top1({}, x, y)
    pruned = top1(tensors, x, y)
    rows, totals = [], []
    fc1 = None
    for bits in (5, 8):
        tot_bits = tot_w = 0
        shared = dict(tensors)
        for name in LAYERS:
            row, st, layer = layer_row(name, tensors[f"{name}.weight"], bits, args.index_bits, args.max_len)
            rows.append(row)
            shared[f"{name}.weight"] = st.values()
            tot_bits += row["total_bits"]
            tot_w += row["weights"]
            if name == "fc1" and bits == 5:
                fc1 = (st, layer)
        totals.append(
            {
                "bits": bits,
                "weights": tot_w,
                "total_bits": tot_bits,
                "bits_per_weight": tot_bits / tot_w,
                "compression": 32 * tot_w / tot_bits,
                "top1": top1(shared, x, y),
            }
        )
    doc = {
        "provenance": provenance(seed=None),
        "source": source,
        "index_bits": args.index_bits,
        "max_len": args.max_len,
        "layers": rows,
        "totals": totals,
        "top1_float": base,
        "top1_pruned": pruned,
        "test_images": len(y),
    }
    if not (args.no_rtl and args.no_yosys):
        assert fc1 is not None
        with tempfile.TemporaryDirectory(prefix="hwgen_huffman_") as tmp:
            doc["decoder"] = decoder_figures(*fc1, rtl=not args.no_rtl, yosys=not args.no_yosys, work=Path(tmp))
    save("huffman", doc, markdown(doc))


if __name__ == "__main__":
    main()
