"""The results: final test metrics per method, and per-class accuracy against the class's training count."""

from __future__ import annotations

import logging

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd
import seaborn as sns

from reports.collect import RunSet
from reports.figures.base import first_artifact, palette
from reports.tables import column_name, table_metrics

log = logging.getLogger("harness")


def final_metrics(rs: RunSet):
    """Mean over seeds per method and metric group, error bars = std over seeds, dots = single seeds."""
    metrics = table_metrics(rs.runs)
    if not metrics:
        return None
    long = rs.runs.melt(id_vars=["label", "seed"], value_vars=metrics, var_name="metric").dropna()
    long["value"] *= 100
    long["group"] = long.metric.map(column_name)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(metrics) * max(1, len(rs.methods)) / 3), 3.6))
    colors = palette(rs.methods)
    sns.barplot(
        long,
        x="group",
        y="value",
        hue="label",
        hue_order=rs.methods,
        palette=colors,
        errorbar="sd",
        capsize=0.1,
        err_kws={"linewidth": 1},
        ax=ax,
        alpha=0.85,
    )
    sns.stripplot(
        long,
        x="group",
        y="value",
        hue="label",
        hue_order=rs.methods,
        palette=colors,
        dodge=True,
        size=3,
        color="black",
        legend=False,
        ax=ax,
        edgecolor="black",
        linewidth=0.5,
    )
    ax.set(xlabel="", ylabel="test metric (%)", title="final test metrics: mean ± std over seeds (dots: seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


def class_counts(rs: RunSet) -> pd.DataFrame | None:
    """Training images per class: the logged ``data/class_counts.csv``, else rebuilt from the run's config."""
    _, local = first_artifact(rs, "data/class_counts.csv")
    if local is not None:
        return pd.read_csv(local)
    return counts_from_dataset(rs)


def counts_from_dataset(rs: RunSet) -> pd.DataFrame | None:
    from harness.config import Config, ConfigError, build
    from harness.data import DataError, load_dataset

    try:
        cfg = build(Config, rs.config(rs.runs.run_id.iloc[0]))
        data = load_dataset(cfg)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as e:
        log.warning("per-class figure skipped: no logged class counts and the dataset cannot be loaded (%s)", e)
        return None
    return data.class_counts()


def per_class_accuracy(rs: RunSet) -> pd.DataFrame:
    """Per (label, class): test accuracy averaged over seeds, from the logged predictions."""
    preds = rs.frame_artifact("predictions/test.csv")
    if preds.empty:
        return preds
    preds["correct"] = preds.y_true == preds.y_pred
    per_seed = preds.groupby(["label", "seed", "y_true"]).correct.mean().reset_index()
    return per_seed.groupby(["label", "y_true"]).correct.mean().mul(100).rename("acc").reset_index()


def per_class(rs: RunSet):
    counts, acc = class_counts(rs), per_class_accuracy(rs)
    if counts is None or acc.empty:
        return None
    frame = acc.merge(counts, left_on="y_true", right_on="class")
    frame["train_count"] = frame.train_count.clip(lower=1)  # a log axis has no 0
    fig, ax = plt.subplots(figsize=(9, 4))
    colors = palette(rs.methods)
    for label in rs.methods:
        sub = frame[frame.label == label].groupby("train_count").acc.mean().sort_index()
        ax.plot(sub.index, sub.values, marker="o", ms=3, lw=1.2, label=label, color=colors[label], alpha=0.85)
    ax.set_xscale("log")
    log_ticks(ax, frame.train_count)
    add_shot_group_bounds(ax, rs)
    ax.set(
        xlabel="training images of the class (log)",
        ylabel="test accuracy (%)",
        title="per-class test accuracy vs training count (mean over seeds)",
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


def log_ticks(ax, values: pd.Series) -> None:
    """Plain-number ticks (1, 2, 5, 10, 20, …) on a log axis instead of 4×10⁰."""
    nice = [m * 10**e for e in range(0, 7) for m in (1, 2, 5)]
    ticks = [t for t in nice if values.min() / 1.5 <= t <= values.max() * 1.5]
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def add_shot_group_bounds(ax, rs: RunSet) -> None:
    inclusive = rs.params.get("data.shot_groups.many_inclusive", pd.Series(dtype=str)).astype(str)
    many = "many ≥" if len(inclusive) and inclusive.str.lower().eq("true").all() else "many >"
    for key, text in (("data.shot_groups.few", "few <"), ("data.shot_groups.many", many)):
        values = rs.params.get(key, pd.Series(dtype=str)).dropna().unique()
        if len(values) == 1:
            ax.axvline(float(values[0]), color="grey", ls=":", lw=1)
            ax.text(float(values[0]), ax.get_ylim()[0], f" {text} {values[0]}", fontsize=7, color="grey", va="bottom")
