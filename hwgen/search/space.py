"""Search spaces: what a trial chooses per layer, and how a choice becomes a BuildConfig.

A space is pluggable (`SearchSpace`): the search only calls `suggest` and `to_config`, so other
number formats can be added as new spaces without touching the search loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from hwgen.config import BuildConfig, LayerConfig
from hwgen.ir.graph import Graph

MAC_OPS = ("Dense", "Conv")


def mac_layers(graph: Graph) -> list[str]:
    """The config keys (ONNX node names, else IR names) of the layers the search tunes."""
    return [n.onnx_name or n.name for n in graph.nodes if n.op in MAC_OPS]


class SearchSpace(Protocol):
    def suggest(self, trial: Any) -> dict[str, dict[str, int]]: ...

    def to_config(self, choice: dict[str, dict[str, int]], base: BuildConfig) -> BuildConfig: ...


@dataclass
class FixedPointSpace:
    """Per-layer fixed-point weight/activation widths in [lo, hi], optionally the reuse factor."""

    layers: list[str]
    lo: int = 2
    hi: int = 8
    reuse: tuple[int, ...] = ()  #: candidate reuse factors; () = leave reuse to the scheduler

    def suggest(self, trial: Any) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for name in self.layers:
            c = {
                "weight_bits": trial.suggest_int(f"{name}.weight_bits", self.lo, self.hi),
                "act_bits": trial.suggest_int(f"{name}.act_bits", self.lo, self.hi),
            }
            if self.reuse:
                c["reuse"] = trial.suggest_categorical(f"{name}.reuse", list(self.reuse))
            out[name] = c
        return out

    def uniform(self, weight_bits: int, act_bits: int) -> dict[str, dict[str, int]]:
        return {n: {"weight_bits": weight_bits, "act_bits": act_bits} for n in self.layers}

    def params(self, choice: dict[str, dict[str, int]]) -> dict[str, int]:
        """The Optuna parameter dict of a choice (for enqueue_trial)."""
        return {f"{n}.{k}": v for n, c in choice.items() for k, v in c.items()}

    def to_config(self, choice: dict[str, dict[str, int]], base: BuildConfig) -> BuildConfig:
        layers = dict(base.layers)
        for name, c in choice.items():
            prev = layers.get(name, LayerConfig())
            layers[name] = replace(prev, **{k: v for k, v in c.items() if k in ("weight_bits", "act_bits", "reuse")})
        return replace(base, layers=layers)


def choice_from_params(params: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Inverse of FixedPointSpace.params: {"fc1.weight_bits": 4} -> {"fc1": {"weight_bits": 4}}."""
    out: dict[str, dict[str, int]] = {}
    for key, v in params.items():
        name, _, field = key.rpartition(".")
        out.setdefault(name, {})[field] = int(v)
    return out


def config_toml(config: BuildConfig) -> str:
    """A TOML file `hwgen build --config` reads: [quantize], [hardware] and every [layers.NAME]."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[quantize]"]
    lines += [f"{k} = {value(v)}" for k, v in vars(config.quantize).items() if v is not None]
    lines += ["", "[hardware]"]
    lines += [f"{k} = {value(v)}" for k, v in vars(config.hardware).items() if v is not None]
    for name, lc in config.layers.items():
        keys = {k: v for k, v in vars(lc).items() if v is not None}
        if keys:
            lines += ["", f"[layers.{value(name)}]"] + [f"{k} = {value(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


__all__ = ["FixedPointSpace", "SearchSpace", "choice_from_params", "config_toml", "mac_layers"]
