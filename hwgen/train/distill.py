"""Knowledge distillation through sim.torch: a student graph learns from one or more teacher graphs.

Three kinds of knowledge, combined in one loss (lecture notes: Hinton et al., FitNets, Zagoruyko &
Komodakis attention transfer, TinyBERT):

- **Logits** (`kd_mse`, `kd_kl`, `soft_cross_entropy`): the student matches the teacher's logits
  (MSE) or its temperature-softened probabilities q_i = softmax(z / T) (KL or soft cross-entropy).
  Soft terms are multiplied by T**2 so their gradients keep the scale of the hard-label term when T
  changes (Hinton). Mixed with the hard labels as ``lam * CE(student, labels) + (1 - lam) * KD``
  (the lecture's L = lambda L_student + (1 - lambda) L_distillation).
- **Hints** (`Hint`): MSE between a student value and a teacher value of the graphs, named by IR
  value name. A learned adapter maps the student's feature onto the teacher's shape: a 1x1
  convolution for [C, H, W] maps of equal spatial size, a linear layer for vectors.
- **Attention maps** (`Attention`): p(x) = sum over channels |x_c|**m, flattened and L2-normalized
  per sample; the loss is beta/2 * || p_s - p_t ||_p averaged over the batch. No parameters, so the
  channel counts may differ; the spatial sizes must match.

Several teachers: logits terms use the (weighted) average of the teachers' soft targets (KL, soft
CE) or logits (MSE); each hint or attention pair names the teacher it reads.

Training goes through `hwgen.train.loop.fit` on a `Distiller` (the student executor plus the
adapters of a `KDObjective`), so the student trains like every other hwgen training and `write_back`
gives its graph.
`distill_qat` is KD-assisted QAT: float teachers, the student's quantized graph trained by
`hwgen.train.qat.qat` with the distillation terms as its `extra_loss`. QAT builds its own executor,
so there hint adapters cannot be trained (hints are refused) and attention terms cost one extra
student forward pass per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hwgen.errors import ConfigError, DataError, GraphError
from hwgen.ir.graph import Graph
from hwgen.sim.torch_exec import Mode, TorchExecutor
from hwgen.train.loop import FitConfig, History, fit
from hwgen.train.qat import QATResult, qat

log = logging.getLogger(__name__)

LOGIT_KINDS = ("kl", "soft_ce", "mse", "none")


# -- losses on tensors ----------------------------------------------------------------------------
def soft_targets(
    teacher_logits: Sequence[Tensor], temperature: float, weights: Sequence[float] | None = None
) -> Tensor:
    """Weighted average of softmax(z_t / T) over the teachers (weights are normalized to sum to 1)."""
    w = _weights(len(teacher_logits), weights)
    return sum(wi * F.softmax(z / temperature, dim=1) for wi, z in zip(w, teacher_logits, strict=True))


def mean_logits(teacher_logits: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """Weighted average of the teachers' logits (the MSE target of several teachers)."""
    w = _weights(len(teacher_logits), weights)
    return sum(wi * z for wi, z in zip(w, teacher_logits, strict=True))


def _weights(n: int, weights: Sequence[float] | None) -> list[float]:
    if n == 0:
        raise ConfigError("distillation needs at least one teacher")
    w = [1.0] * n if weights is None else [float(v) for v in weights]
    if len(w) != n or any(v < 0 for v in w) or sum(w) <= 0:
        raise ConfigError(f"teacher weights {w}: need {n} non-negative weights with a positive sum")
    total = sum(w)
    return [v / total for v in w]


def kd_mse(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean squared error between student and teacher logits (Ba & Caruana's logit matching)."""
    return F.mse_loss(student_logits, teacher_logits.to(student_logits.dtype))


def kd_kl(student_logits: Tensor, target_probs: Tensor, temperature: float) -> Tensor:
    """T**2 * KL(p_t || softmax(z_s / T)), summed over classes, averaged over the batch."""
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return temperature**2 * F.kl_div(log_q, target_probs.to(log_q.dtype), reduction="batchmean")


def soft_cross_entropy(student_logits: Tensor, target_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """T**2 * -sum_k p_k log softmax(z_s / T)_k, averaged over the batch (KL plus the targets' entropy)."""
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return temperature**2 * -(target_probs.to(log_q.dtype) * log_q).sum(dim=1).mean()


def logits_kd(
    student_logits: Tensor,
    teacher_logits: Sequence[Tensor],
    kind: str = "kl",
    temperature: float = 4.0,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """The logits distillation term of `kind` against one or several teachers."""
    if kind == "mse":
        return kd_mse(student_logits, mean_logits(teacher_logits, weights))
    if kind == "none":
        return student_logits.new_zeros(())
    target = soft_targets(teacher_logits, temperature, weights)
    if kind == "kl":
        return kd_kl(student_logits, target, temperature)
    if kind == "soft_ce":
        return soft_cross_entropy(student_logits, target, temperature)
    raise ConfigError(f"logits KD kind {kind!r} is not one of {LOGIT_KINDS}")


def kd_mix(
    student_logits: Tensor,
    labels: Tensor,
    teacher_logits: Sequence[Tensor],
    *,
    lam: float = 0.5,
    kind: str = "kl",
    temperature: float = 4.0,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """lam * CE(student, hard labels) + (1 - lam) * logits KD."""
    hard = F.cross_entropy(student_logits, labels)
    return lam * hard + (1.0 - lam) * logits_kd(student_logits, teacher_logits, kind, temperature, weights)


def attention_map(x: Tensor, m: float = 2.0) -> Tensor:
    """p(x) = sum_c |x_c|**m of a [N, C, *spatial] batch, flattened to [N, prod(spatial)], L2-normalized."""
    if x.ndim < 3:
        raise DataError(f"attention maps need [batch, channels, *spatial] activations, got shape {list(x.shape)}")
    return F.normalize(x.abs().pow(m).sum(dim=1).flatten(1), p=2.0, dim=1)


def attention_loss(student: Tensor, teacher: Tensor, m: float = 2.0, p: float = 2.0) -> Tensor:
    """|| p(s) - p(t) ||_p per sample, averaged over the batch (the beta/2 factor is the caller's)."""
    if student.shape[2:] != teacher.shape[2:]:
        raise DataError(
            f"attention maps of spatial size {list(student.shape[2:])} (student) and {list(teacher.shape[2:])} "
            "(teacher) differ: pair values of the same resolution"
        )
    diff = attention_map(student, m) - attention_map(teacher.to(student.dtype), m)
    return diff.norm(p=p, dim=1).mean()


# -- configuration --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hint:
    """Match student value `student` to teacher value `teacher` through a learned adapter (MSE)."""

    student: str  #: value name in the student graph
    teacher: str  #: value name in the teacher graph
    weight: float = 1.0
    teacher_index: int = 0  #: which teacher (position in the teachers list)


@dataclass(frozen=True)
class Attention:
    """Attention transfer between two [C, *spatial] values of equal spatial size."""

    student: str
    teacher: str
    beta: float = 1.0  #: the loss is beta / 2 * || p_s - p_t ||_p
    teacher_index: int = 0


@dataclass(frozen=True)
class DistillConfig:
    kind: str = "kl"  #: logits term: "kl", "soft_ce", "mse" or "none"
    temperature: float = 4.0  #: softmax temperature T of "kl" and "soft_ce"
    lam: float = 0.5  #: weight of the hard-label cross-entropy; the logits term gets 1 - lam
    teacher_weights: tuple[float, ...] | None = None  #: per-teacher weights of the averaged targets
    hints: tuple[Hint, ...] = ()
    attention: tuple[Attention, ...] = ()
    attention_m: float = 2.0  #: the power m of p(x) = sum_c |x_c|**m
    attention_p: float = 2.0  #: the norm of the attention distance

    def __post_init__(self) -> None:
        if self.kind not in LOGIT_KINDS:
            raise ConfigError(f"distill: kind {self.kind!r} is not one of {LOGIT_KINDS}")
        if not self.temperature > 0:
            raise ConfigError(f"distill: temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"distill: lam weights the hard labels and must be in [0, 1], got {self.lam}")
        if self.attention_m <= 0 or self.attention_p <= 0:
            raise ConfigError("distill: attention_m and attention_p must be > 0")


# -- the trainable student ------------------------------------------------------------------------
def as_teacher(teacher: Graph | TorchExecutor, dtype: torch.dtype = torch.float32) -> TorchExecutor:
    """A frozen float executor of a teacher graph (an executor is used as given, frozen)."""
    ex = TorchExecutor(teacher, Mode.FLOAT, dtype=dtype) if isinstance(teacher, Graph) else teacher
    ex.eval()
    for p in ex.parameters():
        p.requires_grad_(False)
    return ex


def _value_shape(graph: Graph, name: str, who: str) -> tuple[int, ...]:
    if name not in graph.values:
        some = ", ".join(sorted(n.outputs[0] for n in graph.nodes)[:12])
        raise GraphError(f"{who} graph '{graph.name}' has no value {name!r}; node outputs include: {some}")
    return tuple(graph.value(name).type.shape)


def make_adapter(student_shape: Sequence[int], teacher_shape: Sequence[int], what: str = "hint") -> torch.nn.Module:
    """A 1x1 conv ([C, *spatial] maps of equal spatial size) or linear layer (vectors) from student to teacher shape."""
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) == 1 and len(t) == 1:
        return torch.nn.Linear(s[0], t[0])
    if len(s) == len(t) and len(s) in (2, 3, 4) and s[1:] == t[1:]:
        conv = {2: torch.nn.Conv1d, 3: torch.nn.Conv2d, 4: torch.nn.Conv3d}[len(s)]
        return conv(s[0], t[0], kernel_size=1)
    raise DataError(
        f"{what}: no adapter from student shape {list(s)} to teacher shape {list(t)}; pair vectors, or "
        "[C, *spatial] maps with the same spatial size"
    )


class KDObjective(torch.nn.Module):
    """The distillation terms of a student graph against frozen teachers; its parameters are the hint adapters.

    Teachers are held outside the module's parameters (frozen, float, not moved by .to()).
    `fit_kwargs` gives `hwgen.train.loop.fit` the hard-label loss and the distillation terms.
    """

    def __init__(
        self, student_graph: Graph, teachers: Sequence[Graph | TorchExecutor], config: DistillConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config or DistillConfig()
        self._teachers: list[TorchExecutor] = [as_teacher(t) for t in teachers]  # a plain list: never trained
        _weights(len(self._teachers), self.config.teacher_weights)
        self.adapters = torch.nn.ModuleDict()
        for i, h in enumerate(self.config.hints):
            s_shape = _value_shape(student_graph, h.student, "student")
            t_shape = _value_shape(self._teacher(h.teacher_index).graph, h.teacher, "teacher")
            self.adapters[f"hint{i}"] = make_adapter(s_shape, t_shape, f"hint {h.student!r} -> {h.teacher!r}")
        for a in self.config.attention:
            s_shape = _value_shape(student_graph, a.student, "student")
            t_shape = _value_shape(self._teacher(a.teacher_index).graph, a.teacher, "teacher")
            if len(s_shape) < 2 or s_shape[1:] != t_shape[1:]:
                raise DataError(
                    f"attention {a.student!r} -> {a.teacher!r}: shapes {list(s_shape)} and {list(t_shape)} need "
                    "[C, *spatial] with the same spatial size"
                )

    def _teacher(self, index: int) -> TorchExecutor:
        if not 0 <= index < len(self._teachers):
            raise ConfigError(f"teacher_index {index}: there are {len(self._teachers)} teachers")
        return self._teachers[index]

    @property
    def teachers(self) -> list[TorchExecutor]:
        return list(self._teachers)

    def student_taps(self) -> list[str]:
        """Student values the hint and attention terms read."""
        return list(dict.fromkeys([h.student for h in self.config.hints] + [a.student for a in self.config.attention]))

    def teacher_taps(self, index: int) -> list[str]:
        pairs = [*self.config.hints, *self.config.attention]
        return list(dict.fromkeys(p.teacher for p in pairs if p.teacher_index == index))

    def run_teachers(self, x: Tensor) -> list[dict[str, Tensor]]:
        """Each teacher's output (key "__out__") and tapped values for a batch, without gradients."""
        outs = []
        with torch.no_grad():
            for i, t in enumerate(self._teachers):
                taps = self.teacher_taps(i)
                env = t.run({t.graph.inputs[0]: x}, keep=bool(taps))
                outs.append({"__out__": env[t.graph.outputs[0]], **{n: env[n] for n in taps}})
        return outs

    def loss_terms(self, x: Tensor, out: Tensor, student_taps: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Every distillation term: "logits" (before the 1 - lam factor), "hint<i>" and "attention<i>" (weighted)."""
        t_outs = self.run_teachers(x)
        cfg = self.config
        n = out.shape[0]
        terms: dict[str, Tensor] = {}
        if cfg.kind != "none":
            logits = [t["__out__"].reshape(n, -1).to(out.dtype) for t in t_outs]
            terms["logits"] = logits_kd(out.reshape(n, -1), logits, cfg.kind, cfg.temperature, cfg.teacher_weights)
        for i, h in enumerate(cfg.hints):
            pred = self.adapters[f"hint{i}"](student_taps[h.student])
            terms[f"hint{i}"] = h.weight * F.mse_loss(pred, t_outs[h.teacher_index][h.teacher].to(pred.dtype))
        for i, a in enumerate(cfg.attention):
            s, t = student_taps[a.student], t_outs[a.teacher_index][a.teacher]
            terms[f"attention{i}"] = a.beta / 2.0 * attention_loss(s, t, cfg.attention_m, cfg.attention_p)
        return terms

    def kd_loss(self, x: Tensor, out: Tensor, student_taps: Mapping[str, Tensor]) -> Tensor:
        """(1 - lam) * logits term + hint terms + attention terms (the hard-label term is the task loss)."""
        total = out.new_zeros(())
        for name, v in self.loss_terms(x, out, student_taps).items():
            total = total + ((1.0 - self.config.lam) * v if name == "logits" else v)
        return total

    def fit_kwargs(self) -> dict[str, Any]:
        """`loss_fn` (lam * hard-label CE) and `extra_loss` (the distillation terms) for `hwgen.train.loop.fit`.

        The trained model is a `Distiller` (its forward keeps the tapped values) or a bare executor
        (QAT), which is run a second time per batch when hint/attention terms need its values.
        """
        lam = self.config.lam
        names = self.student_taps()

        def loss_fn(out: Tensor, y: Tensor) -> Tensor:
            return lam * F.cross_entropy(out.reshape(len(y), -1), y)

        def extra_loss(model: torch.nn.Module, xb: Tensor, out: Tensor, yb: Tensor) -> Tensor:
            if isinstance(model, Distiller):
                taps = model.taps
            elif names and isinstance(model, TorchExecutor):
                env = model.run({model.graph.inputs[0]: xb}, keep=True)
                taps = {n: env[n] for n in names}
            else:
                taps = {}
            return self.kd_loss(xb, out, taps)

        return {"loss_fn": loss_fn, "extra_loss": extra_loss}


class Distiller(torch.nn.Module):
    """The student executor plus the objective's adapters: forward gives the student's output, keeping its taps."""

    def __init__(self, student: TorchExecutor, objective: KDObjective) -> None:
        super().__init__()
        self.student = student
        self.objective = objective.to(next((p.dtype for p in student.parameters()), torch.float64))  # student's dtype
        self.taps: dict[str, Tensor] = {}

    def forward(self, x: Tensor | np.ndarray) -> Tensor:
        g = self.student.graph
        names = self.objective.student_taps()
        env = self.student.run({g.inputs[0]: x}, keep=bool(names))
        self.taps = {n: env[n] for n in names}
        return env[g.outputs[0]]


# -- training entry points ------------------------------------------------------------------------
@dataclass
class DistillResult:
    graph: Graph  #: the student graph with the trained weights
    distiller: Distiller  #: the trained student executor and adapters (eval mode)
    history: History = field(default_factory=History)


def distill(
    student: Graph,
    teachers: Sequence[Graph | TorchExecutor],
    x: np.ndarray,
    y: np.ndarray,
    config: DistillConfig | None = None,
    fit_config: FitConfig | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    **fit_kwargs: Any,
) -> DistillResult:
    """Train the float `student` graph on (x, integer labels y) with distillation from `teachers`.

    `fit_kwargs` go to `hwgen.train.loop.fit` (val, on_step, console, ...); loss_fn and extra_loss
    are the distiller's. The adapters train with the student and are dropped from the result graph.
    """
    if not np.issubdtype(np.asarray(y).dtype, np.integer):
        raise DataError("distill: y must be integer class labels (the teachers give the soft targets)")
    objective = KDObjective(student, teachers, config)
    d = Distiller(TorchExecutor(student, Mode.FLOAT, dtype=dtype), objective)
    history = fit(d, x, y, fit_config or FitConfig(), **objective.fit_kwargs(), **fit_kwargs)
    d.eval()
    return DistillResult(d.student.write_back(), d, history)


def distill_qat(
    quant_student: Graph,
    teachers: Sequence[Graph | TorchExecutor],
    x: np.ndarray,
    y: np.ndarray,
    config: DistillConfig | None = None,
    fit_config: FitConfig | None = None,
    *,
    float_student: Graph | None = None,
    **qat_kwargs: Any,
) -> QATResult:
    """KD-assisted QAT: `hwgen.train.qat.qat` on the quantized student, float teachers' terms as extra_loss.

    Hints are refused (qat trains only its own executor's parameters, so adapters would stay at
    their random initialization); logits and attention terms work.
    """
    config = config or DistillConfig()
    if config.hints:
        raise ConfigError(
            "distill_qat: hint KD needs trained adapters, which qat() cannot optimize; use logits or attention terms"
        )
    objective = KDObjective(quant_student, teachers, config)
    return qat(quant_student, x, y, fit_config, float_graph=float_student, **objective.fit_kwargs(), **qat_kwargs)


__all__ = [
    "LOGIT_KINDS",
    "Attention",
    "DistillConfig",
    "DistillResult",
    "Distiller",
    "Hint",
    "KDObjective",
    "as_teacher",
    "attention_loss",
    "attention_map",
    "distill",
    "distill_qat",
    "kd_kl",
    "kd_mix",
    "kd_mse",
    "logits_kd",
    "make_adapter",
    "mean_logits",
    "soft_cross_entropy",
    "soft_targets",
]
