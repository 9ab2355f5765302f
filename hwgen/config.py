"""Build configuration: one validated schema, read from a TOML file and/or CLI flags.

```toml
[quantize]
weight_bits = 8            # default W8A8
act_bits = 8
input_bits = 8             # defaults to act_bits
calibration = "minmax"     # or "percentile"
percentile = 99.99
rounding = "half_even"     # requantization: floor | half_up | half_even
input_rounding = "half_even"

[hardware]
target_ii = 0              # 0: balance every layer to the longest input vector
clock_mhz = 200.0
part = "xcu250-figd2104-2L-e"

[layers.fc1]               # per layer, by IR or ONNX node name
weight_bits = 4
act_bits = 4
reuse = 64
```
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from hwgen.errors import ConfigError
from hwgen.numerics import Rounding


class Calibration(StrEnum):
    MINMAX = "minmax"  #: the largest |x| seen
    PERCENTILE = "percentile"  #: the given percentile of |x| (clips rare outliers)


@dataclass(frozen=True)
class QuantConfig:
    weight_bits: int = 8  #: default weight width of every MAC layer
    act_bits: int = 8  #: default activation (layer output) width
    input_bits: int | None = None  #: width of the model input; None = act_bits
    calibration: Calibration = Calibration.MINMAX  #: how activation ranges are chosen
    percentile: float = 99.99  #: for calibration = percentile
    rounding: Rounding = Rounding.HALF_EVEN  #: requantization rounding of every layer
    input_rounding: Rounding = Rounding.HALF_EVEN  #: how float inputs become codes
    #: number format spec of every MAC layer's weights / outputs (hwgen.numerics.parse_format, e.g.
    #: "minifloat<e4m3,bias=7,denorm>"); None = fixed point of weight_bits / act_bits
    weight_format: str | None = None
    act_format: str | None = None
    #: imported (QDQ/QONNX) non-power-of-two scales: "integer" (exact multiplier + shift) or "float32"
    #: (onnxruntime's float32 product, reproduced exactly in integer logic); other models ignore it
    requant_arith: str = "integer"


@dataclass(frozen=True)
class HardwareConfig:
    target_ii: int = 0  #: cycles per sample each layer may take; 0 = the longest input vector
    clock_mhz: float = 200.0  #: clock constraint for the HLS/Vivado scripts
    part: str = "xcu250-figd2104-2L-e"  #: FPGA part for the vendor scripts
    #: fit the foldings to this device (hwgen.hw.devices name, e.g. "lfe5u-85f"); "" = no device
    device: str = ""
    #: a Dense layer whose weight density is below this gets the sparse engine; 0 = never
    sparse_threshold: float = 0.0
    #: rewrite 3x3 stride-1 group-1 convolutions as Winograd: "off", "2" (F(2x2,3x3)), "4", "auto"
    winograd: str = "off"
    #: weight storage of every sparse-engine layer: "plain" (fixed width) or "huffman" (decoded on the fly)
    weight_coding: str = "plain"


@dataclass(frozen=True)
class LayerConfig:
    weight_bits: int | None = None
    act_bits: int | None = None
    reuse: int | None = None  #: products per multiplier; None = from hardware.target_ii
    engine: str | None = None  #: "dense" or "sparse" (EIE-style CSC engine); None = by sparse_threshold
    pes: int | None = None  #: processing elements of a sparse engine
    index_bits: int | None = None  #: relative-index width of a sparse engine's CSC encoding
    #: "plain" or "huffman": a sparse engine's weight codes at fixed width or Huffman-coded; None = hardware's
    weight_coding: str | None = None
    #: longest Huffman code of a Huffman-coded sparse engine's weights (the decoder window); None = 16
    max_code_length: int | None = None
    winograd: str | None = None  #: per-layer override of hardware.winograd
    weight_format: str | None = None  #: per-layer override of quantize.weight_format
    act_format: str | None = None  #: per-layer override of quantize.act_format


@dataclass(frozen=True)
class BuildConfig:
    quantize: QuantConfig = field(default_factory=QuantConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    layers: dict[str, LayerConfig] = field(default_factory=dict)

    def layer(self, *names: str) -> LayerConfig:
        """The override for a node known by any of `names` (IR name, ONNX name)."""
        for n in names:
            if n in self.layers:
                return self.layers[n]
        return LayerConfig()


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table of key = value pairs, got {data!r}")
    allowed = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = allowed[key]
        kind = str(f.type)
        try:
            if "Rounding" in kind:
                value = Rounding(value)
            elif "Calibration" in kind:
                value = Calibration(value)
            elif kind.startswith("int"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"expected an integer, got {value!r}")
            elif kind.startswith("float"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"expected a number, got {value!r}")
                value = float(value)
            elif kind.startswith("str") and not isinstance(value, str):
                raise ValueError(f"expected a string, got {value!r}")
        except ValueError as e:
            raise ConfigError(f"{where}.{key}: {e}") from None
        kwargs[key] = value
    obj = cls(**kwargs)
    _check(obj, where)
    return obj


def _check(obj: Any, where: str) -> None:
    for name in ("weight_bits", "act_bits", "input_bits"):
        v = getattr(obj, name, None)
        if v is not None and not 2 <= v <= 32:
            raise ConfigError(f"{where}.{name} = {v}: bit widths must be between 2 and 32")
    v = getattr(obj, "reuse", None)
    if v is not None and v < 1:
        raise ConfigError(f"{where}.reuse = {v}: the reuse factor must be >= 1")
    v = getattr(obj, "percentile", None)
    if v is not None and not 50.0 < v <= 100.0:
        raise ConfigError(f"{where}.percentile = {v}: must be in (50, 100]")
    v = getattr(obj, "clock_mhz", None)
    if v is not None and (not math.isfinite(v) or v <= 0):
        raise ConfigError(f"{where}.clock_mhz = {v}: must be positive (a finite number of MHz)")
    v = getattr(obj, "device", None)
    if v:
        from hwgen.hw.devices import get_device

        try:
            get_device(v)
        except ConfigError as e:  # it lists the known devices; say where the name came from
            raise ConfigError(f"{where}.device: {e}") from None
    v = getattr(obj, "target_ii", None)
    if v is not None and v < 0:
        raise ConfigError(f"{where}.target_ii = {v}: must be >= 0")
    _check_choice(obj, "engine", ("dense", "sparse"), where)
    _check_choice(obj, "winograd", WINOGRAD_CHOICES, where)
    _check_choice(obj, "weight_coding", WEIGHT_CODINGS, where)
    _check_choice(obj, "requant_arith", REQUANT_ARITHS, where)
    v = getattr(obj, "pes", None)
    if v is not None and v < 1:
        raise ConfigError(f"{where}.pes = {v}: a sparse engine needs at least 1 processing element")
    v = getattr(obj, "index_bits", None)
    if v is not None and not 1 <= v <= 16:
        raise ConfigError(f"{where}.index_bits = {v}: relative indices are 1..16 bits wide")
    v = getattr(obj, "max_code_length", None)
    if v is not None:
        from hwgen.passes.huffman import MAX_CODE_LENGTH

        if not 2 <= v <= MAX_CODE_LENGTH:
            raise ConfigError(f"{where}.max_code_length = {v}: Huffman codes of 2..{MAX_CODE_LENGTH} bits")
    v = getattr(obj, "sparse_threshold", None)
    if v is not None and not 0.0 <= v <= 1.0:
        raise ConfigError(f"{where}.sparse_threshold = {v}: a weight density, between 0 and 1")
    for name in ("weight_format", "act_format"):
        v = getattr(obj, name, None)
        if v is not None:
            from hwgen.numerics import parse_format

            try:
                parse_format(v)
            except Exception as e:  # FormatError / ValueError: say which key held the bad spec
                raise ConfigError(f"{where}.{name} = {v!r}: {e}") from None


WINOGRAD_CHOICES = ("off", "2", "4", "auto")
#: hwgen.passes.quantize.RequantArith
REQUANT_ARITHS = ("integer", "float32")
#: how a sparse engine stores its weight codes (hwgen.hw.sparse.WEIGHT_CODINGS)
WEIGHT_CODINGS = ("plain", "huffman")


def _check_choice(obj: Any, name: str, choices: tuple[str, ...], where: str) -> None:
    v = getattr(obj, name, None)
    if v is not None and v not in choices:
        raise ConfigError(f"{where}.{name} = {v!r}: must be one of {list(choices)}")


def config_from_dict(data: dict[str, Any], where: str = "config") -> BuildConfig:
    unknown = sorted(set(data) - {"quantize", "hardware", "layers"})
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown}; allowed: ['hardware', 'layers', 'quantize']")
    layers_raw = data.get("layers", {})
    if not isinstance(layers_raw, dict):
        raise ConfigError(f"{where}: [layers] must be a table of per-layer tables")
    return BuildConfig(
        quantize=_build(QuantConfig, data.get("quantize", {}), f"{where}: [quantize]"),
        hardware=_build(HardwareConfig, data.get("hardware", {}), f"{where}: [hardware]"),
        layers={k: _build(LayerConfig, v, f"{where}: [layers.{k}]") for k, v in layers_raw.items()},
    )


def load_config(path: str | Path | None) -> BuildConfig:
    """Read a TOML build config; None gives the defaults."""
    if path is None:
        return BuildConfig()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    return config_from_dict(data, str(p))


def with_overrides(cfg: BuildConfig, **quant: Any) -> BuildConfig:
    """A copy with [quantize] keys replaced (CLI flags such as --weight-bits)."""
    quant = {k: v for k, v in quant.items() if v is not None}
    if not quant:
        return cfg
    current = {f.name: getattr(cfg.quantize, f.name) for f in fields(QuantConfig)}
    merged = {k: v for k, v in current.items() if v is not None} | quant
    return replace(cfg, quantize=_build(QuantConfig, merged, "command line"))


def with_hardware(cfg: BuildConfig, **hardware: Any) -> BuildConfig:
    """A copy with [hardware] keys replaced (CLI flags such as --device); None leaves a key as it is."""
    hardware = {k: v for k, v in hardware.items() if v is not None}
    if not hardware:
        return cfg
    current = {f.name: getattr(cfg.hardware, f.name) for f in fields(HardwareConfig)}
    return replace(cfg, hardware=_build(HardwareConfig, current | hardware, "command line"))
