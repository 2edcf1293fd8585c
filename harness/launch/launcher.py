"""Many (method, seed) runs at once: ``harness run --launcher local --jobs K`` (``harness.launch.local``: K processes
on this machine) and ``--launcher slurm`` (``harness.launch.slurm``: submitit jobs for the shared phases, then a job
array of the runs). Both start only the runs without a FINISHED MLflow run, build the shared phases (base model,
spectrum, scores) once, first, and leave a JSON record under ``WORKDIR/launcher/EXPERIMENT/``
(``harness.launch.records``) that ``harness status`` reads beside MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.config import Config, validate
from harness.launch.local import launch_local
from harness.launch.records import Submission, Task, phases_line
from harness.launch.slurm import launch_slurm, wait_slurm
from harness.runs.finished import finished_runs

log = logging.getLogger("harness")


def pending_tasks(cfg: Config, workdir: Path, methods: list[str], seeds: list[int], force: bool) -> list[Task]:
    """The (method, seed) runs without a FINISHED MLflow run of this config (all of them with ``force``)."""
    tasks = []
    for method, seed, config_hash, done in finished_runs(cfg, workdir, methods, seeds, force):
        if done is None:
            tasks.append(Task(method, seed, config_hash))
        else:
            log.info("%s seed %d: finished run found, reusing it", method, seed)
    return tasks


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
