"""Import an exported pool for ``spectrum.pool``: verify it (``reader``: only the image bytes embedded in the pool's
own files, of this experiment's size and mode, under caps), check that it fits the experiment (one line naming every
mismatch), then fill the experiment's own pool folder through ``generate_spectrum`` with a generator that looks the
images up in the verified copies, so the pool is keyed, stored and read exactly as a generated one, and no generator
weights are loaded. The pool key holds the imported files' digest (``imported_pool_digest``), checked against the
bytes read. This experiment's scorer rescores every imported image unless ``spectrum.pool_scores`` is ``trust``
(``scores``); ``spectrum.max_tries`` retries run as in a generation, with the pool's images for the tries they ask
for."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from harness.config import Config, ConfigError
from harness.config.keys import pool_key, scorer_key
from harness.core.distributed import pick_device
from harness.core.io import read_json
from harness.data.base import DatasetBundle
from harness.generators.base import GenerationItem, Generator
from harness.phases.filter import cached_text_scores
from harness.phases.spectrum import (
    PlannedImage,
    class_prompts,
    generate_spectrum,
    mark_complete,
    read_all_tries,
    retry_item,
    retry_low_scores,
)
from harness.pool.fit import fit_mismatches
from harness.pool.meta import check_card, check_generator, read_meta
from harness.pool.reader import Limits, PoolData, read_pool
from harness.pool.schema import lookup_key
from harness.pool.scores import copy_scores, keep_pool_scores, planned_lookups
from harness.pool.source import data_files, inside, resolve_source

log = logging.getLogger("harness")


class PoolImages(Generator):
    """Hands ``generate_spectrum`` the images of an imported pool instead of generating them."""

    name = "imported"

    def __init__(self, pool: PoolData, settings: dict, retries: dict | None = None, why: str = ""):
        self.pool, self.settings, rows = pool, settings, pool.rows
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
            out.append(self.pool.image(i))
        return out

    def describe(self) -> dict:
        return self.settings


def imported_from(pool_dir: Path | None) -> dict | None:
    """Where a complete pool folder's images were imported from (its ``complete.json``), None when generated."""
    complete = None if pool_dir is None else pool_dir / "complete.json"
    if complete is None or not complete.exists():
        return None
    generator = read_json(complete).get("generator")
    found = generator.get("imported_from") if isinstance(generator, dict) else None
    return found if isinstance(found, dict) else None


def import_pool(
    cfg: Config, data: DatasetBundle, plan: list[PlannedImage], pool_dir: Path, cache: Path, progress: bool
) -> dict:
    """Verify ``spectrum.pool``, check that it fits the experiment, then fill ``pool_dir`` with the planned images
    it lacks (all of them at first; after that, any a torn manifest line lost). Returns the source's description
    (for MLflow).

    With ``spectrum.max_tries`` > 1 the retries run here as in a generation (``retry_low_scores``), scored by this
    experiment's scorer (by the pool's scores under ``spectrum.pool_scores: trust`` when its scorer is ours), and
    with the pool's images for the tries they ask for: a try the pool lacks stops the import in one line."""
    source = resolve_source(cfg.spectrum.pool)
    described = source.describe()
    for name in ("harness_pool.json", "README.md"):
        if (source.path / name).exists() or (source.path / name).is_symlink():
            inside(source, source.path / name)
    data_files(source)  # no link out of the folder, no FIFO
    meta = read_meta(source.path)
    check_card(source.path)
    done = set(read_all_tries(pool_dir).key)
    recorded = imported_from(pool_dir)
    if recorded and recorded.get("digest") == source.digest and all(p.key in done for p in plan):
        return recorded | {"source": source.spec, "path": str(source.path), "revision": source.revision}
    stage = Path(tempfile.mkdtemp(prefix="import-", dir=mkdirs(cache / "pool-imports")))
    try:
        pool = read_pool(source, meta.class_names, meta.format, Limits.of(cfg, data.channels), stage)
        check_generator(source.path, meta, set(pool.rows.generator) if len(pool.rows) else set())
        if pool.digest != source.digest or pool_key(cfg) != pool_dir.name:
            raise ConfigError(
                f"spectrum.pool: {source.path} changed while it was imported (its files' digest was {source.digest}, "
                f"the bytes read have {pool.digest}); run again once it no longer changes"
            )
        described |= {"pool_key": meta.pool_key}
        fill(cfg, data, plan, pool_dir, cache, progress, pool, meta.model_dump(), described)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return described


def mkdirs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fill(cfg, data, plan, pool_dir: Path, cache: Path, progress: bool, pool: PoolData, meta: dict, described: dict):
    """The fit check, then the planned images the pool folder lacks, the retries, ``complete.json`` and the scores."""
    mismatches = fit_mismatches(cfg, data, plan, meta, pool.rows)
    if mismatches:
        raise ConfigError(
            f"spectrum.pool {cfg.spectrum.pool} does not fit experiment {cfg.name}: {'; '.join(mismatches)}"
        )
    scores_file = f"scores-{scorer_key(cfg)}.jsonl"
    trusted = cfg.spectrum.pool_scores == "trust" and meta.get("scorer_key") == scorer_key(cfg)
    settings = {**meta.get("generator_settings", {}), "imported_from": described}
    why = (
        f"it was made with max_tries {meta.get('max_tries', 1)}, scorer key {meta.get('scorer_key')}, "
        f"filter.threshold {meta.get('filter_threshold')}; here max_tries {cfg.spectrum.max_tries}, scorer key "
        f"{scorer_key(cfg)}, filter.threshold {cfg.filter.threshold}"
    )
    images = PoolImages(pool, settings, planned_retries(cfg, data, plan), why)
    generate_spectrum(images, data, plan, pool_dir, cfg.spectrum.batch_size, progress=progress)
    if cfg.spectrum.max_tries > 1 and not (pool_dir / "complete.json").exists():
        text_scores = imported_text_scores(cfg, data, pool, pool_dir, cache, scores_file, trusted, progress)
        retry_low_scores(
            images, data, plan, pool_dir, cfg.spectrum, cfg.filter.threshold, text_scores,
            cfg.spectrum.batch_size, progress=progress,
        )  # fmt: skip
    mark_complete(pool_dir, plan, images.describe())
    if trusted:
        copy_scores(pool.rows, planned_lookups(plan), pool_dir, scores_file)
    else:
        keep_pool_scores(pool.rows, plan, pool_dir)
        log.info("spectrum.pool: scoring its images with this experiment's scorer (%s)", cfg.scorer.name)


def planned_retries(cfg: Config, data: DatasetBundle, plan: list[PlannedImage]) -> dict:
    """(source id, λ, seed) → the retry item of every try a retry here could ask for (none with max_tries 1)."""
    if cfg.spectrum.max_tries == 1:
        return {}
    prompts = class_prompts(cfg.spectrum, data.class_names, sorted({p.label for p in plan}))
    items = [retry_item(p, t, prompts[p.label]) for p in plan for t in range(1, cfg.spectrum.max_tries)]
    return {(str(r.source_id), round(float(r.lam), 6), int(r.seed)): r for r in items}


def imported_text_scores(cfg, data, pool: PoolData, pool_dir: Path, cache: Path, scores_file: str, trusted, progress):
    """``retry_low_scores``' scorer on import: the text scores of the tries so far, taken from the pool under
    ``spectrum.pool_scores: trust`` when its scorer is this experiment's (written to the scores file as scoring
    would), else (and for any the pool lacks) computed by this experiment's scorer."""
    local = cached_text_scores(cfg, data, pool_dir, cache, pick_device(cfg), progress)

    def text_scores(tries) -> dict[str, float]:
        if trusted:
            wanted = zip(tries.key, tries.source_id, tries.lam, tries.seed_index, tries["try"])
            copy_scores(pool.rows, [(key, lookup_key(s, lam, k, t)) for key, s, lam, k, t in wanted], pool_dir,
                        scores_file)  # fmt: skip
        return local(tries)

    return text_scores
