"""What runs inside a SLURM job that submitit started: a shared phase (base, one generation shard, merge), one
(method, seed) run, or one sweep worker. Each is a ``submitit.helpers.Checkpointable`` callable: on submitit's
preemption or time-out signal it is submitted again as it is, and picks up where it was (every phase is cached,
every run checkpointed each epoch, a sweep's trial retried)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import submitit

from harness.config import load_config
from harness.engine import preempt

log = logging.getLogger("harness")


class HarnessJob(submitit.helpers.Checkpointable):
    """A harness callable as a SLURM job: ``__call__`` sets the job up (``setup``), then does its ``work``."""

    def __call__(self):
        self.setup()
        return self.work()

    def work(self):
        raise NotImplementedError

    @staticmethod
    def setup() -> None:
        """Tag runs as SLURM's, log to stderr, and use the job's CPUs (no more) for torch's threads."""
        os.environ["HARNESS_LAUNCHER"] = "slurm"
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")  # submitit's JobEnvironment does not hold the job's CPUs
        if cpus and "OMP_NUM_THREADS" not in os.environ:
            import torch

            torch.set_num_threads(int(cpus))


class PhaseJob(HarnessJob):
    """A SLURM job of the shared phases, before the runs' array: ``base`` (data, base model, hard samples),
    ``generate`` (shard ``rank`` of ``world`` of the spectrum, one array task each, independent of the others),
    ``merge`` (check every shard's images are in, retries, mark the pool complete, score and filter it) or, with
    nothing to generate, ``shared`` (the base job's work, then the merge job's)."""

    def __init__(
        self, phase: str, experiment: str, overrides: list[str], workdir: str, methods: list[str], rank=0, world=1
    ):
        self.phase, self.experiment, self.overrides, self.workdir = phase, experiment, overrides, workdir
        self.methods, self.rank, self.world = methods, rank, world

    def work(self) -> dict:
        import gc

        import torch

        from harness.phases.pipeline import finish_pool, generate_shard, prepare_base, score_base
        from harness.phases.retrieval import warm_retrieval

        workdir = Path(self.workdir)
        cfg = load_config(self.experiment, self.overrides, methods=self.methods)
        base = prepare_base(cfg, workdir, self.methods, progress=False)
        out = {"phase": self.phase, "job_id": submitit.JobEnvironment().job_id}
        if self.phase == "generate":
            added = generate_shard(base, workdir, self.rank, self.world, progress=False)
            out |= {"rank": self.rank, "world": self.world, "added": added}
            log.info("generate shard %d of %d: %d images added", self.rank, self.world, added)
        elif self.phase in ("merge", "shared") and base.pool_dir is not None:
            source = finish_pool(base, workdir, progress=False, world=self.world)
            prep = score_base(base, workdir, progress=False, pool_source=source)
            warm_retrieval(prep, self.methods)  # the runs' array tasks then read the retrieval caches
            out["images"] = len(prep.pool)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return out


class RunJob(HarnessJob):
    """A SLURM array task: one (method, seed) run. On SIGUSR1/SIGUSR2/SIGTERM it stops at the next step boundary,
    leaves its MLflow run KILLED (resumable), requeues itself and, when SLURM starts it again, resumes from the
    run's last epoch checkpoint. ``not_before``: a FINISHED run that started earlier does not count (``--force``)."""

    def __init__(self, experiment: str, overrides: list[str], workdir: str, method: str, seed: int, not_before: float):
        self.experiment, self.overrides, self.workdir = experiment, overrides, workdir
        self.method, self.seed, self.not_before = method, seed, not_before

    def work(self) -> dict:
        from harness.phases.pipeline import prepare
        from harness.runs.finished import finished_run
        from harness.runs.paths import run_config_hash
        from harness.runs.runner import run_one, spectrum_grid_file

        preempt.install()  # over submitit's handlers: stop at a step boundary, then requeue (below)
        workdir = Path(self.workdir)
        cfg = load_config(self.experiment, self.overrides, methods=[self.method])
        h = run_config_hash(cfg, self.method)
        done = finished_run(workdir, cfg, self.method, self.seed, h)
        if done is not None and done.info.start_time >= self.not_before * 1000:
            return {"method": self.method, "seed": self.seed, "run_id": done.info.run_id, "cached": True}
        try:
            prep = prepare(cfg, workdir, [self.method], progress=False)
            with tempfile.TemporaryDirectory(prefix="harness-grid-") as tmp:
                grid = spectrum_grid_file(prep, Path(tmp))
                row = run_one(cfg, workdir, prep, self.method, self.seed, h, grid, False)
        except preempt.Preempted as e:
            log.warning("%s seed %d: %s; requeueing", self.method, self.seed, e)
            requeue_and_wait()
            raise
        return {k: v for k, v in row.items() if k in ("method", "seed", "run_id") or k.startswith("test")}


class SweepWorkerJob(HarnessJob):
    """A SLURM array task: one ``harness sweep worker`` (trials until the study holds ``trials`` finished ones).
    ``storage``: None when the URL holds a password; the job then reads it from its environment."""

    def __init__(self, experiment, overrides, workdir, storage, study, trials: int, index: int):
        self.experiment, self.overrides, self.workdir = experiment, overrides, workdir
        self.storage, self.study, self.trials, self.index = storage, study, trials, index

    def work(self) -> int:
        from harness import sweep as sw

        if self.storage is None and not os.environ.get(sw.STORAGE_ENV):
            raise sw.SweepError(
                f"sweep worker: the storage URL comes through the environment variable {sw.STORAGE_ENV}, which "
                "this job did not get (does the cluster run sbatch with --export=NONE? give it --export=ALL)"
            )
        sweep = sw.make_sweep(self.experiment, self.overrides, self.workdir, self.storage, self.study)
        counts = sw.work(sweep, self.trials, self.index, say=log.info)
        if counts.finished >= self.trials:
            sw.finalize(sweep, self.trials)
        return counts.finished


def requeue_and_wait(grace_s: float = 300) -> None:
    """Ask SLURM to requeue this job (already being requeued, when ``scontrol requeue`` sent the signal), then wait
    for it to end this attempt, so no result file says the job is over."""
    for name in preempt.SIGNALS:  # SLURM's SIGTERM as it ends this attempt must not raise here
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    subprocess.run(["scontrol", "requeue", submitit.JobEnvironment().job_id], capture_output=True, timeout=60)
    deadline = time.time() + grace_s
    while time.time() < deadline:  # SLURM kills this attempt (SIGTERM, then SIGKILL); the signal flag is set
        time.sleep(1)
