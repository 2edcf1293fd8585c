"""`harness sweep`: an Optuna study over curriculum schedules, one MLflow parent run per study, a child per trial.

What counts: a study is done when it holds N *finished* trials, finished meaning COMPLETE or PRUNED. Trials
whose objective raised are FAIL (counted as failed, not finished); a trial whose worker died is FAIL and is
re-queued once (``sweep.max_retry``) as a WAITING trial with the same parameters, so it is run again, once.

Exactly N with many workers: a worker asks for a trial only while finished + running < N, and a trial whose
number is beyond the first N live trials (a race between workers) is told FAIL at once with the user attribute
``surplus`` and never trained nor logged. This is stricter than ``MaxTrialsCallback``, which only stops a worker
after it has already started one trial too many.

Dead workers are found two ways: RDB storages (SQLite, PostgreSQL, ...) record an Optuna heartbeat per running
trial and fail the trials whose heartbeat is older than ``sweep.grace_period`` (works across machines); every
storage also fails at once the running trials of a worker process on this host that no longer exists. The
journal file storage has no heartbeat in Optuna 5, so with it only the second rule applies: one machine only.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.config import Config, ConfigError, Range, load_config, stable_hash, validate
from harness.filter import apply_filter
from harness.io import lock
from harness.pipeline import Prepared, fine_tune, prepare
from harness.tracking import Run, client, run_in_store
from harness.workdir import resolve_workdir

log = logging.getLogger("harness.sweep")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# Workers use ask/tell with their own heartbeat thread (below), which Optuna warns about needlessly.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

ORDERING_METHODS = {
    "diverse_to_specific": "discl_diverse_to_specific",
    "specific_to_diverse": "discl_specific_to_diverse",
    "random": "discl_random",
    "adaptive": "discl_adaptive",
}
NO_SYNTHETIC_METHOD = "plain_rebalanced"  # an empty λ subset: the same schedule with real images only
PARENT_ATTR = "mlflow_parent_run_id"
WORKER_ATTR = "harness_worker"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class SweepError(RuntimeError):
    """A sweep problem the user can fix (wrong study, changed config, too many failures)."""


# --------------------------------------------------------------------------- the study and its storage

@dataclass
class Sweep:
    cfg: Config
    experiment: str
    overrides: list[str]
    workdir: Path
    storage_url: str
    study_name: str

    @property
    def objectives(self) -> list[str]:
        return objective_names(self.cfg)

    @property
    def seed(self) -> int:
        return self.cfg.sweep.seed if self.cfg.sweep.seed is not None else self.cfg.seeds[0]


def objective_names(cfg: Config) -> list[str]:
    if cfg.sweep.multi_objective:
        return list(cfg.sweep.multi_objective)
    if cfg.sweep.objective:
        return [cfg.sweep.objective]
    return ["val/f1_macro" if "iwildcam" in cfg.data.name else "val/acc_few"]


def make_sweep(experiment: str, overrides: list[str] | tuple[str, ...] = (), workdir: str | Path | None = None,
               storage: str | None = None, study: str | None = None) -> Sweep:
    cfg = load_config(experiment, list(overrides))
    wd = resolve_workdir(workdir)
    return Sweep(cfg, experiment, list(overrides), wd, storage or f"sqlite:///{wd / 'optuna.db'}",
                 study or cfg.sweep.study or f"{cfg.name}-sweep")


def open_storage(sweep: Sweep):
    """``journal:PATH`` → a journal file (one machine); anything else is an RDB URL with heartbeats."""
    s = sweep.cfg.sweep
    if sweep.storage_url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(sweep.storage_url[len("journal:"):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    url = rdb_url(sweep.storage_url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if sweep.storage_url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}  # several local workers share one SQLite file
    return optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs, heartbeat_interval=s.heartbeat_interval,
        grace_period=s.grace_period,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=s.max_retry))


def rdb_url(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; use psycopg 3 (the dev extra) when psycopg2 is absent."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg{sep}{rest}"
    return url


def make_pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    s = sweep.cfg.sweep
    if s.pruner == "none" or s.multi_objective:  # Optuna cannot prune multi-objective trials
        return optuna.pruners.NopPruner()
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, sweep.cfg.train.epochs))
    return optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                       n_warmup_steps=s.pruner_warmup_epochs)


def load_study(sweep: Sweep, worker_index: int = 0) -> optuna.Study:
    """The existing study (``harness sweep init`` creates it); a sampler seeded per worker."""
    sampler = optuna.samplers.TPESampler(seed=sweep.cfg.sweep.sampler_seed * 1000 + worker_index,
                                         constant_liar=True)
    try:
        study = optuna.load_study(study_name=sweep.study_name, storage=open_storage(sweep), sampler=sampler,
                                  pruner=make_pruner(sweep))
    except KeyError:
        raise SweepError(f"no study {sweep.study_name!r} in {sweep.storage_url}: run `harness sweep init` "
                         "first") from None
    check_same_config(sweep, study)
    return study


def config_fingerprint(cfg: Config) -> str:
    d = cfg.to_dict()
    d.pop("tracking", None)  # what MLflow records does not change a trial; studies made before it still match
    return stable_hash(d)


def check_same_config(sweep: Sweep, study: optuna.Study) -> None:
    stored = study.user_attrs.get("config_hash")
    if stored and stored != config_fingerprint(sweep.cfg):
        raise SweepError(
            f"study {sweep.study_name!r} was created with another config (experiment "
            f"{study.user_attrs.get('experiment')!r}, --set {study.user_attrs.get('overrides')}); "
            "pass the same --set values to resume it, or a new --study name")


def init_study(sweep: Sweep) -> optuna.Study:
    """Create the study, its MLflow parent run and the paper's trial once; later calls return the same study."""
    s = sweep.cfg.sweep
    with lock(sweep.workdir / "sweeps" / f"{sweep.study_name}.init"):
        study = optuna.create_study(
            study_name=sweep.study_name, storage=open_storage(sweep), load_if_exists=True,
            directions=["maximize"] * len(sweep.objectives), pruner=make_pruner(sweep),
            sampler=optuna.samplers.TPESampler(seed=s.sampler_seed, constant_liar=True))
        if PARENT_ATTR in study.user_attrs:
            check_same_config(sweep, study)
            if not run_in_store(client(sweep.workdir), study.user_attrs[PARENT_ATTR]):
                # the study's parent run lives in another MLflow store (MLFLOW_TRACKING_URI changed, mlflow.db
                # deleted): give it a parent run in this one; later trials are its children here
                parent = parent_run(sweep)
                study.set_user_attr(PARENT_ATTR, parent.id)
                log.info("study %s: new MLflow parent run %s in this store", sweep.study_name, parent.id)
            return study
        parent = parent_run(sweep)
        if s.enqueue_paper:
            study.enqueue_trial(paper_params(sweep.cfg), user_attrs={"schedule": "paper"},
                                skip_if_exists=True)
        study.set_user_attr("experiment", sweep.experiment)
        study.set_user_attr("overrides", sweep.overrides)
        study.set_user_attr("config_hash", config_fingerprint(sweep.cfg))
        study.set_user_attr("objectives", sweep.objectives)
        study.set_user_attr(PARENT_ATTR, parent.id)  # last: its presence marks a complete init
        log.info("study %s created in %s; MLflow parent run %s", sweep.study_name, sweep.storage_url, parent.id)
        return study


def public_url(url: str) -> str:
    """A storage URL fit for a tag: any password masked."""
    if url.startswith("journal:") or "@" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def dashboard_command(storage_url: str) -> str:
    """The optuna-dashboard command that browses a study's storage (an RDB URL or a journal file)."""
    target = storage_url[len("journal:"):] if storage_url.startswith("journal:") else public_url(storage_url)
    return f"optuna-dashboard {shlex.quote(target)} --host 127.0.0.1 --port 8080"


def parent_run(sweep: Sweep) -> Run:
    """The study's MLflow parent run; its description links the Optuna study and how to browse it."""
    s = sweep.cfg.sweep
    storage = public_url(sweep.storage_url)
    parent = Run(sweep.workdir, sweep.cfg.name, f"sweep-{sweep.study_name}", tags={
        "sweep": "true", "study": sweep.study_name, "experiment": sweep.cfg.name,
        "dataset": sweep.cfg.data.name, "objective": ",".join(sweep.objectives), "storage": storage,
        "optuna.study": sweep.study_name, "optuna.storage": storage,
        "optuna.dashboard": dashboard_command(sweep.storage_url)})
    parent.describe(
        f"Optuna study **{sweep.study_name}** (objective {', '.join(sweep.objectives)}, on validation) in "
        f"`{storage}`; each trial is a child run of this one. Browse the study, its history, parameter "
        f"importances and trials with:\n\n`{dashboard_command(sweep.storage_url)}`\n\n(then open "
        "http://127.0.0.1:8080). The best trial's rerun command is in this run's `best.yaml`.")
    parent.log_params({"sweep": dataclasses.asdict(s), "objective": ",".join(sweep.objectives),
                       "seed": sweep.seed, "overrides": " ".join(sweep.overrides)})
    return parent


# --------------------------------------------------------------------------- the search space

def candidate_levels(cfg: Config) -> list[float]:
    levels = cfg.sweep.space.levels if cfg.sweep.space.levels is not None else cfg.spectrum.levels
    for lam in levels:
        if not any(abs(lam - g) < 1e-9 for g in cfg.spectrum.levels):
            raise ConfigError(f"sweep.space.levels: {lam} is not among the generated spectrum.levels "
                              f"{cfg.spectrum.levels}")
    return list(levels)


def level_param(lam: float) -> str:
    return f"lambda_{lam:g}"


def suggest_range(trial: optuna.Trial, name: str, r: Range) -> float | int:
    whole = r.step is not None and all(float(v).is_integer() for v in (r.low, r.high, r.step))
    if whole:
        return trial.suggest_int(name, int(r.low), int(r.high), step=int(r.step), log=r.log)
    return trial.suggest_float(name, r.low, r.high, step=r.step, log=r.log)


def suggest_choice(trial: optuna.Trial, name: str, choices: list, default: Any) -> Any:
    if not choices:
        return default
    if len(choices) == 1:
        return choices[0]
    return trial.suggest_categorical(name, list(choices))


def suggest(trial: optuna.Trial, cfg: Config) -> dict[str, Any]:
    """The sampled schedule; parameters not searched take the experiment's own values."""
    space, train = cfg.sweep.space, cfg.train
    params: dict[str, Any] = {"ordering": suggest_choice(trial, "ordering", space.orderings,
                                                         "diverse_to_specific")}
    if space.levels is None or space.levels:
        params["levels"] = [lam for lam in candidate_levels(cfg)
                            if trial.suggest_categorical(level_param(lam), [True, False])]
    ranges = {"curriculum_fraction": train.curriculum_epochs / max(1, train.epochs),
              "synthetic_scale": train.synthetic_scale, "undersample": train.undersample,
              "filter_threshold": cfg.filter.threshold}
    for name, default in ranges.items():
        r = getattr(space, name)
        params[name] = suggest_range(trial, name, r) if r is not None else default
    if params["ordering"] == "adaptive":
        params["statistic"] = suggest_choice(trial, "statistic", space.statistics, cfg.curriculum.adaptive.statistic)
        params["probe_steps"] = suggest_choice(trial, "probe_steps", space.probe_steps,
                                               cfg.curriculum.adaptive.probe_steps)
    params["loss"] = suggest_choice(trial, "loss", space.losses, train.loss)
    return params


def paper_params(cfg: Config) -> dict[str, Any]:
    """The paper's schedule as Optuna parameters: diverse→specific over the experiment's own levels and budgets."""
    space, train = cfg.sweep.space, cfg.train
    params: dict[str, Any] = {}
    if len(space.orderings) > 1:
        params["ordering"] = "diverse_to_specific"
    if space.levels is None or space.levels:
        own = cfg.curriculum_levels
        for lam in candidate_levels(cfg):
            params[level_param(lam)] = any(abs(lam - x) < 1e-9 for x in own)
    values = {"curriculum_fraction": train.curriculum_epochs / max(1, train.epochs),
              "synthetic_scale": train.synthetic_scale, "undersample": train.undersample,
              "filter_threshold": cfg.filter.threshold}
    for name, value in values.items():
        if getattr(space, name) is not None:
            params[name] = value
    if len(space.losses) > 1:
        params["loss"] = train.loss
    return params


def trial_config(cfg: Config, params: dict[str, Any]) -> tuple[Config, str]:
    """The experiment's config with the sampled schedule applied, and the method that runs it."""
    tcfg = copy.deepcopy(cfg)
    train = tcfg.train
    if "levels" in params:
        tcfg.curriculum.levels = list(params["levels"])
        if params["ordering"] == "adaptive":
            tcfg.curriculum.adaptive_levels = list(params["levels"])
    fraction = float(params["curriculum_fraction"])
    train.curriculum_epochs = min(train.epochs, max(1, round(fraction * train.epochs))) if fraction > 0 else 0
    train.synthetic_scale = float(params["synthetic_scale"])
    train.undersample = float(params["undersample"])
    train.loss = params["loss"]
    tcfg.filter.threshold = float(params["filter_threshold"])
    if "statistic" in params:
        tcfg.curriculum.adaptive.statistic = params["statistic"]
        tcfg.curriculum.adaptive.probe_steps = int(params["probe_steps"])
    method = ORDERING_METHODS[params["ordering"]]
    levels = tcfg.curriculum.adaptive_levels if method == "discl_adaptive" and tcfg.curriculum.adaptive_levels \
        else tcfg.curriculum_levels
    if not levels or train.curriculum_epochs == 0:
        method = NO_SYNTHETIC_METHOD
    tcfg.methods = [method]
    validate(tcfg, "sweep trial")
    return tcfg, method


SCHEDULE_FIELDS = ("methods", "curriculum.levels", "curriculum.adaptive_levels", "train.curriculum_epochs",
                   "train.synthetic_scale", "train.undersample", "train.loss", "filter.threshold",
                   "curriculum.adaptive.statistic", "curriculum.adaptive.probe_steps")


def field(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


def trial_overrides(cfg: Config, trial_params: dict[str, Any]) -> list[str]:
    """``--set`` lines that make ``harness run`` train a finished trial's schedule (``trial_params``: Optuna's
    ``FrozenTrial.params``): rerun the best one over seeds."""
    import yaml

    tcfg, _ = trial_config(cfg, suggest(optuna.trial.FixedTrial(trial_params), cfg))
    return [f"{name}={yaml.safe_dump(field(tcfg, name), default_flow_style=True).strip().removesuffix('...').strip()}"
            for name in SCHEDULE_FIELDS if field(tcfg, name) != field(cfg, name)]


def rerun_command(sweep: "Sweep", trial_params: dict[str, Any], seeds: str = "[0, 1, 2]") -> str:
    sets = [*sweep.overrides, *trial_overrides(sweep.cfg, trial_params), f"name={sweep.cfg.name}_best",
            f"seeds={seeds}"]
    return shlex.join(["harness", "run", "--experiment", sweep.experiment, "--workdir", str(sweep.workdir),
                       *[a for text in sets for a in ("--set", text)]])


def sweep_methods(cfg: Config) -> list[str]:
    return [ORDERING_METHODS[o] for o in cfg.sweep.space.orderings] or ["discl_diverse_to_specific"]


# --------------------------------------------------------------------------- counting and dead workers

@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    running: int = 0
    waiting: int = 0
    failed: int = 0  # the objective raised
    retried: int = 0  # the worker died; re-queued
    surplus: int = 0  # asked in a race past N; never run

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


def count_trials(trials: list[optuna.trial.FrozenTrial]) -> Counts:
    c = Counts()
    for t in trials:
        if t.state == TrialState.COMPLETE:
            c.complete += 1
        elif t.state == TrialState.PRUNED:
            c.pruned += 1
        elif t.state == TrialState.RUNNING:
            c.running += 1
        elif t.state == TrialState.WAITING:
            c.waiting += 1
        elif t.user_attrs.get("surplus"):
            c.surplus += 1
        elif "error" in t.user_attrs:
            c.failed += 1
        else:
            c.retried += 1
    return c


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def reap_dead_workers(sweep: Sweep, study: optuna.Study) -> int:
    """Fail the running trials of dead worker processes on this host and re-queue each once."""
    host = socket.gethostname()
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=sweep.cfg.sweep.max_retry)
    reaped = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.system_attrs.get(WORKER_ATTR, "")
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        try:
            if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker reaped it first
        log.warning("trial %d: its worker %s is gone; re-queued", t.number, owner)
        retry(study, study._storage.get_trial(t._trial_id))
        reaped += 1
    return reaped


def fail_stale(sweep: Sweep, study: optuna.Study) -> None:
    reap_dead_workers(sweep, study)
    optuna.storages.fail_stale_trials(study)  # RDB heartbeats; a no-op for the journal storage


class Heartbeat:
    """Records an Optuna heartbeat for a running trial every ``heartbeat_interval`` seconds (RDB storages)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial):
        storage = study._storage
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self.beat = (lambda: storage.record_heartbeat(trial._trial_id)) if interval else None
        self.interval = interval or 0
        self.stop = threading.Event()

    def __enter__(self):
        if self.beat:
            self.beat()
            threading.Thread(target=self.loop, daemon=True).start()
        return self

    def loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.beat()
            except Exception as e:  # a lost beat is retried next interval
                log.warning("heartbeat failed: %s", e)

    def __exit__(self, *exc) -> None:
        self.stop.set()


# --------------------------------------------------------------------------- one trial

def is_surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """Whether ``n_trials`` live trials with lower numbers exist: then this one lost a race and must not run."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    earlier = [t for t in study.get_trials(deepcopy=False, states=live) if t.number < trial.number]
    return len(earlier) >= n_trials


def retire_predecessor_runs(sweep: Sweep, study: optuna.Study, trial: optuna.Trial) -> None:
    """A retried trial replaces its dead predecessor's MLflow run: delete the unfinished one (restorable)."""
    numbers = study._storage.get_trial(trial._trial_id).system_attrs.get("retry_history", [])
    if not numbers:
        return
    c = client(sweep.workdir)
    exp = c.get_experiment_by_name(sweep.cfg.name)
    for number in numbers:
        for r in c.search_runs([exp.experiment_id], filter_string=(
                f"tags.sweep = '{sweep.study_name}' and tags.sweep_trial = '{number}'")):
            if r.info.status != "FINISHED":
                c.set_tag(r.info.run_id, "retried_as", str(trial.number))
                c.set_terminated(r.info.run_id, "KILLED")
                c.delete_run(r.info.run_id)


def trial_run(sweep: Sweep, study: optuna.Study, trial: optuna.Trial, params: dict, tcfg: Config,
              method: str) -> Run:
    """The child run. Tagged ``sweep``/``sweep_trial`` and not ``method``/``config_hash``, so `harness run`'s
    cache and the reports never take a trial for a method run."""
    run = Run(sweep.workdir, sweep.cfg.name, f"{sweep.study_name}-trial{trial.number}", tags={
        "sweep": sweep.study_name, "sweep_trial": str(trial.number), "sweep_method": method,
        "dataset": tcfg.data.name, "seed": str(sweep.seed), "experiment": sweep.cfg.name,
        "schedule": trial.user_attrs.get("schedule", "sampled")},
        parent_run_id=study.user_attrs[PARENT_ATTR])
    flat = {k: v for k, v in params.items() if k != "levels"}
    flat["levels"] = ",".join(f"{x:g}" for x in params.get("levels", tcfg.curriculum_levels))
    run.log_params({**flat, **{level_param(x): x in params.get("levels", []) for x in candidate_levels(tcfg)},
                    "method": method, "config": tcfg.to_dict()})
    return run


def run_trial(sweep: Sweep, study: optuna.Study, trial: optuna.Trial, prep: Prepared) -> TrialState:
    objectives = sweep.objectives
    run = None
    try:
        params = suggest(trial, sweep.cfg)
        tcfg, method = trial_config(sweep.cfg, params)
        retire_predecessor_runs(sweep, study, trial)
        run = trial_run(sweep, study, trial, params, tcfg, method)
        trial.set_user_attr("mlflow_run_id", run.id)
        trial.set_user_attr("method", method)
        trial_prep = dataclasses.replace(prep, cfg=tcfg, pool=apply_filter(prep.pool, tcfg.filter.threshold)
                                         if len(prep.pool) else prep.pool)

        def on_epoch(epoch: int, row: dict) -> None:
            missing = [o for o in objectives if o not in row]
            if missing:
                raise ConfigError(f"sweep objective {missing[0]!r} is not a validation metric of this dataset "
                                  f"(known: {', '.join(k for k in row if k.startswith('val/'))})")
            value = row[objectives[0]]
            if len(objectives) == 1 and value == value:
                trial.report(float(value), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        result = fine_tune(trial_prep, method, sweep.seed, run=run, progress=False, on_epoch=on_epoch)
    except optuna.TrialPruned:
        run.set_tags({"pruned": "true"})
        run.end("KILLED")
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except Exception as e:
        log.exception("trial %d failed", trial.number)
        trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:1000])
        if run is not None:
            run.set_tags({"error": f"{type(e).__name__}: {e}"[:5000]})
            run.end("FAILED")
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    values = [result.val_metrics.get(o, float("nan")) for o in objectives]
    run.log_metrics({**{f"best/{k}": v for k, v in result.val_metrics.items()}, "best/epoch": result.best_epoch,
                     **result.test_metrics, **{f"objective/{i}": v for i, v in enumerate(values)}})
    run.set_tags({"pruned": "false"})
    run.end("FINISHED")
    frozen = study.tell(trial, values)
    return frozen.state


# --------------------------------------------------------------------------- workers

def progress_line(study: optuna.Study, n_trials: int) -> str:
    trials = study.get_trials(deepcopy=False)
    c = count_trials(trials)
    line = (f"[{study.study_name}] finished {c.finished}/{n_trials} (complete {c.complete}, pruned {c.pruned}); "
            f"running {c.running}; failed {c.failed}; retried {c.retried}")
    best = best_trials(study)
    if best:
        t = best[0]
        line += f"; best {', '.join(f'{v:.4f}' for v in t.values)} (trial {t.number})"
    return line


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    if len(study.directions) > 1:
        return list(study.best_trials)
    return [max(complete, key=lambda t: t.value)]


def work(sweep: Sweep, n_trials: int, worker_index: int = 0, poll_s: float = 2.0, say=print) -> Counts:
    """Run trials until the study holds ``n_trials`` finished ones; returns the final counts."""
    study = load_study(sweep, worker_index)
    prep = prepare(sweep.cfg, sweep.workdir, methods=sweep_methods(sweep.cfg), progress=False)
    me = worker_id()
    while True:
        fail_stale(sweep, study)
        c = count_trials(study.get_trials(deepcopy=False))
        if c.finished >= n_trials:
            return c
        if c.failed >= sweep.cfg.sweep.max_failures:
            raise SweepError(f"study {sweep.study_name!r} holds {c.failed} failed trials (sweep.max_failures); "
                             "see the trials' 'error' attribute or the MLflow runs' 'error' tag")
        if c.finished + c.running >= n_trials:
            time.sleep(poll_s)  # the last trials run elsewhere; wait in case one of them dies
            continue
        trial = study.ask()
        study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, me)
        if is_surplus(study, trial, n_trials):
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        with Heartbeat(study, trial):
            state = run_trial(sweep, study, trial, prep)
        say(f"trial {trial.number} {state.name.lower()} | " + progress_line(study, n_trials))


# --------------------------------------------------------------------------- the end of a sweep

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
        summary = {"finished": c.finished, "complete": c.complete, "pruned": c.pruned, "failed": c.failed,
                   "retried": c.retried, "surplus": c.surplus}
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


def paper_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("schedule") == "paper"
            and t.state in FINISHED]
    return done[0] if done else None


def best_summary_yaml(sweep: Sweep, study: optuna.Study, best: list) -> str:
    import yaml

    rows = [{"trial": t.number, "values": dict(zip(sweep.objectives, t.values)), "params": t.params,
             "method": t.user_attrs.get("method"), "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
             "rerun_over_seeds": rerun_command(sweep, t.params)}
            for t in best]
    return yaml.safe_dump({"study": study.study_name, "best": rows}, sort_keys=False)


def log_plots(study: optuna.Study, parent: Run, objectives: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    multi = len(objectives) > 1
    target = {"target": (lambda t: t.values[0]), "target_name": objectives[0]} if multi else \
        {"target_name": objectives[0]}
    plots = {"optimization_history": lambda: ovm.plot_optimization_history(study, **target),
             "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study, **target)}
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


# --------------------------------------------------------------------------- `harness sweep`

def worker_command(sweep: Sweep, n_trials: int, index: int) -> list[str]:
    cmd = [sys.executable, "-m", "harness.cli", "sweep", "worker", "--experiment", sweep.experiment,
           "--trials", str(n_trials), "--storage", sweep.storage_url, "--study", sweep.study_name,
           "--workdir", str(sweep.workdir), "--worker-index", str(index), "--quiet"]
    for text in sweep.overrides:
        cmd += ["--set", text]
    return cmd


def worker_env(n_workers: int) -> dict[str, str]:
    """Local workers share this machine's cores: each gets its share as torch's thread count (unless
    OMP_NUM_THREADS is set), rather than every worker starting a thread per core and all of them thrashing."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // n_workers))
    return env


def run_workers(sweep: Sweep, n_trials: int, n_workers: int, say=print, poll_s: float = 3.0,
                max_restarts: int | None = None) -> None:
    """K local worker processes; a worker that dies while trials remain is restarted (its trial is retried)."""
    log_dir = sweep.workdir / "sweeps" / sweep.study_name
    log_dir.mkdir(parents=True, exist_ok=True)
    max_restarts = 2 * n_workers if max_restarts is None else max_restarts
    procs: dict[int, subprocess.Popen] = {}

    def start(i: int) -> None:
        out = open(log_dir / f"worker-{i}.log", "ab")
        procs[i] = subprocess.Popen(worker_command(sweep, n_trials, i), stdout=out, stderr=subprocess.STDOUT,
                                    env=worker_env(n_workers))
        out.close()

    for i in range(n_workers):
        start(i)
    study, last, restarts = load_study(sweep), "", 0
    try:
        while procs:
            time.sleep(poll_s)
            line = progress_line(study, n_trials)
            if line != last:
                say(line)
                last = line
            for i, p in list(procs.items()):
                if p.poll() is None:
                    continue
                del procs[i]
                done = count_trials(study.get_trials(deepcopy=False)).finished >= n_trials
                if p.returncode != 0 and not done and restarts < max_restarts:
                    say(f"worker {i} exited with {p.returncode}; restarting it (log: {log_dir}/worker-{i}.log)")
                    restarts += 1
                    start(i)
    finally:
        for p in procs.values():
            p.terminate()


def run_sweep(sweep: Sweep, n_trials: int, n_workers: int = 1, say=print) -> dict[str, Any]:
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
        raise SweepError(f"study {sweep.study_name!r} holds {c.finished} of {n_trials} finished trials; "
                         f"see the worker logs in {sweep.workdir / 'sweeps' / sweep.study_name}")
    return finalize(sweep, n_trials)
