"""Phase 5: curriculum fine-tuning, in the paper's order: the curriculum's stages choose the λ levels of synthetic
data, each epoch trains on what its stage draws, validation selects the epoch to keep, test measures it.

Its parts, each named for what it does:

- ``Stages``: each epoch's stage; a stage's start asks the method for its levels (the adaptive probe runs then) and
  records them; each epoch's parts (``epoch_parts``). No model: ``harness plan`` replays this very object.
- ``BestEpoch``: model selection on validation; keeps the weights of the best ``train.select_on`` epoch.
- ``Checkpointer``: saves a run after every epoch and resumes it, re-logging to MLflow the epochs it lacks.
- ``fine_tune``: the loop that composes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.config import ConfigError
from harness.config.fields import per_method
from harness.core import distributed as dist
from harness.core.io import atomic_path, load_torch
from harness.core.registry import get_method
from harness.data.base import DataError
from harness.engine.evaluate import evaluate_final, evaluate_split
from harness.engine.schedule import EpochLength
from harness.engine.seeding import seed_everything
from harness.engine.train import Part, Trainer, log_prior
from harness.models.base import build_model
from harness.phases.curriculum import (
    Curriculum,
    StageContext,
    check_stage_epochs,
    drawn_counts,
    epoch_length,
    epoch_parts,
    guidance_val_probe,
    natural_pass_of,
    split_guidance_val,
    stage_of_epoch,
    tail_share,
)
from harness.phases.post_hoc import post_hoc_metrics, zero_shot_state
from harness.phases.prepared import Prepared

log = logging.getLogger("harness")


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
    post_hoc: dict[str, float] = field(default_factory=dict)  # wise/…, taunorm/… (harness/phases/post_hoc.py)


def make_method(cfg, name: str) -> Curriculum:
    """The registered method ``name`` with its ``method_params``."""
    return get_method(name)(**cfg.method_params.get(name, {}))


# --------------------------------------------------------------------------- the curriculum's stages


@dataclass
class Epoch:
    """What one epoch trains on: its stage (None after the curriculum), the stage's λ levels (() after it or in a
    real-only stage), its parts, its steps and whether it starts a new stream of batches (``fresh``)."""

    epoch: int
    stage: int | None
    levels: tuple[float, ...]
    parts: list[Part]
    steps: int = 0
    fresh: bool = True

    @property
    def in_curriculum(self) -> bool:
        return self.stage is not None


@dataclass
class Stages:
    """The curriculum's schedule over one run's epochs: the first ``train.curriculum_epochs`` split into the method's
    stages (``stage_of_epoch``); on a stage's first epoch the method chooses its λ levels (rank 0's under DDP); every
    epoch draws from a stream seeded by the run seed. ``decide: stage_exhausted``: an adaptive stage lasts until its
    data runs out (the trainer's stream calls ``refill``). Works on ``Prepared`` or ``plan.epochs.PlanPrep``."""

    prep: Prepared
    method: Curriculum
    curriculum_epochs: int
    ctx: StageContext
    rng: np.random.Generator  # the run's stream: random levels and every epoch's draws
    train_sources: np.ndarray  # hard sources that train
    held: np.ndarray  # hard sources held out (the adaptive rule's guidance-validation set)
    length: EpochLength = field(default_factory=EpochLength)  # the steps of each epoch
    stage: int | None = None  # the current stage
    levels: tuple[float, ...] = ()  # the current stage's λ levels (what it trains on)
    parts: list[Part] = field(default_factory=list)  # the current stage's draw (stage_exhausted)
    record: list[dict] = field(default_factory=list)  # one row per stage begun: stage, first_epoch, levels
    probe_memory: dict = field(default_factory=dict)  # adaptive: the guidance-validation set's last evaluation
    current: int = -1  # the epoch under way

    @classmethod
    def start(cls, prep: Prepared, method: Curriculum, seed: int, rows_per_image: int = 1, world: int = 1) -> Stages:
        cfg = prep.cfg
        rng = np.random.default_rng(seed)
        levels = cfg.method_levels(method)
        train_sources, held = split_guidance_val(prep, method, seed)
        curriculum_epochs = cfg.train.curriculum_epochs
        n_stages = method.n_stages(levels, curriculum_epochs) if curriculum_epochs else 0
        check_stage_epochs(cfg.curriculum, curriculum_epochs)
        length = epoch_length(prep, method, len(held), rows_per_image, world)
        if method.adaptive and cfg.curriculum.adaptive.decide == "stage_exhausted" and not length.continues:
            raise ConfigError(
                "curriculum.adaptive.decide: stage_exhausted needs batches that run on across epochs: set "
                "train.epoch_length to real_rows or real_images"
            )
        ctx = StageContext(levels, n_stages, rng)
        return cls(prep, method, curriculum_epochs, ctx, rng, train_sources, held, length)

    @property
    def exhausts(self) -> bool:
        """Whether a stage lasts until its data runs out (an adaptive method, ``decide: stage_exhausted``)."""
        return self.method.adaptive and self.prep.cfg.curriculum.adaptive.decide == "stage_exhausted"

    def stage_of(self, epoch: int) -> int | None:
        c = self.prep.cfg.curriculum
        return stage_of_epoch(epoch, self.curriculum_epochs, self.ctx.n_stages, c.stage_epochs, c.real_stage)

    def epoch(self, epoch: int) -> Epoch:
        """Epoch ``epoch``'s stage, levels and images; call it for consecutive epochs (it draws from the run's
        stream, and asks the method for a stage's levels on the stage's first epoch)."""
        previous, first = self.stage, self.current < 0
        self.current = epoch
        stage = self.stage_of(epoch)
        if stage is not None and self.exhausts:  # the stage runs on until the trainer's stream runs out
            if self.stage is None:
                self.begin(0, epoch)
            stage, parts = self.stage, self.parts or self.draw(True)
            first = first or previous is None
        else:
            if stage is not None and stage != self.stage:
                self.begin(stage, epoch)
            self.stage = stage
            parts = self.draw(stage is not None)
        steps = self.length.steps(sum(len(p.indices) for p in parts) * self.length.rows_per_image, stage is not None)
        fresh = first or (self.length.restarts(stage, previous, first) and not (self.exhausts and stage is not None))
        return Epoch(epoch, stage, self.levels if stage is not None else (), parts, steps, fresh)

    def draw(self, in_curriculum: bool) -> list[Part]:
        levels = self.levels if in_curriculum else ()
        self.parts = epoch_parts(self.prep, self.method, levels, in_curriculum, self.train_sources, self.rng)
        return self.parts

    def refill(self) -> list[Part]:
        """The next stage, begun when the current stage's data runs out (``decide: stage_exhausted``)."""
        self.begin(self.stage + 1, self.current)
        return self.draw(True)

    def begin(self, stage: int, epoch: int) -> None:
        real = stage >= self.ctx.n_stages  # curriculum.real_stage: the stage after the method's own
        # every rank computes the choice (the adaptive probe evaluates in lockstep); rank 0's is the one taken
        ask = self.ctx.levels and not real
        chosen = dist.share(tuple(self.method.stage_levels(stage, self.ctx))) if ask else ()
        all_levels = self.method.adaptive and self.prep.cfg.curriculum.adaptive.train_on == "all_levels"
        self.stage, self.levels = stage, (self.ctx.levels if all_levels else chosen)
        self.ctx.history.append(chosen)
        self.record.append(
            {
                "stage": stage,
                "first_epoch": epoch,
                "levels": list(self.levels),
                **({"chosen": list(chosen)} if all_levels else {}),
                **({"real_stage": True} if real else {}),
                **({"real_stand_in": True} if self.method.real_stand_in else {}),
            }
        )

    def state(self) -> dict:
        """What a checkpoint holds of the schedule (the stream's state is saved beside it)."""
        return {"stages": self.record, "stage": self.stage, "levels": self.levels, "probe_last": self.probe_memory}

    def load_state(self, state: dict) -> None:
        self.record, self.stage, self.levels = list(state["stages"]), state["stage"], tuple(state["levels"])
        self.ctx.history[:] = [tuple(s.get("chosen", s["levels"])) for s in self.record]
        self.probe_memory.clear()  # in place: an attached probe keeps this dict
        self.probe_memory.update(state["probe_last"])


# --------------------------------------------------------------------------- model selection


@dataclass
class BestEpoch:
    """Model selection on validation: the weights of the epoch with the highest ``metric`` (``train.select_on``)
    so far; an epoch whose metric is missing or NaN is never selected."""

    metric: str
    score: float = float("-inf")
    epoch: int = -1
    weights: dict | None = None

    def offer(self, epoch: int, row: dict, model: torch.nn.Module) -> float:
        score = row.get(self.metric, float("nan"))
        if score > self.score:
            self.score, self.epoch = float(score), epoch
            self.weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return score

    def restore(self, model: torch.nn.Module) -> None:
        if self.weights is not None:
            model.load_state_dict(self.weights)

    def state(self) -> dict:
        return {"best": self.score, "best_epoch": self.epoch, "best_state": self.weights}

    def load_state(self, state: dict) -> None:
        self.score, self.epoch, self.weights = state["best"], state["best_epoch"], state["best_state"]


# --------------------------------------------------------------------------- checkpoints

# the run state a checkpoint holds besides the trainer and the stream (a flat dict, as every harness wrote it)
CHECKPOINT_STATE = {"epoch", "best", "best_epoch", "best_state", "history", "stages", "stage", "levels", "probe_last"}


class Checkpointer:
    """``ckpt_dir/checkpoint.pt`` after every epoch (rank 0 writes it; DDP ranks hold the same state), and the
    resume from it. ``None``: no checkpoints. Plain types only, so loading needs no pickle (``weights_only``)."""

    def __init__(self, ckpt_dir: Path | None, run=None):
        self.path = ckpt_dir / "checkpoint.pt" if ckpt_dir else None
        self.run = run

    def save(self, epochs_done: int, trainer: Trainer, stages: Stages, best: BestEpoch, history: list[dict]) -> None:
        if self.path is None or not dist.is_main():
            return
        state = {"epoch": epochs_done, "history": history, **best.state(), **stages.state()}
        save_checkpoint(self.path, trainer, stages.rng, state)

    def resume(self, trainer: Trainer, stages: Stages, best: BestEpoch) -> tuple[int, list[dict]]:
        """Restore the last checkpoint, if any, into the trainer, the schedule and the selection; log to MLflow
        the epochs it does not have yet. Returns (epochs done, their metrics rows)."""
        if self.path is None or not self.path.exists():
            return 0, []
        saved = load_torch(self.path, "delete it to retrain this run from its first epoch")
        state = saved.get("state", {})
        if set(state) != CHECKPOINT_STATE:
            raise DataError(
                f"{self.path}: run state with keys {sorted(state)}, expected {sorted(CHECKPOINT_STATE)} (written by "
                "another harness version): delete the checkpoint.pt to retrain from the start"
            )
        trainer.load_state(saved["trainer"])
        stages.rng.bit_generator.state = saved["rng"]
        stages.load_state(state)
        best.load_state(state)
        history = list(state["history"])
        if self.run is not None:
            logged = {m.step for m in self.run.c.get_metric_history(self.run.id, "train/loss")}
            for row in history:
                if row["epoch"] not in logged:
                    log_row(self.run, row)
        return state["epoch"], history


def save_checkpoint(path: Path, trainer: Trainer, rng: np.random.Generator, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # plain types only, so loading needs no pickle (weights_only)
        torch.save({"trainer": trainer.state(), "rng": rng.bit_generator.state, "state": state}, tmp)


def log_row(run, row: dict) -> None:
    run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])


# --------------------------------------------------------------------------- the loop


def make_trainer(prep: Prepared, seed: int, method_name: str = "") -> Trainer:
    """The model to fine-tune, from the base model or the pretrained weights (``train.init``), in its trainer
    (one DDP rank under torchrun)."""
    cfg, data = prep.cfg, prep.data
    model = build_model(cfg, data.num_classes, data.channels, data.class_names)
    if cfg.train.init == "base":
        model.load_state_dict(prep.base_state)
    return Trainer(
        model,
        cfg.train,
        per_method(cfg.train.schedule_epochs, method_name, None) or cfg.train.epochs,  # the epochs the cosine spans
        log_prior(data),
        seed,
        prep.device,
        data.num_workers,
        distributed=True,
        transform=data.train_transform,
    )


def train_epoch(trainer: Trainer, stages: Stages, ep: Epoch) -> float:
    """One epoch: a pass over its parts, or its steps from the run's stream of batches (``train.epoch_length``)."""
    if not stages.length.continues:
        return trainer.train_epoch(ep.parts, ep.epoch)
    refill = stages.refill if stages.exhausts and ep.in_curriculum else None
    return trainer.train_epoch(ep.parts, ep.epoch, steps=ep.steps, fresh=ep.fresh, refill=refill)


def epoch_row(prep: Prepared, method: Curriculum, trainer: Trainer, ep: Epoch, loss: float) -> dict:
    """An epoch's metrics row: what it trained on, its loss and learning rate, and validation."""
    data = prep.data
    val_metrics, _ = evaluate_split(
        trainer.model, data, data.val_split, prep.device, data.num_workers, trainer.amp, distributed=True
    )
    return {
        "epoch": ep.epoch,
        "train/loss": loss,
        "curriculum/lambda": float(np.mean(ep.levels)) if ep.levels and method.synthetic else 1.0,
        **drawn_counts(prep, ep.parts),  # curriculum/synthetic (and curriculum/retrieved)
        "curriculum/tail_share": tail_share(ep.parts),
        "curriculum/images": sum(len(p.indices) for p in ep.parts),
        "lr": trainer.opt.param_groups[0]["lr"],
        **{f"val/{k}": v for k, v in val_metrics.items()},
    }


def fine_tune(
    prep: Prepared,
    method_name: str,
    seed: int,
    run=None,
    ckpt_dir: Path | None = None,
    progress: bool = True,
    on_epoch=None,
    post_hoc: bool = True,
) -> RunResult:
    """Fine-tune with one method's curriculum, from the base model or the pretrained weights (``train.init``);
    select on validation; evaluate on test.

    ``on_epoch(epoch, row)``, when given, sees each epoch's metrics row; it may raise to stop the run (a sweep
    raises ``optuna.TrialPruned``). ``post_hoc``: measure ``train.post_hoc``'s variants on the selected model."""
    cfg = prep.cfg
    method = make_method(cfg, method_name)
    seed_everything(seed)
    trainer = make_trainer(prep, seed, method_name)
    zero_shot = zero_shot_state(cfg, trainer.model) if post_hoc else None  # before a checkpoint's weights load
    stages = Stages.start(prep, method, seed, trainer.model.templates_per_image, trainer.world)
    best = BestEpoch(cfg.train.select_on)
    checkpoints = Checkpointer(ckpt_dir, run)
    start, history = checkpoints.resume(trainer, stages, best)
    if start:
        log.info("resuming %s seed %d at epoch %d", method_name, seed, start)
        if stages.length.continues:  # the pass under way is not in the checkpoint
            log.warning("train.epoch_length runs one pass across epochs: the resumed run starts a fresh pass")
    natural_pass = natural_pass_of(prep, trainer.train_pass, stages.train_sources, lambda: len(stages.record), seed)
    if method.adaptive:  # its last evaluation lives in the checkpoint
        stages.ctx.probe = guidance_val_probe(prep, trainer.model, stages.held, stages.probe_memory, natural_pass)

    bar = epoch_bar(range(start, cfg.train.epochs), f"{method_name} seed {seed}", progress)
    for epoch in bar:
        ep = stages.epoch(epoch)
        loss = train_epoch(trainer, stages, ep)
        row = epoch_row(prep, method, trainer, ep, loss)
        history.append(row)
        score = best.offer(epoch, row, trainer.model)
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{score:.3f}", lam=row["curriculum/lambda"])
        checkpoints.save(epoch + 1, trainer, stages, best, history)
        if run is not None:  # after the checkpoint: a resumed run re-logs only epochs MLflow lacks
            log_row(run, row)
        if on_epoch is not None:
            on_epoch(epoch, row)

    best.restore(trainer.model)
    test_metrics, predictions = evaluate_final(trainer.model, prep.data, prep.device, trainer.amp)
    extra = post_hoc_metrics(cfg, trainer.model, prep.data, prep.device, trainer.amp, zero_shot) if post_hoc else {}
    val_metrics = {k: v for k, v in history[best.epoch].items() if k.startswith("val/")} if best.epoch >= 0 else {}
    run_id = run.id if run else None
    return RunResult(
        method_name, seed, run_id, test_metrics, val_metrics, best.epoch, stages.record, predictions, history, extra
    )


def epoch_bar(epochs: range, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(epochs, desc=desc, unit="epoch", disable=not progress, mininterval=1)
