"""One trial: its config, its MLflow child run, training with per-epoch reports to the pruner, its values.

``run_trial`` is the body of the objective that ``study.optimize`` calls: it returns the objective values, or
raises (``optuna.TrialPruned`` when pruned, the error otherwise); Optuna then records the trial's state.
"""

from __future__ import annotations

import dataclasses

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from harness.config import Config, ConfigError
from harness.engine.preempt import launcher_tags
from harness.phases.filter import apply_filter
from harness.phases.pipeline import Prepared, fine_tune
from harness.runs.search import search_tagged
from harness.runs.tracking import Run, client

from .space import candidate_levels, level_param, suggest, trial_config
from .study import PARENT_ATTR, Sweep


def frozen_trial(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def retire_predecessor_runs(sweep: Sweep, study: optuna.Study, trial: optuna.Trial) -> None:
    """A retried trial replaces its dead predecessor's MLflow run: delete the unfinished one (restorable)."""
    numbers = RetryHeartbeatStaleTrialCallback.retry_history(frozen_trial(study, trial.number))
    if not numbers:
        return
    c = client(sweep.workdir)
    exp = c.get_experiment_by_name(sweep.cfg.name)
    for number in numbers:
        for r in search_tagged(c, [exp.experiment_id], {"sweep": sweep.study_name, "sweep_trial": number}):
            if r.info.status != "FINISHED":
                c.set_tag(r.info.run_id, "retried_as", str(trial.number))
                c.set_terminated(r.info.run_id, "KILLED")
                c.delete_run(r.info.run_id)


def trial_run(sweep: Sweep, study: optuna.Study, trial: optuna.Trial, params: dict, tcfg: Config, method: str) -> Run:
    """The child run. Tagged ``sweep``/``sweep_trial`` and not ``method``/``config_hash``, so `harness run`'s
    cache and the reports never take a trial for a method run."""
    run = Run(
        sweep.workdir,
        sweep.cfg.name,
        f"{sweep.study_name}-trial{trial.number}",
        tags={
            "sweep": sweep.study_name,
            **launcher_tags(),
            "sweep_trial": str(trial.number),
            "sweep_method": method,
            "dataset": tcfg.data.name,
            "seed": str(sweep.seed),
            "experiment": sweep.cfg.name,
            "schedule": trial.user_attrs.get("schedule", "sampled"),
        },
        parent_run_id=study.user_attrs[PARENT_ATTR],
    )
    flat = {k: v for k, v in params.items() if k != "levels"}
    flat["levels"] = ",".join(f"{x:g}" for x in params.get("levels", tcfg.curriculum_levels))
    run.log_params(
        {
            **flat,
            **{level_param(x): x in params.get("levels", []) for x in candidate_levels(tcfg)},
            "method": method,
            "config": tcfg.to_dict(),
        }
    )
    return run


def run_trial(sweep: Sweep, study: optuna.Study, trial: optuna.Trial, prep: Prepared) -> list[float]:
    """Train the trial's schedule in its child run and return its objective values (validation metrics)."""
    objectives = sweep.objectives
    run = None
    try:
        params = suggest(trial, sweep.cfg)
        tcfg, method = trial_config(sweep.cfg, params)
        retire_predecessor_runs(sweep, study, trial)
        run = trial_run(sweep, study, trial, params, tcfg, method)
        trial.set_user_attr("mlflow_run_id", run.id)
        trial.set_user_attr("method", method)
        trial_prep = dataclasses.replace(
            prep, cfg=tcfg, pool=apply_filter(prep.pool, tcfg.filter.threshold) if len(prep.pool) else prep.pool
        )

        def on_epoch(epoch: int, row: dict) -> None:
            missing = [o for o in objectives if o not in row]
            if missing:
                raise ConfigError(
                    f"sweep objective {missing[0]!r} is not a validation metric of this dataset "
                    f"(known: {', '.join(k for k in row if k.startswith('val/'))})"
                )
            value = row[objectives[0]]
            if len(objectives) == 1 and value == value:
                trial.report(float(value), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        result = fine_tune(trial_prep, method, sweep.seed, run=run, progress=False, on_epoch=on_epoch, post_hoc=False)
    except optuna.TrialPruned:
        run.set_tags({"pruned": "true"})
        run.end("KILLED")
        raise
    except Exception as e:
        trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:1000])
        if run is not None:
            run.set_tags({"error": f"{type(e).__name__}: {e}"[:5000]})
            run.end("FAILED")
        raise
    values = [result.val_metrics.get(o, float("nan")) for o in objectives]
    run.log_metrics(
        {
            **{f"best/{k}": v for k, v in result.val_metrics.items()},
            "best/epoch": result.best_epoch,
            **result.test_metrics,
            **{f"objective/{i}": v for i, v in enumerate(values)},
        }
    )
    run.set_tags({"pruned": "false"})
    run.end("FINISHED")
    return values
