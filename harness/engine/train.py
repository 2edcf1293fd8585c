"""The training loop: an epoch is a list of (split, indices) parts, drawn fresh by the curriculum each epoch."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from harness.config import OptimConfig
from harness.config.transforms import to_float01
from harness.core import distributed as dist
from harness.data.base import DataError, ImageView, LabeledImages, TensorImages
from harness.engine import preempt
from harness.engine.base_recipe import StepSchedule, make_mixup
from harness.engine.schedule import TICKS_PER_EPOCH, LRSchedule, steps_per_epoch  # noqa: F401 (re-exported)
from harness.models.base import HarnessModel, classification_loss


@dataclass
class Part:
    """Some images of one split that join an epoch."""

    images: LabeledImages
    indices: np.ndarray
    templates: np.ndarray | None = None  # per index: the text template it trains with (FLYP); None: template 0


def per_template(parts: list[Part], n_templates: int) -> list[Part]:
    """An epoch of a model that trains on (image, template) pairs (FLYP) holds every image once per template, as
    FLYP's and the authors' training CSV does (one row per image and template): each part repeated
    ``n_templates`` times, each copy carrying its template index."""
    if n_templates <= 1:
        return parts
    return [
        Part(p.images, np.tile(p.indices, n_templates), np.repeat(np.arange(n_templates), len(p.indices)))
        for p in parts
    ]


def template_index(part: Part) -> torch.Tensor:
    t = part.templates if part.templates is not None else np.zeros(len(part.indices), dtype=np.int64)
    return torch.as_tensor(t, dtype=torch.long)


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
    if opt.optimizer == "sgd":  # momentum and Nesterov are settings of ``base`` only; ``train`` keeps 0.9, Nesterov
        momentum, nesterov = getattr(opt, "momentum", 0.9), getattr(opt, "nesterov", True)
        return torch.optim.SGD(params, lr=opt.lr, momentum=momentum, weight_decay=opt.weight_decay, nesterov=nesterov)
    raise ValueError(f"optimizer must be adam, adamw or sgd, got {opt.optimizer!r}")


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
    with_templates: bool = False,
):
    """Shuffled batches over the union of ``parts``, as float images in [0, 1] on ``device``. In-memory splits
    without a transform are gathered by indexing, no DataLoader; otherwise each image is decoded to uint8 and
    transformed in ``loader`` (a new one unless the caller keeps one across epochs), and converted to float on the
    device. With ``world`` > 1 every rank draws the same permutation from ``g`` (seeded alike) and takes its
    shard. ``with_templates``: yield (x, y, t), t each sample's template index (``Part.templates``)."""
    parts = [p for p in parts if len(p.indices)]
    if transform is None and all(isinstance(p.images, TensorImages) for p in parts):
        x = torch.cat([p.images.images[torch.as_tensor(p.indices)] for p in parts])
        y = torch.cat([torch.as_tensor(p.images.labels[p.indices]) for p in parts])
        t = torch.cat([template_index(p) for p in parts])
        perm = torch.randperm(len(y), generator=g)
        for idx in (perm if world == 1 else rank_shard(perm, rank, world)).split(batch_size):
            batch = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
            yield (*batch, t[idx].to(device)) if with_templates else batch
        return
    loader = loader or EpochLoader(batch_size, workers, device, transform)
    for x, y, t in loader.epoch(parts, g, rank, world):
        batch = to_float01(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
        yield (*batch, t.to(device)) if with_templates else batch


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
        mine = perm if world == 1 else rank_shard(perm, rank, world)
        order, templates = flat[mine], torch.cat([template_index(p) for p in parts])[mine]
        seeds = torch.randint(2**62, (len(order),), generator=g)
        self.order.items = list(zip(order.tolist(), seeds.tolist()))
        done = 0  # the loader returns the batches in the order's order: the template indices follow by position
        with clear_shm_errors():
            for x, y in self.loader:
                yield x, y, templates[done : done + len(y)]
                done += len(y)


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


class OwnLoss(torch.nn.Module):
    """A model that trains with its own objective (FLYP's contrastive loss), as a module whose forward returns that
    loss, so DistributedDataParallel's forward, and with it its gradient hooks (bucketed all-reduce), run it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
        return self.model.loss(x, y, templates)


def cuda_rng_state() -> list[torch.Tensor]:
    """Every visible GPU's RNG state (dropout on a GPU draws from it); none without CUDA."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


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
        if not isinstance(model, HarnessModel):
            raise TypeError(
                f"Trainer: model {type(model).__name__} does not inherit harness.api.HarnessModel (which declares "
                "channels_last, own_loss and templates_per_image)"
            )
        self.model, self.cfg, self.total_epochs = model.to(device), opt_cfg, total_epochs
        self.channels_last = device.type == "cuda" and model.channels_last  # conv nets on GPUs
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp = amp_dtype(opt_cfg.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)  # fp16 needs loss scaling
        self.opt = make_optimizer(model, opt_cfg)
        self.schedule = (
            StepSchedule(self.opt, opt_cfg.milestones, opt_cfg.gamma, opt_cfg.warmup_epochs)
            if opt_cfg.schedule == "step"
            else LRSchedule(self.opt, opt_cfg, total_epochs)
        )
        # ``base.mixup_alpha`` (None when 0 or absent, as in ``train``); log_prior holds one entry per class
        num_classes = None if log_prior is None else len(log_prior)
        self.mixup = make_mixup(getattr(opt_cfg, "mixup_alpha", 0.0), num_classes)
        self.log_prior, self.device, self.workers, self.transform = log_prior, device, workers, transform
        self.loader = EpochLoader(opt_cfg.batch_size, workers, device, transform)  # its workers live across epochs
        self.g = torch.Generator().manual_seed(seed)
        self.step = 0
        self.pending = None  # the pass under way of a stream that continues across epochs (train.epoch_length)
        self.extra_loader: EpochLoader | None = None  # the adaptive rule's natural pass, apart from the stream
        self.rank, self.world = (dist.rank(), dist.world()) if distributed else (0, 1)
        self.own_loss = model.own_loss  # a model may train with its own objective (FLYP)
        self.net = OwnLoss(self.model) if self.own_loss else self.model
        if self.world > 1:
            self.net = DistributedDataParallel(
                self.net, device_ids=[device.index or torch.cuda.current_device()] if device.type == "cuda" else None
            )

    def train_epoch(
        self,
        parts: list[Part],
        epoch: int,
        max_steps: int | None = None,
        steps: int | None = None,
        fresh: bool = True,
        refill: Callable[[], list[Part]] | None = None,
    ) -> float:
        """One pass over ``parts`` (or ``max_steps`` optimizer steps); returns the mean training loss. A model that
        trains on (image, template) pairs (``templates_per_image``, FLYP) sees every image once per template, and
        its ``loss`` gets each sample's template index.

        ``steps``: the epoch takes that many steps from the run's stream of batches instead (``train.epoch_length``
        ``real_images``/``real_rows``), continuing the previous epoch's pass unless ``fresh``; when a pass runs
        out, the next is over ``refill()`` (a stage that ends when its data does) or else ``parts``."""
        self.model.train()
        if steps is None:
            rows = sum(len(p.indices) for p in per_template(parts, self.model.templates_per_image))
            n_steps, stream = steps_per_epoch(rows, self.cfg.batch_size, self.world), self.one_pass(parts)
        else:
            n_steps, stream = steps, islice(self.stream(parts, fresh, refill), steps)
        losses = []
        for i, (x, y, t) in enumerate(stream):
            if max_steps is not None and i >= max_steps:
                break
            losses.append(self.train_step(x, y, t))
            self.schedule.after_step(epoch + (i + 1) / n_steps)
        mean = float(np.mean(losses)) if losses else float("nan")
        if self.world > 1:  # the loss over every rank's shard, as one process would report it
            total = torch.tensor(mean, dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(total)
            mean = total.item() / self.world
        return mean

    def one_pass(self, parts: list[Part], loader: EpochLoader | None = None):
        """Shuffled (x, y, template) batches of one pass over ``parts``, each image once per template."""
        parts = per_template(parts, self.model.templates_per_image)
        batch, rank, world = self.cfg.batch_size, self.rank, self.world
        return batches(
            parts, batch, self.g, self.device, self.workers, rank, world, self.transform, loader or self.loader, True
        )

    def stream(self, parts: list[Part], fresh: bool, refill: Callable[[], list[Part]] | None):
        """The run's batches across epochs: the pass under way (unless ``fresh``), then pass after pass."""
        new = fresh or self.pending is None
        if new:
            self.pending = self.one_pass(parts)
        while True:
            yielded = False
            for batch in self.pending:
                yielded = True
                yield batch
            if new and not yielded:  # no rows at all: the epoch ends short rather than spinning
                return
            next_parts = refill() if refill is not None else parts
            self.model.train()  # a refill may have evaluated the model
            self.pending, new = self.one_pass(next_parts), True

    def train_pass(self, parts: list[Part]) -> int:
        """Train one pass over ``parts`` outside the epochs' stream and learning-rate schedule (the adaptive rule's
        natural pass): on its own loader, so the stream's pass under way is left as it is. Returns its steps."""
        self.model.train()
        self.extra_loader = self.extra_loader or EpochLoader(
            self.cfg.batch_size, self.workers, self.device, self.transform
        )
        done = 0
        for x, y, t in self.one_pass(parts, self.extra_loader):
            self.train_step(x, y, t)
            done += 1
        return done

    def train_step(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> float:
        preempt.check()  # a stop signal: leave at this step boundary (the run resumes from its last epoch)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        with autocast(self.device, self.amp):
            loss = (
                self.net(x, y, t)
                if self.own_loss
                else classification_loss(self.net(x).float(), y, self.cfg.loss, self.log_prior)
            )
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.step += 1
        return loss.item()

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "g": self.g.get_state(),
            "torch_rng": torch.get_rng_state(),  # the global RNG drives dropout
            "cuda_rng": cuda_rng_state(),  # and on a GPU, the GPU's
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(),
        }

    def load_state(self, state: dict) -> None:
        if "schedule" not in state:
            raise DataError(
                "checkpoint has no learning-rate schedule state (written by an older harness): "
                "delete the checkpoint.pt to retrain from the start"
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]
        self.g.set_state(state["g"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.schedule.load_state_dict(state["schedule"])
