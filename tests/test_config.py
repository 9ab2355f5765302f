"""Build configuration: TOML schema, defaults, validation messages, per-layer overrides, CLI overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwgen.config import (
    BuildConfig,
    Calibration,
    HardwareConfig,
    LayerConfig,
    QuantConfig,
    config_from_dict,
    load_config,
    with_overrides,
)
from hwgen.errors import ConfigError
from hwgen.numerics import Rounding

FULL = """
[quantize]
weight_bits = 6
act_bits = 7
input_bits = 5
calibration = "percentile"
percentile = 99.5
rounding = "half_up"
input_rounding = "floor"

[hardware]
target_ii = 64
clock_mhz = 250
part = "xc7z020clg400-1"

[layers.fc1]
weight_bits = 4
act_bits = 4
reuse = 64

[layers."/classifier/Gemm"]
reuse = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hwgen.toml"
    p.write_text(text)
    return p


def test_defaults() -> None:
    cfg = load_config(None)
    assert cfg == BuildConfig()
    q = cfg.quantize
    assert (q.weight_bits, q.act_bits, q.input_bits) == (8, 8, None)
    assert q.calibration is Calibration.MINMAX and q.percentile == 99.99
    assert q.rounding is Rounding.HALF_EVEN and q.input_rounding is Rounding.HALF_EVEN
    assert cfg.hardware == HardwareConfig(target_ii=0, clock_mhz=200.0, part="xcu250-figd2104-2L-e")
    assert cfg.layers == {}
    assert cfg.layer("anything", "") == LayerConfig()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == BuildConfig()


def test_full_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.quantize == QuantConfig(6, 7, 5, Calibration.PERCENTILE, 99.5, Rounding.HALF_UP, Rounding.FLOOR)
    assert cfg.hardware == HardwareConfig(64, 250.0, "xc7z020clg400-1")
    assert isinstance(cfg.hardware.clock_mhz, float)  # an integer TOML value becomes a float
    assert cfg.layers == {"fc1": LayerConfig(4, 4, 64), "/classifier/Gemm": LayerConfig(reuse=1)}


def test_layer_lookup_by_any_name() -> None:
    cfg = config_from_dict({"layers": {"fc1": {"weight_bits": 4}, "/head/Gemm": {"reuse": 2}}})
    assert cfg.layer("fc1", "/fc1/Gemm") == LayerConfig(weight_bits=4)  # by IR name
    assert cfg.layer("gemm_3", "/head/Gemm") == LayerConfig(reuse=2)  # by ONNX name
    assert cfg.layer("other", "/other") == LayerConfig()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"quantize": {"weight_bit": 4}},
            r"\[quantize\]: unknown key\(s\) \['weight_bit'\]; allowed: \['act_bits', 'act_format', "
            r"'calibration', 'input_bits', 'input_rounding', 'percentile', 'requant_arith', 'rounding', "
            r"'weight_bits', 'weight_format'\]",
        ),
        (
            {"hardware": {"clock": 1}},
            r"\[hardware\]: unknown key\(s\) \['clock'\]; allowed: \['clock_mhz', 'device', 'part', "
            r"'sparse_threshold', 'target_ii', 'weight_coding', 'winograd'\]",
        ),
        (
            {"layers": {"fc1": {"bits": 4}}},
            r"\[layers\.fc1\]: unknown key\(s\) \['bits'\]; allowed: \['act_bits', 'act_format', "
            r"'engine', 'index_bits', 'max_code_length', 'pes', 'reuse', 'weight_bits', 'weight_coding', "
            r"'weight_format', 'winograd'\]",
        ),
        ({"quantise": {}}, r"unknown section\(s\) \['quantise'\]; allowed: \['hardware', 'layers', 'quantize'\]"),
        ({"layers": 3}, r"\[layers\] must be a table"),
    ],
)
def test_unknown_keys_and_sections(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"quantize": {"weight_bits": "8"}}, r"\[quantize\]\.weight_bits: expected an integer, got '8'"),
        ({"quantize": {"weight_bits": 8.0}}, r"weight_bits: expected an integer, got 8\.0"),
        ({"quantize": {"act_bits": True}}, r"act_bits: expected an integer, got True"),
        ({"quantize": {"percentile": "high"}}, r"percentile: expected a number, got 'high'"),
        ({"quantize": {"percentile": False}}, r"percentile: expected a number"),
        ({"quantize": {"rounding": "nearest"}}, r"\[quantize\]\.rounding: 'nearest' is not a valid Rounding"),
        ({"quantize": {"calibration": "max"}}, r"calibration: 'max' is not a valid Calibration"),
        ({"hardware": {"part": 7}}, r"\[hardware\]\.part: expected a string, got 7"),
        ({"hardware": {"target_ii": 1.5}}, r"target_ii: expected an integer"),
        ({"layers": {"fc": {"reuse": "4"}}}, r"\[layers\.fc\]\.reuse: expected an integer"),
    ],
)
def test_bad_types(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"quantize": {"weight_bits": 1}}, r"weight_bits = 1: bit widths must be between 2 and 32"),
        ({"quantize": {"act_bits": 33}}, r"act_bits = 33: bit widths must be between 2 and 32"),
        ({"quantize": {"input_bits": 0}}, r"input_bits = 0"),
        ({"layers": {"fc": {"weight_bits": 64}}}, r"\[layers\.fc\]\.weight_bits = 64"),
        ({"layers": {"fc": {"reuse": 0}}}, r"reuse = 0: the reuse factor must be >= 1"),
        ({"quantize": {"percentile": 50}}, r"percentile = 50\.0: must be in \(50, 100\]"),
        ({"quantize": {"percentile": 100.5}}, r"percentile = 100\.5"),
        ({"quantize": {"percentile": float("nan")}}, r"percentile = nan"),
        ({"hardware": {"clock_mhz": 0}}, r"clock_mhz = 0\.0: must be positive"),
        ({"hardware": {"clock_mhz": -100.0}}, r"clock_mhz = -100\.0"),
        ({"hardware": {"target_ii": -1}}, r"target_ii = -1: must be >= 0"),
    ],
)
def test_bad_ranges(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_range_limits_are_inclusive() -> None:
    cfg = config_from_dict({"quantize": {"weight_bits": 2, "act_bits": 32, "percentile": 100}})
    assert (cfg.quantize.weight_bits, cfg.quantize.act_bits, cfg.quantize.percentile) == (2, 32, 100.0)
    assert config_from_dict({"layers": {"x": {"reuse": 1}}}).layers["x"].reuse == 1


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_clock_must_be_finite(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="clock_mhz"):
        load_config(write(tmp_path, f"[hardware]\nclock_mhz = {value}\n"))


@pytest.mark.parametrize("text", ["quantize = 3\n", "[layers]\nfc1 = 3\n"], ids=["section", "layer"])
def test_sections_must_be_tables(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such config file"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"hwgen\.toml: invalid TOML"):
        load_config(write(tmp_path, "[quantize\nweight_bits = 4\n"))


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[quantize]\nact_bits = 99\n")
    with pytest.raises(ConfigError, match=rf"{p.name}: \[quantize\]\.act_bits = 99"):
        load_config(p)


# -- command-line overrides -------------------------------------------------------------------------
def test_with_overrides_without_values_is_the_same_config() -> None:
    cfg = config_from_dict({"quantize": {"weight_bits": 4}})
    assert with_overrides(cfg) is cfg
    assert with_overrides(cfg, weight_bits=None, act_bits=None) is cfg


def test_with_overrides_on_a_config_with_input_bits(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    out = with_overrides(cfg, weight_bits=3, rounding="floor")
    assert out.quantize.weight_bits == 3 and out.quantize.rounding is Rounding.FLOOR
    assert out.quantize.act_bits == 7 and out.quantize.input_bits == 5 and out.quantize.percentile == 99.5
    assert out.hardware == cfg.hardware and out.layers == cfg.layers
    assert cfg.quantize.weight_bits == 6  # the original is unchanged
    with pytest.raises(ConfigError, match=r"command line\.weight_bits = 40"):
        with_overrides(cfg, weight_bits=40)
    with pytest.raises(ConfigError, match=r"command line: unknown key\(s\) \['bits'\]"):
        with_overrides(cfg, bits=4)


def test_with_overrides_on_the_default_config() -> None:
    """input_bits = None (the default) survives an override of other keys (`hwgen build --weight-bits 4`)."""
    out = with_overrides(BuildConfig(), weight_bits=4, act_bits=6)
    assert (out.quantize.weight_bits, out.quantize.act_bits, out.quantize.input_bits) == (4, 6, None)


def test_hardware_device_is_validated_and_overridable() -> None:
    from hwgen.config import with_hardware

    cfg = config_from_dict({"hardware": {"device": "85k"}})
    assert cfg.hardware.device == "85k"
    with pytest.raises(ConfigError, match=r"\[hardware\].*unknown device 'no-such-fpga'"):
        config_from_dict({"hardware": {"device": "no-such-fpga"}})
    again = with_hardware(cfg, device="xc7a35t", part=None)
    assert (again.hardware.device, again.hardware.part) == ("xc7a35t", cfg.hardware.part)
    assert with_hardware(cfg) is cfg
    with pytest.raises(ConfigError, match="command line"):
        with_hardware(cfg, device="no-such-fpga")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"layers": {"fc1": {"engine": "systolic"}}}, r"\[layers\.fc1\]\.engine = 'systolic': must be one of"),
        ({"hardware": {"winograd": "3"}}, r"\[hardware\]\.winograd = '3': must be one of"),
        ({"quantize": {"requant_arith": "float64"}}, r"\[quantize\]\.requant_arith = 'float64': must be one of"),
        ({"layers": {"fc1": {"pes": 0}}}, r"pes = 0: a sparse engine needs at least 1"),
        ({"layers": {"fc1": {"index_bits": 40}}}, r"index_bits = 40: relative indices are 1\.\.16 bits"),
        ({"layers": {"fc1": {"max_code_length": 1}}}, r"fc1\]\.max_code_length = 1: Huffman codes of 2\.\.24"),
        ({"layers": {"fc1": {"max_code_length": 25}}}, r"max_code_length = 25: Huffman codes of 2\.\.24 bits"),
        ({"layers": {"fc1": {"max_code_length": "16"}}}, r"max_code_length: expected an integer"),
        ({"hardware": {"sparse_threshold": 1.5}}, r"sparse_threshold = 1\.5: a weight density"),
        ({"quantize": {"weight_format": "minifloat<e9m9>"}}, r"\[quantize\]\.weight_format = 'minifloat<e9m9>'"),
    ],
)
def test_engine_and_format_keys_are_validated(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_engine_and_format_keys_parse() -> None:
    cfg = config_from_dict(
        {
            "quantize": {"weight_format": "minifloat<e4m3,bias=7,denorm>"},
            "hardware": {"sparse_threshold": 0.25, "winograd": "auto"},
            "layers": {
                "fc1": {"engine": "sparse", "pes": 4, "index_bits": 6, "act_format": "bfp<m7,e5,block=8>"},
                "fc2": {"engine": "sparse", "weight_coding": "huffman", "max_code_length": 2},
                "fc3": {"weight_coding": "huffman", "max_code_length": 24},
            },
        }
    )
    assert cfg.quantize.weight_format == "minifloat<e4m3,bias=7,denorm>"
    assert (cfg.hardware.sparse_threshold, cfg.hardware.winograd) == (0.25, "auto")
    fc1 = cfg.layer("fc1")
    assert (fc1.engine, fc1.pes, fc1.index_bits, fc1.act_format) == ("sparse", 4, 6, "bfp<m7,e5,block=8>")
    assert fc1.max_code_length is None  # the build's default (16) applies
    assert (cfg.layer("fc2").max_code_length, cfg.layer("fc3").max_code_length) == (2, 24)  # limits are inclusive
