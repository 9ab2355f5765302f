"""sim.torch: float mode equals sim.reference, quantized float64 forward equals sim.exact bit for bit, STE, masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hwgen.config import config_from_dict
from hwgen.errors import DataError, FormatError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.numerics import (
    Binary,
    BlockFloat,
    BlockLog,
    BlockMinifloat,
    FixedPoint,
    Float32,
    Minifloat,
    Overflow,
    Rounding,
    Ternary,
)
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import exact, reference
from hwgen.sim.torch_exec import (
    Mode,
    TorchExecutor,
    fake_quant,
    fake_quant_weight,
    latent_from,
    register_fake_quant,
    round_codes,
)

REPO = Path(__file__).resolve().parents[2]
MODELS = {m: REPO / "models" / m / f"{m}.onnx" for m in ("lenet300", "lenet5", "rescnn")}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(REPO / "models" / "lenet300" / "mnist_test_1k.npz") as f:
        x, y = f["x"], f["y"]
    with np.load(REPO / "models" / "lenet300" / "mnist_calib.npz") as f:
        calib = f["x"]
    return x, y, calib


def _float_graph(model: str) -> Graph:
    return canonicalize(import_onnx(MODELS[model])).graph


def _quantized(g: Graph, calib: np.ndarray, bits: int, rounding: str = "half_even") -> Graph:
    cfg = config_from_dict({"quantize": {"weight_bits": bits, "act_bits": bits, "rounding": rounding}})
    return quantize_fixed(g, calib[:128], cfg).graph  # 128 images: calibration dominates the test time otherwise


def _exact_decoded(q: Graph, x: np.ndarray) -> np.ndarray:
    return exact.decode_outputs(q, exact.run(q, x))[q.outputs[0]]


def _torch_out(ex: TorchExecutor, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return ex.double().eval()(x).numpy()


# -- float mode ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(MODELS))
def test_float_mode_matches_reference(model: str, mnist) -> None:
    x = mnist[0][:64]
    g = _float_graph(model)
    ref = reference.run(g, x)[g.outputs[0]]
    got = _torch_out(TorchExecutor(g), x)
    # float64 sums in a different order than numpy/einsum: a few ulps of logits of size ~10
    assert np.abs(got - ref).max() < 1e-9
    assert (got.argmax(1) == ref.argmax(1)).all()


# -- the exact equivalence guarantee ------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "bits", "rounding"),
    [
        ("lenet300", 8, "half_even"),
        ("lenet300", 4, "half_even"),
        ("lenet300", 6, "half_up"),
        ("lenet5", 8, "half_even"),
        ("lenet5", 4, "half_up"),
        ("rescnn", 8, "half_even"),
        ("rescnn", 4, "floor"),
    ],
)
def test_quantized_forward_equals_exact(model: str, bits: int, rounding: str, mnist) -> None:
    x, _, calib = mnist
    x = x[:200] if model == "lenet300" else x[:80]
    q = _quantized(_float_graph(model), calib, bits, rounding)
    got = _torch_out(TorchExecutor(q, Mode.QUANTIZED), x)
    np.testing.assert_array_equal(got, _exact_decoded(q, x))


def _exported(model: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Graph:
    model.eval()
    torch.onnx.export(
        model, (torch.rand(*shape),), str(path), input_names=["input"], output_names=["y"],
        dynamic_axes={"input": {0: "N"}}, dynamo=False,
    )  # fmt: skip
    return canonicalize(import_onnx(path)).graph


class _Zoo(torch.nn.Module):
    """Every op kind the quantized executor must replicate: LUTs, softmax, avg pools, concat, pad, affine."""

    def __init__(self, act: torch.nn.Module) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 6, 3, padding=(1, 2), stride=(1, 2))
        self.dw = torch.nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.fc = torch.nn.Linear(24, 5)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.3) * 2.5  # input normalization: an Affine op after quantization
        h = torch.relu(self.conv(x))
        h = torch.nn.functional.pad(h, (1, 0, 0, 1))
        h = torch.cat([h, self.act(self.dw(h))], dim=1)
        h = torch.nn.functional.avg_pool2d(h, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        h = torch.nn.functional.max_pool2d(h, 2, ceil_mode=True)
        h = torch.nn.functional.adaptive_avg_pool2d(h, 1).flatten(1)
        h = torch.cat([h, torch.clamp(h, -0.2, 0.3)], dim=1)
        return torch.softmax(self.fc(h), dim=1)


@pytest.mark.parametrize(
    ("act", "rounding"),
    [
        (torch.nn.Sigmoid(), "half_even"),
        (torch.nn.Tanh(), "floor"),
        (torch.nn.Hardswish(), "half_up"),
        (torch.nn.LeakyReLU(0.1), "floor"),
    ],
    ids=lambda a: a if isinstance(a, str) else type(a).__name__,
)
def test_every_op_kind_equals_exact(tmp_path: Path, act: torch.nn.Module, rounding: str) -> None:
    torch.manual_seed(3)
    g = _exported(_Zoo(act), tmp_path / "zoo.onnx", (1, 2, 9, 11))
    x = np.random.default_rng(4).normal(0.3, 0.5, size=(40, 2, 9, 11))
    ops = {n.op for n in g.nodes}
    assert {"Concat", "AveragePool", "GlobalAveragePool", "Softmax", "Pad", "Clip"} <= ops, ops
    ref = reference.run(g, x)[g.outputs[0]]
    np.testing.assert_allclose(_torch_out(TorchExecutor(g), x), ref, rtol=0, atol=1e-12)
    q = _quantized(g, x, 6, rounding)
    assert "Affine" in {n.op for n in q.nodes}
    got = _torch_out(TorchExecutor(q, Mode.QUANTIZED), x)
    np.testing.assert_array_equal(got, _exact_decoded(q, x))


@pytest.mark.parametrize("bits", [8, 4])
def test_equivalence_holds_after_training_steps(bits: int, mnist) -> None:
    """Weights moved by QAT steps, written back (formats kept, biases re-derived): sim.exact == torch."""
    x, y, calib = mnist
    g = _float_graph("lenet300")
    q = _quantized(g, calib, bits)
    ex = TorchExecutor(q, Mode.QUANTIZED, dtype=torch.float32)
    ex.load_latent(latent_from(q, g))
    opt = torch.optim.SGD(ex.parameters(), lr=0.5)
    for i in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            ex(x[i * 64 : (i + 1) * 64]), torch.as_tensor(y[i * 64 : (i + 1) * 64])
        )
        loss.backward()
        opt.step()
    with torch.no_grad():
        ex.param(q.nodes[1].inputs[2]).mul_(4.0)  # a bias outgrows the width the quantize pass gave it
    out = ex.write_back()
    changed = [
        n for n in q.nodes if n.op == "Dense" and not np.array_equal(out.const(n.inputs[1]), q.const(n.inputs[1]))
    ]
    assert len(changed) == 3
    grown = [
        n for n in q.nodes if n.op == "Dense" and out.value(n.inputs[2]).type.format != q.value(n.inputs[2]).type.format
    ]
    assert grown, "the test means to exercise bias width re-derivation"
    want = _exact_decoded(out, x[:300])
    np.testing.assert_array_equal(_torch_out(ex, x[:300]), want)
    np.testing.assert_array_equal(_torch_out(TorchExecutor(out, Mode.QUANTIZED), x[:300]), want)


# -- fake quantization and the STE ---------------------------------------------------------------
@pytest.mark.parametrize("rounding", list(Rounding))
def test_fixed_fake_quant_matches_encode(rounding: Rounding) -> None:
    fmt = FixedPoint(5, 3, signed=True)
    v = np.concatenate([np.arange(-24, 24) / 16.0, np.random.default_rng(0).normal(0, 2, 500), [-1e-300, 1e-300]])
    want = fmt.quantize(v, rounding=rounding, overflow=Overflow.SATURATE)
    got = fake_quant(torch.as_tensor(v), fmt, rounding).numpy()
    np.testing.assert_array_equal(got, want)


def test_round_codes_ties() -> None:
    v = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999999999999994], dtype=torch.float64)
    assert round_codes(v, Rounding.FLOOR).tolist() == [-3, -2, -1, 0, 1, 2, 0]
    assert round_codes(v, Rounding.HALF_UP).tolist() == [-2, -1, 0, 1, 2, 3, 0]
    assert round_codes(v, Rounding.HALF_EVEN).tolist() == [-2, -2, 0, 0, 2, 2, 0]


def test_ste_passes_rounding_and_blocks_saturation() -> None:
    fmt = FixedPoint(4, 2, signed=True)  # codes -8..7: values -2 .. 1.75
    x = torch.tensor([-3.0, -2.0, -0.3, 0.1, 1.6, 1.75, 1.9, 5.0], dtype=torch.float64, requires_grad=True)
    fake_quant(x, fmt, Rounding.HALF_EVEN).backward(torch.arange(1.0, 9.0, dtype=torch.float64))
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]


def test_activation_clamp_blocks_gradient(mnist) -> None:
    """A fused ReLU merged into the output clamp: negative pre-activations get no gradient."""
    x, _, calib = mnist
    q = _quantized(_float_graph("lenet300"), calib, 8)
    ex = TorchExecutor(q, Mode.QUANTIZED)
    env = ex.run({"input": x[:8]}, keep=True)
    env["relu"].retain_grad()
    first = q.nodes[1]
    assert first.attrs["activation"] == "relu"
    w = ex.param(first.inputs[1])
    env[q.outputs[0]].sum().backward()
    pre = torch.nn.functional.linear(env[first.inputs[0]], ex.latent(first.inputs[1])).detach()
    dead = (pre + ex.latent(first.inputs[2]).detach() < -0.01).all(dim=0)  # units negative for every sample
    assert dead.any()
    assert (w.grad[dead] == 0).all()
    assert (w.grad[~dead].abs().sum(dim=1) > 0).any()


def test_registry_dispatches_on_format_type() -> None:
    class Halves:  # a stand-in format: rounds to multiples of 0.5 within [-1, 1]
        name, bits = "halves", 3

    def halves(x: torch.Tensor, fmt: Halves, rounding: Rounding, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.clamp(torch.round(x * 2) / 2, -1, 1), x.abs() <= 1

    with pytest.raises(FormatError, match="register_fake_quant"):
        fake_quant(torch.zeros(2), Halves(), Rounding.HALF_EVEN)
    register_fake_quant(Halves, halves)
    x = torch.tensor([0.3, 0.8, 2.0], requires_grad=True)
    y = fake_quant(x, Halves(), Rounding.HALF_EVEN)
    y.sum().backward()
    assert y.tolist() == [0.5, 1.0, 1.0] and x.grad.tolist() == [1.0, 1.0, 0.0]
    assert fake_quant(x, Float32(), Rounding.FLOOR) is x


@pytest.mark.parametrize(
    ("fmt", "axis"),
    [
        (Minifloat(4, 3), None),
        (Minifloat(3, 2, denorm=False), None),
        (BlockFloat(3, 8, block=4), -1),
        (BlockMinifloat(2, 3, block=4), -1),
        (BlockLog(3, block=4), -1),
        (Binary(per_channel=True), 0),
        (Ternary(per_channel=True), 0),
        (Ternary(), 0),
    ],
    ids=str,
)
def test_every_format_fake_quantizes_conv_weights_as_out_by_in_matrices(fmt, axis) -> None:
    """Forward values are the format's own quantize of the [out, (kh, kw, in)] weight matrix (blocks along the input
    channels of each kernel tap, scales per out), the layout the golden model blocks weights in."""
    w = np.random.default_rng(5).normal(0, 0.3, size=(6, 3, 3, 3))
    w[0, 0, 0, 0] = 1e4  # far beyond a minifloat's range: saturates
    kw = {} if axis is None else {"axis": axis}
    taps_first = np.moveaxis(w, 1, -1)
    want = np.moveaxis(
        fmt.quantize(taps_first.reshape(6, -1), rounding=Rounding.HALF_EVEN, **kw).reshape(taps_first.shape), -1, 1
    )
    t = torch.as_tensor(w).requires_grad_(True)
    q = fake_quant_weight(t, fmt, Rounding.HALF_EVEN)
    np.testing.assert_array_equal(q.detach().numpy(), want)
    q.sum().backward()
    grad = t.grad.numpy()
    assert set(np.unique(grad)) <= {0.0, 1.0}
    if isinstance(fmt, Minifloat):
        assert grad[0, 0, 0, 0] == 0.0 and grad.reshape(-1)[1:].min() == 1.0
    elif isinstance(fmt, Binary):
        np.testing.assert_array_equal(grad, (np.abs(w) <= np.abs(want)).astype(float))
    else:
        assert grad.min() == 1.0


def test_numpy_fallback_uses_the_formats_own_quantize() -> None:
    class Coarse:
        name, bits, max_value = "coarse", 2, 1.0

        def quantize(self, x: np.ndarray, *, rounding: Rounding) -> np.ndarray:
            return np.clip(np.floor(x) if rounding is Rounding.FLOOR else np.rint(x), -1, 1)

    x = torch.tensor([0.7, -0.2, 3.0], dtype=torch.float64, requires_grad=True)
    y = fake_quant(x, Coarse(), Rounding.FLOOR)
    y.sum().backward()
    assert y.tolist() == [0.0, -1.0, 1.0] and x.grad.tolist() == [1.0, 1.0, 0.0]


# -- parameters, masks, write_back --------------------------------------------------------------
def test_trainable_parameters_are_mac_weights_and_biases(mnist) -> None:
    q = _quantized(_float_graph("rescnn"), mnist[2], 8)
    ex = TorchExecutor(q, Mode.QUANTIZED)
    macs = [n for n in q.nodes if n.op in ("Dense", "Conv")]
    assert len(list(ex.parameters())) == 2 * len(macs)
    assert set(ex.trainable_names) == {i for n in macs for i in n.inputs[1:]}


def test_masked_weights_stay_zero_through_training(mnist) -> None:
    x, y, _ = mnist
    g = _float_graph("lenet300")
    w_name = g.nodes[1].inputs[1]
    mask = (np.random.default_rng(0).random(g.const(w_name).shape) > 0.7).astype(np.float64)
    before = g.const(w_name).copy()
    ex = TorchExecutor(g, masks={w_name: mask})
    opt = torch.optim.Adam(ex.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ex(x[:64]), torch.as_tensor(y[:64])).backward()
        assert (ex.param(w_name).grad[mask == 0] == 0).all()
        opt.step()
    out = ex.write_back()
    w = out.const(w_name)
    assert (w[mask == 0] == 0).all() and (w[mask == 1] != 0).mean() > 0.99
    assert not np.array_equal(w, before * mask)  # it did train
    np.testing.assert_array_equal(g.const(w_name), before)  # and left the source graph alone
    assert w.dtype == g.const(w_name).dtype
    with pytest.raises(DataError, match="mask"):
        ex.set_mask(w_name, mask[:3])


def test_write_back_into_the_float_graph(mnist) -> None:
    """A quantized executor's latent weights go back into the float graph by node name and slot."""
    g = _float_graph("lenet5")
    q = _quantized(g, mnist[2], 8)
    ex = TorchExecutor(q, Mode.QUANTIZED)
    latent = latent_from(q, g)
    assert set(latent) == set(ex.trainable_names)
    ex.load_latent(latent)
    with torch.no_grad():
        for name in ex.trainable_names:
            ex.param(name).add_(0.001)
    fg = ex.write_back(g)
    for n in g.nodes:
        if n.op in ("Dense", "Conv"):
            np.testing.assert_allclose(fg.const(n.inputs[1]), g.const(n.inputs[1]) + 0.001, rtol=0, atol=1e-7)
    assert all(fg.value(n).type.format == g.value(n).type.format for n in g.values)


def test_source_module_replaces_a_constant(mnist) -> None:
    """set_source: the weight comes from a module (e.g. a codebook), whose parameters receive the gradient."""
    g = _float_graph("lenet300")
    node = g.nodes[-1]
    w = g.const(node.inputs[1])
    idx = torch.as_tensor(np.digitize(w, [-0.05, 0.05]))

    class Codebook(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.centroids = torch.nn.Parameter(torch.tensor([-0.1, 0.0, 0.1], dtype=torch.float64))

        def forward(self) -> torch.Tensor:
            return self.centroids[idx]

    ex = TorchExecutor(g)
    cb = Codebook()
    ex.set_source(node.inputs[1], cb)
    assert any(p is cb.centroids for p in ex.parameters())  # an optimizer over ex.parameters() trains it
    x, y, _ = mnist
    torch.nn.functional.cross_entropy(ex(x[:32]), torch.as_tensor(y[:32])).backward()
    assert cb.centroids.grad is not None and cb.centroids.grad.abs().sum() > 0
    np.testing.assert_array_equal(ex.write_back().const(node.inputs[1]), np.array([-0.1, 0.0, 0.1])[idx.numpy()])


def test_wrong_input_shape_is_a_data_error(mnist) -> None:
    ex = TorchExecutor(_float_graph("lenet300"))
    with pytest.raises(DataError, match="expects samples of shape"):
        ex(np.zeros((2, 784)))
