"""Recipe schema: the shipped recipes load; unknown keys, bad values and bad orders name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwgen.compress.recipe import PruneStage, QuantizeStage, ShareStage, load_recipe, recipe_from_dict
from hwgen.errors import ConfigError, HwgenError

ROOT = Path(__file__).resolve().parents[2]


def _doc(*stages: dict) -> dict:
    return {"recipe": {"name": "t"}, "stage": list(stages)}


@pytest.mark.parametrize("name", ["deep_compression_lenet300", "deep_compression_lenet5", "prune_dynamic_fixed"])
def test_shipped_recipes_load(name: str) -> None:
    r = load_recipe(ROOT / "recipes" / f"{name}.toml")
    assert r.name == name
    assert isinstance(r.stages[0], PruneStage)


def test_deep_compression_recipe_shares_conv_at_8_and_fc_at_5_bits() -> None:
    r = load_recipe(ROOT / "recipes" / "deep_compression_lenet5.toml")
    share = next(s for s in r.stages if isinstance(s, ShareStage))
    assert share.bits == 5 and share.layers == {"node_conv2d": 8, "node_conv2d_1": 8}
    assert [s.kind for s in r.stages] == ["prune", "share", "quantize", "encode"]


def test_values_are_parsed() -> None:
    r = recipe_from_dict(
        _doc(
            {"kind": "prune", "layers": {"fc1": 0.9}, "rounds": 3, "lr": 0.01},
            {"kind": "quantize", "weight_bits": 6, "layers": {"fc1": {"act_bits": 16}}},
        ),
        "x.toml",
    )
    p, q = r.stages
    assert isinstance(p, PruneStage) and p.layers == {"fc1": 0.9} and p.rounds == 3 and p.lr == 0.01
    assert isinstance(q, QuantizeStage) and q.weight_bits_of("fc1") == 6 and q.layers["fc1"] == {"act_bits": 16}


@pytest.mark.parametrize(
    ("stage", "words"),
    [
        ({"kind": "prune", "sparsity": 0.5, "epoch": 1}, ["'epoch'", "unknown key"]),
        ({"kind": "prune", "sparsity": 1.5}, ["'sparsity'", "out of range"]),
        ({"kind": "prune", "sparsity": "high"}, ["'sparsity'", "expected a number"]),
        ({"kind": "prune", "method": "random", "sparsity": 0.5}, ["'method'", "magnitude"]),
        ({"kind": "prune"}, ["'sparsity'", "target"]),
        ({"kind": "prune", "scope": "global", "layers": {"a": 0.5}, "sparsity": 0.5}, ["'scope'"]),
        ({"kind": "prune", "method": "n:m", "n": 3, "m": 2}, ["'n'", "n <= m"]),
        ({"kind": "share", "bits": 0}, ["'bits'", "out of range"]),
        ({"kind": "share"}, ["'bits'"]),
        ({"kind": "quantize", "weight_bits": 1}, ["'weight_bits'"]),
        ({"kind": "quantize", "layers": {"fc1": {"bits": 4}}}, ["'bits'", "unknown key"]),
        ({"kind": "encode", "max_code_length": 40}, ["'max_code_length'"]),
        ({"kind": "finetune", "lr": 0}, ["'lr'"]),
        ({"kind": "finetune", "epochs": True}, ["'epochs'", "integer"]),
        ({"kind": "distill"}, ["'kind'", "'distill'"]),
        ({"kind": "encode", "layers": {"a": 1}}, ["'layers'"]),
    ],
)
def test_bad_stage_names_file_stage_and_key(stage: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        recipe_from_dict(_doc(stage), "my_recipe.toml")
    msg = str(e.value)
    assert msg.startswith("my_recipe.toml: [[stage]] #1")
    for w in words:
        assert w in msg


@pytest.mark.parametrize(
    ("kinds", "words"),
    [
        (["encode", "quantize"], "last"),
        (["quantize", "share"], "before"),
        (["share", "prune"], "'prune' must come before"),
        (["quantize", "quantize"], "appears 2 times"),
    ],
)
def test_stage_order_rules(kinds: list[str], words: str) -> None:
    extra = {"quantize": {}, "share": {"bits": 4}, "prune": {"sparsity": 0.5}, "encode": {}}
    with pytest.raises(ConfigError, match=words):
        recipe_from_dict(_doc(*({"kind": k, **extra[k]} for k in kinds)), "r.toml")


def test_top_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"r.toml: top level key 'stages'"):
        recipe_from_dict({"stages": []}, "r.toml")
    with pytest.raises(ConfigError, match=r"\[recipe\] key 'seed'"):
        recipe_from_dict({"recipe": {"seed": -1}, "stage": [{"kind": "finetune"}]}, "r.toml")
    with pytest.raises(ConfigError, match="no stages"):
        recipe_from_dict({"recipe": {}}, "r.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[stage]\nkind = 1")
    with pytest.raises(HwgenError, match=r"bad.toml: invalid TOML"):
        load_recipe(bad)
    with pytest.raises(HwgenError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.toml")


def test_stage_keys_change_from_the_edited_stage_on() -> None:
    stages = [{"kind": "prune", "sparsity": 0.5}, {"kind": "finetune", "epochs": 1}, {"kind": "encode"}]
    a = recipe_from_dict(_doc(*stages), "r.toml").stage_keys("base")
    stages[1] = {"kind": "finetune", "epochs": 2}
    b = recipe_from_dict(_doc(*stages), "r.toml").stage_keys("base")
    assert a[0] == b[0] and a[1] != b[1] and a[2] != b[2]
    assert recipe_from_dict(_doc(*stages), "r.toml").stage_keys("other")[0] != b[0]
