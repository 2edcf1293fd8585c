"""The ``harness`` command."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from harness.config import list_experiments, load_config
from harness.core.errors import HarnessError, UserError
from harness.core.workdir import resolve_workdir, tracking_uri
from harness.engine.preempt import Preempted


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workdir",
        help="folder for mlflow.db, mlartifacts/, optuna.db and cache/ "
        "(default: $HARNESS_WORKDIR or ./harness-workdir)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", "-e", required=True, help="name in experiments/ or a path to a YAML file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )


def cmd_list(args) -> int:
    from harness.core import registry

    print("experiments:", ", ".join(list_experiments()))
    print("methods:    ", ", ".join(registry.list_methods()))
    print("datasets:   ", ", ".join(registry.list_datasets()))
    print("generators: ", ", ".join(registry.list_generators()))
    print("scorers:    ", ", ".join(registry.list_scorers()))
    print("models:     ", ", ".join(registry.list_models()))
    return 0


def cmd_run(args) -> int:
    from harness.core import distributed
    from harness.engine import preempt
    from harness.runs.finished import summary_table
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
    print()
    print(f"experiment {cfg.name}: test metrics (%), mean ± std over seeds")
    print(summary_table(results).to_string())
    print()
    print("MLflow runs:", ", ".join(f"{r.method}-seed{r.seed}={r.run_id}" for r in results.itertuples()))
    print(f"browse them with: harness ui --workdir {workdir}")
    return 0


def run_launched(args, cfg, workdir: Path) -> int:
    """``harness run --launcher local|slurm``: the runs not finished yet, many at once."""
    from harness.engine import preempt
    from harness.launch.launcher import launch
    from harness.runs.finished import results, summary_table

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
        print()
        print(f"experiment {cfg.name}: test metrics (%), mean ± std over seeds")
        print(summary_table(frame).to_string())
        print()
        print("MLflow runs:", ", ".join(f"{r.method}-seed{r.seed}={r.run_id}" for r in frame.itertuples()))
    if not ok:
        failed = [f"{t.method} seed {t.seed} ({t.job_id})" for t in sub.tasks if t.state != "done"]
        print(f"harness: {len(failed)} runs did not finish: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args) -> int:
    from harness.launch.status import shared_phases_line, status_frame

    cfg = load_config(args.experiment, args.overrides, methods=args.method)
    frame = status_frame(cfg, resolve_workdir(args.workdir), args.method, args.seed)
    counts = frame.state.value_counts()
    print(f"experiment {cfg.name}: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    phases = shared_phases_line(resolve_workdir(args.workdir), cfg)
    if phases:
        print(f"shared phases (latest SLURM submission): {phases}")
    print(frame.fillna("").to_string(index=False))
    return 0


def cmd_generate(args) -> int:
    from harness.phases.pipeline import prepare

    cfg = load_config(args.experiment, args.overrides)
    workdir = resolve_workdir(args.workdir)
    from harness.core.distributed import rank_world

    rank, world = rank_world()
    prep = prepare(cfg, workdir, methods=[m for m in cfg.methods], progress=not args.quiet, rank=rank, world=world)
    if rank != 0:  # rank 0 waits for every shard, marks the pool complete and scores it
        print(f"rank {rank} of {world}: shard done in {prep.pool_dir}")
    elif prep.pool_dir is not None:
        kept = int(prep.pool.keep.sum())
        print(f"synthetic pool {prep.pool_dir}: {len(prep.pool)} images, {kept} kept by the filter")
    return 0


def cmd_plan(args) -> int:
    import json

    from harness.core.io import atomic_path
    from harness.plan.epochs import format_plan, make_plan, to_json

    cfg = load_config(args.experiment, args.overrides, methods=args.method)
    workdir = resolve_workdir(args.workdir) if args.workdir else None
    plan = make_plan(cfg, args.method or None, workdir, keep=args.keep, world=args.world)
    print(format_plan(plan))
    if args.json:
        with atomic_path(Path(args.json)) as tmp:
            Path(tmp).write_text(json.dumps(to_json(plan), indent=1))
        print(f"plan written to {args.json}")
    return 0


def cmd_pool_export(args) -> int:
    """``harness pool export``: the experiment's synthetic pool (generated first if it is not cached) as a Hugging
    Face dataset folder."""
    import shlex

    from harness.phases.pipeline import prepare
    from harness.pool.share import export_pool

    cfg = load_config(args.experiment, args.overrides)
    workdir = resolve_workdir(args.workdir)
    prep = prepare(cfg, workdir, methods=list(cfg.methods), progress=not args.quiet)
    sets = "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    command = f"harness generate --experiment {shlex.quote(args.experiment)}{sets}"
    done = export_pool(prep, Path(args.out), args.format, command)
    kept = int(prep.pool.keep.sum())
    print(f"exported {done.rows} images ({kept} kept by the filter) in {len(done.files)} files to {done.out}")
    print(f"publish it: huggingface-cli upload --repo-type dataset ORG/NAME {done.out} .")
    return 0


def add_pool_parser(sub) -> None:
    s = sub.add_parser("pool", help="share a synthetic pool: `pool export` writes it as a Hugging Face dataset")
    actions = s.add_subparsers(dest="action", required=True)
    e = actions.add_parser("export", help="the experiment's pool as parquet shards (or an image folder) + a card")
    add_experiment(e)
    e.add_argument("--out", required=True, help="a new (or empty) folder for the dataset")
    e.add_argument("--format", default="parquet", choices=["parquet", "imagefolder"], help="default: parquet")
    add_common(e)
    e.set_defaults(fn=cmd_pool_export)


def cmd_sweep(args) -> int:
    from harness import sweep as sw

    sweep = sw.make_sweep(args.experiment, args.overrides, args.workdir, args.storage, args.study)
    say = (lambda line: None) if args.quiet and args.action == "worker" else (lambda line: print(line, flush=True))
    try:
        if args.action == "init":
            study = sw.init_study(sweep)
            print(
                f"study {sweep.study_name} in {sweep.storage_url}; MLflow parent run {study.user_attrs[sw.PARENT_ATTR]}"
            )
            return 0
        if args.trials is None:
            raise UserError("harness sweep: give --trials N")
        if args.action == "worker":
            counts = sw.work(sweep, args.trials, args.worker_index, say=say)
            if counts.finished >= args.trials:
                sw.finalize(sweep, args.trials)
            return 0
        if not args.wait and args.launcher != "slurm":
            raise UserError("harness sweep: --no-wait needs --launcher slurm")
        if args.launcher == "slurm":
            from harness.launch.slurm import launch_sweep_slurm

            if not launch_sweep_slurm(sweep, args.trials, args.workers, args.wait, say) or not args.wait:
                return 0 if not args.wait else 1
            out = sw.finalize(sweep, args.trials)
        else:
            out = sw.run_sweep(sweep, args.trials, args.workers, say=say)
    except sw.SweepError as e:
        raise UserError(str(e)) from None
    print(sw.progress_line(out["study"], args.trials))
    for t in out["best"]:
        print(f"best trial {t.number}: {', '.join(f'{v:.4f}' for v in t.values)}  {t.params}")
        print(
            "  rerun it over seeds (validation picked it, so judge it on fresh seeds): "
            + sw.rerun_command(sweep, t.params)
        )
    if out["paper"] is not None and out["paper"].values:
        print(
            f"paper's diverse→specific (trial {out['paper'].number}): "
            f"{', '.join(f'{v:.4f}' for v in out['paper'].values)}"
        )
    print(f"browse them with: harness ui --workdir {sweep.workdir}")
    return 0


def cmd_report(args) -> int:
    import time

    from reports import build_report
    from reports.tables import parse_contrast

    workdir = resolve_workdir(args.workdir)
    contrasts = [parse_contrast(c) for c in args.contrast or []]
    start = time.perf_counter()
    out = Path(args.out) if args.out else None
    index = build_report(args.experiment, workdir, out, paper=args.paper, contrasts=contrasts)
    print(f"report of {args.experiment} in {time.perf_counter() - start:.1f} s: {index}")
    print(f"tables: {index.parent / 'tables'}; figures: {index.parent / 'figures'}")
    return 0


def cmd_evaluate(args) -> int:
    from mlflow.exceptions import MlflowException

    from harness.runs.logged_model import evaluate_logged_model
    from harness.runs.tracking import client

    workdir = resolve_workdir(args.workdir)
    try:
        logged = client(workdir).get_run(args.run).data.metrics
        metrics = evaluate_logged_model(args.run, workdir, args.device)
    except MlflowException as e:
        raise UserError(f"run {args.run}: {e.message}") from None
    print(f"run {args.run}: its logged model, reloaded from MLflow and evaluated now (logged value beside it)")
    for k, v in metrics.items():
        print(f"  {k:<20} {v:.4f}   logged {logged.get(k, float('nan')):.4f}")
    return 0


def cmd_ui(args) -> int:
    workdir = resolve_workdir(args.workdir)
    from harness.runs.tracking import client

    client(workdir)  # create the store if it does not exist yet
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri(workdir),
        "--default-artifact-root",
        (workdir / "mlartifacts").as_uri(),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    # MLflow 3.17's UI opens on its GenAI views unless told the workflow (the experiments' kind tag alone does not)
    print(f"MLflow UI on http://{args.host}:{args.port}/#/experiments?workflowType=machine_learning (Ctrl-C to stop)")
    return serve(cmd)


def serve(cmd: list[str]) -> int:
    """Run the server ``cmd`` in a process group of its own and end the whole group (the MLflow server and its
    uvicorn / gunicorn workers) when this process ends: by Ctrl-C, or by SIGTERM / SIGHUP as a job scheduler or
    ``kill`` sends it, which would otherwise leave the workers running and the port bound."""
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, start_new_session=True)

    def end(signum, frame):
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, end) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        end_group(proc)


def end_group(proc, grace_s: float = 10.0) -> None:
    """SIGTERM to every process of ``proc``'s group (it leads it), then SIGKILL to those still there after
    ``grace_s``."""
    import os
    import signal
    import time

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader: a zombie still counts as a member of its group
            os.killpg(proc.pid, 0)  # ProcessLookupError once the group is empty
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def cmd_recipe(args) -> int:
    """``harness recipe``: the paper's recipe against this config, one row per setting (``harness.plan.recipe``)."""
    from harness.plan.recipe import build_recipe, markdown, unexplained, write_json

    cfg = load_config(args.experiment, args.overrides)
    table = build_recipe(cfg)
    print(markdown(table))
    deviations = table[table.status == "deviation"]
    print(f"\n{cfg.name}: {len(table)} settings, {len(table) - len(deviations)} same, {len(deviations)} deviations")
    missing = unexplained(table)
    if missing:
        print(f"deviations without a reason: {', '.join(missing)}")
    if args.json:
        write_json(table, args.json)
        print(f"wrote {args.json}")
    return 0


def add_recipe_command(sub) -> None:
    s = sub.add_parser("recipe", help="the paper's settings against this config: paper, authors' code, ours, status")
    add_experiment(s)
    s.add_argument("--json", metavar="FILE", help="also write the rows as a JSON list")
    add_common(s)
    s.set_defaults(fn=cmd_recipe)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description="DisCL benchmark harness")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="experiments, methods, datasets, generators")
    add_common(s)
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("run", help="run an experiment: every phase, cached, tracked in MLflow")
    add_experiment(s)
    s.add_argument("--method", "-m", action="append", help="only this method (repeatable)")
    s.add_argument("--seed", "-s", action="append", type=int, help="only this seed (repeatable)")
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

    s = sub.add_parser("status", help="each (method, seed) run: finished / running / failed / not started, job, disk")
    add_experiment(s)
    s.add_argument("--method", "-m", action="append", help="only this method (repeatable)")
    s.add_argument("--seed", "-s", action="append", type=int, help="only this seed (repeatable)")
    add_common(s)
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("generate", help="phases up to the filtered synthetic pool (shards under torchrun)")
    add_experiment(s)
    add_common(s)
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser(
        "plan", help="what every epoch of every method trains on, the spectrum and GPU-hours, from metadata alone"
    )
    add_experiment(s)
    s.add_argument("--method", "-m", action="append", help="only this method (repeatable)")
    s.add_argument("--json", help="also write the plan to this JSON file")
    s.add_argument(
        "--keep",
        choices=["paper", "all"],
        default="paper",
        help="before the pool exists: assume the paper's filter acceptance (default) or every image kept",
    )
    s.add_argument("--world", type=int, default=1, help="DDP processes (steps at the global batch batch_size × world)")
    add_common(s)
    s.set_defaults(fn=cmd_plan)
    add_pool_parser(sub)

    s = sub.add_parser("sweep", help="an Optuna study over curriculum schedules (`sweep init` creates it first)")
    s.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=["run", "init", "worker"],
        help="init: create the study and its MLflow parent run only",
    )
    add_experiment(s)
    s.add_argument("--trials", "-n", type=int, help="run until the study holds N finished (complete or pruned) trials")
    s.add_argument("--workers", "-k", type=int, default=1, help="local worker processes")
    s.add_argument(
        "--storage",
        help="Optuna storage: an RDB URL (default sqlite:///WORKDIR/optuna.db, or "
        "postgresql://...) or journal:PATH for a journal file",
    )
    s.add_argument("--study", help="study name (default: sweep.study or <experiment>-sweep); resume by name")
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

    s = sub.add_parser("report", help="tables, figures and index.html rebuilt from an experiment's MLflow runs")
    s.add_argument("--experiment", "-e", required=True, help="MLflow experiment name (the harness experiment's)")
    s.add_argument("--out", help="output folder (default: WORKDIR/reports/EXPERIMENT)")
    s.add_argument("--paper", action="store_true", help="add the paper's numbers beside ours, labelled as the paper's")
    s.add_argument(
        "--contrast",
        action="append",
        metavar="A:B",
        help="a named comparison A − B, paired by seed with its 95%% interval (repeatable; e.g. a pre-registered one)",
    )
    add_common(s)
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("evaluate", help="reload a run's logged model from MLflow and evaluate it on test")
    s.add_argument("--run", required=True, help="MLflow run id (printed by `harness run`)")
    s.add_argument("--device", default="cpu")
    add_common(s)
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("ui", help="the MLflow UI on the workdir's store")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=5000)
    add_common(s)
    s.set_defaults(fn=cmd_ui)

    add_recipe_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if not args.quiet else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("alembic", "mlflow", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.fn(args)
    except HarnessError as e:
        if args.debug:
            raise
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"harness: {e}; rerun the same command to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("harness: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
