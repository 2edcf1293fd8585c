"""The study: its storage (RDB with Optuna's heartbeats and retries, or a journal file), sampler, pruner, the
config it was made with, and its MLflow parent run."""

from __future__ import annotations

import logging
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from harness.config import Config, load_config, stable_hash
from harness.core.errors import HarnessError
from harness.core.io import lock
from harness.core.workdir import resolve_workdir
from harness.runs.tracking import Run, client, run_in_store

from .space import objective_names, paper_params

log = logging.getLogger("harness.sweep")
PARENT_ATTR = "mlflow_parent_run_id"
# the storage URL when --storage is not given: how workers get one that holds a password (a command line is
# world-readable in ps and /proc, and a SLURM job's pickle sits in the workdir)
STORAGE_ENV = "HARNESS_SWEEP_STORAGE"


class SweepError(HarnessError, RuntimeError):
    """A sweep problem the user can fix (wrong study, changed config, too many failures)."""


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


def make_sweep(
    experiment: str,
    overrides: list[str] | tuple[str, ...] = (),
    workdir: str | Path | None = None,
    storage: str | None = None,
    study: str | None = None,
) -> Sweep:
    cfg = load_config(experiment, list(overrides))
    wd = resolve_workdir(workdir)
    name = study or cfg.sweep.study or f"{cfg.name}-sweep"
    if "/" in name or "\0" in name or name in (".", ".."):  # it names folders under WORKDIR/sweeps
        raise SweepError(f"study name {name!r}: no '/' and not '.' or '..' (it names a folder in the workdir)")
    return Sweep(
        cfg,
        experiment,
        list(overrides),
        wd,
        storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{wd / 'optuna.db'}",
        name,
    )


def retry_callback(sweep: Sweep) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Re-queues a dead worker's trial as a WAITING trial with the same parameters, ``sweep.max_retry`` times."""
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=sweep.cfg.sweep.max_retry)


def open_storage(sweep: Sweep) -> optuna.storages.BaseStorage:
    """``journal:PATH`` → a journal file (one machine); anything else is an RDB URL, with Optuna's heartbeats:
    ``study.optimize`` beats every ``heartbeat_interval`` s for its running trial, and fails then re-queues the
    trials silent for ``grace_period`` s before it asks for a new one (any machine's, so it works across hosts)."""
    s = sweep.cfg.sweep
    if sweep.storage_url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(sweep.storage_url[len("journal:") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if sweep.storage_url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}  # several local workers share one SQLite file
    return optuna.storages.RDBStorage(
        rdb_url(sweep.storage_url),
        engine_kwargs=engine_kwargs,
        heartbeat_interval=s.heartbeat_interval,
        grace_period=s.grace_period,
        heartbeat_stale_trial_callback=retry_callback(sweep),
    )


def rdb_url(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; use psycopg 3 (the dev extra) when psycopg2 is absent."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if (
        scheme in ("postgresql", "postgres")
        and importlib.util.find_spec("psycopg2") is None
        and importlib.util.find_spec("psycopg") is not None
    ):
        return f"postgresql+psycopg{sep}{rest}"
    return url


def make_pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    s = sweep.cfg.sweep
    if s.pruner == "none" or s.multi_objective:  # Optuna cannot prune multi-objective trials
        return optuna.pruners.NopPruner()
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, sweep.cfg.train.epochs))
    return optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials, n_warmup_steps=s.pruner_warmup_epochs)


def load_study(sweep: Sweep, worker_index: int = 0) -> optuna.Study:
    """The existing study (``harness sweep init`` creates it); a sampler seeded per worker."""
    sampler = optuna.samplers.TPESampler(seed=sweep.cfg.sweep.sampler_seed * 1000 + worker_index, constant_liar=True)
    try:
        study = optuna.load_study(
            study_name=sweep.study_name, storage=open_storage(sweep), sampler=sampler, pruner=make_pruner(sweep)
        )
    except KeyError:
        raise SweepError(
            f"no study {sweep.study_name!r} in {public_url(sweep.storage_url)}: run `harness sweep init` first"
        ) from None
    check_same_config(sweep, study)
    return study


def config_fingerprint(cfg: Config) -> str:
    d = cfg.to_dict()
    d.pop("tracking", None)  # what MLflow records does not change a trial; studies made before it still match
    d.pop("launcher", None)  # where jobs run does not change a trial either
    return stable_hash(d)


def check_same_config(sweep: Sweep, study: optuna.Study) -> None:
    stored = study.user_attrs.get("config_hash")
    if stored and stored != config_fingerprint(sweep.cfg):
        raise SweepError(
            f"study {sweep.study_name!r} was created with another config (experiment "
            f"{study.user_attrs.get('experiment')!r}, --set {study.user_attrs.get('overrides')}); "
            "pass the same --set values to resume it, or a new --study name"
        )


def init_study(sweep: Sweep) -> optuna.Study:
    """Create the study, its MLflow parent run and the paper's trial once; later calls return the same study."""
    s = sweep.cfg.sweep
    with lock(sweep.workdir / "sweeps" / f"{sweep.study_name}.init"):
        study = optuna.create_study(
            study_name=sweep.study_name,
            storage=open_storage(sweep),
            load_if_exists=True,
            directions=["maximize"] * len(sweep.objectives),
            pruner=make_pruner(sweep),
            sampler=optuna.samplers.TPESampler(seed=s.sampler_seed, constant_liar=True),
        )
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
            study.enqueue_trial(paper_params(sweep.cfg), user_attrs={"schedule": "paper"}, skip_if_exists=True)
        study.set_user_attr("experiment", sweep.experiment)
        study.set_user_attr("overrides", sweep.overrides)
        study.set_user_attr("config_hash", config_fingerprint(sweep.cfg))
        study.set_user_attr("objectives", sweep.objectives)
        study.set_user_attr(PARENT_ATTR, parent.id)  # last: its presence marks a complete init
        log.info(
            "study %s created in %s; MLflow parent run %s", sweep.study_name, public_url(sweep.storage_url), parent.id
        )
        return study


def public_url(url: str) -> str:
    """A storage URL fit to print, log or tag: any password masked."""
    if url.startswith("journal:") or "@" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 (a URL SQLAlchemy cannot parse: mask whatever stands between ':' and '@')
        return re.sub(r"^([^:/]+://[^:/@]*:).*@", r"\1***@", url)


def has_password(url: str) -> bool:
    return public_url(url) != url


def dashboard_command(storage_url: str) -> str:
    """The optuna-dashboard command that browses a study's storage (an RDB URL or a journal file)."""
    target = storage_url[len("journal:") :] if storage_url.startswith("journal:") else public_url(storage_url)
    return f"optuna-dashboard {shlex.quote(target)} --host 127.0.0.1 --port 8080"


def parent_run(sweep: Sweep) -> Run:
    """The study's MLflow parent run; its description links the Optuna study and how to browse it."""
    storage = public_url(sweep.storage_url)
    parent = Run(
        sweep.workdir,
        sweep.cfg.name,
        f"sweep-{sweep.study_name}",
        tags={
            "sweep": "true",
            "study": sweep.study_name,
            "experiment": sweep.cfg.name,
            "dataset": sweep.cfg.data.name,
            "objective": ",".join(sweep.objectives),
            "storage": storage,
            "optuna.study": sweep.study_name,
            "optuna.storage": storage,
            "optuna.dashboard": dashboard_command(sweep.storage_url),
        },
    )
    parent.describe(
        f"Optuna study **{sweep.study_name}** (objective {', '.join(sweep.objectives)}, on validation) in "
        f"`{storage}`; each trial is a child run of this one. Browse the study, its history, parameter "
        f"importances and trials with:\n\n`{dashboard_command(sweep.storage_url)}`\n\n(then open "
        "http://127.0.0.1:8080). The best trial's rerun command is in this run's `best.yaml`."
    )
    parent.log_params(
        {
            "sweep": sweep.cfg.to_dict()["sweep"],
            "objective": ",".join(sweep.objectives),
            "seed": sweep.seed,
            "overrides": " ".join(sweep.overrides),
        }
    )
    return parent
