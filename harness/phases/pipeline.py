"""The whole method, phase by phase, each phase cached in the workdir under a hash of what determines it:

real data → base model → hard samples → spectrum → scores / filter → curriculum fine-tuning → evaluation.
Methods and seeds of one experiment share the base model and the synthetic pool. This module only orchestrates;
each phase has its own module (``base_model``, ``hard_samples``, ``spectrum``, ``filter``, ``curriculum``,
``fine_tune``, ``train``, ``evaluate``): ``prepare`` composes phases 1–4, and ``fine_tune`` runs phase 5
(``harness.phases.fine_tune``'s epochs, or the base model's evaluation for ``base``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.config import Config
from harness.config.keys import image_store_key, pool_key, scorer_key
from harness.core import distributed as dist
from harness.core.distributed import local_device, pick_device
from harness.core.io import lock
from harness.core.registry import get_generator, get_method, get_scorer
from harness.core.workdir import cache_dir
from harness.data import DatasetBundle, load_dataset
from harness.data.verify import drop_corrupt
from harness.engine.seeding import seed_everything
from harness.engine.train import amp_dtype, log_prior  # noqa: F401 (benchmarks import log_prior from here)
from harness.models.base import build_model
from harness.phases.base_model import train_base
from harness.phases.filter import apply_filter, cached_text_scores, read_scores, score_pool, with_scores
from harness.phases.fine_tune import RunResult, evaluate_final, log_row  # noqa: F401 (phase 5, re-exported)
from harness.phases.fine_tune import fine_tune as fine_tune_epochs
from harness.phases.hard_samples import select_hard
from harness.phases.near_duplicates import log_pool_near_duplicates
from harness.phases.post_hoc import post_hoc_metrics
from harness.phases.prepared import Prepared
from harness.phases.retrieval import attach_retrieved, warm_retrieval
from harness.phases.spectrum import (
    check_shards,
    generate_spectrum,
    load_pool_images,
    mark_complete,
    merge_lock,
    plan_spectrum,
    read_all_tries,
    read_manifest,
    retry_low_scores,
    shard,
    shard_lock,
    wait_for_shards,
)
from harness.pool.scores import with_pool_scores

log = logging.getLogger("harness")


# ------------------------------------------------------------------------ phases 1–4: base → hard → spectrum → filter


def needs_pool(cfg: Config, methods: list[str]) -> bool:
    """Synthetic methods train on the pool; the real-only control draws as many real images as they would."""
    return any(get_method(m).synthetic or get_method(m).real_stand_in for m in methods)


@dataclass
class Base:
    """What the first shared phase builds: data, base model, hard samples and the pool's plan (``pool_dir`` None when
    the methods need no pool or there are no hard samples)."""

    cfg: Config
    data: DatasetBundle
    device: torch.device
    base_state: dict
    hard: np.ndarray
    timings: dict[str, float]
    pool_dir: Path | None = None
    plan: list | None = None

    def prepared(self, pool: pd.DataFrame | None = None, images=None, pool_source: dict | None = None) -> Prepared:
        empty = pd.DataFrame(columns=["key", "source_index", "label", "lam", "keep", "text_score", "image_score"])
        pool = empty if pool is None else pool
        return Prepared(
            self.cfg, self.data, self.device, self.base_state, self.hard, pool, self.pool_dir, images, self.timings,
            pool_source,
        )  # fmt: skip


def prepare_base(cfg: Config, workdir: Path, methods: list[str] | None = None, progress: bool = True) -> Base:
    """Phases 1–2 (cached): the data, the base model, the hard samples, and the plan of the spectrum."""
    methods = methods or cfg.methods
    cache, device, timings = cache_dir(workdir), pick_device(cfg), {}
    t = time.perf_counter()
    data = drop_corrupt(load_dataset(cfg), cfg.data.max_corrupt_fraction, cache, progress)
    timings["data_s"] = time.perf_counter() - t
    t = time.perf_counter()
    base_state, train_probs = train_base(cfg, data, cache, device)
    timings["base_s"] = time.perf_counter() - t
    hard = select_hard(cfg.hard, data, train_probs)
    log.info("hard samples: %d of %d training images (rule %s)", len(hard), len(data.train), cfg.hard.rule)
    base = Base(cfg, data, device, base_state, hard, timings)
    if needs_pool(cfg, methods) and len(hard) > 0:
        base.pool_dir = cache / "pool" / pool_key(cfg)
        base.plan = plan_spectrum(data, hard, cfg.spectrum)
    return base


def train_generator(base: Base, cache: Path) -> None:
    """Phase 3a: the generator's own training, when it has one (``tiny_ddpm`` on the pool), cached by its key."""
    t = time.perf_counter()
    get_generator(base.cfg.generator.name).prepare(base.cfg, base.data, cache)
    base.timings["generator_train_s"] = base.timings.get("generator_train_s", 0.0) + time.perf_counter() - t


def train_scorer(base: Base, cache: Path) -> None:
    """Phase 4a: the scorer's own training, when it has one (the embedded ``judge`` on the pool), cached by its key."""
    t = time.perf_counter()
    get_scorer(base.cfg.scorer.name).prepare(base.cfg, base.data, cache)
    base.timings["scorer_train_s"] = base.timings.get("scorer_train_s", 0.0) + time.perf_counter() - t


def load_generator(base: Base, cache: Path):
    gen_cls = get_generator(base.cfg.generator.name)
    return gen_cls.from_config(base.cfg, base.data, cache, local_device(base.device))


def generate_shard(base: Base, workdir: Path, rank: int = 0, world: int = 1, progress: bool = True) -> int:
    """Phase 3, one shard: generate the images of shard ``rank`` of ``world`` that no manifest has yet, under that
    shard's own lock; never waits for another shard. Returns how many images it added (0 once the pool is complete,
    or with ``spectrum.pool``, which the merge step imports)."""
    cfg, pool_dir = base.cfg, base.pool_dir
    if pool_dir is None or cfg.spectrum.pool:
        return 0
    cache = cache_dir(workdir)
    t = time.perf_counter()
    pool_dir.mkdir(parents=True, exist_ok=True)
    with shard_lock(pool_dir, rank):
        done = set(read_all_tries(pool_dir).key)  # a complete pool too: a torn manifest line's image is made again
        if all(p.key in done for p in shard(base.plan, rank, world)):
            return 0  # a finished shard (another process's, or an earlier attempt's): no generator is loaded
        train_generator(base, cache)
        generator = load_generator(base, cache)
        store = cache / "images" / image_store_key(cfg)
        added = generate_spectrum(
            generator, base.data, base.plan, pool_dir, cfg.spectrum.batch_size, rank, world, progress, store=store
        )
    base.timings["generate_s"] = base.timings.get("generate_s", 0.0) + time.perf_counter() - t
    return added


def finish_pool(base: Base, workdir: Path, progress: bool = True, world: int = 1) -> dict | None:
    """Phase 3, the merge: under the pool's merge lock, refuse a pool whose ``world`` shards miss planned images (one
    line: how many, which shards), run the ``spectrum.max_tries`` retries, and mark the pool complete; or import
    ``spectrum.pool``. Returns the imported pool's source (None when generated)."""
    cfg, pool_dir, plan = base.cfg, base.pool_dir, base.plan
    cache = cache_dir(workdir)
    t = time.perf_counter()
    pool_dir.mkdir(parents=True, exist_ok=True)
    with merge_lock(pool_dir):
        if cfg.spectrum.pool:  # an exported pool instead of generating: no generator is loaded
            from harness.pool.load import import_pool

            return import_pool(cfg, base.data, plan, pool_dir, cache, progress)
        if (pool_dir / "complete.json").exists():
            return None
        check_shards(pool_dir, plan, world)
        generator = load_generator(base, cache)
        if cfg.spectrum.max_tries > 1:
            scores = cached_text_scores(cfg, base.data, pool_dir, cache, base.device, progress)
            retry_low_scores(
                generator, base.data, plan, pool_dir, cfg.spectrum, cfg.filter.threshold, scores,
                cfg.spectrum.batch_size, cache / "images" / image_store_key(cfg), progress,
            )  # fmt: skip
        mark_complete(pool_dir, plan, generator.describe())
    base.timings["generate_s"] = base.timings.get("generate_s", 0.0) + time.perf_counter() - t
    return None


def score_base(base: Base, workdir: Path, progress: bool = True, pool_source: dict | None = None) -> Prepared:
    """Phase 4: score the complete pool (the scores cache) and filter it; under DDP each rank scores a block."""
    train_scorer(base, cache_dir(workdir))
    t = time.perf_counter()
    cfg, pool_dir = base.cfg, base.pool_dir
    scored = score_spectrum(
        cfg, base.data, read_manifest(pool_dir), pool_dir, cache_dir(workdir), base.device, progress
    )
    base.timings["score_s"] = time.perf_counter() - t
    pool = with_pool_scores(apply_filter(scored, cfg.filter.threshold), pool_dir, cfg.filter.threshold)
    images = load_pool_images(pool, pool_dir, cfg, base.data)
    return base.prepared(pool, images, pool_source)


def prepare(
    cfg: Config, workdir: Path, methods: list[str] | None = None, progress: bool = True, rank: int = 0, world: int = 1
) -> Prepared:
    """Every shared phase in this process: ``prepare_base``, ``generate_shard`` (all of it, or this rank's shard
    under torchrun), ``finish_pool`` (rank 0, once the other ranks' shards are in), ``score_base``. The SLURM
    launcher runs the same functions as separate jobs."""
    base = prepare_base(cfg, workdir, methods, progress)
    if base.pool_dir is None:
        return base.prepared()
    generate_shard(base, workdir, rank, world, progress)
    pool_source = None
    if rank == 0:
        if world > 1 and not cfg.spectrum.pool and not (base.pool_dir / "complete.json").exists():
            t = time.perf_counter()  # torchrun: the other ranks generate their shards alongside
            wait_for_shards(base.pool_dir, {p.key for p in base.plan})
            base.timings["generate_s"] = base.timings.get("generate_s", 0.0) + time.perf_counter() - t
        pool_source = finish_pool(base, workdir, progress, world)
    if rank != 0 and not dist.active():  # `harness generate` ranks: rank 0 scores the merged pool
        return base.prepared()
    dist.barrier()  # DDP: rank 0 has merged the shards; every rank scores a block of them
    prep = score_base(base, workdir, progress, pool_source)
    if rank == 0 or dist.active():  # under DDP every rank embeds a block (sharded like scoring)
        warm_retrieval(prep, methods or cfg.methods)  # retrieval's embeddings and the near-duplicate counts
    return prep


def fine_tune(
    prep: Prepared,
    method_name: str,
    seed: int,
    run=None,
    ckpt_dir=None,
    progress: bool = True,
    on_epoch=None,
    post_hoc: bool = True,
) -> RunResult:
    """Phase 5 for one (method, seed): ``harness.phases.fine_tune.fine_tune``'s epochs, or, for a method that does
    not fine-tune (``fine_tunes = False``: ``base``), the base model evaluated as trained."""
    method = get_method(method_name)
    if not getattr(method, "fine_tunes", True):
        return evaluate_base(prep, method_name, seed, post_hoc)
    attach_retrieved(prep, method, run)  # retrieved_real: its real images, retrieved once per prep, counts logged
    log_pool_near_duplicates(prep, method, run)  # a synthetic method: its pool's near duplicates of eval images
    return fine_tune_epochs(prep, method_name, seed, run, ckpt_dir, progress, on_epoch, post_hoc)


def evaluate_base(prep: Prepared, method_name: str, seed: int, post_hoc: bool = True) -> RunResult:
    """The base model as trained, on the validation and test splits, as a run's result with no epochs (no history,
    no stages, best epoch −1), evaluated as ``fine_tune`` evaluates its selection (``train.precision``)."""
    cfg, data = prep.cfg, prep.data
    seed_everything(seed)
    model = build_model(cfg, data.num_classes, data.channels, data.class_names)
    model.load_state_dict(prep.base_state)
    model.to(prep.device)
    amp = amp_dtype(cfg.train.precision, prep.device)
    test_metrics, predictions = evaluate_final(model, data, prep.device, amp)
    val = predictions[data.val_split]
    val_metrics = {f"val/{k}": v for k, v in data.evaluate(val.y_true.to_numpy(), val.y_pred.to_numpy()).items()}
    extra = post_hoc_metrics(cfg, model, data, prep.device, amp) if post_hoc else {}  # τ-norm; no zero-shot weights
    return RunResult(method_name, seed, None, test_metrics, val_metrics, -1, [], predictions, [], extra)


def score_spectrum(
    cfg: Config,
    data: DatasetBundle,
    manifest: pd.DataFrame,
    pool_dir: Path,
    cache: Path,
    device: torch.device,
    progress: bool,
) -> pd.DataFrame:
    """Every synthetic image's scores; under DDP each rank scores a contiguous block of the sources."""
    name, rank, world = f"scores-{scorer_key(cfg)}", dist.rank(), dist.world()
    with lock(pool_dir / (name if world == 1 else f"{name}.shard{rank:03d}")):
        scorer = get_scorer(cfg.scorer.name).from_config(cfg, data, cache, device)
        scored = score_pool(
            scorer, data, manifest, pool_dir, f"{name}.jsonl", progress=progress, rank=rank, world=world
        )
    if world == 1:
        return scored
    dist.barrier()  # every rank's shard is written
    return with_scores(manifest, read_scores(pool_dir, f"{name}.jsonl"))
