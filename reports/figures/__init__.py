"""Figures from the runs, each a PNG: final metrics per method, per-class accuracy against training count
(``results``), λ per stage and training curves (``training``), the spectrum: grid, acceptance, score
distributions, domain (``spectrum``), and sweeps (``sweep``, drawn by Optuna); ``build`` saves them all.

Every builder takes the ``RunSet`` and returns a matplotlib figure, or None when the runs hold nothing to draw
(e.g. no curriculum method, no synthetic pool, no sweep), so the report simply leaves that figure out.
"""

import matplotlib

matplotlib.use("Agg")  # before any pyplot import below: files only, no display

from reports.figures.base import Figure  # noqa: E402
from reports.figures.build import build_figures  # noqa: E402

__all__ = ["Figure", "build_figures"]
