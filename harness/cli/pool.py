"""``harness pool export``: an experiment's synthetic pool (generated first if it is not cached) as a Hugging
Face dataset folder."""

from __future__ import annotations

import shlex
from pathlib import Path

from harness.cli.options import add_common, add_experiment
from harness.config import load_config
from harness.core.workdir import resolve_workdir


def add_parser(sub) -> None:
    s = sub.add_parser("pool", help="share a synthetic pool: `pool export` writes it as a Hugging Face dataset")
    actions = s.add_subparsers(dest="action", required=True)
    e = actions.add_parser("export", help="the experiment's pool as parquet shards (or an image folder) + a card")
    add_experiment(e)
    e.add_argument("--out", required=True, help="a new (or empty) folder for the dataset")
    e.add_argument("--format", default="parquet", choices=["parquet", "imagefolder"], help="default: parquet")
    add_common(e)
    e.set_defaults(fn=cmd_pool_export)


def cmd_pool_export(args) -> int:
    from harness.phases.pipeline import prepare
    from harness.pool.export import check_out, export_pool

    check_out(Path(args.out))  # before the pool is prepared: an --out that cannot be used is one line at once
    cfg = load_config(args.experiment, args.overrides)
    workdir = resolve_workdir(args.workdir)
    prep = prepare(cfg, workdir, methods=list(cfg.methods), progress=not args.quiet)
    done = export_pool(prep, Path(args.out), args.format, generate_command(args))
    kept = int(prep.pool.keep.sum())
    print(f"exported {done.rows} images ({kept} kept by the filter) in {len(done.files)} files to {done.out}")
    print(f"publish it: huggingface-cli upload --repo-type dataset ORG/NAME {done.out} .")
    return 0


def generate_command(args) -> str:
    """The command that regenerates the pool, for the dataset card."""
    sets = "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    return f"harness generate --experiment {shlex.quote(args.experiment)}{sets}"
