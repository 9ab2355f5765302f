"""Mixed-precision design-space search on an Optuna study (TPE for one objective, NSGA-II for several).

The study lives in an RDB storage (SQLite by default, PostgreSQL for several machines): every
worker process runs `run_search` on the same study name and storage, and the study stops when it
holds `trials` completed trials in all. Each finished trial is one committed row, so a worker
killed mid-trial loses only its running trial: the heartbeat marks it FAIL after the grace
period and `RetryHeartbeatStaleTrialCallback` re-queues its parameters.

Objectives (`objectives`): "accuracy" (maximize, golden-model PTQ top-1 on the validation
subset) and "cost" (minimize, `area` = LUT + LUT_PER_DSP x DSP from the calibrated cost model).
With one objective "cost", the value is the area relative to uniform W8A8 plus a penalty for
every point of accuracy lost beyond `max_loss` (cost-constrained accuracy).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwgen.errors import ConfigError
from hwgen.search.evaluate import Evaluator
from hwgen.search.space import FixedPointSpace, choice_from_params, config_toml

log = logging.getLogger(__name__)

OBJECTIVES = {"accuracy": "maximize", "cost": "minimize", "latency": "minimize"}
#: single-objective penalty per unit of accuracy (1.0 = 100 points) lost beyond max_loss
PENALTY = 100.0
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30


@dataclass
class SearchOptions:
    trials: int
    objectives: tuple[str, ...] = ("cost",)
    study: str = "hwgen"
    storage: str | None = None  #: None: sqlite:///OUT/study.db
    max_loss: float = 0.005  #: accuracy loss allowed against uniform W8A8 (fraction)
    seed: int | None = None
    seeds: tuple[dict[str, dict[str, int]], ...] = ()  #: choices enqueued first (e.g. from sensitivity)
    grace: int = GRACE_SECONDS  #: a RUNNING trial without heartbeat this long is failed and retried


def storage_for(url: str | None, out: Path, grace: int = GRACE_SECONDS) -> Any:
    """An RDBStorage with heartbeats, so trials of killed workers are failed and retried."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(out / 'study.db').resolve()}"
    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        raise ConfigError(f"--storage {url!r}: use an RDB URL (sqlite:///FILE or postgresql://USER@HOST/DB)")
    kwargs: dict[str, Any] = {"pool_pre_ping": True} if not url.startswith("sqlite:") else {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5.0: a known, wanted feature
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=max(1, min(HEARTBEAT_SECONDS, grace // 3)),
            grace_period=grace,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
        )


def _sampler(n_objectives: int, seed: int | None) -> Any:
    import optuna

    if n_objectives == 1:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)


def open_study(opts: SearchOptions, out: Path) -> Any:
    import optuna

    bad = [o for o in opts.objectives if o not in OBJECTIVES]
    if bad or not opts.objectives:
        raise ConfigError(f"--objectives {','.join(opts.objectives)}: choose from {', '.join(OBJECTIVES)}")
    return optuna.create_study(
        study_name=opts.study,
        storage=storage_for(opts.storage, out, opts.grace),
        sampler=_sampler(len(opts.objectives), opts.seed),
        directions=[OBJECTIVES[o] for o in opts.objectives],
        load_if_exists=True,
    )


def _completed(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def reference(study: Any, ev: Evaluator, space: FixedPointSpace) -> dict[str, Any]:
    """Uniform W8A8 accuracy and area, computed once and kept in the study for every worker."""
    ref = study.user_attrs.get("reference")
    if ref is None:
        r = ev.evaluate(space.to_config(space.uniform(8, 8), ev.base))
        ref = {k: r[k] for k in ("accuracy", "area", "LUT", "DSP", "FF", "BRAM")}
        study.set_user_attr("reference", ref)
    return ref


def run_search(ev: Evaluator, space: FixedPointSpace, opts: SearchOptions, out: Path) -> Any:
    """Run trials until the study holds `opts.trials` completed ones; return the study."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    study = open_study(opts, out)
    ref = reference(study, ev, space)
    if not study.get_trials(deepcopy=False) and opts.seeds:
        for choice in opts.seeds:
            study.enqueue_trial(space.params(choice), skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        choice = space.suggest(trial)
        r = ev.evaluate(space.to_config(choice, ev.base))
        for k in ("accuracy", "area", "LUT", "FF", "DSP", "BRAM", "LUTRAM", "latency", "ii"):
            trial.set_user_attr(k, r[k])
        values = {"accuracy": r["accuracy"], "cost": r["area"], "latency": float(r["latency"])}
        if len(opts.objectives) == 1 and opts.objectives[0] == "cost":
            excess = max(0.0, ref["accuracy"] - r["accuracy"] - opts.max_loss)
            return r["area"] / ref["area"] + PENALTY * excess
        if len(opts.objectives) == 1:
            return values[opts.objectives[0]]
        return tuple(values[o] for o in opts.objectives)

    if _completed(study) < opts.trials:
        study.optimize(
            objective,
            callbacks=[MaxTrialsCallback(opts.trials, states=(TrialState.COMPLETE,))],
            catch=(),
        )
    return study


def trial_rows(study: Any) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rows.append(
            {
                "number": t.number,
                "params": dict(t.params),
                **{k: t.user_attrs.get(k) for k in ("accuracy", "area", "LUT", "DSP", "FF", "BRAM", "latency", "ii")},
            }
        )
    return rows


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows no other row beats on both accuracy (higher) and area (lower), by increasing area."""
    front = []
    for r in rows:
        dominated = any(
            o["accuracy"] >= r["accuracy"]
            and o["area"] <= r["area"]
            and (o["accuracy"] > r["accuracy"] or o["area"] < r["area"])
            for o in rows
        )
        if not dominated:
            front.append(r)
    uniq = {(r["accuracy"], r["area"]): r for r in sorted(front, key=lambda r: r["number"], reverse=True)}
    return sorted(uniq.values(), key=lambda r: r["area"])


def choose(rows: list[dict[str, Any]], ref: dict[str, Any], max_loss: float) -> dict[str, Any] | None:
    """The cheapest point within max_loss of the W8A8 reference accuracy (None when none is)."""
    ok = [r for r in rows if r["accuracy"] >= ref["accuracy"] - max_loss - 1e-12]
    return min(ok, key=lambda r: (r["area"], -r["accuracy"], r["number"])) if ok else None


def write_report(study: Any, ev: Evaluator, space: FixedPointSpace, opts: SearchOptions, out: Path) -> dict[str, Any]:
    """OUT/pareto.{json,md,png} and OUT/best.toml (the chosen point as a `hwgen build --config` file)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    ref = study.user_attrs["reference"]
    front = pareto_front(rows)
    best = choose(rows, ref, opts.max_loss)
    doc = {
        "study": opts.study,
        "objectives": list(opts.objectives),
        "reference_w8a8": ref,
        "max_loss": opts.max_loss,
        "completed_trials": len(rows),
        "pareto": front,
        "chosen": best,
    }
    if best is not None:
        config = space.to_config(choice_from_params(best["params"]), ev.base)
        (out / "best.toml").write_text(config_toml(config))
        doc["chosen_area_vs_w8a8"] = round(best["area"] / ref["area"], 4)
    (out / "pareto.json").write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    lines = [
        f"Uniform W8A8: accuracy {100 * ref['accuracy']:.2f}%, area {ref['area']:.0f} "
        f"(LUT {ref['LUT']:.0f}, DSP {ref['DSP']:.0f}); {len(rows)} completed trials.",
        "",
        "| trial | accuracy | area | vs W8A8 | LUT | DSP | BRAM | II | bits (W/A per layer) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in front:
        c = choice_from_params(r["params"])
        bits = " ".join(f"{v.get('weight_bits')}/{v.get('act_bits')}" for v in c.values())
        mark = " (chosen)" if best is not None and r["number"] == best["number"] else ""
        lines.append(
            f"| {r['number']}{mark} | {100 * r['accuracy']:.2f}% | {r['area']:.0f} | {r['area'] / ref['area']:.3f} | "
            f"{r['LUT']:.0f} | {r['DSP']:.0f} | {r['BRAM']:.1f} | {r['ii']} | {bits} |"
        )
    (out / "pareto.md").write_text("\n".join(lines) + "\n")
    _plot(rows, front, ref, out / "pareto.png")
    return doc


def _plot(rows: list[dict[str, Any]], front: list[dict[str, Any]], ref: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["area"] for r in rows], [100 * r["accuracy"] for r in rows], s=10, c="0.6", label="trials")
    ax.plot([r["area"] for r in front], [100 * r["accuracy"] for r in front], "o-", c="C0", label="Pareto front")
    ax.scatter([ref["area"]], [100 * ref["accuracy"]], marker="*", s=120, c="C3", label="uniform W8A8")
    ax.set_xlabel("estimated area (LUT + 100 x DSP)")
    ax.set_ylabel("top-1 accuracy (%)")
    lo = min([100 * r["accuracy"] for r in front] + [100 * ref["accuracy"]])
    ax.set_ylim(max(0.0, math.floor(lo - 2)), 100)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["SearchOptions", "choose", "open_study", "pareto_front", "run_search", "storage_for", "write_report"]
