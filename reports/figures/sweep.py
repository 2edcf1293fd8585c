"""Sweep figures, drawn by Optuna's own matplotlib plots: per sweep (an MLflow parent run and its trial runs),
the objective per trial with the best so far, the objective against each sampled parameter and, with two or
more parameters, their importances.

The study is rebuilt in memory from the finished trial runs instead of being loaded from the sweep's Optuna
storage: a report is built from MLflow alone, and the storage (a journal file, a database on another host) need
not be reachable from where the report is built.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import optuna
import optuna.visualization.matplotlib as optuna_plots
import pandas as pd

from reports import collect
from reports.collect import RunSet
from reports.figures.base import Figure

MAX_SLICE_PARAMS = 4


@dataclass
class SweepPlot:
    name: str  # file stem under figures/
    title: str
    caption: str
    figure: object  # a matplotlib figure


def save_sweep_figures(rs: RunSet, folder: Path) -> list[Figure]:
    """Every sweep's plots saved as ``folder/NAME.png``. Optuna's plots switch matplotlib to its ggplot style:
    the settings are restored after, so the report's other figures keep theirs."""
    from harness.runs.plots import close

    made = []
    with matplotlib.rc_context():
        for plot in sweep_figures(rs):
            made.append(Figure(plot.name, plot.title, plot.caption, folder / f"{plot.name}.png"))
            plot.figure.savefig(made[-1].path, dpi=110, bbox_inches="tight")  # Optuna places legends outside
            close(plot.figure)
    return made


def sweep_figures(rs: RunSet) -> list[SweepPlot]:
    """Every sweep of the experiment with a finished trial that holds its objective, each sweep's plots."""
    trials = rs.sweep_runs
    parent_col = f"tags.{collect.PARENT_TAG}"
    if trials.empty or parent_col not in trials:
        return []
    plots = []
    for parent_id, group in trials[trials[parent_col].notna()].groupby(parent_col):
        parent = trials[trials.run_id == parent_id]
        objective = collect.sweep_objective(parent, group)
        if objective is None:
            continue
        done = group[group.status == "FINISHED"].sort_values("start_time")
        study = study_from_runs(done, objective)
        if not study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
            continue
        name = parent["tags.mlflow.runName"].iloc[0] if len(parent) else parent_id[:8]
        named = parent.get("tags.objective", pd.Series(dtype=str)).dropna()
        label = f"{objective} ({named.iloc[0]})" if objective.startswith("objective/") and len(named) else objective
        plots += study_plots(study, name, label)
    return plots


def sampled_params(done: pd.DataFrame) -> list[str]:
    """The parameter columns the trials differ in: the sampled ones, not the config they were applied to."""
    return [
        c
        for c in done.columns
        if c.startswith("params.") and not c.startswith("params.config.") and done[c].nunique() > 1
    ]


def distribution(values: pd.Series) -> optuna.distributions.BaseDistribution:
    """A parameter's range as the trials logged it (MLflow keeps strings): numbers as a float range, anything
    else as categories."""
    numbers = pd.to_numeric(values.dropna(), errors="coerce")
    if numbers.notna().all():
        return optuna.distributions.FloatDistribution(float(numbers.min()), float(numbers.max()))
    return optuna.distributions.CategoricalDistribution(sorted(values.dropna().astype(str).unique()))


def study_from_runs(done: pd.DataFrame, objective: str) -> optuna.Study:
    """The trials (finished runs, in start order) with their sampled parameters and objective as a maximized
    in-memory study, as the sweep maximizes its validation objectives; a trial without the objective is left out."""
    columns = sampled_params(done)
    distributions = {c[len("params.") :]: distribution(done[c]) for c in columns}
    with quiet_optuna():
        study = optuna.create_study(direction="maximize")
    for _, run in done.iterrows():
        value = run[f"metrics.{objective}"]
        if pd.isna(value):
            continue
        logged = {c[len("params.") :]: run[c] for c in columns if pd.notna(run[c])}
        params = {k: v if categorical(distributions[k]) else float(v) for k, v in logged.items()}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions={k: distributions[k] for k in params}, value=float(value)
            )
        )
    return study


def in_every_trial(study: optuna.Study) -> set[str]:
    """The parameters every trial has: those Optuna's importance evaluators assess."""
    return set.intersection(*(set(t.params) for t in study.trials))


def categorical(dist: optuna.distributions.BaseDistribution) -> bool:
    return isinstance(dist, optuna.distributions.CategoricalDistribution)


def study_plots(study: optuna.Study, name: str, label: str) -> list[SweepPlot]:
    params = list(dict.fromkeys(p for t in study.trials for p in t.params))
    with quiet_optuna():
        ax = optuna_plots.plot_optimization_history(study, target_name=label)
        ax.set_title(f"{name}: {label}")
        plots = [
            SweepPlot(
                f"sweep_{name}",
                f"Sweep {name}",
                "Objective per finished trial (in start order) and the best so far.",
                ax.figure,
            )
        ]
        if params:
            axes = optuna_plots.plot_slice(study, params=params[:MAX_SLICE_PARAMS], target_name=label)
            np.ravel(axes)[0].figure.suptitle(f"{name}: objective per parameter")
            plots.append(
                SweepPlot(
                    f"sweep_{name}_params",
                    f"Sweep {name}: objective per parameter",
                    "Objective of each finished trial against each varied parameter; colour: trial number.",
                    np.ravel(axes)[0].figure,
                )
            )
        if len(in_every_trial(study)) > 1 and len(study.trials) > 1:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # the same figure on every rebuild
            ax = optuna_plots.plot_param_importances(study, evaluator=evaluator, target_name=label)
            plots.append(
                SweepPlot(
                    f"sweep_{name}_importances",
                    f"Sweep {name}: parameter importances",
                    "How much of the objective's variance each parameter explains (fANOVA over the finished trials).",
                    ax.figure,
                )
            )
    return plots


@contextlib.contextmanager
def quiet_optuna():
    """Without Optuna's INFO lines (a new in-memory study) and its warning that the matplotlib plots are
    experimental; its verbosity restored after."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
