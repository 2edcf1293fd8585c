"""What every figure module shares: the figure's record for the page, the method colours, and the first run's
copy of an artifact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import seaborn as sns

from reports.collect import RunSet


@dataclass
class Figure:
    name: str  # file stem under figures/
    title: str
    caption: str
    path: Path


def palette(labels: list[str]) -> dict[str, tuple]:
    colors = sns.color_palette("tab10") + sns.color_palette("Dark2") + sns.color_palette("Set1")  # 26 distinct
    return {label: colors[i % len(colors)] for i, label in enumerate(labels)}


def first_artifact(rs: RunSet, path: str) -> tuple[str, Path] | tuple[None, None]:
    """The first run (in the report's order) that logged ``path``, and its local copy."""
    for run_id in rs.runs.run_id:
        local = rs.artifact(run_id, path)
        if local is not None:
            return run_id, local
    return None, None
