"""The whole method, phase by phase, each phase cached in the workdir under a hash of what determines it:

real data → base model → hard samples → spectrum → scores / filter → curriculum fine-tuning → evaluation.
Methods and seeds of one experiment share the base model and the synthetic pool. This module only orchestrates;
each phase has its own module (``base_model``, ``hard_samples``, ``spectrum``, ``filter``, ``curriculum``,
``fine_tune``, ``train``, ``evaluate``): ``prepare`` composes phases 1–4, and phase 5 (``fine_tune``, ``RunResult``)
is ``harness.fine_tune``'s, importable from here too.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import torch

from harness import distributed as dist
from harness.base_model import train_base
from harness.cache_keys import image_store_key, pool_key, scorer_key
from harness.config import Config
from harness.data import DatasetBundle, load_dataset
from harness.data.verify import drop_corrupt
from harness.distributed import local_device
from harness.filter import apply_filter, read_scores, score_pool, with_scores
from harness.fine_tune import RunResult, evaluate_final, fine_tune, log_row  # noqa: F401 (phase 5, re-exported)
from harness.hard_samples import select_hard
from harness.io import lock
from harness.prepared import Prepared
from harness.registry import get_generator, get_method, get_scorer
from harness.spectrum import (
    generate_spectrum,
    generation_lock,
    load_pool_images,
    mark_complete,
    plan_spectrum,
    read_manifest,
    retry_low_scores,
    wait_for_shards,
)
from harness.train import log_prior  # noqa: F401 (benchmarks import it from here)
from harness.workdir import cache_dir

log = logging.getLogger("harness")


def pick_device(cfg: Config) -> torch.device:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what fp32 work remains (outside autocast) runs in TF32
        torch.backends.cudnn.allow_tf32 = True
    return device


# ------------------------------------------------------------------------ phases 1–4: base → hard → spectrum → filter


def needs_pool(cfg: Config, methods: list[str]) -> bool:
    """Synthetic methods train on the pool; the real-only control draws as many real images as they would."""
    return any(get_method(m).synthetic or get_method(m).real_stand_in for m in methods)


def prepare(
    cfg: Config, workdir: Path, methods: list[str] | None = None, progress: bool = True, rank: int = 0, world: int = 1
) -> Prepared:
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
    empty = pd.DataFrame(columns=["key", "source_index", "label", "lam", "keep", "text_score", "image_score"])
    if not needs_pool(cfg, methods) or len(hard) == 0:
        return Prepared(cfg, data, device, base_state, hard, empty, None, None, timings)

    pool_dir = cache / "pool" / pool_key(cfg)
    plan = plan_spectrum(data, hard, cfg.spectrum)
    t = time.perf_counter()
    pool_source = None
    with generation_lock(pool_dir, rank):
        if cfg.spectrum.pool and rank == 0:  # an exported pool instead of generating: no generator is loaded
            from harness.pool_share import import_pool

            pool_source = import_pool(cfg, data, plan, pool_dir, cache, progress)
        elif not cfg.spectrum.pool and not (pool_dir / "complete.json").exists():
            gen_cls = get_generator(cfg.generator.name)
            generator = gen_cls.from_config(cfg, data, cache, local_device(device))
            store = cache / "images" / image_store_key(cfg)
            generate_spectrum(
                generator, data, plan, pool_dir, cfg.spectrum.batch_size, rank, world, progress, store=store
            )
            if rank == 0:
                wait_for_shards(pool_dir, {p.key for p in plan})
                if cfg.spectrum.max_tries > 1:
                    scores = retry_scorer(cfg, data, pool_dir, cache, device, progress)
                    retry_low_scores(
                        generator, data, plan, pool_dir, cfg.spectrum, cfg.filter.threshold, scores,
                        cfg.spectrum.batch_size, store, progress,
                    )  # fmt: skip
                mark_complete(pool_dir, plan, generator.describe())
    timings["generate_s"] = time.perf_counter() - t
    if rank != 0 and not dist.active():  # `harness generate` ranks: rank 0 scores the merged pool
        return Prepared(cfg, data, device, base_state, hard, empty, pool_dir, None, timings)
    dist.barrier()  # DDP: rank 0 has merged the shards; every rank scores a block of them
    t = time.perf_counter()
    scored = score_spectrum(cfg, data, read_manifest(pool_dir), pool_dir, cache, device, progress)
    timings["score_s"] = time.perf_counter() - t
    pool = apply_filter(scored, cfg.filter.threshold)
    images = load_pool_images(pool, pool_dir, cfg, data)
    return Prepared(cfg, data, device, base_state, hard, pool, pool_dir, images, timings, pool_source)


def retry_scorer(cfg: Config, data: DatasetBundle, pool_dir: Path, cache: Path, device: torch.device, progress: bool):
    """``spectrum.max_tries``: text scores of a pool's tries, cached in the scores file the filter reads later."""
    name, scorer = f"scores-{scorer_key(cfg)}", None

    def text_scores(tries: pd.DataFrame) -> dict[str, float]:
        nonlocal scorer
        with lock(pool_dir / name):
            cached = read_scores(pool_dir, f"{name}.jsonl")
            if not tries.key.isin(cached).all() and scorer is None:
                scorer = get_scorer(cfg.scorer.name).from_config(cfg, data, cache, device)
            if scorer is not None:
                score_pool(scorer, data, tries, pool_dir, f"{name}.jsonl", progress=progress)
        return {k: r["text_score"] for k, r in read_scores(pool_dir, f"{name}.jsonl").items()}

    return text_scores


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
