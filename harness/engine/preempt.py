"""Preemption and launcher identity: a stop flag that a signal sets and the training loop checks at each step
boundary, and the tags that say which launcher and job a run came from.

SLURM warns a job before its time limit or preemption with a signal (SIGUSR1 here, submitit's SIGUSR2, SIGTERM
from ``scancel`` / ``scontrol requeue``). ``install()`` makes those signals set a flag; inside ``deferred()`` (a
run's fine-tuning) ``Trainer.train_epoch`` raises ``Preempted`` at the next step boundary, elsewhere it is raised at
once. The partial epoch is dropped: the run resumes from its last epoch checkpoint (``phases.fine_tune`` writes one
every epoch), which replays that epoch exactly, so a preempted and resumed run ends with the same result as an
uninterrupted one."""

from __future__ import annotations

import contextlib
import os
import signal

SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")
_requested: str | None = None


class Preempted(BaseException):
    """Raised at a step boundary after a stop signal: not an error of the run (a BaseException, so code that
    catches ``Exception`` lets it through); the run is left resumable."""


_deferring = 0  # > 0 inside ``deferred()``: a signal only sets the flag


def _handler(signum, frame) -> None:
    global _requested
    _requested = signal.Signals(signum).name
    if not _deferring:  # outside a training loop: stop now (every phase writes its files atomically)
        check()


@contextlib.contextmanager
def deferred():
    """Inside: a stop signal waits for the training loop's next step boundary (``check``)."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def install() -> None:
    """Make SIGUSR1, SIGUSR2 and SIGTERM request a stop at the next step boundary (main thread only)."""
    for name in SIGNALS:
        signal.signal(getattr(signal, name), _handler)


@contextlib.contextmanager
def installed():
    """``install()`` for the duration of a block (an in-process ``harness run``): on leaving it, the handlers that
    were there before are back and the stop flag is cleared."""
    old = {name: signal.getsignal(getattr(signal, name)) for name in SIGNALS}
    install()
    try:
        yield
    finally:
        for name, handler in old.items():
            signal.signal(getattr(signal, name), handler if handler is not None else signal.SIG_DFL)
        clear()


def requested() -> str | None:
    """The name of the stop signal received, or None."""
    return _requested


def clear() -> None:
    global _requested
    _requested = None


def check() -> None:
    """Raise ``Preempted`` if a stop signal came (called by the training loop between steps)."""
    if _requested is not None:
        raise Preempted(f"stopped by {_requested} at a step boundary; the run resumes from its last epoch checkpoint")


def launcher_tags() -> dict[str, str]:
    """``launcher`` and ``launcher.job_id`` of this process: ``slurm`` with the job (``JOBID_TASK`` in an array),
    ``local`` with its process id under ``--launcher local``, else ``none`` with the process id."""
    kind = os.environ.get("HARNESS_LAUNCHER", "none")
    if kind == "slurm":
        array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "?")
        return {"launcher": "slurm", "launcher.job_id": job}
    return {"launcher": kind, "launcher.job_id": str(os.getpid())}
