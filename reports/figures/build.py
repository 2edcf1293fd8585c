"""Every figure the runs support, saved as ``figures/NAME.png`` in the page's order, with its title and
caption."""

from __future__ import annotations

import logging
from pathlib import Path

from reports.collect import RunSet
from reports.figures.base import Figure
from reports.figures.results import final_metrics, per_class
from reports.figures.spectrum import acceptance, copy_spectrum_grid, domain_gap, score_distributions
from reports.figures.sweep import save_sweep_figures
from reports.figures.training import adaptive_picks, curriculum_history, lambda_schedule, training_curves

log = logging.getLogger("harness")

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
    return made + save_sweep_figures(rs, folder)
