"""``harness recipe``: the paper's recipe against this config, one row per setting (``harness.plan.recipe``)."""

from __future__ import annotations

from harness.cli.options import add_common, add_experiment
from harness.config import load_config


def add_parser(sub) -> None:
    s = sub.add_parser("recipe", help="the paper's settings against this config: paper, authors' code, ours, status")
    add_experiment(s)
    s.add_argument("--json", metavar="FILE", help="also write the rows as a JSON list")
    add_common(s)
    s.set_defaults(fn=cmd_recipe)


def cmd_recipe(args) -> int:
    from harness.plan.recipe import build_recipe, column, markdown, sources_line, unexplained, write_json

    cfg = load_config(args.experiment, args.overrides)
    table = build_recipe(cfg)
    print(markdown(table))
    counts = table.status.value_counts()
    print(f"\n{sources_line()}")
    print(
        f"{cfg.name} (follows the {column(cfg)} column): {len(table)} settings, {counts.get('same', 0)} same, "
        f"{counts.get('deviation', 0)} deviations, {counts.get('cannot reproduce', 0)} cannot reproduce"
    )
    missing = unexplained(table)
    if missing:
        print(f"deviations without a reason: {', '.join(missing)}")
    if args.json:
        write_json(table, args.json)
        print(f"wrote {args.json}")
    return 0
