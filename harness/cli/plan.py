"""``harness plan``: what every epoch of every method trains on, from metadata alone."""

from __future__ import annotations

import json
from pathlib import Path

from harness.cli.options import add_common, add_experiment, add_methods
from harness.config import load_config
from harness.core.workdir import resolve_workdir


def add_parser(sub) -> None:
    s = sub.add_parser(
        "plan", help="what every epoch of every method trains on, the spectrum and GPU-hours, from metadata alone"
    )
    add_experiment(s)
    add_methods(s)
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


def cmd_plan(args) -> int:
    from harness.core.io import atomic_path
    from harness.plan.epochs import make_plan
    from harness.plan.output import format_plan, to_json

    cfg = load_config(args.experiment, args.overrides, methods=args.method)
    workdir = resolve_workdir(args.workdir) if args.workdir else None
    plan = make_plan(cfg, args.method or None, workdir, keep=args.keep, world=args.world)
    print(format_plan(plan))
    if args.json:
        with atomic_path(Path(args.json)) as tmp:
            Path(tmp).write_text(json.dumps(to_json(plan), indent=1))
        print(f"plan written to {args.json}")
    return 0
