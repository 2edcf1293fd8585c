"""Phase 5: curricula. A method is a ``Curriculum``: which λ levels of synthetic data join each stage.

The first ``train.curriculum_epochs`` epochs are split evenly into stages; every epoch after them is real
data only. Methods live in ``baselines/``, one file each, registered with ``@register_method``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class StageContext:
    levels: tuple[float, ...]  # the curriculum's λ levels, ascending (diverse → specific)
    n_stages: int
    rng: np.random.Generator  # seeded by the run seed
    probe: Callable[[tuple[float, ...]], dict[float, float]] | None = None  # adaptive: level → gain
    history: list[tuple[float, ...]] = field(default_factory=list)  # levels used by earlier stages


class Curriculum:
    """Base class. Subclasses set the flags and say which levels each stage uses."""

    synthetic = True  # draws on the synthetic pool
    rebalance = True  # undersamples non-hard real images during the curriculum
    adaptive = False  # needs a guidance-validation set and a probe
    real_stand_in = False  # no synthetic images: as many real hard images (drawn with replacement) take their place

    def __init__(self, **params):
        if params:
            raise TypeError(f"{type(self).__name__} takes no parameters, got {sorted(params)}")

    def n_stages(self, levels: tuple[float, ...], curriculum_epochs: int) -> int:
        return max(1, min(len(levels), curriculum_epochs))

    def stage_levels(self, stage: int, ctx: StageContext) -> tuple[float, ...]:
        """λ levels whose synthetic images join this stage; () means real data only."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {}

    def levels_needed(self, levels: tuple[float, ...]) -> tuple[float, ...]:
        """The λ levels whose synthetic images this method draws (or stands in for) when handed the curriculum's
        ``levels``; the config check refuses to run it when one is not in ``spectrum.levels`` (and a synthetic
        method handed no level at all). Default: the levels it is handed (a real-only method: none)."""
        return tuple(levels) if self.synthetic or self.real_stand_in else ()


def stage_of_epoch(epoch: int, curriculum_epochs: int, n_stages: int) -> int | None:
    """The stage an epoch belongs to, or None once the curriculum is over (epoch ≥ curriculum_epochs)."""
    if epoch >= curriculum_epochs:
        return None
    return epoch * n_stages // curriculum_epochs


def drop_iqr_outliers(values: np.ndarray, k: float = 1.5) -> np.ndarray:
    q1, q3 = np.percentile(values, [25, 75])
    iqr = q3 - q1
    return values[(values >= q1 - k * iqr) & (values <= q3 + k * iqr)]


def summarize_gain(gains: np.ndarray, statistic: str, drop_outliers: bool) -> float:
    """One number per level from the per-image gains in true-class probability."""
    if drop_outliers and len(gains) >= 4:
        gains = drop_iqr_outliers(gains)
    if statistic == "median":
        return float(np.median(gains))
    if statistic == "trimmed_mean":
        from scipy.stats import trim_mean

        return float(trim_mean(gains, 0.1))
    return float(np.mean(gains))
