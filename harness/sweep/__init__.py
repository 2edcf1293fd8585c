"""`harness sweep`: an Optuna study over curriculum schedules, one MLflow parent run per study, a child per trial.

What counts: a study is done when it holds N *finished* trials, finished meaning COMPLETE or PRUNED. Trials
whose objective raised are FAIL (counted as failed, not finished); a trial whose worker died is FAIL and is
re-queued once (``sweep.max_retry``) as a WAITING trial with the same parameters, so it is run again, once.

- ``space``: the search space, the trial's config, the ``--set`` lines that rerun a trial;
- ``study``: storage (RDB with Optuna's heartbeats, or a journal file), sampler, pruner, the MLflow parent run;
- ``trial``: one trial (the objective): its child run, training, reports to the pruner;
- ``worker``: ``study.optimize`` until N finished, exactly N with several workers, dead local workers;
- ``results``: the best trial, plots, ``best.yaml``;
- ``confirm``: the best schedule, the paper's and ``plain`` rerun on seeds disjoint from the tuning seed.
"""

from __future__ import annotations

import warnings

import optuna

from harness.phases.pipeline import prepare

from .confirm import Arm, confirm_arms, confirm_seeds, paper_method, run_confirm
from .results import finalize, fresh_seeds, rerun_command
from .space import (
    NO_SYNTHETIC_METHOD,
    ORDERING_METHODS,
    objective_names,
    paper_params,
    suggest,
    sweep_methods,
    trial_config,
    trial_overrides,
)
from .study import (
    PARENT_ATTR,
    STORAGE_ENV,
    Sweep,
    SweepError,
    dashboard_command,
    has_password,
    init_study,
    load_study,
    make_sweep,
    public_url,
    rdb_url,
)
from .trial import run_trial
from .worker import FINISHED, Counts, count_trials, progress_line, run_workers, work, worker_command, worker_env

__all__ = [  # what harness/cli/app.py and the tests use, by its old name
    "FINISHED",
    "Arm",
    "NO_SYNTHETIC_METHOD",
    "ORDERING_METHODS",
    "PARENT_ATTR",
    "STORAGE_ENV",
    "Counts",
    "Sweep",
    "SweepError",
    "confirm_arms",
    "confirm_seeds",
    "count_trials",
    "dashboard_command",
    "finalize",
    "fresh_seeds",
    "has_password",
    "init_study",
    "load_study",
    "make_sweep",
    "objective_names",
    "paper_method",
    "paper_params",
    "prepare",
    "progress_line",
    "public_url",
    "rdb_url",
    "rerun_command",
    "run_confirm",
    "run_sweep",
    "run_trial",
    "run_workers",
    "suggest",
    "sweep_methods",
    "trial_config",
    "trial_overrides",
    "work",
    "worker_command",
    "worker_env",
]

# Heartbeats, fail_stale_trials and the retry callback are experimental in Optuna: the sweep relies on them.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_sweep(sweep: Sweep, n_trials: int, n_workers: int = 1, say=print) -> dict:
    init_study(sweep)
    if n_workers > 1:
        # the shared phases (base model, generator, pool, scores) are built here with every core, before the
        # workers split the cores among themselves; they then find them cached
        say("building the shared phases with every core before the workers start")
        prepare(sweep.cfg, sweep.workdir, methods=sweep_methods(sweep.cfg), progress=True)
        run_workers(sweep, n_trials, n_workers, say)
    else:
        work(sweep, n_trials, say=say)
    c = count_trials(load_study(sweep).get_trials(deepcopy=False))
    if c.finished < n_trials:
        raise SweepError(
            f"study {sweep.study_name!r} holds {c.finished} of {n_trials} finished trials; "
            f"see the worker logs in {sweep.workdir / 'sweeps' / sweep.study_name}"
        )
    return finalize(sweep, n_trials)
