"""Curricula and training: λ per epoch of each curriculum method, the adaptive rule's picks, training curves."""

from __future__ import annotations

import ast

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from reports.collect import RunSet
from reports.figures.base import palette


def curriculum_history(rs: RunSet) -> pd.DataFrame:
    hist = rs.history(["curriculum/lambda"])
    uses_synthetic = hist.groupby("label").value.transform(lambda v: (v < 1).any())
    return hist[uses_synthetic]


def lambda_schedule(rs: RunSet, hist: pd.DataFrame | None = None):
    """λ per epoch for each curriculum method, one step line per seed (offset slightly to keep seeds apart)."""
    hist = curriculum_history(rs) if hist is None else hist
    if hist.empty:
        return None
    labels = [lab for lab in rs.methods if lab in set(hist.label)]
    cols = min(3, len(labels))
    rows = -(-len(labels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False, sharey=True)
    seeds = sorted(hist.seed.unique())
    offsets = {s: 0.012 * (i - (len(seeds) - 1) / 2) for i, s in enumerate(seeds)}
    for ax, label in zip(axes.flat, labels):
        for seed, sub in hist[hist.label == label].groupby("seed"):
            sub = sub.sort_values("step")
            steps = np.append(sub.step.to_numpy(), sub.step.max() + 1)  # draw the last epoch's width too
            values = np.append(sub.value.to_numpy(), sub.value.iloc[-1]) + offsets[seed]
            ax.step(steps, values, where="post", lw=1.2, label=f"seed {seed}", alpha=0.8)
        ax.set(xlabel="epoch", ylim=(-0.05, 1.05))
        ax.set_title(label, fontsize=8)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for ax in axes[:, 0]:
        ax.set_ylabel("λ (1 = real only)")
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("λ used per epoch (mean of the stage's levels)", fontsize=9)
    fig.tight_layout()
    return fig


def adaptive_picks(rs: RunSet, hist: pd.DataFrame | None = None):
    """For adaptive methods: how many seeds picked each λ at each curriculum epoch."""
    hist = curriculum_history(rs) if hist is None else hist
    adaptive = set(rs.runs[rs.runs.method.str.contains("adaptive")].label)
    picks = hist[hist.label.isin(adaptive) & (hist.value < 1)]
    if picks.empty:
        return None
    labels = [lab for lab in rs.methods if lab in set(picks.label)]
    levels = sorted(set(picks.value.round(3)) | set(adaptive_levels(rs)), reverse=True)
    fig, axes = plt.subplots(1, len(labels), figsize=(4 * len(labels), 3), squeeze=False)
    for ax, label in zip(axes[0], labels):
        sub = picks[picks.label == label].assign(lam=lambda f: f.value.round(3))
        counts = sub.pivot_table(index="lam", columns="step", values="seed", aggfunc="count", fill_value=0).reindex(
            levels, fill_value=0
        )
        sns.heatmap(counts, annot=True, fmt="d", cbar=False, cmap="Blues", vmin=0, vmax=sub.seed.nunique(), ax=ax)
        ax.set(title=f"{label}: seeds picking each λ", xlabel="epoch", ylabel="λ")
    fig.tight_layout()
    return fig


def adaptive_levels(rs: RunSet) -> list[float]:
    values = rs.params.get("curriculum.adaptive_levels", pd.Series(dtype=str)).dropna().unique()
    try:
        return [round(float(v), 3) for v in ast.literal_eval(values[0])] if len(values) == 1 else []
    except (ValueError, SyntaxError, TypeError):
        return []


def training_curves(rs: RunSet):
    select_on = rs.params.get("train.select_on", pd.Series(["val/acc"])).dropna()
    keys = list(dict.fromkeys(["train/loss", "val/acc", *select_on.unique()]))
    hist = rs.history(keys)
    keys = [k for k in keys if k in set(hist.key)]
    if hist.empty:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        sub = hist[hist.key == key]
        sns.lineplot(
            sub,
            x="step",
            y="value",
            hue="label",
            hue_order=rs.methods,
            palette=palette(rs.methods),
            errorbar="sd",
            ax=ax,
            legend=ax is axes[0, -1],
        )
        ax.set(title=key, xlabel="epoch", ylabel="")
    if axes[0, -1].get_legend():
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, title=None, frameon=False)
    fig.suptitle("training curves: mean ± std over seeds", fontsize=9)
    fig.tight_layout()
    return fig
