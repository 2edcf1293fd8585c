"""Import an exported pool for ``spectrum.pool``: check that it fits the experiment (one line naming every
mismatch), then fill the experiment's own pool folder through ``generate_spectrum`` with a generator that looks the
images up in the dataset, so the pool is keyed, stored and read exactly as a generated one, and no generator weights
are loaded. The pool's scores are reused when its scorer is this experiment's; ``spectrum.max_tries`` retries run
as in a generation, with the pool's images for the tries they ask for."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from harness.config import Config, ConfigError
from harness.config.keys import pool_key, scorer_key
from harness.core.distributed import pick_device
from harness.core.io import append_jsonl
from harness.data.base import DatasetBundle
from harness.generators.base import GenerationItem, Generator
from harness.phases.filter import cached_text_scores, read_scores
from harness.phases.spectrum import (
    PlannedImage,
    class_prompts,
    generate_spectrum,
    mark_complete,
    retry_item,
    retry_low_scores,
)
from harness.pool.fit import fit_mismatches
from harness.pool.schema import LOOKUP_COLUMNS, lookup_key, try_column
from harness.pool.source import open_pool, resolve_source

log = logging.getLogger("harness")


def row_index(rows: pd.DataFrame) -> dict[tuple, int]:
    """``lookup_key`` → row position, for every try."""
    columns = (rows.source_id, rows.lam, rows.seed_index, try_column(rows))
    return {lookup_key(s, lam, k, t): i for i, (s, lam, k, t) in enumerate(zip(*columns))}


class PoolImages(Generator):
    """Hands ``generate_spectrum`` the images of an imported pool instead of generating them."""

    name = "imported"

    def __init__(self, ds, rows: pd.DataFrame, settings: dict, retries: dict | None = None, why: str = ""):
        self.ds, self.settings = ds, settings
        self.index = {
            (str(s), round(float(lam), 6), int(seed)): i
            for i, (s, lam, seed) in enumerate(zip(rows.source_id, rows.lam, rows.seed))
        }
        # (source id, λ, seed) → the retry a missing image would be, and what the pool was made with (the error)
        self.retries, self.why = retries or {}, why

    def generate(self, items: list[GenerationItem], lam: float) -> list[Image.Image]:
        out = []
        for it in items:
            at = (str(it.source_id), round(float(lam), 6), int(it.seed))
            i = self.index.get(at)
            if i is None and at in self.retries:
                p = self.retries[at]
                raise ConfigError(
                    f"spectrum.pool: sample {p.key.rsplit('|t', 1)[0]!r} needs try {p.try_index} here (its "
                    f"tries score ≤ the threshold under this experiment's scorer and filter.threshold) and the pool "
                    f"lacks it ({self.why}); a pool cannot be regenerated on import: run with the pool's scorer and "
                    "filter.threshold, or generate the pool (drop spectrum.pool)"
                )
            if i is None:
                raise ConfigError(
                    f"spectrum.pool: no image of source {it.source_id!r} at λ {lam:g} with seed {it.seed}"
                )
            out.append(self.ds[i]["image"])
        return out

    def describe(self) -> dict:
        return self.settings


def import_pool(
    cfg: Config, data: DatasetBundle, plan: list[PlannedImage], pool_dir: Path, cache: Path, progress: bool
) -> dict:
    """Check that ``spectrum.pool`` fits the experiment, then fill ``pool_dir`` from it (unless already complete),
    with its scores when they were made by the same scorer. Returns the source's description (for MLflow).

    With ``spectrum.max_tries`` > 1 the retries run here as in a generation (``retry_low_scores``: the manifest with
    try 0, ``retries.jsonl``, the scores file, ``selected.json``), scored with the pool's scores when its scorer is
    this experiment's, else by this experiment's scorer, and with the pool's images for the tries they ask for: a
    try the pool lacks stops the import in one line (it cannot be regenerated without the generator)."""
    source = resolve_source(cfg.spectrum.pool)
    ds, meta = open_pool(source, cache, progress)
    columns = LOOKUP_COLUMNS + (["try"] if "try" in ds.column_names else [])
    rows = ds.select_columns(columns).to_pandas()
    mismatches = fit_mismatches(cfg, data, plan, meta, rows)
    if mismatches:
        raise ConfigError(
            f"spectrum.pool {cfg.spectrum.pool} does not fit experiment {cfg.name}: {'; '.join(mismatches)}"
        )
    described = source.describe() | {"pool_key": meta.get("pool_key")}
    scores_file = f"scores-{scorer_key(cfg)}.jsonl"
    same_scorer = meta.get("scorer_key") == scorer_key(cfg)
    if not (pool_dir / "complete.json").exists():
        settings = {**meta.get("generator_settings", {}), "imported_from": described}
        why = (
            f"it was made with max_tries {meta.get('max_tries', 1)}, scorer key {meta.get('scorer_key')}, "
            f"filter.threshold {meta.get('filter_threshold')}; here max_tries {cfg.spectrum.max_tries}, scorer key "
            f"{scorer_key(cfg)}, filter.threshold {cfg.filter.threshold}"
        )
        images = PoolImages(ds, rows, settings, planned_retries(cfg, data, plan), why)
        generate_spectrum(images, data, plan, pool_dir, cfg.spectrum.batch_size, progress=progress)
        if cfg.spectrum.max_tries > 1:
            text_scores = imported_text_scores(cfg, data, ds, rows, pool_dir, cache, scores_file, same_scorer, progress)
            retry_low_scores(
                images, data, plan, pool_dir, cfg.spectrum, cfg.filter.threshold, text_scores,
                cfg.spectrum.batch_size, progress=progress,
            )  # fmt: skip
        mark_complete(pool_dir, plan, images.describe())
    if same_scorer:
        import_scores(ds, rows, plan, pool_dir, scores_file)
    else:
        log.info("spectrum.pool: scored by another scorer; scoring it with %s", cfg.scorer.name)
    if pool_key(cfg) != meta.get("pool_key"):
        log.info("spectrum.pool: made under pool key %s, used as %s (it fits)", meta.get("pool_key"), pool_key(cfg))
    return described


def planned_retries(cfg: Config, data: DatasetBundle, plan: list[PlannedImage]) -> dict:
    """(source id, λ, seed) → the retry item of every try a retry here could ask for (none with max_tries 1)."""
    if cfg.spectrum.max_tries == 1:
        return {}
    prompts = class_prompts(cfg.spectrum, data.class_names, sorted({p.label for p in plan}))
    items = [retry_item(p, t, prompts[p.label]) for p in plan for t in range(1, cfg.spectrum.max_tries)]
    return {(str(r.source_id), round(float(r.lam), 6), int(r.seed)): r for r in items}


def imported_text_scores(cfg, data, ds, rows, pool_dir: Path, cache: Path, scores_file: str, same_scorer, progress):
    """``retry_low_scores``' scorer on import: the text scores of the tries so far, taken from the pool when its
    scorer is this experiment's (written to the scores file as scoring would), else (and for any the pool lacks)
    computed by this experiment's scorer."""
    local = cached_text_scores(cfg, data, pool_dir, cache, pick_device(cfg), progress)

    def text_scores(tries: pd.DataFrame) -> dict[str, float]:
        if same_scorer:
            wanted = zip(tries.key, tries.source_id, tries.lam, tries.seed_index, tries["try"])
            copy_scores(ds, rows, [(key, lookup_key(s, lam, k, t)) for key, s, lam, k, t in wanted], pool_dir,
                        scores_file)  # fmt: skip
        return local(tries)

    return text_scores


def import_scores(ds, rows: pd.DataFrame, plan: list[PlannedImage], pool_dir: Path, scores_file: str) -> None:
    """The pool's scores as this experiment's score file (for the planned images not scored yet)."""
    wanted = [(p.key, lookup_key(p.source_id, p.lam, p.seed_index, p.try_index)) for p in plan]
    copy_scores(ds, rows, wanted, pool_dir, scores_file)


def copy_scores(ds, rows: pd.DataFrame, wanted: list[tuple[str, tuple]], pool_dir: Path, scores_file: str) -> None:
    """Append the pool's scores of ``wanted`` (our key, ``lookup_key``) not in the scores file yet; none when any
    of them is missing or not finite (the scorer then makes them)."""
    done = read_scores(pool_dir, scores_file)
    todo = [(key, at) for key, at in wanted if key not in done]
    if not todo:
        return
    index = row_index(rows)
    if any(at not in index for _, at in todo):
        return
    picked = [index[at] for _, at in todo]
    scores = ds.select_columns(["text_score", "image_score"]).to_pandas()
    text, image = scores.text_score.to_numpy()[picked], scores.image_score.to_numpy()[picked]
    if not (np.isfinite(text).all() and np.isfinite(image).all()):
        return  # incomplete scores: let the scorer make them
    append_jsonl(
        pool_dir / scores_file,
        [{"key": key, "text_score": float(t), "image_score": float(s)} for (key, _), t, s in zip(todo, text, image)],
    )
