"""The end of a sweep: the best trial's run tagged, Optuna's plots, a trials table and ``best.yaml`` (with the
command that reruns the best schedule over seeds) on the parent run."""

from __future__ import annotations

import logging
import shlex
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.core.io import lock
from harness.runs.tracking import Run

from .space import trial_overrides
from .study import PARENT_ATTR, Sweep, load_study
from .worker import FINISHED, best_trials, count_trials

log = logging.getLogger("harness.sweep")


def finalize(sweep: Sweep, n_trials: int) -> dict[str, Any]:
    """Tag the best trial's run, log Optuna's plots and a trials table on the parent; idempotent."""
    study = load_study(sweep)
    with lock(sweep.workdir / "sweeps" / f"{sweep.study_name}.finalize"):
        parent = Run(sweep.workdir, sweep.cfg.name, "", run_id=study.user_attrs[PARENT_ATTR])
        best = best_trials(study)
        best_ids = {t.user_attrs.get("mlflow_run_id") for t in best}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            run_id = t.user_attrs.get("mlflow_run_id")
            if run_id:
                parent.c.set_tag(run_id, "best", "true" if run_id in best_ids else "false")
        log_plots(study, parent, sweep.objectives)
        parent.log_frame(study.trials_dataframe(), "trials.csv")
        c = count_trials(study.get_trials(deepcopy=False))
        summary = {
            "finished": c.finished,
            "complete": c.complete,
            "pruned": c.pruned,
            "failed": c.failed,
            "retried": c.retried,
            "surplus": c.surplus,
        }
        parent.log_metrics({f"sweep/{k}": v for k, v in summary.items()})
        if best:
            parent.log_metrics({f"best/{o}": v for o, v in zip(sweep.objectives, best[0].values)})
            parent.set_tags({"best_trial": best[0].number, "best_run_id": best[0].user_attrs.get("mlflow_run_id")})
            parent.log_text(best_summary_yaml(sweep, study, best), "best.yaml")
        paper = paper_trial(study)
        if paper is not None and paper.state == TrialState.COMPLETE:
            parent.log_metrics({f"paper/{o}": v for o, v in zip(sweep.objectives, paper.values)})
        parent.end("FINISHED" if c.finished >= n_trials else "RUNNING")
    return {"study": study, "best": best, "paper": paper, **summary}


def paper_trial(study: optuna.Study) -> FrozenTrial | None:
    done = [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.user_attrs.get("schedule") == "paper"]
    return done[0] if done else None


RERUN_SEEDS = 3  # fresh seeds the printed rerun command (and ``harness sweep confirm`` by default) runs on


def fresh_seeds(tuning_seed: int, count: int = RERUN_SEEDS) -> list[int]:
    """The first ``count`` non-negative seeds other than the sweep's tuning seed: a schedule validation picked on
    that seed is judged on seeds it never saw."""
    return [s for s in range(count + 1) if s != tuning_seed][:count]


def rerun_command(sweep: Sweep, trial_params: dict[str, Any], seeds: list[int] | None = None) -> str:
    """``harness run`` of a trial's schedule on ``seeds`` (default: fresh seeds, never ``sweep.seed``)."""
    sets = [
        *sweep.overrides,
        *trial_overrides(sweep.cfg, trial_params),
        f"name={sweep.cfg.name}_best",
        f"seeds={seeds if seeds is not None else fresh_seeds(sweep.seed)}",
    ]
    return shlex.join(
        [
            "harness",
            "run",
            "--experiment",
            sweep.experiment,
            "--workdir",
            str(sweep.workdir),
            *[a for text in sets for a in ("--set", text)],
        ]
    )


def best_summary_yaml(sweep: Sweep, study: optuna.Study, best: list[FrozenTrial]) -> str:
    import yaml

    rows = [
        {
            "trial": t.number,
            "values": dict(zip(sweep.objectives, t.values)),
            "params": t.params,
            "method": t.user_attrs.get("method"),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "rerun_over_seeds": rerun_command(sweep, t.params),
        }
        for t in best
    ]
    return yaml.safe_dump({"study": study.study_name, "best": rows}, sort_keys=False)


def log_plots(study: optuna.Study, parent: Run, objectives: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    multi = len(objectives) > 1
    target = (
        {"target": (lambda t: t.values[0]), "target_name": objectives[0]} if multi else {"target_name": objectives[0]}
    )
    plots = {
        "optimization_history": lambda: ovm.plot_optimization_history(study, **target),
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study, **target),
    }
    if len(complete) >= 2:  # importances need at least two completed trials
        plots["param_importances"] = lambda: ovm.plot_param_importances(study, **target)
    if multi:
        plots["pareto_front"] = lambda: ovm.plot_pareto_front(study, target_names=objectives)
    for name, draw in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            log.info("plot %s skipped: %s", name, e)
            continue
        fig = getattr(axes, "figure", None) or axes.flat[0].figure
        fig.set_size_inches(9, 5)
        fig.tight_layout()
        parent.log_figure(fig, f"plots/{name}.png")
        plt.close(fig)
