"""The training loop: an epoch is a list of (split, indices) parts, drawn fresh by the curriculum each epoch."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from harness import distributed as dist
from harness.config import OptimConfig
from harness.data.base import ImageView, LabeledImages, TensorImages
from harness.models import classification_loss
from harness.transforms import to_float01


@dataclass
class Part:
    """Some images of one split that join an epoch."""

    images: LabeledImages
    indices: np.ndarray


def make_optimizer(model: torch.nn.Module, opt: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.optimizer == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
    if opt.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    if opt.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=0.9, weight_decay=opt.weight_decay, nesterov=True)
    raise ValueError(f"optimizer must be adam, adamw or sgd, got {opt.optimizer!r}")


def lr_factor(step: int, progress: float, opt: OptimConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay over training progress in [0, 1]."""
    warm = min(1.0, (step + 1) / opt.warmup_steps) if opt.warmup_steps else 1.0
    decay = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) if opt.schedule == "cosine" else 1.0
    return warm * decay


def rank_shard(perm: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's share of an epoch's order, padded by wrapping around so every rank gets ceil(n / world)
    indices and runs the same number of steps (as ``DistributedSampler`` does)."""
    n = math.ceil(len(perm) / world) * world
    padded = torch.cat([perm, perm.repeat(math.ceil(n / max(1, len(perm))))])[:n] if len(perm) else perm
    return padded[rank::world]


def batches(parts: list[Part], batch_size: int, g: torch.Generator, device: torch.device, workers: int = 0,
            rank: int = 0, world: int = 1, transform=None):
    """Shuffled batches over the union of ``parts``, as float images in [0, 1] on ``device``. In-memory splits
    without a transform are gathered by indexing, no DataLoader; otherwise each image is decoded to uint8 and
    transformed in the loader, and converted to float on the device. With ``world`` > 1 every rank draws the same
    permutation from ``g`` (seeded alike) and takes its shard."""
    parts = [p for p in parts if len(p.indices)]
    if transform is None and all(isinstance(p.images, TensorImages) for p in parts):
        x = torch.cat([p.images.images[torch.as_tensor(p.indices)] for p in parts])
        y = torch.cat([torch.as_tensor(p.images.labels[p.indices]) for p in parts])
        perm = torch.randperm(len(y), generator=g)
        for idx in (perm if world == 1 else rank_shard(perm, rank, world)).split(batch_size):
            yield x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
        return
    union = ImageView([(p.images, p.indices) for p in parts], transform)
    if world > 1:
        union = Subset(union, rank_shard(torch.randperm(len(union), generator=g), rank, world).tolist())
    loader = DataLoader(union, batch_size=batch_size, shuffle=world == 1, generator=g, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    for x, y in loader:
        yield to_float01(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)


class Trainer:
    """Holds the model, optimizer and step count across the epochs of one run."""

    def __init__(self, model, opt_cfg: OptimConfig, total_epochs: int, log_prior: torch.Tensor, seed: int,
                 device: torch.device, workers: int = 0, distributed: bool = False, transform=None):
        """``distributed``: under torchrun, train as one DDP rank (each rank a shard of each epoch, gradients
        averaged). ``self.model`` stays the plain module, so evaluation and state dicts never see the wrapper."""
        self.model, self.cfg, self.total_epochs = model.to(device), opt_cfg, total_epochs
        self.opt = make_optimizer(model, opt_cfg)
        self.log_prior, self.device, self.workers, self.transform = log_prior, device, workers, transform
        self.g = torch.Generator().manual_seed(seed)
        self.step = 0
        self.rank, self.world = (dist.rank(), dist.world()) if distributed else (0, 1)
        self.net = self.model
        if self.world > 1 and not callable(getattr(model, "loss", None)):
            self.net = DistributedDataParallel(self.model, device_ids=[device.index or torch.cuda.current_device()]
                                               if device.type == "cuda" else None)

    def train_epoch(self, parts: list[Part], epoch: int, max_steps: int | None = None) -> float:
        """One pass over ``parts`` (or ``max_steps`` optimizer steps); returns the mean training loss."""
        self.model.train()
        n = math.ceil(sum(len(p.indices) for p in parts) / self.world)
        steps_per_epoch = max(1, math.ceil(n / self.cfg.batch_size))
        losses = []
        for i, (x, y) in enumerate(batches(parts, self.cfg.batch_size, self.g, self.device, self.workers,
                                           self.rank, self.world, self.transform)):
            if max_steps is not None and i >= max_steps:
                break
            progress = (epoch + i / steps_per_epoch) / self.total_epochs
            for group in self.opt.param_groups:
                group["lr"] = self.cfg.lr * lr_factor(self.step, progress, self.cfg)
            own_loss = getattr(self.model, "loss", None)  # a model may train with its own objective (FLYP)
            loss = own_loss(x, y) if callable(own_loss) else classification_loss(self.net(x), y, self.cfg.loss,
                                                                                 self.log_prior)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.world > 1 and self.net is self.model:
                self.average_gradients()  # a model's own loss bypasses DDP's forward, so it goes unwrapped
            self.opt.step()
            self.step += 1
            losses.append(loss.item())
        mean = float(np.mean(losses)) if losses else float("nan")
        if self.world > 1:  # the loss over every rank's shard, as one process would report it
            total = torch.tensor(mean, dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(total)
            mean = total.item() / self.world
        return mean

    def average_gradients(self) -> None:
        for p in self.model.parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                "g": self.g.get_state(), "torch_rng": torch.get_rng_state()}  # the global RNG drives dropout

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]
        self.g.set_state(state["g"])
        torch.set_rng_state(state["torch_rng"])
