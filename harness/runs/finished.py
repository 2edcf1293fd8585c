"""The FINISHED MLflow run of each (method, seed) of an experiment (found by its tags method / seed / config_hash):
what a rerun reuses instead of training again, and the results table over seeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from harness.config import Config
from harness.runs.paths import run_config_hash
from harness.runs.search import search_tagged
from harness.runs.tracking import client


def finished_run(workdir: Path, cfg: Config, method: str, seed: int, config_hash: str):
    """The FINISHED MLflow run of this (method, seed) and config hash, or None."""
    c = client(workdir)
    exp = c.get_experiment_by_name(cfg.name)
    if exp is None:
        return None
    runs = search_tagged(
        c,
        [exp.experiment_id],
        {"method": method, "seed": seed, "config_hash": config_hash},
        "attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0] if runs else None


def finished_runs(
    cfg: Config, workdir: Path, methods: list[str], seeds: list[int], force: bool = False
) -> Iterator[tuple[str, int, str, object]]:
    """(method, seed, config hash, its FINISHED run or None) for each of ``methods`` × ``seeds``; with ``force`` no
    run counts as finished (and MLflow is not asked)."""
    for method in methods:
        config_hash = run_config_hash(cfg, method)
        for seed in seeds:
            yield method, seed, config_hash, None if force else finished_run(workdir, cfg, method, seed, config_hash)


def result_row(method: str, seed: int, run, **extra) -> dict:
    """One results row of a finished run: method, seed, run id, ``extra``, then its test metrics."""
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test")}
    return {"method": method, "seed": seed, "run_id": run.info.run_id, **extra, **metrics}


def results(cfg: Config, workdir: Path, methods: list[str], seeds: list[int]) -> pd.DataFrame:
    """One row per FINISHED run of ``methods`` × ``seeds`` (test metrics, run id), from MLflow."""
    rows = [result_row(m, s, run) for m, s, _, run in finished_runs(cfg, workdir, methods, seeds) if run is not None]
    return pd.DataFrame(rows)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of every test metric, one row per method."""
    metrics = [c for c in results.columns if c.startswith("test")]
    grouped = results.groupby("method", sort=False)[metrics]
    mean, std, n = grouped.mean() * 100, grouped.std(ddof=1).fillna(0) * 100, grouped.size()
    table = pd.DataFrame(index=mean.index)
    for m in metrics:
        table[m] = [f"{a:.1f} ± {b:.1f}" if k > 1 else f"{a:.1f}" for a, b, k in zip(mean[m], std[m], n)]
    table["seeds"] = n
    return table
