"""The report of ``harness sweep confirm``: the best schedule, the paper's and ``plain`` compared on the fresh seeds,
by the same named-comparison tables as ``harness report --contrast`` (seed-paired t-intervals, and the bootstrap over
(seed, test image) with the per-seed McNemar tests)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from reports import paired, tables
from reports.collect import collect


def confirm_runs(workdir: Path, arms, download_dir: Path) -> tuple[pd.DataFrame, dict]:
    """One row per run of every arm (its label in place of the method's), and each run's RunSet by run id."""
    frames, owners = [], {}
    for arm in arms:
        rs = collect(arm.cfg.name, workdir, download_dir)
        mine = rs.runs[rs.runs.run_id.isin(arm.run_ids)].assign(label=arm.label, method=arm.label)
        frames.append(mine)
        owners.update(dict.fromkeys(mine.run_id, rs))
    return pd.concat(frames, ignore_index=True), owners


def confirm_pairs(arms) -> list[tuple[str, str]]:
    best, paper, plain = (arm.label for arm in arms)
    return [(best, plain), (paper, plain), (best, paper)]


def confirm_report(workdir: Path, arms, out: Path) -> list:
    """The contrast tables of the arms, written as Markdown, LaTeX and CSV under ``out``; returns them."""
    with tempfile.TemporaryDirectory(prefix="harness-confirm-") as downloads:
        runs, owners = confirm_runs(Path(workdir), arms, Path(downloads))
        artifact = lambda run_id, path: owners[run_id].artifact(run_id, path)  # noqa: E731
        pairs = confirm_pairs(arms)
        made = [tables.contrast_table(runs, pairs), *paired.image_paired_tables(runs, artifact, pairs)]
        for table in made:
            tables.write_table(table, out)
    return made
