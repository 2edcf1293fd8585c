"""``harness sweep confirm``: the best trial's schedule, the paper's schedule and ``plain`` rerun on seeds the sweep
never tuned on.

A sweep picks its winner on ``sweep.seed``; judged on that seed again, part of the winner's lead is selection.
DomainBed keeps its hyper-parameter and trial seeds apart for the same reason. The best schedule runs in the
MLflow experiment ``<name>_best`` (the one the rerun command a sweep prints writes to, so runs made with that command
are reused), the paper's schedule and ``plain`` in the experiment's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna

from harness.config import Config, load_config

from .results import fresh_seeds
from .space import ORDERING_METHODS, suggest, trial_config, trial_overrides
from .study import Sweep, SweepError, load_study
from .worker import best_trials

PAPER_METHOD = "discl_diverse_to_specific"


@dataclass
class Arm:
    """One schedule of a confirmation: its row label, the config it runs with and its method."""

    label: str
    cfg: Config
    method: str
    run_ids: list[str] = field(default_factory=list)  # filled by ``run_confirm``


def confirm_seeds(sweep: Sweep, seeds: list[int] | None) -> list[int]:
    """The seeds to confirm on: ``seeds`` (refused when they hold the tuning seed), else fresh ones."""
    if not seeds:
        return fresh_seeds(sweep.seed)
    if sweep.seed in seeds:
        fresh = " ".join(map(str, fresh_seeds(sweep.seed, len(set(seeds)))))
        raise SweepError(
            f"--seeds {' '.join(map(str, seeds))}: seed {sweep.seed} is the sweep's tuning seed (sweep.seed), on "
            f"which it picked its best trial; confirm on seeds it never saw, e.g. --seeds {fresh}"
        )
    return list(dict.fromkeys(seeds))


def paper_method(cfg: Config) -> str:
    """The experiment's DisCL method as configured: the first curriculum method in ``methods``."""
    return next((m for m in cfg.methods if m in ORDERING_METHODS.values()), PAPER_METHOD)


def confirm_arms(sweep: Sweep, seeds: list[int]) -> list[Arm]:
    """The best trial's schedule, the paper's and ``plain``, each configured to run on ``seeds``."""
    best = best_trials(load_study(sweep))
    if not best:
        raise SweepError(f"study {sweep.study_name!r} has no completed trial yet: run `harness sweep` first")
    trial = best[0]
    seeds_set = f"seeds={seeds}"
    best_cfg = load_config(
        sweep.experiment,
        [*sweep.overrides, *trial_overrides(sweep.cfg, trial.params), f"name={sweep.cfg.name}_best", seeds_set],
    )
    _, best_method = trial_config(sweep.cfg, suggest(optuna.trial.FixedTrial(trial.params), sweep.cfg))
    own = load_config(sweep.experiment, [*sweep.overrides, seeds_set])
    paper = paper_method(own)
    return [
        Arm(f"best trial {trial.number}", best_cfg, best_method),
        Arm(f"paper {paper}", own, paper),
        Arm("plain", own, "plain"),
    ]


def run_confirm(sweep: Sweep, seeds: list[int], progress: bool = True) -> list[Arm]:
    """Each arm trained on ``seeds`` (finished runs of the same config are reused); their MLflow run ids noted."""
    from harness.runs.runner import run_experiment

    arms = confirm_arms(sweep, seeds)
    for arm in arms:
        done = run_experiment(arm.cfg, Path(sweep.workdir), [arm.method], seeds, progress=progress)
        arm.run_ids = [r for r in done.get("run_id", []) if r]
    return arms
