"""Phase 5: curricula. A method is a ``Curriculum``: which λ levels of synthetic data join each stage.

The first ``train.curriculum_epochs`` epochs are split evenly into stages; every epoch after them is real
data only. Methods live in ``baselines/``, one file each, registered with ``@register_method``.

Below the methods' interface: what one epoch trains on (``epoch_parts``), and the adaptive rule's measurement
on held-out hard sources (``split_guidance_val``, ``probe_sets``, ``guidance_val_probe``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.data.base import LabeledImages, take
from harness.errors import HarnessError
from harness.evaluate import class_probs
from harness.prepared import Prepared
from harness.train import Part, Trainer, amp_dtype


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


# --------------------------------------------------------------------------- what one epoch trains on


def split_guidance_val(prep: Prepared, method: Curriculum, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hard sources that train, and those held out to guide the adaptive choice (never trained on: neither their
    real images nor their synthetic ones)."""
    sources = np.unique(prep.hard)
    if not method.adaptive:
        return sources, np.array([], dtype=int)
    rng = np.random.default_rng(seed + 7919)
    n_hold = int(round(len(sources) * prep.cfg.curriculum.adaptive.holdout))
    held = rng.choice(sources, size=n_hold, replace=False)
    return np.setdiff1d(sources, held), np.sort(held)


def synthetic_candidates(prep: Prepared, levels: tuple[float, ...], train_sources: np.ndarray) -> np.ndarray:
    """Rows of the pool a stage may draw: kept images of the stage's levels whose source trains."""
    pool = prep.pool
    usable = pool.keep & pool.lam.round(4).isin([round(x, 4) for x in levels]) & pool.source_index.isin(train_sources)
    return np.flatnonzero(usable.to_numpy())


def epoch_parts(
    prep: Prepared,
    method: Curriculum,
    levels: tuple[float, ...],
    in_curriculum: bool,
    train_sources: np.ndarray,
    rng: np.random.Generator,
) -> list[Part]:
    """The images of one epoch: real non-hard (a fresh undersample during a re-balancing curriculum), real hard,
    and during the curriculum the stage's synthetic images: every kept one of its levels (S_λ) or
    ``synthetic_scale`` per hard source. The real-only control draws as many real hard images, with replacement,
    in their place. Held-out guidance-validation sources (not in ``train_sources``) never join."""
    cfg, train = prep.cfg, prep.data.train
    hard = np.unique(prep.hard)
    non_hard = np.setdiff1d(np.arange(len(train)), hard)
    if in_curriculum and method.rebalance and cfg.train.undersample < 1:
        non_hard = np.sort(rng.choice(non_hard, size=int(round(len(non_hard) * cfg.train.undersample)), replace=False))
    hard_real = hard[np.isin(hard, train_sources)]
    tail = []
    if in_curriculum and levels and prep.pool_images is not None:
        candidates = synthetic_candidates(prep, levels, train_sources)
        scale = cfg.train.synthetic_scale
        n = len(candidates) if scale is None else min(int(round(scale * len(train_sources))), len(candidates))
        if method.synthetic:
            tail.append(Part(prep.pool_images, np.sort(rng.choice(candidates, size=n, replace=False))))
        elif method.real_stand_in and len(hard_real):
            tail.append(Part(train, np.sort(rng.choice(hard_real, size=n, replace=True))))
    parts = [Part(train, non_hard)]
    if cfg.train.include_hard_real or not tail:
        parts.append(Part(train, hard_real))
    return parts + tail


def tail_share(parts: list[Part]) -> float:
    """The fraction of an epoch's images that are hard or synthetic (everything but the first, non-hard part)."""
    total = sum(len(p.indices) for p in parts)
    return sum(len(p.indices) for p in parts[1:]) / total if total else 0.0


# --------------------------------------------------------------------------- the adaptive rule's measurement


def probe_sets(prep: Prepared, held: np.ndarray, levels: tuple[float, ...]) -> dict[float, LabeledImages]:
    """The guidance-validation images: per level, one kept synthetic image of each held-out source (its lowest
    kept seed), for the sources that have one at every level, so every level is measured on the same sources."""
    pool = prep.pool
    kept = pool[pool.keep & pool.source_index.isin(held)].rename_axis("row").reset_index()
    first = {
        lam: kept[(kept.lam - lam).abs() < 1e-6]
        .sort_values("seed_index")
        .drop_duplicates("source_index")
        .set_index("source_index")
        for lam in levels
    }
    common = sorted(set.intersection(*(set(f.index) for f in first.values()))) if first else []
    if not common:
        raise HarnessError(
            f"discl_adaptive: none of the {len(held)} held-out hard sources has a synthetic image "
            f"that passed the filter at every level {list(levels)}; raise "
            "curriculum.adaptive.holdout or lower filter.threshold"
        )
    return {lam: take(prep.pool_images, np.array(f.loc[common, "row"], dtype=np.int64)) for lam, f in first.items()}


def guidance_val_probe(
    prep: Prepared, trainer: Trainer, held: np.ndarray, probe_parts: Callable[[], list[Part]]
) -> Callable[[tuple[float, ...]], dict[float, float]]:
    """The adaptive rule's measurement: true-class probability on each level's held-out synthetic images,
    before and after a short stretch of training; the per-image gains summarized per level."""
    acfg = prep.cfg.curriculum.adaptive
    sets_of: dict[tuple[float, ...], dict[float, LabeledImages]] = {}  # the same images (and loaders) every stage

    def probe(levels: tuple[float, ...]) -> dict[float, float]:
        if levels not in sets_of:
            sets_of[levels] = probe_sets(prep, held, levels)
        sets = sets_of[levels]
        before = {lam: true_class_prob(trainer.model, s, prep) for lam, s in sets.items()}
        trainer.train_epoch(probe_parts(), epoch=trainer.current_epoch, max_steps=acfg.probe_steps)
        after = {lam: true_class_prob(trainer.model, s, prep) for lam, s in sets.items()}
        return {lam: summarize_gain(after[lam] - before[lam], acfg.statistic, acfg.drop_outliers) for lam in levels}

    return probe


def true_class_prob(model, images: LabeledImages, prep: Prepared) -> np.ndarray:
    if len(images) == 0:
        return np.zeros(0)
    probs = class_probs(
        model,
        images,
        prep.device,
        workers=prep.data.num_workers,
        transform=prep.data.eval_transform,
        amp=amp_dtype(prep.cfg.train.precision, prep.device),
        distributed=True,
        loaders=prep.data.loaders,
    )  # every rank probes in lockstep
    return probs[np.arange(len(images)), images.labels]
