"""Workers: ``study.optimize`` runs trials until the study holds N finished ones (COMPLETE or PRUNED).

Optuna does the trial lifecycle: ``study.optimize`` asks (waiting trials first: the paper's, retries), runs the
objective, records COMPLETE / PRUNED / FAIL (``catch``: a failing trial does not stop the worker), beats the RDB
heartbeat while a trial runs and, before each new trial, fails the trials whose heartbeat went stale and
re-queues them (``RetryHeartbeatStaleTrialCallback``, ``sweep.max_retry`` times); ``MaxTrialsCallback`` stops
the loop at N finished trials.

Our code adds two guarantees Optuna's public API does not give:
- Exactly N with several workers. ``MaxTrialsCallback`` only stops a worker after its trial ends, so K workers
  would run up to N + K - 1 trials. A worker starts a trial only while finished + running < N (else it waits, and
  watches for a dead worker's trial), and a trial numbered past the first N live ones (a race between workers) is
  failed at once as ``surplus``, never trained nor logged.
- A dead worker on the journal storage. Only RDB storages have heartbeats in Optuna 5, so each worker records
  its host, process id and trial number on its trial, and any worker on that host fails (``study.tell``) and
  re-queues (the same retry callback) the running trials of a process that no longer exists: one machine only.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from harness.phases.pipeline import prepare

from .space import sweep_methods
from .study import STORAGE_ENV, Sweep, SweepError, has_password, load_study, retry_callback
from .trial import frozen_trial, run_trial

log = logging.getLogger("harness.sweep")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_ATTR = "harness_worker"  # "host:pid:trial number" of the process running the trial


class Surplus(Exception):
    """The trial lost a race between workers: the study already holds N live trials numbered before it."""


@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    running: int = 0
    waiting: int = 0
    failed: int = 0  # the objective raised (or the worker died and no retry was left)
    retried: int = 0  # the worker died; re-queued
    surplus: int = 0  # asked in a race past N; never run

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


def count_trials(trials: list[FrozenTrial]) -> Counts:
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
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
        elif t.number in retried:
            c.retried += 1
        else:
            c.failed += 1
    return c


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (single objective) or the Pareto front; empty before any trial completed."""
    try:
        return list(study.best_trials) if len(study.directions) > 1 else [study.best_trial]
    except ValueError:
        return []


def progress_line(study: optuna.Study, n_trials: int) -> str:
    c = count_trials(study.get_trials(deepcopy=False))
    line = (
        f"[{study.study_name}] finished {c.finished}/{n_trials} (complete {c.complete}, pruned {c.pruned}); "
        f"running {c.running}; failed {c.failed}; retried {c.retried}"
    )
    best = best_trials(study)
    if best:
        t = best[0]
        line += f"; best {', '.join(f'{v:.4f}' for v in t.values)} (trial {t.number})"
    return line


# --------------------------------------------------------------------------- dead workers on this host


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
    """Fail the running trials of dead worker processes on this host and re-queue each (``sweep.max_retry``)."""
    host, retry, reaped = socket.gethostname(), retry_callback(sweep), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # a retry copies its predecessor's attributes: the trial number tells an owner recorded for this trial
        owner_host, pid, number = (str(t.user_attrs.get(WORKER_ATTR, "")).rsplit(":", 2) + ["", ""])[:3]
        if owner_host != host or number != str(t.number) or not pid.isdigit() or process_alive(int(pid)):
            continue
        try:
            failed = study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker, or Optuna's heartbeat check, failed it first
        log.warning("trial %d: its worker %s:%s is gone; re-queued", t.number, owner_host, pid)
        retry(study, failed)
        reaped += 1
    return reaped


def wait_for_room(sweep: Sweep, study: optuna.Study, n_trials: int, poll_s: float) -> Counts:
    """Return once the study is done (finished >= N) or this worker may start a trial (finished + running < N);
    meanwhile fail the trials of dead workers, which may free a place."""
    while True:
        reap_dead_workers(sweep, study)
        optuna.storages.fail_stale_trials(study)  # RDB heartbeats; a no-op for the journal storage
        c = count_trials(study.get_trials(deepcopy=False))
        if c.finished >= n_trials:
            return c
        if c.failed >= sweep.cfg.sweep.max_failures:
            raise SweepError(
                f"study {sweep.study_name!r} holds {c.failed} failed trials (sweep.max_failures); "
                "see the trials' 'error' attribute or the MLflow runs' 'error' tag"
            )
        if c.finished + c.running < n_trials:
            return c
        time.sleep(poll_s)  # the last trials run elsewhere; wait in case one of them dies


def is_surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """Whether ``n_trials`` live trials with lower numbers exist: then this one lost a race and must not run."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return len([t for t in study.get_trials(deepcopy=False, states=live) if t.number < trial.number]) >= n_trials


# --------------------------------------------------------------------------- one worker


def work(sweep: Sweep, n_trials: int, worker_index: int = 0, poll_s: float = 2.0, say=print) -> Counts:
    """Run trials in this process until the study holds ``n_trials`` finished ones; returns the final counts."""
    study = load_study(sweep, worker_index)
    prep = prepare(sweep.cfg, sweep.workdir, methods=sweep_methods(sweep.cfg), progress=False)
    current: list[int] = []

    def objective(trial: optuna.Trial) -> list[float]:
        current[:] = [trial.number]
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}:{trial.number}")
        if is_surplus(study, trial, n_trials):
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number} not run: the study already holds {n_trials} live trials")
        return run_trial(sweep, study, trial, prep)

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if not trial.user_attrs.get("surplus"):
            say(f"trial {trial.number} {trial.state.name.lower()} | " + progress_line(study, n_trials))
        wait_for_room(sweep, study, n_trials, poll_s)

    if wait_for_room(sweep, study, n_trials, poll_s).finished < n_trials:
        try:
            study.optimize(
                objective, catch=(Exception,), callbacks=[after_trial, MaxTrialsCallback(n_trials, states=FINISHED)]
            )
        except KeyboardInterrupt:
            # Optuna has failed the interrupted trial: re-queue it, as a dead worker's, for a resumed sweep
            t = frozen_trial(study, current[0]) if current else None
            if t is not None and t.state == TrialState.FAIL and not {"error", "surplus"} & t.user_attrs.keys():
                retry_callback(sweep)(study, t)
            raise
    return count_trials(study.get_trials(deepcopy=False))


# --------------------------------------------------------------------------- K local worker processes


def worker_command(sweep: Sweep, n_trials: int, index: int) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "sweep",
        "worker",
        "--experiment",
        sweep.experiment,
        "--trials",
        str(n_trials),
        "--study",
        sweep.study_name,
        "--workdir",
        str(sweep.workdir),
        "--worker-index",
        str(index),
        "--quiet",
    ]
    if not has_password(sweep.storage_url):  # one with a password goes by environment only (worker_env)
        cmd += ["--storage", sweep.storage_url]
    for text in sweep.overrides:
        cmd += ["--set", text]
    return cmd


def worker_env(n_workers: int, storage_url: str | None = None) -> dict[str, str]:
    """Local workers share this machine's cores: each gets its share as torch's thread count (unless
    OMP_NUM_THREADS is set), rather than every worker starting a thread per core and all of them thrashing. The
    storage URL goes here, not on the command line."""
    env = dict(os.environ)
    if storage_url is not None:
        env[STORAGE_ENV] = storage_url
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // n_workers))
    return env


def run_workers(
    sweep: Sweep, n_trials: int, n_workers: int, say=print, poll_s: float = 3.0, max_restarts: int | None = None
) -> None:
    """K local worker processes (processes, not ``optimize(n_jobs=K)`` threads: training holds the GIL, and a
    worker killed mid-trial must not take the others with it); a worker that dies while trials remain is
    restarted (its trial is retried)."""
    log_dir = sweep.workdir / "sweeps" / sweep.study_name
    log_dir.mkdir(parents=True, exist_ok=True)
    max_restarts = 2 * n_workers if max_restarts is None else max_restarts
    procs: dict[int, subprocess.Popen] = {}

    def start(i: int) -> None:
        out = open(log_dir / f"worker-{i}.log", "ab")
        procs[i] = subprocess.Popen(
            worker_command(sweep, n_trials, i),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=worker_env(n_workers, sweep.storage_url),
        )
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
