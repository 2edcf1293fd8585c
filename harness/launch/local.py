"""``harness run --launcher local --jobs K``: the shared phases once in this process, then each (method, seed) run
as its own ``harness run`` process, K at a time, each on one GPU or its share of this machine's CPU cores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.config import Config
from harness.launch.records import Submission, Task, progress_line, records_dir, update_record, write_record


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
                update_record(record, sub)
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
        update_record(record, sub)
        raise
    update_record(record, sub)
    return sub
