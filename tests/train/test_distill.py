"""Knowledge distillation: loss values worked out by hand, attention maps, adapters, several teachers, training runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_model
from onnx import helper

from hwgen.config import config_from_dict
from hwgen.errors import ConfigError, DataError, GraphError
from hwgen.frontend import import_onnx
from hwgen.ir.graph import Graph
from hwgen.passes.canonicalize import canonicalize
from hwgen.passes.quantize import quantize_fixed
from hwgen.sim.torch_exec import Mode, TorchExecutor
from hwgen.train.distill import (
    Attention,
    DistillConfig,
    Distiller,
    Hint,
    KDObjective,
    attention_loss,
    attention_map,
    distill,
    distill_qat,
    kd_kl,
    kd_mix,
    kd_mse,
    logits_kd,
    make_adapter,
    mean_logits,
    soft_cross_entropy,
    soft_targets,
)
from hwgen.train.loop import FitConfig


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _t(rows: list[list[float]], grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


# -- logits losses --------------------------------------------------------------------------------
def test_soft_cross_entropy_matches_the_lecture_example() -> None:
    """The seed's worked example: p_T = [.05, .3, .2, .005], q_S = [.1, .45, .30, .15] at T = 1."""
    p = _t([[0.05, 0.3, 0.2, 0.005]])
    q = [0.1, 0.45, 0.30, 0.15]
    want = -(0.05 * math.log(0.1) + 0.3 * math.log(0.45) + 0.2 * math.log(0.30) + 0.005 * math.log(0.15))
    got = soft_cross_entropy(torch.log(_t([q])), p, temperature=1.0)
    assert float(got) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(0.604962, abs=1e-6)


def test_kl_with_temperature_value_and_gradient() -> None:
    """Two classes, z_s = [0, 0], z_t = [2, 0], T = 2: p_t = softmax([1, 0]), q_s = [1/2, 1/2]."""
    e = math.e
    p = [e / (e + 1), 1 / (e + 1)]
    kl = p[0] * math.log(p[0] / 0.5) + p[1] * math.log(p[1] / 0.5)
    zs = _t([[0.0, 0.0]], grad=True)
    target = soft_targets([_t([[2.0, 0.0]])], temperature=2.0)
    assert target[0].tolist() == pytest.approx(p, rel=1e-12)
    loss = kd_kl(zs, target, temperature=2.0)
    assert float(loss.detach()) == pytest.approx(4.0 * kl, rel=1e-12)  # scaled by T**2
    loss.backward()
    # d(T^2 KL)/dz_s = T^2 * (q - p) / T = T * (q - p)
    assert zs.grad[0].tolist() == pytest.approx([2.0 * (0.5 - p[0]), 2.0 * (0.5 - p[1])], rel=1e-12)


def test_kl_is_zero_at_the_target_and_soft_ce_differs_by_the_entropy() -> None:
    z = _t([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    zt = _t([[0.3, 0.1, -1.0], [2.0, 2.0, 0.0]])
    t = soft_targets([z], 3.0)
    assert float(kd_kl(z, t, 3.0)) == pytest.approx(0.0, abs=1e-12)
    pt = soft_targets([zt], 3.0)
    entropy = float(-(pt * pt.log()).sum(1).mean())
    diff = float(soft_cross_entropy(z, pt, 3.0) - kd_kl(z, pt, 3.0))
    assert diff == pytest.approx(9.0 * entropy, rel=1e-10)


def test_mse_on_logits_and_its_gradient() -> None:
    zs = _t([[1.0, 2.0], [0.0, -1.0]], grad=True)
    zt = _t([[0.0, 2.0], [2.0, -1.0]])
    loss = kd_mse(zs, zt)
    assert float(loss.detach()) == pytest.approx((1.0 + 0.0 + 4.0 + 0.0) / 4)
    loss.backward()
    assert zs.grad.flatten().tolist() == pytest.approx([0.5, 0.0, -1.0, 0.0])  # 2 (s - t) / 4


def test_lambda_mix_weights_hard_labels_and_kd() -> None:
    zs = _t([[2.0, 0.0, -1.0]])
    labels = torch.tensor([1])
    zt = [_t([[0.0, 1.0, 0.0]])]
    ce = -math.log(math.exp(0.0) / (math.exp(2.0) + 1.0 + math.exp(-1.0)))
    kd = float(logits_kd(zs, zt, "kl", 2.0))
    assert float(kd_mix(zs, labels, zt, lam=1.0, temperature=2.0)) == pytest.approx(ce, rel=1e-12)
    assert float(kd_mix(zs, labels, zt, lam=0.0, temperature=2.0)) == pytest.approx(kd, rel=1e-12)
    assert float(kd_mix(zs, labels, zt, lam=0.3, temperature=2.0)) == pytest.approx(0.3 * ce + 0.7 * kd, rel=1e-12)
    with pytest.raises(ConfigError):
        logits_kd(zs, zt, "hinge")


# -- several teachers -----------------------------------------------------------------------------
def test_several_teachers_average_their_soft_targets_with_weights() -> None:
    z1 = _t([[0.0, 0.0]])  # probabilities [1/2, 1/2]
    z2 = _t([[math.log(3.0), 0.0]])  # probabilities [3/4, 1/4]
    assert soft_targets([z1, z2], 1.0)[0].tolist() == pytest.approx([0.625, 0.375])
    assert soft_targets([z1, z2], 1.0, weights=[3, 1])[0].tolist() == pytest.approx([0.5625, 0.4375])
    assert mean_logits([z1, z2], weights=[1, 3])[0].tolist() == pytest.approx([0.75 * math.log(3.0), 0.0])
    zs = _t([[0.2, -0.1]])
    want = kd_kl(zs, _t([[0.5625, 0.4375]]), 1.0)
    assert float(logits_kd(zs, [z1, z2], "kl", 1.0, weights=[3, 1])) == pytest.approx(float(want), rel=1e-12)
    for bad in ([1.0], [-1.0, 2.0], [0.0, 0.0]):
        with pytest.raises(ConfigError):
            soft_targets([z1, z2], 1.0, weights=bad)


# -- attention maps -------------------------------------------------------------------------------
def test_attention_map_sums_channel_powers_and_normalizes() -> None:
    x = torch.tensor([[[[1.0, 2.0]], [[-2.0, 0.0]]]], dtype=torch.float64)  # [N=1, C=2, H=1, W=2]
    assert attention_map(x, m=2)[0].tolist() == pytest.approx([5 / math.sqrt(41), 4 / math.sqrt(41)])
    assert attention_map(x, m=1)[0].tolist() == pytest.approx([3 / math.sqrt(13), 2 / math.sqrt(13)])
    r = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    a = attention_map(r)
    assert a.shape == (3, 16)
    assert a.norm(dim=1).tolist() == pytest.approx([1.0] * 3)
    assert torch.allclose(attention_map(7.0 * r), a)  # the scale of the activations does not matter


def test_attention_loss_compares_maps_across_channel_counts() -> None:
    s = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)  # map [1, 0]
    t = torch.tensor([[[[0.0, 3.0]], [[0.0, 4.0]]]], dtype=torch.float64)  # map [0, 1]
    assert float(attention_loss(s, t)) == pytest.approx(math.sqrt(2.0))
    assert float(attention_loss(s, t, p=1.0)) == pytest.approx(2.0)
    assert float(attention_loss(t, 2.0 * t)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(DataError, match="spatial size"):
        attention_loss(s, torch.zeros(1, 1, 2, 2, dtype=torch.float64))


# -- graphs, adapters and training ----------------------------------------------------------------
def _tiny(channels: int, seed: int) -> Graph:
    """x [1, 8, 8] -> conv 3x3 (+ReLU, value 'feat' [c, 6, 6]) -> max-pool 2 ('pooled') -> flatten -> dense 3."""
    r = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv"], ["feat"]),
        helper.make_node("MaxPool", ["feat"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], transB=1),
    ]
    init = {
        "w1": r.normal(0, 0.5, (channels, 1, 3, 3)),
        "b1": r.normal(0, 0.1, channels),
        "w2": r.normal(0, 0.5, (3, 9 * channels)),
        "b2": np.zeros(3),
    }
    return canonicalize(import_onnx(make_model(nodes, {"x": ["N", 1, 8, 8]}, {"logits": ["N", 3]}, init))).graph


@pytest.fixture(scope="module")
def task() -> dict:
    teacher = _tiny(4, seed=1)
    x = np.random.default_rng(2).uniform(0, 1, (256, 1, 8, 8)).astype(np.float32)
    t_out = TorchExecutor(teacher, dtype=torch.float32)(x).detach().numpy()
    return {"teacher": teacher, "x": x, "y": t_out.argmax(1).astype(np.int64)}


def test_adapters_map_student_features_to_teacher_shapes() -> None:
    conv = make_adapter((2, 6, 6), (4, 6, 6))
    assert conv(torch.zeros(5, 2, 6, 6)).shape == (5, 4, 6, 6)
    lin = make_adapter((18,), (36,))
    assert lin(torch.zeros(5, 18)).shape == (5, 36)
    with pytest.raises(DataError, match="no adapter"):
        make_adapter((2, 6, 6), (4, 3, 3))
    with pytest.raises(DataError, match="no adapter"):
        make_adapter((18,), (4, 3, 3))


def test_objective_builds_adapters_from_value_names(task) -> None:
    student = _tiny(2, seed=3)
    cfg = DistillConfig(hints=(Hint("feat", "feat"), Hint("flat", "flat")), attention=(Attention("pooled", "pooled"),))
    obj = KDObjective(student, [task["teacher"]], cfg)
    assert obj.adapters["hint0"].weight.shape == (4, 2, 1, 1)
    assert obj.adapters["hint1"].weight.shape == (36, 18)
    assert obj.student_taps() == ["feat", "flat", "pooled"]
    d = Distiller(TorchExecutor(student, dtype=torch.float32), obj)
    trained = {id(p) for p in d.parameters()}
    assert all(id(p) in trained for p in obj.adapters.parameters())
    assert not any(id(p) in trained for t in obj.teachers for p in t.parameters())  # teachers stay frozen
    with pytest.raises(GraphError, match="no value 'nope'"):
        KDObjective(student, [task["teacher"]], DistillConfig(hints=(Hint("nope", "feat"),)))
    with pytest.raises(DataError):
        KDObjective(student, [task["teacher"]], DistillConfig(attention=(Attention("feat", "pooled"),)))
    with pytest.raises(ConfigError):
        KDObjective(student, [task["teacher"]], DistillConfig(hints=(Hint("feat", "feat", teacher_index=1),)))


def _terms(d: Distiller, x: np.ndarray) -> dict[str, float]:
    with torch.no_grad():
        xb = torch.as_tensor(x)
        out = d(xb)
        return {k: float(v) for k, v in d.objective.loss_terms(xb, out, d.taps).items()}


def test_a_short_kd_run_reduces_every_distillation_term(task) -> None:
    student = _tiny(2, seed=3)
    cfg = DistillConfig(
        kind="kl", temperature=2.0, lam=0.0, hints=(Hint("feat", "feat"),), attention=(Attention("pooled", "pooled"),)
    )
    torch.manual_seed(0)  # the same adapter initialization here and in distill()
    obj = KDObjective(student, [task["teacher"]], cfg)
    before = _terms(Distiller(TorchExecutor(student, dtype=torch.float32), obj), task["x"])
    torch.manual_seed(0)
    teacher_w = task["teacher"].const(task["teacher"].nodes[0].inputs[1]).copy()
    res = distill(
        student,
        [task["teacher"]],
        task["x"],
        task["y"],
        cfg,
        FitConfig(epochs=8, batch_size=32, lr=1e-2, progress=False),
    )
    after = _terms(res.distiller, task["x"])
    assert set(after) == {"logits", "hint0", "attention0"}
    for k in after:
        assert after[k] < 0.7 * before[k], (k, before[k], after[k])
    assert np.array_equal(task["teacher"].const(task["teacher"].nodes[0].inputs[1]), teacher_w)
    # the returned graph carries the trained student: its float forward equals the trained executor's
    got = TorchExecutor(res.graph, dtype=torch.float64)(task["x"]).detach().numpy()
    want = res.distiller.student.double()(task["x"]).detach().numpy()
    assert np.allclose(got, want, atol=1e-9)


def test_two_teachers_pull_the_student_towards_their_weighted_average(task) -> None:
    """With all weight on the second teacher the student learns that teacher, not the first."""
    student = _tiny(2, seed=3)
    other = _tiny(4, seed=7)
    cfg = DistillConfig(kind="mse", lam=0.0, teacher_weights=(0.0, 1.0))
    res = distill(
        student,
        [task["teacher"], other],
        task["x"],
        task["y"],
        cfg,
        FitConfig(epochs=8, batch_size=32, lr=1e-2, progress=False),
    )
    s = res.distiller.student(task["x"]).detach().numpy()
    t1 = TorchExecutor(task["teacher"], dtype=torch.float32)(task["x"]).detach().numpy()
    t2 = TorchExecutor(other, dtype=torch.float32)(task["x"]).detach().numpy()
    assert np.mean((s - t2) ** 2) < 0.5 * np.mean((s - t1) ** 2)


def test_kd_assisted_qat_trains_the_quantized_student_towards_the_float_teacher(task) -> None:
    student = _tiny(2, seed=3)
    q = quantize_fixed(student, task["x"][:64], config_from_dict({"quantize": {"weight_bits": 4, "act_bits": 4}})).graph
    cfg = DistillConfig(kind="kl", temperature=2.0, lam=0.0, attention=(Attention("feat", "feat"),))
    obj = KDObjective(q, [task["teacher"]], cfg)
    before = _terms(Distiller(TorchExecutor(q, Mode.QUANTIZED, dtype=torch.float32), obj), task["x"])
    fit_cfg = FitConfig(epochs=6, batch_size=32, lr=1e-2, progress=False)
    res = distill_qat(q, [task["teacher"]], task["x"], task["y"], cfg, fit_cfg, float_student=student)
    after = _terms(Distiller(TorchExecutor(res.graph, Mode.QUANTIZED, dtype=torch.float32), obj), task["x"])
    assert after["logits"] < 0.7 * before["logits"]
    assert after["attention0"] < before["attention0"]
    assert res.check_exact(task["x"][:64]) == 0  # the export still runs bit-exact in sim.exact
    with pytest.raises(ConfigError, match="hint"):
        distill_qat(q, [task["teacher"]], task["x"], task["y"], DistillConfig(hints=(Hint("feat", "feat"),)), fit_cfg)


def test_config_rejects_bad_values() -> None:
    for kw in ({"kind": "l1"}, {"temperature": 0.0}, {"lam": 1.5}, {"attention_m": 0.0}):
        with pytest.raises(ConfigError):
            DistillConfig(**kw)
    with pytest.raises(DataError, match="integer class labels"):
        distill(_tiny(2, 0), [_tiny(2, 1)], np.zeros((4, 1, 8, 8), np.float32), np.zeros((4, 3), np.float32))
