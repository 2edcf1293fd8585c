"""How many optimizer steps an epoch takes (``train.epoch_length``) and the learning rate over them.

Three ways to cut training into epochs, the authors' loops among them:

- ``pass``: one pass over the epoch's own rows, the last partial batch trained (each epoch starts a fresh pass).
- ``real_images``: ceil(natural training images / batch) steps, whatever the rows (FLYP's ``len(train_loader)``
  while its batches come from a CSV of one row per image and template); the stream of batches continues across
  epochs, a new pass starting when one runs out.
- ``real_rows``: during the curriculum, floor(natural training rows, hold-out removed / batch) steps whatever the
  stage holds, the stage's stream cycling (DisCL's iWildCam ``training.py``: ``int(len_ori / batch_size)``); a new
  stage starts a new stream; after the curriculum, a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.config import OptimConfig


def steps_per_epoch(rows: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps of an epoch of ``rows``: each of ``world`` ranks takes ceil(rows / world) at ``batch_size``,
    the last partial batch included."""
    return max(1, math.ceil(math.ceil(rows / world) / batch_size))


@dataclass(frozen=True)
class EpochLength:
    """One run's ``train.epoch_length`` with the counts it needs. ``natural_images``: the real training images;
    ``natural_rows``: the real training rows (images × rows per image) less the hold-out's. ``every_epoch``: every
    epoch at DisCL's length whatever its own rows (``plain_matched``): the curriculum's count during the
    curriculum, a pass over the natural rows less the hold-out after it."""

    mode: str = "pass"
    batch_size: int = 1
    world: int = 1
    natural_images: int = 0
    natural_rows: int = 0
    every_epoch: bool = False
    rows_per_image: int = 1  # training rows per image (FLYP: one per template)

    def steps(self, rows: int, in_curriculum: bool) -> int:
        """The optimizer steps of an epoch of ``rows`` rows (in the curriculum or after it)."""
        if self.mode == "real_images":
            return steps_per_epoch(self.natural_images, self.batch_size, self.world)
        if self.mode == "real_rows" and in_curriculum:
            return max(1, self.natural_rows // (self.batch_size * self.world))
        if self.every_epoch:  # after the curriculum, a pass over the natural rows: DisCL's "all real data"
            return steps_per_epoch(self.natural_rows, self.batch_size, self.world)
        return steps_per_epoch(rows, self.batch_size, self.world)

    @property
    def continues(self) -> bool:
        """Whether the stream of batches runs on across epochs (else every epoch is its own pass)."""
        return self.mode != "pass"

    def restarts(self, stage: int | None, previous: int | None, first: bool) -> bool:
        """Whether an epoch of ``stage`` starts a new stream: always for ``pass``, the run's first epoch, and under
        ``real_rows`` a new stage (the curriculum's end included: the authors' loader is rebuilt then)."""
        if not self.continues or first:
            return True
        return self.mode == "real_rows" and not self.every_epoch and stage != previous


# The cosine runs over training progress in epochs (epoch sizes change with the curriculum, so the run's number of
# steps is not known up front): its scheduler counts progress in ticks of 1/TICKS_PER_EPOCH epoch.
TICKS_PER_EPOCH = 1000


class LRSchedule:
    """The learning rate of step ``k`` at training progress ``p`` in [0, 1]: ``lr · min(1, (k + 1) / warmup_steps) ·
    (1 + cos(π p)) / 2`` (the cosine factor is 1 for ``schedule: constant``), that is a linear warm-up from
    ``lr / warmup_steps`` to ``lr`` over the first ``warmup_steps`` steps times a cosine from ``lr`` to 0 over the
    schedule's epochs (``train.schedule_epochs``, by default the run's). Both factors are
    ``torch.optim.lr_scheduler`` schedulers on the same optimizer (each scales the learning rate by its own ratio, as
    ``ChainedScheduler`` composes them): ``LinearLR`` steps once per optimizer step, ``CosineAnnealingLR`` once per
    tick of progress (1/``TICKS_PER_EPOCH`` of an epoch)."""

    def __init__(self, opt: torch.optim.Optimizer, cfg: OptimConfig, total_epochs: int):
        from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR

        w = cfg.warmup_steps
        self.warmup = LinearLR(opt, start_factor=1 / w, end_factor=1.0, total_iters=w - 1) if w > 1 else None
        self.cosine = (
            CosineAnnealingLR(opt, T_max=total_epochs * TICKS_PER_EPOCH, eta_min=0.0)
            if cfg.schedule == "cosine"
            else None
        )

    def after_step(self, epoch: float) -> None:
        """Called after each optimizer step with the progress (in epochs) of the next step."""
        if self.warmup is not None:
            self.warmup.step()
        if self.cosine is not None:
            target = min(int(math.floor(epoch * TICKS_PER_EPOCH + 1e-6)), self.cosine.T_max)
            while self.cosine.last_epoch < target:
                self.cosine.step()

    def state_dict(self) -> dict:
        return {k: s.state_dict() for k, s in (("warmup", self.warmup), ("cosine", self.cosine)) if s is not None}

    def load_state_dict(self, state: dict) -> None:
        for k, s in (("warmup", self.warmup), ("cosine", self.cosine)):
            if s is not None:
                s.load_state_dict(state[k])
