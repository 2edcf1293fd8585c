"""The whole method, phase by phase, each phase cached in the workdir under a hash of what determines it:

real data → base model → hard samples → spectrum → scores / filter → curriculum fine-tuning → evaluation.
Methods and seeds of one experiment share the base model and the synthetic pool. This module only orchestrates;
each phase has its own module (``base_model``, ``hard_samples``, ``spectrum``, ``filter``, ``curriculum``,
``train``, ``evaluate``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness import distributed as dist
from harness.base_model import train_base
from harness.cache_keys import image_store_key, pool_key, scorer_key
from harness.config import Config
from harness.curriculum import (
    Curriculum,
    StageContext,
    epoch_parts,
    guidance_val_probe,
    split_guidance_val,
    stage_of_epoch,
    tail_share,
)
from harness.data import DatasetBundle, load_dataset
from harness.data.verify import drop_corrupt
from harness.distributed import is_main, local_device
from harness.evaluate import evaluate_split
from harness.filter import apply_filter, read_scores, score_pool, with_scores
from harness.hard_samples import select_hard
from harness.io import atomic_path, lock
from harness.models import build_model
from harness.prepared import Prepared
from harness.registry import get_generator, get_method, get_scorer
from harness.seeding import seed_everything
from harness.spectrum import (
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
from harness.train import Trainer, log_prior
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
        if (pool_dir / "complete.json").exists():
            return 0
        done = set(read_all_tries(pool_dir).key)
        if all(p.key in done for p in shard(base.plan, rank, world)):
            return 0  # a finished shard (another process's, or an earlier attempt's): no generator is loaded
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
            from harness.pool_share import import_pool

            return import_pool(cfg, base.data, plan, pool_dir, cache, progress)
        if (pool_dir / "complete.json").exists():
            return None
        check_shards(pool_dir, plan, world)
        generator = load_generator(base, cache)
        if cfg.spectrum.max_tries > 1:
            scores = retry_scorer(cfg, base.data, pool_dir, cache, base.device, progress)
            retry_low_scores(
                generator, base.data, plan, pool_dir, cfg.spectrum, cfg.filter.threshold, scores,
                cfg.spectrum.batch_size, cache / "images" / image_store_key(cfg), progress,
            )  # fmt: skip
        mark_complete(pool_dir, plan, generator.describe())
    base.timings["generate_s"] = base.timings.get("generate_s", 0.0) + time.perf_counter() - t
    return None


def score_base(base: Base, workdir: Path, progress: bool = True, pool_source: dict | None = None) -> Prepared:
    """Phase 4: score the complete pool (the scores cache) and filter it; under DDP each rank scores a block."""
    t = time.perf_counter()
    cfg, pool_dir = base.cfg, base.pool_dir
    scored = score_spectrum(
        cfg, base.data, read_manifest(pool_dir), pool_dir, cache_dir(workdir), base.device, progress
    )
    base.timings["score_s"] = time.perf_counter() - t
    pool = apply_filter(scored, cfg.filter.threshold)
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
    return score_base(base, workdir, progress, pool_source)


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


# --------------------------------------------------------------------------- phase 5: curriculum fine-tuning


@dataclass
class RunResult:
    method: str
    seed: int
    run_id: str | None
    test_metrics: dict[str, float]
    val_metrics: dict[str, float]
    best_epoch: int
    stages: list[dict]
    predictions: dict[str, pd.DataFrame]
    history: list[dict]


@dataclass
class RunState:
    """Where a fine-tuning run stands after an epoch: what its checkpoint holds besides the trainer."""

    epoch: int = 0  # epochs done
    best: float = float("-inf")  # the best ``train.select_on`` so far
    best_epoch: int = -1
    best_state: dict | None = None  # the model's weights at best_epoch
    history: list[dict] = field(default_factory=list)  # one metrics row per epoch
    stages: list[dict] = field(default_factory=list)  # the levels each curriculum stage chose
    stage: int | None = None  # the current stage
    levels: tuple[float, ...] = ()  # the current stage's λ levels
    probe_last: dict = field(default_factory=dict)  # adaptive: the guidance-validation set's last evaluation


def fine_tune(
    prep: Prepared,
    method_name: str,
    seed: int,
    run=None,
    ckpt_dir: Path | None = None,
    progress: bool = True,
    on_epoch=None,
) -> RunResult:
    """Fine-tune with one method's curriculum, from the base model or the pretrained weights (``train.init``);
    select on validation; evaluate on test.

    ``on_epoch(epoch, row)``, when given, sees each epoch's metrics row; it may raise to stop the run (a sweep
    raises ``optuna.TrialPruned``)."""
    cfg, data, device = prep.cfg, prep.data, prep.device
    method: Curriculum = get_method(method_name)(**cfg.method_params.get(method_name, {}))
    seed_everything(seed)
    model = build_model(cfg, data.num_classes, data.channels, data.class_names)
    if cfg.train.init == "base":
        model.load_state_dict(prep.base_state)
    trainer = Trainer(
        model,
        cfg.train,
        cfg.train.epochs,
        log_prior(data),
        seed,
        device,
        data.num_workers,
        distributed=True,
        transform=data.train_transform,
    )  # one DDP rank under torchrun
    trainer.current_epoch = 0
    rng = np.random.default_rng(seed)
    levels = cfg.method_levels(method)
    train_sources, held = split_guidance_val(prep, method, seed)
    n_stages = method.n_stages(levels, cfg.train.curriculum_epochs) if cfg.train.curriculum_epochs else 0
    ctx = StageContext(levels, n_stages, rng)

    state = RunState()
    ckpt = ckpt_dir / "checkpoint.pt" if ckpt_dir else None
    if ckpt and ckpt.exists():
        state = resume(ckpt, trainer, rng, run)
        log.info("resuming %s seed %d at epoch %d", method_name, seed, state.epoch)
    if method.adaptive:  # evaluates the trained model only; its last evaluation lives in the checkpoint
        ctx.probe = guidance_val_probe(prep, trainer.model, held, state.probe_last)

    from tqdm.auto import tqdm

    bar = tqdm(
        range(state.epoch, cfg.train.epochs),
        desc=f"{method_name} seed {seed}",
        unit="epoch",
        disable=not progress,
        mininterval=1,
    )
    for epoch in bar:
        trainer.current_epoch = epoch
        stage = stage_of_epoch(epoch, cfg.train.curriculum_epochs, n_stages)
        if stage is not None and stage != state.stage:
            # every rank computes the choice (the adaptive probe evaluates in lockstep); rank 0's is the one taken
            state.levels = dist.share(tuple(method.stage_levels(stage, ctx))) if levels else ()
            state.stage = stage
            ctx.history.append(state.levels)
            state.stages.append(
                {
                    "stage": stage,
                    "first_epoch": epoch,
                    "levels": list(state.levels),
                    **({"real_stand_in": True} if method.real_stand_in else {}),
                }
            )
        in_curriculum = stage is not None
        stage_levels = state.levels if in_curriculum else ()
        parts = epoch_parts(prep, method, stage_levels, in_curriculum, train_sources, rng)
        loss = trainer.train_epoch(parts, epoch)
        val_metrics, _ = evaluate_split(
            trainer.model, data, data.val_split, device, data.num_workers, trainer.amp, distributed=True
        )
        lam = float(np.mean(stage_levels)) if stage_levels and method.synthetic else 1.0
        n_syn = sum(len(p.indices) for p in parts if p.images is prep.pool_images)
        row = {
            "epoch": epoch,
            "train/loss": loss,
            "curriculum/lambda": lam,
            "curriculum/synthetic": n_syn,
            "curriculum/tail_share": tail_share(parts),
            "curriculum/images": sum(len(p.indices) for p in parts),
            "lr": trainer.opt.param_groups[0]["lr"],
            **{f"val/{k}": v for k, v in val_metrics.items()},
        }
        state.history.append(row)
        score = row.get(cfg.train.select_on, float("nan"))
        if score > state.best:
            state.best, state.best_epoch = float(score), epoch
            state.best_state = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
        state.epoch = epoch + 1
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{score:.3f}", lam=lam)
        if ckpt and is_main():  # DDP ranks hold the same state; rank 0 writes it
            save_checkpoint(ckpt, trainer, rng, state)
        if run is not None:  # after the checkpoint: a resumed run re-logs only epochs MLflow lacks
            log_row(run, row)
        if on_epoch is not None:
            on_epoch(epoch, row)

    if state.best_state is not None:
        trainer.model.load_state_dict(state.best_state)
    test_metrics, predictions = evaluate_final(trainer.model, data, device, trainer.amp)
    val_metrics = (
        {k: v for k, v in state.history[state.best_epoch].items() if k.startswith("val/")}
        if state.best_epoch >= 0
        else {}
    )
    return RunResult(
        method_name,
        seed,
        run.id if run else None,
        test_metrics,
        val_metrics,
        state.best_epoch,
        state.stages,
        predictions,
        state.history,
    )


def evaluate_final(model, data: DatasetBundle, device, amp=None) -> tuple[dict[str, float], dict[str, pd.DataFrame]]:
    """Test metrics of the selected model (named by report split, e.g. ``test_ood/f1_macro``) and the predictions
    of every test split and the validation split."""
    predictions, test_metrics = {}, {}
    for name, split in {**data.test_splits, "val": data.val_split}.items():
        metrics, preds = evaluate_split(model, data, split, device, data.num_workers, amp, distributed=True)
        predictions[split] = preds
        if name != "val":
            test_metrics.update({f"{name}/{k}": v for k, v in metrics.items()})
    return test_metrics, predictions


def log_row(run, row: dict) -> None:
    run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])


def save_checkpoint(path: Path, trainer: Trainer, rng: np.random.Generator, state: RunState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # plain types only, so loading needs no pickle (weights_only)
        torch.save({"trainer": trainer.state(), "rng": rng.bit_generator.state, "state": vars(state)}, tmp)


def resume(path: Path, trainer: Trainer, rng: np.random.Generator, run=None) -> RunState:
    """Restore a run's training state from its last checkpoint; log to MLflow the epochs it does not have yet."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    trainer.load_state(saved["trainer"])
    rng.bit_generator.state = saved["rng"]
    state = RunState(**{**saved["state"], "levels": tuple(saved["state"]["levels"])})
    if run is not None:
        logged = {m.step for m in run.c.get_metric_history(run.id, "train/loss")}
        for row in state.history:
            if row["epoch"] not in logged:
                log_row(run, row)
    return state
