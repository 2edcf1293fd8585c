"""Many (method, seed) runs at once: ``harness run --launcher local --jobs K`` (K processes on this machine, each
on one GPU or its share of the CPU cores) and ``--launcher slurm`` (submitit: the shared phases as a base job, a job
array of generation shards and a merge job, then a job array of the runs not finished yet). Both build the shared
phases (base model, spectrum, scores) once, first; each run then reads them from the cache. Each submission leaves
a JSON record under ``WORKDIR/launcher/EXPERIMENT/`` that ``harness status`` reads beside MLflow."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import Config, load_config, validate
from harness.core.io import read_json, write_json
from harness.core.workdir import cache_dir
from harness.engine import preempt
from harness.runs.finished import finished_run, finished_runs
from harness.runs.paths import run_config_hash, run_dir
from harness.runs.runner import spectrum_grid_file

log = logging.getLogger("harness")

POLL_S = float(os.environ.get("HARNESS_LAUNCHER_POLL_S", 10))  # how often a waiting launcher looks at its jobs


@dataclass
class Task:
    """One (method, seed) run the launcher starts."""

    method: str
    seed: int
    config_hash: str
    job_id: str = ""
    state: str = "pending"  # pending | running | done | failed


@dataclass
class Phase:
    """One SLURM job of the shared phases: ``base``, ``generate`` (one per shard, ``rank`` of ``world``) or
    ``merge``."""

    name: str
    job_id: str
    rank: int = 0
    world: int = 1
    state: str = "pending"


@dataclass
class Submission:
    launcher: str
    experiment: str
    tasks: list[Task]
    submitted_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    phases: list[Phase] = field(default_factory=list)
    folder: str = ""


def records_dir(workdir: Path, experiment: str) -> Path:
    return workdir / "launcher" / experiment


def write_record(workdir: Path, sub: Submission) -> Path:
    stamp = sub.submitted_at.replace(":", "").replace("-", "")
    path = records_dir(workdir, sub.experiment) / f"{stamp}-{sub.launcher}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        path,
        {
            "launcher": sub.launcher,
            "experiment": sub.experiment,
            "submitted_at": sub.submitted_at,
            "phases": [{"name": p.name, "job_id": p.job_id, "rank": p.rank, "world": p.world} for p in sub.phases],
            "folder": sub.folder,
            "runs": run_entries(sub),
        },
    )
    return path


def run_entries(sub: Submission) -> list[dict]:
    return [{"method": t.method, "seed": t.seed, "config_hash": t.config_hash, "job_id": t.job_id} for t in sub.tasks]


def read_records(workdir: Path, experiment: str) -> list[dict]:
    """Every submission recorded for ``experiment``, oldest first."""
    folder = records_dir(workdir, experiment)
    return [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.exists() else []


def pending_tasks(cfg: Config, workdir: Path, methods: list[str], seeds: list[int], force: bool) -> list[Task]:
    """The (method, seed) runs without a FINISHED MLflow run of this config (all of them with ``force``)."""
    tasks = []
    for method, seed, config_hash, done in finished_runs(cfg, workdir, methods, seeds, force):
        if done is None:
            tasks.append(Task(method, seed, config_hash))
        else:
            log.info("%s seed %d: finished run found, reusing it", method, seed)
    return tasks


def progress_line(tasks: list[Task]) -> str:
    by = {k: [t for t in tasks if t.state == k] for k in ("done", "running", "pending", "failed")}
    parts = [f"{len(v)} {k}" for k, v in by.items()]
    ids = [
        f"{k}: " + " ".join(f"{t.method}/s{t.seed}" + (f"={t.job_id}" if t.job_id else "") for t in v)
        for k, v in by.items()
        if v and k != "done"
    ]
    return ", ".join(parts) + ("  (" + "; ".join(ids) + ")" if ids else "")


# --------------------------------------------------------------------------- local


def cpu_slots(jobs: int) -> list[list[int]]:
    """This process's CPU cores dealt into ``jobs`` contiguous groups (one per running job; at least one core each)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    per = max(1, len(cores) // jobs)
    return [cores[(i * per) % len(cores) : (i * per) % len(cores) + per] for i in range(jobs)]


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def slot_env(slot: int, jobs: int, gpus: int) -> tuple[dict[str, str], list[int] | None]:
    """The environment (and CPU cores to pin to) of the job in ``slot``: one GPU each when there are GPUs, else its
    share of the cores with as many torch / OpenMP threads."""
    env = {"HARNESS_LAUNCHER": "local"}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
        return env, None
    cores = cpu_slots(jobs)[slot]
    threads = str(len(cores))
    env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": ""})
    return env, cores


def run_command(experiment: str, overrides: list[str], workdir: Path, task: Task, force: bool) -> list[str]:
    cmd = [sys.executable, "-m", "harness.cli", "run", "-e", experiment, "-m", task.method, "--seed", str(task.seed)]
    cmd += [a for o in overrides for a in ("--set", o)] + ["--workdir", str(workdir), "--quiet"]
    return cmd + (["--force"] if force else [])


def prepare_shared(cfg: Config, workdir: Path, methods: list[str], progress: bool) -> None:
    """The shared phases, once, in this process: base model, hard samples, spectrum, scores (cached)."""
    import gc

    import torch

    from harness.phases.pipeline import prepare

    prepare(cfg, workdir, methods, progress=progress)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the runs' processes get the GPUs' memory


def launch_local(
    cfg: Config,
    experiment: str,
    overrides: list[str],
    workdir: Path,
    tasks: list[Task],
    jobs: int,
    force: bool = False,
    progress: bool = True,
    say=print,
) -> Submission:
    """Run ``tasks`` as ``harness run`` processes, ``jobs`` at a time, after building the shared phases once."""
    sub = Submission("local", cfg.name, tasks)
    if not tasks:
        return sub
    prepare_shared(cfg, workdir, sorted({t.method for t in tasks}), progress)
    logs = records_dir(workdir, cfg.name) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sub.folder = str(logs)
    gpus = gpu_count()
    free, running, queue = list(range(jobs)), {}, list(tasks)
    record = write_record(workdir, sub)
    last = ""
    try:
        while queue or running:
            while queue and free:
                slot, task = free.pop(0), queue.pop(0)
                extra, cores = slot_env(slot, jobs, gpus)
                out = open(logs / f"{task.method}-seed{task.seed}.log", "ab")  # noqa: SIM115 (closed when it ends)
                proc = subprocess.Popen(
                    run_command(experiment, overrides, workdir, task, force),
                    env={**os.environ, **extra},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=(lambda c=cores: os.sched_setaffinity(0, c)) if cores else None,
                )
                task.job_id, task.state = str(proc.pid), "running"
                running[proc.pid] = (proc, slot, task, out)
                write_record_at(record, sub)
            for pid, (proc, slot, task, out) in list(running.items()):
                if proc.poll() is not None:
                    out.close()
                    task.state = "done" if proc.returncode == 0 else "failed"
                    if task.state == "failed":
                        say(f"{task.method} seed {task.seed}: exit {proc.returncode}; log {out.name}")
                    free.append(slot)
                    del running[pid]
            line = progress_line(tasks)
            if line != last:
                say(line)
                last = line
            if running:
                time.sleep(0.5)
    except BaseException:  # Ctrl-C or a stop signal: the runs stop at a step boundary too, resumable
        for proc, *_ in running.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _, task, _out in running.values():
            proc.wait(timeout=300)
            task.state = "failed"
        write_record_at(record, sub)
        raise
    write_record_at(record, sub)
    return sub


def write_record_at(path: Path, sub: Submission) -> None:
    old = read_json(path)
    old["runs"] = run_entries(sub)
    write_json(path, old)


# --------------------------------------------------------------------------- SLURM (submitit)


class PhaseJob:
    """A SLURM job of the shared phases, before the runs' array: ``base`` (data, base model, hard samples),
    ``generate`` (shard ``rank`` of ``world`` of the spectrum, one array task each, independent of the others) or
    ``merge`` (check every shard's images are in, retries, mark the pool complete, score and filter it). Every
    phase is cached, so a requeue or a re-submission picks up where it was."""

    def __init__(
        self, phase: str, experiment: str, overrides: list[str], workdir: str, methods: list[str], rank=0, world=1
    ):
        self.phase, self.experiment, self.overrides, self.workdir = phase, experiment, overrides, workdir
        self.methods, self.rank, self.world = methods, rank, world

    def __call__(self) -> dict:
        import gc

        import torch

        from harness.phases.pipeline import finish_pool, generate_shard, prepare_base, score_base

        job_setup()
        workdir = Path(self.workdir)
        cfg = load_config(self.experiment, self.overrides, methods=self.methods)
        base = prepare_base(cfg, workdir, self.methods, progress=False)
        out = {"phase": self.phase, "job_id": preempt.launcher_tags()["launcher.job_id"]}
        if self.phase == "generate":
            added = generate_shard(base, workdir, self.rank, self.world, progress=False)
            out |= {"rank": self.rank, "world": self.world, "added": added}
            log.info("generate shard %d of %d: %d images added", self.rank, self.world, added)
        elif self.phase == "merge" and base.pool_dir is not None:
            source = finish_pool(base, workdir, progress=False, world=self.world)
            out["images"] = len(score_base(base, workdir, progress=False, pool_source=source).pool)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return out

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self)  # every phase is cached: a requeue picks up where it was


def submit_phases(
    cfg: Config, folder: Path, experiment: str, overrides: list[str], workdir: Path, methods: list[str]
) -> list[Phase]:
    """Submit the shared phases: the base job; then, when the methods need a generated pool, a job array of
    ``launcher.generate_shards`` generation shards (after the base job; ``launcher.array_parallelism`` at once; none
    when the pool is complete already); then the merge job (after every shard). Returns them in that order; the runs
    depend on the last one."""
    from harness.config.keys import pool_key
    from harness.phases.pipeline import needs_pool

    name, world = f"harness-{cfg.name}", cfg.launcher.generate_shards
    args = (experiment, overrides, str(workdir), methods)
    base = slurm_executor(cfg, folder, f"{name}-base").submit(PhaseJob("base", *args))
    phases, last = [Phase("base", str(base.job_id))], f"afterok:{base.job_id}"
    complete = (cache_dir(workdir) / "pool" / pool_key(cfg) / "complete.json").exists()
    if needs_pool(cfg, methods) and not cfg.spectrum.pool and not complete:
        ex = slurm_executor(cfg, folder, f"{name}-generate", dependency=last)
        with ex.batch():
            shards = [ex.submit(PhaseJob("generate", *args, rank=r, world=world)) for r in range(world)]
        phases += [Phase("generate", str(j.job_id), r, world) for r, j in enumerate(shards)]
        last = "afterok:" + ":".join(sorted({str(j.job_id).split("_")[0] for j in shards}))
    merge = slurm_executor(cfg, folder, f"{name}-merge", dependency=last).submit(PhaseJob("merge", *args, world=world))
    phases.append(Phase("merge", str(merge.job_id), 0, world))
    return phases


class RunJob:
    """A SLURM array task: one (method, seed) run. On SIGUSR1/SIGUSR2/SIGTERM it stops at the next step boundary,
    leaves its MLflow run KILLED (resumable), requeues itself and, when SLURM starts it again, resumes from the
    run's last epoch checkpoint. ``not_before``: a FINISHED run that started earlier does not count (``--force``)."""

    def __init__(self, experiment: str, overrides: list[str], workdir: str, method: str, seed: int, not_before: float):
        self.experiment, self.overrides, self.workdir = experiment, overrides, workdir
        self.method, self.seed, self.not_before = method, seed, not_before

    def __call__(self) -> dict:
        from harness.phases.pipeline import prepare
        from harness.runs.runner import run_one

        job_setup()
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

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def job_setup() -> None:
    """In a SLURM job: tag runs as SLURM's, log to stderr, and use the job's CPUs (no more) for torch's threads."""
    os.environ["HARNESS_LAUNCHER"] = "slurm"
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(int(cpus))


def requeue_and_wait(grace_s: float = 300) -> None:
    """Ask SLURM to requeue this job (already being requeued, when ``scontrol requeue`` sent the signal), then wait
    for it to end this attempt, so no result file says the job is over."""
    for name in preempt.SIGNALS:  # SLURM's SIGTERM as it ends this attempt must not raise here
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    job = preempt.launcher_tags()["launcher.job_id"]
    subprocess.run(["scontrol", "requeue", job], capture_output=True, timeout=60)
    deadline = time.time() + grace_s
    while time.time() < deadline:  # SLURM kills this attempt (SIGTERM, then SIGKILL); the signal flag is set
        time.sleep(1)


def slurm_executor(cfg: Config, folder: Path, name: str, dependency: str | None = None):
    import submitit

    lc = cfg.launcher
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=1000)
    extra = dict(lc.sbatch)
    params = {
        "job_name": name,
        "time": lc.time_min,
        "cpus_per_task": lc.cpus_per_job,
        "array_parallelism": lc.array_parallelism,
        "signal_delay_s": lc.signal_delay_s,
        "additional_parameters": extra,
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


def launch_slurm(
    cfg: Config, experiment: str, overrides: list[str], workdir: Path, tasks: list[Task], force: bool = False
) -> Submission:
    """Submit the shared phases (``submit_phases``) and ``tasks`` as a job array that starts after they succeed."""
    workdir = workdir.resolve()
    folder = Path(cfg.launcher.folder) if cfg.launcher.folder else records_dir(workdir, cfg.name) / "logs"
    folder = folder.resolve()
    sub = Submission("slurm", cfg.name, tasks, folder=str(folder))
    if not tasks:
        return sub
    methods = sorted({t.method for t in tasks})
    sub.phases = submit_phases(cfg, folder, experiment, overrides, workdir, methods)
    if force:
        for t in tasks:  # a forced rerun starts from the base model, in a new MLflow run
            shutil.rmtree(run_dir(workdir, cfg, t.method, t.seed, t.config_hash), ignore_errors=True)
    not_before = time.time() if force else 0.0
    ex = slurm_executor(cfg, folder, f"harness-{cfg.name}", dependency=f"afterok:{sub.phases[-1].job_id}")
    with ex.batch():
        jobs = [ex.submit(RunJob(experiment, overrides, str(workdir), t.method, t.seed, not_before)) for t in tasks]
    for t, j in zip(tasks, jobs):
        t.job_id = str(j.job_id)
    write_record(workdir, sub)
    return sub


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
}


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """squeue's state of each job (array tasks as JOBID_TASK), mapped to pending / running / done / failed; jobs
    squeue no longer lists are left out."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(arrays)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    states = {}
    for line in out.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        states[jid] = SLURM_STATES.get(state.split()[0] if state else "", "failed")
    return states


def result_state(folder: Path, job_id: str) -> str | None:
    """done / failed from submitit's result file of a job squeue forgot, or None when there is none."""
    from submitit.core.utils import pickle_load

    path = folder / f"{job_id}_0_result.pkl"
    if not path.exists():
        return None
    try:
        outcome, _ = pickle_load(path)
    except Exception:  # noqa: BLE001 (being written)
        return None
    return "done" if outcome == "success" else "failed"


def update_states(sub: Submission) -> Phase | None:
    """Refresh the state of each phase job and each task; returns the first phase job that failed, or None."""
    folder = Path(sub.folder)
    states = slurm_states([*[p.job_id for p in sub.phases], *[t.job_id for t in sub.tasks]])
    for t in sub.tasks:
        t.state = states.get(t.job_id) or result_state(folder, t.job_id) or t.state
    for p in sub.phases:
        p.state = states.get(p.job_id) or result_state(folder, p.job_id) or p.state
    return next((p for p in sub.phases if p.state == "failed"), None)


def phases_line(phases: list[Phase]) -> str:
    """``base 12: done; generate 2 of 3 done (13_0 done, 13_1 running, 13_2 pending); merge 14: pending``."""
    parts = [f"{p.name} {p.job_id}: {p.state}" for p in phases if p.name != "generate"]
    shards = [p for p in phases if p.name == "generate"]
    if shards:
        done = sum(p.state == "done" for p in shards)
        ids = ", ".join(f"{p.job_id} {p.state}" for p in shards)
        parts.insert(1, f"generate {done} of {len(shards)} done ({ids})")
    return "; ".join(parts)


def wait_slurm(sub: Submission, say=print, poll_s: float = POLL_S) -> bool:
    """Wait for the array, showing progress; True when every run finished. If a job of the shared phases fails,
    cancel the jobs after it and the array (their dependency can never be met)."""
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


def launch(
    cfg: Config,
    experiment: str,
    overrides: list[str],
    workdir: Path,
    kind: str,
    methods: list[str] | None,
    seeds: list[int] | None,
    jobs: int = 1,
    force: bool = False,
    wait: bool = True,
    progress: bool = True,
    say=print,
) -> tuple[bool, Submission]:
    """``harness run --launcher KIND``: the runs not finished yet, started by KIND; (all finished?, submission)."""
    methods, seeds = methods or cfg.methods, seeds if seeds else cfg.seeds
    validate(cfg, f"experiment {cfg.name}", methods)
    tasks = pending_tasks(cfg, workdir, methods, seeds, force)
    if kind == "local":
        sub = launch_local(cfg, experiment, overrides, workdir, tasks, jobs, force, progress, say)
        return all(t.state == "done" for t in tasks), sub
    sub = launch_slurm(cfg, experiment, overrides, workdir, tasks, force)
    if not tasks:
        return True, sub
    say(
        f"submitted the shared phases as {phases_line(sub.phases)} and {len(tasks)} runs as "
        f"{', '.join(t.job_id for t in tasks)}; logs in {sub.folder}"
    )
    if not wait:
        say(f"follow them with: harness status --experiment {experiment} --workdir {workdir}")
        return True, sub
    return wait_slurm(sub, say), sub


# --------------------------------------------------------------------------- sweep workers as a SLURM array


class SweepWorkerJob:
    """A SLURM array task: one ``harness sweep worker`` (trials until the study holds ``trials`` finished ones)."""

    def __init__(self, experiment, overrides, workdir, storage, study, trials: int, index: int):
        self.experiment, self.overrides, self.workdir = experiment, overrides, workdir
        self.storage, self.study, self.trials, self.index = storage, study, trials, index

    def __call__(self) -> int:
        from harness import sweep as sw

        job_setup()
        sweep = sw.make_sweep(self.experiment, self.overrides, self.workdir, self.storage, self.study)
        counts = sw.work(sweep, self.trials, self.index, say=log.info)
        if counts.finished >= self.trials:
            sw.finalize(sweep, self.trials)
        return counts.finished

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self)  # its trial is retried (Optuna heartbeats / sweep.max_retry)


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
    folder = (Path(cfg.launcher.folder) if cfg.launcher.folder else workdir / "sweeps" / sweep.study_name).resolve()
    tasks = [Task("worker", i, "") for i in range(workers)]
    sub = Submission("slurm", cfg.name, tasks, folder=str(folder))
    sub.phases = submit_phases(cfg, folder, sweep.experiment, sweep.overrides, workdir, sw.sweep_methods(cfg))
    ex = slurm_executor(cfg, folder, f"harness-{sweep.study_name}", dependency=f"afterok:{sub.phases[-1].job_id}")
    with ex.batch():
        jobs = [
            ex.submit(
                SweepWorkerJob(
                    sweep.experiment, sweep.overrides, str(workdir), sweep.storage_url, sweep.study_name, trials, i
                )
            )
            for i in range(workers)
        ]
    for t, j in zip(tasks, jobs):
        t.job_id = str(j.job_id)
    say(
        f"submitted the shared phases as {phases_line(sub.phases)} and {workers} sweep workers as "
        f"{', '.join(t.job_id for t in tasks)}; logs in {folder}"
    )
    return wait_slurm(sub, say) if wait else True
