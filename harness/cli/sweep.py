"""``harness sweep``: an Optuna study over curriculum schedules: ``init`` creates it, ``run`` (the default) runs
trials with local workers or a SLURM job array and prints the best, ``worker`` is one such worker, ``confirm``
reruns the best schedule, the paper's and ``plain`` on seeds the sweep never tuned on and compares them."""

from __future__ import annotations

import argparse

from harness.cli.options import add_common, add_experiment
from harness.core.errors import UserError


def add_parser(sub) -> None:
    s = sub.add_parser("sweep", help="an Optuna study over curriculum schedules (`sweep init` creates it first)")
    s.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=["run", "init", "worker", "confirm"],
        help="init: create the study and its MLflow parent run only; confirm: rerun the best trial's schedule, the "
        "paper's and plain on fresh seeds and report their paired contrasts on test",
    )
    add_experiment(s)
    s.add_argument("--trials", "-n", type=int, help="run until the study holds N finished (complete or pruned) trials")
    s.add_argument("--workers", "-k", type=int, default=1, help="local worker processes")
    s.add_argument(
        "--storage",
        help="Optuna storage: an RDB URL (default sqlite:///WORKDIR/optuna.db, or "
        "postgresql://...) or journal:PATH for a journal file; one with a password is better given as the "
        "environment variable HARNESS_SWEEP_STORAGE (a command line is visible to every user of the machine)",
    )
    s.add_argument("--study", help="study name (default: sweep.study or <experiment>-sweep); resume by name")
    s.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="confirm: the seeds to rerun on, never the tuning seed sweep.seed (default: three fresh seeds)",
    )
    s.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    s.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default="local",
        help="slurm: the --workers as a SLURM job array (config section launcher:; journal or RDB storage)",
    )
    s.add_argument("--no-wait", dest="wait", action="store_false", help="--launcher slurm: return after submitting")
    add_common(s)
    s.set_defaults(fn=cmd_sweep)


def cmd_sweep(args) -> int:
    from harness import sweep as sw

    sweep = sw.make_sweep(args.experiment, args.overrides, args.workdir, args.storage, args.study)
    try:
        if args.action == "init":
            parent = sw.init_study(sweep).user_attrs[sw.PARENT_ATTR]
            print(f"study {sweep.study_name} in {sw.public_url(sweep.storage_url)}; MLflow parent run {parent}")
            return 0
        if args.action == "confirm":
            return run_confirm(args, sweep)
        if args.trials is None:
            raise UserError("harness sweep: give --trials N")
        if args.action == "worker":
            run_worker(args, sweep)
            return 0
        out = run_trials(args, sweep)
    except sw.SweepError as e:
        raise UserError(str(e)) from None
    if isinstance(out, int):
        return out
    print_outcome(sweep, out, args.trials)
    return 0


def say_for(args):
    """Where progress lines go: stdout, or nowhere for a quiet worker."""
    return (lambda line: None) if args.quiet and args.action == "worker" else (lambda line: print(line, flush=True))


def run_worker(args, sweep) -> None:
    """One worker's trials; the worker that completes the study finalizes it."""
    from harness import sweep as sw

    counts = sw.work(sweep, args.trials, args.worker_index, say=say_for(args))
    if counts.finished >= args.trials:
        sw.finalize(sweep, args.trials)


def run_trials(args, sweep) -> dict | int:
    """The trials, by local workers or a SLURM job array: the finalized outcome, or the exit code when there is
    none to show (submitted without waiting, or the array failed)."""
    from harness import sweep as sw

    if not args.wait and args.launcher != "slurm":
        raise UserError("harness sweep: --no-wait needs --launcher slurm")
    if args.launcher != "slurm":
        return sw.run_sweep(sweep, args.trials, args.workers, say=say_for(args))
    from harness.launch.slurm import launch_sweep_slurm

    done = launch_sweep_slurm(sweep, args.trials, args.workers, args.wait, say_for(args))
    if not args.wait:
        return 0
    return sw.finalize(sweep, args.trials) if done else 1


def print_outcome(sweep, out: dict, trials: int) -> None:
    """Progress, the best trials with the command that reruns each over seeds, and the paper's schedule."""
    from harness import sweep as sw

    print(sw.progress_line(out["study"], trials))
    for t in out["best"]:
        print(f"best trial {t.number}: {', '.join(f'{v:.4f}' for v in t.values)}  {t.params}")
        print(
            "  rerun it over seeds (validation picked it, so judge it on fresh seeds): "
            + sw.rerun_command(sweep, t.params)
        )
    paper = out["paper"]
    if paper is not None and paper.values:
        print(f"paper's diverse→specific (trial {paper.number}): {', '.join(f'{v:.4f}' for v in paper.values)}")
    if out["best"]:
        print("  or rerun it beside the paper's schedule and plain, paired: " + confirm_command(sweep))
    print(f"browse them with: harness ui --workdir {sweep.workdir}")


def confirm_command(sweep) -> str:
    """The ``harness sweep confirm`` line for this sweep (its study, workdir and overrides)."""
    import shlex

    sets = [a for text in sweep.overrides for a in ("--set", text)]
    words = ["harness", "sweep", "confirm", "--experiment", sweep.experiment, "--study", sweep.study_name]
    return shlex.join([*words, "--workdir", str(sweep.workdir), *sets])


def run_confirm(args, sweep) -> int:
    """The three schedules on fresh seeds, then their paired contrasts printed and written as tables."""
    from harness import sweep as sw
    from reports.confirm import confirm_report
    from reports.tables import to_markdown

    seeds = sw.confirm_seeds(sweep, args.seeds)  # refuses the tuning seed before anything runs
    print(f"confirming study {sweep.study_name} on seeds {seeds} (it tuned on seed {sweep.seed})", flush=True)
    arms = sw.run_confirm(sweep, seeds, progress=not args.quiet)
    out = sweep.workdir / "reports" / f"{sweep.study_name}-confirm"
    for table in confirm_report(sweep.workdir, arms, out):
        print(f"\n### {table.title}\n\n{to_markdown(table)}")
    print(f"tables: {out}")
    return 0
