"""Centroid fine-tuning: the summed-gradient rule through sim.torch, and training that keeps the codebook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hwgen.frontend import import_onnx
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.share import META_KEY, centroid_gradients, share_weights, shared_from_values
from hwgen.sim.torch_exec import Mode, TorchExecutor
from hwgen.train.loop import FitConfig, evaluate
from hwgen.train.share_finetune import attach_codebooks, finetune_centroids, shared_layers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shared_lenet():
    g = canonicalize(import_onnx(REPO / "models" / "lenet300" / "lenet300.onnx")).graph
    for n in g.mac_nodes():  # prune: the zero symbol must survive training
        w = g.const(n.inputs[1])
        g.values[n.inputs[1]].const = np.where(np.abs(w) > np.quantile(np.abs(w), 0.8), w, 0).astype(w.dtype)
    return g, share_weights(g, bits=2, weight_bits=8).graph


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    with np.load(REPO / "models" / "lenet300" / "mnist_test_1k.npz") as f:
        return {"x_train": f["x"][300:], "y_train": f["y"][300:], "x_eval": f["x"][:300], "y_eval": f["y"][:300]}


def test_centroid_gradients_are_the_weight_gradients_summed(shared_lenet, data) -> None:
    """dL/dc_k from the executor's codebook sources equals centroid_gradients(dL/dW, indices) for every layer."""
    _, sg = shared_lenet
    x, y = torch.as_tensor(data["x_train"][:64]).double(), torch.as_tensor(data["y_train"][:64])
    with_sources = TorchExecutor(sg, Mode.FLOAT, trainable=[])
    layers = attach_codebooks(with_sources, sg)
    torch.nn.functional.cross_entropy(with_sources(x), y).backward()
    weights = [layer.weight for layer in layers]
    plain = TorchExecutor(sg, Mode.FLOAT, trainable=weights)  # the same weights as plain parameters
    torch.nn.functional.cross_entropy(plain(x), y).backward()
    for layer in layers:
        wg = plain.param(layer.weight).grad
        want = centroid_gradients(wg, torch.as_tensor(layer.shared.indices), layer.shared.symbols)
        assert torch.allclose(layer.source.centroids.grad, want[1:], rtol=1e-9, atol=1e-12)
        assert float(want[1:].abs().sum()) > 0


def test_finetune_improves_and_keeps_codebook_and_zeros(shared_lenet, data) -> None:
    g, sg = shared_lenet
    cfg = FitConfig(epochs=2, batch_size=64, lr=2e-3, progress=False)
    before = evaluate(TorchExecutor(sg, Mode.FLOAT), data["x_eval"], data["y_eval"])
    tuned, hist = finetune_centroids(sg, data["x_train"], data["y_train"], cfg, mode=Mode.FLOAT)
    after = evaluate(TorchExecutor(tuned, Mode.FLOAT), data["x_eval"], data["y_eval"])
    print(f"2-bit sharing: top-1 {before:.3f} -> {after:.3f} after centroid fine-tuning")
    assert after > before + 0.01 and len(hist.epochs) == 2
    for (node, w, fmt, st), (_, _, _, st0) in zip(shared_layers(tuned), shared_layers(sg), strict=True):
        assert np.array_equal(st.indices == 0, st0.indices == 0), node  # zeros stay zero, non-zeros non-zero
        assert st.symbols <= 5  # still 4 centroids + the zero symbol
        assert not np.array_equal(st.codebook, st0.codebook)  # the centroids moved
        assert fmt.name == tuned.meta[META_KEY][node]["format"]
        assert np.array_equal(shared_from_values(tuned.const(w), fmt, 2).codebook, st.codebook)
    assert not np.array_equal(g.const(next(g.mac_nodes()).inputs[2]), tuned.const(next(tuned.mac_nodes()).inputs[2]))


def test_finetune_a_quantized_graph_keeps_exact_codes(shared_lenet, data) -> None:
    """Quantized mode: the tuned weights are codebook codes of the weight format; sim.exact runs them."""
    from hwgen.config import config_from_dict
    from hwgen.passes.quantize import quantize_fixed
    from hwgen.sim import exact

    _, sg = shared_lenet
    q = quantize_fixed(sg, data["x_train"][:128], config_from_dict({"quantize": {"weight_bits": 8}})).graph
    cfg = FitConfig(epochs=1, batch_size=64, lr=1e-3, progress=False)
    tuned, _ = finetune_centroids(q, data["x_train"], data["y_train"], cfg, mode=Mode.QUANTIZED)
    for (node, w, fmt, st), (_, _, _, st0) in zip(shared_layers(tuned), shared_layers(q), strict=True):
        assert fmt == tuned.value(w).type.format  # the codebook is in the weight's own format
        assert np.array_equal(st.indices == 0, st0.indices == 0) and st.symbols <= 5, node
    out = exact.run(tuned, data["x_eval"][:8])
    assert out[tuned.outputs[0]].shape[0] == 8
