"""The search: Pareto front, the chosen point's TOML, sensitivity seeds, and a short study on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwgen.config import load_config
from hwgen.search.evaluate import Evaluator
from hwgen.search.search import SearchOptions, choose, pareto_front, run_search, write_report
from hwgen.search.sensitivity import seed_choices, sensitivity
from hwgen.search.space import FixedPointSpace, choice_from_params, config_toml, mac_layers


def _row(n: int, acc: float, area: float) -> dict:
    return {"number": n, "accuracy": acc, "area": area, "params": {}}


def test_pareto_front_keeps_only_undominated_points() -> None:
    rows = [_row(0, 0.90, 100), _row(1, 0.95, 200), _row(2, 0.94, 250), _row(3, 0.80, 100), _row(4, 0.97, 400)]
    assert [r["number"] for r in pareto_front(rows)] == [0, 1, 4]


def test_choose_takes_the_cheapest_point_within_the_loss() -> None:
    rows = [_row(0, 0.990, 300), _row(1, 0.986, 120), _row(2, 0.980, 50)]
    assert choose(rows, {"accuracy": 0.99}, 0.005)["number"] == 1
    assert choose(rows, {"accuracy": 0.999}, 0.001) is None


def test_exported_toml_is_a_build_config(tmp_path: Path) -> None:
    space = FixedPointSpace(["fc0", "odd name.1"])
    choice = {"fc0": {"weight_bits": 3, "act_bits": 5}, "odd name.1": {"weight_bits": 7, "act_bits": 2}}
    assert choice_from_params(space.params(choice)) == choice
    path = tmp_path / "c.toml"
    path.write_text(config_toml(space.to_config(choice, load_config(None))))
    cfg = load_config(path)
    assert cfg.layers["fc0"].weight_bits == 3 and cfg.layers["fc0"].act_bits == 5
    assert cfg.layers["odd name.1"].weight_bits == 7 and cfg.layers["odd name.1"].act_bits == 2


def test_seed_choices_pick_the_fewest_tolerated_bits() -> None:
    sens = {
        "layers": {
            "a": {"weight_bits": {2: 0.2, 3: 0.0005, 4: 0.0}, "act_bits": {2: 0.1, 3: 0.01, 4: 0.0}},
            "b": {"weight_bits": {2: 0.3, 3: 0.2, 4: 0.1}, "act_bits": {2: 0.0, 3: 0.0, 4: 0.0}},
        }
    }
    first, wider, _ = seed_choices(sens, max_loss=0.005)
    assert first == {"a": {"weight_bits": 3, "act_bits": 4}, "b": {"weight_bits": 8, "act_bits": 2}}
    assert wider["a"] == {"weight_bits": 4, "act_bits": 5}


@pytest.fixture(scope="module")
def evaluator(tiny_search_files: tuple[Path, Path]) -> Evaluator:
    model, data = tiny_search_files
    return Evaluator.from_files(model, data, calib=100, val=300)


def test_torch_engine_agrees_with_the_golden_model(evaluator: Evaluator) -> None:
    space = FixedPointSpace(mac_layers(evaluator.graph))
    cfg = space.to_config(
        {
            "fc0": {"weight_bits": 3, "act_bits": 4},
            "fc1": {"weight_bits": 5, "act_bits": 3},
            "fc2": {"weight_bits": 4, "act_bits": 6},
        },
        evaluator.base,
    )
    golden = evaluator.evaluate(cfg)
    evaluator.engine = "torch"
    try:
        fast = evaluator.evaluate(cfg)
    finally:
        evaluator.engine = "exact"
    assert fast["accuracy"] == golden["accuracy"] and fast["area"] == golden["area"]


def test_sensitivity_drops_most_at_two_bits(evaluator: Evaluator) -> None:
    space = FixedPointSpace(mac_layers(evaluator.graph))
    sens = sensitivity(evaluator, space, bits=(2, 6))
    assert set(sens["layers"]) == {"fc0", "fc1", "fc2"}
    for row in sens["layers"].values():
        assert row["weight_bits"][2] >= row["weight_bits"][6] - 0.01
    assert max(row["weight_bits"][2] for row in sens["layers"].values()) > 0.02


def test_short_study_writes_front_plot_and_buildable_config(
    evaluator: Evaluator, tiny_search_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from hwgen.build import compile_model

    space = FixedPointSpace(mac_layers(evaluator.graph))
    opts = SearchOptions(trials=6, seed=0, max_loss=0.05, seeds=(space.uniform(6, 6),))
    study = run_search(evaluator, space, opts, tmp_path)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 6
    assert study.trials[0].params == space.params(space.uniform(6, 6))  # the seed ran first
    doc = write_report(study, evaluator, space, opts, tmp_path)
    for f in ("pareto.md", "pareto.json", "pareto.png", "study.db"):
        assert (tmp_path / f).stat().st_size > 0
    assert doc["chosen"] is not None
    assert doc["chosen"]["accuracy"] >= doc["reference_w8a8"]["accuracy"] - 0.05
    cfg = load_config(tmp_path / "best.toml")
    assert {n: {"weight_bits": c.weight_bits, "act_bits": c.act_bits} for n, c in cfg.layers.items()} == (
        choice_from_params(doc["chosen"]["params"])
    )
    _g, _qg, sched, _r = compile_model(tiny_search_files[0], cfg, tiny_search_files[1], lambda s: None)
    fc0 = next(p for p in sched.layers if p.source == "fc0")
    assert fc0.out.bits == cfg.layers["fc0"].act_bits  # the build honours the exported widths
    # a second run on the same storage resumes: nothing left to do at 6, two more at 8
    study2 = run_search(evaluator, space, SearchOptions(trials=8, seed=1, max_loss=0.05), tmp_path)
    assert sum(t.state.name == "COMPLETE" for t in study2.trials) == 8
