"""OUT/report.html: the report users read, one self-contained file (tables + inline PNG plots).

Why one file: it is mailed, attached to issues and opened from CI artifacts, so it embeds every
plot as a base64 PNG and loads nothing from the network. It is rendered with jinja2 (autoescape
on: node names come from user ONNX files) from templates/report/report.html.j2, and plotted with
matplotlib's object API on the Agg canvas (no pyplot, no global backend state, no display).
Output is deterministic: no times, no paths, PNGs without a software tag.

Sections come from whatever the directory holds; a section with no data is left out.

From a build directory (`hwgen build`):
- report.json (hwgen.report.summary): the per-layer table, accuracy, totals; the sparse engines' weight
  memory by part, Huffman bits per weight beside the entropy (`layers[].sparse`); the stored bits of
  every layer by part against float32 (`compression`, hwgen.report.storage);
- ir/ (hwgen.ir.serialize): the quantized weights, for the histograms and sparsity per layer.

From a compression directory (`hwgen compress`; format in hwgen.compress's docstring, format_version 1):
- compress.json: "float_accuracy", "stages" [{index, kind, accuracy, density}], "layers" [{layer,
  params, nonzeros, density, weight_bits, share_bits, codebook_size, storage_bits {part: bits},
  total_bits, bits_per_weight, dense_entropy_bits_per_weight, value_huffman_bits_per_symbol,
  value_entropy_bits_per_symbol, value_symbol_counts}], "totals" {float32_bits, total_bits,
  compression_vs_float32};
- stages/<index>_<kind>.npz: "weights/<layer>" (the weights after each stage, for the histograms
  before/after pruning and quantization) and, after the encode stage, "code_lengths/<layer>".
Every field is optional: what is missing leaves its column or plot out.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from matplotlib.figure import Figure

from hwgen.errors import HwgenError, ModelFileError
from hwgen.hw.render import templates_dir

#: stacked-bar order of the storage parts (parts not listed follow in file order)
STORAGE_ORDER = ("codes", "indices", "codebook", "code_tables", "pointers", "padding", "bias")
#: at most this many histogram bins; a quantized layer with fewer levels gets one bin per level
MAX_BINS = 256
#: column order of the stored-bits tables (report.json: hwgen.report.storage and hwgen.hw.sparse.storage_parts)
STORED_PART_ORDER = (
    "dense_weights",
    "values",
    "huffman_codes",
    "stream_fill",
    "decoder_tables",
    "indices",
    "padding",
    "column_pointers",
    "biases",
)
STORED_PART_TITLES = {
    "dense_weights": "weight ROM",
    "values": "weight values",
    "huffman_codes": "Huffman codes",
    "stream_fill": "stream word fill",
    "decoder_tables": "decoder table",
    "indices": "relative indices",
    "padding": "padding zeros",
    "column_pointers": "column ROM",
    "biases": "biases",
}
#: per-layer estimates of hwgen.hw.resources shown in the layer table
RESOURCE_COLUMNS = ("multipliers", "memory_bits", "lut", "ff")
_STAGE_FILE = re.compile(r"^(\d+)_(.+)\.npz$")
_FIG_W = 7.5


# -- rendering helpers --------------------------------------------------------------------------------
@cache
def _environment() -> jinja2.Environment:
    """Own environment: HTML needs autoescape, the emitters' environment has it off (C++/Verilog)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "report")),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _png(fig: Figure) -> str:
    """The figure as a data: URI (PNG without metadata, so equal figures give equal bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_bins(values: np.ndarray) -> np.ndarray | int:
    """One bin per level of a quantized tensor (centred on the level), else MAX_BINS even bins."""
    levels = np.unique(values)
    if levels.size < 2:
        return 1
    step = float(np.diff(levels).min())
    n = round((levels[-1] - levels[0]) / step) + 1
    if n > MAX_BINS:
        return MAX_BINS
    return levels[0] - step / 2 + step * np.arange(n + 1)


def _text(name: str) -> str:
    """A name as literal matplotlib text (a `$` would otherwise start mathtext and may fail to parse)."""
    return name.replace("$", r"\$")


def _hist(ax: Any, values: np.ndarray, title: str) -> None:
    """Histogram of the non-zero weights (zeros of a pruned layer would dwarf every other bar)."""
    nz = values[values != 0]
    density = nz.size / max(1, values.size)
    if nz.size:
        ax.hist(nz, bins=histogram_bins(nz), color="#3b6ea5")
    ax.set_title(f"{_text(title)}\n{density:.1%} non-zero, {np.unique(nz).size} levels", fontsize=8)
    ax.tick_params(labelsize=7)


def _bar_labels(ax: Any, labels: list[str]) -> None:
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(
        [_text(s) for s in labels], rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center"
    )
    ax.tick_params(labelsize=7)


# -- build directory ---------------------------------------------------------------------------------
def _layer_weights(out_dir: Path) -> dict[str, np.ndarray]:
    """Quantized weights of every Dense/Conv, by report layer name (`onnx_name`), from OUT/ir."""
    if not (out_dir / "ir" / "graph.json").is_file():
        return {}
    from hwgen.ir.serialize import load_graph

    g = load_graph(out_dir / "ir")
    out = {}
    for n in g.nodes:
        if n.op in ("Dense", "Conv") and len(n.inputs) > 1 and g.value(n.inputs[1]).const is not None:
            out[n.onnx_name or n.name] = np.asarray(g.const(n.inputs[1]), dtype=np.float64)
    return out


def _shape_text(layer: dict[str, Any]) -> str:
    if "in_features" in layer:
        return f"{layer['in_features']} → {layer['out_features']}"
    if "in_shape" in layer:
        return f"{'×'.join(map(str, layer['in_shape']))} → {'×'.join(map(str, layer['out_shape']))}"
    return ""


def _layer_row(layer: dict[str, Any], weights: np.ndarray | None) -> dict[str, Any]:
    res = layer.get("resources") or {}
    params = layer.get("params") or 0
    if weights is not None:
        sparsity = 1.0 - np.count_nonzero(weights) / max(1, weights.size)
    else:
        sparsity = 1.0 - (layer.get("nonzeros") or 0) / params if params else None
    par = ""
    if layer.get("pe") is not None:
        par = f"{layer['pe']}×{layer.get('simd', 1)} ({layer.get('multipliers', 0)} mult, reuse {layer.get('reuse')})"
    return {
        "name": layer.get("onnx_name") or layer.get("name", ""),
        "op": layer.get("op", ""),
        "engine": layer.get("engine", ""),
        "shape": _shape_text(layer),
        "formats": [
            (k, layer[key])
            for k, key in (("in", "input_format"), ("w", "weight_format"), ("b", "bias_format"), ("out", "act_format"))
            if layer.get(key)
        ],
        "params": params,
        "weight_bits": layer.get("weight_bits") or 0,
        "sparsity": sparsity,
        "macs": layer.get("macs") or 0,
        "parallelism": par,
        "latency": layer.get("latency_cycles"),
        "ii": layer.get("ii_cycles"),
        "resources": {k: res[k] for k in RESOURCE_COLUMNS if res.get(k) is not None},
    }


def _ordered_parts(dicts: list[dict[str, Any]]) -> list[str]:
    seen = list(dict.fromkeys(k for d in dicts for k in d))
    return [k for k in STORED_PART_ORDER if k in seen] + [k for k in seen if k not in STORED_PART_ORDER]


def _sparse_rows(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sparse-engine layers: weight coding, CSC shape and the weight memory by part (report.json `sparse`)."""
    rows = []
    for lay in layers:
        sp = lay.get("sparse")
        if not isinstance(sp, dict):
            continue
        st = sp.get("storage") or {}
        rows.append(
            {
                "name": lay.get("onnx_name") or lay.get("name", ""),
                "coding": sp.get("weight_coding") or st.get("weight_coding") or "plain",
                "pes": sp.get("pes"),
                "index_bits": sp.get("index_bits"),
                "density": sp.get("density"),
                "padding_entries": sp.get("padding_entries"),
                "parts": st.get("parts") or {},
                "total": st.get("total_bits"),
                "stream_rom": st.get("stream_rom_bits"),
                "bits_per_weight": st.get("huffman_bits_per_weight"),
                "entropy": st.get("entropy_bits_per_weight"),
                "max_code_length": st.get("max_code_length"),
                "symbols": st.get("symbols"),
            }
        )
    return rows


def _stored(compression: dict[str, Any]) -> dict[str, Any] | None:
    """report.json `compression` per layer and part (None for reports written before it had them)."""
    layers = [lay for lay in compression.get("layers") or [] if isinstance(lay, dict)]
    if not layers:
        return None
    return {
        "layers": layers,
        "parts": _ordered_parts([lay.get("parts_bits") or {} for lay in layers]),
        "totals": compression.get("parts_bits") or {},
        "stored_bits": compression.get("stored_bits"),
        "fp32_bits": compression.get("fp32_bits"),
    }


def _build_section(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "report.json"
    if not path.is_file():
        return None
    try:
        rep = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: cannot read the build report ({e}); rerun `hwgen build`") from e
    weights = _layer_weights(out_dir)
    layers = rep.get("layers") or []
    rows = [_layer_row(lay, weights.get(lay.get("onnx_name") or lay.get("name", ""))) for lay in layers]
    hw = rep.get("hardware") or {}
    sparse = _sparse_rows(layers)
    synth = {k: v for k, v in (hw.get("resources") or {}).items() if v is not None}
    return {
        "model": rep.get("model") or {},
        "layers": rows,
        "resource_columns": [k for k in RESOURCE_COLUMNS if any(k in r["resources"] for r in rows)],
        "accuracy": rep.get("accuracy"),
        "compression": rep.get("compression") or {},
        "stored": _stored(rep.get("compression") or {}),
        "sparse": sparse,
        "sparse_parts": _ordered_parts([r["parts"] for r in sparse]),
        "part_titles": STORED_PART_TITLES,
        "hardware": {
            "latency_cycles": hw.get("latency_cycles"),
            "ii_cycles": hw.get("ii_cycles"),
            "multipliers": hw.get("multipliers"),
            "synth": synth,
            "synth_source": hw.get("resources_source"),
        },
        "verification": {k: v for k, v in (rep.get("verification") or {}).items() if v is not None},
        "histograms": _weight_histograms(weights),
        "sparsity_plot": _sparsity_plot({n: 1 - np.count_nonzero(w) / max(1, w.size) for n, w in weights.items()}),
    }


def _weight_histograms(weights: dict[str, np.ndarray]) -> list[dict[str, str]]:
    out = []
    for name, w in weights.items():
        fig = Figure(figsize=(_FIG_W / 2, 2.2))
        _hist(fig.subplots(), w.reshape(-1), f"{name}: {w.size:,} weights")
        out.append({"name": name, "img": _png(fig)})
    return out


def _sparsity_plot(sparsity: dict[str, float]) -> str | None:
    if not sparsity:
        return None
    fig = Figure(figsize=(_FIG_W, 2.4))
    ax = fig.subplots()
    names = list(sparsity)
    ax.bar(range(len(names)), [100 * sparsity[n] for n in names], color="#a5573b")
    ax.set_ylabel("zero weights (%)", fontsize=8)
    ax.set_ylim(0, 100)
    _bar_labels(ax, names)
    return _png(fig)


# -- compression directory ---------------------------------------------------------------------------
def _stage_files(out_dir: Path) -> list[tuple[int, str, Path]]:
    d = out_dir / "stages"
    if not d.is_dir():
        return []
    found = [(int(m[1]), m[2], p) for p in d.iterdir() if (m := _STAGE_FILE.match(p.name))]
    return sorted(found)


def _load_stages(out_dir: Path) -> list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """(label, weights by layer, code lengths by layer) of every checkpoint, in chain order."""
    stages = []
    for k, name, path in _stage_files(out_dir):
        try:
            with np.load(path, allow_pickle=False) as z:
                weights = {
                    f[len("weights/") :]: np.asarray(z[f], np.float64) for f in z.files if f.startswith("weights/")
                }
                lengths = {
                    f[len("code_lengths/") :]: np.asarray(z[f]) for f in z.files if f.startswith("code_lengths/")
                }
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ModelFileError(f"{path}: cannot read the stage checkpoint ({e}); rerun `hwgen compress`") from e
        stages.append((f"{k}: {name}", weights, lengths))
    return stages


def _stage_histograms(stages: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]]) -> list[dict[str, str]]:
    """Per layer, one panel per checkpoint: the weights before/after pruning and quantization."""
    layers = list(dict.fromkeys(name for _, weights, _ in stages for name in weights))
    out = []
    for layer in layers:
        panels = [(label, weights[layer]) for label, weights, _ in stages if layer in weights]
        fig = Figure(figsize=(_FIG_W, 2.2))
        axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True))
        for ax, (label, w) in zip(axes, panels, strict=True):
            _hist(ax, w.reshape(-1), label)
        out.append({"name": layer, "img": _png(fig)})
    return out


def _storage_parts(layers: list[dict[str, Any]]) -> list[str]:
    seen = [k for lay in layers for k in (lay.get("storage_bits") or {})]
    return [k for k in STORAGE_ORDER if k in seen] + list(dict.fromkeys(k for k in seen if k not in STORAGE_ORDER))


def _breakdown_plot(layers: list[dict[str, Any]], parts: list[str]) -> str | None:
    if not parts:
        return None
    fig = Figure(figsize=(_FIG_W, 2.8))
    ax = fig.subplots()
    names = [lay["layer"] for lay in layers]
    bottom = np.zeros(len(layers))
    for part in parts:
        kbits = np.array([(lay.get("storage_bits") or {}).get(part, 0) / 1000 for lay in layers], dtype=np.float64)
        ax.bar(range(len(names)), kbits, bottom=bottom, label=part)
        bottom += kbits
    ax.set_ylabel("storage (kbit)", fontsize=8)
    ax.legend(fontsize=7)
    _bar_labels(ax, names)
    return _png(fig)


#: (stored, entropy) pairs of compress.json's per-layer figures, plotted side by side
BITS_PAIRS = (
    ("bits_per_weight", "dense_entropy_bits_per_weight", "per weight"),
    ("value_huffman_bits_per_symbol", "value_entropy_bits_per_symbol", "per value symbol"),
)


def _bits_plot(layers: list[dict[str, Any]]) -> str | None:
    """Stored bits next to the Shannon entropy of the same symbols, per layer."""
    series = [
        (f"{label}: {kind}", [lay.get(key) or 0.0 for lay in layers])
        for stored, entropy, label in BITS_PAIRS
        for key, kind in ((stored, "stored"), (entropy, "entropy"))
        if any(lay.get(stored) is not None for lay in layers)
    ]
    if not series:
        return None
    fig = Figure(figsize=(_FIG_W, 2.6))
    ax = fig.subplots()
    width = 0.8 / len(series)
    for i, (label, ys) in enumerate(series):
        ax.bar(np.arange(len(layers)) - 0.4 + width * (i + 0.5), ys, width, label=label)
    ax.set_ylabel("bits", fontsize=8)
    ax.legend(fontsize=7)
    _bar_labels(ax, [lay["layer"] for lay in layers])
    return _png(fig)


def code_length_histogram(lengths: Any, counts: Any | None = None) -> np.ndarray:
    """hist[l] = symbols coded with l bits (weighted by `counts`, else distinct symbols); hist[0] = 0."""
    lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
    w = np.ones(lens.size) if counts is None else np.asarray(counts, dtype=np.float64).reshape(-1)
    if w.size != lens.size:
        raise ModelFileError(f"compress.json: {lens.size} code lengths but {w.size} symbol counts")
    used = lens > 0
    return np.bincount(lens[used], weights=w[used], minlength=int(lens.max(initial=0)) + 1)


def _code_length_plot(lengths: dict[str, np.ndarray], counts: dict[str, Any]) -> str | None:
    """Per layer: how many coded symbols (distinct symbols, without counts) get each code length."""
    if not lengths:
        return None
    fig = Figure(figsize=(_FIG_W, 2.6))
    ax = fig.subplots()
    width = 0.8 / len(lengths)
    weighted = all(counts.get(name) for name in lengths)
    for i, (name, lens) in enumerate(lengths.items()):
        hist = code_length_histogram(lens, counts[name] if weighted else None)
        ls = np.arange(hist.size)
        ax.bar(ls[1:] - 0.4 + width * (i + 0.5), hist[1:], width, label=_text(name))
    ax.set_xlabel("code length (bits)", fontsize=8)
    ax.set_ylabel("coded symbols" if weighted else "distinct symbols", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return _png(fig)


def _stage_name(stage: dict[str, Any]) -> str:
    return f"{stage.get('index', '')} {stage.get('kind', '')}".strip()


def _accuracy_plot(stages: list[dict[str, Any]], baseline: float | None) -> str | None:
    pts = [(_stage_name(s), s["accuracy"]) for s in stages if s.get("accuracy") is not None]
    if not pts:
        return None
    fig = Figure(figsize=(_FIG_W, 2.4))
    ax = fig.subplots()
    ax.plot(range(len(pts)), [100 * a for _, a in pts], marker="o")
    if baseline is not None:
        ax.axhline(100 * baseline, color="grey", linestyle="--", label=f"float baseline {100 * baseline:.2f}%")
        ax.legend(fontsize=7)
    ax.set_ylabel("top-1 (%)", fontsize=8)
    _bar_labels(ax, [n for n, _ in pts])
    return _png(fig)


def _compress_section(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "compress.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: cannot read the compression report ({e}); rerun `hwgen compress`") from e
    layers = [lay for lay in doc.get("layers") or [] if isinstance(lay, dict) and "layer" in lay]
    stages = [s for s in doc.get("stages") or [] if isinstance(s, dict)]
    baseline = doc.get("float_accuracy")
    parts = _storage_parts(layers)
    checkpoints = _load_stages(out_dir)
    lengths = {name: lens for _, _, by_layer in checkpoints for name, lens in by_layer.items()}  # last stage wins
    density = {lay["layer"]: 1 - lay["density"] for lay in layers if lay.get("density") is not None}
    model = doc.get("model")
    return {
        "model": model.get("name") if isinstance(model, dict) else Path(str(model)).stem if model else None,
        "baseline": baseline,
        "final_accuracy": doc.get("final_accuracy"),
        "stages": stages,
        "layers": layers,
        "storage_parts": parts,
        "totals": doc.get("totals") or {},
        "accuracy_plot": _accuracy_plot(stages, baseline),
        "breakdown_plot": _breakdown_plot(layers, parts),
        "bits_plot": _bits_plot(layers),
        "code_length_plot": _code_length_plot(
            lengths, {lay["layer"]: lay.get("value_symbol_counts") for lay in layers}
        ),
        "sparsity_plot": _sparsity_plot(density),
        "histograms": _stage_histograms(checkpoints),
    }


# -- entry points ------------------------------------------------------------------------------------
def render_html(out_dir: Path) -> str:
    """The report of `out_dir` as HTML text (see the module docstring for what is read)."""
    build = _build_section(out_dir)
    compress = _compress_section(out_dir)
    if build is None and compress is None:
        raise HwgenError(
            f"{out_dir}: neither report.json nor compress.json found; pass the OUT of `hwgen build` or `hwgen compress`"
        )
    title = ((build or {}).get("model") or {}).get("name") or (compress or {}).get("model") or out_dir.name
    return _environment().get_template("report.html.j2").render(title=title, build=build, compress=compress)


def write_html_report(out_dir: Path) -> Path:
    """Write OUT/report.html (atomically: a reader never sees half a file) and return its path."""
    out_dir = Path(out_dir)
    html = render_html(out_dir)
    path = out_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


def run_from_args(args: argparse.Namespace) -> Path | None:
    """What `hwgen report OUT --html` does: write the HTML report if asked; its path, else None."""
    return write_html_report(Path(args.out)) if getattr(args, "html", False) else None


__all__ = [
    "code_length_histogram",
    "histogram_bins",
    "render_html",
    "run_from_args",
    "write_html_report",
]
