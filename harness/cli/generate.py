"""``harness generate``: the phases up to the filtered synthetic pool, one shard per rank under torchrun."""

from __future__ import annotations

from harness.cli.options import add_common, add_experiment
from harness.config import load_config
from harness.core.workdir import resolve_workdir


def add_parser(sub) -> None:
    s = sub.add_parser("generate", help="phases up to the filtered synthetic pool (shards under torchrun)")
    add_experiment(s)
    add_common(s)
    s.set_defaults(fn=cmd_generate)


def cmd_generate(args) -> int:
    from harness.core.distributed import rank_world
    from harness.phases.pipeline import prepare

    cfg = load_config(args.experiment, args.overrides)
    workdir = resolve_workdir(args.workdir)
    rank, world = rank_world()
    prep = prepare(cfg, workdir, methods=list(cfg.methods), progress=not args.quiet, rank=rank, world=world)
    if rank != 0:  # rank 0 waits for every shard, marks the pool complete and scores it
        print(f"rank {rank} of {world}: shard done in {prep.pool_dir}")
    elif prep.pool_dir is not None:
        kept = int(prep.pool.keep.sum())
        print(f"synthetic pool {prep.pool_dir}: {len(prep.pool)} images, {kept} kept by the filter")
    return 0
