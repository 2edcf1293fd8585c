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

from harness.config import ConfigError
from harness.config.fields import per_method
from harness.core.errors import HarnessError
from harness.data.base import LabeledImages, take
from harness.engine.evaluate import class_probs
from harness.engine.schedule import EpochLength
from harness.engine.train import Part, amp_dtype
from harness.phases.prepared import Prepared

REAL = 1.0  # the real images among the adaptive rule's candidates (the authors' guidance 100; λ → 1 is the image)


@dataclass
class StageContext:
    levels: tuple[float, ...]  # the curriculum's λ levels, ascending (diverse → specific)
    n_stages: int
    rng: np.random.Generator  # seeded by the run seed
    # adaptive: level → gain since the previous evaluation (REAL: the real images); None at the first evaluation
    probe: Callable[[tuple[float, ...]], dict[float, float] | None] | None = None
    history: list[tuple[float, ...]] = field(default_factory=list)  # levels used by earlier stages


class Curriculum:
    """Base class. Subclasses set the flags and say which levels each stage uses."""

    synthetic = True  # draws on the synthetic pool
    rebalance = True  # undersamples non-hard real images during the curriculum
    adaptive = False  # needs a guidance-validation set and a probe
    real_stand_in = False  # no synthetic images: as many real hard images (drawn with replacement) take their place
    # with real_stand_in: the stand-ins are real images retrieved for the hard sources (``Prepared.retrieved``)
    retrieves = False
    # every epoch takes the steps of a curriculum epoch under train.epoch_length real_rows (plain_matched: DisCL's
    # step budget on the natural data)
    matches_curriculum_steps = False

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


def stage_of_epoch(
    epoch: int, curriculum_epochs: int, n_stages: int, stage_epochs: list[int] | None = None, real_stage: bool = False
) -> int | None:
    """The stage an epoch belongs to, or None once the curriculum is over (epoch ≥ curriculum_epochs).

    ``stage_epochs`` (``curriculum.stage_epochs``, summing to ``curriculum_epochs``): the epochs of each stage in
    order; with ``real_stage`` its last entry is a real-data stage, numbered ``n_stages`` after the method's own.
    The method's stages take that list when it has one entry per stage, else split their epochs equally."""
    if epoch >= curriculum_epochs:
        return None
    real_epochs = stage_epochs[-1] if real_stage and stage_epochs else 0
    own_epochs = curriculum_epochs - real_epochs
    if epoch >= own_epochs:
        return n_stages
    own = stage_epochs[:-1] if real_epochs else stage_epochs
    if own is not None and len(own) == n_stages:
        return int(np.searchsorted(np.cumsum(own), epoch, side="right"))
    return epoch * n_stages // own_epochs


def check_stage_epochs(curriculum, curriculum_epochs: int) -> None:
    """``curriculum.stage_epochs`` must cover the curriculum's epochs exactly (and ``real_stage`` names its last)."""
    if curriculum.real_stage and not curriculum.stage_epochs:
        raise ConfigError("curriculum.real_stage needs curriculum.stage_epochs (its last entry is the real stage)")
    if curriculum.stage_epochs is not None and sum(curriculum.stage_epochs) != curriculum_epochs:
        raise ConfigError(
            f"curriculum.stage_epochs {curriculum.stage_epochs} sums to {sum(curriculum.stage_epochs)}, not "
            f"train.curriculum_epochs ({curriculum_epochs}): make them agree"
        )


def epoch_length(prep: Prepared, method: Curriculum, n_held: int, rows_per_image: int, world: int) -> EpochLength:
    """``train.epoch_length`` of ``method`` with its counts: the natural training images, and the natural rows less
    the hold-out's (its own, or for ``matches_curriculum_steps`` the one a synthetic method leaves out)."""
    cfg, name = prep.cfg, getattr(method, "registry_name", "")
    n_train = len(prep.data.train)
    if method.matches_curriculum_steps:
        n_sources = len(np.unique(prep.hard))
        scope = cfg.curriculum.holdout_scope == "synthetic" and n_sources
        n_held = holdout_count(cfg.curriculum.adaptive.holdout, n_sources) if scope else 0
    mode = "real_rows" if method.matches_curriculum_steps else per_method(cfg.train.epoch_length, name, "pass")
    return EpochLength(
        mode,
        cfg.train.batch_size,
        world,
        natural_images=n_train,
        natural_rows=(n_train - n_held) * rows_per_image,
        every_epoch=method.matches_curriculum_steps,
        rows_per_image=rows_per_image,
    )


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
    if not holds_out(prep.cfg, method) or (len(sources) == 0 and not method.adaptive):
        return sources, np.array([], dtype=int)
    rng = np.random.default_rng(seed + 7919)
    n_hold = holdout_count(prep.cfg.curriculum.adaptive.holdout, len(sources))
    held = rng.choice(sources, size=n_hold, replace=False)
    return np.setdiff1d(sources, held), np.sort(held)


def holds_out(cfg, method: Curriculum) -> bool:
    """Whether ``method`` leaves the hold-out sources out of its training data (``curriculum.holdout_scope``): the
    adaptive method always; with ``synthetic`` every method that trains on synthetic images or stands in for them."""
    uses_pool = method.synthetic or method.real_stand_in
    return method.adaptive or (cfg.curriculum.holdout_scope == "synthetic" and uses_pool)


def holdout_count(holdout: int | float, n_sources: int) -> int:
    """``curriculum.adaptive.holdout``: a count (the authors: 100 on ImageNet-LT, the paper: 2000 on iWildCam) or a
    fraction of the hard sources; it must leave some to train."""
    n = holdout if isinstance(holdout, int) else int(round(n_sources * holdout))
    if not 1 <= n < n_sources:
        raise ValueError(
            f"curriculum.adaptive.holdout: {holdout} holds out {n} of the {n_sources} hard sources; "
            "it must hold out at least one and leave at least one to train"
        )
    return n


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
    """The images of one epoch: real non-hard (a fresh undersample while re-balancing), real hard, and during the
    curriculum the stage's synthetic images. The real-only control draws as many real hard images, with
    replacement, in their place; a retrieving method as many of the real images retrieved for the training sources
    (``Prepared.retrieved``; without them, as ``harness plan`` replays a run, the real hard images). Held-out
    guidance-validation sources (not in ``train_sources``) never join.

    A re-balancing method re-balances during the curriculum, and after it too with ``train.post_curriculum:
    rebalanced`` (the authors' ImageNet-LT loader). The synthetic count: with ``train.tail_share`` the tail (real
    hard + synthetic) is share / (1 − share) × this epoch's non-hard count (rounded down, as the authors'), the
    synthetic images drawn with replacement when too few were kept, and an epoch without synthetic images upsamples
    the real hard ones (with replacement) to it; else ``synthetic_scale`` per hard source (at most every kept one);
    else (null) the volume of one level's kept images: all of them for a single-level stage, their mean count per
    level for a stage mixing several (``all_levels``; the authors' mixed mode).

    ``train.include_nonhard_real: false``: a re-balancing method's curriculum epochs leave the real non-hard images
    out (S_λ alone, the iWildCam code); ``train.post_curriculum: hard_real``: its epochs after the curriculum hold
    the real hard images alone (the iWildCam code's guidance-100 loader keeps ``img_id ≥ 0``)."""
    cfg, train = prep.cfg, prep.data.train
    hard = np.unique(prep.hard)
    non_hard = np.setdiff1d(np.arange(len(train)), hard)
    hard_real = hard[np.isin(hard, train_sources)]
    if method.rebalance and not in_curriculum and cfg.train.post_curriculum == "hard_real":
        return [Part(train, non_hard[:0]), Part(train, hard_real)]  # the iWildCam code's guidance-100 loader
    rebalanced = method.rebalance and (in_curriculum or cfg.train.post_curriculum == "rebalanced")
    if rebalanced and cfg.train.undersample < 1:  # truncated, as the authors' int(ratio × n)
        non_hard = np.sort(rng.choice(non_hard, size=int(len(non_hard) * cfg.train.undersample), replace=False))
    share = cfg.train.tail_share if rebalanced else None
    n_tail = None if share is None else int(share / (1 - share) * len(non_hard))
    tail = []
    if in_curriculum and levels and prep.pool_images is not None:
        candidates = synthetic_candidates(prep, levels, train_sources)
        n = synthetic_count(cfg.train, n_tail, len(hard_real), len(train_sources), len(candidates), len(levels))
        if method.synthetic:
            draw = rng.choice(candidates, size=n, replace=n > len(candidates)) if len(candidates) else candidates
            tail.append(Part(prep.pool_images, np.sort(draw)))
        elif method.retrieves and prep.retrieved is not None:
            rows = prep.retrieved.rows_for(train_sources)
            if len(rows):
                tail.append(Part(prep.retrieved.images, np.sort(rng.choice(rows, size=n, replace=n > len(rows)))))
        elif method.real_stand_in and len(hard_real):
            tail.append(Part(train, np.sort(rng.choice(hard_real, size=n, replace=True))))
    if in_curriculum and method.rebalance and not cfg.train.include_nonhard_real:  # S_λ alone: no real non-hard
        non_hard = non_hard[:0]
    parts = [Part(train, non_hard)]
    if n_tail is not None and not tail and len(hard_real):  # a re-balanced real-only epoch: the real tail upsampled
        parts.append(Part(train, np.sort(rng.choice(hard_real, size=n_tail, replace=True))))
    elif cfg.train.include_hard_real or not tail:
        parts.append(Part(train, hard_real))
    return parts + tail


def natural_pass_parts(prep: Prepared, train_sources: np.ndarray, rng: np.random.Generator) -> list[Part]:
    """The adaptive rule's natural pass (``curriculum.adaptive.measure: natural_pass``; the ImageNet-LT code's
    uniform set): every real non-hard image, and as many real hard images (of the training sources) drawn with
    replacement as there are."""
    train, hard = prep.data.train, np.unique(prep.hard)
    hard_real = hard[np.isin(hard, train_sources)]
    drawn = np.sort(rng.choice(hard_real, size=len(hard_real), replace=True)) if len(hard_real) else hard_real
    return [Part(train, np.setdiff1d(np.arange(len(train)), hard)), Part(train, drawn)]


def natural_pass_of(prep: Prepared, train_pass, train_sources: np.ndarray, decisions: Callable[[], int], seed: int):
    """``curriculum.adaptive.measure: natural_pass``: a callable that trains (``train_pass``) one pass over the natural
    data, drawn from a stream of its own per decision (``decisions()`` so far), so that the run's draws, the plan's
    and a resumed run's agree; None for ``between_evaluations``."""
    if prep.cfg.curriculum.adaptive.measure != "natural_pass":
        return None

    def natural_pass() -> None:
        train_pass(natural_pass_parts(prep, train_sources, np.random.default_rng([seed, 104_729, decisions()])))

    return natural_pass


def synthetic_count(train_cfg, n_tail: int | None, n_hard: int, n_sources: int, n_kept: int, n_levels: int) -> int:
    """How many synthetic images (or real stand-ins) a curriculum epoch draws; see ``epoch_parts``."""
    if n_tail is not None:
        real = n_hard if train_cfg.include_hard_real else 0
        if n_tail < real:
            raise ValueError(
                f"train.tail_share: {train_cfg.tail_share} of this epoch is {n_tail} images, fewer than its {real} "
                "real hard images alone; raise train.tail_share or train.undersample"
            )
        return n_tail - real
    if train_cfg.synthetic_scale is None:
        return int(round(n_kept / n_levels))
    return min(int(round(train_cfg.synthetic_scale * n_sources)), n_kept)


def tail_share(parts: list[Part]) -> float:
    """The fraction of an epoch's images that are hard or synthetic (everything but the first, non-hard part)."""
    total = sum(len(p.indices) for p in parts)
    return sum(len(p.indices) for p in parts[1:]) / total if total else 0.0


def drawn_counts(prep: Prepared, parts: list[Part]) -> dict[str, int]:
    """How many of an epoch's images are synthetic, and, for a retrieving method, how many retrieved."""
    counts = {"curriculum/synthetic": sum(len(p.indices) for p in parts if p.images is prep.pool_images)}
    if prep.retrieved is not None:
        counts["curriculum/retrieved"] = sum(len(p.indices) for p in parts if p.images is prep.retrieved.images)
    return counts


# --------------------------------------------------------------------------- the adaptive rule's measurement


def probe_sets(
    prep: Prepared, held: np.ndarray, levels: tuple[float, ...], include_real: bool = False
) -> dict[float, LabeledImages]:
    """The guidance-validation images: per level, one kept synthetic image of each held-out source (its lowest
    kept seed), for the sources that have one at every level, so every level is measured on the same sources;
    with ``include_real`` also those sources' real images (key ``REAL``), as the authors' set holds guidance 100."""
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
    sets = {lam: take(prep.pool_images, np.array(f.loc[common, "row"], dtype=np.int64)) for lam, f in first.items()}
    if include_real:
        sets[REAL] = take(prep.data.train, np.array(common, dtype=np.int64))
    return sets


def guidance_val_probe(
    prep: Prepared,
    model,
    held: np.ndarray,
    memory: dict[str, list[float]],
    natural_pass: Callable[[], None] | None = None,
) -> Callable[[tuple[float, ...]], dict[float, float] | None]:
    """The adaptive rule's measurement, as the authors' ``progress_eval`` (``src/models/training.py``): evaluate the
    normally trained model on the guidance-validation set; per image, true-class probability now minus at the
    previous evaluation; 1.5×IQR outliers dropped; summarized per level (mean). No training of its own: the model
    only takes its epochs' steps. The first call (no previous evaluation) returns None. ``memory`` holds the last
    evaluation (str(level) → probabilities) and lives in the run's checkpoint, so a resumed run measures alike.

    With ``natural_pass`` (``curriculum.adaptive.measure: natural_pass``, the ImageNet-LT code): evaluate, train
    that pass, evaluate again; the gains are over the pass, so every call (the first too) returns them. With
    ``decide: stage_exhausted`` (the iWildCam code, training.py:190-195): no evaluation before the first stage, and
    the first comparison is against zeros (the probabilities themselves)."""
    acfg = prep.cfg.curriculum.adaptive
    sets_of: dict[tuple[float, ...], dict[float, LabeledImages]] = {}  # the same images (and loaders) every stage
    against_zeros = acfg.decide == "stage_exhausted"
    calls = []

    def probe(levels: tuple[float, ...]) -> dict[float, float] | None:
        calls.append(levels)
        if against_zeros and len(calls) == 1 and not memory:
            return None  # the first stage: the lowest level, unevaluated
        if levels not in sets_of:
            sets_of[levels] = probe_sets(prep, held, levels, acfg.include_real)
        if natural_pass is not None:
            memory.update({str(lam): true_class_prob(model, s, prep).tolist() for lam, s in sets_of[levels].items()})
            natural_pass()
        now = {lam: true_class_prob(model, s, prep) for lam, s in sets_of[levels].items()}
        last = {lam: memory.get(str(lam), np.zeros(len(p)) if against_zeros else None) for lam, p in now.items()}
        memory.clear()
        memory.update({str(lam): p.tolist() for lam, p in now.items()})
        if any(v is None for v in last.values()):
            return None
        return {
            lam: summarize_gain(now[lam] - np.asarray(last[lam]), acfg.statistic, acfg.drop_outliers) for lam in now
        }

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
