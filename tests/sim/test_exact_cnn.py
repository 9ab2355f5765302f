"""sim.exact on CNN ops: against direct-loop integer references and against the float reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwgen.config import config_from_dict
from hwgen.frontend import import_onnx
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim import exact, reference
from hwgen.sim.exact import dense_codes, dense_requant, fixed_format
from hwgen.sim.integer_kernels import requantize


class Residual(torch.nn.Module):
    def __init__(self, act: torch.nn.Module) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(2, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = torch.nn.Conv2d(8, 8, 1)
        self.strided = torch.nn.Conv2d(16, 6, 3, stride=2, padding=(1, 0))
        self.act = act
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.stem(x)))
        h = torch.relu(h + self.pw(torch.relu(self.dw(h))))
        h = torch.nn.functional.max_pool2d(h, 2)
        h = torch.cat([h, torch.nn.functional.avg_pool2d(h, 3, stride=1, padding=1)], dim=1)
        h = self.act(self.strided(h))
        h = torch.nn.functional.adaptive_avg_pool2d(h, 1).flatten(1)
        h = torch.cat([h, torch.relu(h)], dim=1)  # a second concat, of a value and its ReLU
        return torch.softmax(self.fc(h), dim=1)


def _export(model: torch.nn.Module, path, shape=(1, 2, 10, 10)) -> None:
    model.eval()
    torch.onnx.export(
        model,
        (torch.rand(*shape),),
        str(path),
        input_names=["input"],
        output_names=["y"],
        dynamic_axes={"input": {0: "N"}},
        dynamo=False,
    )  # the TorchScript exporter is deterministic and fast


@pytest.mark.parametrize(
    "act",
    [
        torch.nn.ReLU(),
        torch.nn.Sigmoid(),
        torch.nn.Tanh(),
        torch.nn.Hardswish(),
        torch.nn.LeakyReLU(0.1),
        torch.nn.Hardsigmoid(),
    ],
    ids=lambda a: type(a).__name__,
)
def test_quantized_cnn_tracks_float(tmp_path, act) -> None:
    torch.manual_seed(0)
    m = Residual(act)
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "m.onnx"
    _export(m, path)
    g = canonicalize(import_onnx(path)).graph
    x = np.random.default_rng(1).random((32, 2, 10, 10))
    q = quantize_fixed(g, x, config_from_dict({"quantize": {"weight_bits": 12, "act_bits": 12}})).graph
    ref = reference.run(g, x)[g.outputs[0]]
    got = exact.decode_outputs(q, exact.run(q, x))[q.outputs[0]]
    assert got.shape == ref.shape
    # 12-bit everything: the softmax output moves by a few of its 2**-11 steps at most
    assert np.abs(got - ref).max() < 0.02
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9


def _direct_conv(x, w, b, stride, pad, groups):
    """Plain loops over codes: an independent definition of grouped 2-D convolution."""
    n, _c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, m, oh, ow), dtype=object)
    mg = m // groups
    for nn in range(n):
        for mm in range(m):
            g0 = (mm // mg) * cg
            for i in range(oh):
                for j in range(ow):
                    acc = int(b[mm])
                    for cc in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                acc += int(xp[nn, g0 + cc, i * stride + u, j * stride + v]) * int(w[mm, cc, u, v])
                    out[nn, mm, i, j] = acc
    return out


@pytest.mark.parametrize(("stride", "pad", "groups"), [(1, 1, 1), (2, 0, 1), (1, 1, 4), (2, 2, 2)])
def test_conv_codes_match_direct_loops(tmp_path, stride, pad, groups) -> None:
    torch.manual_seed(stride * 10 + groups)
    m = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, stride=stride, padding=pad, groups=groups), torch.nn.ReLU())
    path = tmp_path / "c.onnx"
    _export(m, path, (1, 4, 7, 6))
    g = canonicalize(import_onnx(path)).graph
    x = np.random.default_rng(2).normal(size=(3, 4, 7, 6))
    q = quantize_fixed(g, x, config_from_dict({})).graph
    node = q.nodes[0]
    codes = exact.encode_input(q, x)
    w, b = dense_codes(q, node)
    r = dense_requant(q, node)
    acc = _direct_conv(codes, w, b, stride, pad, groups)
    want = requantize(acc, r.shift, r.rounding, r.lo, r.hi)
    got = exact.run_codes(q, codes)[q.outputs[0]]
    np.testing.assert_array_equal(got, want)
    assert fixed_format(q, q.outputs[0]).signed is False  # ReLU output is unsigned
