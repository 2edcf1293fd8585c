"""The whole method, phase by phase, each phase cached in the workdir under a hash of what determines it:

real data → base model → hard samples → spectrum → scores / filter → curriculum fine-tuning → evaluation.
Methods and seeds of one experiment share the base model and the synthetic pool.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from harness.cache_keys import base_key, pool_key, scorer_key  # noqa: F401 (reports import them from here)
from harness.config import Config
from harness.curriculum import Curriculum, StageContext, stage_of_epoch, summarize_gain
from harness.data import DatasetBundle, load_dataset
from harness.data.verify import drop_corrupt
from harness.data.base import FileImages, LabeledImages, TensorImages, to_tensor01
from harness import distributed as dist
from harness.distributed import generation_lock, is_main, local_device, wait_for_shards
from harness.evaluate import class_probs, evaluate_split
from harness.filter import apply_filter, score_pool
from harness.hard_samples import select_hard
from harness.io import atomic_path, lock, write_json
from harness.models import build_model
from harness.registry import get_generator, get_method, get_scorer
from harness.seeding import seed_everything
from harness.spectrum import generate_spectrum, plan_spectrum, read_manifest
from harness.train import Part, Trainer, amp_dtype
from harness.workdir import cache_dir

log = logging.getLogger("harness")


def pick_device(cfg: Config) -> torch.device:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what fp32 work remains (outside autocast) runs in TF32
        torch.backends.cudnn.allow_tf32 = True
    return device


@dataclass
class Prepared:
    """Everything the methods share: data, base model, hard samples and the scored synthetic pool."""

    cfg: Config
    data: DatasetBundle
    device: torch.device
    base_state: dict
    hard: np.ndarray  # indices into the training split
    pool: pd.DataFrame  # manifest + scores + keep
    pool_dir: Path | None
    pool_images: LabeledImages | None  # row i of ``pool`` is image i
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> pd.DataFrame:
        return self.pool[self.pool.keep] if len(self.pool) else self.pool


# --------------------------------------------------------------------------- phase 1: base model

def train_base(cfg: Config, data: DatasetBundle, cache: Path, device: torch.device) -> tuple[dict, np.ndarray]:
    """A classifier trained on the real data only (or loaded from ``base.checkpoint``), and its training-set
    class probabilities (for the hard-sample rules)."""
    folder = cache / "base" / base_key(cfg)
    with lock(folder / "model"):
        if not (folder / "model.safetensors").exists():
            seed_everything(cfg.base.seed)  # before the model is built: its initial weights come from the seed
            model = build_model(cfg, data.num_classes, data.channels, data.class_names)
            if cfg.base.checkpoint:
                model.load_state_dict(load_checkpoint(cfg.base.checkpoint))
            else:
                train_base_epochs(cfg, data, model, folder / "checkpoint.pt", device)
            probs = class_probs(model.to(device), data.train, device, workers=data.num_workers,
                                transform=data.eval_transform, amp=amp_dtype(cfg.base.precision, device))
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / "train_probs.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, probs)
            with atomic_path(folder / "model.safetensors") as tmp:
                save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
            (folder / "checkpoint.pt").unlink(missing_ok=True)
    return load_file(str(folder / "model.safetensors")), np.load(folder / "train_probs.npy")


def train_base_epochs(cfg: Config, data: DatasetBundle, model, ckpt: Path, device: torch.device) -> None:
    """The base model's epochs over all real training images, checkpointed after every epoch, so a killed job
    (90 ImageNet-LT epochs are hours) resumes where it stopped."""
    from tqdm.auto import tqdm

    trainer = Trainer(model, cfg.base, cfg.base.epochs, log_prior(data), cfg.base.seed, device, data.num_workers,
                      transform=data.train_transform)
    start = 0
    if ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        trainer.load_state(saved["trainer"])
        start = saved["epoch"]
        log.info("base model: resuming at epoch %d of %d", start, cfg.base.epochs)
    all_real = [Part(data.train, np.arange(len(data.train)))]
    for epoch in tqdm(range(start, cfg.base.epochs), desc="train base model", unit="epoch", mininterval=2,
                      initial=start, total=cfg.base.epochs):
        trainer.train_epoch(all_real, epoch)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(ckpt) as tmp:
            torch.save({"trainer": trainer.state(), "epoch": epoch + 1}, tmp)


def load_checkpoint(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"base.checkpoint: no file {p}")
    if p.suffix == ".safetensors":
        return load_file(str(p))
    state = torch.load(p, map_location="cpu", weights_only=True)
    return state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state


def log_prior(data: DatasetBundle) -> torch.Tensor:
    counts = torch.as_tensor(data.train_counts, dtype=torch.float32).clamp_min(1)
    return (counts / counts.sum()).log()


# --------------------------------------------------------------------------- phases 2–4: hard → spectrum → filter

def needs_pool(cfg: Config, methods: list[str]) -> bool:
    """Synthetic methods train on the pool; the real-only control draws as many real images as they would."""
    return any(get_method(m).synthetic or get_method(m).real_stand_in for m in methods)


def prepare(cfg: Config, workdir: Path, methods: list[str] | None = None, progress: bool = True,
            rank: int = 0, world: int = 1) -> Prepared:
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
    with generation_lock(pool_dir, rank):
        if not (pool_dir / "complete.json").exists():
            gen_cls = get_generator(cfg.generator.name)
            generator = gen_cls.from_config(cfg, data, cache, local_device(device))
            generate_spectrum(generator, data, plan, pool_dir, cfg.spectrum.batch_size, rank, world, progress)
            if rank == 0:
                wait_for_shards(pool_dir, {p.key for p in plan})
                mark_complete(pool_dir, plan, generator.describe())
    timings["generate_s"] = time.perf_counter() - t
    if rank != 0:  # only rank 0 goes on to scoring, with the merged pool
        return Prepared(cfg, data, device, base_state, hard, empty, pool_dir, None, timings)
    manifest = read_manifest(pool_dir)
    t = time.perf_counter()
    with lock(pool_dir / f"scores-{scorer_key(cfg)}"):
        scorer = get_scorer(cfg.scorer.name).from_config(cfg, data, cache, device)
        scored = score_pool(scorer, data, manifest, pool_dir, f"scores-{scorer_key(cfg)}.jsonl",
                            progress=progress)
    timings["score_s"] = time.perf_counter() - t
    pool = apply_filter(scored, cfg.filter.threshold)
    return Prepared(cfg, data, device, base_state, hard, pool, pool_dir, load_pool_images(pool, pool_dir, cfg, data),
                    timings)


def mark_complete(pool_dir: Path, plan, generator_settings: dict) -> None:
    keys = set(read_manifest(pool_dir).key)
    missing = [p.key for p in plan if p.key not in keys]
    if missing:
        raise RuntimeError(f"spectrum incomplete: {len(missing)} images missing, e.g. {missing[0]}")
    write_json(pool_dir / "complete.json", {"images": len(plan), "generator": generator_settings})


def load_pool_images(pool: pd.DataFrame, pool_dir: Path, cfg: Config, data: DatasetBundle) -> LabeledImages:
    """In memory (squashed to S×S) when the real images are in memory too, no transform is configured and the pool
    is small; otherwise read from disk and transformed like the real training images."""
    size, channels = cfg.data.image_size, data.channels
    in_memory = isinstance(data.train, TensorImages) and data.train_transform is None
    ids = list(pool.key)
    if in_memory and len(pool) * channels * size * size * 4 < 512 * 2**20:
        from PIL import Image

        images = torch.stack([to_tensor01(Image.open(pool_dir / f), size, channels) for f in pool.file]) \
            if len(pool) else torch.zeros(0, channels, size, size)
        return TensorImages(images, pool.label.to_numpy(), ids)
    return FileImages([pool_dir / f for f in pool.file], pool.label.to_numpy(), ids, size, channels)


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


def epoch_parts(prep: Prepared, method: Curriculum, levels: tuple[float, ...], in_curriculum: bool,
                train_sources: np.ndarray, rng: np.random.Generator) -> list[Part]:
    """The images of one epoch: real non-hard (a fresh undersample during a re-balancing curriculum), real hard,
    and during the curriculum the stage's synthetic images: every kept one of its levels (S_λ) or
    ``synthetic_scale`` per hard source. The real-only control draws as many real hard images, with replacement,
    in their place. Held-out guidance-validation sources (not in ``train_sources``) never join."""
    cfg, train = prep.cfg, prep.data.train
    hard = np.unique(prep.hard)
    non_hard = np.setdiff1d(np.arange(len(train)), hard)
    if in_curriculum and method.rebalance and cfg.train.undersample < 1:
        non_hard = np.sort(rng.choice(non_hard, size=int(round(len(non_hard) * cfg.train.undersample)),
                                      replace=False))
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


def probe_sets(prep: Prepared, held: np.ndarray, levels: tuple[float, ...]) -> dict[float, LabeledImages]:
    """The guidance-validation images: per level, one kept synthetic image of each held-out source (its lowest
    kept seed), for the sources that have one at every level, so every level is measured on the same sources."""
    pool = prep.pool
    kept = pool[pool.keep & pool.source_index.isin(held)].rename_axis("row").reset_index()
    first = {lam: kept[(kept.lam - lam).abs() < 1e-6].sort_values("seed_index").drop_duplicates("source_index")
             .set_index("source_index") for lam in levels}
    common = sorted(set.intersection(*(set(f.index) for f in first.values()))) if first else []
    if not common:
        raise RuntimeError(f"discl_adaptive: none of the {len(held)} held-out hard sources has a synthetic image "
                           f"that passed the filter at every level {list(levels)}; raise "
                           "curriculum.adaptive.holdout or lower filter.threshold")
    return {lam: take(prep.pool_images, np.array(f.loc[common, "row"], dtype=np.int64)) for lam, f in first.items()}


def guidance_val_probe(prep: Prepared, trainer: Trainer, held: np.ndarray, probe_parts) -> callable:
    """The adaptive rule's measurement: true-class probability on each level's held-out synthetic images,
    before and after a short stretch of training; the per-image gains summarized per level."""
    acfg = prep.cfg.curriculum.adaptive

    def probe(levels: tuple[float, ...]) -> dict[float, float]:
        sets = probe_sets(prep, held, levels)
        before = {lam: true_class_prob(trainer.model, s, prep) for lam, s in sets.items()}
        trainer.train_epoch(probe_parts(), epoch=trainer.current_epoch, max_steps=acfg.probe_steps)
        after = {lam: true_class_prob(trainer.model, s, prep) for lam, s in sets.items()}
        return {lam: summarize_gain(after[lam] - before[lam], acfg.statistic, acfg.drop_outliers) for lam in levels}

    return probe


def take(images: LabeledImages, rows: np.ndarray) -> LabeledImages:
    if isinstance(images, TensorImages):
        return TensorImages(images.images[torch.as_tensor(rows, dtype=torch.long)], images.labels[rows],
                            [images.ids[i] for i in rows])
    return FileImages([images.paths[i] for i in rows], images.labels[rows], [images.ids[i] for i in rows],
                      images.size, images.channels)


def true_class_prob(model, images: LabeledImages, prep: Prepared) -> np.ndarray:
    if len(images) == 0:
        return np.zeros(0)
    probs = class_probs(model, images, prep.device, workers=prep.data.num_workers,
                        transform=prep.data.eval_transform, amp=amp_dtype(prep.cfg.train.precision, prep.device),
                        distributed=True)  # the adaptive probe runs on every rank in lockstep
    return probs[np.arange(len(images)), images.labels]


def fine_tune(prep: Prepared, method_name: str, seed: int, run=None, ckpt_dir: Path | None = None,
              progress: bool = True, on_epoch=None) -> RunResult:
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
    trainer = Trainer(model, cfg.train, cfg.train.epochs, log_prior(data), seed, device, data.num_workers,
                      distributed=True, transform=data.train_transform)  # one DDP rank under torchrun
    trainer.current_epoch = 0
    rng = np.random.default_rng(seed)
    levels = tuple(sorted(cfg.curriculum.adaptive_levels if method.adaptive and cfg.curriculum.adaptive_levels
                          else cfg.curriculum_levels))
    if not (method.synthetic or method.real_stand_in):
        levels = ()
    train_sources, held = split_guidance_val(prep, method, seed)
    n_stages = method.n_stages(levels, cfg.train.curriculum_epochs) if cfg.train.curriculum_epochs else 0
    ctx = StageContext(levels, n_stages, rng)
    if method.adaptive:
        ctx.probe = guidance_val_probe(
            prep, trainer, held, lambda: epoch_parts(prep, method, (), True, train_sources, rng))

    state = {"epoch": 0, "best": float("-inf"), "best_epoch": -1, "best_state": None, "history": [], "stages": [],
             "stage": None, "levels": ()}
    ckpt = ckpt_dir / "checkpoint.pt" if ckpt_dir else None
    if ckpt and ckpt.exists():
        state = resume(ckpt, trainer, rng, run)
        log.info("resuming %s seed %d at epoch %d", method_name, seed, state["epoch"])

    from tqdm.auto import tqdm

    bar = tqdm(range(state["epoch"], cfg.train.epochs), desc=f"{method_name} seed {seed}", unit="epoch",
               disable=not progress, mininterval=1)
    for epoch in bar:
        trainer.current_epoch = epoch
        stage = stage_of_epoch(epoch, cfg.train.curriculum_epochs, n_stages)
        if stage is not None and stage != state["stage"]:
            # every rank computes the choice (the adaptive probe trains in lockstep); rank 0's is the one taken
            state["levels"] = dist.share(tuple(method.stage_levels(stage, ctx))) if levels else ()
            state["stage"] = stage
            ctx.history.append(state["levels"])
            state["stages"].append({"stage": stage, "first_epoch": epoch, "levels": list(state["levels"]),
                                    **({"real_stand_in": True} if method.real_stand_in else {})})
        in_curriculum = stage is not None
        stage_levels = state["levels"] if in_curriculum else ()
        parts = epoch_parts(prep, method, stage_levels, in_curriculum, train_sources, rng)
        loss = trainer.train_epoch(parts, epoch)
        val_metrics, _ = evaluate_split(trainer.model, data, data.val_split, device, data.num_workers, trainer.amp,
                                        distributed=True)
        lam = float(np.mean(stage_levels)) if stage_levels and method.synthetic else 1.0
        n_syn = sum(len(p.indices) for p in parts if p.images is prep.pool_images)
        row = {"epoch": epoch, "train/loss": loss, "curriculum/lambda": lam, "curriculum/synthetic": n_syn,
               "curriculum/tail_share": tail_share(parts), "curriculum/images": sum(len(p.indices) for p in parts),
               "lr": trainer.opt.param_groups[0]["lr"], **{f"val/{k}": v for k, v in val_metrics.items()}}
        state["history"].append(row)
        score = row.get(cfg.train.select_on, float("nan"))
        if score > state["best"]:
            state["best"], state["best_epoch"] = float(score), epoch
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
        state["epoch"] = epoch + 1
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{score:.3f}", lam=lam)
        if ckpt and is_main():  # DDP ranks hold the same state; rank 0 writes it
            save_checkpoint(ckpt, trainer, rng, state)
        if run is not None:  # after the checkpoint: a resumed run re-logs only epochs MLflow lacks
            log_row(run, row)
        if on_epoch is not None:
            on_epoch(epoch, row)

    if state["best_state"] is not None:
        trainer.model.load_state_dict(state["best_state"])
    test_metrics, predictions = evaluate_final(trainer.model, data, device, trainer.amp)
    val_metrics = {k: v for k, v in state["history"][state["best_epoch"]].items() if k.startswith("val/")} \
        if state["best_epoch"] >= 0 else {}
    return RunResult(method_name, seed, run.id if run else None, test_metrics, val_metrics, state["best_epoch"],
                     state["stages"], predictions, state["history"])


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


def save_checkpoint(path: Path, trainer: Trainer, rng: np.random.Generator, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"trainer": trainer.state(), "rng": rng.bit_generator.state, "state": state}, tmp)


def resume(path: Path, trainer: Trainer, rng: np.random.Generator, run=None) -> dict:
    """Restore a run's training state from its last checkpoint; log to MLflow the epochs it does not have yet."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    trainer.load_state(saved["trainer"])
    rng.bit_generator.state = saved["rng"]
    state = saved["state"]
    state["levels"] = tuple(state["levels"])
    if run is not None:
        logged = {m.step for m in run.c.get_metric_history(run.id, "train/loss")}
        for row in state["history"]:
            if row["epoch"] not in logged:
                log_row(run, row)
    return state
