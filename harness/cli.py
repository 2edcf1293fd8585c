"""The ``harness`` command."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from harness.config import ConfigError, list_experiments, load_config
from harness.workdir import resolve_workdir, tracking_uri


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def user_errors() -> tuple[type[BaseException], ...]:
    from harness.data.base import DataError
    from harness.registry import UnknownNameError

    return ConfigError, DataError, UnknownNameError, UserError, FileNotFoundError


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", help="folder for mlflow.db, mlartifacts/, optuna.db and cache/ "
                                     "(default: $HARNESS_WORKDIR or ./harness-workdir)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", "-e", required=True, help="name in experiments/ or a path to a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")


def cmd_list(args) -> int:
    from harness import registry

    print("experiments:", ", ".join(list_experiments()))
    print("methods:    ", ", ".join(registry.list_methods()))
    print("datasets:   ", ", ".join(registry.list_datasets()))
    print("generators: ", ", ".join(registry.list_generators()))
    print("scorers:    ", ", ".join(registry.list_scorers()))
    print("models:     ", ", ".join(registry.list_models()))
    return 0


def cmd_run(args) -> int:
    from harness.runner import run_experiment, summary_table

    cfg = load_config(args.experiment, args.overrides)
    workdir = resolve_workdir(args.workdir)
    results = run_experiment(cfg, workdir, args.method or None, args.seed or None, progress=not args.quiet,
                             force=args.force)
    print()
    print(f"experiment {cfg.name}: test metrics (%), mean ± std over seeds")
    print(summary_table(results).to_string())
    print()
    print("MLflow runs:", ", ".join(f"{r.method}-seed{r.seed}={r.run_id}" for r in results.itertuples()))
    print(f"browse them with: harness ui --workdir {workdir}")
    return 0


def cmd_generate(args) -> int:
    from harness.pipeline import prepare

    cfg = load_config(args.experiment, args.overrides)
    workdir = resolve_workdir(args.workdir)
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    prep = prepare(cfg, workdir, methods=[m for m in cfg.methods], progress=not args.quiet, rank=rank, world=world)
    if prep.pool_dir is not None:
        kept = int(prep.pool.keep.sum())
        print(f"synthetic pool {prep.pool_dir}: {len(prep.pool)} images, {kept} kept by the filter")
    return 0


def cmd_ui(args) -> int:
    import subprocess

    workdir = resolve_workdir(args.workdir)
    from harness.tracking import client

    client(workdir)  # create the store if it does not exist yet
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(workdir),
           "--default-artifact-root", (workdir / "mlartifacts").as_uri(), "--host", args.host, "--port",
           str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl-C to stop)")
    return subprocess.call(cmd)


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
    add_common(s)
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("generate", help="phases up to the filtered synthetic pool (shards under torchrun)")
    add_experiment(s)
    add_common(s)
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("ui", help="the MLflow UI on the workdir's store")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=5000)
    add_common(s)
    s.set_defaults(fn=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.fn(args)
    except user_errors() as e:
        if args.debug:
            raise
        print(f"harness: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
