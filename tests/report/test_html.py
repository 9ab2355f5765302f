"""OUT/report.html: a real build, a synthetic compression directory, escaping, and a headless Chromium load."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import LENET_CALIB, LENET_ONNX, make_mlp_onnx

from hwgen.build import build
from hwgen.cli import main
from hwgen.config import BuildConfig, config_from_dict
from hwgen.errors import HwgenError
from hwgen.ir.serialize import load_graph
from hwgen.passes.huffman import build_code
from hwgen.report.html import (
    code_length_histogram,
    histogram_bins,
    render_html,
    write_html_report,
)

EVIL = '<script>alert("x")</script>&$_{x}^$'  # HTML markup, and mathtext matplotlib would parse
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _section(page: str, ident: str) -> str:
    start = page.index(f'id="{ident}"')
    return page[start : page.index("</table>", start)]


@pytest.fixture(scope="module")
def lenet_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lenet") / "out"
    build(LENET_ONNX, out, BuildConfig(), calib=LENET_CALIB)
    return out


@pytest.fixture(scope="module")
def sparse_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MLP whose first layer runs on the sparse engine with Huffman-coded weights (html: report.html)."""
    d = tmp_path_factory.mktemp("sparse")
    model = d / "mlp.onnx"
    model.write_bytes(make_mlp_onnx([16, 12, 6], seed=3).SerializeToString())
    cfg = config_from_dict({"layers": {"fc0": {"engine": "sparse", "pes": 3, "weight_coding": "huffman"}}})
    build(model, d / "out", cfg, html=True)
    return d / "out"


def _compress_dir(root: Path, names: tuple[str, ...] = ("fc1", "fc2")) -> Path:
    """A compression output in the format of hwgen.compress's docstring (format_version 1)."""
    rng = np.random.default_rng(0)
    out = root / "compressed"
    (out / "stages").mkdir(parents=True)
    pruned = {
        n: np.where(np.abs(w) > 0.12, w, 0.0) for n, w in ((n, rng.standard_normal((16, 32)) * 0.1) for n in names)
    }
    shared = {n: np.round(w * 16) / 16 for n, w in pruned.items()}
    freqs = np.array([50, 20, 10, 5, 3, 1, 1])
    lengths = build_code(freqs, 8).lengths
    for k, (stage, ws) in enumerate(
        (("prune", pruned), ("finetune", pruned), ("share", shared), ("encode", shared)), 1
    ):
        arrays = {f"weights/{n}": w.astype(np.float32) for n, w in ws.items()}
        if stage == "encode":
            arrays |= {f"code_lengths/{n}": lengths for n in names}
        np.savez_compressed(out / "stages" / f"{k}_{stage}.npz", graph_json=np.array("{}"), **arrays)
    parts = {
        "codes": 1000,
        "indices": 400,
        "codebook": 48,
        "code_tables": 64,
        "pointers": 30,
        "padding": 12,
        "bias": 80,
    }
    doc = {
        "format_version": 1,
        "model": "models/tiny.onnx",
        "float_accuracy": 0.981,
        "stages": [
            {"index": 1, "kind": "prune", "accuracy": 0.975, "density": 0.23},
            {"index": 2, "kind": "finetune", "accuracy": 0.980, "density": 0.23},
            {"index": 3, "kind": "share", "accuracy": 0.979, "density": 0.23},
            {"index": 4, "kind": "encode", "accuracy": 0.979, "density": 0.23},
        ],
        "layers": [
            {
                "layer": n,
                "params": int(shared[n].size),
                "nonzeros": int(np.count_nonzero(shared[n])),
                "density": float(np.count_nonzero(shared[n]) / shared[n].size),
                "weight_format": "fixed<4,0>",
                "share_bits": 3,
                "codebook_size": 7,
                "storage_bits": {**parts, "codes": 1000 + i},
                "total_bits": sum(parts.values()) + i,
                "bits_per_weight": 2.7,
                "dense_entropy_bits_per_weight": 2.6,
                "value_huffman_bits_per_symbol": 2.2,
                "value_entropy_bits_per_symbol": 2.1,
                "value_symbol_counts": freqs.tolist(),
            }
            for i, n in enumerate(names)
        ],
        "totals": {"float32_bits": 32 * 1024, "total_bits": 3300, "compression_vs_float32": 9.93, "density": 0.23},
    }
    (out / "compress.json").write_text(json.dumps(doc))
    return out


# -- content -----------------------------------------------------------------------------------------
def test_build_report_tables_and_plots(lenet_build: Path) -> None:
    path = write_html_report(lenet_build)
    assert path == lenet_build / "report.html"
    page = path.read_text()
    rep = json.loads((lenet_build / "report.json").read_text())
    layers = _section(page, "build-layers")
    for lay in rep["layers"]:
        assert f"<code>{lay['onnx_name']}</code>" in layers
        assert f"{lay['macs']:,}" in layers
        assert html.escape(lay["weight_format"]) in layers
    # sparsity per layer, counted here from the saved quantized graph
    g = load_graph(lenet_build / "ir")
    for n in g.nodes:
        if n.op == "Dense":
            w = g.const(n.inputs[1])
            assert f"{100 * (1 - np.count_nonzero(w) / w.size):.1f}%" in layers
    acc = _section(page, "build-accuracy")
    assert f"{100 * rep['accuracy']['float']:.2f}%" in acc and f"{100 * rep['accuracy']['quantized']:.2f}%" in acc
    dense = sum(n.op == "Dense" for n in g.nodes)
    imgs = _images(page)
    assert len(imgs) == dense + 1  # one histogram per layer + sparsity
    assert all(b.startswith(PNG_MAGIC) for b in imgs)
    assert 'id="compress"' not in page  # no compress.json: no section
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing loaded from the network


def _cells(section: str, name: str) -> list[str]:
    """The cells of the row of layer `name` (tags stripped, entities decoded)."""
    row = re.search(rf"<tr><td class=\"l\"><code>{re.escape(name)}</code>.*?</tr>", section, re.S)
    assert row, f"no row for {name}"
    return [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row[0], re.S)]


def test_sparse_huffman_storage_section(sparse_build: Path) -> None:
    page = (sparse_build / "report.html").read_text()  # written by the build itself
    rep = json.loads((sparse_build / "report.json").read_text())
    sp = rep["layers"][0]["sparse"]
    st = sp["storage"]
    assert "<h3>Sparse engines: weight storage</h3>" in page
    table = _section(page, "build-sparse")
    heads = [html.unescape(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", table)]
    cells = dict(zip(heads, _cells(table, "fc0"), strict=True))
    assert cells["weight coding"] == "huffman" and cells["PEs"] == "3"
    # the breakdown: stream codes and fill, decoder table, indices, column ROM, padding, and the total
    for part, title in (
        ("huffman_codes", "Huffman codes (bit)"),
        ("stream_fill", "stream word fill (bit)"),
        ("decoder_tables", "decoder table (bit)"),
        ("indices", "relative indices (bit)"),
        ("padding", "padding zeros (bit)"),
        ("column_pointers", "column ROM (bit)"),
    ):
        assert cells[title] == f"{st['parts'][part]:,}"
    assert cells["total (bit)"] == f"{st['total_bits']:,}"
    assert cells["stream ROM (bit)"] == f"{st['stream_rom_bits']:,}"
    # Huffman bits per weight beside the entropy (which no code beats)
    bpw, ent = float(cells["Huffman bits / weight"]), float(cells["entropy bits / weight"])
    assert bpw == pytest.approx(st["huffman_bits_per_weight"], abs=5e-4) and ent <= bpw
    assert "fc1" not in table  # the dense layer has no sparse storage
    # stored bits of every layer by part, against float32 (report.json `compression`)
    stored = _section(page, "build-storage")
    comp = rep["compression"]
    assert _cells(stored, "fc1")[-1] == f"{comp['layers'][1]['total_bits']:,}"
    assert f"<th>{comp['stored_bits']:,}</th>" in stored and f"<th>{comp['fp32_bits']:,}</th>" in stored


def test_compress_report_sections(tmp_path: Path) -> None:
    out = _compress_dir(tmp_path)
    page = write_html_report(out).read_text()
    assert 'id="build"' not in page
    for heading in (
        "Accuracy per stage",
        "Storage breakdown",
        "Bits per weight and entropy",
        "Huffman code lengths",
        "Sparsity per layer",
        "Weights before and after pruning and quantization",
    ):
        assert f"<h3>{heading}</h3>" in page
    stages = _section(page, "compress-stages")
    assert "97.50%" in stages and "98.10%" in stages and "finetune" in stages
    layers = _section(page, "compress-layers")
    assert "1,634" in layers and "1,635" in layers  # each layer's total
    parts = re.findall(r"<th>(\w+) \(bit\)</th>", layers)
    assert parts == ["codes", "indices", "codebook", "code_tables", "pointers", "padding", "bias", "total"]
    assert "<h3>Weights before and after pruning and quantization</h3>" in page
    assert page.count('alt="weights of ') == 2  # one row of per-stage histograms per layer
    imgs = _images(page)
    assert len(imgs) == 5 + 2  # accuracy, breakdown, bits, code lengths, sparsity + one histogram per layer
    assert all(b.startswith(PNG_MAGIC) for b in imgs)
    assert render_html(out) == page  # deterministic, like everything else a build writes


def test_sections_without_data_are_omitted(tmp_path: Path) -> None:
    out = tmp_path / "c"
    out.mkdir()
    (out / "compress.json").write_text(
        json.dumps({"stages": [{"index": 1, "kind": "prune"}], "layers": [{"layer": "fc"}]})
    )
    page = write_html_report(out).read_text()
    for heading in ("Storage breakdown", "Huffman code lengths", "Bits per weight", "Weights before"):
        assert heading not in page
    assert "<img" not in page
    with pytest.raises(HwgenError, match=r"neither report\.json nor compress\.json"):
        write_html_report(tmp_path)


def test_names_are_escaped(tmp_path: Path) -> None:
    out = _compress_dir(tmp_path, names=(EVIL, "fc2"))
    page = write_html_report(out).read_text()
    assert "<script>" not in page
    assert (
        html.unescape(re.findall(r"<td class=\"l\"><code>(.*?)</code>", _section(page, "compress-layers"))[0]) == EVIL
    )


def test_node_names_from_onnx_are_escaped(tmp_path: Path) -> None:
    model = make_mlp_onnx([8, 6, 4], seed=3)
    model.graph.node[0].name = EVIL
    path = tmp_path / "evil.onnx"
    path.write_bytes(model.SerializeToString())
    build(path, tmp_path / "out", BuildConfig())
    page = write_html_report(tmp_path / "out").read_text()
    assert "<script>" not in page
    assert html.unescape(re.findall(r"<td class=\"l\"><code>(.*?)</code>", _section(page, "build-layers"))[0]) == EVIL


def test_code_length_histogram_matches_the_code() -> None:
    freqs = np.array([40, 0, 30, 15, 8, 4, 2, 1])
    code = build_code(freqs, 5)
    hist = code_length_histogram(code.lengths, freqs)
    assert hist[0] == 0 and hist.sum() == freqs.sum()
    assert (hist * np.arange(hist.size)).sum() == pytest.approx(code.mean_length(freqs) * freqs.sum())
    assert code_length_histogram(code.lengths).sum() == np.count_nonzero(freqs)  # distinct symbols


def test_histogram_bins_one_per_quantization_level() -> None:
    levels = np.array([-3, -1, 0, 2, 5]) / 8
    x = np.repeat(levels, [1, 4, 2, 7, 3])
    counts, _ = np.histogram(x, histogram_bins(x))
    assert counts.tolist() == [1, 0, 4, 2, 0, 7, 0, 0, 3]


def test_cli_report_html(tmp_path: Path) -> None:
    out = _compress_dir(tmp_path)
    assert main(["report", str(out)]) == 2  # a compress directory has no build summary to print
    assert not (out / "report.html").exists()
    assert main(["report", str(out), "--html"]) == 0
    assert (out / "report.html").is_file()


# -- the browser -------------------------------------------------------------------------------------
PROBE_HEAD = (
    "<script>window.__errors = []; window.addEventListener('error', function (e) {"
    " window.__errors.push(e.message || ('failed to load ' + (e.target && e.target.tagName))); }, true);</script>"
)
PROBE_BODY = (
    "<script>window.addEventListener('load', function () {"
    " var imgs = Array.from(document.images);"
    " var pre = document.createElement('pre'); pre.id = 'probe';"
    " pre.textContent = JSON.stringify({images: imgs.length,"
    " decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,"
    " errors: window.__errors});"
    " document.body.appendChild(pre); });</script>"
)


def _load_in_chromium(page: Path, tmp_path: Path) -> dict:
    """Open a probe copy of `page` (error listener + image count written into the DOM) and read it back."""
    text = page.read_text()
    probe = tmp_path / f"probe_{page.parent.name}.html"
    probe.write_text(text.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_BODY + "</body>", 1))
    res = subprocess.run(
        [
            shutil.which("chromium") or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"probe missing from the DOM: {res.stdout[-500:]}"
    return json.loads(html.unescape(m[1]))


# Chromium is installed by .ci/run (Debian package `chromium`), so CI always runs this; the skip is only
# for development machines without it.
@pytest.mark.chromium
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs headless Chromium (apt-get install chromium)")
def test_reports_load_in_headless_chromium(lenet_build: Path, sparse_build: Path, tmp_path: Path) -> None:
    pages = [
        write_html_report(lenet_build),
        write_html_report(sparse_build),
        write_html_report(_compress_dir(tmp_path, names=(EVIL, "fc2"))),
    ]
    for page in pages:
        probe = _load_in_chromium(page, tmp_path)
        assert probe["errors"] == []
        assert probe["images"] == page.read_text().count("<img ") > 0
        assert probe["decoded"] == probe["images"]
