"""The training loop: an epoch is a list of (split, indices) parts, drawn fresh by the curriculum each epoch."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from harness import distributed as dist
from harness import preempt
from harness.config import OptimConfig
from harness.data.base import DataError, ImageView, LabeledImages, TensorImages
from harness.models import classification_loss
from harness.transforms import to_float01


@dataclass
class Part:
    """Some images of one split that join an epoch."""

    images: LabeledImages
    indices: np.ndarray


def log_prior(data) -> torch.Tensor:
    """log of each class's share of the training images (balanced softmax adds it to the logits)."""
    counts = torch.as_tensor(data.train_counts, dtype=torch.float32).clamp_min(1)
    return (counts / counts.sum()).log()


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


def batches(
    parts: list[Part],
    batch_size: int,
    g: torch.Generator,
    device: torch.device,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
    transform=None,
    loader: EpochLoader | None = None,
):
    """Shuffled batches over the union of ``parts``, as float images in [0, 1] on ``device``. In-memory splits
    without a transform are gathered by indexing, no DataLoader; otherwise each image is decoded to uint8 and
    transformed in ``loader`` (a new one unless the caller keeps one across epochs), and converted to float on the
    device. With ``world`` > 1 every rank draws the same permutation from ``g`` (seeded alike) and takes its
    shard."""
    parts = [p for p in parts if len(p.indices)]
    if transform is None and all(isinstance(p.images, TensorImages) for p in parts):
        x = torch.cat([p.images.images[torch.as_tensor(p.indices)] for p in parts])
        y = torch.cat([torch.as_tensor(p.images.labels[p.indices]) for p in parts])
        perm = torch.randperm(len(y), generator=g)
        for idx in (perm if world == 1 else rank_shard(perm, rank, world)).split(batch_size):
            yield x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
        return
    loader = loader or EpochLoader(batch_size, workers, device, transform)
    for x, y in loader.epoch(parts, g, rank, world):
        yield to_float01(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)


class EpochOrder(Sampler):
    """The current epoch's (union index, seed) pairs; set before each epoch."""

    def __init__(self):
        self.items: list[tuple[int, int]] = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class EpochLoader:
    """One DataLoader over every split an epoch may draw from, kept for the whole run, so its workers start once
    (persistent workers, pinned memory); each epoch only sets the order. Each sample carries a seed drawn from the
    run's generator for its random transforms, so the images do not depend on the worker count, and a resumed
    run sees the same images as an uninterrupted one."""

    def __init__(self, batch_size: int, workers: int, device: torch.device, transform):
        self.batch_size, self.workers, self.device, self.transform = batch_size, workers, device, transform
        self.splits: list[LabeledImages] = []
        self.order = EpochOrder()
        self.loader: DataLoader | None = None

    def offsets(self) -> dict[int, int]:
        starts = np.cumsum([0] + [len(s) for s in self.splits])
        return {id(s): int(o) for s, o in zip(self.splits, starts)}

    def epoch(self, parts: list[Part], g: torch.Generator, rank: int = 0, world: int = 1):
        new = [p.images for p in parts if all(p.images is not s for s in self.splits)]
        if new or self.loader is None:
            self.splits += list({id(s): s for s in new}.values())
            view = ImageView([(s, np.arange(len(s))) for s in self.splits], self.transform)
            self.loader = DataLoader(
                view,
                batch_size=self.batch_size,
                sampler=self.order,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
            )
        start = self.offsets()
        flat = torch.cat([torch.as_tensor(p.indices, dtype=torch.long) + start[id(p.images)] for p in parts])
        perm = torch.randperm(len(flat), generator=g)
        order = flat[perm if world == 1 else rank_shard(perm, rank, world)]
        seeds = torch.randint(2**62, (len(order),), generator=g)
        self.order.items = list(zip(order.tolist(), seeds.tolist()))
        with clear_shm_errors():
            yield from self.loader


SHM_SIGNS = ("shared memory", "bus error", "no space left on device", "shm")


@contextlib.contextmanager
def clear_shm_errors():
    """DataLoader workers hand batches over through /dev/shm; when it is too small (a container's default is
    64 MB) PyTorch dies with a bus error or "No space left on device". Say what it means and what to do."""
    try:
        yield
    except RuntimeError as e:
        if not any(sign in str(e).lower() for sign in SHM_SIGNS):
            raise
        free = shutil.disk_usage("/dev/shm").total // 2**20 if os.path.isdir("/dev/shm") else 0
        raise DataError(
            f"DataLoader workers ran out of shared memory (/dev/shm holds {free} MB; they need about "
            "2 × workers × one batch of uint8 images, ~300 MB for 8 workers at batch 128 and 224 px): "
            "give the container more (docker run --shm-size=8g) or set data.params.num_workers: 0 "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` (``auto``: bf16 on CUDA, fp32 elsewhere); None means fp32."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


class Trainer:
    """Holds the model, optimizer and step count across the epochs of one run."""

    def __init__(
        self,
        model,
        opt_cfg: OptimConfig,
        total_epochs: int,
        log_prior: torch.Tensor,
        seed: int,
        device: torch.device,
        workers: int = 0,
        distributed: bool = False,
        transform=None,
    ):
        """``distributed``: under torchrun, train as one DDP rank (each rank a shard of each epoch, gradients
        averaged). ``self.model`` stays the plain module, so evaluation and state dicts never see the wrapper."""
        self.model, self.cfg, self.total_epochs = model.to(device), opt_cfg, total_epochs
        self.channels_last = device.type == "cuda" and getattr(model, "channels_last", False)  # conv nets on GPUs
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp = amp_dtype(opt_cfg.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)  # fp16 needs loss scaling
        self.opt = make_optimizer(model, opt_cfg)
        self.log_prior, self.device, self.workers, self.transform = log_prior, device, workers, transform
        self.loader = EpochLoader(opt_cfg.batch_size, workers, device, transform)  # its workers live across epochs
        self.g = torch.Generator().manual_seed(seed)
        self.step = 0
        self.rank, self.world = (dist.rank(), dist.world()) if distributed else (0, 1)
        self.net = self.model
        if self.world > 1 and not callable(getattr(model, "loss", None)):
            self.net = DistributedDataParallel(
                self.model, device_ids=[device.index or torch.cuda.current_device()] if device.type == "cuda" else None
            )

    def train_epoch(self, parts: list[Part], epoch: int, max_steps: int | None = None) -> float:
        """One pass over ``parts`` (or ``max_steps`` optimizer steps); returns the mean training loss."""
        self.model.train()
        n = math.ceil(sum(len(p.indices) for p in parts) / self.world)
        steps_per_epoch = max(1, math.ceil(n / self.cfg.batch_size))
        losses = []
        for i, (x, y) in enumerate(
            batches(
                parts,
                self.cfg.batch_size,
                self.g,
                self.device,
                self.workers,
                self.rank,
                self.world,
                self.transform,
                self.loader,
            )
        ):
            if max_steps is not None and i >= max_steps:
                break
            preempt.check()  # a stop signal: leave at this step boundary (the run resumes from its last epoch)
            progress = (epoch + i / steps_per_epoch) / self.total_epochs
            for group in self.opt.param_groups:
                group["lr"] = self.cfg.lr * lr_factor(self.step, progress, self.cfg)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            own_loss = getattr(self.model, "loss", None)  # a model may train with its own objective (FLYP)
            with autocast(self.device, self.amp):
                loss = (
                    own_loss(x, y)
                    if callable(own_loss)
                    else classification_loss(self.net(x).float(), y, self.cfg.loss, self.log_prior)
                )
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.world > 1 and self.net is self.model:
                self.average_gradients()  # a model's own loss bypasses DDP's forward, so it goes unwrapped
            self.scaler.step(self.opt)
            self.scaler.update()
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
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "g": self.g.get_state(),
            "torch_rng": torch.get_rng_state(),  # the global RNG drives dropout
            "scaler": self.scaler.state_dict(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]
        self.g.set_state(state["g"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
