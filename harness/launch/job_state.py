"""Where each submitted SLURM job stands, asked of submitit: a ``submitit.SlurmJob`` per job id, whose ``state``
comes from submitit's ``SlurmInfoWatcher`` (one call for all the jobs of a query; array tasks and ranges read by
submitit) pointed at ``squeue`` rather than ``sacct``, which needs SLURM's accounting daemon (the one-node cluster
the tests use runs none); once the queue forgets a job, ``job.done()`` says whether submitit's result file is
there."""

from __future__ import annotations

import pickletools
import shutil
from pathlib import Path

import submitit
from submitit.slurm.slurm import SlurmInfoWatcher

SLURM_STATES = {
    "PENDING": "pending",
    "CONFIGURING": "pending",
    "REQUEUED": "pending",
    "REQUEUE_HOLD": "pending",
    "REQUEUE_FED": "pending",
    "RESIZING": "pending",
    "SUSPENDED": "pending",
    "RUNNING": "running",
    "COMPLETING": "running",
    "STAGE_OUT": "running",
    "SIGNALING": "running",
    "COMPLETED": "done",
}  # any other state (FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...) is "failed"


class SqueueWatcher(SlurmInfoWatcher):
    """submitit's SLURM watcher, asking ``squeue --states=all`` (every job the controller still holds, ended ones
    included, for ``MinJobAge`` after they end) for the states ``sacct`` would give."""

    def _make_command(self) -> list[str] | None:
        arrays = sorted({j.split("_")[0] for j in self._registered - self._finished})
        if not arrays:
            return None
        # named as a list even when there is one: squeue fails on a lone job id it has forgotten, not on a list
        return ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join([*arrays, arrays[0]])]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        return super().read_info("JobID|State\n" + text)  # squeue -h prints no header; submitit reads sacct's names


class QueuedJob(submitit.SlurmJob):
    """submitit's SLURM job, its state from ``watcher`` (shared by the jobs of one query)."""

    def __init__(self, folder: Path | str, job_id: str, watcher: SqueueWatcher):
        self.watcher = watcher  # before submitit's __init__ registers the job with it
        super().__init__(folder, job_id)


def queued_jobs(jobs: dict[str, Path | str]) -> list[QueuedJob]:
    """submitit jobs for ``jobs`` (job id, array tasks as JOBID_TASK → the folder submitit writes its files to),
    sharing one watcher: their first ``state`` asks squeue once for all of them."""
    watcher = SqueueWatcher()
    return [QueuedJob(folder, job_id, watcher) for job_id, folder in jobs.items()]


def job_states(jobs: dict[str, Path | str], read_results: bool = False) -> dict[str, str]:
    """pending / running / done / failed of each job squeue lists (``jobs``: job id → its submitit folder). A job
    it no longer lists is ``ended`` once submitit's result file is there; with ``read_results`` that file says
    ``done`` or ``failed`` (only for jobs this process submitted; read without unpickling it, see ``outcome``).
    Jobs with neither are left out."""
    if not jobs or shutil.which("squeue") is None:  # no SLURM client here
        return {}
    states = {}
    for job in queued_jobs(jobs):
        state = job.state
        if state != "UNKNOWN":
            states[job.job_id] = SLURM_STATES.get(state.split()[0], "failed")
        elif job.done():
            states[job.job_id] = outcome(job) if read_results else "ended"
    return {j: s for j, s in states.items() if s is not None}


def outcome(job: QueuedJob) -> str | None:
    """done / failed from submitit's result file of an ended job; None while it is being written. Read without
    unpickling: submitit writes ``("success", result)`` or ``("error", traceback)``, so the first string the pickle
    pushes says which (``pickletools`` lists the opcodes, running none), and a result file planted in the folder
    runs nothing here."""
    try:
        data = job.paths.result_pickle.read_bytes()
        tag = next(
            (arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str) and "UNICODE" in op.name), None
        )
    except (OSError, ValueError):  # not there yet, or cut short while it is written
        return None
    return {"success": "done", "error": "failed"}.get(tag)
