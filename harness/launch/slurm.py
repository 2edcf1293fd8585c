"""``--launcher slurm``: the shared phases as submitit jobs (a base job, a job array of generation shards, a merge
job), then the runs not finished yet, or a sweep's workers, as a job array that starts once they succeed; and the
wait for them, with their progress."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import submitit

from harness.config import Config
from harness.core.errors import FileSystemError
from harness.core.workdir import cache_dir
from harness.launch.job_state import job_states
from harness.launch.records import Phase, Submission, Task, phases_line, progress_line, records_dir, write_record
from harness.launch.slurm_jobs import PhaseJob, RunJob, SweepWorkerJob
from harness.runs.paths import run_dir

POLL_S = float(os.environ.get("HARNESS_LAUNCHER_POLL_S", 10))  # how often a waiting launcher looks at its jobs


def private_folder(folder: Path) -> Path:
    """The folder of submitit's files, which hold the pickles each job unpickles and runs as this user: made
    readable and writable by this user only; an existing one that another user owns or others may write to is
    refused (anyone who could write there could run code as this user on the nodes)."""
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
        return folder
    st = folder.stat()
    who = "another user owns it" if st.st_uid != os.getuid() else "others can write to it" if st.st_mode & 0o022 else ""
    if who:
        raise FileSystemError(
            f"{folder}: SLURM jobs would run the pickles submitit leaves there, but {who}; use a folder of your own "
            f"(launcher.folder), or chmod go-w {folder} if it is yours"
        )
    return folder


def slurm_executor(cfg: Config, folder: Path, name: str, dependency: str | None = None) -> submitit.SlurmExecutor:
    """submitit's executor with the ``launcher`` section's placement (partition, time, CPUs, GPUs, memory, ...)."""
    lc = cfg.launcher
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=1000)
    params = {
        "job_name": name,
        "time": lc.time_min,
        "cpus_per_task": lc.cpus_per_job,
        "array_parallelism": lc.array_parallelism,
        "signal_delay_s": lc.signal_delay_s,
        "additional_parameters": dict(lc.sbatch),
        "ntasks_per_node": 1,
    }
    if lc.gpus_per_job:
        params["gpus_per_node"] = lc.gpus_per_job
    for key, value in (("partition", lc.partition), ("account", lc.account), ("qos", lc.qos)):
        if value:
            params[key] = value
    if lc.mem_gb:
        params["mem"] = f"{int(lc.mem_gb * 1024)}M"
    if dependency:
        params["dependency"] = dependency
    ex.update_parameters(**params)
    return ex


def submit_phases(
    cfg: Config, folder: Path, experiment: str, overrides: list[str], workdir: Path, methods: list[str]
) -> list[Phase]:
    """Submit the shared phases: the base job (none when the base model is cached); then, when the methods need a
    generated pool, a job array of ``launcher.generate_shards`` generation shards (after the base job;
    ``launcher.array_parallelism`` at once) and the merge job (after every shard). With nothing to generate (a
    complete pool, an imported one, real-only methods) one ``shared`` job does the base job's and the merge job's
    work, a job start less. Returns them in that order; the runs depend on the last one."""
    from harness.config.keys import pool_key
    from harness.phases.base_model import base_weights
    from harness.phases.pipeline import needs_pool

    name, world = f"harness-{cfg.name}", cfg.launcher.generate_shards
    args = (experiment, overrides, str(workdir), methods)
    complete = (cache_dir(workdir) / "pool" / pool_key(cfg) / "complete.json").exists()
    if not needs_pool(cfg, methods) or cfg.spectrum.pool or complete:
        shared = slurm_executor(cfg, folder, f"{name}-shared").submit(PhaseJob("shared", *args))
        return [Phase("shared", str(shared.job_id))]
    phases, last = [], None
    if not base_weights(cfg, cache_dir(workdir)).exists():  # a trained base model: nothing to wait for
        base = slurm_executor(cfg, folder, f"{name}-base").submit(PhaseJob("base", *args))
        phases, last = [Phase("base", str(base.job_id))], f"afterok:{base.job_id}"
    ex = slurm_executor(cfg, folder, f"{name}-generate", dependency=last)
    with ex.batch():
        shards = [ex.submit(PhaseJob("generate", *args, rank=r, world=world)) for r in range(world)]
    phases += [Phase("generate", str(j.job_id), r, world) for r, j in enumerate(shards)]
    last = "afterok:" + ":".join(sorted({str(j.job_id).split("_")[0] for j in shards}))
    merge = slurm_executor(cfg, folder, f"{name}-merge", dependency=last).submit(PhaseJob("merge", *args, world=world))
    return [*phases, Phase("merge", str(merge.job_id), 0, world)]


def submit_array(cfg: Config, folder: Path, name: str, after: Phase, jobs: list, tasks: list[Task]) -> None:
    """Submit ``jobs`` as one job array that starts once ``after`` succeeds; each task gets its array task's id."""
    ex = slurm_executor(cfg, folder, name, dependency=f"afterok:{after.job_id}")
    with ex.batch():
        submitted = [ex.submit(job) for job in jobs]
    for t, j in zip(tasks, submitted):
        t.job_id = str(j.job_id)


def launch_slurm(
    cfg: Config, experiment: str, overrides: list[str], workdir: Path, tasks: list[Task], force: bool = False
) -> Submission:
    """Submit the shared phases (``submit_phases``) and ``tasks`` as a job array that starts after they succeed."""
    workdir = workdir.resolve()
    folder = Path(cfg.launcher.folder) if cfg.launcher.folder else records_dir(workdir, cfg.name) / "logs"
    folder = private_folder(folder.resolve())
    sub = Submission("slurm", cfg.name, tasks, folder=str(folder))
    if not tasks:
        return sub
    methods = sorted({t.method for t in tasks})
    sub.phases = submit_phases(cfg, folder, experiment, overrides, workdir, methods)
    if force:
        for t in tasks:  # a forced rerun starts from the base model, in a new MLflow run
            shutil.rmtree(run_dir(workdir, cfg, t.method, t.seed, t.config_hash), ignore_errors=True)
    not_before = time.time() if force else 0.0
    runs = [RunJob(experiment, overrides, str(workdir), t.method, t.seed, not_before) for t in tasks]
    submit_array(cfg, folder, f"harness-{cfg.name}", sub.phases[-1], runs, tasks)
    write_record(workdir, sub)
    return sub


def update_states(sub: Submission) -> Phase | None:
    """Refresh the state of each phase job and each task; returns the first phase job that failed, or None."""
    jobs = [*sub.phases, *sub.tasks]
    states = job_states({j.job_id: sub.folder for j in jobs}, read_results=True)  # this process submitted them
    for j in jobs:
        j.state = states.get(j.job_id, j.state)
    return next((p for p in sub.phases if p.state == "failed"), None)


def wait_slurm(sub: Submission, say=print, poll_s: float | None = None) -> bool:
    """Wait for the array, showing progress (squeue every ``poll_s``, default ``POLL_S``); True when every run
    finished. If a job of the shared phases fails, cancel the jobs after it and the array (their dependency can never
    be met)."""
    poll_s = POLL_S if poll_s is None else poll_s
    last = ""
    while True:
        failed = update_states(sub)
        if failed is not None:
            later = [p.job_id for p in sub.phases if p.state != "done" and p is not failed]
            subprocess.run(["scancel", *later, *[t.job_id for t in sub.tasks]], capture_output=True, timeout=60)
            what = f"generate shard {failed.rank} of {failed.world}" if failed.name == "generate" else failed.name
            say(f"{what} job {failed.job_id} failed; see {sub.folder}/{failed.job_id}_0_log.err")
            return False
        line = phases_line(sub.phases) + "; runs: " + progress_line(sub.tasks)
        if line != last:
            say(line)
            last = line
        if all(t.state in ("done", "failed") for t in sub.tasks):
            for t in sub.tasks:
                if t.state == "failed":
                    say(f"{t.method} seed {t.seed}: job {t.job_id} failed; see {sub.folder}/{t.job_id}_0_log.err")
            return all(t.state == "done" for t in sub.tasks)
        time.sleep(poll_s)


@contextlib.contextmanager
def environment(name: str, value: str):
    """``name=value`` in this process's environment (which sbatch hands its jobs) while submitting."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def launch_sweep_slurm(sweep, trials: int, workers: int, wait: bool = True, say=print) -> bool:
    """``harness sweep --launcher slurm --workers K``: the shared phases' jobs, then K workers as a job array
    on a storage every node reaches (``journal:PATH`` on a shared file system, or ``postgresql://...``)."""
    from harness import sweep as sw

    if sweep.storage_url.startswith("sqlite"):
        raise sw.SweepError(
            "harness sweep --launcher slurm: SQLite is not safe for workers on many nodes; give --storage "
            "journal:/shared/path/optuna.journal or --storage postgresql://..."
        )
    sw.init_study(sweep)
    cfg, workdir = sweep.cfg, Path(sweep.workdir).resolve()
    folder = private_folder(
        (Path(cfg.launcher.folder) if cfg.launcher.folder else workdir / "sweeps" / sweep.study_name).resolve()
    )
    tasks = [Task("worker", i, "") for i in range(workers)]
    sub = Submission("slurm", cfg.name, tasks, folder=str(folder))
    sub.phases = submit_phases(cfg, folder, sweep.experiment, sweep.overrides, workdir, sw.sweep_methods(cfg))
    # a URL with a password goes to the jobs through sbatch's environment, not in their pickles in the workdir
    storage = None if sw.has_password(sweep.storage_url) else sweep.storage_url
    args = (sweep.experiment, sweep.overrides, str(workdir), storage, sweep.study_name, trials)
    jobs = [SweepWorkerJob(*args, i) for i in range(workers)]
    with environment(sw.STORAGE_ENV, sweep.storage_url):
        submit_array(cfg, folder, f"harness-{sweep.study_name}", sub.phases[-1], jobs, tasks)
    say(
        f"submitted the shared phases as {phases_line(sub.phases)} and {workers} sweep workers as "
        f"{', '.join(t.job_id for t in tasks)}; logs in {folder}"
    )
    return wait_slurm(sub, say) if wait else True
