"""Phase 1: the base model, a classifier trained on the real data only, shared by every method and seed, and its
training-set class probabilities (what the hard-sample rules read).

Under torchrun every rank trains it in lockstep (DDP, each rank a shard of each epoch) and evaluates a shard of
the training set; rank 0 writes the checkpoint and the cached model.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from harness.config import Config
from harness.config.keys import base_key
from harness.core import distributed as dist
from harness.core.errors import MissingFileError
from harness.core.io import atomic_path, load_torch, lock
from harness.data import DatasetBundle
from harness.engine.evaluate import class_probs
from harness.engine.seeding import seed_everything
from harness.engine.train import Part, Trainer, amp_dtype, log_prior
from harness.models.base import build_model, load_weights

log = logging.getLogger("harness")


def base_weights(cfg: Config, cache: Path) -> Path:
    """Where the trained base model's weights are cached (under the base key); they exist once it is trained."""
    return cache / "base" / base_key(cfg) / "model.safetensors"


def train_base(cfg: Config, data: DatasetBundle, cache: Path, device: torch.device) -> tuple[dict, np.ndarray]:
    """The base model's weights (trained, or loaded from ``base.checkpoint``) and its training-set class
    probabilities, cached under the base key."""
    weights = base_weights(cfg, cache)
    folder = weights.parent
    with lock(folder / "model") if dist.is_main() else nullcontext():  # rank 0 speaks for its job
        if dist.share(not weights.exists()):
            seed_everything(cfg.base.seed)  # before the model is built: its initial weights come from the seed
            model = build_model(cfg, data.num_classes, data.channels, data.class_names)
            if cfg.base.checkpoint:
                model.load_state_dict(base_checkpoint(cfg.base.checkpoint))
            else:
                train_base_epochs(cfg, data, model, folder / "checkpoint.pt", device)
            probs = class_probs(
                model.to(device),
                data.train,
                device,
                workers=data.num_workers,
                transform=data.eval_transform,
                amp=amp_dtype(cfg.base.precision, device),
                distributed=True,
            )
            if dist.is_main():
                save_base(folder, model, probs)
        dist.barrier()  # the other ranks read what rank 0 wrote
    return load_file(str(weights)), np.load(folder / "train_probs.npy")


def train_base_epochs(cfg: Config, data: DatasetBundle, model, ckpt: Path, device: torch.device) -> None:
    """The base model's epochs over all real training images, checkpointed after every epoch, so a killed job
    (90 ImageNet-LT epochs are hours) resumes where it stopped."""
    from tqdm.auto import tqdm

    trainer = Trainer(
        model,
        cfg.base,
        cfg.base.epochs,
        log_prior(data),
        cfg.base.seed,
        device,
        data.num_workers,
        distributed=True,
        transform=data.train_transform,
    )
    start = 0
    if ckpt.exists():
        saved = load_torch(ckpt, "delete it to train the base model from its first epoch")
        trainer.load_state(saved["trainer"])
        start = saved["epoch"]
        log.info("base model: resuming at epoch %d of %d", start, cfg.base.epochs)
    all_real = [Part(data.train, np.arange(len(data.train)))]
    for epoch in tqdm(
        range(start, cfg.base.epochs),
        desc="train base model",
        unit="epoch",
        mininterval=2,
        initial=start,
        total=cfg.base.epochs,
        disable=not dist.is_main(),
    ):
        trainer.train_epoch(all_real, epoch)
        if dist.is_main():
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(ckpt) as tmp:
                torch.save({"trainer": trainer.state(), "epoch": epoch + 1}, tmp)


def save_base(folder: Path, model: torch.nn.Module, probs: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "train_probs.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, probs)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    (folder / "checkpoint.pt").unlink(missing_ok=True)


def base_checkpoint(path: str) -> dict:
    try:
        return load_weights(Path(path).expanduser())
    except FileNotFoundError:
        raise MissingFileError(f"base.checkpoint: no file {path}") from None
