"""``harness plan``: what a run will train on, epoch by epoch, and what it will cost, before it spends GPU-hours.

Nothing is trained, generated or read but metadata (``harness.data.metadata``). The epochs come from the very
schedule ``harness run`` uses (``harness.phases.fine_tune.Stages``: the stages, the methods' levels, each epoch's parts)
applied to a stand-in for ``Prepared`` (``PlanPrep``): the dataset's labels,
the hard set, and the synthetic pool's frame. The pool is the one in the workdir's cache when it exists (then the
epochs are what the run will draw, to the image), else a planned frame (hard sources × λ × seeds) whose ``keep``
is an assumption, labelled as such: the paper's filter acceptance where the paper reports one, else all kept.

What the plan cannot know is said, not invented: a hard set that needs the base model (``low_prob``,
``misclassified``) is estimated with the paper's count (iWildCam: 8260); an adaptive method's levels are chosen
during training (the plan shows its first candidate level and marks the epochs ``levels_known: false``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.config import Config, ConfigError
from harness.core.registry import get_model
from harness.data.base import DatasetBundle, LabeledImages
from harness.data.metadata import LabelsOnly, load_metadata
from harness.engine.train import steps_per_epoch
from harness.phases.curriculum import natural_pass_parts, tail_share
from harness.phases.fine_tune import Stages, make_method
from harness.phases.hard_samples import excluded_labels, select_hard
from harness.plan import costs

# the hard-set sizes the paper reports for rules that need a trained model (DISCL.md §2)
PAPER_HARD = {"iwildcam": costs.IWILDCAM["hard"]}
# the paper's CLIP-filter acceptance (kept / generated, DISCL.md §3)
PAPER_KEEP = {"imagenet_lt": costs.IMAGENET_KEEP, "iwildcam": costs.IWILDCAM_KEEP}
# the model families the cost rates know (harness/plan/costs.py), by model name
RATE_MODEL = {"resnet10": "resnet10", "clip_flyp": "flyp"}
SPECTRUM_REFERENCE_AREA = 480 * 264  # the image size SPECTRUM_MS_PER_IMAGE_STEP was measured at
EPOCH_COLUMNS = [
    "epoch",
    "stage",
    "levels",
    "levels_known",
    "images",
    "steps",
    "probe_steps",
    "real_nonhard",
    "real_hard",
    "synthetic",
    "tail_share",
]


@dataclass
class PlanPrep:
    """What ``epoch_parts`` and ``split_guidance_val`` read of ``harness.phases.prepared.Prepared``, without weights,
    images or a device."""

    cfg: Config
    data: DatasetBundle
    hard: np.ndarray
    pool: pd.DataFrame
    pool_images: LabeledImages | None
    notes: dict[str, str] = field(default_factory=dict)
    retrieved: None = None  # no retrieved images: a retrieving method is replayed with the real hard images


# --------------------------------------------------------------------------- the hard set and the pool


def plan_hard(cfg: Config, data: DatasetBundle, pool: pd.DataFrame | None) -> tuple[np.ndarray, str]:
    """The hard set and how it is known: exact (few_shot from the labels; any rule once its pool exists), exact
    count (k_hardest: which images needs the base model), or an estimate with the paper's count."""
    rule = cfg.hard.rule
    if pool is not None:
        return np.unique(pool.source_index.to_numpy(dtype=np.int64)), "exact (the sources of the pool in the workdir)"
    if rule == "few_shot":
        return select_hard(cfg.hard, data, None), "exact (few_shot: from the training labels)"
    allowed = np.flatnonzero(~np.isin(data.train.labels, excluded_labels(cfg.hard.exclude_classes, data)))
    if rule == "k_hardest":
        n, how = (
            min(cfg.hard.k, len(allowed)),
            f"exact count (k_hardest, k={cfg.hard.k}; which images needs the base model)",
        )
    elif cfg.data.name in PAPER_HARD:
        n = min(PAPER_HARD[cfg.data.name], len(allowed))
        how = f"ESTIMATE: hard.rule {rule} needs the base model's predictions; the paper's count ({n}) stands in"
    else:
        raise ConfigError(
            f"harness plan: hard.rule {rule} needs the base model's predictions and the paper reports no count for "
            f"{cfg.data.name}; plan with hard.rule=k_hardest (--set hard.rule=k_hardest --set hard.k=N)"
        )
    stand_in = np.sort(np.random.default_rng(0).choice(allowed, size=n, replace=False))  # counts, not identities
    return stand_in, how


def existing_pool(cfg: Config, workdir) -> tuple[pd.DataFrame | None, str]:
    """The scored, filtered pool in the workdir's cache (None when it is not complete, or not scored yet)."""
    if workdir is None:
        return None, ""
    from harness.config.keys import pool_key, scorer_key
    from harness.core.workdir import cache_dir
    from harness.phases.filter import apply_filter, read_scores, with_scores
    from harness.phases.spectrum import read_manifest

    pool_dir = cache_dir(workdir) / "pool" / pool_key(cfg)
    if not (pool_dir / "complete.json").exists():
        return None, ""
    manifest = read_manifest(pool_dir)
    scores = read_scores(pool_dir, f"scores-{scorer_key(cfg)}.jsonl")
    if not set(manifest.key) <= set(scores):
        return None, ""
    return apply_filter(with_scores(manifest, scores), cfg.filter.threshold), f"the pool in {pool_dir} (exact)"


def planned_pool(cfg: Config, hard: np.ndarray, labels: np.ndarray, keep: str) -> tuple[pd.DataFrame, str]:
    """One row per hard source × λ × seed, in the pool's order (λ, source, seed); ``keep`` assumed: every image
    (``all``) or, per level, the paper's acceptance of the dataset (``paper``; all kept where it reports none)."""
    spec = cfg.spectrum
    sources = np.unique(hard)
    rows = pd.DataFrame(
        [(lam, int(s), k) for lam in spec.levels for s in sources for k in range(spec.seeds)],
        columns=["lam", "source_index", "seed_index"],
    )
    rows["label"] = labels[rows.source_index.to_numpy()] if len(rows) else []
    rows["key"] = [f"{s}|{lam:.4f}|{k}" for lam, s, k in zip(rows.lam, rows.source_index, rows.seed_index)]
    rate = PAPER_KEEP.get(cfg.data.name) if keep == "paper" else None
    rows["keep"] = True
    if rate is not None:
        rng = np.random.default_rng(0)
        for lam in spec.levels:
            at = np.flatnonzero((rows.lam == lam).to_numpy())
            dropped = rng.choice(at, size=len(at) - int(round(rate * len(at))), replace=False)
            rows.loc[dropped, "keep"] = False
        return rows, f"PLANNED: not generated yet; the paper's acceptance {rate:.1%} of every level assumed kept"
    return rows, "PLANNED: not generated yet; every image assumed kept (the filter keeps fewer)"


def plan_prep(cfg: Config, methods: list[str], workdir=None, keep: str = "paper") -> PlanPrep:
    from harness.phases.pipeline import needs_pool

    data, metadata_only = load_metadata(cfg)
    notes = {"data": "metadata only (no image read)" if metadata_only else f"{cfg.data.name}'s loader (in memory)"}
    pool, pool_note = existing_pool(cfg, workdir)
    hard, notes["hard"] = plan_hard(cfg, data, pool)
    if not needs_pool(cfg, methods) or len(hard) == 0:
        pool, notes["pool"] = pd.DataFrame(columns=["key", "source_index", "label", "lam", "keep"]), "none needed"
        return PlanPrep(cfg, data, hard, pool, None, notes)
    if pool is None:
        pool, pool_note = planned_pool(cfg, hard, data.train.labels, keep)
    notes["pool"] = pool_note
    return PlanPrep(cfg, data, hard, pool, LabelsOnly(pool.label.to_numpy(), pool.key.tolist()), notes)


# --------------------------------------------------------------------------- epochs


def rows_per_image(cfg: Config) -> int:
    """Training rows per image in an epoch: 1, or what the model class says (``rows_per_image(cfg)``, e.g. one
    row per FLYP template)."""
    return get_model(cfg.model.name).rows_per_image(cfg)


def plan_method(prep: PlanPrep, name: str, seed: int, world: int = 1) -> pd.DataFrame:
    """One row per epoch, replaying ``fine_tune``'s schedule with the same ``Stages`` object: the
    same seeded stream draws the stages' levels and the epochs' images in the same order, so a non-adaptive plan on
    an existing pool is what the run trains on. ``steps``: the epoch's optimizer steps (``train.epoch_length``),
    plus the adaptive rule's natural passes (``probe_steps``) where it trains them."""
    cfg = prep.cfg
    method = make_method(cfg, name)
    hard, per_row = np.unique(prep.hard), rows_per_image(cfg)
    stages = Stages.start(prep, method, seed, per_row, world)
    if method.adaptive:  # chosen during training from the guidance-validation gains: show the first candidate
        stages.ctx.probe = lambda lv: {lam: float(lam == lv[0]) for lam in lv}
    natural = natural_pass_steps(prep, stages, per_row, world) if method.adaptive else 0
    mixed = cfg.curriculum.adaptive.train_on == "all_levels"  # every level whatever the choice: known
    stream = StreamReplay(stages, per_row, world)
    rows = []
    for epoch in range(cfg.train.epochs if getattr(method, "fine_tunes", True) else 0):  # ``base``: no epochs
        decided = len(stages.record)
        ep = stages.epoch(epoch)
        stream.epoch(ep)
        parts, in_curriculum = ep.parts, ep.in_curriculum
        real = [p for p in parts if p.images is not prep.pool_images or prep.pool_images is None]
        n_hard = sum(int(np.isin(p.indices, hard).sum()) for p in real)
        n_real = sum(len(p.indices) for p in real)
        images = sum(len(p.indices) for p in parts)
        probe_steps = natural * (len(stages.record) - decided)
        rows.append(
            {
                "epoch": epoch,
                "stage": ep.stage,
                "levels": [float(x) for x in ep.levels] if method.synthetic else [],
                "levels_known": not (method.adaptive and in_curriculum and not mixed),
                "images": images,
                "steps": ep.steps + probe_steps,
                "probe_steps": probe_steps,
                "real_nonhard": n_real - n_hard,
                "real_hard": n_hard,
                "synthetic": images - n_real,
                "tail_share": tail_share(parts),
            }
        )
    frame = pd.DataFrame(rows, columns=EPOCH_COLUMNS)
    frame["stage"] = frame.stage.astype("Int64")
    return frame


def natural_pass_steps(prep: PlanPrep, stages: Stages, per_row: int, world: int) -> int:
    """The steps of one natural pass of the adaptive rule (``measure: natural_pass``; 0 otherwise)."""
    if prep.cfg.curriculum.adaptive.measure != "natural_pass":
        return 0
    parts = natural_pass_parts(prep, stages.train_sources, np.random.default_rng(0))
    return steps_per_epoch(sum(len(p.indices) for p in parts) * per_row, prep.cfg.train.batch_size, world)


class StreamReplay:
    """The trainer's stream of batches, counted: with ``decide: stage_exhausted`` a stage's data runs out within
    an epoch, and the schedule begins the next stage then (``Stages.refill``), as it does in training."""

    def __init__(self, stages: Stages, per_row: int, world: int):
        self.stages, self.per_row, self.world, self.left = stages, per_row, world, 0

    def batches(self, parts) -> int:
        rows = sum(len(p.indices) for p in parts) * self.per_row
        return steps_per_epoch(rows, self.stages.prep.cfg.train.batch_size, self.world) if rows else 0

    def epoch(self, ep) -> None:
        if not (self.stages.exhausts and ep.in_curriculum and self.stages.length.continues):
            return
        if ep.fresh:
            self.left = self.batches(ep.parts)
        need = ep.steps
        while need > 0:
            if self.left == 0:
                self.left = self.batches(self.stages.refill())
                if self.left == 0:
                    return
            take = min(need, self.left)
            need, self.left = need - take, self.left - take


def plan_spectrum_counts(prep: PlanPrep) -> dict:
    cfg, pool = prep.cfg, prep.pool
    sources = int(len(np.unique(prep.hard))) if len(pool) else 0
    kept = {f"{lam:g}": int(pool[(pool.lam - lam).abs() < 1e-6].keep.sum()) for lam in cfg.spectrum.levels}
    return {
        "sources": sources,
        "hard": prep.notes["hard"],
        "levels": [float(x) for x in cfg.spectrum.levels] if sources else [],
        "seeds": cfg.spectrum.seeds,
        "images_per_level": sources * cfg.spectrum.seeds,
        "images": sources * cfg.spectrum.seeds * len(cfg.spectrum.levels),
        "kept_per_level": kept if sources else {},
        "pool": prep.notes["pool"],
    }


def gpu_hours(prep: PlanPrep, epochs: dict[str, pd.DataFrame], spectrum: dict) -> dict:
    """GPU-hours of each phase on one H100 at ``harness.plan.costs``' rates (estimates; see ``costs.estimated_rates``),
    for one seed of each method; None where the rates do not cover the model (e.g. the embedded tiny models)."""
    cfg, data = prep.cfg, prep.data
    rates, notes = costs.estimated_rates({})
    model = RATE_MODEL.get(cfg.model.name)
    n_train = len(data.train)
    n_eval = len(data.splits[data.val_split])
    n_tests = sum(len(data.splits[s]) for s in data.test_splits.values())

    def hours(train_images: float, eval_images: float) -> float | None:
        if model is None:
            return None
        return round((train_images / rates[f"{model}_train"] + eval_images / rates[f"{model}_eval"]) / 3600, 3)

    out: dict = {"gpu": "one H100 (estimated rates, harness/plan/costs.py)", "rates": notes}
    per_row = rows_per_image(cfg)  # FLYP: the base model (the miner) also trains on (image, template) pairs
    out["base"] = 0.0 if cfg.base.checkpoint else hours(cfg.base.epochs * n_train * per_row, n_train)
    images = spectrum["images"]
    generator = cfg.generator.params
    if images and cfg.generator.name == "sd_img2img" and not generator.get("tiny"):
        area = generator.get("width", 512) * generator.get("height", 512) / SPECTRUM_REFERENCE_AREA
        image_steps = (
            spectrum["sources"] * cfg.spectrum.seeds * sum(1 - lam for lam in cfg.spectrum.levels) * cfg.spectrum.steps
        )
        out["spectrum"] = round(image_steps * costs.SPECTRUM_MS_PER_IMAGE_STEP / 1000 * area / 3600, 3)
        out["scoring"] = round((images + spectrum["sources"]) / rates["clip_b32_eval"] / 3600, 3)
    else:
        out["spectrum"] = out["scoring"] = None if images else 0.0
    out["fine_tune_per_seed"] = {
        name: hours(int(frame.images.sum()) * per_row, len(frame) * n_eval + n_tests + n_eval)
        for name, frame in epochs.items()
    }
    parts = [out["base"], out["spectrum"], out["scoring"], *out["fine_tune_per_seed"].values()]
    out["total_one_seed"] = None if any(v is None for v in parts) else round(sum(parts), 2)
    return out


# --------------------------------------------------------------------------- the plan


def make_plan(
    cfg: Config,
    methods: list[str] | None = None,
    workdir=None,
    keep: str = "paper",
    world: int = 1,
    seed: int | None = None,
) -> dict:
    """{"methods": {NAME: {"epochs": frame, "total_steps": N}}, "spectrum": {...}, "gpu_hours": {...}, ...}."""
    methods = list(methods or cfg.methods)
    seed = cfg.seeds[0] if seed is None else seed
    prep = plan_prep(cfg, methods, workdir, keep)
    epochs = {name: plan_method(prep, name, seed, world) for name in methods}
    spectrum = plan_spectrum_counts(prep)
    return {
        "experiment": cfg.name,
        "seed": seed,
        "world": world,
        "global_batch": cfg.train.batch_size * world,
        "rows_per_image": rows_per_image(cfg),
        "data": {"source": prep.notes["data"], **{k: len(v) for k, v in prep.data.splits.items()}},
        "methods": {n: {"epochs": f, "total_steps": int(f.steps.sum())} for n, f in epochs.items()},
        "spectrum": spectrum,
        "gpu_hours": gpu_hours(prep, epochs, spectrum),
    }
