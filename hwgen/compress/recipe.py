"""Compression recipes: a validated TOML schema of ordered stages (prune, finetune, quantize, share, encode).

```toml
[recipe]
name = "deep_compression_lenet300"
seed = 0
batch_size = 128
val_fraction = 0.1      # held out of `x`/`y` when the data file has no x_val/y_val
calib_samples = 512     # first training samples used to calibrate activation ranges

[[stage]]               # stages run in file order
kind = "prune"
method = "magnitude"    # magnitude | n:m | channel
scope = "layer"         # layer | global (one threshold over all layers; needs one `sparsity`)
sparsity = 0.9          # default target (fraction of weights removed)
layers = { fc1 = 0.92 } # per-layer targets (IR or ONNX node names)
rounds = 4              # iterative prune -> fine-tune rounds (polynomial ramp)
epochs = 1              # fine-tune epochs per round
final_epochs = 4        # fine-tune epochs of the last round
lr = 1e-3

[[stage]]
kind = "share"          # k-means weight sharing; codebook entries on the quantize stage's weight grid
bits = 5
layers = { conv1 = 8 }
epochs = 2              # centroid fine-tuning
lr = 1e-4

[[stage]]
kind = "quantize"       # fixed point (per-layer power-of-two scale, i.e. dynamic fixed point)
weight_bits = 8
act_bits = 8
layers = { fc3 = { weight_bits = 8 } }
epochs = 1              # QAT (centroid fine-tuning through fake quantization when shared)
lr = 1e-4

[[stage]]
kind = "finetune"
epochs = 1
lr = 1e-4

[[stage]]
kind = "encode"         # CSC with relative indices + canonical length-limited Huffman
max_code_length = 16
index_bits = 6
```

Order rules: `encode` last and once; `share` before `quantize` (the codebook is chosen on float
weights, quantize keeps its codes); `prune` before `share` and `quantize`.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwgen.errors import ConfigError

STAGE_KINDS = ("prune", "finetune", "quantize", "share", "encode")
PRUNE_METHODS = ("magnitude", "n:m", "channel")
MAX_SHARE_BITS = 12


@dataclass(frozen=True)
class PruneStage:
    kind: str = "prune"
    method: str = "magnitude"
    scope: str = "layer"
    sparsity: float | None = None
    layers: dict[str, float] = field(default_factory=dict)
    rounds: int = 1
    epochs: int = 1
    final_epochs: int | None = None
    lr: float = 1e-3
    n: int = 2
    m: int = 4


@dataclass(frozen=True)
class FinetuneStage:
    kind: str = "finetune"
    epochs: int = 1
    lr: float = 1e-4


@dataclass(frozen=True)
class QuantizeStage:
    kind: str = "quantize"
    weight_bits: int = 8
    act_bits: int = 8
    calibration: str = "minmax"
    layers: dict[str, dict[str, int]] = field(default_factory=dict)
    epochs: int = 0
    lr: float = 1e-4

    def weight_bits_of(self, *names: str) -> int:
        for n in names:
            if n in self.layers and "weight_bits" in self.layers[n]:
                return self.layers[n]["weight_bits"]
        return self.weight_bits


@dataclass(frozen=True)
class ShareStage:
    kind: str = "share"
    bits: int | None = None
    layers: dict[str, int] = field(default_factory=dict)
    epochs: int = 0
    lr: float = 1e-4


@dataclass(frozen=True)
class EncodeStage:
    kind: str = "encode"
    max_code_length: int = 16
    index_bits: int = 6
    word_bits: int = 32


Stage = PruneStage | FinetuneStage | QuantizeStage | ShareStage | EncodeStage
_CLASSES: dict[str, type] = {
    "prune": PruneStage,
    "finetune": FinetuneStage,
    "quantize": QuantizeStage,
    "share": ShareStage,
    "encode": EncodeStage,
}


@dataclass(frozen=True)
class Recipe:
    path: str
    name: str
    stages: tuple[Stage, ...]
    seed: int = 0
    batch_size: int = 128
    val_fraction: float = 0.1
    calib_samples: int = 512

    def settings(self) -> dict[str, Any]:
        """The recipe-wide settings every stage depends on (part of each stage's checkpoint key)."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "val_fraction": self.val_fraction,
            "calib_samples": self.calib_samples,
        }

    def stage_keys(self, base: str) -> list[str]:
        """One hash per stage over `base` (model + data), the settings and every stage up to it.

        A changed stage changes its key and every later key, so resuming reruns exactly those.
        """
        keys, h = [], hashlib.sha256((base + json.dumps(self.settings(), sort_keys=True)).encode())
        for s in self.stages:
            h.update(json.dumps(asdict(s), sort_keys=True).encode())
            keys.append(h.copy().hexdigest()[:16])
        return keys

    @property
    def quantize(self) -> QuantizeStage | None:
        return next((s for s in self.stages if isinstance(s, QuantizeStage)), None)


# -- validation -------------------------------------------------------------------------------
class _Where:
    def __init__(self, path: str, section: str) -> None:
        self.path, self.section = path, section

    def err(self, key: str | None, why: str) -> ConfigError:
        k = f" key '{key}'" if key else ""
        return ConfigError(f"{self.path}: {self.section}{k}: {why}")


def _int(w: _Where, key: str, v: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise w.err(key, f"expected an integer, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        raise w.err(key, f"{v} is out of range; use {lo}..{hi if hi is not None else 'any'}")
    return v


def _float(w: _Where, key: str, v: Any, lo: float, hi: float, *, open_lo: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise w.err(key, f"expected a number, got {v!r}")
    if v < lo or v > hi or (open_lo and v == lo):
        raise w.err(key, f"{v} is out of range; use {'(' if open_lo else '['}{lo}, {hi}]")
    return float(v)


def _choice(w: _Where, key: str, v: Any, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        raise w.err(key, f"{v!r} is not one of {list(allowed)}")
    return str(v)


def _table(w: _Where, key: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise w.err(key, f"expected a table {{ layer = value, ... }}, got {v!r}")
    return v


def _unknown(w: _Where, data: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise w.err(extra[0], f"unknown key; allowed: {sorted(allowed)}")


def _bits(w: _Where, key: str, v: Any) -> int:
    return _int(w, key, v, 2, 16)


def _stage(w: _Where, data: dict[str, Any]) -> Stage:
    kind = _choice(w, "kind", data.get("kind"), STAGE_KINDS)
    cls = _CLASSES[kind]
    _unknown(w, data, set(cls.__dataclass_fields__))
    kw: dict[str, Any] = {}
    for key, v in data.items():
        if key == "kind":
            continue
        if key in ("epochs", "final_epochs"):
            kw[key] = _int(w, key, v, 0, 1000)
        elif key == "lr":
            kw[key] = _float(w, key, v, 0.0, 10.0, open_lo=True)
        elif key == "rounds":
            kw[key] = _int(w, key, v, 1, 100)
        elif key == "method":
            kw[key] = _choice(w, key, v, PRUNE_METHODS)
        elif key == "scope":
            kw[key] = _choice(w, key, v, ("layer", "global"))
        elif key == "calibration":
            kw[key] = _choice(w, key, v, ("minmax", "percentile"))
        elif key == "sparsity":
            kw[key] = _float(w, key, v, 0.0, 0.999)
        elif key in ("n", "m"):
            kw[key] = _int(w, key, v, 1, 64)
        elif key in ("weight_bits", "act_bits"):
            kw[key] = _bits(w, key, v)
        elif key == "bits":
            kw[key] = _int(w, key, v, 1, MAX_SHARE_BITS)
        elif key == "max_code_length":
            kw[key] = _int(w, key, v, 2, 24)
        elif key == "index_bits":
            kw[key] = _int(w, key, v, 1, 16)
        elif key == "word_bits":
            kw[key] = _int(w, key, v, 8, 64)
        elif key == "layers":
            kw[key] = _layers(w, kind, _table(w, key, v))
    st = cls(**kw)
    _check_stage(w, st)
    return st


def _layers(w: _Where, kind: str, table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, v in table.items():
        key = f"layers.{name}"
        if kind == "prune":
            out[name] = _float(w, key, v, 0.0, 0.999)
        elif kind == "share":
            out[name] = _int(w, key, v, 1, MAX_SHARE_BITS)
        elif kind == "quantize":
            sub = _table(w, key, v)
            _unknown(_Where(w.path, f"{w.section} {key}"), sub, {"weight_bits", "act_bits"})
            out[name] = {k: _bits(w, f"{key}.{k}", b) for k, b in sub.items()}
        else:
            raise w.err("layers", f"a {kind} stage takes no per-layer settings")
    return out


def _check_stage(w: _Where, st: Stage) -> None:
    if isinstance(st, PruneStage):
        if st.method == "n:m":
            if st.n > st.m:
                raise w.err("n", f"N:M sparsity needs n <= m, got {st.n}:{st.m}")
        elif st.sparsity is None and not st.layers:
            raise w.err("sparsity", "give a target sparsity (or per-layer targets in `layers`)")
        if st.scope == "global" and (st.layers or st.sparsity is None):
            raise w.err("scope", "global pruning takes one `sparsity` and no per-layer `layers`")
        if st.method != "magnitude" and st.rounds != 1:
            raise w.err("rounds", f"iterative rounds are for magnitude pruning; {st.method} prunes once")
    if isinstance(st, ShareStage) and st.bits is None and not st.layers:
        raise w.err("bits", "give the index width `bits` (or per-layer widths in `layers`)")


def _order(path: str, stages: list[Stage]) -> None:
    kinds = [s.kind for s in stages]
    for k in ("encode", "quantize", "share"):
        if kinds.count(k) > 1:
            raise ConfigError(f"{path}: [[stage]] '{k}' appears {kinds.count(k)} times; give it once")
    if "encode" in kinds and kinds[-1] != "encode":
        raise ConfigError(f"{path}: [[stage]] 'encode' must be the last stage (it only codes the final weights)")
    if "share" in kinds and "quantize" in kinds and kinds.index("share") > kinds.index("quantize"):
        raise ConfigError(
            f"{path}: [[stage]] 'share' comes after 'quantize'; put it before: the codebook is chosen on "
            "the float weights and quantize keeps its codes"
        )
    for i, k in enumerate(kinds):
        if k == "prune" and any(x in kinds[:i] for x in ("share", "quantize")):
            raise ConfigError(f"{path}: [[stage]] #{i + 1} 'prune' must come before 'share' and 'quantize'")


def recipe_from_dict(data: dict[str, Any], path: str = "recipe") -> Recipe:
    """Validate a parsed TOML document (see the module docstring); errors name the file and key."""
    top = _Where(path, "top level")
    _unknown(top, data, {"recipe", "stage"})
    head = _table(top, "recipe", data.get("recipe", {}))
    hw = _Where(path, "[recipe]")
    _unknown(hw, head, {"name", "seed", "batch_size", "val_fraction", "calib_samples"})
    name = head.get("name", Path(path).stem)
    if not isinstance(name, str) or not name:
        raise hw.err("name", f"expected a non-empty string, got {name!r}")
    raw = data.get("stage")
    if not isinstance(raw, list) or not raw:
        raise top.err("stage", "no stages; add [[stage]] tables with kind = " + " | ".join(STAGE_KINDS))
    stages = [_stage(_Where(path, f"[[stage]] #{i + 1}"), _table(top, f"stage #{i + 1}", s)) for i, s in enumerate(raw)]
    _order(path, stages)
    return Recipe(
        path=path,
        name=name,
        stages=tuple(stages),
        seed=_int(hw, "seed", head.get("seed", 0), 0),
        batch_size=_int(hw, "batch_size", head.get("batch_size", 128), 1, 1 << 16),
        val_fraction=_float(hw, "val_fraction", head.get("val_fraction", 0.1), 0.0, 0.9),
        calib_samples=_int(hw, "calib_samples", head.get("calib_samples", 512), 1),
    )


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe TOML file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such recipe file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    return recipe_from_dict(data, str(p))


__all__ = [
    "EncodeStage",
    "FinetuneStage",
    "PruneStage",
    "QuantizeStage",
    "Recipe",
    "ShareStage",
    "Stage",
    "load_recipe",
    "recipe_from_dict",
]
