"""The synthetic spectrum: the run's grid of images (copied), filter acceptance, score distributions and the
domain each λ lies in."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from reports import collect
from reports.collect import RunSet
from reports.figures.base import first_artifact


def acceptance(rs: RunSet):
    run_id, local = first_artifact(rs, "spectrum/acceptance.csv")
    if local is None:
        return None
    frame = pd.read_csv(local).sort_values("lam")
    frame["lam"] = frame.lam.map("{:g}".format)  # categories, drawn in λ order
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    sns.barplot(frame, x="lam", y="acceptance", color="tab:blue", ax=ax)
    for i, row in enumerate(frame.itertuples()):
        ax.text(i, row.acceptance, f"{int(row.kept)}/{int(row.generated)}", ha="center", va="bottom", fontsize=7)
    ax.set(
        xlabel="image guidance λ",
        ylabel="kept by the filter",
        ylim=(0, 1.1),
        title="filter acceptance per λ (kept / generated)",
    )
    fig.tight_layout()
    return fig


def pool_scores(rs: RunSet) -> pd.DataFrame | None:
    """Scores of every synthetic image: the logged ``spectrum/scores.csv``, else the workdir's pool cache."""
    _, local = first_artifact(rs, "spectrum/scores.csv")
    if local is not None:
        return pd.read_csv(local)
    return collect.pool_scores_from_cache(rs)


def score_distributions(rs: RunSet):
    """Image–text and image–image score distributions per λ (the paper's Fig. 6/7)."""
    scores = pool_scores(rs)
    if scores is None or scores.empty:
        return None
    scores = scores.sort_values("lam").assign(lam=lambda f: f.lam.round(3).map("{:g}".format))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, col, title in (
        (axes[0], "text_score", "image–text score"),
        (axes[1], "image_score", "image–image score (to the source)"),
    ):
        sns.violinplot(
            scores, x="lam", y=col, cut=0, inner="quart", color="tab:blue", ax=ax, linewidth=0.8, density_norm="width"
        )
        ax.set(xlabel="image guidance λ", ylabel="", title=f"{title} per λ")
    threshold = rs.params.get("filter.threshold", pd.Series(dtype=str)).dropna().unique()
    if len(threshold) == 1:
        axes[0].axhline(float(threshold[0]), color="red", ls="--", lw=1, label=f"filter {threshold[0]}")
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def domain_gap(rs: RunSet):
    """Per λ, the judge's and the target-domain classifier's mean true-class probability of the synthetic images
    and their similarity to their sources (``spectrum/domain.csv``); real validation images (and the clean pool) as
    reference marks at the right."""
    _, local = first_artifact(rs, "spectrum/domain.csv")
    if local is None:
        return None
    frame = pd.read_csv(local)
    synthetic, reference = frame[frame.source == "synthetic"].sort_values("lam"), frame[frame.source != "synthetic"]
    if synthetic.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    lines = (
        ("judge_p_true", "judge (generator's clean world; the filter's score)", "tab:blue"),
        ("field_p_true", "classifier trained on the real training split", "tab:orange"),
    )
    x_ref = synthetic.lam.max() + 0.12
    for k, (col, label, color) in enumerate(lines):
        ax.plot(synthetic.lam, synthetic[col], marker="o", color=color, label=label)
        for i, row in enumerate(reference.itertuples()):  # side by side, so equal values do not hide each other
            ax.scatter(
                [x_ref + 0.08 * i + 0.012 * (2 * k - 1)],
                [getattr(row, col)],
                color=color,
                marker="s" if i == 0 else "D",
                edgecolor="black",
                zorder=3,
            )
    ticks = list(synthetic.lam) + [x_ref + 0.08 * i for i in range(len(reference))]
    ax.set_xticks(
        ticks, [f"{v:g}" for v in synthetic.lam] + [s.replace(" ", "\n") for s in reference.source], fontsize=7
    )
    ax.set(
        xlabel="image guidance λ (synthetic) · real references",
        ylabel="mean true-class probability",
        ylim=(0, 1.05),
        title="where the spectrum lies: generator's world vs target domain",
    )
    if "source_similarity" in synthetic and synthetic.source_similarity.notna().any():  # older tables lack it
        ax.plot(
            synthetic.lam,
            synthetic.source_similarity,
            marker="^",
            linestyle="--",
            color="tab:green",
            label="source similarity (judge's feature cosine to the source image)",
        )
        ax.set_ylabel("mean true-class probability · cosine")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def copy_spectrum_grid(rs: RunSet, dst: Path) -> bool:
    _, local = first_artifact(rs, "spectrum/grid.png")
    if local is None:
        return False
    shutil.copyfile(local, dst)
    return True
