"""``harness run``: an experiment's runs, one after another in this process or many at once through a
launcher, then their test metrics."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cli.options import add_common, add_experiment, add_methods, add_seeds
from harness.config import load_config
from harness.core.errors import UserError
from harness.core.workdir import resolve_workdir

if TYPE_CHECKING:
    import pandas as pd


def add_parser(sub) -> None:
    s = sub.add_parser("run", help="run an experiment: every phase, cached, tracked in MLflow")
    add_experiment(s)
    add_methods(s)
    add_seeds(s)
    s.add_argument("--force", action="store_true", help="rerun even if a finished run with this config exists")
    s.add_argument(
        "--launcher",
        choices=["none", "local", "slurm"],
        default="none",
        help="local: --jobs runs at once on this machine (one GPU, or a share of the cores, each); slurm: a job "
        "array through submitit (config section launcher:); none: one after another in this process",
    )
    s.add_argument("--jobs", "-j", type=int, default=1, help="--launcher local: runs at once")
    s.add_argument(
        "--no-wait", dest="wait", action="store_false", help="--launcher slurm: return after submitting the jobs"
    )
    add_common(s)
    s.set_defaults(fn=cmd_run)


def cmd_run(args) -> int:
    from harness.core import distributed
    from harness.engine import preempt
    from harness.runs.runner import run_experiment

    cfg = load_config(args.experiment, args.overrides, methods=args.method)  # checks the -m methods too
    workdir = resolve_workdir(args.workdir)
    if args.launcher != "none":
        return run_launched(args, cfg, workdir)
    if args.jobs != 1 or not args.wait:
        raise UserError("harness run: --jobs and --no-wait need --launcher local or --launcher slurm")
    # SIGUSR1 / SIGTERM: stop at the next training step, the MLflow run left resumable (KILLED); handlers restored after
    with preempt.installed():
        distributed.init_from_env()  # under torchrun: one DDP rank of each run
        results = run_experiment(
            cfg, workdir, args.method or None, args.seed or None, progress=not args.quiet, force=args.force
        )
    if not distributed.is_main():
        return 0
    print_results(cfg.name, results)
    print(f"browse them with: harness ui --workdir {workdir}")
    return 0


def run_launched(args, cfg, workdir: Path) -> int:
    """``harness run --launcher local|slurm``: the runs not finished yet, many at once."""
    from harness.engine import preempt
    from harness.launch.launcher import launch
    from harness.runs.finished import results

    if args.jobs < 1:
        raise UserError(f"harness run: --jobs must be at least 1, got {args.jobs}")
    if args.launcher == "slurm" and shutil.which("sbatch") is None:
        raise UserError("harness run --launcher slurm: no sbatch on PATH (run it on a SLURM login node)")
    with preempt.installed():  # a stop signal reaches the local runs too (each stops at a step boundary, resumable)
        ok, sub = launch(
            cfg,
            args.experiment,
            args.overrides,
            workdir,
            args.launcher,
            args.method,
            args.seed,
            jobs=args.jobs,
            force=args.force,
            wait=args.wait,
            progress=not args.quiet,
        )
    if not args.wait:
        return 0
    frame = results(cfg, workdir, args.method or cfg.methods, args.seed or cfg.seeds)
    if len(frame):
        print_results(cfg.name, frame)
    if not ok:
        failed = [f"{t.method} seed {t.seed} ({t.job_id})" for t in sub.tasks if t.state != "done"]
        print(f"harness: {len(failed)} runs did not finish: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def print_results(experiment: str, runs: pd.DataFrame) -> None:
    """The runs' test metrics as mean ± std over seeds, then each run's MLflow id."""
    from harness.runs.finished import summary_table

    print()
    print(f"experiment {experiment}: test metrics (%), mean ± std over seeds")
    print(summary_table(runs).to_string())
    print()
    print("MLflow runs:", ", ".join(f"{r.method}-seed{r.seed}={r.run_id}" for r in runs.itertuples()))
