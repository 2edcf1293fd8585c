"""The parts of the authors' ImageNet-LT base-training recipe that the fine-tuning recipes do not use
(curriculum_training/ImageNet/config/ImageNet/ImageNet_LSC_Mixup.txt, read by model/model_init.py): a learning rate
stepped once per epoch, a linear warm-up then ×gamma at each milestone (``base.schedule: step``), and mixup
(``base.mixup_alpha``). ``Trainer`` builds them from its settings; a section without these settings (``train``)
never gets them."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LinearLR, MultiStepLR, SequentialLR


class StepSchedule:
    """Per epoch ``e``: ``lr · (e + 1) / warmup_epochs`` during the warm-up (``LinearLR``), then ``lr · gamma^k``
    after the k-th milestone (``MultiStepLR``), composed by ``SequentialLR`` and stepped at each epoch's end: the
    authors' ``warmup_step`` (model/model_init.py:80-95; milestones count epochs from the start of training)."""

    def __init__(self, opt: torch.optim.Optimizer, milestones: list[int], gamma: float, warmup_epochs: int):
        w = warmup_epochs
        if w > 1:
            warm = LinearLR(opt, start_factor=1 / w, end_factor=1.0, total_iters=w - 1)
            steps = MultiStepLR(opt, milestones=[m - w for m in milestones], gamma=gamma)
            self.scheduler = SequentialLR(opt, [warm, steps], milestones=[w])
        else:  # a one-epoch warm-up starts at the full rate: nothing to warm
            self.scheduler = MultiStepLR(opt, milestones=list(milestones), gamma=gamma)

    def after_step(self, epoch: float) -> None:
        """Called after each optimizer step with the progress (in epochs) of the next step: the rate changes when
        an epoch is complete."""
        while self.scheduler.last_epoch < math.floor(epoch + 1e-6):
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {"step": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["step"])


def make_mixup(alpha: float, num_classes: int | None) -> Callable[[torch.Tensor, torch.Tensor], tuple] | None:
    """Mixup (Zhang et al. 2018) with a mixing weight from Beta(α, α) per batch, each image mixed with its
    neighbour in the shuffled batch; targets become the mixed one-hot labels, which cross-entropy takes as class
    probabilities. None when α is 0 (off). Draws from the global RNG, which checkpoints save."""
    if alpha <= 0:
        return None
    if num_classes is None:
        raise ValueError("base.mixup_alpha > 0 needs the class count (the trainer's log_prior), which was not given")
    from torchvision.transforms import v2

    return v2.MixUp(alpha=alpha, num_classes=num_classes)
