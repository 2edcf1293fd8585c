"""``harness report``: tables, figures and index.html rebuilt from an experiment's MLflow runs."""

from __future__ import annotations

import time
from pathlib import Path

from harness.cli.options import add_common
from harness.core.workdir import resolve_workdir


def add_parser(sub) -> None:
    s = sub.add_parser("report", help="tables, figures and index.html rebuilt from an experiment's MLflow runs")
    s.add_argument("--experiment", "-e", required=True, help="MLflow experiment name (the harness experiment's)")
    s.add_argument("--out", help="output folder (default: WORKDIR/reports/EXPERIMENT)")
    s.add_argument("--paper", action="store_true", help="add the paper's numbers beside ours, labelled as the paper's")
    s.add_argument(
        "--contrast",
        action="append",
        metavar="A:B",
        help="a named comparison A − B: paired by seed with its 95%% t-interval, and over (seed, test image) with a "
        "bootstrap interval and per-seed McNemar tests (repeatable; e.g. a pre-registered one)",
    )
    add_common(s)
    s.set_defaults(fn=cmd_report)


def cmd_report(args) -> int:
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
