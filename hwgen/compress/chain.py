"""Run a recipe's stages on a model, checkpointing each stage so an interrupted run resumes.

OUT/state.json lists the finished stages with a key each (a hash of the model, the data, the
recipe settings and every stage up to it). Re-running the same command loads the last finished
stage whose key still matches and runs only what follows; a changed stage invalidates itself and
every later stage. A stage's checkpoint is written to a temporary file and renamed, and state.json
is rewritten after it, so an interruption at any point leaves either the stage finished or not.
File formats: see the hwgen.compress package docstring.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.compress import stages as S
from hwgen.compress.onnx_export import export_qdq
from hwgen.compress.recipe import EncodeStage, Recipe
from hwgen.compress.storage import code_lengths, encode_graph, layer_doc, totals
from hwgen.errors import DataError, HwgenError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.ir.serialize import load_graph, save_graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.sim import exact

STATE_VERSION = 1
Log = Callable[[str], None]


# -- data -------------------------------------------------------------------------------------
def load_chain_data(path: Path, graph: Graph, recipe: Recipe) -> S.Data:
    """x/y (+ optional x_val/y_val, else the last val_fraction of x/y) from an npz, checked against the model."""
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    for k in ("x", "y"):
        if k not in arrays:
            raise DataError(f"{path}: no array named {k!r} (found {sorted(arrays)}); save inputs as x=, labels as y=")
    shape = graph.value(graph.inputs[0]).type.shape

    def checked(xk: str, yk: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = arrays[xk], arrays[yk].reshape(-1)
        if x.shape[1:] != tuple(shape):
            want = ", ".join(map(str, shape))
            raise DataError(f"{path}: {xk} has shape {list(x.shape)}; the model takes [N, {want}]")
        if len(x) != len(y) or len(x) == 0:
            raise DataError(f"{path}: {xk} has {len(x)} samples and {yk} {len(y)} labels")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: {yk} must hold integer class labels, got {y.dtype}")
        return x.astype(np.float32), y.astype(np.int64)

    x, y = checked("x", "y")
    if "x_val" in arrays and "y_val" in arrays:
        xv, yv = checked("x_val", "y_val")
    else:
        n_val = round(len(x) * recipe.val_fraction)
        if n_val < 1 or n_val >= len(x):
            raise DataError(f"{path}: no x_val/y_val and val_fraction {recipe.val_fraction} leaves no split")
        x, xv, y, yv = x[:-n_val], x[-n_val:], y[:-n_val], y[-n_val:]
    return S.Data(x, y, xv, yv, x[: recipe.calib_samples].astype(np.float64))


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- checkpoints ------------------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def save_checkpoint(path: Path, g: Graph, extra: dict[str, np.ndarray]) -> None:
    """One npz: the IR graph (graph.json text + its constants) and float arrays for the report."""
    with tempfile.TemporaryDirectory() as tmp:
        save_graph(g, Path(tmp))
        doc = (Path(tmp) / "graph.json").read_text()
        with np.load(Path(tmp) / "constants.npz") as c:
            consts = {f"const/{k}": c[k] for k in c.files}
    arrays: dict[str, Any] = {"graph_json": np.array(doc), **consts, **extra}
    for n in g.nodes:
        if n.op in S.MAC_OPS:
            arrays[f"weights/{n.name}"] = np.asarray(g.const(n.inputs[1]), np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_write(path, buf.getvalue())


def load_checkpoint(path: Path) -> Graph:
    with np.load(path, allow_pickle=False) as f, tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "graph.json").write_text(str(f["graph_json"]))
        np.savez(Path(tmp) / "constants.npz", **{k[len("const/") :]: f[k] for k in f.files if k.startswith("const/")})
        return load_graph(Path(tmp))


def _read_state(out: Path) -> dict[str, Any]:
    p = out / "state.json"
    if not p.is_file():
        return {"version": STATE_VERSION, "stages": []}
    try:
        st = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise HwgenError(f"{p}: unreadable ({e}); rerun with --force to start over") from None
    if st.get("version") != STATE_VERSION:
        raise HwgenError(f"{p}: state version {st.get('version')} is not {STATE_VERSION}; rerun with --force")
    return st


def _write_state(out: Path, state: dict[str, Any]) -> None:
    _atomic_write(out / "state.json", (json.dumps(state, indent=1, sort_keys=True) + "\n").encode())


# -- the chain --------------------------------------------------------------------------------
def compress(
    model: Path,
    recipe: Recipe,
    data_path: Path,
    out: Path,
    *,
    force: bool = False,
    progress: bool = True,
    log: Log = print,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) the chain; returns the compress.json document. `stop_after` runs only k stages (tests)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "stages").mkdir(exist_ok=True)
    g0 = canonicalize(import_onnx(model, name=model.stem)).graph
    data = load_chain_data(data_path, g0, recipe)
    keys = recipe.stage_keys(_sha(model) + _sha(data_path))
    state = {"version": STATE_VERSION, "stages": []} if force else _read_state(out)
    done = state["stages"]
    keep = 0
    while keep < len(done) and keep < len(keys) and done[keep]["key"] == keys[keep]:
        if not (out / "stages" / done[keep]["file"]).is_file():
            break
        keep += 1
    if keep < len(done):
        log(f"stages {keep + 1}..{len(done)} are stale (recipe, model or data changed): rerunning them")
    state = {"version": STATE_VERSION, "recipe": recipe.path, "model": str(model), "stages": done[:keep]}
    _write_state(out, state)
    base_acc = S.accuracy(g0, data.x_val, data.y_val)
    g = load_checkpoint(out / "stages" / done[keep - 1]["file"]) if keep else g0
    encoded = None
    for k, (st, key) in enumerate(zip(recipe.stages, keys, strict=True)):
        if stop_after is not None and k >= stop_after:
            break
        where = f"{recipe.path}: [[stage]] #{k + 1} ({st.kind})"
        fname = f"{k + 1}_{st.kind}.npz"
        if k < keep:
            log(f"[{k + 1}/{len(keys)}] {st.kind}: done earlier ({done[k]['accuracy']:.4f}), skipped")
            continue
        log(f"[{k + 1}/{len(keys)}] {st.kind}")
        t0 = time.perf_counter()
        extra: dict[str, np.ndarray] = {}
        if isinstance(st, EncodeStage):
            encoded = encode_graph(g, st)
            for e in encoded:
                extra[f"code_lengths/{e.node}"] = code_lengths(e, st.max_code_length)
            info: dict[str, Any] = {"layers": [layer_doc(e) for e in encoded]}
        else:
            res = S.RUNNERS[st.kind](g, st, data, recipe, where, progress)
            g, info = res.graph, res.info
        acc = S.accuracy(g, data.x_val, data.y_val)
        save_checkpoint(out / "stages" / fname, g, extra)
        entry = {
            "index": k + 1,
            "kind": st.kind,
            "key": key,
            "file": fname,
            "accuracy": acc,
            "seconds": round(time.perf_counter() - t0, 2),
            "density": _density(g),
            "quantized": S.is_quantized(g),
            "shared": S.is_shared(g),
            "info": S._jsonable(info),
        }
        state["stages"].append(entry)
        _write_state(out, state)
        log(f"    accuracy {acc:.4f}  density {entry['density']:.4f}  ({entry['seconds']:.1f} s)")
    if stop_after is not None and stop_after < len(recipe.stages):
        return {}
    return finish(out, recipe, g, g0, data, base_acc, state, log)


def _density(g: Graph) -> float:
    ws = [g.const(n.inputs[1]) for n in g.nodes if n.op in S.MAC_OPS]
    total = sum(w.size for w in ws)
    return float(sum(np.count_nonzero(w) for w in ws) / total) if total else 0.0


def finish(
    out: Path, recipe: Recipe, g: Graph, g0: Graph, data: S.Data, base_acc: float, state: dict[str, Any], log: Log
) -> dict[str, Any]:
    """Write compress.json, the QDQ ONNX model, the golden-model check and hwgen.toml."""
    enc = next((s for s in recipe.stages if isinstance(s, EncodeStage)), EncodeStage())
    layers = next((s["info"]["layers"] for s in state["stages"] if s["kind"] == "encode"), None)
    if layers is None and (S.is_quantized(g) or S.is_shared(g)):
        layers = [layer_doc(e) for e in encode_graph(g, enc)]
    doc: dict[str, Any] = {
        "format_version": 1,
        "recipe": {
            "path": recipe.path,
            "name": recipe.name,
            **recipe.settings(),
            "stages": [asdict(s) for s in recipe.stages],
        },
        "model": state["model"],
        "validation_samples": len(data.y_val),
        "float_accuracy": base_acc,
        "stages": [
            {k: s[k] for k in ("index", "kind", "file", "accuracy", "seconds", "density", "quantized", "shared")}
            for s in state["stages"]
        ],
        "final_accuracy": state["stages"][-1]["accuracy"] if state["stages"] else base_acc,
        "layers": layers or [],
        "totals": totals(layers) if layers else None,
    }
    if S.is_quantized(g):
        n = min(256, len(data.x_val))
        xs = data.x_val[:n].astype(np.float64)
        gold = exact.decode_outputs(g, exact.run(g, xs))[g.outputs[0]].reshape(n, -1)
        doc["golden_accuracy_first_samples"] = {
            "samples": n,
            "accuracy": float((gold.argmax(1) == data.y_val[:n]).mean()),
        }
        try:
            onnx_path = export_qdq(g, out / "compressed.onnx", model_name=recipe.name)
            doc["onnx"] = onnx_path.name
            (out / "hwgen.toml").write_text(_build_toml(recipe, g))
            doc["build_config"] = "hwgen.toml"
        except HwgenError as e:
            log(f"no ONNX export: {e}")
            doc["onnx_error"] = str(e)
        save_graph(g, out / "ir")
    (out / "compress.json").write_text(json.dumps(S._jsonable(doc), indent=1, sort_keys=True) + "\n")
    t = doc["totals"]
    if t:
        log(
            f"float {base_acc:.4f} -> compressed {doc['final_accuracy']:.4f}; storage {t['total_bits']} bits, "
            f"{t['compression_vs_float32']:.1f}x vs float32 "
            f"(weights only {t['weights_only_compression_vs_float32']:.1f}x)"
        )
    return doc


def _build_toml(recipe: Recipe, g: Graph) -> str:
    """The build config of compressed.onnx: every pruned fully connected layer on the sparse engine
    (convolutions stay dense). With an encode stage, its hardware form: weight codes Huffman-coded per
    PE with the stage's code-length limit, and CSC relative indices of the stage's width."""
    enc = next((st for st in recipe.stages if isinstance(st, EncodeStage)), None)
    text = (
        f"# hwgen build config written by `hwgen compress` (recipe {recipe.name}).\n"
        "# The quantization is carried by compressed.onnx itself (QDQ: exact codes and power-of-two scales),\n"
        "# so the build keeps it (hwgen.frontend.qdq) and needs no calibration data:\n"
        "#   hwgen build compressed.onnx --config hwgen.toml -o build\n"
        "[hardware]\n"
        "target_ii = 0\n"
    )
    coding = "weight codes Huffman-coded per PE" if enc is not None else "plain weight codes (no encode stage)"
    for n in g.nodes:
        w = g.const(n.inputs[1]) if n.op == "Dense" else None
        if w is not None and np.count_nonzero(w) < w.size:
            density = np.count_nonzero(w) / w.size
            text += (
                f"\n# {density:.2%} of the weights kept: EIE-style sparse engine, {coding}\n"
                f"[layers.{json.dumps(n.name)}]\n"
                'engine = "sparse"\n'
            )
            if enc is not None:
                text += (
                    'weight_coding = "huffman"\n'
                    f"max_code_length = {enc.max_code_length}  # the encode stage's code-length limit\n"
                    f"index_bits = {enc.index_bits}  # the encode stage's relative-index width\n"
                )
    return text


__all__ = ["compress", "load_chain_data", "load_checkpoint", "save_checkpoint"]
