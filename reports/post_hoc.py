"""The post-hoc baselines as rows of their own: a run that logged ``wise/test…`` or ``taunorm/test…`` metrics
(harness/phases/post_hoc.py) stands, beside its method's row, for "METHOD + WiSE-FT" and "METHOD + τ-norm", with
those metrics under the run's own test metric names. Runs without them give the tables they gave before."""

from __future__ import annotations

import pandas as pd

# metric prefix → the name its rows carry after the method's ("plain + τ-norm")
POST_HOC = {"wise": "WiSE-FT", "taunorm": "τ-norm"}
IDENTITY = ("run_id", "method", "loss", "label", "seed", "start_time")


def post_hoc_columns(runs: pd.DataFrame, prefix: str) -> dict[str, str]:
    """``{"wise/test_ood/f1_macro": "test_ood/f1_macro", …}``: a prefix's test metrics the runs logged."""
    cut = len(prefix) + 1
    return {
        c: c[cut:]
        for c in runs.columns
        if c.startswith(f"{prefix}/") and c[cut:].split("/")[0].startswith("test") and runs[c].notna().any()
    }


def post_hoc_rows(runs: pd.DataFrame, prefix: str, name: str) -> pd.DataFrame:
    """One row per run that logged ``prefix``'s test metrics: its identity with `` + name`` after its method and
    label, and those metrics under the run's own test metric names."""
    columns = post_hoc_columns(runs, prefix)
    if not columns:
        return runs.iloc[0:0]
    logged = runs[list(columns)].notna().any(axis=1)
    rows = runs.loc[logged, [c for c in IDENTITY if c in runs]].copy()
    rows["method"] = rows.method + f" + {name}"
    rows["label"] = rows.label + f" + {name}"
    metrics = runs.loc[logged, list(columns)].rename(columns=columns)
    return pd.concat([rows, metrics], axis=1)


def with_post_hoc_rows(runs: pd.DataFrame, order: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """``runs`` with the post-hoc rows added, and ``order`` with each method's post-hoc labels right after it;
    both unchanged when no run logged post-hoc test metrics."""
    added = [rows for prefix, name in POST_HOC.items() if len(rows := post_hoc_rows(runs, prefix, name))]
    if not added:
        return runs, order
    labels = set().union(*(set(rows.label) for rows in added))
    ordered = []
    for label in order:
        ordered += [label] + [f"{label} + {name}" for name in POST_HOC.values() if f"{label} + {name}" in labels]
    return pd.concat([runs, *added], ignore_index=True), ordered
