"""Figures from the runs, each a PNG: final metrics per method, per-class accuracy against training count,
λ per stage, training curves, the spectrum (grid, acceptance, score distributions) and sweeps.

Every builder takes the ``RunSet`` and returns a matplotlib figure, or None when the runs hold nothing to draw
(e.g. no curriculum method, no synthetic pool, no sweep), so the report simply leaves that figure out.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports import collect  # noqa: E402
from reports.collect import RunSet  # noqa: E402
from reports.tables import column_name, table_metrics  # noqa: E402

log = logging.getLogger("harness")


@dataclass
class Figure:
    name: str  # file stem under figures/
    title: str
    caption: str
    path: Path


def palette(labels: list[str]) -> dict[str, tuple]:
    colors = sns.color_palette("tab10") + sns.color_palette("Dark2") + sns.color_palette("Set1")  # 26 distinct
    return {label: colors[i % len(colors)] for i, label in enumerate(labels)}


# --------------------------------------------------------------------------- results


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
    for run_id in rs.runs.run_id:
        local = rs.artifact(run_id, "data/class_counts.csv")
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
    for key, text in (("data.shot_groups.few", "few <"), ("data.shot_groups.many", "many >")):
        values = rs.params.get(key, pd.Series(dtype=str)).dropna().unique()
        if len(values) == 1:
            ax.axvline(float(values[0]), color="grey", ls=":", lw=1)
            ax.text(float(values[0]), ax.get_ylim()[0], f" {text} {values[0]}", fontsize=7, color="grey", va="bottom")


# --------------------------------------------------------------------------- curricula and training


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
    import ast

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


# --------------------------------------------------------------------------- synthetic spectrum


def first_artifact(rs: RunSet, path: str) -> tuple[str, Path] | tuple[None, None]:
    for run_id in rs.runs.run_id:
        local = rs.artifact(run_id, path)
        if local is not None:
            return run_id, local
    return None, None


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


# --------------------------------------------------------------------------- sweeps


def sweep_figures(rs: RunSet) -> dict[str, object]:
    """Per sweep (parent run): objective per trial with the running best, and objective vs each parameter."""
    trials = rs.sweep_runs
    parent_col = f"tags.{collect.PARENT_TAG}"
    if trials.empty or parent_col not in trials:
        return {}
    out = {}
    for parent_id, group in trials[trials[parent_col].notna()].groupby(parent_col):
        parent = trials[trials.run_id == parent_id]
        objective = collect.sweep_objective(parent, group)
        named = parent.get("tags.objective", pd.Series(dtype=str)).dropna()
        if objective is None:
            continue
        done = group[group.status == "FINISHED"].sort_values("start_time")
        if done.empty:
            continue
        name = parent["tags.mlflow.runName"].iloc[0] if len(parent) else parent_id[:8]
        label = f"{objective} ({named.iloc[0]})" if objective.startswith("objective/") and len(named) else objective
        out[f"sweep_{name}"] = sweep_figure(done, objective, name, label)
    return out


def sweep_figure(done: pd.DataFrame, objective: str, name: str, label: str):
    values = done[f"metrics.{objective}"].to_numpy(dtype=float)
    varied = [
        c
        for c in done.columns
        if c.startswith("params.") and not c.startswith("params.config.") and done[c].nunique() > 1
    ][:4]  # the sampled parameters, not the config they were applied to
    fig, axes = plt.subplots(1, 1 + len(varied), figsize=(4 * (1 + len(varied)), 3.2), squeeze=False)
    ax = axes[0, 0]
    ax.plot(np.arange(len(values)), values, "o", ms=4, label="trial")
    ax.plot(
        np.arange(len(values)),
        np.fmax.accumulate(np.nan_to_num(values, nan=-np.inf)),
        "-",
        drawstyle="steps-post",
        label="best so far",
    )
    ax.set(title=f"{name}: {label}", xlabel="trial (finished, in order)")
    ax.legend(fontsize=7)
    for ax, col in zip(axes[0, 1:], varied):
        x = pd.to_numeric(done[col], errors="coerce")
        ax.scatter(x if x.notna().all() else done[col].astype(str), values, s=14)
        ax.set(title=col[len("params.") :], ylabel=label)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- all of them

CAPTIONS = {
    "final_metrics": ("Final test metrics", "Bars: mean over seeds; error bars: std over seeds; dots: seeds."),
    "per_class": (
        "Per-class accuracy vs training count",
        "Test accuracy of each class (mean over seeds) against its number of training images, log x; "
        "dotted lines: shot-group bounds.",
    ),
    "lambda_schedule": (
        "λ per stage",
        "The image-guidance level each curriculum method trained on, per epoch and seed (1 = real data only).",
    ),
    "adaptive_picks": ("Adaptive picks", "How many seeds the adaptive rule sent to each λ at each epoch."),
    "training_curves": ("Training curves", "Per epoch, mean ± std over seeds."),
    "spectrum_grid": (
        "Synthetic spectrum",
        "Hard sources (rows) × λ (columns) as logged by the run; title: image–text score, red = filtered out.",
    ),
    "acceptance": ("Filter acceptance per λ", "Share of generated images the filter kept, per λ."),
    "domain_gap": (
        "Domain per λ",
        "Mean true-class probability of the synthetic images per λ by the judge (the "
        "generator's world, the filter's score) and by the base model (trained on the "
        "real training split: the target domain); marks: real validation images and the "
        "clean pool. The base model saw the hard sources, so λ → 1 flatters it.",
    ),
    "score_distributions": (
        "Score distributions per λ",
        "Image–text and image–image scores of every synthetic image, per λ (cf. the paper's Fig. 6/7); red: filter.",
    ),
}


def build_figures(rs: RunSet, folder: Path) -> list[Figure]:
    """Every figure the runs support, saved as ``folder/NAME.png``, in the page's order."""
    from harness.runs.plots import close

    folder.mkdir(parents=True, exist_ok=True)
    hist = curriculum_history(rs)
    builders = {
        "final_metrics": lambda: final_metrics(rs),
        "per_class": lambda: per_class(rs),
        "lambda_schedule": lambda: lambda_schedule(rs, hist),
        "adaptive_picks": lambda: adaptive_picks(rs, hist),
        "training_curves": lambda: training_curves(rs),
        "spectrum_grid": None,
        "acceptance": lambda: acceptance(rs),
        "domain_gap": lambda: domain_gap(rs),
        "score_distributions": lambda: score_distributions(rs),
    }
    made = []
    for name, make in builders.items():
        path = folder / f"{name}.png"
        if make is None:  # logged as a picture by the run: copied, not redrawn
            if copy_spectrum_grid(rs, path):
                made.append(Figure(name, *CAPTIONS[name], path))
            continue
        fig = make()
        if fig is None:
            log.info("figure %s: nothing to draw, skipped", name)
            continue
        fig.savefig(path, dpi=110)
        close(fig)
        made.append(Figure(name, *CAPTIONS[name], path))
    for name, fig in sweep_figures(rs).items():
        made.append(
            Figure(
                name,
                f"Sweep {name[len('sweep_') :]}",
                "Objective per finished trial and against each varied parameter.",
                folder / f"{name}.png",
            )
        )
        fig.savefig(made[-1].path, dpi=110)
        close(fig)
    return made
